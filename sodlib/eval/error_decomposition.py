"""Where a detector's AP50 goes, per COCO size bin: a TIDE-style error decomposition (Bolya et al. 2020).

TIDE does not split by object size; here every size bin gets its own decomposition, so the errors counted in a
bin are exactly those COCOeval's AP50 for that bin counts.

**Matching** (COCOeval's, per bin, image and category, at ``t_f = foreground_iou``): only the top
``max_detections`` detections per image *and category* take part (COCOeval's ``maxDets``). Taken by decreasing
score, a detection takes the free ground truth (GT) of its class with the highest IoU ``>= t_f``, non-ignored GTs
first; a crowd region (overlap = intersection / detection area) can take any number of them. A GT is ignored in a
bin when it is a crowd region or its ``area`` field lies outside ``[lo, hi]`` (both edges inclusive); a detection
is ignored when it took an ignored GT, or took none and its box area ``w * h`` lies outside the bin. Every other
detection is a true positive (it took a GT) or a false positive.

**Error type of a false positive**, with ``IoU_same`` / ``IoU_other`` its highest IoU with a non-crowd GT of its
own / another class in the image, tested in TIDE's order (the first test that holds wins):

1. ``localisation``: ``t_b <= IoU_same < t_f`` (right class, box off);
2. ``classification``: ``IoU_other >= t_f`` (box right, class wrong);
3. ``duplicate``: ``IoU_same >= t_f`` (that GT was already taken by a higher-scored detection);
4. ``background``: ``max(IoU_same, IoU_other) < t_b``;
5. ``both``: anything else, i.e. ``t_b <= IoU_other < t_f`` and ``IoU_same < t_b``.

A **missed** GT is a non-ignored GT that no true positive took and that no localisation or classification error
of the bin points to (TIDE's rule: a *both* error names no GT, so it explains none).

**Fixes** (one type at a time, the rest left as they are): ``dAP[type] = AP50(fixed) - AP50``.

- classification: the detection takes the class of its GT; localisation: it takes the GT's box. Either becomes a
  true positive of that GT (ignored, if the GT is ignored in the bin) when the GT is still free; of several
  errors on one free GT only the highest-scored is repaired. Otherwise it would be a duplicate and is dropped.
- both, duplicate, background: the detection is dropped (a dropped detection is not replaced by the next one
  beyond ``max_detections``).
- missed: those GTs are removed from the ground truth. A category left without GT drops out of the mean, as
  COCOeval would score it; if no category is left, the fixed AP50 is 1 (nothing left to find).

**AP50** is COCOeval's: per category with GT in the bin, ``p_interp(r) = max_{r' >= r} p(r')`` sampled at
``r = 0, 0.01, ..., 1`` (0 past the highest recall), averaged; then the mean over those categories. A bin with no
GT has ``AP50 = -1`` and every ``dAP = -1``, as pycocotools reports an empty bin.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sodlib.data.sizes import SIZE_BINS
from sodlib.eval.coco_eval import _check_size_bins, check_result_ids

__all__ = ["ERROR_TYPES", "error_decomposition"]

logger = logging.getLogger(__name__)

ERROR_TYPES: tuple[str, ...] = ("classification", "localisation", "both", "duplicate", "background", "missed")
_CLS, _LOC, _BOTH, _DUP, _BKG = range(5)  # the false-positive types, indices into ERROR_TYPES
_TP, _FP, _IGNORED = 0, 1, 2
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
_RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


@dataclass
class _Data:
    """The detections COCOeval scores and the GTs of the evaluated images, flat; per image, index arrays."""

    det_result: np.ndarray    # int [N]: index into ``results``
    det_image: np.ndarray     # int [N]: rank of its image among the sorted image ids
    det_category: np.ndarray  # int [N]
    det_score: np.ndarray     # float [N]
    det_area: np.ndarray      # float [N]: box w * h (what loadRes stores as the area)
    det_kind: np.ndarray      # int [N]: error type if it is a false positive (the same in every bin)
    det_target: np.ndarray    # int [N]: GT a localisation / classification error points to, else -1
    gt_id: np.ndarray         # int [G]: annotation ids
    gt_category: np.ndarray   # int [G]
    gt_area: np.ndarray       # float [G]: the ``area`` field
    gt_crowd: np.ndarray      # bool [G]
    images: list[tuple[np.ndarray, ...]]  # per image: det indices by score, GT indices, candidates [d, g], IoU [d, g]
    categories: np.ndarray    # int [K]: every category id of the ground truth, sorted


@dataclass
class _BinOutcome:
    """One bin's matching, errors and repairs; :meth:`ap` scores it with any set of error types fixed."""

    data: _Data
    state: np.ndarray          # int [N]: _TP / _FP / _IGNORED
    repaired: np.ndarray       # bool [N]: a localisation / classification error its fix turns into a TP
    repair_ignored: np.ndarray  # bool [N]: ... into an ignored detection (its GT is ignored in the bin)
    objects: np.ndarray        # int [K]: non-ignored GTs per category
    missed: np.ndarray         # int [M]: GT indices of the missed objects

    def errors(self, kind: int) -> np.ndarray:
        return (self.state == _FP) & (self.data.det_kind == kind)

    def ap(self, fixed: Collection[str] = ()) -> float:
        """AP50 of the bin with the error types in ``fixed`` fixed (see the module docstring)."""
        data = self.data
        keep, true, category = self.state != _IGNORED, self.state == _TP, data.det_category.copy()
        objects = self.objects.copy()
        for name in fixed:
            if name == "missed":
                np.subtract.at(objects, np.searchsorted(data.categories, data.gt_category[self.missed]), 1)
                continue
            hit = self.errors(ERROR_TYPES.index(name))
            keep &= ~hit
            repaired = hit & self.repaired & ~self.repair_ignored
            keep |= repaired
            true |= repaired
            if name == "classification":
                category[repaired] = data.gt_category[data.det_target[repaired]]
        if self.objects.sum() > 0 and objects.sum() == 0:
            return 1.0
        return _average_precision(data, keep, true, category, objects)


