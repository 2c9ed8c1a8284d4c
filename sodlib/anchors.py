"""Anchors: generation, IoU, matching, and the closed-form geometry that sizes them.

Conventions (the same everywhere in sodlib):

- boxes are ``(x1, y1, x2, y2)`` float pixels;
- an anchor's *size* is ``sqrt(area)`` and its *aspect ratio* is ``height / width`` (as torchvision and
  detectron2; d2l uses width / height), so an anchor of size ``s`` and ratio ``r`` is
  ``w = s / sqrt(r)`` wide and ``h = s * sqrt(r)`` high;
- anchor centres sit at ``(i + offset) * stride`` for grid index ``i``, with an explicit ``offset`` of 0
  (torchvision's ``AnchorGenerator``) or 0.5 (the centre of the stride cell);
- base anchors are **not rounded** (torchvision rounds them to integers: size 8 at ratio 0.5 becomes
  12 x 6 instead of 11.31 x 5.66, 12.5 % more area).

The order of anchors follows torchvision: level by level, then grid row ``y``, grid column ``x``, and the
base anchors of a location (ratio-major, then size), so index ``((y * W + x) * A + k)`` inside a level.

Geometry used to size anchors (Krishna and Jawahar, 2017, section III-A, eq. 1). A square object of side ``s`` and a square
anchor of side ``a`` whose centres are ``d`` apart on each axis overlap on each axis by

    o = clip((s + a) / 2 - d, 0, min(s, a))

and their IoU is ``o^2 / (s^2 + a^2 - o^2)``. The worst placement on a grid of stride ``S`` is
``d = S / 2`` on both axes. Krishna and Jawahar's eq. (1), ``(s - d)^2 / (s^2 + a^2 - (s - d)^2)``, is the case
``a = s`` of the partial-overlap regime.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "AnchorMatch",
    "AnchorSet",
    "DerivedAnchors",
    "FPN_ANCHORS",
    "anchor_size_bounds",
    "base_anchors",
    "box_iou",
    "derive_anchor_sizes",
    "generate_anchors",
    "generate_multilevel_anchors",
    "largest_matching_offset",
    "match_anchors",
    "TIE_RTOL",
    "TIE_RULES",
    "min_matchable_size",
    "worst_case_iou",
    "worst_case_iou_rect",
]

TieRule = Literal["all", "one", "exact"]
TIE_RULES = ("all", "one", "exact")
TIE_RTOL = 1e-5
"""Relative tolerance of a tie at an object's best IoU ``b``: anchor ``a`` ties if ``IoU(g, a) >= b (1 - TIE_RTOL)``.
Anchors of one shape are the same box shifted, but their IoUs are computed from shifted float coordinates, so
anchors that are geometrically tied differ in the last bits (about 1e-16 relative in float64; up to 2e-6 in
float32 for a 16 px object on a 1333 px image); exact equality then counts rounding noise. ``1e-5`` is above
both and far below any real difference of two anchors' IoUs with one object (a shift of 1/100 px moves the IoU
of a 16 px object by about 1e-3)."""


# ----------------------------------------------------------------------------------------------------------
# generation
# ----------------------------------------------------------------------------------------------------------
def _check_positive_sequence(name: str, values: Sequence[float]) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in values)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}; pass e.g. {name}=(32.0,)") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError(f"{name}={values!r} must be a non-empty sequence of positive numbers")
    return values


def _check_offset(offset: float) -> float:
    offset = float(offset)
    if not 0.0 <= offset < 1.0:
        raise ValueError(f"offset={offset} is the centre offset as a fraction of the stride; use 0.0 (torchvision) or 0.5 (cell centre)")
    return offset


def base_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
    """``float64 [A, 4]`` anchors centred at the origin, ``A = len(aspect_ratios) * len(sizes)``.

    For ratio ``r = h / w`` and size ``s = sqrt(w * h)``: ``w = s / sqrt(r)``, ``h = s * sqrt(r)``, and the
    anchor is ``(-w/2, -h/2, w/2, h/2)``, unrounded. Order: ratio-major, then size (as torchvision).
    """
    sizes = _check_positive_sequence("sizes", sizes)
    aspect_ratios = _check_positive_sequence("aspect_ratios", aspect_ratios)
    rows = []
    for ratio in aspect_ratios:
        h_ratio = math.sqrt(ratio)
        w_ratio = 1.0 / h_ratio
        for size in sizes:
            w, h = w_ratio * size, h_ratio * size
            rows.append((-w / 2.0, -h / 2.0, w / 2.0, h / 2.0))
    return np.asarray(rows, dtype=np.float64)


def generate_anchors(
    feature_size: tuple[int, int],
    stride: float | tuple[float, float],
    sizes: Sequence[float],
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    offset: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Anchors of one feature level: ``Tensor[H * W * A, 4]`` boxes ``(x1, y1, x2, y2)``.

    Args:
        feature_size: ``(H, W)`` of the feature map.
        stride: pixels between neighbouring centres, one number or ``(stride_y, stride_x)``.
        sizes: anchor sizes ``sqrt(w * h)`` in pixels.
        aspect_ratios: ``h / w`` of each anchor shape.
        offset: centre of cell ``(y, x)`` is ``((x + offset) * stride_x, (y + offset) * stride_y)``;
            computed as ``x * stride + offset * stride``.

    The anchor at row ``y``, column ``x``, base anchor ``k`` has index ``(y * W + x) * A + k`` and equals
    ``base_anchors(sizes, aspect_ratios)[k]`` shifted by the centre, without rounding.
    """
    if len(feature_size) != 2 or any(int(v) != v or v < 0 for v in feature_size):
        raise ValueError(f"feature_size={feature_size!r} must be (height, width) as non-negative integers")
    stride_y, stride_x = (stride, stride) if np.isscalar(stride) else stride
    _check_positive_sequence("stride", (stride_y, stride_x))
    offset = _check_offset(offset)
    height, width = int(feature_size[0]), int(feature_size[1])
    base = torch.as_tensor(base_anchors(sizes, aspect_ratios), dtype=torch.float64)
    shifts_x = torch.arange(width, dtype=torch.float64) * float(stride_x) + offset * float(stride_x)
    shifts_y = torch.arange(height, dtype=torch.float64) * float(stride_y) + offset * float(stride_y)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4).to(dtype)


