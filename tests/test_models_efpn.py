"""EFPN: the extension's shapes, the RoI-to-level split, the stages' freezing, the balanced loss, bad options."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.ops.poolers import LevelMapper

from sodlib.models import build_model
from sodlib.models.efpn import EXTENDED_KEY, SubPixelUp, match_size
from sodlib.models.losses import box_cell_mask, fbb_loss, feature_error_by_region
from sodlib.pyramid_levels import cells_covered, default_extended_threshold, efpn_level, fpn_level

SMALL = dict(backbone="resnet_tiny", fpn_channels=16, representation_size=32, min_size=128, max_size=128,
             anchor_sizes=[[8.0], [16.0], [32.0], [64.0], [128.0]], rpn_pre_nms_top_n_train=100,
             rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
             box_batch_size_per_image=32)


def _targets(count: int = 2) -> list[dict]:
    boxes = torch.tensor([[4.0, 6.0, 12.0, 13.0], [40.0, 30.0, 90.0, 100.0], [100.0, 100.0, 106.0, 104.0]])
    return [{"boxes": boxes.clone(), "labels": torch.tensor([1, 2, 1])} for _ in range(count)]


def _images(count: int = 2, size: tuple[int, int] = (128, 128)) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [torch.rand(3, *size, generator=generator) for _ in range(count)]


@pytest.fixture(scope="module")
def baseline():
    torch.manual_seed(0)
    return build_model("faster_rcnn", num_classes=3, **SMALL)


def _efpn(baseline, **options):
    torch.manual_seed(1)
    model = build_model("efpn", num_classes=3, **{**SMALL, **options})
    model.load_baseline(baseline.state_dict())
    return model


# ---------------------------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("sr_module", ["ftt", "espcn", "nearest"])
@pytest.mark.parametrize("size", [(128, 128), (97, 131)])
def test_every_tensor_of_the_extension_has_its_shape(baseline, sr_module, size):
    model = _efpn(baseline, sr_module=sr_module, size_divisible=1, min_size=size[0], max_size=max(size))
    x = torch.rand(2, 3, *size)
    features, extension = model.backbone(x)
    h, w = size
    quarter = (math.ceil(h / 4), math.ceil(w / 4))
    assert features["0"].shape[-2:] == quarter                                 # P2, stride 4
    assert features["1"].shape[-2:] == (math.ceil(h / 8), math.ceil(w / 8))    # P3, stride 8
    assert extension["c2"].shape == (2, 16, math.ceil(h / 2), math.ceil(w / 2))  # C'2: stage 2 at stride 2
    assert extension["p3"].shape == (2, 16, *quarter)                          # P'3: P2's resolution
    assert features[EXTENDED_KEY].shape == (2, 16, math.ceil(h / 2), math.ceil(w / 2))  # P'2: twice P2's
    assert list(features) == [EXTENDED_KEY, "0", "1", "2", "3", "pool"]


def test_p2_extended_has_twice_p2s_resolution_in_a_padded_batch(baseline):
    model = _efpn(baseline).eval()
    image_list, _ = model.transform(_images(2, (120, 90)))
    features, _ = model.features(image_list.tensors)
    assert features[EXTENDED_KEY].shape[-1] == 2 * features["0"].shape[-1]
    assert features[EXTENDED_KEY].shape[-2] == 2 * features["0"].shape[-2]


def test_c2_twice_is_stage_2_with_the_same_weights_at_stride_2(baseline):
    """C'2 runs the baseline's stage 2 on the stem without its last stride-2 step: the same weights, so on an
    input whose stem output is constant along a step of two pixels, C'2 subsampled is C2 away from the borders."""
    model = _efpn(baseline)
    x = torch.rand(1, 3, 64, 64)
    regular, twice = model.backbone.stem(x)
    stem = model.backbone.body.stem
    assert twice.shape[-1] == 2 * regular.shape[-1]
    # the strided convolution is the stride-1 one read at every other cell
    first = stem[2](stem[1](stem[0](x)))
    strided = stem[3](first)
    full = torch.nn.functional.conv2d(first, stem[3].weight, None, stride=1, padding=1)
    torch.testing.assert_close(strided, full[..., ::2, ::2])


