"""Super-resolution: the three networks, the pair protocol (embedded twins and COCO crops), PSNR / SSIM against
their formulas, training that resumes, and the ``sr train`` / ``sr evaluate`` commands."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sodlib.data.resample import downscale_antialiased
from sodlib.data.sr_pairs import SRProtocol, coco_sr_pairs, embedded_sr_pairs, split_image_ids
from sodlib.data.synthetic import render_object_pair
from sodlib.engine.sr_training import SRTrainConfig, dihedral, load_sr_weights, train_sr
from sodlib.eval.image_quality import compare_upscalers, psnr, ssim, to_luma
from sodlib.models.super_resolution import build_sr_model, list_sr_models, upscale

from tests.conftest import assert_refused, file_digests, write_coco

MODELS = ("encoder_decoder", "espcn", "srcnn")


# ---------------------------------------------------------------------------------------------------------- models

def test_registry_names_the_three_models():
    assert tuple(list_sr_models()) == MODELS


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("scale", (2, 4))
def test_every_model_upscales_by_its_scale(name, scale):
    model = build_sr_model(name, scale)
    images = torch.rand(2, 3, 11, 17)
    out = model(images)
    assert out.shape == (2, 3, 11 * scale, 17 * scale)
    assert model.scale == scale and model.name == name and model.build_options["scale"] == scale
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_a_one_pixel_shift_of_the_input_shifts_the_output_by_the_scale(name):
    """Half-pixel-centre alignment: low-resolution pixel i covers high-resolution pixels [s i, s i + s), so shifting
    the input by one pixel shifts the output by s pixels (away from the zero-padded border)."""
    torch.manual_seed(0)
    scale = 2
    model = build_sr_model(name, scale).eval()
    images = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        out = model(images[..., :, :-1])
        shifted = model(images[..., :, 1:])
    border = 16 * scale  # beyond the reach of the zero padding (the encoder-decoder's 14 layers reach 14 px)
    inner = out[..., border:-border, border + scale:-border]
    assert torch.allclose(inner, shifted[..., border:-border, border:-border - scale], atol=1e-5)


def test_espcn_pixel_shuffle_places_channel_c_s2_plus_i_s_plus_j_at_offset_i_j():
    model = build_sr_model("espcn", 2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.sub_pixel.bias.copy_(torch.arange(12, dtype=torch.float32))
    out = model(torch.rand(1, 3, 3, 3))
    for c in range(3):
        for i in range(2):
            for j in range(2):
                assert torch.all(out[0, c, i::2, j::2] == c * 4 + i * 2 + j)


@pytest.mark.parametrize("name,options", [("encoder_decoder", {}), ("espcn", {"residual": True}), ("srcnn", {"residual": True})])
def test_with_zero_weights_a_residual_model_is_bicubic_upscaling(name, options):
    model = build_sr_model(name, 4, **options)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    images = torch.rand(2, 3, 8, 8)
    expected = F.interpolate(images, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.allclose(model(images), expected, atol=1e-6)


def test_bad_model_names_and_scales_are_refused():
    with pytest.raises(ValueError, match="supports scales 2, 4"):
        build_sr_model("espcn", 3)
    with pytest.raises(ValueError, match="registered: encoder_decoder, espcn, srcnn"):
        build_sr_model("vdsr", 2)
    with pytest.raises(ValueError, match="Tensor\\[B, 3, h, w\\]"):
        upscale(torch.rand(3, 8, 8), 2, "bicubic")
    with pytest.raises(ValueError, match="not scale=4"):
        upscale(torch.rand(1, 3, 8, 8), 4, build_sr_model("espcn", 2))


def test_upscale_clamps_to_the_unit_range_and_leaves_the_model_mode_alone():
    model = build_sr_model("srcnn", 2).train()
    out = upscale(torch.rand(1, 3, 8, 8) * 3 - 1, 2, "bicubic")
    assert out.min() >= 0 and out.max() <= 1
    upscale(torch.rand(1, 3, 8, 8), 2, model)
    assert model.training


# ---------------------------------------------------------------------------------------------------------- pairs

def test_a_drawn_pair_is_deterministic_and_the_same_instance_at_x2_and_x4():
    first, again = render_object_pair(3, 5, 32, 2), render_object_pair(3, 5, 32, 2)
    assert np.array_equal(first.lr, again.lr) and np.array_equal(first.hr, again.hr)
    x4 = render_object_pair(3, 5, 32, 4)
    assert first.category_id == x4.category_id and first.side == x4.side and first.box_lr == x4.box_lr
    assert first.lr.shape == (32, 32, 3) and first.hr.shape == (64, 64, 3) and x4.hr.shape == (128, 128, 3)


@pytest.mark.parametrize("scale", (2, 4))
def test_the_twin_is_aligned_with_its_small_object(scale):
    """The twin's mask box is the small object's box times s (to within 1.5 px: a star's tip thinner than a pixel
    can miss every pixel centre at low resolution), and the downscaled twin matches the small crop better
    unshifted than shifted by a pixel either way."""
    protocol = SRProtocol(scale=scale)
    pairs = embedded_sr_pairs(40, protocol, seed=0)
    assert torch.all((pairs.boxes_hr / scale - pairs.boxes_lr).abs() <= 1.5)
    assert float((pairs.boxes_hr / scale - pairs.boxes_lr).abs().mean()) < 0.5
    for k in range(len(pairs)):
        box = pairs.boxes_lr[k]
        assert box[0] >= 0 and box[1] >= 0 and box[2] <= protocol.lr_size and box[3] <= protocol.lr_size
        assert pairs.lr_sides[k] >= 0.5 * protocol.min_lr_side
    downscaled = torch.from_numpy(np.stack([downscale_antialiased(h.permute(1, 2, 0).numpy(), scale) for h in pairs.hr]))
    lr = pairs.lr.permute(0, 2, 3, 1).float()
    centre = slice(4, -4)

    def error(dx: int) -> float:
        return float((lr[:, centre, centre] - torch.roll(downscaled.float(), dx, dims=2)[:, centre, centre]).abs().mean())

    assert error(0) < error(1) and error(0) < error(-1)


def test_the_protocol_refuses_what_cannot_be_cut():
    with pytest.raises(ValueError, match="scale"):
        SRProtocol(scale=1)
    with pytest.raises(ValueError, match="min_lr_side"):
        SRProtocol(lr_size=8, min_lr_side=8)
    assert SRProtocol(scale=4).describe()["shave"] == 4 and SRProtocol(scale=4).hr_size == 128


def test_splits_are_disjoint_and_cover_the_images():
    ids = [9, 2, 14, 7, 30, 1, 5, 11, 20, 3]
    train, val = split_image_ids(ids, "train"), split_image_ids(ids, "val")
    assert set(train).isdisjoint(val) and sorted(train + val) == sorted(ids) and val == [7, 30]
    with pytest.raises(ValueError, match="split"):
        split_image_ids(ids, "test")


def _coco_with_objects(folder, sides):
    """One 160 x 120 image with square objects of the given sides, in a row."""
    annotations, x = [], 2
    for k, side in enumerate(sides, start=1):
        annotations.append({"id": k, "image_id": 1, "category_id": 1, "bbox": [x, 30, side, side], "area": side * side,
                            "iscrowd": 0, "segmentation": [[x, 30, x + side, 30, x + side, 30 + side, x, 30 + side]]})
        x += side + 4
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 160, "height": 120}],
            "categories": [{"id": 1, "name": "thing"}], "annotations": annotations}
    return write_coco(folder, data)


def test_coco_pairs_cut_the_image_pixels_and_downscale_them(tmp_path):
    annotations, images = _coco_with_objects(tmp_path, [4, 14, 30, 60])
    pairs = coco_sr_pairs(annotations, images, SRProtocol(scale=2), split="all")
    # in range: sqrt(w h) >= 12 and max(w, h) * 1.5 <= 64, so the 14 and 30 px objects
    assert len(pairs) == 2 and pairs.hr.shape == (2, 3, 64, 64) and pairs.lr.shape == (2, 3, 32, 32)
    assert torch.allclose(pairs.lr_sides, torch.tensor([7.0, 15.0]))
    from PIL import Image
    pixels = np.array(Image.open(images / "a.png").convert("RGB"))
    for k in range(2):
        hr = pairs.hr[k].permute(1, 2, 0).numpy()
        box = pairs.boxes_hr[k].numpy()
        assert (box[:2] >= 0).all() and (box[2:] <= 64).all()
        assert np.array_equal(downscale_antialiased(hr, 2), pairs.lr[k].permute(1, 2, 0).numpy())
        matches = [(y, x) for y in range(120 - 63) for x in range(160 - 63)
                   if np.array_equal(pixels[y:y + 64, x:x + 64], hr)]
        assert len(matches) == 1
    again = coco_sr_pairs(annotations, images, SRProtocol(scale=2), split="all")
    assert torch.equal(again.hr, pairs.hr)


def test_coco_pairs_with_no_object_in_range_are_refused_before_reading_images(tmp_path):
    annotations, images = _coco_with_objects(tmp_path, [4, 5])
    (images / "a.png").write_bytes(b"not an image")  # never read
    with pytest.raises(ValueError, match="no object has a box side"):
        coco_sr_pairs(annotations, images, SRProtocol(scale=2), split="all")


@pytest.mark.coco_mini
def test_coco_mini_val_crops_are_held_out_and_in_the_small_range(coco_mini):
    protocol = SRProtocol(scale=4)
    train = coco_sr_pairs(*coco_mini, protocol, split="train")
    val = coco_sr_pairs(*coco_mini, protocol, split="val")
    assert set(train.image_ids.tolist()).isdisjoint(val.image_ids.tolist()) and len(val) > 50
    assert val.lr_sides.min() >= protocol.min_lr_side and val.lr_sides.max() <= protocol.max_lr_side


# ---------------------------------------------------------------------------------------------------------- metrics

def _gaussian_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Wang et al.'s SSIM by its formula: 11 x 11 Gaussian window (sigma 1.5), valid positions, channel mean."""
    t = torch.arange(11, dtype=torch.float64) - 5
    w = torch.exp(-t ** 2 / (2 * 1.5 ** 2))
    window = (w[:, None] * w[None, :] / w.sum() ** 2)[None, None].repeat(x.shape[1], 1, 1, 1)

    def blur(z):
        return F.conv2d(z, window, groups=x.shape[1])

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    index = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return index.mean(dim=(1, 2, 3))


