"""Per-image error analysis: which detections are true positives, which are false positives, which objects
are missed, with the size bin of each, by the same matching rule as COCOeval at one IoU threshold.

Matching (COCOeval's, per category): detections above ``score_threshold`` are taken in decreasing score; each
is matched to the not-yet-matched non-crowd object of its class with the highest IoU if that IoU is at least
``iou_threshold``; otherwise to a crowd region of its class whose intersection over the *detection's* area is
at least the threshold (then it is ignored: neither TP nor FP); otherwise it is a false positive. Objects left
unmatched (non-crowd) are misses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor
from torchvision.ops import box_iou

from sodlib.data.sizes import SIZE_BINS, size_bin_label

__all__ = ["ImageErrors", "match_image"]


@dataclass
class ImageErrors:
    """Outcome of one image's detections (indices into the prediction and the target)."""

    true_positives: Tensor   # int64 [P]: detection indices
    matched_objects: Tensor  # int64 [P]: the object each true positive found
    false_positives: Tensor  # int64 [F]: detection indices
    ignored: Tensor          # int64 [I]: detections on crowd regions
    missed: Tensor           # int64 [M]: object indices
    object_bins: list[str]   # size bin of every object, by its area
    detection_bins: list[str]  # size bin of every detection, by its box area

    def counts_by_bin(self) -> dict[str, dict[str, int]]:
        """``{bin: {"tp", "fp", "missed"}}`` (true positives counted in the bin of the object they found)."""
        counts = {name: {"tp": 0, "fp": 0, "missed": 0} for name in SIZE_BINS}
        for index in self.matched_objects.tolist():
            counts[self.object_bins[index]]["tp"] += 1
        for index in self.false_positives.tolist():
            counts[self.detection_bins[index]]["fp"] += 1
        for index in self.missed.tolist():
            counts[self.object_bins[index]]["missed"] += 1
        return counts


def _intersection_over_detection(detections: Tensor, regions: Tensor) -> Tensor:
    lt = torch.max(detections[:, None, :2], regions[None, :, :2])
    rb = torch.min(detections[:, None, 2:], regions[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area = (detections[:, 2:] - detections[:, :2]).clamp(min=0).prod(dim=1)
    return inter / area.clamp(min=1e-9)[:, None]


def match_image(prediction: Mapping[str, Tensor], target: Mapping[str, Tensor], *, iou_threshold: float = 0.5,
                score_threshold: float = 0.5) -> ImageErrors:
    """Match one image's detections (``boxes Tensor[D, 4]``, ``labels``, ``scores``) to its target
    (``boxes Tensor[N, 4]``, ``labels``, ``area``, optional ``iscrowd``); see the module docstring."""
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold={iou_threshold} must be in (0, 1]")
    boxes = prediction["boxes"].detach().float().cpu().reshape(-1, 4)
    labels = prediction["labels"].detach().cpu().reshape(-1)
    scores = prediction["scores"].detach().float().cpu().reshape(-1)
    gt_boxes = target["boxes"].float().cpu().reshape(-1, 4)
    gt_labels = target["labels"].cpu().reshape(-1)
    crowd = target.get("iscrowd", torch.zeros(len(gt_boxes), dtype=torch.int64)).cpu().reshape(-1).bool()
    object_bins = [size_bin_label(float(a)) for a in target["area"].reshape(-1).tolist()]
    detection_areas = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1)
    detection_bins = [size_bin_label(float(a)) for a in detection_areas.tolist()]
    order = [int(i) for i in torch.argsort(scores, descending=True, stable=True) if scores[i] >= score_threshold]
    iou = box_iou(boxes, gt_boxes) if len(boxes) and len(gt_boxes) else torch.zeros(len(boxes), len(gt_boxes))
    iod = _intersection_over_detection(boxes, gt_boxes) if len(boxes) and len(gt_boxes) else iou
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    tps, matched, fps, ignored = [], [], [], []
    for d in order:
        candidates = (gt_labels == labels[d]) & ~crowd & ~taken
        overlaps = torch.where(candidates, iou[d], torch.full_like(iou[d], -1.0))
        if len(overlaps) and overlaps.max() >= iou_threshold:
            g = int(overlaps.argmax())
            taken[g] = True
            tps.append(d), matched.append(g)
        elif bool(((gt_labels == labels[d]) & crowd & (iod[d] >= iou_threshold)).any()) if len(gt_boxes) else False:
            ignored.append(d)
        else:
            fps.append(d)
    missed = [g for g in range(len(gt_boxes)) if not taken[g] and not crowd[g]]
    as_tensor = lambda values: torch.tensor(values, dtype=torch.int64)  # noqa: E731
    return ImageErrors(as_tensor(tps), as_tensor(matched), as_tensor(fps), as_tensor(ignored), as_tensor(missed),
                       object_bins, detection_bins)
