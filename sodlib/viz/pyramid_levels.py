"""Figures and numbers of notebook 07 (EFPN's extra pyramid level) and the pure function behind its explorer.

One square object of side ``s`` (pixels of the original image) is resized by ``input_scale``; its RoI, of side
``r = s * input_scale``, is pooled from the level that :mod:`sodlib.pyramid_levels` assigns it:

- FPN: ``l = clamp(floor(4 + log2(r / 224) + 1e-6), 2, 5)``, so ``P2`` (stride 4) under 112 px, ``P3`` under 224,
  ``P4`` under 448, ``P5`` above;
- EFPN: ``P'2`` (level 1, stride 2) when ``r < T``, FPN's level otherwise; ``T = 56 * min_size / 1400`` by
  default (17.92 px for the course's 448 px input).

On a level of stride ``S`` the RoI spans ``r / S`` cells across and ``(r / S)^2`` cells in all: what RoI pooling
has to read. The anchor side is the second question: the smallest anchor of a detector's set whose worst-case IoU
with the object (centres ``d = S_a / 2`` apart on each axis, ``S_a`` the stride of the anchor's own level)
reaches the threshold, found with :func:`sodlib.anchors.anchor_size_bounds`. The worst-case IoU is symmetric in
``s`` and ``a``, so an anchor of side ``a`` on stride ``S_a`` reaches at most ``(a / (a + S_a))^2`` (with an object
of side ``a + S_a``) and matches some object only if ``a >= S_a sqrt(t) / (1 - sqrt(t))``, the ``s_min`` of its
stride (2.41 ``S_a`` at ``t = 0.5``). The course's anchors, twice their stride, therefore match no object in the
worst placement at 0.5; the report then names the set's best anchor and what a match would need.

As in :mod:`sodlib.viz.anchors`, everything is "state in, figure and numbers out": the widget in
:mod:`sodlib.viz.widgets` only wires sliders to :func:`level_assignment` and :func:`plot_level_assignment`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import matplotlib.patches as patches
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from sodlib.anchors import anchor_size_bounds, min_matchable_size, worst_case_iou
from sodlib.pyramid_levels import (
    CANONICAL_LEVEL,
    CANONICAL_SCALE,
    EXTENDED_LEVEL,
    level_name,
    FPN_LEVELS,
    cells_covered,
    default_extended_threshold,
    efpn_level,
    fpn_level,
    level_stride,
)
from sodlib.viz.anchors import _pixel_log_axis

__all__ = [
    "COURSE_EXTENDED_ANCHORS",
    "COURSE_FPN_ANCHORS",
    "LevelAssignment",
    "PooledLevel",
    "level_assignment",
    "level_explorer_view",
    "level_name",
    "plot_level_assignment",
]

#: The course detector's anchors (configs/tiny_fpn.toml): one size per level, ``fpn_anchors[k]`` on ``P(2 + k)``,
#: stride ``2 ** (2 + k)``, so 8..128 px on strides 4..64.
COURSE_FPN_ANCHORS: tuple[tuple[float, ...], ...] = ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))
#: EFPN's anchors on ``P'2`` (stride 2): half of ``P2``'s.
COURSE_EXTENDED_ANCHORS: tuple[float, ...] = (4.0,)
MAX_INPUT_SCALE = 8.0


@dataclass(frozen=True)
class PooledLevel:
    """Where one detector (``"FPN"`` or ``"EFPN"``) pools a square RoI, and which of its anchors match it.

    ``level``, ``name``, ``stride``: the pooling level (``stride = 2 ** level``); ``cells_across = side / stride``
    and ``cells = cells_across ** 2`` (:func:`sodlib.pyramid_levels.cells_covered`). ``anchor``: the smallest
    anchor side of the detector's set with worst-case IoU ``>= iou_threshold`` on its own level's grid
    (``None`` when none does), on level ``anchor_level`` with that IoU ``anchor_iou``. ``best_anchor``,
    ``best_anchor_level``, ``best_anchor_iou``: the set's anchor with the highest worst-case IoU (the smaller on a
    tie). ``finest_stride``: the finest stride of the anchor set, and ``finest_bounds``: the anchor sides
    ``(a_lo, a_hi)`` that would match the object there (``None`` below ``s_min`` of that stride).
    """

    detector: str
    level: int
    name: str
    stride: int
    cells_across: float
    cells: float
    anchor: float | None
    anchor_level: str | None
    anchor_iou: float | None
    best_anchor: float
    best_anchor_level: str
    best_anchor_iou: float
    finest_stride: int
    finest_bounds: tuple[float, float] | None

    def pooling_text(self) -> str:
        """``"P2 (stride 4, 2.1 x 2.1 = 4.41 cells)"``."""
        return f"{self.name} (stride {self.stride}, {self.cells_across:.3g} x {self.cells_across:.3g} = {self.cells:.3g} cells)"

    def anchor_text(self, side: float, iou_threshold: float) -> str:
        """The matching anchor, or ``"none (best ...; needs ...)"`` for an object of ``side`` px (resized)."""
        if self.anchor is not None:
            return f"{self.anchor:g} px on {self.anchor_level} (worst-case IoU {self.anchor_iou:.2f})"
        if self.finest_bounds is None:
            largest_stride = side * (1.0 - math.sqrt(iou_threshold)) / math.sqrt(iou_threshold)
            need = (f"a stride <= {largest_stride:.2f} px: s_min = {min_matchable_size(self.finest_stride, iou_threshold):.2f} px "
                    f"at stride {self.finest_stride}")
        else:
            need = f"an anchor of {self.finest_bounds[0]:.1f}..{self.finest_bounds[1]:.1f} px on stride {self.finest_stride}"
        return (f"none (best {self.best_anchor:g} px on {self.best_anchor_level}, worst-case IoU {self.best_anchor_iou:.2f}; "
                f"needs {need})")


@dataclass(frozen=True)
class LevelAssignment:
    """Pyramid levels and anchors of one square object, in FPN and in EFPN (:func:`level_assignment`).

    ``object_side``: side in the original image; ``input_scale``: resized side over original side;
    ``side = object_side * input_scale``: the RoI side in the resized image, the one the level formulas read;
    ``threshold``: EFPN's ``T`` (``side < T`` goes to ``P'2``); ``fpn``, ``efpn``: :class:`PooledLevel`.
    """

    object_side: float
    input_scale: float
    side: float
    threshold: float
    min_size: float
    iou_threshold: float
    fpn: PooledLevel
    efpn: PooledLevel

    def summary(self) -> str:
        """Two lines: where each detector pools the object, and its smallest anchor matching it worst-placed."""
        t = self.iou_threshold
        return (f"object {self.object_side:g} px x {self.input_scale:.2f} = {self.side:.4g} px in the resized image: "
                f"FPN pools it from {self.fpn.pooling_text()}, EFPN from {self.efpn.pooling_text()}; T = {self.threshold:.4g} px\n"
                f"smallest anchor with worst-case IoU >= {t:g}: FPN {self.fpn.anchor_text(self.side, t)}, "
                f"EFPN {self.efpn.anchor_text(self.side, t)}")


def _positive(name: str, value, hint: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a number; {hint}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} must be a positive finite number; {hint}")
    return value


def _anchor_sizes(name: str, sizes, example: str) -> tuple[float, ...]:
    try:
        sizes = tuple(float(v) for v in sizes)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={sizes!r} must be a sequence of anchor sides in pixels; pass e.g. {example}") from None
    if any(not (math.isfinite(v) and v > 0) for v in sizes):
        raise ValueError(f"{name}={sizes!r} must hold positive anchor sides in pixels; pass e.g. {example}")
    return sizes


def _pooled_level(detector: str, level: int, side: float, anchors: list[tuple[float, int]], t: float) -> PooledLevel:
    """One detector's :class:`PooledLevel`; ``anchors``: ``(anchor side, anchor level)`` pairs of its set."""
    stride = int(level_stride(level))
    candidates = sorted(anchors, key=lambda pair: (pair[0], pair[1]))  # smallest side first, finer level on a tie
    matched = best = None
    best_iou = -1.0
    for size, anchor_level in candidates:
        anchor_stride = float(level_stride(anchor_level))
        iou = float(worst_case_iou(side, size, anchor_stride / 2.0))
        if iou > best_iou:
            best, best_iou = (size, anchor_level), iou
        if matched is None:
            bounds = anchor_size_bounds(side, anchor_stride, t)
            if bounds is not None and bounds[0] * (1 - 1e-9) <= size <= bounds[1] * (1 + 1e-9):
                matched = (size, anchor_level, iou)
    finest_stride = int(level_stride(min(level for _, level in anchors)))
    return PooledLevel(
        detector=detector, level=int(level), name=level_name(level), stride=stride,
        cells_across=side / stride, cells=float(cells_covered(side, level)),
        anchor=None if matched is None else matched[0],
        anchor_level=None if matched is None else level_name(matched[1]),
        anchor_iou=None if matched is None else matched[2],
        best_anchor=best[0], best_anchor_level=level_name(best[1]), best_anchor_iou=best_iou,
        finest_stride=finest_stride, finest_bounds=anchor_size_bounds(side, float(finest_stride), t),
    )