def test_psnr_and_ssim_follow_their_formulas_with_the_shave_and_the_luma():
    torch.manual_seed(0)
    reference = torch.rand(3, 3, 40, 40, dtype=torch.float64)
    prediction = (0.7 * reference + 0.3 * torch.rand_like(reference)).clamp(0, 1)
    mse = ((prediction - reference)[..., 2:-2, 2:-2] ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(psnr(prediction, reference, shave=2).double(), 10 * torch.log10(1 / mse), atol=1e-4)
    assert torch.allclose(ssim(prediction, reference, shave=2).double(),
                          _gaussian_ssim(prediction[..., 2:-2, 2:-2], reference[..., 2:-2, 2:-2]), atol=1e-4)
    luma_mse = ((to_luma(prediction) - to_luma(reference)) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(psnr(prediction, reference, channel="y").double(), 10 * torch.log10(1 / luma_mse), atol=1e-4)
    assert torch.allclose(ssim(reference, reference), torch.ones(3, dtype=torch.float32), atol=1e-6)
    white = torch.ones(1, 3, 2, 2)
    assert math.isclose(float(to_luma(white)[0, 0, 0, 0]), 235 / 255, rel_tol=1e-6)


def test_metrics_refuse_mismatched_or_too_small_crops():
    with pytest.raises(ValueError, match="same"):
        psnr(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="window"):
        ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), shave=4)
    with pytest.raises(ValueError, match="channel"):
        psnr(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), channel="lab")


