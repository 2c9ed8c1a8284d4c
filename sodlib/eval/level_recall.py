"""Recall per object size, with the pyramid level each size is pooled from in FPN and in EFPN: the numbers behind
Deng et al. (2021), Fig. 1, where every RoI under 112 px shares FPN's ``P2`` and small objects lose out to medium.

An object's size is its RoI side in the detector's resized image, ``side = sqrt(w h) * scale`` with
``scale = min(min_size / short side, max_size / long side)`` (:func:`sodlib.stats.pyramid_levels.resize_scale`);
bins are ``lo <= side < hi``. An object counts as detected when :func:`sodlib.eval.error_analysis.match_image`
(COCOeval's greedy rule at one IoU threshold, per class, detections scoring at least ``score_threshold``) matches a
detection to it; crowd regions are neither objects nor misses. The levels are
:func:`sodlib.stats.pyramid_levels.levels_by_side`: share of each bin's objects per level, FPN's and EFPN's.

:func:`recall_by_size` runs a model once; :func:`recall_by_size_from_predictions` starts from
:func:`sodlib.eval.evaluate.predict`'s output, so two models' rows can be compared without running either again.
"""
from __future__ import annotations

from collections.abc import Sequence as SequenceABC
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from sodlib.eval.error_analysis import match_image
from sodlib.eval.evaluate import bare_model, predict
from sodlib.eval.threshold_metrics import check_score_threshold
from sodlib.stats.pyramid_levels import (DEFAULT_SIDE_EDGES, check_side_edges, levels_by_side, resize_scale,
                                         resolve_threshold)

__all__ = ["recall_by_size", "recall_by_size_from_predictions"]


def _check_iou_threshold(iou_threshold: Any) -> float:
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)) or not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold={iou_threshold!r} must be in (0, 1], e.g. 0.5 (a detection finds an object when "
                         "their IoU is at least this)")
    return float(iou_threshold)


def _check_options(min_size, max_size, side_edges, score_threshold, iou_threshold, threshold):
    """``(edges, score_threshold, iou_threshold, threshold)`` checked (ValueErrors name the argument)."""
    resize_scale(1, 1, min_size, max_size)  # checks min_size and max_size
    return (check_side_edges(side_edges), check_score_threshold(score_threshold), _check_iou_threshold(iou_threshold),
            resolve_threshold(threshold, min_size))


def _check_dataset(dataset) -> None:
    for attribute in ("coco", "image_ids"):
        if not hasattr(dataset, attribute):
            raise ValueError(f"dataset has no {attribute!r}; recall by size needs a sodlib.data.CocoDetection (the image "
                             "sizes come from its coco images)")


def _target_of(dataset, index: int) -> Mapping[str, torch.Tensor]:
    """The target of item ``index``, without reading the image when the dataset can."""
    target_of = getattr(dataset, "target_of", None)
    return target_of(index) if callable(target_of) else dataset[index][1]


