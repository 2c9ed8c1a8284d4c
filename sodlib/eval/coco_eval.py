"""COCO box evaluation with pycocotools' ``COCOeval``, silently, with extra size bins.

The twelve summary figures are COCOeval's own ``stats``, under names:

=====  ===========================================  =====  ==========================================
AP     AP at IoU .50:.05:.95, all areas, 100 dets    AR1    AR at IoU .50:.95, 1 det per image
AP50   AP at IoU .50                                 AR10   AR, 10 dets
AP75   AP at IoU .75                                 AR100  AR, 100 dets
APs    AP, small (area <= 32^2)                      ARs    AR, small, 100 dets
APm    AP, medium (32^2 <= area <= 96^2)             ARm    AR, medium
APl    AP, large (area >= 96^2)                      ARl    AR, large
=====  ===========================================  =====  ==========================================

AP is the mean over categories (and IoU thresholds) of the 101-point interpolated precision
``p_interp(r) = max_{r' >= r} p(r')`` sampled at ``r = 0, 0.01, ..., 1``; AR is the mean over categories and
IoU thresholds of the largest recall reached. Areas are the ground truth's ``area`` field (COCO's mask area),
both edges of a bin inclusive. A figure whose bin holds no ground truth at all is ``-1``, as pycocotools
reports it (no objects to find, so no precision to average).

Extra bins (``size_bins={"tiny": (0, 16**2)}``) are added to COCOeval's own area ranges and computed in the
same accumulation, giving ``AP_tiny`` (IoU .50:.95, 100 dets) and ``AR_tiny``.

No detections at all: pycocotools' ``loadRes`` cannot read an empty list, so the results are then an empty
COCO object; every figure whose bin holds ground truth is 0.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
from typing import Mapping, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sodlib.data.sizes import SIZE_BINS

__all__ = ["METRIC_NAMES", "coco_results", "read_results", "run_cocoeval", "summarize", "evaluate_results", "precision_recall_by_bin",
           "per_category_ap"]

METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_COCO_AREA_LABELS = {"all": "all", "small": "s", "medium": "m", "large": "l"}


def coco_results(predictions: Sequence[Mapping], label_to_category_id: Mapping[int, int]) -> list[dict]:
    """COCO results records from torchvision detections.

    Args:
        predictions: one dict per image with ``image_id`` (int), ``boxes`` (``Tensor[D, 4]`` xyxy pixels),
            ``labels`` (``Tensor[D]``, contiguous 1..C) and ``scores`` (``Tensor[D]``).
        label_to_category_id: contiguous label -> COCO category id (``CocoDetection.label_to_category_id``).

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`` with ``w = x2 - x1``, ``h = y2 - y1``.
    """
    records = []
    for index, prediction in enumerate(predictions):
        for key in ("image_id", "boxes", "labels", "scores"):
            if key not in prediction:
                raise ValueError(f"predictions[{index}] has no {key!r}; each needs image_id, boxes, labels and scores")
        boxes = torch.as_tensor(prediction["boxes"], dtype=torch.float64).reshape(-1, 4)
        labels = torch.as_tensor(prediction["labels"]).reshape(-1).tolist()
        scores = torch.as_tensor(prediction["scores"], dtype=torch.float64).reshape(-1).tolist()
        if not len(boxes) == len(labels) == len(scores):
            raise ValueError(f"predictions[{index}]: {len(boxes)} boxes, {len(labels)} labels, {len(scores)} scores; they must match")
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        image_id = int(prediction["image_id"])
        for box, label, score in zip(xywh, labels, scores):
            if int(label) not in label_to_category_id:
                raise ValueError(f"predictions[{index}] has label {label}, which label_to_category_id does not map; "
                                 "fix: build the model with num_classes = dataset.num_classes")
            records.append({"image_id": image_id, "category_id": int(label_to_category_id[int(label)]),
                            "bbox": [round(v, 3) for v in box], "score": round(float(score), 5)})
    return records


def _check_size_bins(size_bins: Mapping[str, tuple[float, float]] | None) -> dict[str, tuple[float, float]]:
    size_bins = dict(size_bins or {})
    for name, bounds in size_bins.items():
        if name in ("all", *SIZE_BINS):
            raise ValueError(f"size_bins[{name!r}]: {name!r} is one of COCOeval's own bins; give your bin another name")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"size_bins key {name!r} must be a short identifier such as 'tiny' (it names AP_{name})")
        try:
            lo, hi = (float(v) for v in bounds)
        except (TypeError, ValueError):
            raise ValueError(f"size_bins[{name!r}]={bounds!r} must be (lo, hi) areas in pixels^2, e.g. (0, 16**2)") from None
        if not (0 <= lo < hi):
            raise ValueError(f"size_bins[{name!r}]=({lo}, {hi}) needs 0 <= lo < hi (areas in pixels^2)")
        size_bins[name] = (lo, hi)
    return size_bins


def _results_coco(coco_gt: COCO, results: Sequence[Mapping]) -> COCO:
    if len(results) == 0:
        empty = COCO()
        empty.dataset = {"images": list(coco_gt.dataset["images"]), "categories": copy.deepcopy(coco_gt.dataset["categories"]),
                         "annotations": []}
        with contextlib.redirect_stdout(io.StringIO()):
            empty.createIndex()
        return empty
    check_result_ids(coco_gt, results)
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_gt.loadRes(copy.deepcopy(list(results)))


def read_results(path: str | os.PathLike) -> list[dict]:
    """A COCO results json (``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``, what
    ``python -m sodlib predict`` and SAHI write), every record checked; a malformed one is named with the fix."""
    from sodlib.data.coco import read_json

    records = read_json(path)
    if not isinstance(records, list):
        raise ValueError(f"{path}: a results json is a list of detections, not a {type(records).__name__}; fix: pass "
                         "the file `python -m sodlib predict` wrote (an instances json is the --annotations)")
    for index, record in enumerate(records):
        missing = [key for key in ("image_id", "category_id", "bbox", "score")
                   if not isinstance(record, dict) or key not in record]
        if missing:
            raise ValueError(f"{path}: detection {index} lacks {', '.join(missing)}; fix: every record needs "
                             "image_id, category_id, bbox [x, y, w, h] and score")
        bbox = record["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
                and bbox[2] >= 0 and bbox[3] >= 0):
            raise ValueError(f"{path}: detection {index} has bbox={bbox!r}; fix: [x, y, width, height] in pixels, "
                             "width and height >= 0")
        if not isinstance(record["score"], (int, float)) or isinstance(record["score"], bool):
            raise ValueError(f"{path}: detection {index} has score={record['score']!r}; fix: a number")
    return records


def check_result_ids(coco_gt: COCO, results: Sequence[Mapping]) -> None:
    """Refuse results whose image or category ids the ground truth does not have."""
    unknown_images = {int(r["image_id"]) for r in results} - set(coco_gt.imgs)
    if unknown_images:
        raise ValueError(f"results name image ids that are not in the ground truth: {sorted(unknown_images)[:5]}")
    unknown_categories = {int(r["category_id"]) for r in results} - set(coco_gt.cats)
    if unknown_categories:
        raise ValueError(f"results name category ids that are not in the ground truth: {sorted(unknown_categories)[:5]}")


def run_cocoeval(coco_gt: COCO, results: Sequence[Mapping], *, size_bins: Mapping[str, tuple[float, float]] | None = None,
                 image_ids: Sequence[int] | None = None) -> COCOeval:
    """``COCOeval`` (box IoU) evaluated and accumulated, without printing.

    Args:
        coco_gt: the ground truth.
        results: COCO results records (:func:`coco_results`); may be empty.
        size_bins: extra area bins ``{name: (lo, hi)}`` appended to COCOeval's ``all, small, medium, large``.
        image_ids: evaluate these images only (default: every ground-truth image).

    ``cocoeval.eval["precision"]`` is ``[T, R, K, A, M]`` (IoU thresholds, 101 recall points, categories, area
    ranges in the order of ``cocoeval.params.areaRngLbl``, max detections 1/10/100).
    """
    size_bins = _check_size_bins(size_bins)
    cocoeval = COCOeval(coco_gt, _results_coco(coco_gt, results), iouType="bbox")
    if image_ids is not None:
        cocoeval.params.imgIds = sorted(int(i) for i in image_ids)
    for name, (lo, hi) in size_bins.items():
        cocoeval.params.areaRng.append([lo, hi])
        cocoeval.params.areaRngLbl.append(name)
    with contextlib.redirect_stdout(io.StringIO()):
        cocoeval.evaluate()
        cocoeval.accumulate()
    return cocoeval


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _figure(cocoeval: COCOeval, kind: str, area: str = "all", iou: float | None = None, max_dets: int = 100) -> float:
    params = cocoeval.params
    area_index = params.areaRngLbl.index(area)
    det_index = list(params.maxDets).index(max_dets)
    values = cocoeval.eval["precision" if kind == "AP" else "recall"]
    if iou is not None:
        values = values[np.where(np.isclose(params.iouThrs, iou))[0]]
    values = values[:, :, :, area_index, det_index] if kind == "AP" else values[:, :, area_index, det_index]
    return _mean_valid(values)


def summarize(cocoeval: COCOeval) -> dict[str, float]:
    """The twelve figures of :data:`METRIC_NAMES` plus ``AP_<bin>`` / ``AR_<bin>`` for every extra bin,
    computed from an accumulated ``COCOeval`` exactly as ``COCOeval.summarize`` computes its ``stats``."""
    top = cocoeval.params.maxDets[-1]
    figures = {"AP": _figure(cocoeval, "AP", max_dets=top), "AP50": _figure(cocoeval, "AP", iou=0.5, max_dets=top),
               "AP75": _figure(cocoeval, "AP", iou=0.75, max_dets=top)}
    for area, suffix in (("small", "s"), ("medium", "m"), ("large", "l")):
        figures[f"AP{suffix}"] = _figure(cocoeval, "AP", area, max_dets=top)
    for max_dets in cocoeval.params.maxDets:
        figures[f"AR{max_dets}"] = _figure(cocoeval, "AR", max_dets=max_dets)
    for area, suffix in (("small", "s"), ("medium", "m"), ("large", "l")):
        figures[f"AR{suffix}"] = _figure(cocoeval, "AR", area, max_dets=top)
    for label in cocoeval.params.areaRngLbl:
        if label not in _COCO_AREA_LABELS:
            figures[f"AP_{label}"] = _figure(cocoeval, "AP", label, max_dets=top)
            figures[f"AR_{label}"] = _figure(cocoeval, "AR", label, max_dets=top)
    return figures


def evaluate_results(coco_gt: COCO, results: Sequence[Mapping], *, size_bins: Mapping[str, tuple[float, float]] | None = None,
                     image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """:func:`summarize` of :func:`run_cocoeval`: the figures of COCO results against a ground truth."""
    return summarize(run_cocoeval(coco_gt, results, size_bins=size_bins, image_ids=image_ids))


def precision_recall_by_bin(cocoeval: COCOeval, *, iou: float = 0.5, bins: Sequence[str] = ("small", "medium", "large")) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """``{bin: (recall [101], precision [101], AP)}`` from an accumulated ``COCOeval``
    (:func:`run_cocoeval`) at one IoU threshold and 100 detections per image.

    ``precision[j]`` is COCOeval's interpolated precision at recall ``j / 100``, averaged over the categories
    that have objects in the bin (``-1`` entries left out); past the highest recall reached it is 0. AP is the
    mean of the 101 values, as COCOeval computes ``AP50`` / ``APs`` (there per IoU threshold).
    """
    params = cocoeval.params
    iou_index = np.where(np.isclose(params.iouThrs, iou))[0]
    if len(iou_index) != 1:
        raise ValueError(f"iou={iou} is not one of COCOeval's thresholds {list(np.round(params.iouThrs, 2))}")
    curves = {}
    for name in bins:
        if name not in params.areaRngLbl:
            raise ValueError(f"size bin {name!r} was not evaluated; known: {', '.join(params.areaRngLbl)}")
        values = cocoeval.eval["precision"][iou_index[0], :, :, params.areaRngLbl.index(name), -1]  # [R, K]
        valid = (values > -1).all(axis=0)
        precision = values[:, valid].mean(axis=1) if valid.any() else np.full(len(params.recThrs), np.nan)
        curves[name] = (np.asarray(params.recThrs), precision, float(np.mean(precision)) if valid.any() else -1.0)
    return curves


def per_category_ap(cocoeval: COCOeval) -> list[dict[str, object]]:
    """Per category of an accumulated ``COCOeval``: ``{"id", "name", "objects", "AP", "AP50", "APs"}``, sorted by
    name.

    Each figure is the :func:`summarize` figure restricted to one category: the mean of its 101-point interpolated
    precision over the IoU thresholds (``AP``), at IoU 0.5 (``AP50``), over the small bin (``APs``), at 100
    detections per image; ``-1`` where the category has no object in that bin (as COCOeval reports it).
    ``objects`` counts its non-crowd ground-truth objects in the evaluated images.
    """
    params = cocoeval.params
    top = list(params.maxDets).index(params.maxDets[-1])
    precision = cocoeval.eval["precision"]  # [T, R, K, A, M]
    area = {label: params.areaRngLbl.index(label) for label in ("all", "small")}
    at_50 = np.where(np.isclose(params.iouThrs, 0.5))[0]
    images = set(params.imgIds)
    rows = []
    for k, category_id in enumerate(params.catIds):
        objects = sum(1 for a in cocoeval.cocoGt.loadAnns(cocoeval.cocoGt.getAnnIds(catIds=[category_id]))
                      if not a.get("iscrowd", 0) and a["image_id"] in images)
        rows.append({"id": int(category_id), "name": cocoeval.cocoGt.cats[category_id]["name"], "objects": objects,
                     "AP": _mean_valid(precision[:, :, k, area["all"], top]),
                     "AP50": _mean_valid(precision[at_50, :, k, area["all"], top]),
                     "APs": _mean_valid(precision[:, :, k, area["small"], top])})
    return sorted(rows, key=lambda row: str(row["name"]))