def _average_precision(data: _Data, keep: np.ndarray, true: np.ndarray, category: np.ndarray,
                       objects: np.ndarray) -> float:
    """COCOeval's AP at one IoU threshold (``accumulate``), from TP / FP flags; ``-1`` if no category has GT."""
    curves = []
    for k, category_id in enumerate(data.categories):
        if objects[k] == 0:
            continue
        index = np.flatnonzero(keep & (category == category_id))
        # COCOeval's order: score descending; ties by image, then by the order of the results
        index = index[np.lexsort((data.det_result[index], data.det_image[index], -data.det_score[index]))]
        hits = true[index]
        tps, fps = np.cumsum(hits).astype(float), np.cumsum(~hits).astype(float)
        recall, precision = tps / objects[k], tps / (tps + fps + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        at = np.searchsorted(recall, _RECALL_POINTS, side="left")
        curve = np.zeros(len(_RECALL_POINTS))
        inside = at < len(hits)
        curve[inside] = precision[at[inside]]
        curves.append(curve)
    return float(np.mean(np.stack(curves, axis=1).ravel())) if curves else -1.0


def _check_inputs(coco_gt: COCO, results: Sequence[Mapping], image_ids: Sequence[int] | None, foreground_iou: float,
                  background_iou: float, max_detections: int) -> list[int]:
    if not 0 < background_iou < foreground_iou <= 1:
        raise ValueError(f"foreground_iou={foreground_iou}, background_iou={background_iou}: need "
                         "0 < background_iou < foreground_iou <= 1 (TIDE uses foreground_iou=0.5, background_iou=0.1)")
    if isinstance(max_detections, bool) or not isinstance(max_detections, (int, np.integer)) or max_detections < 1:
        raise ValueError(f"max_detections={max_detections!r} must be a positive int (COCOeval scores 100 per image)")
    for index, record in enumerate(results):
        missing = [key for key in _RESULT_KEYS if key not in record]
        if missing:
            raise ValueError(f"results[{index}] has no {missing[0]!r}; each record needs image_id, category_id, "
                             "bbox [x, y, w, h] and score (the COCO results format)")
        if len(record["bbox"]) != 4:
            raise ValueError(f"results[{index}]['bbox']={record['bbox']!r} must be [x, y, w, h] (4 numbers)")
    check_result_ids(coco_gt, results)
    if image_ids is None:
        return sorted(int(i) for i in coco_gt.getImgIds())
    unknown = sorted({int(i) for i in image_ids} - set(coco_gt.imgs))
    if unknown:
        raise ValueError(f"image_ids names images that are not in the ground truth: {unknown[:5]}; pass ids of coco_gt.imgs")
    return sorted({int(i) for i in image_ids})


def _prepare(coco_gt: COCO, results: Sequence[Mapping], images: list[int], foreground: float, background: float,
             max_detections: int) -> _Data:
    """Keep COCOeval's detections, compute the IoUs per image and the error type of every detection."""
    rank = {image_id: r for r, image_id in enumerate(images)}
    per_image: dict[int, list[int]] = {}
    for index, record in enumerate(results):
        if int(record["image_id"]) in rank:
            per_image.setdefault(int(record["image_id"]), []).append(index)
    annotations = [a for image_id in images for a in coco_gt.imgToAnns.get(image_id, [])]
    gt_category = np.array([int(a["category_id"]) for a in annotations], dtype=np.int64)
    gt_crowd = np.array([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool)
    gt_box = np.array([[float(v) for v in a["bbox"]] for a in annotations], dtype=np.float64).reshape(-1, 4)
    columns = {"result": [], "image": [], "category": [], "score": [], "area": [], "kind": [], "target": []}
    image_parts, first_gt, first_det = [], 0, 0
    for r, image_id in enumerate(images):
        gts = np.arange(first_gt, first_gt + len(coco_gt.imgToAnns.get(image_id, [])))
        first_gt += len(gts)
        indices = per_image.get(image_id, [])
        scores = np.array([float(results[i]["score"]) for i in indices], dtype=np.float64)
        order = [indices[j] for j in np.argsort(-scores, kind="mergesort")]
        seen: dict[int, int] = {}
        kept = []
        for i in order:  # COCOeval keeps the top max_detections per image and category
            category = int(results[i]["category_id"])
            seen[category] = seen.get(category, 0) + 1
            if seen[category] <= max_detections:
                kept.append(i)
        boxes = np.array([[float(v) for v in results[i]["bbox"]] for i in kept], dtype=np.float64).reshape(-1, 4)
        det_category = np.array([int(results[i]["category_id"]) for i in kept], dtype=np.int64)
        iou = np.zeros((len(kept), len(gts)))
        if len(kept) and len(gts):
            iou = np.asarray(mask_utils.iou(boxes, gt_box[gts], gt_crowd[gts].astype(np.uint8).tolist())).reshape(iou.shape)
        same = det_category[:, None] == gt_category[gts][None, :]
        solid = ~gt_crowd[gts][None, :]
        iou_same, iou_other = np.where(same & solid, iou, 0.0), np.where(~same & solid, iou, 0.0)
        best_same = iou_same.max(axis=1, initial=0.0)
        best_other = iou_other.max(axis=1, initial=0.0)
        kind = np.select([(best_same >= background) & (best_same < foreground), best_other >= foreground,
                          best_same >= foreground, np.maximum(best_same, best_other) < background],
                         [_LOC, _CLS, _DUP, _BKG], default=_BOTH)
        target = np.full(len(kept), -1, dtype=np.int64)
        if len(gts):
            target = np.where(kind == _LOC, gts[iou_same.argmax(axis=1)],
                              np.where(kind == _CLS, gts[iou_other.argmax(axis=1)], -1))
        image_parts.append((np.arange(first_det, first_det + len(kept)), gts, same & (iou >= foreground), iou))
        first_det += len(kept)
        for name, values in (("result", kept), ("image", [r] * len(kept)), ("category", det_category),
                             ("score", [float(results[i]["score"]) for i in kept]),
                             ("area", boxes[:, 2] * boxes[:, 3]), ("kind", kind), ("target", target)):
            columns[name].extend(np.asarray(values).tolist())
    as_array = lambda name, dtype: np.array(columns[name], dtype=dtype)  # noqa: E731
    return _Data(as_array("result", np.int64), as_array("image", np.int64), as_array("category", np.int64),
                 as_array("score", np.float64), as_array("area", np.float64), as_array("kind", np.int64),
                 as_array("target", np.int64), np.array([int(a["id"]) for a in annotations], dtype=np.int64), gt_category,
                 np.array([float(a["area"]) for a in annotations], dtype=np.float64), gt_crowd, image_parts,
                 np.array(sorted(int(c) for c in coco_gt.getCatIds()), dtype=np.int64))


def _evaluate_bin(data: _Data, lo: float, hi: float) -> _BinOutcome:
    """COCOeval's greedy matching in one area range, then the repairs of the localisation / classification errors."""
    gt_ignored = data.gt_crowd | (data.gt_area < lo) | (data.gt_area > hi)
    state = np.full(len(data.det_score), _FP, dtype=np.int64)
    taken = np.zeros(len(data.gt_id), dtype=bool)
    for dets, gts, candidates, iou in data.images:
        ignored, crowd = gt_ignored[gts], data.gt_crowd[gts]
        for row, d in enumerate(dets):
            free = candidates[row] & (~taken[gts] | crowd)
            matched = -1
            for group in (free & ~ignored, free & ignored):  # non-ignored GTs first, as COCOeval sorts them
                hits = np.flatnonzero(group)
                if hits.size:  # COCOeval keeps the last of equal best IoUs
                    values = iou[row, hits]
                    matched = gts[hits[hits.size - 1 - int(np.argmax(values[::-1]))]]
                    break
            if matched >= 0:
                taken[matched] = True
                state[d] = _IGNORED if gt_ignored[matched] else _TP
            elif not lo <= data.det_area[d] <= hi:
                state[d] = _IGNORED
    repaired = np.zeros(len(state), dtype=bool)
    claimed = taken.copy()
    pointing = np.flatnonzero((state == _FP) & np.isin(data.det_kind, (_LOC, _CLS)))
    for d in pointing:  # by image, then by decreasing score: the highest-scored error on a free GT is repaired
        if not claimed[data.det_target[d]]:
            claimed[data.det_target[d]] = repaired[d] = True
    covered = np.zeros(len(taken), dtype=bool)
    covered[data.det_target[pointing]] = True
    missed = np.flatnonzero(~gt_ignored & ~taken & ~covered)
    solid = np.flatnonzero(~gt_ignored)
    objects = np.bincount(np.searchsorted(data.categories, data.gt_category[solid]), minlength=len(data.categories))
    repair_ignored = np.zeros(len(state), dtype=bool)
    repair_ignored[repaired] = gt_ignored[data.det_target[repaired]]
    return _BinOutcome(data, state, repaired, repair_ignored, objects, missed)


def _decompose(coco_gt: COCO, results: Sequence[Mapping], *, size_bins: Mapping[str, tuple[float, float]] | None = None,
               image_ids: Sequence[int] | None = None, foreground_iou: float = 0.5, background_iou: float = 0.1,
               max_detections: int = 100) -> dict[str, _BinOutcome]:
    """:func:`error_decomposition` before summing up: ``{bin: _BinOutcome}``."""
    bins = {"all": (0.0, 1e10), **SIZE_BINS, **_check_size_bins(size_bins)}
    images = _check_inputs(coco_gt, results, image_ids, foreground_iou, background_iou, max_detections)
    data = _prepare(coco_gt, results, images, min(foreground_iou, 1 - 1e-10), background_iou, max_detections)
    return {name: _evaluate_bin(data, lo, hi) for name, (lo, hi) in bins.items()}


def error_decomposition(coco_gt: COCO, results: Sequence[Mapping], *, size_bins: Mapping[str, tuple[float, float]] | None = None,
                        image_ids: Sequence[int] | None = None, foreground_iou: float = 0.5, background_iou: float = 0.1,
                        max_detections: int = 100) -> dict[str, dict]:
    """Count the errors of COCO results per size bin and what fixing each type would add to AP50.

    Args:
        coco_gt: the ground truth.
        results: COCO results records ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``; may be empty.
        size_bins: extra area bins ``{name: (lo, hi)}`` after COCO's ``all, small, medium, large``.
        image_ids: evaluate these images only (default: every ground-truth image).
        foreground_iou: ``t_f``, the IoU of a match (AP50: 0.5).
        background_iou: ``t_b``, below which a detection lies on background.
        max_detections: detections scored per image and category (COCOeval's 100).

    Returns:
        ``{bin: {"objects", "detections", "true_positives", "counts": {type: int}, "dAP": {type: float},
        "AP50": float}}``, types in the order of :data:`ERROR_TYPES`. ``objects`` counts the non-ignored GTs,
        ``detections`` the non-ignored detections (true positives + the five false-positive types). Rules,
        precedence and fixes: see the module docstring.
    """
    outcomes = _decompose(coco_gt, results, size_bins=size_bins, image_ids=image_ids, foreground_iou=foreground_iou,
                          background_iou=background_iou, max_detections=max_detections)
    decomposition = {}
    for name, outcome in outcomes.items():
        base = outcome.ap()
        counts = {kind: int(outcome.errors(k).sum()) for k, kind in enumerate(ERROR_TYPES[:5])}
        counts["missed"] = int(len(outcome.missed))
        gains = {kind: (outcome.ap((kind,)) - base if base > -1 else -1.0) for kind in ERROR_TYPES}
        decomposition[name] = {"objects": int(outcome.objects.sum()), "detections": int((outcome.state != _IGNORED).sum()),
                               "true_positives": int((outcome.state == _TP).sum()), "counts": counts, "dAP": gains,
                               "AP50": base}
        logger.debug("error decomposition, bin %s: AP50 %.4f, counts %s", name, base, counts)
    return decomposition
