"""The embedded synthetic dataset: a deterministic COCO-format detection set where small objects dominate.

Why it exists: the course must run on any machine without downloading COCO, and it teaches about small
objects, so the stand-in has to look like COCO where it matters for small-object detection: most objects are
small, a few are large, images are cluttered, and there are things that look like small objects but are not.

What an image holds (``image_size`` x ``image_size`` RGB, written as JPEG, quality 90):

- **Background**: multi-scale smooth value noise (octaves of bicubically upsampled random grids, a
  luminance part and a coarser colour part), soft translucent patches (ellipses, rectangles, polygons),
  straight lines of 1-3 px, and (after JPEG) its compression noise.
- **Distractors** (unlabelled): irregular blobs (polygons of 5-9 vertices at random angles and radii) and
  short bent strokes, 3-20 px across, flat-coloured. They are the same size as small objects but have
  neither a regular outline nor a texture, so a detector can learn to tell them apart.
- **Objects** of the :data:`CATEGORIES`; each category has its own outline *and* its own texture, and
  every instance gets two random colours, so colour alone never gives the class:

  ====  ========  ===============  ========================================
  id    name      outline          texture (two random colours A, B)
  ====  ========  ===============  ========================================
  1     disc      circle           radial gradient A (centre) -> B (rim)
  2     square    square           checkerboard, 4 x 4 cells
  3     triangle  equilateral      stripes, 5 across
  4     star      five-point star  two halves, A | B
  5     cross     plus sign        dots on a 4 x 4 grid
  6     hexagon   regular hexagon  concentric rings
  ====  ========  ===============  ========================================

  Each instance is rotated by a uniform angle and stretched by an aspect factor ``a`` drawn log-uniformly
  from ``[3/4, 4/3]`` (``x * sqrt(a)``, ``y / sqrt(a)``, which keeps the area).
- **Crowds**: with the mix's ``crowd_probability`` per image (:data:`CROWD_PROBABILITY` = 0.07 in the
  COCO-like mix, 0 in the tiny one), a tight cluster of ``m`` = 12-40 tiny
  instances (sides 3-7 px) of one category in a square of side ``sqrt(m) * U(8, 12)`` px (those that would
  overlap one another are skipped), annotated as ONE annotation with ``iscrowd=1`` and an uncompressed RLE
  mask ``{"counts": [...], "size": [h, w]}`` of the union of their pixels, as COCO annotates crowds. That
  is about 1 % of all annotations, as in COCO (about 1 %; 28 of 2,838 in coco-mini).

**Objects never overlap.** A new object is placed only where its mask shares no pixel with the masks
already placed (nor with a crowd's region), so every mask is exactly what is visible in the image.

**Masks, areas and pixels agree exactly.** A non-crowd object's ``segmentation`` is one polygon
``[[x1, y1, x2, y2, ...]]`` (coordinates rounded to 0.01 px). Its mask is pycocotools' rasterisation of that
polygon at the image size (``mask.frPyObjects`` + ``mask.decode``), the painted pixels are exactly that mask,
``area = mask.area(rle)`` and ``bbox = mask.toBbox(rle)``: the mask's tight box ``[x, y, w, h]`` in whole
pixels (COCO's own boxes are the polygon extent in floats; here the box is the mask's, so that box, mask and
pixels agree). Crowd annotations use the same definitions on their RLE. Objects lie wholly inside the image.

**Size mixes.** How large the objects are, how many an image holds and how often it holds a crowd is a
:class:`SizeMix`, a parameter of :func:`generate_synthetic_coco` (and of :func:`render_image`). Three are defined:
:data:`COCO_LIKE_MIX`, the embedded dataset's, described below, and :data:`TINY_MIX`, the embedded tiny-object
dataset's (:func:`embedded_tiny_dataset`: 640 px images where, as in the traffic signs of Tsinghua-Tencent 100K,
nine objects in ten cover under 0.2 % of the image area: sides 3-28.6 px with probability 0.9, 28.6-90.5 px
otherwise, 10 objects drawn per image on average, no crowds) and :data:`LARGE_MIX`, the embedded large-image
dataset's (:func:`embedded_large_dataset`: 1600 px images, aerial-like, sides 4-16 px with probability 0.6 and
16-32 px otherwise, 40 objects drawn per image on average, no crowds). Everything else (background, distractors,
shapes, placement) is the same for every mix, and a mix changes no draw before the object count, so
:data:`COCO_LIKE_MIX` draws exactly what the generator drew before mixes were a parameter.

**Size distribution of the COCO-like mix** (by object count, COCO's bins by mask area, :mod:`sodlib.data.sizes`).
Each object first draws its bin with probabilities :data:`SIZE_BIN_PROBABILITIES` (COCO train2017: 41.43 / 34.32 /
24.24 % small / medium / large; the large weight times :data:`LARGE_DRAW_BOOST`, see Placement), then its side
``s = sqrt(area)`` log-uniformly inside the bin's side range::

    small  s in [4, 32],  medium  s in [32, 96],  large  s in [96, s_max],  s_max = 0.5 * image_size
    s = exp(U(log lo, log hi))

(bins whose range does not fit the image are dropped and the others renormalised, so at ``image_size``
below 192 there are no large objects). A shape is scaled to a target area with its unit-area template:
every outline is stored as a polygon ``v`` of shoelace area 1 centred at the origin, so ``s * R(angle) *
stretch(a) * v + centre`` has polygon area ``s^2``; the rasterised area differs from ``s^2`` by the pixels
along the outline, which is why the bins are measured on the rasterised ``area``. Sides are capped so that
a shape fits in the image at any angle (``s <= (image_size / 2 - 2) / (r_max * sqrt(max(a, 1/a)))``).

**Placement**: objects are placed largest first. For each, a coarse occupancy grid (4 px cells) and its
integral image give every centre where the polygon's box is free; one is picked at random, then 4 blind
tries follow (shapes can interlock where boxes cannot); a try is accepted when the rasterised mask shares no
pixel with the masks already placed. An object with no room is shrunk by 15 % (not below 1.05 times its bin's
lower side, so that it stays in its bin) and tried again, and dropped after 5 shrinks: about 3 % of the drawn
objects, nearly all large ones in images that already hold several, which :data:`LARGE_DRAW_BOOST` makes up.

**Objects per image** (COCO-like mix; any mix: its ``mean_objects``, ``count_shape`` and ``max_objects``):
``1 + NegativeBinomial`` with mean :data:`MEAN_OBJECTS_PER_IMAGE` - 1 and shape 1.5
(a long tail, like COCO's, with some images holding dozens), at most 60. The drawn mean is 7.7 so that, after the
few objects that find no room, an image holds about 7.3 annotations, as COCO train2017 (860,001 / 118,287).

**Determinism**: image ``i`` of a run with seed ``seed`` draws everything from
``numpy.random.default_rng([seed, i])``, so the output is the same bytes whatever the number of workers (for
the same versions of numpy, Pillow and its libjpeg, and pycocotools).

The annotation-only mode (:func:`generate_annotation_only_coco`) writes a COCO-train-scale json without
images, for benchmarks of the statistics code.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from tqdm.auto import tqdm

from sodlib.data.files import sigterm_unwinds, write_text_atomically
from sodlib.data.masks import mask_box
from sodlib.data.resample import downscale_antialiased
from sodlib.data.paths import data_dir

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 4
"""Bump when the generator's output changes, so that cached embedded datasets are regenerated."""

CATEGORIES: list[dict] = [
    {"id": 1, "name": "disc", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "star", "supercategory": "shape"},
    {"id": 5, "name": "cross", "supercategory": "shape"},
    {"id": 6, "name": "hexagon", "supercategory": "shape"},
]

EMBEDDED_SPLITS: dict[str, dict] = {
    "train": {"num_images": 800, "seed": 0},
    "val": {"num_images": 200, "seed": 1},
}
EMBEDDED_IMAGE_SIZE = 512
EMBEDDED_TINY_SPLITS: dict[str, dict] = {
    "train": {"num_images": 800, "seed": 10},
    "val": {"num_images": 200, "seed": 11},
}
"""The embedded tiny-object dataset's splits (:func:`embedded_tiny_dataset`); seeds apart from the main set's."""
EMBEDDED_LARGE_SPLITS: dict[str, dict] = {
    "train": {"num_images": 120, "seed": 20},
    "val": {"num_images": 30, "seed": 21},
}
"""The embedded large-image dataset's splits (:func:`embedded_large_dataset`): few images, each with about 40
objects; seeds apart from the other sets'."""

SIZE_BIN_PROBABILITIES: dict[str, float] = {"small": 0.4143, "medium": 0.3432, "large": 0.2424}
"""COCO train2017's share of objects per size bin (by annotation count, by mask area)."""
LARGE_DRAW_BOOST = 1.1
"""The image generator draws the large bin with weight ``1.1 * 0.2424`` (then renormalises): about 3 % of the
drawn objects, nearly all large, find no room in images already holding several large objects and are dropped,
and this boost brings the measured share back to COCO's."""
SMALLEST_SIDE = 4.0
LARGEST_SIDE_FRACTION = 0.5
MEAN_OBJECTS_PER_IMAGE = 7.7
MAX_OBJECTS_PER_IMAGE = 60
OBJECT_COUNT_SHAPE = 1.5
CROWD_PROBABILITY = 0.07
JPEG_QUALITY = 90

INFO = {
    "description": "sodlib embedded synthetic small-object dataset",
    "version": f"generator {GENERATOR_VERSION}",
    "year": 2026,
    "contributor": "sodlib",
    "url": "",
    "date_created": "",
}
LICENSES = [{"id": 1, "name": "Creative Commons Attribution 4.0 International (CC BY 4.0)",
             "url": "https://creativecommons.org/licenses/by/4.0/"}]