def level_assignment(object_side: float, input_scale: float, *, threshold: float | None = None, min_size: float = 448,
                     fpn_anchors: Sequence[Sequence[float]] = COURSE_FPN_ANCHORS,
                     extended_anchors: Sequence[float] = COURSE_EXTENDED_ANCHORS,
                     iou_threshold: float = 0.5) -> LevelAssignment:
    """Levels, cells and matching anchors of a square object of side ``object_side`` (original image, px) resized
    by ``input_scale``: the RoI side is ``r = object_side * input_scale``.

    FPN pools it from ``fpn_level(r)``, EFPN from ``efpn_level(r, T)`` with ``T = threshold`` or, when ``None``,
    ``56 * min_size / 1400``; on a level of stride ``S`` it covers ``(r / S)^2`` cells. Anchors: ``fpn_anchors[k]``
    are the sides on ``P(2 + k)`` (stride ``2 ** (2 + k)``); EFPN has those plus ``extended_anchors`` on ``P'2``
    (stride 2). An anchor of side ``a`` on stride ``S_a`` matches if ``a`` lies in
    ``anchor_size_bounds(r, S_a, iou_threshold)``, i.e. its worst-case IoU at ``d = S_a / 2`` is ``>= iou_threshold``.
    """
    object_side = _positive("object_side", object_side, "pass the object's side sqrt(w h) in pixels of the original image")
    input_scale = _positive("input_scale", input_scale, "pass the resized side over the original side, e.g. 448 / 640 = 0.7")
    if input_scale > MAX_INPUT_SCALE:
        raise ValueError(f"input_scale={input_scale!r} must lie in (0, {MAX_INPUT_SCALE:g}]: the resized side over the "
                         "original side, e.g. 448 / 640 = 0.7")
    min_size = _positive("min_size", min_size, "pass the resized image's short side in pixels, e.g. 448")
    if threshold is None:
        threshold = default_extended_threshold(min_size)
    threshold = _positive("threshold", threshold, "pass EFPN's RoI side in resized pixels under which P'2 pools, or None "
                                                  "for 56 * min_size / 1400")
    t = float(iou_threshold)
    if not 0.0 < t < 1.0:
        raise ValueError(f"iou_threshold={iou_threshold!r} must lie strictly between 0 and 1, e.g. 0.5")
    if isinstance(fpn_anchors, (str, bytes)) or not isinstance(fpn_anchors, Sequence) or len(fpn_anchors) == 0:
        raise ValueError(f"fpn_anchors={fpn_anchors!r} must be one sequence of anchor sides per level from P2 up; "
                         "pass e.g. ((8,), (16,), (32,), (64,), (128,))")
    per_level = [_anchor_sizes(f"fpn_anchors[{k}]", sizes, "(8,) for one 8 px anchor") for k, sizes in enumerate(fpn_anchors)]
    if not any(per_level):
        raise ValueError(f"fpn_anchors={fpn_anchors!r} holds no anchor; pass e.g. ((8,), (16,), (32,), (64,), (128,))")
    extended = _anchor_sizes("extended_anchors", extended_anchors, "(4,) for one 4 px anchor on P'2, or () for none")
    side = object_side * input_scale
    fpn_set = [(size, FPN_LEVELS[0] + k) for k, sizes in enumerate(per_level) for size in sizes]
    efpn_set = [(size, EXTENDED_LEVEL) for size in extended] + fpn_set
    return LevelAssignment(
        object_side=object_side, input_scale=input_scale, side=side, threshold=threshold, min_size=min_size,
        iou_threshold=t,
        fpn=_pooled_level("FPN", int(fpn_level(side)), side, fpn_set, t),
        efpn=_pooled_level("EFPN", int(efpn_level(side, threshold)), side, efpn_set, t),
    )


