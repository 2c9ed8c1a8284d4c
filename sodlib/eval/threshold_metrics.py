"""Precision, recall and F1 per size bin of the detections above one score threshold, at one IoU threshold.

The traffic-sign protocol (Tsinghua-Tencent 100K, as the EFPN paper reports it: Deng et al. 2021, §IV-A,
eq. 9) keeps the detections whose score is at least a threshold and counts, per size bin::

    P  = TP / (TP + FP)          R = TP / N          F1 = 2 P R / (P + R)

with ``N`` the bin's non-crowd ground-truth objects. The matching is :func:`sodlib.eval.error_analysis.match_image`
(COCOeval's rule at one IoU threshold), over the whole image, per category: detections in decreasing score
each take the unmatched non-crowd object of their class with the highest IoU if it is at least
``iou_threshold``; a detection that finds none but covers a crowd region of its class (intersection over the
*detection's* area at least the threshold, as COCO computes IoU against crowds) is ignored, neither TP nor FP;
the rest are false positives. Crowd regions are never missed objects.

Per bin (the ground truth's ``area`` field for objects, the box's ``w * h`` for detections; both edges
inclusive, as :mod:`sodlib.eval.coco_eval`, so an object of area exactly 32^2 counts as small *and* medium):

- TP: detections matched to an object of the bin (a true positive belongs to its object's bin, whatever the
  size of its own box);
- FP: unmatched, not ignored detections whose own box area lies in the bin;
- N - TP: the bin's objects left unmatched (misses).

``P``, ``R``, ``F1`` without a suffix count every object and detection, whatever its size. Undefined figures
are ``-1``, as pycocotools reports a bin without objects: ``P = -1`` when no detection counts in the bin
(TP + FP = 0); ``R = F1 = -1`` when the bin holds no object (N = 0, even if false positives fall in it). A bin
with objects but no detection has ``R = 0`` and ``F1 = 0`` (the limit of the harmonic mean as R -> 0), and
``F1 = 0`` whenever ``P + R = 0``.

Unlike COCOeval there is no cap of 100 detections per image (the threshold does that job), and the matching is
done once per image, not again per area range (COCOeval's AP_s re-matches with the other bins' objects
ignored); a detection between bins therefore counts exactly once per bin its object or box lies in.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO

from sodlib.data.sizes import SIZE_BINS, in_size_bin
from sodlib.eval.coco_eval import _check_size_bins, check_result_ids
from sodlib.eval.error_analysis import match_image

__all__ = ["f1_by_size", "check_score_threshold"]


def check_score_threshold(value: float, name: str = "score_threshold") -> float:
    """``value`` as a float if it is a score threshold in ``[0, 1]``, else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= float(value) <= 1:
        raise ValueError(f"{name}={value!r} must be a detection score in [0, 1], e.g. 0.5 (detections scoring at "
                         "least this are counted)")
    return float(value)


def _check_results(coco_gt: COCO, results: Sequence[Mapping]) -> None:
    for index, record in enumerate(results):
        missing = [key for key in ("image_id", "category_id", "bbox", "score") if key not in record]
        if missing:
            raise ValueError(f"results[{index}] has no {', '.join(map(repr, missing))}; each record needs image_id, "
                             "category_id, bbox [x, y, w, h] and score (sodlib.eval.coco_results gives them)")
    check_result_ids(coco_gt, results)


def _xyxy(xywh: list[list[float]]) -> torch.Tensor:
    boxes = torch.tensor(xywh, dtype=torch.float64).reshape(-1, 4)
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def _rates(tp: int, fp: int, objects: int) -> tuple[float, float, float]:
    """``(P, R, F1)`` of one bin, ``-1`` where undefined (see the module docstring)."""
    precision = tp / (tp + fp) if tp + fp else -1.0
    if objects == 0:
        return precision, -1.0, -1.0
    recall = tp / objects
    f1 = 2 * precision * recall / (precision + recall) if precision > 0 and recall > 0 else 0.0
    return precision, recall, f1