# ----------------------------------------------------------------------------------------------------------
# Shapes: unit-area templates
# ----------------------------------------------------------------------------------------------------------

def _regular_polygon(corners: int, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(corners) / corners
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner_radius: float = 0.45) -> np.ndarray:
    angles = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner_radius)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _plus(arm_half_width: float = 1 / 6) -> np.ndarray:
    a, b = arm_half_width, 0.5
    return np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a], [-b, a],
                     [-b, -a], [-a, -a]])


def _polygon_area(vertices: np.ndarray) -> float:
    x, y = vertices[:, 0], vertices[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _unit_area(vertices: np.ndarray) -> np.ndarray:
    """The polygon moved to its vertex centroid and scaled to area 1."""
    vertices = vertices - vertices.mean(axis=0)
    return vertices / math.sqrt(_polygon_area(vertices))


SHAPE_TEMPLATES: dict[str, np.ndarray] = {
    "disc": _unit_area(_regular_polygon(48)),
    "square": _unit_area(_regular_polygon(4, np.pi / 4)),
    "triangle": _unit_area(_regular_polygon(3, -np.pi / 2)),
    "star": _unit_area(_star()),
    "cross": _unit_area(_plus()),
    "hexagon": _unit_area(_regular_polygon(6)),
}
"""Outline of each category: ``float64 [V, 2]`` polygon of area 1 centred at the origin."""
TEMPLATE_RADIUS = {name: float(np.linalg.norm(v, axis=1).max()) for name, v in SHAPE_TEMPLATES.items()}


def _texture(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mixing weight in ``[0, 1]`` between an instance's two colours.

    ``u``, ``v``: coordinates in the object's own rotated frame, in units of its side (the template spans
    about ``[-0.6, 0.6]``), so a texture scales with the object.
    """
    if name == "disc":  # radial gradient
        return np.clip(np.hypot(u, v) / TEMPLATE_RADIUS["disc"], 0.0, 1.0)
    if name == "square":  # checkerboard, 4 x 4 cells across
        return ((np.floor(u * 4) + np.floor(v * 4)) % 2).astype(np.float32)
    if name == "triangle":  # stripes, 5 across
        return (np.floor(u * 5) % 2).astype(np.float32)
    if name == "star":  # two halves
        return (u > 0).astype(np.float32)
    if name == "cross":  # dots on a 4 x 4 grid
        fu, fv = u * 4 - np.floor(u * 4) - 0.5, v * 4 - np.floor(v * 4) - 0.5
        return (fu * fu + fv * fv < 0.09).astype(np.float32)
    if name == "hexagon":  # concentric rings
        return (np.floor(np.hypot(u, v) * 8) % 2).astype(np.float32)
    raise ValueError(f"no texture for shape {name!r}")


# ----------------------------------------------------------------------------------------------------------
# Size sampling
# ----------------------------------------------------------------------------------------------------------

def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass(frozen=True)
class SizeMix:
    """How large the objects of an image are and how many there are: everything :func:`_render` draws per image
    that is not the picture itself.

    Fields:
        name: a short name, written into the json's ``info`` and the embedded stamps (``"coco_like"``, ``"tiny"``).
        bins: size bin name -> ``(lo, hi)``, the range of the object side ``s = sqrt(area)`` in pixels
            (``lo >= 1``, ``lo < hi``); ``hi`` may be ``math.inf``. Every ``hi`` is capped at
            ``largest_side_fraction * image_size`` and a bin left empty by that cap is dropped (see
            :func:`side_ranges`). Within a bin the side is log-uniform.
        probabilities: bin name -> share of the drawn objects (the same names as ``bins``, each >= 0, summing to
            1 within 0.001; renormalised over the bins that fit the image).
        mean_objects: mean number of objects drawn per image (>= 1): ``1 + NegativeBinomial`` with mean
            ``mean_objects - 1`` and shape ``count_shape``.
        max_objects: at most this many objects are drawn per image (>= 1).
        crowd_probability: chance that an image holds one crowd annotation (in ``[0, 1]``).
        draw_boost: bin name -> factor on that bin's drawing weight (> 0; absent bins: 1), to make up for the
            objects of that bin that find no room and are dropped.
        largest_side_fraction: cap on the object side as a fraction of the image side (in ``(0, 0.5]``).
        count_shape: shape of the negative binomial of the object count (> 0; smaller: a longer tail).

    Raises ``ValueError`` naming the field and the fix for a mix that cannot be drawn.
    """

    name: str
    bins: dict[str, tuple[float, float]]
    probabilities: dict[str, float]
    mean_objects: float
    max_objects: int
    crowd_probability: float
    draw_boost: dict[str, float] = field(default_factory=dict)
    largest_side_fraction: float = LARGEST_SIDE_FRACTION
    count_shape: float = OBJECT_COUNT_SHAPE

    def __post_init__(self) -> None:
        where = f"SizeMix({self.name!r})"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"SizeMix name={self.name!r} must be a non-empty string, e.g. 'tiny'")
        if not isinstance(self.bins, dict) or not self.bins:
            raise ValueError(f"{where}: bins={self.bins!r} must be a non-empty dict of name -> (lo, hi) sides in px")
        for name, edges in self.bins.items():
            if not isinstance(edges, (tuple, list)) or len(edges) != 2 or not all(_is_number(e) for e in edges):
                raise ValueError(f"{where}: bins[{name!r}]={edges!r} must be a pair (lo, hi) of sides in px")
            lo, hi = edges
            if not lo >= 1:
                raise ValueError(f"{where}: bins[{name!r}]=({lo}, {hi}): the side lo must be >= 1 px (a smaller "
                                 "polygon often rasterises to no pixel); fix: raise lo")
            if not lo < hi:
                raise ValueError(f"{where}: bins[{name!r}]=({lo}, {hi}): lo must be < hi; fix: swap or widen the range")
        if not isinstance(self.probabilities, dict) or set(self.probabilities) != set(self.bins):
            given = ", ".join(map(str, self.probabilities)) if isinstance(self.probabilities, dict) else repr(self.probabilities)
            raise ValueError(f"{where}: probabilities must name exactly the bins ({', '.join(self.bins)}); got {given}")
        for name, share in self.probabilities.items():
            if not _is_number(share) or not 0 <= share <= 1:
                raise ValueError(f"{where}: probabilities[{name!r}]={share!r} must be a number in [0, 1]")
        total = sum(self.probabilities.values())
        if abs(total - 1) > 1e-3:
            raise ValueError(f"{where}: probabilities sum to {total:.4g}, not 1; fix: make the shares of the bins "
                             "add up to 1")
        if not _is_number(self.mean_objects) or not self.mean_objects >= 1:
            raise ValueError(f"{where}: mean_objects={self.mean_objects!r} must be a number >= 1 (an image holds "
                             "at least one object)")
        integer = isinstance(self.max_objects, (int, np.integer)) and not isinstance(self.max_objects, bool)
        if not integer or self.max_objects < 1:
            raise ValueError(f"{where}: max_objects={self.max_objects!r} must be an integer >= 1")
        if not _is_number(self.crowd_probability) or not 0 <= self.crowd_probability <= 1:
            raise ValueError(f"{where}: crowd_probability={self.crowd_probability!r} must be a number in [0, 1] "
                             "(0: no crowds)")
        for name, factor in self.draw_boost.items():
            if name not in self.bins:
                raise ValueError(f"{where}: draw_boost names {name!r}, which is not a bin; use one of "
                                 f"{', '.join(self.bins)}")
            if not _is_number(factor) or not factor > 0:
                raise ValueError(f"{where}: draw_boost[{name!r}]={factor!r} must be a number > 0 (1: no boost)")
        if not _is_number(self.largest_side_fraction) or not 0 < self.largest_side_fraction <= 0.5:
            raise ValueError(f"{where}: largest_side_fraction={self.largest_side_fraction!r} must be in (0, 0.5] "
                             "(an object must fit in the image at any angle)")
        if not _is_number(self.count_shape) or not self.count_shape > 0:
            raise ValueError(f"{where}: count_shape={self.count_shape!r} must be a number > 0")

    def describe(self) -> dict:
        """The mix as plain json values (an infinite ``hi`` as ``None``), for stamps and reports."""
        return {"name": self.name,
                "bins": {n: [float(lo), None if math.isinf(hi) else float(hi)] for n, (lo, hi) in self.bins.items()},
                "probabilities": {n: float(p) for n, p in self.probabilities.items()},
                "mean_objects": float(self.mean_objects), "max_objects": int(self.max_objects),
                "crowd_probability": float(self.crowd_probability),
                "draw_boost": {n: float(f) for n, f in self.draw_boost.items()},
                "largest_side_fraction": float(self.largest_side_fraction), "count_shape": float(self.count_shape)}


COCO_LIKE_MIX = SizeMix(
    name="coco_like",
    bins={"small": (SMALLEST_SIDE, 32.0), "medium": (32.0, 96.0), "large": (96.0, math.inf)},
    probabilities=dict(SIZE_BIN_PROBABILITIES),
    mean_objects=MEAN_OBJECTS_PER_IMAGE,
    max_objects=MAX_OBJECTS_PER_IMAGE,
    crowd_probability=CROWD_PROBABILITY,
    draw_boost={"large": LARGE_DRAW_BOOST},
)
"""COCO's size mix, the embedded dataset's: the module constants above as one :class:`SizeMix` (sides 4-32-96 px
and up to half the image, COCO train2017's bin shares, 7.7 objects drawn per image, 7 % of images with a crowd)."""

EMBEDDED_TINY_IMAGE_SIZE = 640
TINY_SMALL_AREA_SHARE = 0.002
"""Upper edge of the tiny mix's first bin, as a share of the image area (Tsinghua-Tencent 100K: 92 % of the test
instances lie below it, :data:`sodlib.data.sizes.TT100K_SIZE_MIX`)."""
TINY_MEDIUM_AREA_SHARE = 0.02


def _side_of_area_share(share: float, image_size: int) -> float:
    """The side ``s`` of a square object that covers ``share`` of an ``image_size`` square image."""
    return math.sqrt(share) * image_size


TINY_MIX = SizeMix(
    name="tiny",
    bins={"under_0.2%": (3.0, _side_of_area_share(TINY_SMALL_AREA_SHARE, EMBEDDED_TINY_IMAGE_SIZE)),
          "0.2%-2%": (_side_of_area_share(TINY_SMALL_AREA_SHARE, EMBEDDED_TINY_IMAGE_SIZE),
                      _side_of_area_share(TINY_MEDIUM_AREA_SHARE, EMBEDDED_TINY_IMAGE_SIZE))},
    probabilities={"under_0.2%": 0.9, "0.2%-2%": 0.1},
    mean_objects=10.0,
    max_objects=60,
    crowd_probability=0.0,
)
"""A traffic-sign-like mix for :data:`EMBEDDED_TINY_IMAGE_SIZE` (640 px) images: nine objects in ten cover under
0.2 % of the image (sides 3 to 28.6 px), the rest 0.2-2 % (28.6 to 90.5 px), none more; 10 objects drawn per image
on average (at most 60); no crowds (traffic-sign annotations have none). The bins are in pixels, so at another
image size they keep their pixel sizes, not their area shares."""

EMBEDDED_LARGE_IMAGE_SIZE = 1600

LARGE_MIX = SizeMix(
    name="large",
    bins={"4-16 px": (4.0, 16.0), "16-32 px": (16.0, 32.0)},
    probabilities={"4-16 px": 0.6, "16-32 px": 0.4},
    mean_objects=40.0,
    max_objects=90,
    crowd_probability=0.0,
)
"""An aerial-like mix for :data:`EMBEDDED_LARGE_IMAGE_SIZE` (1600 px) images: every object is small by COCO's
bins, sides 4-16 px with probability 0.6 (COCO area under 16^2, the course's "tiny" bin) and 16-32 px otherwise;
40 objects drawn per image on average (a long tail, at most 90, so that COCO's 100 detections per image can still
find them all); no crowds. At 1600 px an object of 16 px covers 0.01 % of the image: a detector that sees the whole
image at 512 px sees it at 5 px."""

SIZE_MIXES: dict[str, SizeMix] = {COCO_LIKE_MIX.name: COCO_LIKE_MIX, TINY_MIX.name: TINY_MIX, LARGE_MIX.name: LARGE_MIX}
"""The named mixes (``python -m sodlib data synth --size-mix NAME``)."""


def side_ranges(image_size: int, mix: SizeMix = COCO_LIKE_MIX) -> dict[str, tuple[float, float]]:
    """Side range ``(lo, hi)`` of each of the mix's bins that fits an image of ``image_size``: ``hi`` capped at
    ``mix.largest_side_fraction * image_size``, bins left empty dropped (see module docstring)."""
    largest = mix.largest_side_fraction * image_size
    return {name: (lo, min(hi, largest)) for name, (lo, hi) in mix.bins.items() if min(hi, largest) > lo}


def sample_sides(rng: np.random.Generator, count: int, ranges: dict[str, tuple[float, float]],
                 mix: SizeMix = COCO_LIKE_MIX) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``count`` object sides: a bin with the mix's ``probabilities`` times its ``draw_boost``
    (renormalised over the bins in ``ranges``), then ``side = exp(U(log lo, log hi))`` in it.

    Returns ``(sides float64 [count], bin_index int64 [count])``, the bin index into ``list(ranges)``.
    """
    names = list(ranges)
    probabilities = np.array([mix.probabilities[n] * mix.draw_boost.get(n, 1.0) for n in names])
    bins = rng.choice(len(names), size=count, p=probabilities / probabilities.sum())
    lows = np.log([ranges[n][0] for n in names])[bins]
    highs = np.log([ranges[n][1] for n in names])[bins]
    return np.exp(lows + (highs - lows) * rng.random(count)), bins


# ----------------------------------------------------------------------------------------------------------
# One image
# ----------------------------------------------------------------------------------------------------------

@dataclass
class PlacedObject:
    """One annotation of a drawn image, without its ids: ``segmentation`` is ``[[x1, y1, ...]]`` (a polygon)
    or an uncompressed RLE dict for a crowd; ``area`` and ``bbox`` (``[x, y, w, h]``, the mask's tight box)
    are pycocotools' ``area`` and ``toBbox`` of that segmentation's mask."""

    category_id: int
    segmentation: list | dict
    area: int
    bbox: list[float]
    iscrowd: int


def _smooth_noise(rng: np.random.Generator, size: int, grid_sizes: list[int], falloff: float) -> np.ndarray:
    """``float32 [size, size]`` in ``[-1, 1]``: a sum of bicubically upsampled random grids of the given sizes,
    the grid of ``g`` cells with amplitude ``g ** -falloff``."""
    total = np.zeros((size, size), dtype=np.float32)
    for grid in grid_sizes:
        values = rng.standard_normal((grid + 1, grid + 1)).astype(np.float32)
        total += np.asarray(Image.fromarray(values, mode="F").resize((size, size), Image.BICUBIC)) * grid ** -falloff
    return total / (np.abs(total).max() + 1e-6)


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _paint_background(rng: np.random.Generator, size: int) -> Image.Image:
    """Smooth multi-scale colour noise (built at a quarter of the resolution, then upsampled bicubically: its
    finest grid has ``size / 8`` cells), translucent patches and lines."""
    working = max(size // 4, 16)
    luminance = _smooth_noise(rng, working, [2, 4, 8, 16, 32, 64], falloff=0.5)
    colour = np.stack([_smooth_noise(rng, working, [2, 4, 8], falloff=0.5) for _ in range(3)], axis=-1)
    base = rng.uniform(60, 190, 3).astype(np.float32)
    pixels = base + rng.uniform(30, 70) * luminance[..., None] + rng.uniform(15, 40) * colour
    small = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    image = small.resize((size, size), Image.BICUBIC)

    scale = size / 512
    for _ in range(rng.integers(3, 9)):  # translucent patches, drawn in their own box
        cx, cy = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(20, 140, 2) * scale
        x0, y0 = int(max(cx - rx, 0)), int(max(cy - ry, 0))
        x1, y1 = int(min(cx + rx, size - 1)) + 1, int(min(cy + ry, size - 1)) + 1
        layer = Image.new("L", (max(x1 - x0, 1), max(y1 - y0, 1)), 0)
        draw = ImageDraw.Draw(layer)
        kind = rng.integers(3)
        opacity = int(rng.integers(40, 110))
        if kind == 0:
            draw.ellipse([cx - rx - x0, cy - ry - y0, cx + rx - x0, cy + ry - y0], fill=opacity)
        elif kind == 1:
            draw.rectangle([cx - rx - x0, cy - ry - y0, cx + rx - x0, cy + ry - y0], fill=opacity)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(4, 8)))
            points = np.stack([cx - x0 + rx * np.cos(angles), cy - y0 + ry * np.sin(angles)], 1)
            draw.polygon([tuple(p) for p in points], fill=opacity)
        image.paste(_random_colour(rng), box=(x0, y0, x0 + layer.width, y0 + layer.height), mask=layer)

    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 10)):  # lines
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        draw.line([x0, y0, x1, y1], fill=_random_colour(rng), width=int(rng.integers(1, 4)))

    return image


def _paint_distractors(rng: np.random.Generator, image: Image.Image) -> None:
    """Unlabelled clutter the size of small objects: irregular blobs and bent strokes, 3-20 px, flat colour."""
    size = image.width
    draw = ImageDraw.Draw(image)
    for _ in range(rng.poisson(30 * (size / 512) ** 2)):
        extent = rng.uniform(3, 20)
        cx, cy = rng.uniform(0, size, 2)
        if rng.random() < 0.6:
            corners = rng.integers(5, 10)
            angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
            radii = extent / 2 * rng.uniform(0.3, 1.0, corners)
            points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
            draw.polygon([tuple(p) for p in points], fill=_random_colour(rng))
        else:
            steps = rng.normal(0, extent / 2.5, (int(rng.integers(2, 4)), 2))
            points = np.cumsum(np.vstack([[cx, cy], steps]), axis=0)
            draw.line([tuple(p) for p in points], fill=_random_colour(rng), width=int(rng.integers(1, 4)))


def _two_colours(rng: np.random.Generator) -> np.ndarray:
    """``float32 [2, 3]``: two random RGB colours whose luminances differ by at least 60 levels."""
    first = rng.uniform(0, 255, 3)
    second = rng.uniform(0, 255, 3)
    weights = np.array([0.299, 0.587, 0.114])
    difference = float((second - first) @ weights)
    if abs(difference) < 60:
        shift = 90 if float(first @ weights) < 128 else -90
        second = np.clip(first + shift + rng.uniform(-40, 40, 3), 0, 255)
    return np.stack([first, second]).astype(np.float32)


def _shape_polygon(shape: str, side: float, angle: float, stretch: float, centre: np.ndarray) -> list[float]:
    """Flat ``[x1, y1, ...]`` polygon of the shape, area ``side^2``, rounded to 0.01 px."""
    vertices = SHAPE_TEMPLATES[shape] * np.array([math.sqrt(stretch), 1 / math.sqrt(stretch)]) * side
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    vertices = vertices @ rotation.T + centre
    return np.round(vertices.reshape(-1), 2).tolist()


def _rasterise(polygon: list[float], height: int, width: int) -> tuple[dict, np.ndarray]:
    """pycocotools' RLE of a polygon and its decoded ``uint8 [H, W]`` mask."""
    rle = mask_utils.frPyObjects([polygon], height, width)[0]
    return rle, mask_utils.decode(rle)


def _paint_object(image: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int], shape: str, side: float,
                  angle: float, stretch: float, centre: np.ndarray, colours: np.ndarray) -> None:
    """Fill ``image[mask]`` (``uint8 [H, W, 3]``, in place) with the shape's texture in the two colours."""
    x0, y0, x1, y1 = box
    region = mask[y0:y1, x0:x1].astype(bool)
    ys, xs = np.nonzero(region)
    dx, dy = xs + x0 + 0.5 - centre[0], ys + y0 + 0.5 - centre[1]
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / (side * math.sqrt(stretch))
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) * math.sqrt(stretch) / side
    weight = _texture(shape, u, v)[:, None]
    pixels = colours[0] * (1 - weight) + colours[1] * weight
    image[ys + y0, xs + x0] = np.clip(pixels, 0, 255).astype(np.uint8)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE ``{"counts": [...], "size": [h, w]}`` of a binary ``[H, W]`` mask.

    Counts are run lengths in column-major order, starting with a (possibly empty) run of zeros.
    """
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    boundaries = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(boundaries).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _extent_box(polygon: list[float], size: int) -> tuple[int, int, int, int]:
    """Whole-pixel box ``(x0, y0, x1, y1)`` (end exclusive) that holds every pixel of the polygon's mask."""
    xs, ys = polygon[0::2], polygon[1::2]
    return (max(int(math.floor(min(xs))) - 1, 0), max(int(math.floor(min(ys))) - 1, 0),
            min(int(math.ceil(max(xs))) + 2, size), min(int(math.ceil(max(ys))) + 2, size))


def _free(occupied: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    return not np.any(occupied[y0:y1, x0:x1] & mask[y0:y1, x0:x1].astype(bool))


def _place_crowd(rng: np.random.Generator, pixels: np.ndarray, occupied: np.ndarray,
                 painted: list[PaintedShape] | None = None) -> PlacedObject | None:
    """A tight cluster of tiny instances of one category, annotated as one crowd RLE (see module docstring);
    each painted member is appended to ``painted`` when given."""
    size = pixels.shape[0]
    category = CATEGORIES[rng.integers(len(CATEGORIES))]
    shape = category["name"]
    members = int(rng.integers(12, 41))
    region = float(np.clip(math.sqrt(members) * rng.uniform(8, 12), 24, size / 2))  # a square of this side
    rx, ry = rng.uniform(0, size - region, 2)
    union = np.zeros((size, size), dtype=bool)
    for _ in range(members):
        side = rng.uniform(3, 7)
        margin = TEMPLATE_RADIUS[shape] * side * 1.2 + 1
        if region <= 2 * margin:
            continue
        centre = np.array([rx, ry]) + rng.uniform(margin, region - margin, 2)
        angle, stretch = rng.uniform(0, 2 * np.pi), float(np.exp(rng.uniform(np.log(0.75), np.log(4 / 3))))
        polygon = _shape_polygon(shape, side, angle, stretch, centre)
        box = _extent_box(polygon, size)
        _, mask = _rasterise(polygon, size, size)
        if not _free(union, mask, box) or not _free(occupied, mask, box):
            continue
        union |= mask.astype(bool)
        colours = _two_colours(rng)
        _paint_object(pixels, mask, box, shape, side, angle, stretch, centre, colours)
        if painted is not None:
            painted.append(PaintedShape(shape, side, angle, stretch, centre, colours))
    box = mask_box(union)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    occupied[y0:y1, x0:x1] = True  # the crowd's whole region is taken
    rle = uncompressed_rle(union)
    compressed = mask_utils.frPyObjects(rle, size, size)
    return PlacedObject(category["id"], rle, int(mask_utils.area(compressed)),
                        [float(v) for v in mask_utils.toBbox(compressed)], 1)


SHRINK_FLOOR = 1.05
"""An object that finds no room shrinks, but its side stays >= this factor times its bin's lower edge, so that
its rasterised area stays in its bin."""
PLACEMENT_CELL = 4
"""Cell size in pixels of the coarse occupancy grid that proposes free places for objects."""


def _coarse_occupancy(occupied: np.ndarray) -> np.ndarray:
    """``bool [size // cell, size // cell]``: a cell is taken when any of its pixels is."""
    cells = occupied.shape[0] // PLACEMENT_CELL
    return occupied[:cells * PLACEMENT_CELL, :cells * PLACEMENT_CELL].reshape(
        cells, PLACEMENT_CELL, cells, PLACEMENT_CELL).any(axis=(1, 3))


def _coarse_occupancy_of_box(occupied: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The coarse cells covering ``box = (x0, y0, x1, y1)``, recomputed from ``occupied``."""
    cell = PLACEMENT_CELL
    cells = occupied.shape[0] // cell
    x0, y0, x1, y1 = box
    column0, row0 = x0 // cell, y0 // cell
    column1, row1 = min(-(-x1 // cell), cells), min(-(-y1 // cell), cells)
    region = occupied[row0 * cell:row1 * cell, column0 * cell:column1 * cell]
    return region.reshape(row1 - row0, cell, column1 - column0, cell).any(axis=(1, 3))


def _free_offsets(coarse: np.ndarray, extent: tuple[float, float, float, float]) -> np.ndarray:
    """``float64 [M, 2]``: pixel positions ``(x, y)`` of the top-left corner of the coarse cells where a box
    ``extent = (left, top, right, bottom)`` (offsets from the centre, ``left, top <= 0``) placed with its
    centre anywhere in the cell overlaps no occupied pixel and stays inside the image.

    The coarse grid has cells of ``PLACEMENT_CELL`` px; a cell is taken when any of its pixels is. With the
    centre in cell ``(i, j)`` the box lies within cells ``i - kl .. i + kr`` (``kl = ceil(-left / cell)``,
    ``kr = ceil(right / cell)``) and likewise in rows, so a window sum of zero there means no overlap.
    """
    cell = PLACEMENT_CELL
    cells = coarse.shape[0]
    left, top, right, bottom = (int(math.ceil(abs(e) / cell)) for e in extent)
    window_w, window_h = left + right + 1, top + bottom + 1
    if window_w > cells or window_h > cells:
        return np.zeros((0, 2))
    summed = np.zeros((cells + 1, cells + 1), dtype=np.int32)
    summed[1:, 1:] = coarse.cumsum(0).cumsum(1)
    window = (summed[window_h:, window_w:] - summed[:-window_h, window_w:] - summed[window_h:, :-window_w]
              + summed[:-window_h, :-window_w])
    rows, columns = np.nonzero(window == 0)
    return np.stack([columns + left, rows + top], axis=1).astype(np.float64) * cell


def _place_objects(rng: np.random.Generator, pixels: np.ndarray, occupied: np.ndarray, count: int,
                   painted: list[PaintedShape] | None = None, mix: SizeMix = COCO_LIKE_MIX) -> list[PlacedObject]:
    """Place up to ``count`` objects with sizes from :func:`sample_sides` (the ``mix``'s bins) where no mask
    overlaps another; paint them into ``pixels`` (``uint8 [H, W, 3]``), mark them in ``occupied``
    (``bool [H, W]``) and append what was painted to ``painted`` when given."""
    size = pixels.shape[0]
    ranges = side_ranges(size, mix)
    sides, bins = sample_sides(rng, count, ranges, mix)
    lowest_side = np.array([ranges[n][0] for n in ranges])[bins]
    coarse = _coarse_occupancy(occupied)
    placed = []
    for index in np.argsort(-sides, kind="stable"):  # largest first
        category = CATEGORIES[rng.integers(len(CATEGORIES))]
        shape = category["name"]
        angle, stretch = rng.uniform(0, 2 * np.pi), float(np.exp(rng.uniform(np.log(0.75), np.log(4 / 3))))
        widest_side = (size / 2 - 2) / (TEMPLATE_RADIUS[shape] * math.sqrt(max(stretch, 1 / stretch)))
        side = min(float(sides[index]), widest_side)  # a shape must fit in the image whatever its angle
        found = None
        for _shrink in range(6):
            # the polygon's extent around its centre (plus a pixel of rasterisation slack)
            outline = np.array(_shape_polygon(shape, side, angle, stretch, np.zeros(2))).reshape(-1, 2)
            extent = (outline[:, 0].min() - 1, outline[:, 1].min() - 1, outline[:, 0].max() + 1, outline[:, 1].max() + 1)
            low = np.array([-extent[0], -extent[1]])
            high = np.array([size - extent[2], size - extent[3]])
            if np.all(high > low):
                # a free box from the coarse grid first, then a few blind tries (shapes can interlock)
                candidates = _free_offsets(coarse, extent)
                centres = []
                if len(candidates):
                    centres.append(candidates[rng.integers(len(candidates))] + rng.random(2) * PLACEMENT_CELL)
                centres += [low + rng.random(2) * (high - low) for _ in range(4)]
                for centre in centres:
                    centre = np.clip(centre, low, high)
                    polygon = _shape_polygon(shape, side, angle, stretch, centre)
                    box = _extent_box(polygon, size)
                    rle, mask = _rasterise(polygon, size, size)
                    if mask[box[1]:box[3], box[0]:box[2]].any() and _free(occupied, mask, box):
                        found = polygon, rle, mask, box, centre
                        break
            if found is not None:
                break
            side = max(side * 0.85, SHRINK_FLOOR * float(lowest_side[index]))
        if found is None:
            logger.debug("no room for a %s of side %.1f (drawn %.1f); dropped", shape, side, sides[index])
            continue
        polygon, rle, mask, box, centre = found
        x0, y0, x1, y1 = box
        occupied[y0:y1, x0:x1] |= mask[y0:y1, x0:x1].astype(bool)
        cell = PLACEMENT_CELL
        coarse[y0 // cell:-(-y1 // cell), x0 // cell:-(-x1 // cell)] = _coarse_occupancy_of_box(occupied, box)
        colours = _two_colours(rng)
        _paint_object(pixels, mask, box, shape, side, angle, stretch, centre, colours)
        if painted is not None:
            painted.append(PaintedShape(shape, side, angle, stretch, centre, colours))
        placed.append(PlacedObject(category["id"], [polygon], int(mask_utils.area(rle)),
                                   [float(v) for v in mask_utils.toBbox(rle)], 0))
    return placed


@dataclass(frozen=True)
class PaintedShape:
    """What :func:`_paint_object` was given for one instance, enough to paint it again at another resolution."""

    shape: str
    side: float
    angle: float
    stretch: float
    centre: np.ndarray
    colours: np.ndarray


def _render(seed: int, image_index: int, image_size: int, painted: list[PaintedShape] | None = None,
            mix: SizeMix = COCO_LIKE_MIX):
    """``(pixels uint8 [H, W, 3], annotations, background)``: the drawn image before JPEG, and its pixels before
    any object was painted (background and distractors). ``mix`` sets the objects' sizes and count."""
    rng = np.random.default_rng([seed, image_index])
    image = _paint_background(rng, image_size)
    _paint_distractors(rng, image)
    pixels = np.array(image)
    background = pixels.copy()
    occupied = np.zeros((image_size, image_size), dtype=bool)
    annotations = []
    if rng.random() < mix.crowd_probability:  # drawn whatever the mix, so that the draws after it stay in step
        crowd = _place_crowd(rng, pixels, occupied, painted)
        if crowd is not None:
            annotations.append(crowd)
    mean_extra = mix.mean_objects - 1
    count = 1 + rng.negative_binomial(mix.count_shape, mix.count_shape / (mix.count_shape + mean_extra))
    annotations += _place_objects(rng, pixels, occupied, min(int(count), mix.max_objects), painted, mix)
    return pixels, annotations, background


def _check_mix(mix: SizeMix) -> None:
    if not isinstance(mix, SizeMix):
        raise ValueError(f"mix={mix!r} must be a SizeMix, e.g. COCO_LIKE_MIX or TINY_MIX "
                         f"(the named ones: {', '.join(SIZE_MIXES)})")


def render_image(seed: int, image_index: int, image_size: int,
                 mix: SizeMix = COCO_LIKE_MIX) -> tuple[Image.Image, list[PlacedObject]]:
    """Draw image ``image_index`` of the run with ``seed``: the RGB image and its annotations (without ids),
    with the objects' sizes and count drawn from ``mix``.

    Everything comes from ``numpy.random.default_rng([seed, image_index])``.
    """
    _check_mix(mix)
    pixels, annotations, _ = _render(seed, image_index, image_size, mix=mix)
    return Image.fromarray(pixels, mode="RGB"), annotations


def render_image_twin(seed: int, image_index: int, image_size: int, scale: int,
                      mix: SizeMix = COCO_LIKE_MIX) -> np.ndarray:
    """``uint8 [s H, s W, 3]``: image ``image_index`` of the run with ``seed`` drawn again ``scale`` times larger.

    Every object (crowd members too) is painted again from the same parameters (shape, side times ``s``, angle,
    stretch, centre times ``s``, colours), rasterised and textured at the larger size, so a small object of the
    dataset has its true high-resolution twin at ``s`` times its box. The background and distractors, which
    carry no labels, are the drawn ones upscaled bicubically (they are smooth noise built at a quarter of the
    resolution, but their 1-3 px lines and blobs come out soft). Not JPEG-compressed. ``mix`` must be the one
    the image was drawn with.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale={scale!r} must be a positive integer")
    _check_mix(mix)
    painted: list[PaintedShape] = []
    _, _, background = _render(seed, image_index, image_size, painted, mix)
    size = image_size * scale
    twin = np.array(Image.fromarray(background).resize((size, size), Image.BICUBIC))
    for item in painted:
        polygon = _shape_polygon(item.shape, item.side * scale, item.angle, item.stretch, item.centre * scale)
        _, mask = _rasterise(polygon, size, size)  # at the full size, as the dataset rasterises (bit-exact at s = 1)
        _paint_object(twin, mask, _extent_box(polygon, size), item.shape, item.side * scale, item.angle, item.stretch, item.centre * scale,
                      item.colours)
    return twin


def image_file_name(image_id: int) -> str:
    """COCO's naming: the image id in 12 digits, ``000000000042.jpg``."""
    return f"{image_id:012d}.jpg"


def _write_one_image(task: tuple[int, int, int, str, SizeMix]) -> list[PlacedObject]:
    seed, image_index, image_size, folder, mix = task
    # the default mix is left to render_image's default, so that a stand-in with its three-argument form still fits
    extra = {} if mix == COCO_LIKE_MIX else {"mix": mix}
    image, annotations = render_image(seed, image_index, image_size, **extra)
    image.save(Path(folder) / image_file_name(image_index + 1), format="JPEG", quality=JPEG_QUALITY)
    return annotations


# ----------------------------------------------------------------------------------------------------------
# One object drawn twice: small, and its high-resolution twin
# ----------------------------------------------------------------------------------------------------------

@dataclass
class ObjectPair:
    """One object instance drawn at two resolutions.

    ``lr``: ``uint8 [P, P, 3]``, the object as the dataset draws its small objects (rasterised and textured at
    that size, JPEG quality :data:`JPEG_QUALITY`); ``hr``: ``uint8 [s P, s P, 3]``, the same instance (shape,
    angle, stretch, colours) rasterised at ``s`` times its side over the same background, lossless.
    ``box_lr`` / ``box_hr``: the tight boxes ``(x1, y1, x2, y2)`` of the object's masks, in pixels of each
    crop; ``side``: the object's side ``sqrt(area)`` at low resolution (the polygon's area, before rasterising).
    """

    lr: np.ndarray
    hr: np.ndarray
    box_lr: tuple[float, float, float, float]
    box_hr: tuple[float, float, float, float]
    category_id: int
    side: float


def _pair_background(rng: np.random.Generator, lr_size: int, scale: int) -> np.ndarray:
    """``uint8 [s P, s P, 3]``: a crop of background like the dataset's (smooth luminance and colour noise whose
    finest cells are about 6 px at low resolution, a translucent patch edge, lines, a distractor blob), drawn
    at high resolution."""
    size = lr_size * scale
    fine = max(lr_size // 6, 2)
    luminance = _smooth_noise(rng, lr_size, [1, 2, fine], falloff=0.5)
    colour = np.stack([_smooth_noise(rng, lr_size, [1, 2], falloff=0.5) for _ in range(3)], axis=-1)
    base = rng.uniform(60, 190, 3).astype(np.float32)
    pixels = base + rng.uniform(30, 70) * luminance[..., None] + rng.uniform(15, 40) * colour
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB").resize((size, size), Image.BICUBIC)
    if rng.random() < 0.5:  # the edge of a translucent patch
        layer = Image.new("L", (size, size), 0)
        cx, cy = rng.uniform(0, size, 2)
        r = rng.uniform(0.5, 2.0) * size
        ImageDraw.Draw(layer).ellipse([cx - r, cy - r, cx + r, cy + r], fill=int(rng.integers(40, 110)))
        image.paste(_random_colour(rng), box=(0, 0, size, size), mask=layer)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(0, 3)):  # lines 1-3 px wide at low resolution
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        draw.line([x0, y0, x1, y1], fill=_random_colour(rng), width=int(rng.integers(1, 4)) * scale)
    if rng.random() < 0.5:  # a distractor blob, 3-20 px across at low resolution
        extent, (cx, cy) = rng.uniform(3, 20) * scale, rng.uniform(0, size, 2)
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(5, 10)))
        radii = extent / 2 * rng.uniform(0.3, 1.0, len(angles))
        draw.polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii)], fill=_random_colour(rng))
    return np.array(image)