# ----------------------------------------------------------------------------------------------------------
# the figure
# ----------------------------------------------------------------------------------------------------------
def _draw_grid(ax, side: float, corner: float, stride: float, shift: float, colour: str) -> tuple[float, float, float, float]:
    """The feature grid of ``stride`` around a ``side`` px RoI whose top-left corner is at ``(corner, corner)``,
    drawn ``shift`` px to the right; each cell shaded by the share of it the RoI covers (the shares add up to
    ``(side / stride)^2``). Returns the frame's ``(left, right, top, bottom)`` in the drawn coordinates (y down)."""
    first, last = -1, math.ceil((corner + side) / stride) + 1  # one cell of margin on each side
    edges = np.arange(first, last + 1) * stride
    covered = np.clip(np.minimum(edges[1:], corner + side) - np.maximum(edges[:-1], corner), 0.0, None) / stride
    shares = np.outer(covered, covered)
    left, right = edges[0] + shift, edges[-1] + shift
    ax.imshow(shares, extent=(left, right, edges[-1], edges[0]), cmap="Blues" if colour == "tab:blue" else "Oranges",
              vmin=0.0, vmax=1.4, interpolation="nearest", origin="upper")
    width = 0.6 if len(edges) <= 24 else 0.3
    ax.vlines(edges + shift, edges[0], edges[-1], color="0.55", linewidth=width)
    ax.hlines(edges, left, right, color="0.55", linewidth=width)
    ax.add_patch(patches.Rectangle((corner + shift, corner), side, side, fill=False, edgecolor="tab:red", linewidth=1.6))
    return left, right, edges[0], edges[-1]