def test_pixel_shuffle_reads_channel_c_r2_plus_i_r_plus_j_into_pixel_r_y_plus_i():
    up = SubPixelUp(2)
    x = torch.arange(2 * 4 * 3 * 3, dtype=torch.float32).reshape(1, 8, 3, 3)
    out = up.shuffle(x)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                torch.testing.assert_close(out[0, c, i::2, j::2], x[0, c * 4 + i * 2 + j])


def test_match_size_crops_and_repeats_edges():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    assert match_size(x, (2, 3)).tolist() == [[[[0.0, 1.0, 2.0], [4.0, 5.0, 6.0]]]]
    padded = match_size(x, (4, 5))
    assert padded.shape[-2:] == (4, 5) and padded[0, 0, 3, 4] == 11.0 and padded[0, 0, 0, 4] == 3.0


# ---------------------------------------------------------------------------------------------------------- levels

def test_fpn_level_is_torchvisions_level_mapper():
    sides = np.array([4.0, 27.9, 56.0, 111.9, 112.0, 223.9, 224.0, 447.0, 448.0, 1000.0])
    mapper = LevelMapper(2, 5)
    boxes = torch.tensor([[0.0, 0.0, s, s] for s in sides], dtype=torch.float64)
    assert (mapper([boxes]).numpy() + 2).tolist() == fpn_level(sides).tolist()
    assert fpn_level(sides).tolist() == [2, 2, 2, 2, 3, 3, 4, 4, 5, 5]


def test_efpn_sends_rois_under_the_threshold_to_p2_extended():
    assert default_extended_threshold(1400) == pytest.approx(56.0)
    assert default_extended_threshold(448) == pytest.approx(17.92)
    assert efpn_level([10.0, 17.9, 17.92, 50.0, 130.0], 17.92).tolist() == [1, 1, 2, 2, 3]
    assert cells_covered([8.0, 8.0], [1, 2]).tolist() == [16.0, 4.0]


def test_the_roi_heads_split_proposals_where_the_formula_says(baseline):
    model = _efpn(baseline, extended_threshold=20.0)
    sides = torch.tensor([5.0, 19.99, 20.0, 60.0])
    boxes = torch.stack([torch.zeros(4), torch.zeros(4), sides, sides], dim=1)
    assert model.roi_heads.is_small(boxes).tolist() == (efpn_level(sides.numpy(), 20.0) == 1).tolist()


def test_small_rois_are_classified_from_p2_extended_and_the_others_from_fpn(baseline):
    """Changing P'2 changes the scores of the small proposals only; changing P3..P5 those of the large only."""
    model = _efpn(baseline, extended_threshold=20.0).eval()
    features, _ = model.features(torch.rand(1, 3, 128, 128))
    proposals = [torch.tensor([[10.0, 10.0, 20.0, 22.0], [30.0, 30.0, 110.0, 120.0]])]
    logits, _ = model.roi_heads.box_outputs(features, proposals, [(128, 128)])
    changed = dict(features)
    changed[EXTENDED_KEY] = features[EXTENDED_KEY] + 1.0
    logits_e, _ = model.roi_heads.box_outputs(changed, proposals, [(128, 128)])
    assert not torch.allclose(logits_e[0], logits[0]) and torch.equal(logits_e[1], logits[1])
    changed = dict(features)
    for key in ("0", "1", "2", "3"):
        changed[key] = features[key] + 1.0
    logits_p, _ = model.roi_heads.box_outputs(changed, proposals, [(128, 128)])
    assert torch.equal(logits_p[0], logits[0]) and not torch.allclose(logits_p[1], logits[1])


# ---------------------------------------------------------------------------------------------------------- stages

