"""sodlib.anchors: generation conventions, IoU and matching against torchvision, closed forms vs boxes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou as tv_box_iou

from sodlib.anchors import (
    FPN_ANCHORS,
    AnchorSet,
    anchor_size_bounds,
    base_anchors,
    box_iou,
    derive_anchor_sizes,
    generate_anchors,
    generate_multilevel_anchors,
    largest_matching_offset,
    match_anchors,
    min_matchable_size,
    worst_case_iou,
    worst_case_iou_rect,
)


def centred_box(cx: float, cy: float, w: float, h: float) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


# ---------------------------------------------------------------- generation
def test_base_anchors_are_not_rounded_and_ratio_is_height_over_width():
    anchors = base_anchors([8.0], [0.5, 1.0, 2.0])
    w = anchors[:, 2] - anchors[:, 0]
    h = anchors[:, 3] - anchors[:, 1]
    np.testing.assert_allclose(w * h, 64.0, rtol=1e-12)  # torchvision would give 12 x 6 = 72 at ratio 0.5
    np.testing.assert_allclose(h / w, [0.5, 1.0, 2.0], rtol=1e-12)
    np.testing.assert_allclose(w[0], 8 * math.sqrt(2), rtol=1e-12)
    np.testing.assert_allclose(anchors[:, :2], -anchors[:, 2:])  # centred at the origin


def test_generate_anchors_centres_follow_the_offset():
    for offset in (0.0, 0.5):
        anchors = generate_anchors((2, 3), 16, [32.0], [1.0], offset=offset)
        assert anchors.shape == (6, 4)
        centres = (anchors[:, :2] + anchors[:, 2:]) / 2
        expected = torch.tensor([[(x + offset) * 16, (y + offset) * 16] for y in range(2) for x in range(3)], dtype=torch.float64)
        torch.testing.assert_close(centres, expected)
    sizes = generate_anchors((1, 1), 8, [32.0], [1.0])
    torch.testing.assert_close(sizes, torch.tensor([[-16.0, -16.0, 16.0, 16.0]], dtype=torch.float64))


def test_generate_anchors_has_torchvision_order():
    """Same order as torchvision's AnchorGenerator (exact where its rounding changes nothing)."""
    sizes, ratios = (32, 64), (0.5, 1.0, 2.0)
    generator = AnchorGenerator(sizes=(sizes,), aspect_ratios=(ratios,))
    image_list = ImageList(torch.zeros(1, 3, 64, 96), [(64, 96)])
    feature = torch.zeros(1, 8, 4, 6)  # stride 16
    theirs = generator(image_list, [feature])[0].double()
    ours = generate_anchors((4, 6), 16, sizes, ratios, offset=0.0)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=0.5, rtol=0)  # torchvision rounds base anchors to integers
    square = generate_anchors((4, 6), 16, sizes, (1.0,))
    square_tv = AnchorGenerator(sizes=(sizes,), aspect_ratios=((1.0,),))(image_list, [feature])[0].double()
    torch.testing.assert_close(square, square_tv, atol=0, rtol=0)


def test_multilevel_and_anchor_set():
    levels = generate_multilevel_anchors([(2, 2), (1, 1)], [4, 8], [[32], [64]], (1.0,))
    assert [tuple(level.shape) for level in levels] == [(4, 4), (1, 4)]
    assert FPN_ANCHORS.strides == (4.0, 8.0, 16.0, 32.0, 64.0)
    assert FPN_ANCHORS.feature_sizes(480, 640) == [(120, 160), (60, 80), (30, 40), (15, 20), (8, 10)]
    assert AnchorSet(size_divisible=1).feature_sizes(427, 640)[0] == (107, 160)
    assert FPN_ANCHORS.anchors_for_image(480, 640).shape[0] == 3 * (120 * 160 + 60 * 80 + 30 * 40 + 15 * 20 + 8 * 10)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="offset"):
        generate_anchors((2, 2), 16, [32], [1.0], offset=8)
    with pytest.raises(ValueError, match="sizes"):
        generate_anchors((2, 2), 16, [], [1.0])
    with pytest.raises(ValueError, match=r"gt_boxes\[0\]"):
        match_anchors(generate_anchors((2, 2), 16, [32]), torch.tensor([[10.0, 10.0, 5.0, 20.0]]))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        box_iou(torch.zeros(3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="neg_iou"):
        match_anchors(torch.zeros(1, 4), torch.zeros(1, 4), pos_iou=0.3, neg_iou=0.7)


# ---------------------------------------------------------------- IoU and matching
def test_box_iou_equals_torchvision():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g, dtype=torch.float64) * 100
    wh = torch.rand(50, 2, generator=g, dtype=torch.float64) * 50 + 0.5
    boxes = torch.cat([xy, xy + wh], dim=1)
    torch.testing.assert_close(box_iou(boxes[:20], boxes[20:]), tv_box_iou(boxes[:20], boxes[20:]))