def _jpeg_round_trip(pixels: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def render_object_pair(seed: int, index: int, lr_size: int = 32, scale: int = 2, margin: float = 0.25,
                       min_side: float = 6.0) -> ObjectPair:
    """Pair ``index`` of the run with ``seed``: an object of the embedded dataset's kind, drawn small and ``scale``
    times larger, centred in a ``lr_size``-pixel crop with at least ``margin`` of its extent as context on each side.

    The object's side (``sqrt`` of its polygon area) is log-uniform between ``min_side`` and the largest side
    whose extent at any angle, times ``1 + 2 margin``, fits in the crop. Low resolution: background = the
    high-resolution background downscaled (:func:`sodlib.data.resample.downscale_antialiased`), object rasterised and textured at
    its small size exactly as in the dataset's images (hard, aliased outline; texture sampled at pixel
    centres), then JPEG at quality :data:`JPEG_QUALITY`, as the dataset's images are stored. High resolution:
    the same polygon times ``scale`` (low-resolution pixel ``(i, j)`` covers high-resolution pixels
    ``[s i, s i + s) x [s j, s j + s)``), rasterised and textured at that size, not compressed.
    Everything is drawn from ``numpy.random.default_rng([seed, index])`` in an order that does not depend on
    ``scale``, so pairs ``x2`` and ``x4`` of the same index show the same instance.
    """
    _check_seed(seed)
    if scale < 1 or lr_size < 8 or margin < 0:
        raise ValueError(f"scale={scale}, lr_size={lr_size}, margin={margin}: need scale >= 1, lr_size >= 8, margin >= 0")
    rng = np.random.default_rng([seed, index])
    category = CATEGORIES[rng.integers(len(CATEGORIES))]
    shape = category["name"]
    angle, stretch = rng.uniform(0, 2 * np.pi), float(np.exp(rng.uniform(np.log(0.75), np.log(4 / 3))))
    radius_per_side = TEMPLATE_RADIUS[shape] * math.sqrt(max(stretch, 1 / stretch))
    largest = lr_size / (2 * radius_per_side * (1 + 2 * margin))
    if largest < min_side:
        raise ValueError(f"lr_size={lr_size} with margin={margin} holds no object of side >= min_side={min_side}; "
                         "fix: a larger lr_size or a smaller margin")
    side = float(np.exp(rng.uniform(math.log(min_side), math.log(largest))))
    centre = np.full(2, lr_size / 2) + rng.uniform(-0.5, 0.5, 2)
    colours = _two_colours(rng)
    background = _pair_background(rng, lr_size, scale)

    crops, boxes = [], []
    for factor, pixels in ((1, downscale_antialiased(background, scale)), (scale, background.copy())):
        size = lr_size * factor
        polygon = _shape_polygon(shape, side * factor, angle, stretch, centre * factor)
        rle, mask = _rasterise(polygon, size, size)
        box = _extent_box(polygon, size)
        _paint_object(pixels, mask, box, shape, side * factor, angle, stretch, centre * factor, colours)
        tight = mask_box(mask.astype(bool))
        if tight is None:
            raise RuntimeError(f"pair {index} of seed {seed}: the object has no pixel at x{factor}")
        crops.append(pixels)
        boxes.append(tuple(float(v) for v in tight))
    return ObjectPair(_jpeg_round_trip(crops[0]), crops[1], boxes[0], boxes[1], int(category["id"]), side)


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------

def _check_split_name(split: str) -> None:
    if not split or split != split.strip() or any(c in split for c in "/\\") or split.startswith("."):
        raise ValueError(f"split={split!r} is not a usable folder name; use a plain name such as 'train' or 'val'")


def _check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an integer >= 0 (it seeds numpy.random.default_rng)")


def _dump_json(document: dict) -> str:
    return json.dumps(document, separators=(",", ":"))


@sigterm_unwinds()
def generate_synthetic_coco(out_dir: str | os.PathLike, num_images: int, seed: int, *, split: str = "train",
                            image_size: int = 512, workers: int | None = None, progress: bool = True,
                            overwrite: bool = False, mix: SizeMix = COCO_LIKE_MIX) -> Path:
    """Write a synthetic COCO instances dataset (JPEG images + json with polygon masks); return the json path.

    Parameters:
        out_dir: the dataset root; gets ``<split>/<12-digit image id>.jpg`` and
            ``annotations/instances_<split>.json``. Created if missing.
        num_images: number of images (>= 1); image ids are ``1..num_images``.
        seed: the run's seed; image ``i`` uses ``numpy.random.default_rng([seed, i])``, so the same seed gives
            the same bytes (json and every image) whatever ``workers`` is.
        split: the split's name (folder and json suffix).
        image_size: side of the square images in pixels (>= 64; the COCO-like size mix needs >= 192 for
            large objects, see the module docstring).
        workers: processes drawing images (a ``multiprocessing`` pool); ``None`` means
            ``min(2, os.cpu_count())``; 1 draws in this process.
        progress: show a tqdm progress bar.
        overwrite: replace an existing ``<split>`` folder and json instead of refusing.
        mix: the objects' sizes and count per image (:class:`SizeMix`): :data:`COCO_LIKE_MIX` (COCO's bins), or
            :data:`TINY_MIX` (traffic-sign-like, meant for 640 px images); any other mix is named in the json's
            ``info.description``.

    Nothing is half-written: images and json go to a temporary folder inside ``out_dir`` that is removed on
    failure, Ctrl-C or SIGTERM (:func:`sodlib.data.files.sigterm_unwinds`, active during the call); at the end
    the image folder and then the json are renamed into place (the json, written last, marks a complete
    dataset).

    Raises ``ValueError`` (naming the argument and the fix) for ``num_images < 1``, ``image_size < 64``,
    ``workers < 1``, a bad split name, a ``mix`` that is not a :class:`SizeMix`, or an existing split when
    ``overwrite`` is false.
    """
    if not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"num_images={num_images!r} must be an integer >= 1; pass the number of images to draw")
    if not isinstance(image_size, (int, np.integer)) or image_size < 64:
        raise ValueError(f"image_size={image_size!r} must be an integer >= 64; objects from 4 px to a large "
                         "fraction of the image need room (the embedded dataset uses 512)")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise ValueError(f"workers={workers!r} must be None (automatic) or an integer >= 1")
    _check_seed(seed)
    _check_split_name(split)
    _check_mix(mix)
    out_dir = Path(out_dir)
    image_folder = out_dir / split
    json_path = out_dir / "annotations" / f"instances_{split}.json"
    if not overwrite and (image_folder.exists() or json_path.exists()):
        existing = image_folder if image_folder.exists() else json_path
        raise ValueError(f"split={split!r}: {existing} already exists; pass overwrite=True to replace it, "
                         "or choose another out_dir or split")
    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    workers = min(workers, num_images)
    num_images, image_size, seed = int(num_images), int(image_size), int(seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".synth-{split}-", dir=out_dir))
    try:
        temporary_images = temporary / split
        temporary_images.mkdir()
        tasks = [(seed, index, image_size, str(temporary_images), mix) for index in range(num_images)]
        logger.info("drawing %d synthetic images of %d px (seed %d) into %s with %d worker(s)",
                    num_images, image_size, seed, image_folder, workers)
        bar = tqdm(total=num_images, desc=f"synthetic {split}", unit="img", disable=not progress)
        per_image: list[list[PlacedObject]] = []
        with bar, (multiprocessing.get_context().Pool(workers) if workers > 1 else contextlib.nullcontext()) as pool:
            results = pool.imap(_write_one_image, tasks, chunksize=4) if pool is not None else map(_write_one_image, tasks)
            for annotations in results:
                per_image.append(annotations)
                bar.update(1)

        images, annotations, next_id = [], [], 1
        for index, placed in enumerate(per_image):
            image_id = index + 1
            images.append({"id": image_id, "file_name": image_file_name(image_id), "width": image_size,
                           "height": image_size, "license": 1})
            for item in placed:
                annotations.append({"id": next_id, "image_id": image_id, "category_id": item.category_id,
                                    "segmentation": item.segmentation, "area": item.area, "bbox": item.bbox,
                                    "iscrowd": item.iscrowd})
                next_id += 1
        description = f"{INFO['description']}, split {split}, seed {seed}"
        if mix != COCO_LIKE_MIX:  # the COCO-like files stay as they were before mixes had names
            description += f", size mix {mix.name}"
        document = {"info": {**INFO, "description": description},
                    "licenses": LICENSES, "images": images, "annotations": annotations, "categories": CATEGORIES}
        (temporary / "instances.json").write_text(_dump_json(document))

        if overwrite:
            if image_folder.exists():
                shutil.rmtree(image_folder)
            json_path.unlink(missing_ok=True)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary_images, image_folder)
        os.replace(temporary / "instances.json", json_path)
        logger.info("wrote %s (%d images, %d annotations)", json_path, len(images), len(annotations))
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return json_path