def _train_steps(model, steps: int = 2) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    for _ in range(steps):
        loss = sum(model(_images(), _targets()).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _trainable_prefixes(model) -> set[str]:
    return {name.split(".")[0] + "." + name.split(".")[1] for name, p in model.named_parameters() if p.requires_grad}


def test_stage_2_changes_the_extension_only_and_never_the_teacher(baseline):
    model = _efpn(baseline)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train_steps(model)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("backbone.lateral.", "backbone.sr.")) for k in changed)
    # the teacher is the frozen body + FPN: parameters and batch-norm statistics untouched
    assert not any(k.startswith(("backbone.body.", "backbone.fpn.", "rpn.", "roi_heads.")) for k in changed)
    assert _trainable_prefixes(model) == {"backbone.lateral", "backbone.sr"}


def test_stage_2_losses_are_the_distillation_terms(baseline):
    model = _efpn(baseline).train()
    assert set(model(_images(), _targets())) == {"loss_distill_p2", "loss_distill_p3"}
    alone = _efpn(baseline, sr_module="espcn", distill_loss="none", detection_loss=True, distill_p3=False).train()
    assert set(alone(_images(), _targets())) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    single = _efpn(baseline, distill_p3=False).train()
    assert set(single(_images(), _targets())) == {"loss_distill_p2"}


def test_stage_2_teacher_is_the_same_fpn_on_the_2x_input(baseline):
    model = _efpn(baseline).eval()
    x = torch.rand(1, 3, 64, 64)
    teacher = model.teacher_levels(x)
    baseline.eval()
    with torch.no_grad():
        upsampled = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        expected = baseline.backbone(upsampled)
    torch.testing.assert_close(teacher["0"], expected["0"])
    torch.testing.assert_close(teacher["1"], expected["1"])


def test_stage_3_trains_the_p2_head_alone_starting_from_the_original(baseline):
    stage2 = _efpn(baseline)
    _train_steps(stage2, 1)
    model = build_model("efpn", num_classes=3, stage=3, **SMALL)
    model.load_baseline(stage2.state_dict())
    heads = model.roi_heads
    torch.testing.assert_close(heads.small_box_head.fc6.weight, heads.box_head.fc6.weight)
    torch.testing.assert_close(model.backbone.lateral.weight, stage2.backbone.lateral.weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train_steps(model)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(k.startswith(("roi_heads.small_box_head.", "roi_heads.small_box_predictor.")) for k in changed)


def test_same_seed_same_weights(baseline):
    first, second = _efpn(baseline), _efpn(baseline)
    _train_steps(first)
    _train_steps(second)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_inference_gives_detections_in_input_pixels(baseline):
    model = _efpn(baseline).eval()
    with torch.no_grad():
        out = model(_images(2, (100, 150)))
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}
    if len(out[0]["boxes"]):
        assert float(out[0]["boxes"][:, 2].max()) <= 150.0 + 1e-3


@pytest.mark.parametrize("options", [{"extended_source": "teacher"}, {"probe": "p3"}, {"probe": "p3_2x"},
                                     {"probe": "p3_extended"}])
def test_test_time_variants_run(baseline, options):
    model = _efpn(baseline, **options).eval()
    with torch.no_grad():
        assert len(model(_images(1))) == 1


def test_baseline_weights_of_another_model_are_refused(baseline):
    model = build_model("efpn", num_classes=4, **SMALL)
    with pytest.raises(ValueError, match="not an FPN baseline"):
        model.load_baseline({k: v for k, v in baseline.state_dict().items() if "box_predictor" not in k})