def random_scene(seed: int, num_objects: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchors on a 64 x 64 image and objects on a coarse grid of positions and sizes, so ties are common
    (objects inside several equal anchors, duplicated objects)."""
    rng = np.random.default_rng(seed)
    anchors = generate_anchors((8, 8), 8, [16.0, 32.0], (0.5, 1.0, 2.0))
    xy = rng.integers(0, 14, size=(num_objects, 2)) * 4.0
    wh = rng.integers(1, 8, size=(num_objects, 2)) * 4.0
    boxes = np.concatenate([xy, xy + wh], axis=1)
    if num_objects > 2:
        boxes[-1] = boxes[0]  # a duplicated object: anchors tied between two objects
    return anchors, torch.as_tensor(boxes, dtype=torch.float64)


@pytest.mark.parametrize("allow_low_quality", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_match_anchors_equals_torchvision_matcher(seed, allow_low_quality):
    anchors, boxes = random_scene(seed, num_objects=1 + seed * 3)
    ours = match_anchors(anchors, boxes, 0.7, 0.3, allow_low_quality, ties="exact")
    theirs = Matcher(0.7, 0.3, allow_low_quality)(tv_box_iou(boxes, anchors))
    assert torch.equal(ours.matched_object, theirs)
    assert torch.equal(ours.labels, torch.where(theirs >= 0, 1, torch.where(theirs == -2, -1, 0)).to(torch.int8))
    expected_counts = torch.bincount(theirs[theirs >= 0], minlength=boxes.shape[0])
    assert torch.equal(ours.matched_anchors_per_object, expected_counts)
    torch.testing.assert_close(ours.best_iou_per_object, tv_box_iou(boxes, anchors).max(dim=1).values)


def test_match_one_object_exactly_at_an_anchor_and_between_anchors():
    anchors = generate_anchors((4, 4), 16, [32.0], (1.0,))  # centres 0, 16, 32, 48
    at_anchor = torch.tensor([centred_box(16, 16, 32, 32)], dtype=torch.float64)
    result = match_anchors(anchors, at_anchor)
    assert result.best_iou_per_object.item() == 1.0
    assert result.matched_anchors_per_object.item() == 1
    assert int(result.labels.eq(1).sum()) == 1
    # a 10 px object half-way between centres: four anchors contain it, all tied at 100 / 1024
    between = torch.tensor([centred_box(24, 24, 10, 10)], dtype=torch.float64)
    tied = match_anchors(anchors, between, ties="all")
    assert tied.best_iou_per_object.item() == pytest.approx(100 / 1024)
    assert tied.matched_anchors_per_object.item() == 4
    one = match_anchors(anchors, between, ties="one")
    assert one.matched_anchors_per_object.item() == 1
    assert int(one.labels.eq(1).nonzero()[0]) == 1 * 4 + 1  # the lowest-index tied anchor (row 1, column 1)
    assert int(one.labels.eq(-1).sum()) == 0 and int(one.labels.eq(0).sum()) == 15
    no_low_quality = match_anchors(anchors, between, allow_low_quality=False)
    assert no_low_quality.matched_anchors_per_object.item() == 0


def containing_anchors(anchors: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """``bool [A]``: anchors that contain ``box`` ``[4]`` entirely."""
    return (anchors[:, 0] <= box[0]) & (anchors[:, 1] <= box[1]) & (anchors[:, 2] >= box[2]) & (anchors[:, 3] >= box[3])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ties_are_the_geometric_ties_not_rounding_noise(dtype):
    """A 16 px square inside FPN's stride-4 anchors of area 32^2 (all three ratios) has IoU 256 / 1024 with each
    anchor that contains it: those are its best anchors, all tied. Computed from shifted float coordinates their
    IoUs differ in the last bits, so exact equality keeps only some of them; the tolerance keeps all."""
    anchors = FPN_ANCHORS.anchors_for_image(640, 640, dtype=dtype)
    level = anchors[: FPN_ANCHORS.feature_sizes(640, 640)[0][0] * FPN_ANCHORS.feature_sizes(640, 640)[0][1] * 3]
    rng = np.random.default_rng(0)
    exact_fewer = 0
    for corner in rng.uniform(100, 500, size=(40, 2)):
        box = torch.tensor([[corner[0], corner[1], corner[0] + 16, corner[1] + 16]], dtype=dtype)
        geometric = int(containing_anchors(level, box[0]).sum())
        assert geometric >= 25  # at least the 5 x 5 square anchors of side 32
        tied = match_anchors(anchors, box, ties="all")
        assert tied.matched_anchors_per_object.item() == geometric
        assert tied.best_iou_per_object.item() == pytest.approx(0.25, rel=1e-5)
        exact = match_anchors(anchors, box, ties="exact").matched_anchors_per_object.item()
        assert 1 <= exact <= geometric
        exact_fewer += exact < geometric
        one = match_anchors(anchors, box, ties="one")
        assert one.matched_anchors_per_object.item() == 1
        assert bool(containing_anchors(anchors[one.labels == 1], box[0]).all())
    assert exact_fewer > 0  # the noise the tolerance removes is real on these anchors


def test_match_without_objects_marks_every_anchor_negative():
    anchors = generate_anchors((2, 2), 16, [32.0])
    result = match_anchors(anchors, torch.zeros(0, 4, dtype=torch.float64))
    assert result.labels.eq(0).all() and result.matched_anchors_per_object.numel() == 0


# ---------------------------------------------------------------- closed forms
def brute_force_iou(object_wh, anchor_wh, offset_xy) -> float:
    """Place the two boxes and compute their IoU with box_iou."""
    obj = torch.tensor([centred_box(0.0, 0.0, *object_wh)], dtype=torch.float64)
    anc = torch.tensor([centred_box(offset_xy[0], offset_xy[1], *anchor_wh)], dtype=torch.float64)
    return float(box_iou(obj, anc))


def test_worst_case_iou_matches_placed_boxes_on_a_grid():
    sides = [4.0, 9.0, 16.0, 25.0, 32.0, 45.0, 64.0]
    offsets = [0.0, 1.0, 2.0, 4.0, 7.5, 8.0, 16.0, 30.0]
    regimes = set()
    for s in sides:
        for a in sides:
            for d in offsets:
                closed = worst_case_iou(s, a, d)
                assert closed == pytest.approx(brute_force_iou((s, s), (a, a), (d, d)), abs=1e-12), (s, a, d)
                regimes.add("contains" if a >= s + 2 * d else "inside" if a <= s - 2 * d else "sticks out")
    assert regimes == {"contains", "inside", "sticks out"}
    grid = worst_case_iou(np.array(sides)[:, None], np.array(sides)[None, :], 4.0)
    assert grid.shape == (7, 7)


def test_krishna_jawahar_equation_is_the_equal_size_case():
    s, d = 32.0, 6.0
    assert worst_case_iou(s, s, d) == pytest.approx((s - d) ** 2 / (2 * s * s - (s - d) ** 2))


def test_worst_case_iou_rect_matches_placed_boxes():
    rng = np.random.default_rng(1)
    for _ in range(200):
        object_wh = rng.uniform(2, 80, size=2)
        anchor_wh = rng.uniform(2, 80, size=2)
        offset = rng.uniform(0, 40, size=2)
        assert worst_case_iou_rect(object_wh, anchor_wh, offset) == pytest.approx(brute_force_iou(object_wh, anchor_wh, offset), abs=1e-12)


# R15: stride -> (s_min at t = 0.5, anchor at t = 0.5, s_min at t = 0.7), as printed.
R15 = {4: (9.657, 13.657, 20.489), 8: (19.314, 27.314, 40.978), 16: (38.627, 54.627, 81.955), 32: (77.255, 109.255, 163.910)}


@pytest.mark.parametrize("stride", sorted(R15))
def test_r15_smallest_matchable_object(stride):
    s05, anchor05, s07 = R15[stride]
    assert round(min_matchable_size(stride, 0.5), 3) == s05
    assert round(min_matchable_size(stride, 0.7), 3) == s07
    lo, hi = anchor_size_bounds(min_matchable_size(stride, 0.5), stride, 0.5)
    assert round(lo, 3) == round(hi, 3) == anchor05
    # brute force over anchor sides: at s_min the best worst-case IoU is t, at the anchor s + stride
    a = np.linspace(1.0, 4.0 * anchor05, 200_001)
    for t, s in ((0.5, min_matchable_size(stride, 0.5)), (0.7, min_matchable_size(stride, 0.7))):
        iou = worst_case_iou(s, a, stride / 2)
        assert iou.max() == pytest.approx(t, abs=2e-5)
        assert a[iou.argmax()] == pytest.approx(s + stride, abs=1e-3 * stride)
        assert worst_case_iou(0.99 * s, a, stride / 2).max() < t
    assert anchor_size_bounds(0.99 * min_matchable_size(stride, 0.5), stride, 0.5) is None


@pytest.mark.parametrize("stride", [4, 8, 16, 32])
@pytest.mark.parametrize("t", [0.5, 0.7])
def test_anchor_size_bounds_match_brute_force(stride, t):
    a = np.linspace(0.5, 800, 400_001)
    for s in np.geomspace(min_matchable_size(stride, t) * 1.001, 300, 9):
        lo, hi = anchor_size_bounds(s, stride, t)
        ok = a[worst_case_iou(s, a, stride / 2) >= t]
        assert ok.min() == pytest.approx(lo, abs=2e-3) and ok.max() == pytest.approx(hi, abs=2e-3)


def test_derive_anchor_sizes_covers_the_size_range():
    rng = np.random.default_rng(0)
    sides = np.exp(rng.uniform(np.log(6), np.log(300), 20_000))
    for stride, t in ((4, 0.5), (16, 0.5), (8, 0.7)):
        derived = derive_anchor_sizes(sides, stride, t)
        assert derived.sizes == sorted(derived.sizes)
        lo, hi = derived.covered_range
        assert lo == pytest.approx(max(np.quantile(sides, 0.01), min_matchable_size(stride, t)))
        assert hi == pytest.approx(np.quantile(sides, 0.99))
        for s in np.linspace(lo, hi, 2_000):
            best = max(worst_case_iou(s, a, stride / 2) for a in derived.sizes)
            assert best >= t - 1e-9, (stride, t, s)
        assert derived.unmatchable_share == pytest.approx(np.mean(sides < min_matchable_size(stride, t)))
    with pytest.raises(ValueError, match="object_sizes"):
        derive_anchor_sizes([], 16)


def _square(cx: float, cy: float, side: float) -> list[float]:
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


@pytest.mark.parametrize("s, a, t", [(16, 24, 0.3), (20, 20, 0.5), (40, 32, 0.5), (10, 30, 0.1), (55, 60, 0.7)])
def test_largest_matching_offset_is_where_iou_crosses_the_threshold(s, a, t):
    d = largest_matching_offset(s, a, t)
    assert d is not None and d >= abs(a - s) / 2 - 1e-9
    # brute force: real boxes, torch IoU, just inside and just outside
    inside = box_iou(torch.tensor([_square(0, 0, s)], dtype=torch.float64), torch.tensor([_square(d - 1e-6, d - 1e-6, a)], dtype=torch.float64))
    outside = box_iou(torch.tensor([_square(0, 0, s)], dtype=torch.float64), torch.tensor([_square(d + 1e-6, d + 1e-6, a)], dtype=torch.float64))
    assert float(inside) >= t > float(outside)


def test_largest_matching_offset_none_when_even_concentric_fails():
    assert largest_matching_offset(16, 24, 0.5) is None  # (16/24)^2 = 0.444
    assert largest_matching_offset(16, 24, 0.44) is not None
