"""COCO size bins, counted exactly as pycocotools' ``COCOeval`` counts them.

COCOeval's area ranges are ``all = [0, 1e10]``, ``small = [0, 32^2]``, ``medium = [32^2, 96^2]``,
``large = [96^2, 1e10]``, and an object belongs to a range when ``lo <= area <= hi``: both edges are
inclusive, so an object of area exactly 1024 counts as small *and* as medium (and 9216 as medium and
large). The area is the annotation's ``area`` field (the mask area for COCO), not the box. The
box-area mode (``w * h`` of the ``bbox``) exists for data without masks and must be asked for.

For drawing, where every object needs one colour, :func:`size_bin_label` picks the first bin that
holds the area (so 1024 is drawn as small).
"""
from __future__ import annotations

from typing import Iterable, Literal, Mapping, Sequence

import numpy as np

AreaMode = Literal["mask", "box"]

SIZE_BINS: dict[str, tuple[float, float]] = {
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
SIZE_BIN_COLORS: dict[str, str] = {"small": "#d62728", "medium": "#ff7f0e", "large": "#1f77b4"}


def check_area_mode(area: str) -> AreaMode:
    if area not in ("mask", "box"):
        raise ValueError(f"area={area!r} is not a size-bin mode; use area='mask' (the annotation's 'area' field, as COCOeval) or area='box' (bbox width * height)")
    return area  # type: ignore[return-value]


def annotation_area(annotation: Mapping, area: AreaMode = "mask") -> float:
    """The area that decides an annotation's size bin: its ``area`` field, or ``w * h`` of its bbox."""
    if check_area_mode(area) == "mask":
        return float(annotation["area"])
    _, _, width, height = annotation["bbox"]
    return float(width) * float(height)


def annotation_areas(annotations: Iterable[Mapping], area: AreaMode = "mask") -> np.ndarray:
    """``float64 [N]`` areas of the annotations, by the chosen mode."""
    return np.array([annotation_area(a, area) for a in annotations], dtype=np.float64)


def in_size_bin(areas: np.ndarray | Sequence[float], name: str, bins: Mapping[str, tuple[float, float]] = SIZE_BINS) -> np.ndarray:
    """``bool [N]``: ``lo <= area <= hi`` for the named bin (both edges inclusive, as pycocotools)."""
    if name not in bins:
        raise ValueError(f"size bin {name!r} is unknown; known bins: {', '.join(bins)}")
    lo, hi = bins[name]
    areas = np.asarray(areas, dtype=np.float64)
    return (areas >= lo) & (areas <= hi)


def count_by_size_bin(areas: np.ndarray | Sequence[float], bins: Mapping[str, tuple[float, float]] = SIZE_BINS) -> dict[str, int]:
    """Number of objects in each bin; an object on an edge is counted in both bins."""
    return {name: int(in_size_bin(areas, name, bins).sum()) for name in bins}


def size_bin_label(area: float, bins: Mapping[str, tuple[float, float]] = SIZE_BINS) -> str:
    """One bin name per object, for colouring: the first bin (in order) whose range holds ``area``."""
    for name, (lo, hi) in bins.items():
        if lo <= area <= hi:
            return name
    raise ValueError(f"area {area} lies in no size bin of {dict(bins)}")