def recall_by_size_from_predictions(predictions: Sequence[Mapping[str, Any]], dataset, *, min_size: float,
                                    max_size: float, side_edges: Sequence[float] = DEFAULT_SIDE_EDGES,
                                    score_threshold: float = 0.05, iou_threshold: float = 0.5,
                                    threshold: float | None = None) -> list[dict[str, Any]]:
    """Recall per bin of the resized RoI side, from precomputed detections (see the module docstring).

    Args:
        predictions: one dict per image, ``image_id``, ``boxes`` (``Tensor[D, 4]`` xyxy in the original image's
            pixels), ``labels``, ``scores``: :func:`sodlib.eval.evaluate.predict`'s output. Every image of
            ``dataset`` needs one (an image without detections has empty tensors); others are ignored.
        dataset: a :class:`sodlib.data.CocoDetection` (without transforms that move the boxes); its labels are
            compared with the predictions' as they are.
        min_size, max_size: the detector's resize (``GeneralizedRCNNTransform``'s, at test time).
        side_edges: bins ``[lo, hi)`` of the resized side, strictly increasing.
        score_threshold: only detections scoring at least this can find an object.
        iou_threshold: the IoU a detection needs with an object of its class.
        threshold: EFPN's ``P'2`` threshold on the resized side (default ``56 * min_size / 1400``).

    Returns:
        One dict per bin: ``bin``, ``lo``, ``hi``, ``objects``, ``detected``, ``recall = detected / objects``
        (None for an empty bin), ``fpn`` and ``efpn`` (share of the bin's objects per level, e.g.
        ``{"P'2": 0.4, "P2": 0.6}``), ``fpn_median_cells`` and ``efpn_median_cells`` (median feature cells the RoI
        covers on that level).
    """
    edges, score_threshold, iou_threshold, threshold = _check_options(min_size, max_size, side_edges, score_threshold,
                                                                      iou_threshold, threshold)
    _check_dataset(dataset)
    by_id: dict[int, Mapping[str, Any]] = {}
    for index, prediction in enumerate(predictions):
        if "image_id" not in prediction:
            raise ValueError(f"predictions[{index}] has no 'image_id'; fix: pass sodlib.eval.predict(model, dataset)")
        image_id = int(prediction["image_id"])
        if image_id in by_id:
            raise ValueError(f"predictions hold image_id {image_id} twice; fix: one prediction per image, as predict gives")
        by_id[image_id] = prediction
    missing = [int(i) for i in dataset.image_ids if int(i) not in by_id]
    if missing:
        raise ValueError(f"predictions have no entry for {len(missing)} image(s) of the dataset (ids {missing[:5]}); fix: "
                         "predict over the same dataset (an image without detections still needs an entry)")
    sides, detected = [], []
    for index in range(len(dataset)):
        target = _target_of(dataset, index)
        image_id = int(target["image_id"])
        info = dataset.coco.imgs[image_id]
        errors = match_image(by_id[image_id], target, iou_threshold=iou_threshold, score_threshold=score_threshold)
        boxes = target["boxes"].detach().cpu().double().reshape(-1, 4).numpy()
        wh = np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None)
        side = np.sqrt(wh[:, 0] * wh[:, 1]) * resize_scale(info["width"], info["height"], min_size, max_size)
        crowd = target.get("iscrowd", torch.zeros(len(boxes), dtype=torch.int64)).detach().cpu().reshape(-1).numpy().astype(bool)
        found = np.zeros(len(boxes), dtype=bool)
        found[errors.matched_objects.numpy()] = True
        keep = ~crowd & (side > 0)
        sides.append(side[keep])
        detected.append(found[keep])
    sides = np.concatenate(sides) if sides else np.zeros(0)
    detected = np.concatenate(detected) if detected else np.zeros(0, dtype=bool)
    index = np.searchsorted(edges, sides, side="right") - 1
    rows = []
    for b, levels in enumerate(levels_by_side(sides, threshold=threshold, side_edges=edges)):
        hits = int(np.count_nonzero(detected[index == b]))
        objects = levels["objects"]
        rows.append({"bin": levels["bin"], "lo": levels["lo"], "hi": levels["hi"], "objects": objects, "detected": hits,
                     "recall": hits / objects if objects else None,
                     **{key: value for key, value in levels.items() if key not in ("bin", "lo", "hi", "objects")}})
    return rows


def _model_resize(model: nn.Module, min_size: float | None, max_size: float | None) -> tuple[float, float]:
    """``(min_size, max_size)``: the ones given, else the test-time resize of ``model.transform`` (torchvision's
    ``GeneralizedRCNNTransform`` resizes to ``min_size[-1]`` in eval mode)."""
    transform = getattr(bare_model(model), "transform", None)
    resolved = []
    for name, value in (("min_size", min_size), ("max_size", max_size)):
        if value is None:
            value = getattr(transform, name, None)
            if isinstance(value, SequenceABC) and not isinstance(value, str):
                value = value[-1] if len(value) else None
            if value is None:
                raise ValueError(f"{name}=None and the model has no transform.{name}; fix: pass {name}= (the detector's "
                                 "resize, e.g. min_size=800, max_size=1333)")
        resolved.append(float(value))
    return resolved[0], resolved[1]


def _model_threshold(model: nn.Module) -> float | None:
    """An EFPN model's own ``P'2`` threshold, None for other models."""
    from sodlib.models.efpn import EFPNRoIHeads

    heads = getattr(bare_model(model), "roi_heads", None)
    return float(heads.threshold) if isinstance(heads, EFPNRoIHeads) else None


def recall_by_size(model: nn.Module, dataset, *, side_edges: Sequence[float] = DEFAULT_SIDE_EDGES,
                   score_threshold: float = 0.05, iou_threshold: float = 0.5, batch_size: int = 4,
                   min_size: float | None = None, max_size: float | None = None, threshold: float | None = None,
                   device: str | torch.device | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Recall of ``model`` per bin of the resized RoI side on ``dataset``, with the FPN / EFPN level(s) each bin's
    objects are pooled from: :func:`sodlib.eval.evaluate.predict` once, then
    :func:`recall_by_size_from_predictions` (its docstring has the arguments and the rows).

    ``min_size`` / ``max_size`` default to ``model.transform``'s test-time resize; ``threshold`` to an EFPN model's
    own, else ``56 * min_size / 1400``. The arguments are checked before the model runs.
    """
    min_size, max_size = _model_resize(model, min_size, max_size)
    if threshold is None:
        threshold = _model_threshold(model)
    options = dict(min_size=min_size, max_size=max_size, side_edges=side_edges, score_threshold=score_threshold,
                   iou_threshold=iou_threshold, threshold=threshold)
    _check_options(min_size, max_size, side_edges, score_threshold, iou_threshold, threshold)
    _check_dataset(dataset)
    predictions = predict(model, dataset, batch_size=batch_size, device=device, progress=progress)
    return recall_by_size_from_predictions(predictions, dataset, **options)