def f1_by_size(coco_gt: COCO, results: Sequence[Mapping], *, score_threshold: float = 0.5, iou_threshold: float = 0.5,
               size_bins: Mapping[str, tuple[float, float]] | None = None,
               image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """Precision / recall / F1 of the detections scoring at least ``score_threshold``, overall and per size bin.

    Args:
        coco_gt: the ground truth.
        results: COCO results records ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``
            (:func:`sodlib.eval.coco_results`); may be empty.
        score_threshold: detections with ``score >= score_threshold`` are counted, the others left out.
        iou_threshold: the IoU a detection needs with an object to find it, in ``(0, 1]``.
        size_bins: extra area bins ``{name: (lo, hi)}`` in pixels^2, after ``small``, ``medium``, ``large``.
        image_ids: count these images only (default: every ground-truth image); results on other images are
            left out, as COCOeval does with ``params.imgIds``.

    Returns:
        ``{"P", "R", "F1", "P_small", "R_small", "F1_small", "P_medium", ..., "F1_large"}`` plus
        ``P_<bin>``, ``R_<bin>``, ``F1_<bin>`` for every extra bin; ``-1`` where undefined (module docstring).
    """
    score_threshold = check_score_threshold(score_threshold)
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)) or not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold={iou_threshold!r} must be in (0, 1], e.g. 0.5 (the protocol's IoU)")
    bins = {**SIZE_BINS, **_check_size_bins(size_bins)}
    _check_results(coco_gt, results)
    images = sorted(coco_gt.getImgIds() if image_ids is None else {int(i) for i in image_ids})
    kept: dict[int, list[Mapping]] = defaultdict(list)
    for record in results:
        if float(record["score"]) >= score_threshold:
            kept[int(record["image_id"])].append(record)
    counts = {name: {"tp": 0, "fp": 0, "objects": 0} for name in ("all", *bins)}
    for image_id in images:
        annotations, detections = coco_gt.imgToAnns.get(image_id, []), kept.get(image_id, [])
        if not annotations and not detections:
            continue
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool)
        object_areas = np.array([float(a["area"]) for a in annotations], dtype=np.float64)
        target = {"boxes": _xyxy([a["bbox"] for a in annotations]),
                  "labels": torch.tensor([int(a["category_id"]) for a in annotations], dtype=torch.int64),
                  "area": torch.from_numpy(object_areas), "iscrowd": torch.from_numpy(crowd.astype(np.int64))}
        prediction = {"boxes": _xyxy([r["bbox"] for r in detections]),
                      "labels": torch.tensor([int(r["category_id"]) for r in detections], dtype=torch.int64),
                      "scores": torch.tensor([float(r["score"]) for r in detections], dtype=torch.float64)}
        errors = match_image(prediction, target, iou_threshold=iou_threshold, score_threshold=score_threshold)
        found = errors.matched_objects.numpy()
        false = errors.false_positives.numpy()
        detection_areas = np.array([float(r["bbox"][2]) * float(r["bbox"][3]) for r in detections], dtype=np.float64)
        counts["all"]["tp"] += len(found)
        counts["all"]["fp"] += len(false)
        counts["all"]["objects"] += int((~crowd).sum())
        for name in bins:
            object_in_bin = in_size_bin(object_areas, name, bins) & ~crowd
            counts[name]["tp"] += int(object_in_bin[found].sum())
            counts[name]["fp"] += int(in_size_bin(detection_areas[false], name, bins).sum())
            counts[name]["objects"] += int(object_in_bin.sum())
    figures: dict[str, float] = {}
    for name, count in counts.items():
        suffix = "" if name == "all" else f"_{name}"
        precision, recall, f1 = _rates(count["tp"], count["fp"], count["objects"])
        figures.update({f"P{suffix}": precision, f"R{suffix}": recall, f"F1{suffix}": f1})
    return figures