# ----------------------------------------------------------------------------------------------------------
# Annotation-only mode: a COCO-train-scale json for benchmarks
# ----------------------------------------------------------------------------------------------------------

COCO_LIKE_IMAGE_SIZES: list[tuple[int, int, float]] = [
    (640, 480, 0.50), (640, 427, 0.14), (480, 640, 0.10), (640, 424, 0.06), (427, 640, 0.04),
    (640, 426, 0.03), (640, 428, 0.03), (640, 360, 0.03), (500, 375, 0.02), (612, 612, 0.02),
    (640, 640, 0.02), (424, 640, 0.01),
]
"""``(width, height, share)`` of the image sizes drawn by the annotation-only mode, close to COCO train2017's
most frequent sizes (640 x 480 alone is about half of COCO)."""
ANNOTATION_ONLY_EMPTY_IMAGE_SHARE = 0.0086
"""Share of images without objects (COCO train2017: 1,021 of 118,287)."""
ANNOTATION_ONLY_CROWD_SHARE = 0.01
ANNOTATION_ONLY_MAIN_OBJECT_BINS = np.array([0.03, 0.30, 0.67])
"""Small / medium / large probabilities of each image's first object, its main subject (most COCO photos are
of something large, with the small objects around it)."""
ANNOTATION_ONLY_SMALL_PROPENSITY_SHAPE = 0.12
"""Shape ``a`` of the per-image Beta distribution of the chance that another object is small: a small ``a``
piles most images near 0 and a few near 1, so small objects crowd into some images, as in COCO (where only
51.8 % of the images hold a small object although 41 % of the objects are small)."""
ANNOTATION_ONLY_MEDIUM_LARGE_CONCENTRATION = 10.0
"""Dirichlet concentration of the per-image split of the non-small objects between medium and large."""


