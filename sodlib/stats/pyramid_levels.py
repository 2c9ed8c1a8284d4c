r"""Which pyramid level a file's objects are pooled from, in FPN and in EFPN, once their images are resized for the
detector (Deng et al., 2021, Fig. 1: FPN puts every RoI under 112 px on ``P2``, small and medium alike).

For an object with bbox ``[x, y, w, h]`` in an image of ``width x height``:

- the image is resized as torchvision's ``GeneralizedRCNNTransform``,
  ``scale = min(min_size / min(width, height), max_size / max(width, height))`` (:func:`resize_scale`);
- its RoI side in the resized image is ``side = sqrt(w h) * scale``;
- FPN pools it from ``clamp(floor(4 + log2(side / 224) + 1e-6), 2, 5)`` (:func:`sodlib.pyramid_levels.fpn_level`),
  EFPN from ``P'2`` (stride 2) when ``side < threshold`` and from FPN's level otherwise
  (:func:`sodlib.pyramid_levels.efpn_level`; default ``threshold = 56 * min_size / 1400``);
- on a level of stride ``S`` it covers ``(side / S) ** 2`` feature cells
  (:func:`sodlib.pyramid_levels.cells_covered`).

torchvision scales the boxes by ``floor(side * scale) / side`` per axis rather than by ``scale``; the two differ by
less than one pixel of the resized image's sides, so by a relative ``1 / min_size`` at most.

:func:`level_shares` counts a file's objects per level and per bin of the resized side; :func:`levels_by_side` is
the per-bin part on its own, which :func:`sodlib.eval.level_recall.recall_by_size` shares.
"""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np
from pycocotools.coco import COCO

from sodlib.pyramid_levels import (EXTENDED_LEVEL, FPN_LEVELS, cells_covered, default_extended_threshold, efpn_level, fpn_level,
                                   level_name)
from sodlib.stats.objects import as_coco, no_objects_error, object_table

__all__ = ["DEFAULT_SIDE_EDGES", "check_side_edges", "level_shares", "levels_by_side", "resize_scale",
           "resolve_threshold"]

#: Bins of the resized RoI side (pixels): ``[lo, hi)``. 112 and 224 are FPN's ``P2 / P3`` and ``P3 / P4`` boundaries.
DEFAULT_SIDE_EDGES: tuple[float, ...] = (0, 8, 16, 32, 64, 112, 224, math.inf)

FPN_LEVEL_RANGE = tuple(range(FPN_LEVELS[0], FPN_LEVELS[1] + 1))          # 2..5
EFPN_LEVEL_RANGE = (EXTENDED_LEVEL,) + FPN_LEVEL_RANGE                     # 1, 2..5