def test_compare_upscalers_reports_every_method_with_the_protocol():
    pairs = embedded_sr_pairs(12, SRProtocol(scale=2), seed=0)
    report = compare_upscalers(pairs, {"bicubic": "bicubic", "nearest": "nearest"})
    assert report["crops"] == 12 and report["scale"] == 2 and report["protocol"]["shave"] == 2
    assert set(report["methods"]) == {"bicubic", "nearest"}
    assert report["methods"]["bicubic"]["psnr"] > report["methods"]["nearest"]["psnr"]


# ---------------------------------------------------------------------------------------------------------- training

def test_dihedral_gives_the_eight_symmetries():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    seen = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(seen) == 8


def test_training_lowers_the_loss_writes_atomically_and_resumes_to_the_same_weights(tmp_path):
    pairs = embedded_sr_pairs(24, SRProtocol(scale=2, lr_size=16, min_lr_side=4), seed=0)
    config = SRTrainConfig("espcn", 2, iterations=40, batch_size=4, checkpoint_every=20, seed=1)
    whole = train_sr(pairs, config, tmp_path / "whole", progress=False)
    assert whole["history"][-1]["loss"] < whole["history"][0]["loss"] and whole["complete"]
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == ["checkpoint.pt", "run.json", "weights.pt"]
    half = SRTrainConfig("espcn", 2, iterations=20, batch_size=4, checkpoint_every=20, seed=1)
    train_sr(pairs, half, tmp_path / "halves", progress=False)
    (tmp_path / "halves" / "weights.pt").unlink()
    state = torch.load(tmp_path / "halves" / "checkpoint.pt", weights_only=False)
    state["settings"]["config"]["iterations"] = 40  # as if the 40-step run had stopped after its first checkpoint
    torch.save(state, tmp_path / "halves" / "checkpoint.pt")
    resumed = train_sr(pairs, config, tmp_path / "halves", progress=False)
    a, b = load_sr_weights(tmp_path / "whole"), load_sr_weights(tmp_path / "halves")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), name
    assert [h["step"] for h in resumed["history"]] == [h["step"] for h in whole["history"]]