def annotation_only_bins(rng: np.random.Generator, object_image: np.ndarray, num_images: int) -> np.ndarray:
    """Size bin (0 small, 1 medium, 2 large) of each object, drawn per image so that bins cluster as in COCO.

    ``object_image`` (``int64 [N]``, sorted) is each object's image index. An image's first object draws from
    :data:`ANNOTATION_ONLY_MAIN_OBJECT_BINS`; every other object of image ``i`` is small with probability
    ``q_i ~ Beta(a, a (1 - m) / m)`` (mean ``m``) and otherwise medium or large with the image's Dirichlet
    split. ``m`` and the split's mean are solved so that the expected shares over all objects are COCO's
    :data:`SIZE_BIN_PROBABILITIES`. With COCO's object counts this gives about 52 / 65 / 79 % of the images
    holding a small / medium / large object (COCO train2017: 51.8 / 70.1 / 82.3 %, Kisantal Table 2).
    """
    coco = np.array([SIZE_BIN_PROBABILITIES[name] for name in ("small", "medium", "large")])
    count = len(object_image)
    first = np.ones(count, dtype=bool)
    first[1:] = object_image[1:] != object_image[:-1]
    others = count - int(first.sum())
    if others == 0:
        rest = coco
    else:
        rest = np.clip((coco * count - ANNOTATION_ONLY_MAIN_OBJECT_BINS * first.sum()) / others, 1e-3, None)
        rest = rest / rest.sum()
    a = ANNOTATION_ONLY_SMALL_PROPENSITY_SHAPE
    small = rng.beta(a, a * (1 - rest[0]) / rest[0], size=num_images)
    medium_large = rng.dirichlet(ANNOTATION_ONLY_MEDIUM_LARGE_CONCENTRATION * rest[1:] / rest[1:].sum(), size=num_images)
    per_image = np.column_stack([small, (1 - small) * medium_large[:, 0], (1 - small) * medium_large[:, 1]])
    probabilities = np.where(first[:, None], ANNOTATION_ONLY_MAIN_OBJECT_BINS[None, :], per_image[object_image])
    draws = rng.random(count)
    return np.minimum((draws[:, None] > np.cumsum(probabilities, axis=1)).sum(axis=1), 2)