# ---------------------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("options, message", [
    ({"sr_module": "bicubic"}, "sr_module='bicubic' is unknown"),
    ({"fbb_lambda": -0.5}, "fbb_lambda=-0.5 must be a number >= 0"),
    ({"stage": 1}, "stage=1 is unknown"),
    ({"distill_loss": "none"}, "nothing to learn from"),
    ({"backbone": "mobilenet_v3", "fpn_channels": None}, "needs a ResNet with a feature pyramid"),
    ({"fpn": False}, "fix: fpn = true"),
    ({"extended_threshold": 0}, "extended_threshold=0 must be a positive"),
    ({"probe": "p4"}, "probe='p4' is unknown"),
    ({"extended_anchor_sizes": [4.0, 6.0]}, "as many sizes as every other level"),
])
def test_a_bad_configuration_is_refused_when_the_model_is_built(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model("efpn", num_classes=3, **{**SMALL, **options})


# ---------------------------------------------------------------------------------------------------------- fbb loss

def _fbb_by_loops(student: np.ndarray, teacher: np.ndarray, boxes: list[np.ndarray], lam: float, stride: float) -> float:
    """eqs. 6-8 with explicit loops: the mean absolute error over every element, plus lam times its mean over
    the channels of the cells that overlap a box."""
    batch, channels, height, width = student.shape
    total = np.abs(student - teacher).mean()
    positive, count = 0.0, 0
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                covered = any(x1 < (x + 1) * stride and x2 > x * stride and y1 < (y + 1) * stride and y2 > y * stride
                              for x1, y1, x2, y2 in boxes[b])
                if covered:
                    positive += np.abs(student[b, :, y, x] - teacher[b, :, y, x]).sum()
                    count += 1
    return total + (lam * positive / (count * channels) if count else 0.0)


def test_fbb_loss_matches_an_independent_computation_with_border_boxes_and_an_empty_image():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(3, 4, 6, 7, generator=generator, dtype=torch.float64)
    teacher = torch.randn(3, 4, 6, 7, generator=generator, dtype=torch.float64)
    boxes = [torch.tensor([[0.0, 0.0, 3.0, 2.5], [20.0, 18.0, 40.0, 40.0]], dtype=torch.float64),  # a corner; past the border
             torch.zeros(0, 4, dtype=torch.float64),                                            # no boxes at all
             torch.tensor([[9.2, 5.1, 9.9, 5.6]], dtype=torch.float64)]                          # smaller than a cell
    for lam in (0.0, 0.5, 1.0, 1.5):
        expected = _fbb_by_loops(student.numpy(), teacher.numpy(), [b.numpy() for b in boxes], lam, 4.0)
        assert float(fbb_loss(student, teacher, boxes, lam, stride=4.0)) == pytest.approx(expected, rel=1e-12)


def test_fbb_loss_without_any_box_is_the_global_l1_and_its_teacher_gets_no_gradient():
    student = torch.randn(2, 3, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = fbb_loss(student, teacher, [torch.zeros(0, 4), torch.zeros(0, 4)], 1.0)
    torch.testing.assert_close(loss, (student - teacher).abs().mean())
    loss.backward()
    assert teacher.grad is None and student.grad is not None


def test_box_cell_mask_covers_at_least_one_cell_per_box_inside_the_map():
    mask = box_cell_mask([torch.tensor([[5.0, 5.0, 5.5, 5.5], [-3.0, -3.0, 1.0, 1.0], [2.0, 2.0, 2.0, 9.0]])], 4, 4, 2.0)
    assert mask[0, 2, 2] and mask[0, 0, 0] and int(mask.sum()) == 2  # the empty box covers nothing


@pytest.mark.parametrize("bad, message", [({"lam": -1.0}, "lam=-1.0 must be a number >= 0"),
                                          ({"stride": 0.0}, "stride=0.0 must be positive")])
def test_fbb_loss_refuses_bad_arguments(bad, message):
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match=message):
        fbb_loss(x, x, [torch.tensor([[0.0, 0.0, 1.0, 1.0]])], **{"lam": 1.0, **bad})


def test_fbb_loss_refuses_maps_of_different_shapes():
    with pytest.raises(ValueError, match="must be maps of one shape"):
        fbb_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 8, 8), [torch.zeros(0, 4)])


def test_feature_error_by_region_splits_object_and_background_cells():
    student = torch.zeros(1, 2, 4, 4)
    teacher = torch.zeros(1, 2, 4, 4)
    teacher[0, :, 0, 0] = 2.0  # the box's cell is off by 2, the background by 0
    error = feature_error_by_region(student, teacher, [torch.tensor([[0.0, 0.0, 1.0, 1.0]])])
    assert error == {"object": 2.0, "background": 0.0, "object_cells": 1, "background_cells": 15}