def generate_multilevel_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    strides: Sequence[float],
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    offset: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> list[Tensor]:
    """Anchors of an FPN: one ``Tensor[H_l * W_l * A_l, 4]`` per level ``l``, as :func:`generate_anchors`.

    ``sizes[l]`` are the sizes of level ``l`` (Kisantal / FPN: one size per level, 32..512 on P2..P6).
    Concatenate the list for torchvision's single-image anchor order.
    """
    if not (len(feature_sizes) == len(strides) == len(sizes)):
        raise ValueError(f"feature_sizes, strides and sizes need one entry per level; got {len(feature_sizes)}, {len(strides)}, {len(sizes)}")
    return [generate_anchors(f, s, z, aspect_ratios, offset, dtype) for f, s, z in zip(feature_sizes, strides, sizes)]


@dataclass(frozen=True)
class AnchorSet:
    """A multi-level anchor configuration, independent of the image size.

    ``strides[l]`` and ``sizes[l]`` describe level ``l``; every level uses the same ``aspect_ratios``
    (``h / w``) and centre ``offset`` (fraction of the stride). The feature map of a ``height x width``
    image at stride ``S`` has ``ceil(P / S)`` cells per axis, ``P`` being the side padded up to a multiple of
    ``size_divisible`` (torchvision pads batches to 32; use 1 for anchors that cover only the image).
    """

    strides: tuple[float, ...] = (4.0, 8.0, 16.0, 32.0, 64.0)
    sizes: tuple[tuple[float, ...], ...] = ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    offset: float = 0.0
    size_divisible: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "strides", _check_positive_sequence("strides", self.strides))
        if len(self.sizes) != len(self.strides):
            raise ValueError(f"AnchorSet needs one tuple of sizes per stride; got {len(self.sizes)} for {len(self.strides)} strides")
        object.__setattr__(self, "sizes", tuple(_check_positive_sequence(f"sizes[{i}]", s) for i, s in enumerate(self.sizes)))
        object.__setattr__(self, "aspect_ratios", _check_positive_sequence("aspect_ratios", self.aspect_ratios))
        object.__setattr__(self, "offset", _check_offset(self.offset))
        if int(self.size_divisible) != self.size_divisible or self.size_divisible < 1:
            raise ValueError(f"size_divisible={self.size_divisible!r} must be a positive integer (32 as torchvision, 1 for no padding)")

    @classmethod
    def single_level(cls, stride: float, sizes: Sequence[float], aspect_ratios: Sequence[float] = (1.0,), offset: float = 0.0, size_divisible: int = 1) -> "AnchorSet":
        """One feature level (a plain Faster R-CNN RPN, or a derived set on one stride)."""
        return cls(strides=(float(stride),), sizes=(tuple(sizes),), aspect_ratios=tuple(aspect_ratios), offset=offset, size_divisible=size_divisible)

    @property
    def anchors_per_location(self) -> list[int]:
        return [len(self.aspect_ratios) * len(s) for s in self.sizes]

    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """``(H_l, W_l)`` per level for an image of ``height x width`` pixels."""
        d = int(self.size_divisible)
        padded_h, padded_w = -(-int(height) // d) * d, -(-int(width) // d) * d
        return [(math.ceil(padded_h / s), math.ceil(padded_w / s)) for s in self.strides]

    def anchors_for_image(self, height: int, width: int, dtype: torch.dtype = torch.float64) -> Tensor:
        """``Tensor[A_total, 4]``: all levels' anchors for one image, in torchvision's order."""
        levels = generate_multilevel_anchors(self.feature_sizes(height, width), self.strides, self.sizes, self.aspect_ratios, self.offset, dtype)
        return torch.cat(levels, dim=0)

    def describe(self) -> str:
        levels = ", ".join(f"stride {s:g}: {'/'.join(f'{z:g}' for z in sz)}" for s, sz in zip(self.strides, self.sizes))
        ratios = "/".join(f"{r:g}" for r in self.aspect_ratios)
        return f"{levels}; ratios (h/w) {ratios}; offset {self.offset:g}"


#: Kisantal et al.'s RPN anchors (FPN): sizes 32..512 on P2..P6 (strides 4..64), ratios 0.5 / 1 / 2.
FPN_ANCHORS = AnchorSet()


# ----------------------------------------------------------------------------------------------------------
# IoU and matching
# ----------------------------------------------------------------------------------------------------------
def _check_boxes(name: str, boxes: Tensor) -> Tensor:
    if not isinstance(boxes, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [N, 4] of (x1, y1, x2, y2), got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape [N, 4] (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got {boxes.dtype}; convert with .float() or .double()")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name}[{i}] = {boxes[i].tolist()} has x2 < x1 or y2 < y1; boxes are (x1, y1, x2, y2), convert COCO [x, y, w, h] first")
    return boxes


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """``Tensor[N, M]`` IoU of every box in ``boxes1`` ``[N, 4]`` with every box in ``boxes2`` ``[M, 4]``.

    ``IoU = inter / ((area1 + area2) - inter)`` with ``inter = max(0, min(x2) - max(x1)) *
    max(0, min(y2) - max(y1))`` and ``area = (x2 - x1) * (y2 - y1)`` (continuous pixels, no +1). Two boxes of
    zero area give 0/0 = NaN, as torchvision's ``box_iou``.
    """
    _check_boxes("boxes1", boxes1)
    _check_boxes("boxes2", boxes2)
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    left_top = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    right_bottom = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (right_bottom - left_top).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


@dataclass
class AnchorMatch:
    """Result of :func:`match_anchors` for one image with ``A`` anchors and ``G`` objects.

    - ``labels``: ``Tensor[A]`` int8, ``1`` positive, ``0`` negative, ``-1`` ignored (between thresholds);
    - ``matched_object``: ``Tensor[A]`` int64, the object a positive anchor is assigned to, ``-1`` for
      negatives and ``-2`` for ignored anchors (torchvision's ``Matcher`` output);
    - ``matched_anchors_per_object``: ``Tensor[G]`` int64, positive anchors assigned to each object;
    - ``best_iou_per_object``: ``Tensor[G]``, each object's highest IoU over all anchors.
    """

    labels: Tensor
    matched_object: Tensor
    matched_anchors_per_object: Tensor
    best_iou_per_object: Tensor


def match_anchors(
    anchors: Tensor,
    gt_boxes: Tensor,
    pos_iou: float = 0.7,
    neg_iou: float = 0.3,
    allow_low_quality: bool = True,
    ties: TieRule = "all",
) -> AnchorMatch:
    """Label anchors ``Tensor[A, 4]`` against objects ``Tensor[G, 4]`` by the RPN rule.

    With ``M = box_iou(gt_boxes, anchors)`` (``[G, A]``), ``v[a] = max_g M[g, a]`` and ``arg[a]`` the first
    object attaining it:

    - positive if ``v[a] >= pos_iou``; negative if ``v[a] < neg_iou``; ignored otherwise;
    - with ``allow_low_quality``, each object's best anchors are positive too: with ``ties="all"`` every
      anchor ``a`` with ``M[g, a] >= b_g (1 - TIE_RTOL)``, ``b_g = max_a' M[g, a']`` (the geometric ties),
      with ``ties="one"`` only the lowest-index such anchor, with ``ties="exact"`` every anchor with
      ``M[g, a] == b_g`` bit for bit (torchvision's ``Matcher``, detectron's RPN: which of the geometrically
      tied anchors it promotes depends on rounding);
    - every positive anchor is assigned to ``arg[a]`` (so a best anchor of one object that overlaps another
      object more goes to that other object, as in ``Matcher``).

    With ``ties="exact"`` the result equals ``torchvision.models.detection._utils.Matcher(pos_iou, neg_iou,
    allow_low_quality)``, including its edge cases (an object that overlaps no anchor has best IoU 0 and
    promotes every anchor with IoU 0).
    """
    _check_boxes("anchors", anchors)
    _check_boxes("gt_boxes", gt_boxes)
    if not 0.0 <= neg_iou <= pos_iou <= 1.0:
        raise ValueError(f"need 0 <= neg_iou <= pos_iou <= 1, got neg_iou={neg_iou}, pos_iou={pos_iou}")
    if ties not in TIE_RULES:
        raise ValueError(f"ties={ties!r}; use 'all' (every anchor tied at an object's best IoU, to a relative "
                         f"{TIE_RTOL:g}), 'one' (the lowest-index one) or 'exact' (bitwise equal, as torchvision's Matcher)")
    num_anchors, num_objects = anchors.shape[0], gt_boxes.shape[0]
    if num_objects == 0:
        return AnchorMatch(
            labels=torch.zeros(num_anchors, dtype=torch.int8),
            matched_object=torch.full((num_anchors,), -1, dtype=torch.int64),
            matched_anchors_per_object=torch.zeros(0, dtype=torch.int64),
            best_iou_per_object=torch.zeros(0, dtype=anchors.dtype),
        )
    if num_anchors == 0:
        raise ValueError("anchors is empty; every object needs at least one anchor to be matched")
    iou = box_iou(gt_boxes, anchors)
    anchor_best, anchor_object = iou.max(dim=0)
    matched = anchor_object.clone()
    matched[anchor_best < neg_iou] = -1
    matched[(anchor_best >= neg_iou) & (anchor_best < pos_iou)] = -2
    best_iou = iou.max(dim=1).values
    if allow_low_quality:
        if ties == "exact":
            promoted = torch.where(iou == best_iou[:, None])[1]
        else:
            tied = iou >= best_iou[:, None] * (1.0 - TIE_RTOL)
            if ties == "all":
                promoted = torch.where(tied)[1]
            else:  # the first tied anchor of each object
                promoted = tied.to(torch.int8).argmax(dim=1)
        matched[promoted] = anchor_object[promoted]
    labels = torch.zeros(num_anchors, dtype=torch.int8)
    labels[matched == -2] = -1
    labels[matched >= 0] = 1
    counts = torch.bincount(matched[matched >= 0], minlength=num_objects)
    return AnchorMatch(labels=labels, matched_object=matched, matched_anchors_per_object=counts, best_iou_per_object=best_iou)


# ----------------------------------------------------------------------------------------------------------
# closed-form geometry
# ----------------------------------------------------------------------------------------------------------
def _overlap_1d(object_side, anchor_side, offset):
    """Overlap of intervals of lengths ``s`` and ``a`` whose centres are ``|d|`` apart:
    ``clip((s + a) / 2 - |d|, 0, min(s, a))``."""
    return np.clip((object_side + anchor_side) / 2.0 - np.abs(offset), 0.0, np.minimum(object_side, anchor_side))


def worst_case_iou_rect(object_wh, anchor_wh, offset_xy):
    """IoU of a ``w x h`` object and an ``aw x ah`` anchor whose centres are ``(dx, dy)`` apart.

    ``o_x = clip((w + aw) / 2 - |dx|, 0, min(w, aw))``, likewise ``o_y``, and
    ``IoU = o_x o_y / (w h + aw ah - o_x o_y)``. Arguments are pairs (or arrays whose last axis has 2
    entries); broadcasting applies. Returns a float or an ndarray.
    """
    w, h = np.moveaxis(np.asarray(object_wh, dtype=np.float64), -1, 0)
    aw, ah = np.moveaxis(np.asarray(anchor_wh, dtype=np.float64), -1, 0)
    dx, dy = np.moveaxis(np.asarray(offset_xy, dtype=np.float64), -1, 0)
    if np.any(w <= 0) or np.any(h <= 0) or np.any(aw <= 0) or np.any(ah <= 0):
        raise ValueError("object_wh and anchor_wh must be positive widths and heights")
    inter = _overlap_1d(w, aw, dx) * _overlap_1d(h, ah, dy)
    iou = inter / (w * h + aw * ah - inter)
    return float(iou) if np.ndim(iou) == 0 else iou


def worst_case_iou(object_size, anchor_size, offset):
    """IoU of a square object of side ``s`` and a square anchor of side ``a``, centres ``d`` apart on each axis.

    With ``o = clip((s + a) / 2 - d, 0, min(s, a))`` the IoU is ``o^2 / (s^2 + a^2 - o^2)``; the regimes:

    - the anchor contains the object (``a >= s + 2d``): ``o = s``, ``IoU = s^2 / a^2``;
    - the object contains the anchor (``a <= s - 2d``): ``o = a``, ``IoU = a^2 / s^2``;
    - the object sticks out (``|a - s| < 2d``): ``o = (s + a) / 2 - d``; at ``a = s`` this is Krishna and Jawahar's
      eq. (1), ``(s - d)^2 / (2 s^2 - (s - d)^2)``.

    ``d = stride / 2`` is the worst placement on a grid. Arrays broadcast; returns a float or an ndarray.
    """
    s = np.asarray(object_size, dtype=np.float64)
    a = np.asarray(anchor_size, dtype=np.float64)
    if np.any(s <= 0) or np.any(a <= 0):
        raise ValueError("object_size and anchor_size must be positive side lengths in pixels")
    o = _overlap_1d(s, a, np.asarray(offset, dtype=np.float64))
    iou = o * o / (s * s + a * a - o * o)
    return float(iou) if np.ndim(iou) == 0 else iou


def _check_threshold(iou_threshold: float) -> float:
    t = float(iou_threshold)
    if not 0.0 < t < 1.0:
        raise ValueError(f"iou_threshold={iou_threshold} must lie strictly between 0 and 1")
    return t


def min_matchable_size(stride: float, iou_threshold: float) -> float:
    """Smallest square object side that some square anchor matches at IoU ``t`` in the worst placement.

    At ``d = stride / 2`` on each axis the best anchor just contains the object, ``a = s + 2d = s + stride``,
    so ``IoU = (s / (s + stride))^2 >= t`` gives ``s_min = stride * sqrt(t) / (1 - sqrt(t))``.
    """
    t = _check_threshold(iou_threshold)
    if stride <= 0:
        raise ValueError(f"stride={stride} must be positive")
    root = math.sqrt(t)
    return float(stride) * root / (1.0 - root)


def anchor_size_bounds(object_size: float, stride: float, iou_threshold: float) -> tuple[float, float] | None:
    """Range ``[a_lo, a_hi]`` of square anchor sides whose worst-case IoU with a square object of side ``s``
    (centres ``d = stride / 2`` apart on each axis) is at least ``t``; ``None`` when ``s < s_min``.

    The IoU as a function of ``a`` rises to its maximum at ``a = s + 2d`` and falls after it, so the set is an
    interval whose ends solve ``IoU(a) = t`` in one of the regimes of :func:`worst_case_iou`:

    - ``a >= s + 2d`` (contains): ``a = s / sqrt(t)``;
    - ``a <= s - 2d`` (contained): ``a = s * sqrt(t)``;
    - ``|a - s| < 2d``: with ``c = s - 2d``, ``(1 + t)(a + c)^2 / 4 = t (s^2 + a^2)``, i.e.
      ``(1 - 3t) a^2 + 2 (1 + t) c a + (1 + t) c^2 - 4 t s^2 = 0``.
    """
    t = _check_threshold(iou_threshold)
    s = float(object_size)
    if s <= 0 or stride <= 0:
        raise ValueError(f"object_size={object_size} and stride={stride} must be positive")
    d = float(stride) / 2.0
    peak = s + 2.0 * d
    if worst_case_iou(s, peak, d) < t * (1.0 - 1e-12):
        return None
    roots = []
    if s / math.sqrt(t) >= peak:
        roots.append(s / math.sqrt(t))
    if s * math.sqrt(t) <= s - 2.0 * d:
        roots.append(s * math.sqrt(t))
    c = s - 2.0 * d
    qa, qb, qc = 1.0 - 3.0 * t, 2.0 * (1.0 + t) * c, (1.0 + t) * c * c - 4.0 * t * s * s
    if abs(qa) < 1e-15:
        candidates = [-qc / qb] if qb != 0 else []
    else:
        disc = qb * qb - 4.0 * qa * qc
        candidates = [(-qb + sgn * math.sqrt(max(disc, 0.0))) / (2.0 * qa) for sgn in (1.0, -1.0)] if disc >= 0 else []
    for a in candidates:
        if s - 2.0 * d - 1e-9 <= a <= peak + 1e-9 and a > 0 and (s + a) / 2.0 - d >= 0:
            roots.append(a)
    below = [r for r in roots if r <= peak + 1e-9]
    above = [r for r in roots if r >= peak - 1e-9]
    lo = min(below) if below else peak
    hi = max(above) if above else peak
    return (min(lo, peak), max(hi, peak))


@dataclass
class DerivedAnchors:
    """Result of :func:`derive_anchor_sizes`.

    ``sizes``: anchor sides, increasing; ``covered_range``: ``(s_lo, s_hi)``, the object sides every one of
    which has an anchor of worst-case IoU ``>= iou_threshold``; ``min_matchable_size``: ``s_min`` at this
    stride and threshold; ``unmatchable_share``: share of the given objects smaller than ``s_min`` (no anchor
    of any size matches them in the worst placement).
    """

    sizes: list[float]
    stride: float
    iou_threshold: float
    covered_range: tuple[float, float]
    min_matchable_size: float
    unmatchable_share: float
    num_objects: int


def _largest_object_covered(anchor: float, stride: float, t: float, s_from: float) -> float:
    """Largest object side ``s >= s_from`` with ``a_lo(s) <= anchor`` (bisection; ``a_lo`` increases with ``s``)."""
    lo, hi = s_from, anchor / math.sqrt(t) * 2.0 + stride
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        bounds = anchor_size_bounds(mid, stride, t)
        if bounds is not None and bounds[0] <= anchor <= bounds[1]:
            lo = mid
        else:
            hi = mid
    return lo


def derive_anchor_sizes(
    object_sizes: Sequence[float] | np.ndarray,
    stride: float,
    iou_threshold: float = 0.5,
    quantiles: tuple[float, float] = (0.01, 0.99),
    decimals: int | None = 1,
) -> DerivedAnchors:
    """Square anchor sides that cover a dataset's object sides at IoU ``t`` in the worst placement.

    Objects sides (``sqrt(area)``) between the ``quantiles`` of ``object_sizes`` and at least ``s_min`` are
    covered greedily: start at the smallest side ``s0``, take the largest anchor that still matches it,
    ``a = a_hi(s0)``, find the largest side ``s1`` that anchor still matches (``a_lo(s1) = a``), continue from
    ``s1`` until the largest side is covered. Every side in ``covered_range`` then has an anchor in
    ``[a_lo(s), a_hi(s)]`` (the covering property, up to ``decimals`` rounding, which is applied downwards
    where it could break it). Krishna and Jawahar did this for their data by hand and arrived at {16, 25, 32, 45, 64, 90}.
    """
    t = _check_threshold(iou_threshold)
    if stride <= 0:
        raise ValueError(f"stride={stride} must be positive")
    sides = np.asarray(object_sizes, dtype=np.float64).ravel()
    if sides.size == 0:
        raise ValueError("object_sizes is empty; pass the sides sqrt(area) of the dataset's objects")
    if np.any(~np.isfinite(sides)) or np.any(sides <= 0):
        raise ValueError("object_sizes must be positive finite sides (sqrt of the area) in pixels")
    q_lo, q_hi = quantiles
    if not 0.0 <= q_lo < q_hi <= 1.0:
        raise ValueError(f"quantiles={quantiles!r} must satisfy 0 <= low < high <= 1")
    s_min = min_matchable_size(stride, t)
    low, high = (float(v) for v in np.quantile(sides, [q_lo, q_hi]))
    start = max(low, s_min)
    sizes: list[float] = []
    if start <= high:
        current = start
        while True:
            a_lo, a_hi = anchor_size_bounds(current, stride, t)  # type: ignore[misc]
            if decimals is not None and math.floor(a_hi * 10**decimals) / 10**decimals >= a_lo:
                a_hi = math.floor(a_hi * 10**decimals) / 10**decimals
            sizes.append(a_hi)
            reach = _largest_object_covered(a_hi, stride, t, current)
            if reach >= high or reach <= current * (1 + 1e-9):
                break
            current = reach
    return DerivedAnchors(
        sizes=sizes,
        stride=float(stride),
        iou_threshold=t,
        covered_range=(start, high) if sizes else (float("nan"), float("nan")),
        min_matchable_size=s_min,
        unmatchable_share=float(np.mean(sides < s_min)),
        num_objects=int(sides.size),
    )


def largest_matching_offset(object_side: float, anchor_side: float, iou_threshold: float) -> float | None:
    """Largest centre distance ``d`` (on each axis) at which a square object of side ``s`` and a square anchor
    of side ``a`` still reach IoU ``t``; ``None`` when even concentric boxes fall short.

    While ``d <= |a - s| / 2`` the smaller box lies inside the larger and ``IoU = min(s, a)^2 / max(s, a)^2``,
    its largest value; beyond, the overlap per axis is ``o = (s + a) / 2 - d`` and the IoU falls. Solving
    ``o^2 / (s^2 + a^2 - o^2) = t`` gives ``o = sqrt(t (s^2 + a^2) / (1 + t))`` and ``d = (s + a) / 2 - o``
    (valid because ``o <= min(s, a)`` exactly when ``min^2 / max^2 >= t``).
    """
    s, a, t = float(object_side), float(anchor_side), float(iou_threshold)
    if s <= 0 or a <= 0 or not 0 < t < 1:
        raise ValueError("object_side and anchor_side must be positive and 0 < iou_threshold < 1")
    if (min(s, a) / max(s, a)) ** 2 < t:
        return None
    overlap = math.sqrt(t * (s * s + a * a) / (1.0 + t))
    return (s + a) / 2.0 - overlap