def _rle_counts_of_rectangle(x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray, height: np.ndarray,
                             width: np.ndarray) -> list[str]:
    """Uncompressed column-major RLE counts (as json text) of whole-pixel rectangles, one per row."""
    texts = []
    for xi, yi, wi, hi, H, W in zip(x.tolist(), y.tolist(), w.tolist(), h.tolist(), height.tolist(), width.tolist()):
        before = xi * H + yi
        after = H * W - before - (wi - 1) * H - hi
        middle = f",{hi},{H - hi}" * (wi - 1)
        texts.append(f"[{before}{middle},{hi},{after}]")
    return texts


def notched_rectangle_polygons(x0: np.ndarray, y0: np.ndarray, w: np.ndarray, h: np.ndarray, notch_x: np.ndarray,
                               notch_y: np.ndarray) -> np.ndarray:
    """``int64 [N, 24]`` flat 12-vertex polygons: the rectangle ``[x0, x0 + w] x [y0, y0 + h]`` with a
    ``notch_x`` x ``notch_y`` square cut from each corner (``2 * notch < side``; no notch when either is 0).

    On whole-pixel coordinates every edge is axis-aligned, and pycocotools rasterises such a polygon to
    exactly the pixels inside it: ``area = w * h - 4 * notch_x * notch_y`` and ``toBbox = [x0, y0, w, h]``.
    """
    x1, y1 = x0 + w, y0 + h
    a, b = notch_x, notch_y
    return np.stack([x0 + a, y0, x1 - a, y0, x1 - a, y0 + b, x1, y0 + b, x1, y1 - b, x1 - a, y1 - b, x1 - a, y1,
                     x0 + a, y1, x0 + a, y1 - b, x0, y1 - b, x0, y0 + b, x0 + a, y0 + b], axis=1).astype(np.int64)


