"""Figures and numbers of notebook 02 (anchor sizes) and the pure functions behind its two explorers.

Every function here is "state in, figure and numbers out": the widgets in :mod:`sodlib.viz.widgets` only
read their controls, call :func:`iou_explorer_view` or :func:`anchor_explorer_view`, and show what comes
back, so everything a student sees can be tested without a kernel.

Geometry follows :mod:`sodlib.anchors`: size ``sqrt(w * h)``, ratio ``h / w``, centres at
``(i + offset) * stride``, unrounded base anchors, and ``d`` the distance between an object's centre and an
anchor's centre on each axis (``d = stride / 2`` is the worst placement on a grid).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import matplotlib.patches as patches
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from sodlib.anchors import (
    AnchorSet,
    anchor_size_bounds,
    box_iou,
    largest_matching_offset,
    match_anchors,
    min_matchable_size,
    worst_case_iou,
)
from sodlib.data.sizes import SIZE_BIN_COLORS, SIZE_BINS, size_bin_label
from sodlib.stats import AnchorMatchingStatistics
from sodlib.viz.boxes import draw_target

__all__ = [
    "AnchorExplorerReport",
    "IoUExplorerReport",
    "anchor_explorer_view",
    "iou_explorer_view",
    "plot_anchor_design",
    "plot_matching_comparison",
]

DEFAULT_STRIDES: tuple[float, ...] = (4.0, 8.0, 16.0, 32.0, 64.0)


# ----------------------------------------------------------------------------------------------------------
# IoU explorer: one object, one anchor
# ----------------------------------------------------------------------------------------------------------
@dataclass
class IoUExplorerReport:
    """Numbers behind :func:`iou_explorer_view`.

    ``iou``: IoU at the chosen offset; ``worst_case_iou``: at ``d = stride / 2`` for each stride
    (``{stride: IoU}``); ``largest_offset``: the largest ``d`` still reaching the threshold (``None`` if none);
    ``min_matchable``: ``{stride: s_min}``, the smallest object any anchor matches at the worst offset;
    ``anchor_bounds``: ``{stride: (a_lo, a_hi) or None}``, the anchor sides that match this object worst-placed.
    """

    object_side: float
    anchor_side: float
    offset: float
    iou_threshold: float
    iou: float
    matches: bool
    largest_offset: float | None
    worst_case_iou: dict[float, float]
    min_matchable: dict[float, float]
    anchor_bounds: dict[float, tuple[float, float] | None]

    def summary(self) -> str:
        reach = "never (even concentric)" if self.largest_offset is None else f"up to d = {self.largest_offset:.2f} px"
        lines = [f"IoU at d = {self.offset:g} px: {self.iou:.3f} ({'matches' if self.matches else 'below'} t = {self.iou_threshold:g}); "
                 f"reaches t {reach}"]
        for stride, s_min in self.min_matchable.items():
            bounds = self.anchor_bounds[stride]
            span = "no anchor size" if bounds is None else f"anchors {bounds[0]:.1f}..{bounds[1]:.1f} px"
            lines.append(f"stride {stride:g}: smallest matchable object {s_min:.2f} px; this object worst-placed: {span}")
        return "\n".join(lines)


def iou_explorer_view(object_side: float, anchor_side: float, offset: float, iou_threshold: float = 0.5,
                      strides: Sequence[float] = DEFAULT_STRIDES) -> tuple[Figure, IoUExplorerReport]:
    """Three panels for a square object of side ``s`` and a square anchor of side ``a`` whose centres are
    ``offset`` = ``d`` px apart on each axis:

    1. the two boxes as placed, with their IoU ``o^2 / (s^2 + a^2 - o^2)``, ``o = clip((s + a)/2 - d, 0, min(s, a))``;
    2. IoU as a function of ``d``, with the threshold line and the worst placements ``d = stride / 2``;
    3. the smallest matchable object ``s_min = S sqrt(t) / (1 - sqrt(t))`` per stride ``S``, with ``s``.

    Returns the figure and an :class:`IoUExplorerReport`.
    """
    s, a, d, t = float(object_side), float(anchor_side), float(offset), float(iou_threshold)
    if s <= 0 or a <= 0 or d < 0 or not 0 < t < 1:
        raise ValueError("need object_side > 0, anchor_side > 0, offset >= 0 and 0 < iou_threshold < 1")
    strides = [float(v) for v in strides]
    iou = float(worst_case_iou(s, a, d))
    report = IoUExplorerReport(
        object_side=s, anchor_side=a, offset=d, iou_threshold=t, iou=iou, matches=iou >= t,
        largest_offset=largest_matching_offset(s, a, t),
        worst_case_iou={S: float(worst_case_iou(s, a, S / 2.0)) for S in strides},
        min_matchable={S: min_matchable_size(S, t) for S in strides},
        anchor_bounds={S: anchor_size_bounds(s, S, t) for S in strides},
    )
    figure, (ax_box, ax_curve, ax_min) = plt.subplots(1, 3, figsize=(11.5, 3.5))
    # 1. the boxes
    half_s, half_a = s / 2.0, a / 2.0
    ax_box.add_patch(patches.Rectangle((-half_s, -half_s), s, s, fill=True, facecolor="tab:red", alpha=0.25,
                                       edgecolor="tab:red", linewidth=1.5, label=f"object {s:g} px"))
    ax_box.add_patch(patches.Rectangle((d - half_a, d - half_a), a, a, fill=False, edgecolor="tab:blue",
                                       linewidth=1.5, linestyle="--", label=f"anchor {a:g} px"))
    ax_box.plot([0, d], [0, d], "k.-", linewidth=0.8, markersize=4)
    extent = max(half_s, d + half_a) * 1.15 + 1
    ax_box.set_xlim(-extent, extent)
    ax_box.set_ylim(extent, -extent)
    ax_box.set_aspect("equal")
    ax_box.set_title(f"d = {d:g} px on each axis: IoU {iou:.3f}", fontsize=10,
                     color="tab:green" if report.matches else "tab:red")
    ax_box.legend(fontsize=7.5, loc="lower center", bbox_to_anchor=(0.5, -0.32), ncol=2, frameon=False)
    ax_box.tick_params(labelsize=7)
    # 2. IoU against the offset
    reach = (s + a) / 2.0
    grid = np.linspace(0.0, max(reach, d, max(strides) / 2.0) * 1.05, 400)
    ax_curve.plot(grid, worst_case_iou(s, a, grid), color="tab:blue", linewidth=1.8)
    ax_curve.axhline(t, color="tab:green", linewidth=1.0, label=f"threshold t = {t:g}")
    for S in strides:
        if S / 2.0 <= grid[-1]:
            ax_curve.axvline(S / 2.0, color="0.75", linewidth=0.8, linestyle=":")
            ax_curve.text(S / 2.0, 0.97, f" S={S:g}", fontsize=6.5, ha="left", va="top", rotation=90, color="0.4")
    ax_curve.plot([d], [iou], "o", color="tab:green" if report.matches else "tab:red", markersize=7, label="this placement")
    ax_curve.set_xlim(0, grid[-1])
    ax_curve.set_ylim(0, 1.0)
    ax_curve.set_xlabel("centre distance d on each axis (px)")
    ax_curve.set_ylabel("IoU")
    ax_curve.set_title("IoU against the offset (dotted: worst d = S/2)", fontsize=10)
    ax_curve.legend(fontsize=7.5, frameon=False, loc="center right")
    # 3. smallest matchable object per stride
    positions = np.arange(len(strides))
    values = [report.min_matchable[S] for S in strides]
    bars = ax_min.bar(positions, values, color=["tab:green" if v <= s else "0.7" for v in values])
    ax_min.bar_label(bars, fmt="%.1f", fontsize=7.5)
    ax_min.axhline(s, color="tab:red", linewidth=1.2, label=f"this object, {s:g} px")
    ax_min.set_xticks(positions, [f"{S:g}" for S in strides])
    _pixel_log_axis(ax_min.yaxis)
    ax_min.set_xlabel("stride S (px)")
    ax_min.set_ylabel("smallest matchable side (px)")
    ax_min.set_title(f"s_min at t = {t:g} (green: this object is matchable)", fontsize=10)
    ax_min.legend(fontsize=7.5, frameon=False, loc="upper left")
    figure.tight_layout()
    return figure, report


# ----------------------------------------------------------------------------------------------------------
# anchor explorer: one image, one anchor level
# ----------------------------------------------------------------------------------------------------------
@dataclass
class AnchorExplorerReport:
    """Numbers behind :func:`anchor_explorer_view`, one row per non-crowd object of the image.

    ``objects``: dicts with ``index``, ``bin``, ``side`` (``sqrt(area)``), ``matched`` (positive anchors
    assigned to it by the RPN rule, low-quality matches included), ``above_threshold`` (anchors with IoU
    ``>= pos_iou``), ``best_iou``; ``small_without_anchor_share``: share of the image's small objects with no
    anchor reaching ``pos_iou`` (NaN when the image has none); ``anchors``: anchors in the image;
    ``focus``: the object whose grid location is drawn with every anchor shape, or ``None``.
    """

    objects: list[dict] = field(default_factory=list)
    small_without_anchor_share: float = float("nan")
    anchors: int = 0
    positive_anchors: int = 0
    focus: int | None = None
    anchor_set: str = ""

    def summary(self) -> str:
        lines = [f"{self.anchor_set}: {self.anchors} anchors, {self.positive_anchors} positive"]
        for row in self.objects:
            lines.append(f"object {row['index']:2d} ({row['bin']:6s}, side {row['side']:6.1f} px): "
                         f"{row['matched']:3d} matched, {row['above_threshold']:3d} above threshold, best IoU {row['best_iou']:.2f}")
        share = self.small_without_anchor_share
        lines.append("small objects with no anchor above the threshold: " + ("none in this image" if math.isnan(share) else f"{100 * share:.0f} %"))
        return "\n".join(lines)


def _anchor_location(centre: tuple[float, float], stride: float, offset: float, feature_hw: tuple[int, int]) -> tuple[int, int]:
    """Grid cell ``(row, column)`` whose anchor centre ``((i + offset) * stride)`` is nearest ``centre``."""
    cx, cy = centre
    column = int(np.clip(round(cx / stride - offset), 0, feature_hw[1] - 1))
    row = int(np.clip(round(cy / stride - offset), 0, feature_hw[0] - 1))
    return row, column


def anchor_explorer_view(image: torch.Tensor, target: Mapping, stride: float = 16.0,
                         sizes: Sequence[float] = (32.0, 64.0, 128.0), aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                         offset: float = 0.0, pos_iou: float = 0.7, neg_iou: float = 0.3, focus: int | None = None,
                         figsize: tuple[float, float] = (9.0, 4.1)) -> tuple[Figure, AnchorExplorerReport]:
    """One image (``Tensor[3, H, W]``) and its target (``boxes`` ``Tensor[N, 4]`` xyxy, ``area``, ``iscrowd``)
    matched against one anchor level (``stride``, ``sizes``, ``aspect_ratios`` as ``h / w``, centre ``offset``)
    by the RPN rule of :func:`sodlib.anchors.match_anchors` (positive at IoU ``>= pos_iou`` or best anchor of an
    object, every tie counted; negative below ``neg_iou``).

    Left: the image with ground-truth boxes coloured by size bin, every positive anchor in its object's colour
    (thin), and all anchor shapes at the grid location nearest object ``focus`` (default: the first small object)
    in white. Right: each object's best IoU as a bar with its matched-anchor count, and the two thresholds.
    Crowd regions are drawn but not matched. Returns the figure and an :class:`AnchorExplorerReport`.
    """
    if not 0.0 < neg_iou <= pos_iou <= 1.0:
        raise ValueError(f"need 0 < neg_iou <= pos_iou <= 1, got neg_iou={neg_iou}, pos_iou={pos_iou}")
    anchor_set = AnchorSet.single_level(stride, sizes, aspect_ratios, offset=offset, size_divisible=1)
    height, width = int(image.shape[-2]), int(image.shape[-1])
    anchors = anchor_set.anchors_for_image(height, width)
    boxes = target["boxes"].reshape(-1, 4).to(torch.float64)
    areas = target["area"].reshape(-1).to(torch.float64)
    crowd = target.get("iscrowd", torch.zeros(len(boxes), dtype=torch.int64)).reshape(-1).bool()
    valid = (~crowd) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    indices = torch.nonzero(valid).flatten().tolist()
    report = AnchorExplorerReport(anchors=int(anchors.shape[0]), anchor_set=anchor_set.describe())
    figure, (ax_image, ax_bars) = plt.subplots(1, 2, figsize=figsize, gridspec_kw={"width_ratios": [1.25, 1.0]})
    draw_target(ax_image, image, target)
    if indices:
        kept = boxes[indices]
        match = match_anchors(anchors, kept, pos_iou, neg_iou, allow_low_quality=True, ties="all")
        above = (box_iou(kept, anchors) >= pos_iou).sum(dim=1)
        report.positive_anchors = int((match.labels == 1).sum())
        small_total = small_without = 0
        for k, index in enumerate(indices):
            area = float(areas[index])
            name = size_bin_label(area)
            report.objects.append({"index": index, "bin": name, "side": math.sqrt(max(area, 0.0)),
                                   "matched": int(match.matched_anchors_per_object[k]),
                                   "above_threshold": int(above[k]), "best_iou": float(match.best_iou_per_object[k])})
            if area <= SIZE_BINS["small"][1]:
                small_total += 1
                small_without += int(above[k] == 0)
        if small_total:
            report.small_without_anchor_share = small_without / small_total
        for k, index in enumerate(indices):  # positive anchors, in their object's colour
            colour = SIZE_BIN_COLORS[report.objects[k]["bin"]]
            for x1, y1, x2, y2 in anchors[match.matched_object == k].tolist():
                ax_image.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour,
                                                     linewidth=0.6, alpha=0.7, linestyle="--"))
        if focus is None:
            small = [k for k, row in enumerate(report.objects) if row["bin"] == "small"]
            focus_k = small[0] if small else 0
        else:
            if focus not in indices:
                raise ValueError(f"focus={focus} is not a non-crowd object of this image; choose one of {indices}")
            focus_k = indices.index(focus)
        report.focus = indices[focus_k]
        x1, y1, x2, y2 = kept[focus_k].tolist()
        feature_hw = anchor_set.feature_sizes(height, width)[0]
        row, column = _anchor_location(((x1 + x2) / 2, (y1 + y2) / 2), float(stride), float(offset), feature_hw)
        per_location = anchor_set.anchors_per_location[0]
        start = (row * feature_hw[1] + column) * per_location
        for ax1, ay1, ax2, ay2 in anchors[start:start + per_location].tolist():
            ax_image.add_patch(patches.Rectangle((ax1, ay1), ax2 - ax1, ay2 - ay1, fill=False, edgecolor="white",
                                                 linewidth=1.0, alpha=0.9))
        ax_image.plot([(column + offset) * stride], [(row + offset) * stride], "w+", markersize=8, mew=1.5)
        # right panel: best IoU per object, matched counts as labels
        order = np.argsort([row["side"] for row in report.objects])
        y = np.arange(len(order))
        best = [report.objects[k]["best_iou"] for k in order]
        colours = [SIZE_BIN_COLORS[report.objects[k]["bin"]] for k in order]
        ax_bars.barh(y, best, color=colours, height=0.7)
        for yy, k in zip(y, order):
            row_ = report.objects[k]
            ax_bars.text(min(row_["best_iou"], 1.0) + 0.01, yy, f"{row_['matched']} matched / {row_['above_threshold']} >= t",
                         va="center", fontsize=7)
        ax_bars.set_yticks(y, [f"#{report.objects[k]['index']} {report.objects[k]['side']:.0f}px" for k in order], fontsize=7)
        ax_bars.set_ylim(-0.6, len(order) - 0.4)
    ax_bars.axvline(pos_iou, color="tab:green", linewidth=1.0, label=f"positive >= {pos_iou:g}")
    ax_bars.axvline(neg_iou, color="0.5", linewidth=1.0, linestyle=":", label=f"negative < {neg_iou:g}")
    ax_bars.set_xlim(0, 1.45)
    ax_bars.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax_bars.set_xlabel("best anchor IoU (objects by side)")
    ax_bars.legend(fontsize=7, frameon=False, loc="lower right")
    share = report.small_without_anchor_share
    ax_bars.set_title("small objects with no anchor >= t: " + ("-" if math.isnan(share) else f"{100 * share:.0f} %"), fontsize=9.5)
    sizes_text = "/".join(f"{v:g}" for v in sizes)
    ratios_text = "/".join(f"{v:g}" for v in aspect_ratios)
    ax_image.set_title(f"stride {stride:g}, sizes {sizes_text}, ratios {ratios_text}, offset {offset:g}", fontsize=9)
    figure.tight_layout()
    return figure, report


# ----------------------------------------------------------------------------------------------------------
# anchor design and its effect
# ----------------------------------------------------------------------------------------------------------
def _pixel_log_axis(axis) -> None:
    """A base-2 log axis labelled in plain pixels (4, 8, 16, ...)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.axes.set_xscale("log", base=2) if axis is axis.axes.xaxis else axis.axes.set_yscale("log", base=2)
    axis.set_major_locator(LogLocator(base=2))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def plot_anchor_design(stride: float, iou_threshold: float, anchor_sizes: Sequence[float],
                       sides: np.ndarray | Sequence[float] | None = None, side_range: tuple[float, float] | None = None,
                       title: str | None = None) -> Figure:
    """How a set of square anchors covers object sides at the worst placement ``d = stride / 2``.

    Left: the band ``[a_lo(s), a_hi(s)]`` of anchor sides that match an object of side ``s`` (from
    :func:`sodlib.anchors.anchor_size_bounds`), with the chosen ``anchor_sizes`` as horizontal lines: an object is
    covered where some line crosses the band. Right: the worst-case IoU of each anchor against ``s`` and their
    upper envelope, the threshold, ``s_min``, and (if ``sides`` is given) the histogram of the data's sides.
    """
    t = float(iou_threshold)
    s_min = min_matchable_size(stride, t)
    sides_arr = None if sides is None else np.asarray(sides, dtype=np.float64)
    if side_range is None:
        if sides_arr is not None and sides_arr.size:
            side_range = (max(1.0, float(np.quantile(sides_arr, 0.005)) * 0.8), float(np.quantile(sides_arr, 0.995)) * 1.2)
        else:
            side_range = (1.0, 4.0 * max(anchor_sizes))
    grid = np.geomspace(side_range[0], side_range[1], 300)
    bounds = [anchor_size_bounds(s, stride, t) for s in grid]
    ok = np.array([b is not None for b in bounds])
    lo = np.array([b[0] if b else np.nan for b in bounds])
    hi = np.array([b[1] if b else np.nan for b in bounds])
    figure, (ax_band, ax_iou) = plt.subplots(1, 2, figsize=(11.0, 3.8))
    ax_band.fill_between(grid[ok], lo[ok], hi[ok], color="tab:blue", alpha=0.2, label="anchor sides that match (worst placement)")
    ax_band.plot(grid[ok], grid[ok] + stride, "b:", linewidth=1.0, label="best anchor a = s + S")
    for k, a in enumerate(anchor_sizes):
        ax_band.axhline(a, color="tab:orange", linewidth=1.0, label="chosen anchor sides" if k == 0 else None)
    ax_band.axvline(s_min, color="tab:red", linewidth=1.0, linestyle="--", label=f"s_min = {s_min:.1f} px")
    for axis in (ax_band.xaxis, ax_band.yaxis, ax_iou.xaxis):
        _pixel_log_axis(axis)
    ax_band.set_yticks(list(anchor_sizes), [f"{a:.1f}" for a in anchor_sizes], fontsize=7.5)
    ax_band.set_xlim(*side_range)
    ax_band.set_xlabel("object side s (px)")
    ax_band.set_ylabel("anchor side a (px)")
    ax_band.set_title(f"stride {stride:g}, t = {t:g}: which anchors match which objects", fontsize=10)
    ax_band.legend(fontsize=7, frameon=False, loc="upper left")
    curves = np.array([worst_case_iou(grid, a, stride / 2.0) for a in anchor_sizes])
    for a, curve in zip(anchor_sizes, curves):
        ax_iou.plot(grid, curve, linewidth=0.9, alpha=0.8)
    ax_iou.plot(grid, curves.max(axis=0), "k-", linewidth=2.0, label="best of the set")
    ax_iou.axhline(t, color="tab:green", linewidth=1.0, label=f"t = {t:g}")
    ax_iou.axvline(s_min, color="tab:red", linewidth=1.0, linestyle="--", label="s_min")
    ax_iou.set_xlim(*side_range)
    ax_iou.set_ylim(0, 1)
    ax_iou.set_xlabel("object side s (px)")
    ax_iou.set_ylabel("worst-case IoU (d = S/2)")
    ax_iou.set_title("worst-case IoU of each chosen anchor", fontsize=10)
    if sides_arr is not None and sides_arr.size:
        twin = ax_iou.twinx()
        edges = np.geomspace(side_range[0], side_range[1], 41)
        twin.hist(sides_arr, bins=edges, color="0.6", alpha=0.3)
        twin.set_yticks([])
        twin.set_ylabel("objects (grey)", fontsize=8)
        ax_iou.set_zorder(twin.get_zorder() + 1)  # curves above the histogram
        ax_iou.patch.set_visible(False)
    ax_iou.legend(fontsize=7, frameon=False, loc="upper right")
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


