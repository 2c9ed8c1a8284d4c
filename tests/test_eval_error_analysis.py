"""Error analysis: per-image TP / FP / miss matching, PR curves per size bin, and their figures."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from pycocotools.coco import COCO

from sodlib.eval import match_image, precision_recall_by_bin, run_cocoeval, summarize
from sodlib.viz.detection import plot_detection_errors, plot_loss_curves, plot_pr_curves


def _target():
    # a small (area 100), a medium (2500) and a large (12100) object of class 1, a crowd region of class 2
    return {"boxes": torch.tensor([[10.0, 10.0, 20.0, 20.0], [40.0, 40.0, 90.0, 90.0], [100.0, 10.0, 210.0, 120.0], [0.0, 150.0, 60.0, 200.0]]),
            "labels": torch.tensor([1, 1, 1, 2]), "area": torch.tensor([100.0, 2500.0, 12100.0, 3000.0]),
            "iscrowd": torch.tensor([0, 0, 0, 1])}


def _prediction():
    return {"boxes": torch.tensor([[11.0, 10.0, 21.0, 20.0],     # TP on the small object (IoU 0.82)
                                   [40.0, 40.0, 90.0, 88.0],     # TP on the medium one
                                   [41.0, 41.0, 89.0, 89.0],     # duplicate of the medium: FP
                                   [100.0, 10.0, 210.0, 120.0],  # right place, wrong class: FP
                                   [5.0, 155.0, 25.0, 175.0],    # on the crowd region of its class: ignored
                                   [150.0, 150.0, 160.0, 160.0], # nothing there: FP (small)
                                   [10.0, 10.0, 20.0, 20.0]]),   # below the score threshold: not counted
            "labels": torch.tensor([1, 1, 1, 3, 2, 1, 1]),
            "scores": torch.tensor([0.9, 0.95, 0.8, 0.7, 0.6, 0.55, 0.2])}


def test_match_image_follows_cocoevals_rule():
    errors = match_image(_prediction(), _target(), iou_threshold=0.5, score_threshold=0.5)
    assert errors.true_positives.tolist() == [1, 0]  # by decreasing score
    assert errors.matched_objects.tolist() == [1, 0]
    assert sorted(errors.false_positives.tolist()) == [2, 3, 5]
    assert errors.ignored.tolist() == [4]
    assert errors.missed.tolist() == [2]  # the large object: its only detection had the wrong class
    assert errors.counts_by_bin() == {"small": {"tp": 1, "fp": 1, "missed": 0}, "medium": {"tp": 1, "fp": 1, "missed": 0},
                                      "large": {"tp": 0, "fp": 1, "missed": 1}}
    strict = match_image(_prediction(), _target(), iou_threshold=0.9, score_threshold=0.5)
    assert strict.true_positives.tolist() == [1] and 0 in strict.missed.tolist()


def test_match_image_with_nothing_on_either_side():
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}
    errors = match_image(empty, _target())
    assert errors.missed.tolist() == [0, 1, 2] and len(errors.false_positives) == 0
    no_objects = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "area": torch.zeros(0)}
    assert match_image(_prediction(), no_objects).false_positives.tolist() == [1, 0, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="iou_threshold"):
        match_image(empty, _target(), iou_threshold=0)


def _cocoeval():
    target, prediction = _target(), _prediction()
    coco = COCO()
    xywh = lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]]  # noqa: E731
    coco.dataset = {"images": [{"id": 1, "width": 220, "height": 220, "file_name": "x.png"}],
                    "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)],
                    "annotations": [{"id": i + 1, "image_id": 1, "category_id": int(l), "bbox": xywh(b.tolist()), "area": float(a),
                                     "iscrowd": int(c)} for i, (b, l, a, c) in enumerate(zip(target["boxes"], target["labels"], target["area"], target["iscrowd"]))]}
    coco.createIndex()
    results = [{"image_id": 1, "category_id": int(l), "bbox": xywh(b.tolist()), "score": float(s)}
               for b, l, s in zip(prediction["boxes"], prediction["labels"], prediction["scores"])]
    return run_cocoeval(coco, results)


def test_precision_recall_by_bin_reproduces_coco_ap():
    cocoeval = _cocoeval()
    curves = precision_recall_by_bin(cocoeval, iou=0.5, bins=("all", "small", "medium", "large"))
    figures = summarize(cocoeval)
    # class 1 is the only class with objects in small/medium/large, so the per-bin AP50 is its AP50
    recall, precision, ap = curves["small"]
    assert recall.shape == precision.shape == (101,)
    assert np.all(np.diff(precision) <= 1e-12)  # interpolated precision never rises with recall
    assert curves["large"][2] == 0.0  # the large object was never found
    assert curves["medium"][2] == pytest.approx(1.0)
    expected_all = cocoeval.eval["precision"][0, :, :, 0, -1]
    assert curves["all"][2] == pytest.approx(float(expected_all[:, (expected_all > -1).all(0)].mean()))
    assert figures["AP50"] == pytest.approx(float(np.mean(expected_all[expected_all > -1])))
    with pytest.raises(ValueError, match="IoU|thresholds"):
        precision_recall_by_bin(cocoeval, iou=0.52)


def test_figures_are_returned():
    curves = precision_recall_by_bin(_cocoeval(), iou=0.5, bins=("all", "small", "medium", "large"))
    figure = plot_pr_curves(curves, iou=0.5)
    assert isinstance(figure, Figure) and len(figure.axes[0].lines) == 4
    assert figure.axes[0].get_legend().get_texts()[2].get_text() == f"medium: AP50 = {curves['medium'][2]:.3f}"
    image = torch.rand(3, 220, 220)
    errors = match_image(_prediction(), _target())
    errors_figure = plot_detection_errors(image, _target(), _prediction(), errors, category_names=["bg", "a", "b", "c"])
    assert isinstance(errors_figure, Figure)
    assert "small: 1 TP / 1 FP / 0 missed" in errors_figure.axes[0].get_title()
    history = [{"iteration": i + 1, "lr": 0.01, "loss": 2.0 / (i + 1), "loss_classifier": 1.0 / (i + 1)} for i in range(30)]
    assert isinstance(plot_loss_curves(history), Figure)
    with pytest.raises(ValueError, match="history is empty"):
        plot_loss_curves([])