def _level_steps(low: float, high: float, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints and levels of FPN (``threshold=None``) or EFPN for a ``where="post"`` step plot on ``[low, high]``."""
    bounds = [CANONICAL_SCALE * 2.0 ** (level - CANONICAL_LEVEL) for level in range(FPN_LEVELS[0] + 1, FPN_LEVELS[1] + 1)]
    if threshold is not None:
        bounds.append(threshold)
    xs = np.array(sorted({low, high, *[b for b in bounds if low < b < high]}))
    levels = fpn_level(xs) if threshold is None else efpn_level(xs, threshold)
    return xs, levels


def plot_level_assignment(assignment: LevelAssignment, figsize: tuple[float, float] = (11.0, 3.9)) -> Figure:
    """Two panels for a :class:`LevelAssignment`.

    Left: the RoI (red, ``r`` px of the resized image) over the feature grid of its FPN level and of its EFPN level,
    side by side at the same pixel scale; a cell's shade is the share of it the RoI covers, so the shades add up
    to ``(r / S)^2`` cells. Right: the level against ``r`` (log axis) for FPN (steps at 112, 224, 448 px) and for
    EFPN (an extra step at ``T``), with this object marked.
    """
    a = assignment
    figure, (ax_grid, ax_steps) = plt.subplots(1, 2, figsize=figsize, gridspec_kw={"width_ratios": [1.25, 1.0]})
    # 1. the two grids
    corner = 0.3 * a.fpn.stride  # off both grids' lines: the RoI's corner is where it happens to fall
    fpn_left, fpn_right, fpn_top, fpn_bottom = _draw_grid(ax_grid, a.side, corner, a.fpn.stride, 0.0, "tab:blue")
    gap = 0.3 * (fpn_right - fpn_left)
    shift = fpn_right + gap + a.efpn.stride  # the EFPN frame starts one of its cells left of the origin
    efpn_left, efpn_right, efpn_top, efpn_bottom = _draw_grid(ax_grid, a.side, corner, a.efpn.stride, shift, "tab:orange")
    top, bottom = min(fpn_top, efpn_top), max(fpn_bottom, efpn_bottom)
    for (left, right), pooled in (((fpn_left, fpn_right), a.fpn), ((efpn_left, efpn_right), a.efpn)):
        ax_grid.text((left + right) / 2.0, top - 0.03 * (bottom - top), f"{pooled.detector}: {pooled.name}, stride {pooled.stride}\n"
                     f"{pooled.cells_across:.3g} x {pooled.cells_across:.3g} = {pooled.cells:.3g} cells",
                     ha="center", va="bottom", fontsize=8.5)
    ax_grid.set_xlim(fpn_left - gap / 2.0, efpn_right + gap / 2.0)
    ax_grid.set_ylim(bottom + 0.02 * (bottom - top), top - 0.22 * (bottom - top))
    ax_grid.set_aspect("equal")
    ax_grid.set_xticks([])
    ax_grid.set_yticks([])
    ax_grid.set_title(f"RoI of {a.side:.4g} px on its pooling level (shade: share of each cell covered)", fontsize=9.5)
    # 2. level against the RoI side
    low, high = min(2.0, a.side / 1.5), max(512.0, a.side * 1.5)
    xs, levels = _level_steps(low, high, None)
    ax_steps.step(xs, levels, where="post", color="tab:blue", linewidth=2.4, label="FPN")
    xs, levels = _level_steps(low, high, a.threshold)
    ax_steps.step(xs, levels - 0.06, where="post", color="tab:orange", linewidth=1.6, linestyle="--", label="EFPN")
    ax_steps.axvline(a.threshold, color="tab:orange", linewidth=0.8, linestyle=":")
    ax_steps.text(a.threshold, 5.45, f" T = {a.threshold:.4g}", fontsize=7.5, color="tab:orange", ha="left", va="top")
    ax_steps.axvline(a.side, color="tab:red", linewidth=0.8)
    ax_steps.plot([a.side], [a.fpn.level], "o", color="tab:blue", markersize=8, zorder=3, label=f"this object: FPN {a.fpn.name}")
    ax_steps.plot([a.side], [a.efpn.level - 0.06], "s", markerfacecolor="none", markeredgecolor="tab:orange", markersize=9,
                  markeredgewidth=1.6, zorder=3, label=f"this object: EFPN {a.efpn.name}")
    levels = range(EXTENDED_LEVEL, FPN_LEVELS[1] + 1)
    ax_steps.set_yticks(list(levels), [f"{level_name(level)} (S={int(level_stride(level))})" for level in levels], fontsize=8)
    ax_steps.set_ylim(EXTENDED_LEVEL - 0.5, FPN_LEVELS[1] + 0.5)
    ax_steps.set_xlim(low, high)
    _pixel_log_axis(ax_steps.xaxis)
    ax_steps.xaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))  # 0.5, not 0
    ax_steps.set_xlabel("RoI side in the resized image (px)")
    ax_steps.set_title("pooling level against the RoI side", fontsize=9.5)
    ax_steps.legend(fontsize=7.5, frameon=False, loc="lower right")
    figure.tight_layout()
    return figure


def level_explorer_view(object_side: float, input_scale: float, threshold: float | None = None, *, min_size: float = 448,
                        fpn_anchors: Sequence[Sequence[float]] = COURSE_FPN_ANCHORS,
                        extended_anchors: Sequence[float] = COURSE_EXTENDED_ANCHORS, iou_threshold: float = 0.5,
                        figsize: tuple[float, float] = (11.0, 3.9)) -> tuple[Figure, str]:
    """:func:`plot_level_assignment` of :func:`level_assignment` (same arguments) and the assignment's report,
    e.g. ``"object 12 px x 0.70 = 8.4 px in the resized image: FPN pools it from P2 (stride 4, 2.1 x 2.1 = 4.41
    cells), EFPN from P'2 (stride 2, 4.2 x 4.2 = 17.6 cells); ..."`` with a second line on the anchors."""
    assignment = level_assignment(object_side, input_scale, threshold=threshold, min_size=min_size, fpn_anchors=fpn_anchors,
                                  extended_anchors=extended_anchors, iou_threshold=iou_threshold)
    return plot_level_assignment(assignment, figsize=figsize), assignment.summary()