def plot_matching_comparison(results: Mapping[str, AnchorMatchingStatistics], *, above_threshold: Mapping[str, AnchorMatchingStatistics] | None = None,
                             title: str = "anchor sets compared per size bin") -> Figure:
    """Bars per size bin and anchor set: matched anchors per object and mean best IoU (from
    :func:`sodlib.stats.anchor_matching_statistics`), and, when ``above_threshold`` is given (the same sets
    matched with ``allow_low_quality=False``), the anchors per object that reach the positive threshold on
    their own."""
    panels = [("matched_anchors_per_object", "matched anchors / object", results),
              ("mean_best_iou", "mean best IoU", results)]
    if above_threshold is not None:
        panels.insert(1, ("matched_anchors_per_object", "anchors >= threshold / object", above_threshold))
    names = list(results)
    bins = list(SIZE_BINS)
    width = 0.8 / max(1, len(names))
    figure, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.3))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, label, source) in zip(axes, panels):
        for k, name in enumerate(names):
            values = [getattr(b, key) for b in source[name].bins]
            positions = np.arange(len(bins)) + (k - (len(names) - 1) / 2) * width
            bars = ax.bar(positions, values, width=width, color=colours[k % len(colours)], label=name)
            ax.bar_label(bars, fmt="%.2f", fontsize=6.5, padding=1)
        ax.set_xticks(np.arange(len(bins)), bins)
        ax.set_title(label, fontsize=10)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.15)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(names), frameon=False, fontsize=8)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure
