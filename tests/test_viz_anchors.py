"""Notebook 02's pure functions: figures and numbers from state, checked against brute force and R15/R16."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sodlib.anchors import FPN_ANCHORS, AnchorSet, box_iou, worst_case_iou  # noqa: E402
from sodlib.data.coco import coco_from_dict  # noqa: E402
from sodlib.stats import anchor_matching_statistics  # noqa: E402
from sodlib.viz import anchors as viz  # noqa: E402


def square(cx: float, cy: float, side: float) -> list[float]:
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def test_iou_explorer_view_reports_the_closed_forms_and_r15():
    figure, report = viz.iou_explorer_view(20.0, 28.0, 3.0, 0.5)
    assert isinstance(figure, Figure) and len(figure.axes) == 3
    assert report.iou == pytest.approx(worst_case_iou(20.0, 28.0, 3.0))
    brute = box_iou(torch.tensor([square(0, 0, 20)], dtype=torch.float64), torch.tensor([square(3, 3, 28)], dtype=torch.float64))
    assert report.iou == pytest.approx(float(brute))
    # R15 at t = 0.5, printed precision
    assert [round(report.min_matchable[s], 3) for s in (4.0, 8.0, 16.0, 32.0)] == [9.657, 19.314, 38.627, 77.255]
    assert report.anchor_bounds[16.0] is None  # a 20 px object is below s_min at stride 16
    lo, hi = report.anchor_bounds[4.0]
    assert lo <= 24.0 <= hi  # the best anchor s + stride lies inside the bounds
    assert "stride 4" in report.summary()
    plt.close("all")


def test_iou_explorer_view_rejects_bad_state():
    with pytest.raises(ValueError, match="offset"):
        viz.iou_explorer_view(10, 10, -1, 0.5)


def scene():
    image = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[10.0, 10.0, 26.0, 26.0], [40.0, 20.0, 104.0, 84.0], [0.0, 0.0, 4.0, 4.0]])
    target = {"boxes": boxes, "area": torch.tensor([256.0, 4096.0, 16.0]), "iscrowd": torch.tensor([0, 0, 1]),
              "labels": torch.tensor([1, 1, 1]), "image_id": 1}
    return image, target


def test_anchor_explorer_view_counts_match_the_matcher():
    image, target = scene()
    figure, report = viz.anchor_explorer_view(image, target, stride=8, sizes=(16.0, 64.0), aspect_ratios=(1.0,), offset=0.5,
                                              pos_iou=0.7, neg_iou=0.3)
    assert isinstance(figure, Figure)
    assert report.anchors == 12 * 16 * 2 and [row["index"] for row in report.objects] == [0, 1]  # crowd not matched
    small, large = report.objects
    # anchor centres sit at 4, 12, 20, ... (offset 0.5 of stride 8); the 16 px square centred at (18, 18)
    # is best met by the 16 px anchor at (20, 20): IoU = 14^2 / (2 * 256 - 14^2); the 64 px object centred at
    # (72, 52) by the 64 px anchor at (68, 52) or (76, 52): IoU = 60 * 64 / (2 * 64^2 - 60 * 64)
    assert small["bin"] == "small" and small["best_iou"] == pytest.approx(196 / (512 - 196))
    assert small["above_threshold"] == 0 and small["matched"] >= 1
    assert report.small_without_anchor_share == 1.0
    assert large["bin"] == "medium" and large["best_iou"] == pytest.approx(60 * 64 / (2 * 4096 - 60 * 64)) and large["above_threshold"] >= 1
    assert report.focus == 0 and "small objects with no anchor above the threshold: 100 %" in report.summary()
    plt.close("all")


def test_anchor_explorer_view_share_drops_with_a_better_anchor():
    image, target = scene()
    _, coarse = viz.anchor_explorer_view(image, target, stride=8, sizes=(16.0,), aspect_ratios=(1.0,), offset=0.5)
    _, fine = viz.anchor_explorer_view(image, target, stride=2, sizes=(16.0,), aspect_ratios=(1.0,), offset=0.0)
    assert coarse.small_without_anchor_share == 1.0 and fine.small_without_anchor_share == 0.0
    with pytest.raises(ValueError, match="neg_iou"):
        viz.anchor_explorer_view(image, target, pos_iou=0.3, neg_iou=0.5)
    with pytest.raises(ValueError, match="focus"):
        viz.anchor_explorer_view(image, target, focus=2)  # the crowd region is not matched
    plt.close("all")


def test_design_and_comparison_figures():
    sides = np.exp(np.random.default_rng(0).uniform(np.log(4), np.log(200), 300))
    design = viz.plot_anchor_design(16, 0.5, [54.6, 109.2], sides)
    assert isinstance(design, Figure) and len(design.axes) >= 2
    coco = coco_from_dict({
        "images": [{"id": 1, "height": 128, "width": 128, "file_name": "1.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [10, 10, 20, 20], "area": 400.0},
                        {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [30, 30, 60, 60], "area": 3600.0}],
        "categories": [{"id": 1, "name": "thing"}],
    })
    results = {"FPN": anchor_matching_statistics(coco), "small set": anchor_matching_statistics(coco, anchors=AnchorSet.single_level(4, [24, 64]))}
    strict = {k: anchor_matching_statistics(coco, anchors=a, allow_low_quality=False)
              for k, a in {"FPN": FPN_ANCHORS, "small set": AnchorSet.single_level(4, [24, 64])}.items()}
    comparison = viz.plot_matching_comparison(results, above_threshold=strict)
    assert len(comparison.axes) == 3
    assert math.isclose(results["small set"].bins[0].mean_best_iou, 1.0) or results["small set"].bins[0].mean_best_iou > results["FPN"].bins[0].mean_best_iou
    plt.close("all")