def generate_annotation_only_coco(path: str | os.PathLike, num_images: int = 118_287, num_objects: int = 860_001,
                                  seed: int = 0, progress: bool = True) -> Path:
    """Write a COCO-train-scale instances json with no image files (for benchmarks); return its path.

    Parameters:
        path: the json file to write (atomically: a temporary file beside it, then a rename).
        num_images: exactly this many images, ids ``1..num_images``; sizes drawn from
            :data:`COCO_LIKE_IMAGE_SIZES` (``file_name`` names files that do not exist).
        num_objects: exactly this many annotations, ids ``1..num_objects``.
        seed: seed of the ``numpy.random.Generator`` that draws everything.
        progress: show a tqdm progress bar over the steps.

    Objects per image: a share :data:`ANNOTATION_ONLY_EMPTY_IMAGE_SHARE` of the images is empty; every other
    image gets one object plus a Dirichlet-multinomial share of the rest (``multinomial(rest, g / sum g)``,
    ``g ~ Gamma(1.2)``: a negative-binomial-like spread with a long tail, as COCO's counts), which sums to
    ``num_objects`` exactly. Sizes: each object's bin from :func:`annotation_only_bins` (COCO's shares overall,
    clustered per image as COCO's are), then its side log-uniformly in the bin's range of the image's shorter
    edge (``side_ranges(min(w, h))``); aspect ratio ``h / w`` log-uniform in ``[1/3, 3]``.

    Outlines: to stay under 30 s for 860k objects without rasterising each, non-crowd objects are
    :func:`notched_rectangle_polygons` on whole pixels (notch ``f * w`` by ``f * h``, ``f ~ U(0, 0.3)``), whose
    pycocotools mask area and box are known exactly (``area = w * h - 4 * notch_x * notch_y``,
    ``bbox = [x0, y0, w, h]``, as :func:`generate_synthetic_coco` defines them); ``w`` and ``h`` are
    ``side * sqrt(1 / aspect) / sqrt(1 - 4 f^2)`` and ``side * sqrt(aspect) / sqrt(1 - 4 f^2)`` rounded, so the
    area is about ``side^2``. Objects lie inside their image and may overlap (this file is for counting and
    matching statistics, not for drawing). A share :data:`ANNOTATION_ONLY_CROWD_SHARE` (1 %) are crowds: the
    rectangle as an uncompressed RLE, ``iscrowd=1``. Categories are our six :data:`CATEGORIES`, uniformly.
    """
    if not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"num_images={num_images!r} must be an integer >= 1")
    if not isinstance(num_objects, (int, np.integer)) or num_objects < 0:
        raise ValueError(f"num_objects={num_objects!r} must be an integer >= 0")
    _check_seed(seed)
    path = Path(path)
    rng = np.random.default_rng(seed)
    bar = tqdm(total=4, desc="annotation-only json", disable=not progress)

    size_table = np.array([(w, h) for w, h, _ in COCO_LIKE_IMAGE_SIZES])
    shares = np.array([s for _, _, s in COCO_LIKE_IMAGE_SIZES])
    size_index = rng.choice(len(size_table), size=num_images, p=shares / shares.sum())
    image_widths, image_heights = size_table[size_index, 0], size_table[size_index, 1]

    empty = rng.random(num_images) < ANNOTATION_ONLY_EMPTY_IMAGE_SHARE
    if (~empty).sum() > num_objects:  # fewer objects than images: each gets at most one
        empty = np.ones(num_images, dtype=bool)
        empty[rng.choice(num_images, size=num_objects, replace=False)] = False
    base = (~empty).astype(np.int64)
    weights = rng.gamma(1.2, size=num_images) * ~empty
    rest = num_objects - int(base.sum())
    counts = base + (rng.multinomial(rest, weights / weights.sum()) if rest > 0 else 0)
    object_image = np.repeat(np.arange(num_images), counts)  # image index of every object
    n = num_objects

    width = image_widths[object_image]
    height = image_heights[object_image]
    shorter = np.minimum(width, height)
    bins = annotation_only_bins(rng, object_image, num_images)
    largest = LARGEST_SIDE_FRACTION * shorter  # every COCO-like size has room for all three bins
    low = np.log(np.select([bins == 0, bins == 1], [SMALLEST_SIDE, 32.0], 96.0))
    high = np.log(np.select([bins == 0, bins == 1], [32.0, 96.0], largest))
    sides = np.exp(low + (high - low) * rng.random(n))
    aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3), n))  # height / width
    notch = rng.uniform(0, 0.3, n)
    crowd = rng.random(n) < ANNOTATION_ONLY_CROWD_SHARE
    notch[crowd] = 0.0
    grow = 1 / np.sqrt(1 - 4 * notch**2)
    box_w = np.clip(np.round(sides / np.sqrt(aspect) * grow), 1, width).astype(np.int64)
    box_h = np.clip(np.round(sides * np.sqrt(aspect) * grow), 1, height).astype(np.int64)
    notch_x = np.floor(notch * box_w).astype(np.int64)
    notch_y = np.floor(notch * box_h).astype(np.int64)
    no_notch = (notch_x == 0) | (notch_y == 0)
    notch_x[no_notch] = 0
    notch_y[no_notch] = 0
    x0 = np.floor(rng.random(n) * (width - box_w + 1)).astype(np.int64)
    y0 = np.floor(rng.random(n) * (height - box_h + 1)).astype(np.int64)
    areas = box_w * box_h - 4 * notch_x * notch_y
    category_ids = rng.integers(1, len(CATEGORIES) + 1, n)
    bar.update(1)

    polygon_rows = np.flatnonzero(~crowd)
    columns = np.concatenate([
        np.stack([polygon_rows + 1, object_image[polygon_rows] + 1, category_ids[polygon_rows]], axis=1),
        notched_rectangle_polygons(x0[polygon_rows], y0[polygon_rows], box_w[polygon_rows], box_h[polygon_rows],
                                   notch_x[polygon_rows], notch_y[polygon_rows]),
        np.stack([areas[polygon_rows], x0[polygon_rows], y0[polygon_rows], box_w[polygon_rows], box_h[polygon_rows]],
                 axis=1),
    ], axis=1)
    polygon_format = ('{"id":%d,"image_id":%d,"category_id":%d,"segmentation":[[' + ",".join(["%d"] * 24)
                      + ']],"area":%d,"bbox":[%d.0,%d.0,%d.0,%d.0],"iscrowd":0}')
    annotation_texts: list[str] = [""] * n
    for row, values in zip(polygon_rows.tolist(), columns.tolist()):
        annotation_texts[row] = polygon_format % tuple(values)
    bar.update(1)

    crowd_rows = np.flatnonzero(crowd)
    counts_texts = _rle_counts_of_rectangle(x0[crowd_rows], y0[crowd_rows], box_w[crowd_rows], box_h[crowd_rows],
                                            height[crowd_rows], width[crowd_rows])
    for row, text, values in zip(crowd_rows.tolist(), counts_texts, np.stack(
            [object_image[crowd_rows] + 1, category_ids[crowd_rows], height[crowd_rows], width[crowd_rows],
             areas[crowd_rows], x0[crowd_rows], y0[crowd_rows], box_w[crowd_rows], box_h[crowd_rows]], axis=1).tolist()):
        image_id, category_id, h_value, w_value, area, bx, by, bw, bh = values
        annotation_texts[row] = (f'{{"id":{row + 1},"image_id":{image_id},"category_id":{category_id},'
                                 f'"segmentation":{{"counts":{text},"size":[{h_value},{w_value}]}},"area":{area},'
                                 f'"bbox":[{bx}.0,{by}.0,{bw}.0,{bh}.0],"iscrowd":1}}')
    bar.update(1)

    image_texts = [
        f'{{"id":{i + 1},"file_name":"{image_file_name(i + 1)}","width":{w},"height":{h},"license":1}}'
        for i, (w, h) in enumerate(zip(image_widths.tolist(), image_heights.tolist()))
    ]
    head = {"info": {**INFO, "description": "sodlib annotation-only COCO-scale benchmark file (no images)"},
            "licenses": LICENSES}
    text = (_dump_json(head)[:-1] + ',"images":[' + ",".join(image_texts) + '],"annotations":['
            + ",".join(annotation_texts) + '],"categories":' + _dump_json(CATEGORIES) + "}")
    write_text_atomically(text, path)
    bar.update(1)
    bar.close()
    logger.info("wrote %s (%d images, %d annotations, no image files)", path, num_images, num_objects)
    return path