def test_training_refuses_before_any_step(tmp_path):
    pairs = embedded_sr_pairs(8, SRProtocol(scale=2, lr_size=16, min_lr_side=4), seed=0)
    with pytest.raises(ValueError, match="x2, the model for x4"):
        train_sr(pairs, SRTrainConfig("espcn", 4, iterations=2), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="feature extractor"):
        train_sr(pairs, SRTrainConfig("espcn", 2, iterations=2, loss="feature"), tmp_path / "b", progress=False)
    train_sr(pairs, SRTrainConfig("espcn", 2, iterations=2, batch_size=2), tmp_path / "c", progress=False)
    before = file_digests(tmp_path / "c")
    with pytest.raises(ValueError, match="other settings"):
        train_sr(pairs, SRTrainConfig("srcnn", 2, iterations=2, batch_size=2), tmp_path / "c", progress=False)
    assert file_digests(tmp_path / "c") == before
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_feature_loss_trains_with_a_detectors_backbone(tmp_path):
    from sodlib.models import build_model
    from sodlib.models.feature_loss import FeatureLoss, detector_feature_extractor

    torch.manual_seed(0)
    extractor = detector_feature_extractor(build_model("faster_rcnn", num_classes=3, backbone="resnet_tiny"))
    assert not any(p.requires_grad for p in extractor.parameters())
    loss = FeatureLoss(extractor)
    x = torch.rand(2, 3, 32, 32)
    assert float(loss(x, x)) == 0.0 and float(loss(x.flip(-1), x)) > 0
    pairs = embedded_sr_pairs(8, SRProtocol(scale=2, lr_size=16, min_lr_side=4), seed=0)
    summary = train_sr(pairs, SRTrainConfig("espcn", 2, iterations=3, batch_size=2, loss="feature"), tmp_path / "f",
                       feature_extractor=extractor, progress=False)
    assert summary["config"]["loss"] == "feature"


# ---------------------------------------------------------------------------------------------------------- commands