def _check_size(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0 \
            or not math.isfinite(float(value)):
        raise ValueError(f"{name}={value!r} must be a positive number of pixels (the detector's resize, e.g. 800 / 1333)")
    return float(value)


def resize_scale(width, height, min_size: float, max_size: float):
    """The factor ``GeneralizedRCNNTransform`` resizes a ``width x height`` image by:
    ``scale = min(min_size / min(width, height), max_size / max(width, height))``.

    ``width`` and ``height`` may be arrays (a float array is returned then, a float otherwise); e.g. 640 x 480 at
    800 / 1333 -> ``800 / 480 = 1.667``, 2048 x 2048 at 1400 / 1400 -> ``1400 / 2048 = 0.684``.
    """
    min_size, max_size = _check_size(min_size, "min_size"), _check_size(max_size, "max_size")
    width, height = np.asarray(width, dtype=np.float64), np.asarray(height, dtype=np.float64)
    if np.any(~(width > 0)) or np.any(~(height > 0)):
        raise ValueError("width and height must be positive image sides in pixels")
    scale = np.minimum(min_size / np.minimum(width, height), max_size / np.maximum(width, height))
    return float(scale) if scale.ndim == 0 else scale


def check_side_edges(side_edges: Sequence[float]) -> np.ndarray:
    """``side_edges`` as a ``float64`` array if they are at least two strictly increasing sides ``>= 0`` (the last
    may be ``inf``), else a ValueError naming ``side_edges``."""
    try:
        edges = np.asarray(side_edges, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"side_edges={side_edges!r} must be a sequence of numbers, e.g. (0, 16, 32, 112, inf)") from None
    if edges.size < 2 or np.any(np.isnan(edges)) or edges[0] < 0 or np.any(np.diff(edges) <= 0) \
            or np.any(~np.isfinite(edges[:-1])):
        raise ValueError(f"side_edges={tuple(side_edges)!r} must be at least two strictly increasing sides >= 0 (only the "
                         "last may be inf), e.g. (0, 16, 32, 112, inf); fix: sort them and drop repeats")
    return edges


def resolve_threshold(threshold: float | None, min_size: float) -> float:
    """EFPN's threshold: ``threshold`` checked to be a positive side, or ``56 * min_size / 1400`` when None."""
    if threshold is None:
        return default_extended_threshold(min_size)
    return _check_threshold(threshold)


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
            or not threshold > 0 or not math.isfinite(float(threshold)):
        raise ValueError(f"threshold={threshold!r} must be a positive RoI side in pixels of the resized image (EFPN pools "
                         "RoIs under it from P'2); level_shares and recall_by_size take None for 56 * min_size / 1400")
    return float(threshold)


def _edge_label(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:g}"


def _shares(levels: np.ndarray, candidates: Sequence[int], keep_zeros: bool) -> dict[str, float]:
    counts = {level: int(np.count_nonzero(levels == level)) for level in candidates}
    total = max(len(levels), 1)
    return {level_name(level): count / total for level, count in counts.items() if keep_zeros or count}


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def levels_by_side(sides, *, threshold: float, side_edges: Sequence[float] = DEFAULT_SIDE_EDGES) -> list[dict[str, Any]]:
    """Per bin ``lo <= side < hi`` of ``side_edges``: where the RoIs of ``sides`` (``sqrt(w h)``, pixels of the
    resized image, all positive) are pooled from.

    Returns one dict per bin: ``bin`` (``"16-32"``), ``lo``, ``hi``, ``objects``, ``fpn`` and ``efpn`` (share of the
    bin's objects per level, only the levels some object lands on: a bin may straddle a boundary, e.g. 64-112 px
    is all ``P2`` in FPN but ``16-32`` is split between ``P'2`` and ``P2`` in EFPN at a threshold of 17.92), and
    ``fpn_median_cells``, ``efpn_median_cells``: the median ``(side / stride) ** 2`` on each detector's level
    (None for an empty bin). Sides outside the edges are in no bin.
    """
    edges = check_side_edges(side_edges)
    sides = np.asarray(sides, dtype=np.float64).reshape(-1)
    threshold = _check_threshold(threshold)
    fpn = fpn_level(sides) if sides.size else np.zeros(0, dtype=np.int64)
    efpn = efpn_level(sides, threshold) if sides.size else np.zeros(0, dtype=np.int64)
    fpn_cells, efpn_cells = cells_covered(sides, fpn), cells_covered(sides, efpn)
    index = np.searchsorted(edges, sides, side="right") - 1
    rows = []
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        inside = index == b
        rows.append({
            "bin": f"{_edge_label(lo)}-{_edge_label(hi)}",
            "lo": float(lo),
            "hi": float(hi),
            "objects": int(np.count_nonzero(inside)),
            "fpn": _shares(fpn[inside], FPN_LEVEL_RANGE, keep_zeros=False),
            "efpn": _shares(efpn[inside], EFPN_LEVEL_RANGE, keep_zeros=False),
            "fpn_median_cells": _median(fpn_cells[inside]),
            "efpn_median_cells": _median(efpn_cells[inside]),
        })
    return rows


def level_shares(json_path_or_coco: str | os.PathLike | COCO, *, min_size: float, max_size: float,
                 threshold: float | None = None, side_edges: Sequence[float] = DEFAULT_SIDE_EDGES) -> dict[str, Any]:
    """How a COCO file's non-crowd objects spread over FPN's and EFPN's pyramid levels once their images are resized
    to ``min_size`` / ``max_size`` (see the module docstring for the formulas).

    Args:
        json_path_or_coco: an instances json or a pycocotools ``COCO``.
        min_size, max_size: the detector's resize (torchvision's ``GeneralizedRCNNTransform``).
        threshold: EFPN's ``P'2`` threshold on the resized side (default ``56 * min_size / 1400``).
        side_edges: bins ``[lo, hi)`` of the resized side (default :data:`DEFAULT_SIDE_EDGES`).

    Returns:
        ``{"min_size", "max_size", "threshold", "images", "objects", "crowd_excluded", "degenerate",
        "fpn": {"P2": share, ..., "P5": share}, "efpn": {"P'2": share, "P2": ..., "P5": ...},
        "fpn_counts", "efpn_counts" (the same as counts), "median_cells": {"fpn": {level: median}, "efpn": ...}
        (None for an empty level), "bins": [...]}`` with ``bins`` as :func:`levels_by_side`. Objects whose bbox has
        zero width or height have no level (counted in ``degenerate``, left out of the rest); a file without any
        other object raises a ValueError.
    """
    min_size, max_size = _check_size(min_size, "min_size"), _check_size(max_size, "max_size")
    threshold = resolve_threshold(threshold, min_size)
    edges = check_side_edges(side_edges)
    table = object_table(as_coco(json_path_or_coco), area="box", resize=None, include_crowd=False)
    scale = resize_scale(table.image_widths, table.image_heights, min_size, max_size)
    box_sides = table.box_sides
    usable = box_sides > 0
    if not np.any(usable):
        raise no_objects_error(table)
    sides = box_sides[usable] * scale[table.object_image[usable]]
    fpn, efpn = fpn_level(sides), efpn_level(sides, threshold)
    fpn_cells, efpn_cells = cells_covered(sides, fpn), cells_covered(sides, efpn)
    count = lambda levels, candidates: {level_name(k): int(np.count_nonzero(levels == k)) for k in candidates}  # noqa: E731
    medians = lambda levels, cells, candidates: {level_name(k): _median(cells[levels == k]) for k in candidates}  # noqa: E731
    return {
        "min_size": min_size,
        "max_size": max_size,
        "threshold": threshold,
        "images": table.num_images,
        "objects": int(sides.size),
        "crowd_excluded": table.crowd_excluded,
        "degenerate": int(np.count_nonzero(~usable)),
        "fpn": _shares(fpn, FPN_LEVEL_RANGE, keep_zeros=True),
        "efpn": _shares(efpn, EFPN_LEVEL_RANGE, keep_zeros=True),
        "fpn_counts": count(fpn, FPN_LEVEL_RANGE),
        "efpn_counts": count(efpn, EFPN_LEVEL_RANGE),
        "median_cells": {"fpn": medians(fpn, fpn_cells, FPN_LEVEL_RANGE),
                         "efpn": medians(efpn, efpn_cells, EFPN_LEVEL_RANGE)},
        "bins": levels_by_side(sides, threshold=threshold, side_edges=edges),
    }