# ----------------------------------------------------------------------------------------------------------
# The embedded dataset
# ----------------------------------------------------------------------------------------------------------

EMBEDDED_DATASETS = ("embedded", "embedded_tiny", "embedded_large")
"""The embedded datasets, by the name of their folder under ``data_dir()`` (and of their run-config source,
``"embedded:train"``, ``"embedded_tiny:val"``)."""


def _embedded_spec(dataset: str) -> tuple[dict[str, dict], int, SizeMix]:
    """``(splits, image_size, mix)`` of an embedded dataset, read from the module at call time."""
    if dataset == "embedded":
        return EMBEDDED_SPLITS, EMBEDDED_IMAGE_SIZE, COCO_LIKE_MIX
    if dataset == "embedded_tiny":
        return EMBEDDED_TINY_SPLITS, EMBEDDED_TINY_IMAGE_SIZE, TINY_MIX
    if dataset == "embedded_large":
        return EMBEDDED_LARGE_SPLITS, EMBEDDED_LARGE_IMAGE_SIZE, LARGE_MIX
    raise ValueError(f"dataset={dataset!r} is not an embedded dataset; use one of {', '.join(EMBEDDED_DATASETS)}")


def _stamp(split: str, dataset: str = "embedded") -> dict:
    """What a split's stamp file records: the generator version and the parameters it was drawn with (json values).

    The COCO-like set's stamp holds no mix (it is the one it had before mixes existed, so existing folders are
    reused); any other set's holds its mix in full, so that a changed mix regenerates it."""
    splits, image_size, mix = _embedded_spec(dataset)
    stamp = {"generator_version": GENERATOR_VERSION, "split": split, "image_size": image_size, **splits[split]}
    if dataset != "embedded":
        stamp["size_mix"] = mix.describe()
    return json.loads(json.dumps(stamp))


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """An exclusive lock on ``folder/.lock`` (POSIX ``flock``; no lock where that is missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _embedded_paths(dataset: str, split: str, root: str | os.PathLike | None) -> tuple[Path, Path]:
    splits, _, _ = _embedded_spec(dataset)
    if split not in splits:
        raise ValueError(f"split={split!r} is not a split of {dataset}; use one of {', '.join(splits)}")
    root = Path(root) if root is not None else data_dir() / dataset
    return root / "annotations" / f"instances_{split}.json", root / split


def embedded_paths(split: str = "train", root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` where the embedded dataset's ``split`` lives under ``root`` (default
    ``data_dir() / "embedded"``), without generating it: for the commands that must not write over it."""
    return _embedded_paths("embedded", split, root)


def embedded_tiny_paths(split: str = "train", root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` where the embedded tiny-object dataset's ``split`` lives under ``root``
    (default ``data_dir() / "embedded_tiny"``), without generating it."""
    return _embedded_paths("embedded_tiny", split, root)


def embedded_large_paths(split: str = "train", root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` where the embedded large-image dataset's ``split`` lives under ``root``
    (default ``data_dir() / "embedded_large"``), without generating it."""
    return _embedded_paths("embedded_large", split, root)


def embedded_files(dataset: str, split: str, generate: bool = True) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` of split ``split`` of the embedded ``dataset`` (one of
    :data:`EMBEDDED_DATASETS`), generated first when ``generate`` is true (else only located)."""
    if dataset not in EMBEDDED_DATASETS:
        raise ValueError(f"dataset={dataset!r} is not an embedded dataset; use one of {', '.join(EMBEDDED_DATASETS)}")
    return _embedded(dataset, split, None) if generate else _embedded_paths(dataset, split, None)


def _embedded(dataset: str, split: str, root: str | os.PathLike | None) -> tuple[Path, Path]:
    """The split of an embedded dataset, generated when its stamp is missing or differs (see
    :func:`embedded_dataset`)."""
    json_path, image_folder = _embedded_paths(dataset, split, root)
    splits, image_size, mix = _embedded_spec(dataset)
    root = image_folder.parent
    stamp_path = root / f"stamp_{split}.json"
    wanted = _stamp(split, dataset)
    with _folder_lock(root):
        current = None
        if stamp_path.is_file():
            with contextlib.suppress(ValueError, OSError):
                current = json.loads(stamp_path.read_text())
        if current != wanted or not json_path.is_file() or not image_folder.is_dir():
            logger.info("generating the %s split of %s in %s (stamp %s)", split, dataset, root, wanted)
            stamp_path.unlink(missing_ok=True)
            generate_synthetic_coco(root, split=split, image_size=image_size, overwrite=True, mix=mix, **splits[split])
            stamp_path.write_text(json.dumps(wanted, indent=1) + "\n")
        else:
            logger.debug("reusing the %s split of %s in %s", split, dataset, root)
    return json_path, image_folder


def embedded_dataset(split: str = "train", root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` of the embedded dataset's ``split``, generated on first use.

    The dataset lives under ``root`` (default ``data_dir() / "embedded"``) as
    ``annotations/instances_<split>.json`` and ``<split>/``, drawn by :func:`generate_synthetic_coco` with the
    parameters in :data:`EMBEDDED_SPLITS` at :data:`EMBEDDED_IMAGE_SIZE` px and :data:`COCO_LIKE_MIX`. A stamp
    file ``stamp_<split>.json`` records :data:`GENERATOR_VERSION` and those parameters; when it is missing or
    differs (the generator changed), the split is generated again. A file lock makes concurrent callers
    (e.g. pytest-xdist workers) wait for one generation instead of racing.
    """
    return _embedded("embedded", split, root)


def embedded_tiny_dataset(split: str = "train", root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` of the embedded tiny-object dataset's ``split``, generated on first use.

    As :func:`embedded_dataset`, under ``root`` (default ``data_dir() / "embedded_tiny"``), with the parameters in
    :data:`EMBEDDED_TINY_SPLITS`, :data:`EMBEDDED_TINY_IMAGE_SIZE` (640) px images and :data:`TINY_MIX` (nine
    objects in ten under 0.2 % of the image area, as in Tsinghua-Tencent 100K); its stamp also records the mix,
    so that a changed mix regenerates it.
    """
    return _embedded("embedded_tiny", split, root)


def embedded_large_dataset(split: str = "train", root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` of the embedded large-image dataset's ``split``, generated on first use.

    As :func:`embedded_dataset`, under ``root`` (default ``data_dir() / "embedded_large"``), with the parameters in
    :data:`EMBEDDED_LARGE_SPLITS` (120 train and 30 val images), :data:`EMBEDDED_LARGE_IMAGE_SIZE` (1600) px images
    and :data:`LARGE_MIX` (4-32 px objects, about 40 per image: the aerial-like case that sliced inference is for).
    """
    return _embedded("embedded_large", split, root)


def embedded_twin(split: str, image_id: int, scale: int, dataset: str = "embedded") -> np.ndarray:
    """``uint8 [s S, s S, 3]``: image ``image_id`` of the split of an embedded ``dataset`` (``"embedded"``, 512 px,
    or ``"embedded_tiny"``, 640 px) drawn ``scale`` times larger (:func:`render_image_twin` with the split's seed
    and the dataset's mix; image ids are ``index + 1``)."""
    _check_split_name(split)
    splits, image_size, mix = _embedded_spec(dataset)
    if split not in splits:
        raise ValueError(f"split={split!r}: the splits of {dataset} are {', '.join(splits)}")
    spec = splits[split]
    if not 1 <= int(image_id) <= spec["num_images"]:
        raise ValueError(f"image_id={image_id} is not an image of the {split} split of {dataset} "
                         f"(1..{spec['num_images']})")
    return render_image_twin(spec["seed"], int(image_id) - 1, image_size, scale, mix)