def test_sr_train_and_evaluate_end_to_end_on_a_tiny_coco(tmp_path, capsys):
    from sodlib.cli import main

    annotations, images = _coco_with_objects(tmp_path, [14, 30, 20])
    out = tmp_path / "run"
    common = ["--annotations", str(annotations), "--images", str(images), "--scale", "2"]
    assert main(["sr", "train", "--model", "espcn", "--out", str(out), "--iterations", "4", "--batch-size", "2",
                 "--no-progress", *common]) == 0
    assert "trained espcn x2 for 4 steps on 3 crops" in capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    assert run["protocol"]["downscale"].startswith("Pillow bicubic") and run["pairs"] == 3
    assert main(["sr", "evaluate", "--weights", str(out / "weights.pt"), "--split", "all", "--format", "json", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["crops"] == 3 and report["scale"] == 2 and set(report["methods"]) == {"model", "bicubic", "bilinear"}
    assert all({"psnr", "ssim"} <= set(m) for m in report["methods"].values()) and "protocol" in report


def test_sr_commands_refuse_bad_input_before_work(tmp_path, capsys):
    annotations, images = _coco_with_objects(tmp_path, [14, 30])
    common = ["--annotations", str(annotations), "--images", str(images)]
    out = tmp_path / "run"
    assert_refused(capsys, ["sr", "train", "--model", "vdsr", "--scale", "2", "--out", str(out), *common], "vdsr", "registered")
    assert_refused(capsys, ["sr", "train", "--model", "espcn", "--scale", "3", "--out", str(out), *common], "supports scales 2, 4")
    assert_refused(capsys, ["sr", "train", "--model", "espcn", "--scale", "2", "--out", str(out), "--min-lr-side", "16",
                                   "--iterations", "1", *common],
                   "no object has a box side")
    assert_refused(capsys, ["sr", "train", "--model", "espcn", "--scale", "2", "--out", str(out)], "--embedded-pairs")
    assert not out.exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert_refused(capsys, ["sr", "train", "--model", "espcn", "--scale", "2", "--out", str(tmp_path / "busy"), *common],
                   "not empty")
    from sodlib.cli import main
    assert main(["sr", "train", "--model", "espcn", "--scale", "2", "--out", str(out), "--iterations", "1",
                 "--batch-size", "1", "--no-progress", *common]) == 0
    assert_refused(capsys, ["sr", "evaluate", "--weights", str(out / "weights.pt"), "--scale", "4", *common], "holds x2 weights")
    assert_refused(capsys, ["sr", "evaluate", "--weights", str(tmp_path / "none.pt"), "--scale", "2", *common], "do not exist")


def test_the_sr_benchmark_times_every_model_and_interpolation():
    from sodlib.bench.sr import benchmark_sr

    timings = benchmark_sr(crops=2, lr_size=8, repeats=1)
    assert set(timings.ms) == {2, 4}
    assert set(timings.ms[2]) == {"encoder_decoder", "espcn", "srcnn", "bilinear", "bicubic"}
    assert all(ms > 0 for row in timings.ms.values() for ms in row.values())
    assert "/ bicubic x4" in timings.table()


def test_sr_quality_experiment_writes_its_rows_with_both_held_out_sets(tmp_path, monkeypatch):
    from sodlib.engine import sr_experiments

    monkeypatch.setattr(sr_experiments, "_training_pairs",
                        lambda protocol, seed: (embedded_sr_pairs(8, protocol, seed=seed), embedded_sr_pairs(4, protocol, seed=9)))
    monkeypatch.setattr(sr_experiments, "TWIN_PAIRS", 4)
    monkeypatch.setitem(sr_experiments.SR_EXPERIMENTS, "tiny_sr",
                        sr_experiments.SRExperiment("tiny", (sr_experiments.SRRow("espcn", 2), sr_experiments.SRRow("encoder_decoder", 4),
                                                                    sr_experiments.SRRow("espcn", 2, (("residual", True),))),
                                                          iterations=2, batch_size=2))
    record = sr_experiments.run_sr_experiment("tiny_sr", seed=1, results_dir=tmp_path / "results", runs_root=tmp_path / "runs")
    written = json.loads((tmp_path / "results" / "tiny_sr_seed1.json").read_text())
    assert written["complete"] and set(written["rows"]) == {"espcn_x2", "encoder_decoder_x4", "espcn_residual_x2"}
    assert written["rows"]["espcn_residual_x2"]["options"] == {"residual": True}
    row = written["rows"]["encoder_decoder_x4"]
    assert row["coco_val"]["crops"] == 4 and row["embedded_twins"]["scale"] == 4
    assert set(row["coco_val"]["methods"]) == {"model", "bicubic", "bilinear"} and record["path"].endswith("tiny_sr_seed1.json")
    with pytest.raises(ValueError, match="unknown"):
        sr_experiments.run_sr_experiment("nope", seed=0, results_dir=tmp_path)


def test_the_upscaling_grid_shows_every_crop_and_method():
    import matplotlib
    matplotlib.use("Agg")
    from sodlib.viz import plot_upscaling_grid

    pairs = embedded_sr_pairs(3, SRProtocol(scale=2), seed=0)
    lr, hr = pairs.batch(slice(0, 3))
    upscaled = {"bicubic": upscale(lr, 2, "bicubic"), "bilinear": upscale(lr, 2, "bilinear")}
    figure = plot_upscaling_grid(lr, upscaled, hr, scores={"bicubic": psnr(upscaled["bicubic"], hr, 2).tolist()},
                                 row_labels=["a", "b", "c"])
    assert len(figure.axes) == 3 * 4 and figure.axes[1].get_title() == "bicubic"
    assert figure.axes[1].get_xlabel() != "" and figure.axes[2].get_xlabel() == ""
    with pytest.raises(ValueError, match="crops"):
        plot_upscaling_grid(lr, {"bicubic": upscaled["bicubic"][:2]})


def test_an_embedded_image_drawn_again_at_scale_one_is_the_same_image_and_at_two_its_twin():
    from sodlib.data.synthetic import render_image, render_image_twin

    image, _ = render_image(1, 3, 256)
    pixels = np.array(image)
    assert np.array_equal(render_image_twin(1, 3, 256, 1), pixels)
    twin = render_image_twin(1, 3, 256, 2)
    assert twin.shape == (512, 512, 3)
    difference = np.abs(downscale_antialiased(twin, 2).astype(float) - pixels)
    assert difference.mean() < 2.0  # the same scene: objects in place, background upscaled
    with pytest.raises(ValueError, match="scale"):
        render_image_twin(1, 3, 256, 0)


def test_the_sr_explorer_redraws_with_the_crop_figures_of_each_choice():
    import matplotlib
    matplotlib.use("Agg")
    from sodlib.eval.image_quality import UpscalingCases
    from sodlib.models.crop_classifier import CropClassifier
    from sodlib.viz.widgets import sr_explorer

    pairs = {s: embedded_sr_pairs(4, SRProtocol(scale=s), seed=0) for s in (2, 4)}
    methods = {s: {"bicubic": "bicubic", "bilinear": "bilinear", "espcn": build_sr_model("espcn", s)} for s in (2, 4)}
    torch.manual_seed(0)
    classifiers = {2: CropClassifier(6)}
    cases = UpscalingCases(pairs, methods, classifiers, labels={c: c for c in range(1, 7)})
    case = cases(1, 2, "bilinear")
    lr, hr = pairs[2].batch([1])
    assert case["report"].psnr == pytest.approx(float(psnr(upscale(lr, 2, "bilinear"), hr, 2)))
    assert case["report"].psnr_bicubic == pytest.approx(float(psnr(upscale(lr, 2, "bicubic"), hr, 2)))
    assert 0 < case["report"].score < 1 and case["report"].label in {"disc", "square", "triangle", "star", "cross", "hexagon"}
    explorer = sr_explorer(cases, count=4, methods=["bicubic", "bilinear", "espcn"])
    assert explorer.renders == 1 and explorer.report.method == "bicubic"
    explorer.controls["method"].value = "espcn"
    assert explorer.renders == 2 and explorer.report.method == "espcn" and "espcn" in explorer.text.value
    explorer.controls["scale"].value = 4
    assert explorer.report.scale == 4 and explorer.report.score is None  # no classifier at x4
    explorer.controls["index"].value = 3
    assert explorer.report.index == 3 and explorer.renders == 4
    with pytest.raises(ValueError, match="method"):
        cases(0, 2, "lanczos")


def test_multiply_adds_follow_where_each_network_works():
    from sodlib.models.super_resolution import multiply_adds

    # SRCNN at x2 on 32 px: every layer at 64 x 64
    assert multiply_adds(build_sr_model("srcnn", 2), 32) == 64 * 64 * (81 * 3 * 64 + 64 * 32 + 25 * 32 * 3)
    # ESPCN at x4: every layer at 32 x 32, the last one 3 * 16 maps wide
    assert multiply_adds(build_sr_model("espcn", 4), 32) == 32 * 32 * (25 * 3 * 64 + 9 * 64 * 32 + 9 * 32 * 48)
    assert multiply_adds(build_sr_model("srcnn", 4), 32) == 4 * multiply_adds(build_sr_model("srcnn", 2), 32)
