"""COCO size bins, counted exactly as pycocotools' ``COCOeval`` counts them.

COCOeval's area ranges are ``all = [0, 1e10]``, ``small = [0, 32^2]``, ``medium = [32^2, 96^2]``,
``large = [96^2, 1e10]``, and an object belongs to a range when ``lo <= area <= hi``: both edges are
inclusive, so an object of area exactly 1024 counts as small *and* as medium (and 9216 as medium and
large). The area is the annotation's ``area`` field (the mask area for COCO), not the box. The
box-area mode (``w * h`` of the ``bbox``) exists for data without masks and must be asked for.

For drawing, where every object needs one colour, :func:`size_bin_label` picks the first bin that
holds the area (so 1024 is drawn as small).

:func:`size_mix_report` measures a dataset's mix both ways: by COCO's bins and by the share of the image area an
object covers (how traffic-sign datasets such as Tsinghua-Tencent 100K are described, :data:`TT100K_SIZE_MIX`).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
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


# ----------------------------------------------------------------------------------------------------------
# Size mix of a dataset: shares of the image area, as traffic-sign papers count them, next to COCO's bins
# ----------------------------------------------------------------------------------------------------------

IMAGE_AREA_SHARE_BINS: dict[str, tuple[float, float]] = {
    "under_0.2%": (0.0, 0.002),
    "0.2%-2%": (0.002, 0.02),
    "over_2%": (0.02, math.inf),
}
"""Object area as a share of its image's area, ``lo <= share < hi`` (one bin per object)."""

TT100K_SIZE_MIX: dict = {
    "dataset": "Tsinghua-Tencent 100K (traffic signs), test set",
    "image_area_shares": {"under_0.2%": 0.92},
    "image_size": 2048,
    "resized_to": 1400,
    "source": "Deng et al. 2021, EFPN, §IV-A",
}
"""What the EFPN paper says of Tsinghua-Tencent 100K: 92 % of its test instances cover less than 0.2 % of the image
area; the images are 2048 x 2048 px, which EFPN resizes to 1400 x 1400 (Deng et al. 2021, EFPN, §IV-A). The
paper gives no other shares."""


def size_mix_report(json_path: str | os.PathLike, area: AreaMode = "mask") -> dict:
    """The size mix of a COCO instances json, measured on its non-crowd instances.

    Returns a dict (json values):

    - ``images``, ``instances`` (non-crowd), ``crowd`` (crowd annotations, left out of every share),
      ``instances_per_image`` (non-crowd instances / images);
    - ``image_area_shares``: share of the instances in each :data:`IMAGE_AREA_SHARE_BINS` bin, the instance's
      area divided by its image's ``width * height`` (``under_0.2%``, ``0.2%-2%``, ``over_2%``; they sum to 1);
    - ``coco_shares``: share in each of COCO's bins by area, ``small`` ``area <= 32^2``, ``medium``
      ``32^2 < area <= 96^2``, ``large`` above (one bin per object, as :func:`size_bin_label`; COCOeval counts an
      area of exactly 1024 or 9216 in both neighbouring bins).

    ``area``: ``"mask"`` (the ``area`` field, as COCOeval) or ``"box"`` (``w * h`` of the bbox). Every share is
    0 when there is no non-crowd instance. Compare with :data:`TT100K_SIZE_MIX`.
    """
    mode = check_area_mode(area)
    document = json.loads(Path(json_path).read_text())
    image_area = {image["id"]: float(image["width"]) * float(image["height"]) for image in document["images"]}
    annotations = document["annotations"]
    kept = [a for a in annotations if not a.get("iscrowd", 0)]
    areas = annotation_areas(kept, mode)
    shares_of_image = areas / np.array([image_area[a["image_id"]] for a in kept], dtype=np.float64)
    count = len(kept)

    def share(selected: np.ndarray) -> float:
        return float(selected.sum()) / count if count else 0.0

    coco = np.array([size_bin_label(value) for value in areas.tolist()], dtype=object)
    return {
        "images": len(image_area),
        "instances": count,
        "crowd": len(annotations) - count,
        "instances_per_image": count / len(image_area) if image_area else 0.0,
        "image_area_shares": {name: share((shares_of_image >= lo) & (shares_of_image < hi))
                              for name, (lo, hi) in IMAGE_AREA_SHARE_BINS.items()},
        "coco_shares": {name: share(coco == name) for name in SIZE_BINS},
    }
