"""SAHI over sodlib's detectors: the adapter returns the detector's own detections, sliced inference finds what
the whole-image pass is too coarse for (an object cut by a tile edge included, merged into one), and ``predict`` /
``evaluate --results`` give a user the comparison in two commands."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("sahi")
pytest.importorskip("cv2")

from sodlib.cli import main  # noqa: E402
from sodlib.data.synthetic import generate_synthetic_coco  # noqa: E402
from sodlib.engine.runs import load_run_config, run_training  # noqa: E402
from sodlib.integrations.sahi import (SliceSettings, SodlibDetectionModel, detection_model_from_checkpoint,  # noqa: E402
                                      object_predictions_to_coco, predict_image, predict_images)
from tests.conftest import assert_refused  # noqa: E402
from tests.engine_fixtures import one_thread, tiny_run_config  # noqa: E402,F401

pytestmark = pytest.mark.usefixtures("one_thread")

CATEGORIES = [{"label": 1, "id": 7, "name": "spot"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """``(run folder, annotations, images)``: a tiny detector trained two steps on 96 px synthetic images."""
    root = tmp_path_factory.mktemp("sahi")
    annotations = generate_synthetic_coco(root / "data", 4, seed=4, image_size=96, workers=1, progress=False)
    config_path = root / "tiny.toml"
    config_path.write_text(tiny_run_config(annotations, root / "data" / "train"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_training(load_run_config(config_path), root / "run")
    finally:
        torch.set_num_threads(threads)
    return root / "run", Path(annotations), root / "data" / "train"


class BrightSpotDetector(torch.nn.Module):
    """A detector of white squares with torchvision's detection API that, like a CNN detector, sees the image at
    its own input size: it resizes the image so that its longer side is ``input_size`` and finds the connected
    white regions there, missing those under ``min_side`` px at that scale; boxes are mapped back to the image."""

    def __init__(self, input_size: int = 128, min_side: int = 4):
        super().__init__()
        self.input_size, self.min_side = input_size, min_side

    def forward(self, images):
        import cv2

        outputs = []
        for image in images:
            height, width = image.shape[-2:]
            scale = self.input_size / max(height, width)
            small = torch.nn.functional.interpolate(image[None], scale_factor=scale, mode="bilinear",
                                                    recompute_scale_factor=False)[0]
            binary = (small.mean(0) > 0.5).numpy().astype(np.uint8)
            count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=4)
            boxes = [[x / scale, y / scale, (x + w) / scale, (y + h) / scale]
                     for x, y, w, h, _ in stats[1:count] if min(w, h) >= self.min_side]
            outputs.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                            "labels": torch.ones(len(boxes), dtype=torch.int64),
                            "scores": torch.full((len(boxes),), 0.9)})
        return outputs


def _image_with_squares(squares, size=(600, 800)) -> np.ndarray:
    image = np.zeros((*size, 3), np.uint8)
    for x, y, side in squares:
        image[y:y + side, x:x + side] = 255
    return image


def _boxes(predictions):
    return sorted(tuple(round(v, 1) for v in p.bbox.to_xyxy()) for p in predictions)


def test_the_adapter_returns_the_detectors_own_detections(trained):
    run, annotations, images = trained
    detection_model = detection_model_from_checkpoint(run, confidence_threshold=0.0, device="cpu")
    detection_model.model.roi_heads.score_thresh = 0.0  # every detection, so that there is much to compare
    info = json.loads(annotations.read_text())["images"][0]
    pixels = np.asarray(Image.open(images / info["file_name"]).convert("RGB"))
    with torch.inference_mode():
        own = detection_model.model([torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255])[0]
    predictions = predict_image(detection_model, pixels)
    assert len(own["boxes"]) > 0 and len(predictions) == len(own["boxes"])
    order = torch.argsort(own["scores"], descending=True)
    ours = sorted(predictions, key=lambda p: -p.score.value)
    from sodlib.engine.checkpoint import load_checkpoint

    label_to_id = {int(c["label"]): int(c["id"]) for c in load_checkpoint(run / "checkpoints" / "last.pt")["categories"]}
    for prediction, index in zip(ours, order.tolist()):
        np.testing.assert_allclose(prediction.bbox.to_xyxy(), own["boxes"][index].numpy(), atol=1e-4)
        assert prediction.score.value == pytest.approx(float(own["scores"][index]), abs=1e-6)
        assert prediction.category.id == label_to_id[int(own["labels"][index])]


def test_the_confidence_threshold_drops_what_scores_below_it():
    detector = SodlibDetectionModel(BrightSpotDetector(), CATEGORIES, device="cpu")
    image = _image_with_squares([(100, 100, 40)])
    assert len(predict_image(detector, image)) == 1
    strict = SodlibDetectionModel(BrightSpotDetector(), CATEGORIES, confidence_threshold=0.95, device="cpu")
    assert predict_image(strict, image) == []


def test_sliced_inference_finds_the_small_objects_the_whole_image_pass_misses():
    # 12 px squares: 1.9 px at the detector's 128 px view of the 800 px image, 12 x 128/200 = 7.7 px in a tile
    squares = [(40, 40, 12), (300, 250, 12), (700, 500, 12), (500, 60, 60)]
    image = _image_with_squares(squares)
    detector = SodlibDetectionModel(BrightSpotDetector(), CATEGORIES, device="cpu")
    whole = predict_image(detector, image)
    assert len(whole) == 1  # only the large one, placed to within a pixel of the detector's coarse view (6.25 px)
    np.testing.assert_allclose(whole[0].bbox.to_xyxy(), [500, 60, 560, 120], atol=6.25)
    sliced = predict_image(detector, image, SliceSettings(size=200, overlap=0.2))
    assert len(sliced) == 4
    found = _boxes(sliced)
    for x, y, side in squares:
        assert any(np.allclose(b, [x, y, x + side, y + side], atol=4) for b in found), (x, y, side, found)


def test_an_object_cut_by_a_tile_edge_is_found_once_merged_by_ios():
    # tiles of 200 px with overlap 0.2 start at x = 0, 160, 320, ...: a 30 px square at x 180..210 is cut by the
    # first tile's right edge (x = 200), whole in the second tile
    image = _image_with_squares([(180, 200, 30)])  # rows of tiles: y 160..360 holds it whole
    detector = SodlibDetectionModel(BrightSpotDetector(), CATEGORIES, device="cpu")
    tiles_only = dict(size=200, overlap=0.2, standard_prediction=False)
    merged = predict_image(detector, image, SliceSettings(**tiles_only))
    assert len(merged) == 1
    np.testing.assert_allclose(merged[0].bbox.to_xyxy(), [180, 200, 210, 230], atol=2)
    # matched by IoU at 0.5 the cut part (20 of 30 columns, IoU 0.67 but lower for a thinner cut) may survive;
    # by IoS it is inside the whole box and always joins it
    thin = _image_with_squares([(190, 200, 30)])  # 10 of 30 columns in the first tile: IoU 1/3, IoS 1
    by_iou = predict_image(detector, thin, SliceSettings(**tiles_only, merge="NMS", match_metric="IOU"))
    by_ios = predict_image(detector, thin, SliceSettings(**tiles_only, merge="NMS", match_metric="IOS"))
    assert len(by_iou) == 2 and len(by_ios) == 1


@pytest.mark.parametrize("kwargs,phrase", [({"size": 0}, "integer >= 32"), ({"overlap": 1.0}, "[0, 1)"),
                                           ({"merge": "WBF"}, "GREEDYNMM"), ({"match_metric": "DIOU"}, "IOS"),
                                           ({"match_threshold": 0}, "(0, 1]")])
def test_bad_slice_settings_are_refused(kwargs, phrase):
    with pytest.raises(ValueError) as error:
        SliceSettings(**kwargs)
    assert phrase in str(error.value)


def test_a_tile_larger_than_an_image_is_refused_before_any_detection(tmp_path):
    class Counting(BrightSpotDetector):
        calls = 0

        def forward(self, images):
            Counting.calls += 1
            return super().forward(images)

    paths = []
    for number, size in enumerate([(600, 800), (300, 400)]):
        paths.append((number + 1, tmp_path / f"{number}.png"))
        Image.fromarray(_image_with_squares([(10, 10, 20)], size)).save(paths[-1][1])
    detector = SodlibDetectionModel(Counting(), CATEGORIES, device="cpu")
    with pytest.raises(ValueError, match=r"image id 2 .*size=320 is larger than the image \(400 x 300 px\)"):
        predict_images(detector, paths, SliceSettings(size=320), progress=False)
    assert Counting.calls == 0


def test_results_records_are_what_pycocotools_reads(trained):
    from pycocotools.coco import COCO

    _, annotations, images = trained
    detector = SodlibDetectionModel(BrightSpotDetector(input_size=96, min_side=2), CATEGORIES, device="cpu")
    data = json.loads(annotations.read_text())
    records = predict_images(detector, [(image["id"], images / image["file_name"]) for image in data["images"]],
                             SliceSettings(size=48, overlap=0.25), progress=False)
    assert records and all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in records)
    ground_truth = COCO(str(annotations))
    ground_truth.dataset["categories"].append({"id": 7, "name": "spot"})
    ground_truth.createIndex()
    loaded = ground_truth.loadRes(records)
    assert len(loaded.anns) == len(records)
    assert object_predictions_to_coco([], 3) == []


def test_predict_then_evaluate_from_the_shell(trained, tmp_path, capsys):
    from pycocotools.coco import COCO

    run, annotations, images = trained
    for name, extra in (("full", []), ("sliced", ["--slice", "64", "--overlap", "0.25"])):
        out = tmp_path / f"{name}.json"
        assert main(["predict", "--run", str(run), "--images", str(images), "--annotations", str(annotations),
                     "--out", str(out), "--quiet", "--threads", "1", *extra]) == 0
        printed = capsys.readouterr().out
        assert "ms per image" in printed and f"evaluate --results {out}" in printed
        if name == "sliced":
            assert "64 px tiles, overlap 0.25, 5 passes per image, GREEDYNMM by IOS 0.5" in printed
        results = json.loads(out.read_text())
        image_ids = {image["id"] for image in json.loads(annotations.read_text())["images"]}
        assert {r["image_id"] for r in results} <= image_ids
        COCO(str(annotations)).loadRes(str(out)) if results else None
        assert main(["evaluate", "--results", str(out), "--annotations", str(annotations), "--size-bin", "tiny=0,256",
                     "--out", str(tmp_path / f"eval_{name}")]) == 0
        printed = capsys.readouterr().out
        assert "AP_tiny" in printed or "tiny" in printed
        metrics = json.loads((tmp_path / f"eval_{name}" / "metrics.json").read_text())
        assert 0 <= metrics["AP"] <= 1 and "AP_tiny" in metrics


def test_predict_without_annotations_numbers_the_images_and_says_which_is_which(trained, tmp_path, capsys):
    run, _, images = trained
    out = tmp_path / "out" / "results.json"
    assert main(["predict", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--images", str(images),
                 "--out", str(out), "--quiet"]) == 0
    listing = json.loads((tmp_path / "out" / "results.images.json").read_text())["images"]
    names = sorted(path.name for path in images.iterdir() if path.suffix in (".jpg", ".png"))
    assert [image["file_name"] for image in listing] == names
    assert [image["id"] for image in listing] == list(range(1, len(names) + 1))
    assert {r["image_id"] for r in json.loads(out.read_text())} <= set(range(1, len(names) + 1))


@pytest.mark.parametrize("flags,phrase", [(["--slice", "0"], "size=0 must be an integer >= 32"),
                                          (["--slice", "512"], "size=512 is larger than the image (96 x 96 px)"),
                                          (["--slice", "64", "--overlap", "1"], "overlap=1.0 must be a number in [0, 1)"),
                                          (["--overlap", "0.2"], "--overlap needs --slice"),
                                          (["--slice", "64", "--match-threshold", "2"], "match_threshold=2.0")])
def test_predict_refuses_bad_tiles_before_any_work(trained, tmp_path, capsys, flags, phrase):
    run, annotations, images = trained
    out = tmp_path / "results.json"
    assert_refused(capsys, ["predict", "--run", str(run), "--images", str(images), "--annotations", str(annotations),
                            "--out", str(out), "--quiet", *flags], phrase)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_predict_and_evaluate_refuse_bad_inputs(trained, tmp_path, capsys):
    run, annotations, images = trained
    assert_refused(capsys, ["predict", "--images", str(images), "--out", str(tmp_path / "r.json")],
                   "exactly one of --run")
    assert_refused(capsys, ["predict", "--run", str(tmp_path / "none"), "--images", str(images),
                            "--out", str(tmp_path / "r.json")], "does not exist")
    assert_refused(capsys, ["predict", "--run", str(run), "--images", str(images), "--out", str(tmp_path / "r.txt")],
                   "name a .json file")
    assert_refused(capsys, ["predict", "--run", str(run), "--images", str(images), "--out", str(images / "r.json")],
                   "--out")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5], "score": 0.5}]))
    assert_refused(capsys, ["evaluate", "--results", str(bad), "--annotations", str(annotations)],
                   "detection 0 has bbox=[0, 0, 5]")
    bad.write_text(json.dumps({"annotations": []}))
    assert_refused(capsys, ["evaluate", "--results", str(bad), "--annotations", str(annotations)],
                   "a results json is a list of detections")
    assert_refused(capsys, ["evaluate", "--results", str(bad)], "--results needs --annotations")
    assert_refused(capsys, ["evaluate", "--results", str(bad), "--checkpoint", str(run / "checkpoints" / "last.pt"),
                            "--annotations", str(annotations)], "exactly one of --checkpoint")


def test_the_slicing_pictures_draw_the_grid_and_each_detectors_boxes():
    import matplotlib

    matplotlib.use("Agg")
    from sodlib.data.tiles import tile_boxes
    from sodlib.viz import plot_detections_compared, plot_tile_grid

    image = _image_with_squares([(40, 40, 12)], size=(600, 800))
    grid = plot_tile_grid(image, tile_boxes(600, 800, 200, 0.2), np.array([[40, 40, 52, 52]]))
    assert len(grid.axes[0].patches) == len(tile_boxes(600, 800, 200, 0.2)) + 1
    compared = plot_detections_compared(image, np.array([[40, 40, 52, 52]]),
                                        {"whole": np.zeros((0, 4)), "sliced": np.array([[39, 39, 53, 53]])},
                                        crop=(0, 0, 100, 100))
    assert [len(ax.patches) for ax in compared.axes] == [1, 2]
    assert compared.axes[1].get_title() == "sliced: 1 detections" and compared.axes[0].get_xlim() == (0, 100)
