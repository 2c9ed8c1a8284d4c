"""Figures and tables of notebook 01 (dataset statistics, Kisantal et al. Table 2).

Every plotting function returns a matplotlib ``Figure``; :func:`table_beside_paper` returns text. The inputs
are the results of :func:`sodlib.stats.size_statistics` and :func:`sodlib.stats.anchor_matching_statistics`
(or plain arrays), so the figures can be drawn for any COCO file.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from sodlib.data.sizes import SIZE_BIN_COLORS, SIZE_BINS
from sodlib.stats import AnchorMatchingStatistics, SizeStatistics
from sodlib.tables import format_table

__all__ = [
    "KISANTAL_TABLE_2",
    "R16_MEAN_BEST_IOU",
    "plot_best_iou_vs_side",
    "plot_category_small_share",
    "plot_share_bars",
    "plot_side_histogram",
    "size_shares",
    "table_beside_paper",
]

#: Kisantal et al. (2019), Table 2, COCO train2017 (R3-R8): per size bin, in percent except the last two.
KISANTAL_TABLE_2: dict[str, dict[str, float]] = {
    "objects": {"small": 41.43, "medium": 34.32, "large": 24.24},
    "images": {"small": 51.82, "medium": 70.07, "large": 82.28},
    "area": {"small": 1.23, "medium": 10.18, "large": 88.59},
    "positive_anchors": {"small": 29.96, "medium": 25.54, "large": 44.49},
    "anchors_per_object": {"small": 1.00, "medium": 1.03, "large": 2.54},
    "mean_best_iou": {"small": 0.29, "medium": 0.57, "large": 0.66},
}

#: R16: mean best IoU of a randomly placed square of the given side against the FPN anchors (a test oracle).
R16_MEAN_BEST_IOU: dict[int, float] = {8: 0.06, 16: 0.25, 20: 0.39, 24: 0.56, 28: 0.77}

_SHARE_TITLES = {"objects": "objects", "images": "images holding one", "area": "annotated pixel area"}


def size_shares(sizes: SizeStatistics) -> dict[str, dict[str, float]]:
    """``{"objects" | "images" | "area": {bin: percent}}`` of a :class:`~sodlib.stats.SizeStatistics`,
    in the layout of :data:`KISANTAL_TABLE_2`."""
    return {
        "objects": {b.bin: 100.0 * b.object_share for b in sizes.bins},
        "images": {b.bin: 100.0 * b.image_share for b in sizes.bins},
        "area": {b.bin: 100.0 * b.area_share for b in sizes.bins},
    }


def _pixel_log_x(ax) -> None:
    """Base-2 log x axis labelled in plain pixels (4, 8, 16, ...)."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _shade_bins(ax, top: float | None = None) -> None:
    """Light background per COCO bin on a side axis, with the 32 and 96 px edges as lines."""
    edges = [0.5, 32.0, 96.0, 5000.0]
    for (name, lo, hi) in zip(SIZE_BINS, edges[:-1], edges[1:]):
        ax.axvspan(lo, hi, color=SIZE_BIN_COLORS[name], alpha=0.07, zorder=0)
    for edge in (32.0, 96.0):
        ax.axvline(edge, color="0.3", linewidth=1.0, linestyle="--", zorder=1)
        ax.text(edge, 0.02, f" {edge:g} px", transform=ax.get_xaxis_transform(), rotation=90, fontsize=7,
                color="0.3", ha="right", va="bottom")


def plot_side_histogram(sides: Mapping[str, Sequence[float] | np.ndarray], *, bins_per_octave: int = 4,
                        title: str = "object side sqrt(area), share of objects") -> Figure:
    """Histogram of object sides ``sqrt(area)`` on a log axis, one step line per source, with the 32 / 96 px
    edges of COCO's bins (area 32^2 and 96^2).

    ``sides`` maps a source name to ``float [N]`` sides in pixels. Bars are ``bins_per_octave`` per doubling of
    the side; heights are the percentage of the source's objects in each bar, so sources of different sizes
    compare directly.
    """
    arrays = {name: np.asarray(v, dtype=np.float64) for name, v in sides.items()}
    positive = np.concatenate([a[a > 0] for a in arrays.values()]) if arrays else np.zeros(0)
    if positive.size == 0:
        raise ValueError("sides holds no positive side; pass {source: sqrt(areas)}")
    lo = 2.0 ** math.floor(math.log2(max(positive.min(), 0.5)))
    hi = 2.0 ** math.ceil(math.log2(positive.max() * 1.0001))
    edges = 2.0 ** np.arange(math.log2(lo), math.log2(hi) + 1e-9, 1.0 / bins_per_octave)
    figure, ax = plt.subplots(figsize=(7.0, 3.4))
    _shade_bins(ax)
    for name, values in arrays.items():
        counts, _ = np.histogram(values[values > 0], bins=edges)
        share = 100.0 * counts / max(1, values.size)
        ax.stairs(share, edges, linewidth=1.8, label=f"{name} ({values.size:,} objects)")
    _pixel_log_x(ax)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("object side sqrt(area) (px, log scale)")
    ax.set_ylabel("% of objects")
    ymax = ax.get_ylim()[1] * 1.12
    ax.set_ylim(0, ymax)
    for name, x in zip(SIZE_BINS, (np.sqrt(edges[0] * 32.0), np.sqrt(32.0 * 96.0), np.sqrt(96.0 * edges[-1]))):
        ax.text(x, ymax * 0.97, name, ha="center", va="top", fontsize=9, color=SIZE_BIN_COLORS[name])
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    return figure


def plot_share_bars(shares: Mapping[str, Mapping[str, Mapping[str, float]]], *,
                    title: str = "share per size bin: objects, images, pixels") -> Figure:
    """Three panels (objects, images holding at least one, annotated pixel area), bars per bin and source.

    ``shares`` maps a source name to ``{"objects" | "images" | "area": {bin: percent}}`` (see
    :func:`size_shares`; :data:`KISANTAL_TABLE_2` has the same layout for the paper's COCO train2017).
    """
    sources = list(shares)
    if not sources:
        raise ValueError("shares is empty; pass {source: size_shares(stats)}")
    bins = list(SIZE_BINS)
    width = 0.8 / len(sources)
    figure, axes = plt.subplots(1, 3, figsize=(10.5, 3.3), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes, ("objects", "images", "area")):
        for k, source in enumerate(sources):
            positions = np.arange(len(bins)) + (k - (len(sources) - 1) / 2) * width
            values = [shares[source][metric].get(name, float("nan")) for name in bins]
            bars = ax.bar(positions, values, width=width, color=colours[k % len(colours)], label=source)
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
        ax.set_xticks(np.arange(len(bins)), bins)
        ax.set_title(_SHARE_TITLES[metric], fontsize=10)
        ax.set_ylim(0, 105)
    axes[0].set_ylabel("% (per bin)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(sources), frameon=False, fontsize=8)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure


def _binned_mean(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``y`` in each ``[edges[i], edges[i+1])`` of ``x`` (bins with fewer than 3 points are dropped)."""
    index = np.digitize(x, edges) - 1
    centres, means = [], []
    for i in range(len(edges) - 1):
        member = index == i
        if member.sum() >= 3:
            centres.append(np.sqrt(edges[i] * edges[i + 1]))
            means.append(y[member].mean())
    return np.asarray(centres), np.asarray(means)


def plot_best_iou_vs_side(results: Mapping[str, tuple[np.ndarray, np.ndarray]], *, pos_iou: float = 0.7,
                          oracle: Mapping[int, float] | None = R16_MEAN_BEST_IOU, smallest_anchor: float = 32.0,
                          smallest_stride: float = 4.0,
                          max_points: int = 4000, seed: int = 0,
                          title: str = "each object's best anchor IoU against its side") -> Figure:
    """Scatter of each object's best-anchor IoU against its side ``sqrt(area)``, with the mean per quarter
    octave as a line for each source.

    ``results`` maps a source name to ``(sides float [N], best_iou float [N])``, e.g.
    ``(np.sqrt(stats.areas), stats.best_iou)`` of an :class:`~sodlib.stats.AnchorMatchingStatistics`. Drawn
    beside them: the positive threshold ``pos_iou``; the R16 oracle points (random squares against the FPN set);
    and the curve ``IoU = s^2 / a^2`` of a square of side ``s`` lying inside the smallest anchor ``a`` (what
    a small object can reach when it fits inside that anchor at any placement, ``s <= a - smallest_stride``, which
    R16 follows). At most ``max_points`` points
    per source are drawn (a seeded random subset); the means use every object.
    """
    figure, ax = plt.subplots(figsize=(7.0, 3.8))
    _shade_bins(ax)
    rng = np.random.default_rng(seed)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    all_sides = []
    for k, (name, (sides, best)) in enumerate(results.items()):
        sides, best = np.asarray(sides, dtype=np.float64), np.asarray(best, dtype=np.float64)
        keep = sides > 0
        sides, best = sides[keep], best[keep]
        all_sides.append(sides)
        shown = rng.choice(sides.size, size=min(max_points, sides.size), replace=False) if sides.size else np.zeros(0, dtype=int)
        colour = colours[k % len(colours)]
        ax.scatter(sides[shown], best[shown], s=4, alpha=0.25, color=colour, linewidths=0)
        edges = 2.0 ** np.arange(0, 12.01, 0.25)
        centres, means = _binned_mean(sides, best, edges)
        ax.plot(centres, means, "-", color=colour, linewidth=2.0, label=f"{name}: mean per 1/4 octave")
    grid = np.linspace(1.0, smallest_anchor - smallest_stride, 200)
    ax.plot(grid, (grid / smallest_anchor) ** 2, ":", color="black", linewidth=1.4,
            label=f"square inside a {smallest_anchor:g} px anchor: $s^2/{smallest_anchor:g}^2$")
    if oracle:
        ax.plot(list(oracle), list(oracle.values()), "kD", markersize=5, label="R16 oracle (random squares, FPN anchors)")
    ax.axhline(pos_iou, color="tab:green", linewidth=1.0, label=f"positive threshold {pos_iou:g}")
    _pixel_log_x(ax)
    low = min((s.min() for s in all_sides if s.size), default=2.0)
    high = max((s.max() for s in all_sides if s.size), default=512.0)
    ax.set_xlim(max(1.0, low * 0.8), high * 1.25)
    ax.set_ylim(0, 1)
    ax.set_xlabel("object side sqrt(area) (px, log scale)")
    ax.set_ylabel("best anchor IoU")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=7.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    return figure


def plot_category_small_share(sizes: SizeStatistics, *, top: int = 12, min_objects: int = 10,
                              title: str | None = None) -> Figure:
    """Horizontal stacked bars: the ``top`` categories with the largest small-object share, each split into
    its small / medium / large shares, with the object count at the end of the bar.

    Categories with fewer than ``min_objects`` objects are left out (their shares are noise).
    """
    categories = [c for c in sizes.categories if c.objects >= min_objects][:top]
    if not categories:
        raise ValueError(f"no category has {min_objects} objects or more; lower min_objects")
    figure, ax = plt.subplots(figsize=(6.8, 0.32 * len(categories) + 1.3))
    y = np.arange(len(categories))[::-1]
    left = np.zeros(len(categories))
    for name in SIZE_BINS:
        values = np.array([100.0 * c.share_per_bin.get(name, 0.0) for c in categories])
        ax.barh(y, values, left=left, color=SIZE_BIN_COLORS[name], label=name, height=0.7)
        left += values
    for yy, c, end in zip(y, categories, left):
        ax.text(end + 1, yy, f"{c.objects}", va="center", fontsize=7.5)
    ax.set_yticks(y, [c.name for c in categories], fontsize=8.5)
    ax.set_xlim(0, 118)
    ax.set_xlabel(f"% of the category's objects (bins by {sizes.area_mode} area)")
    ax.set_title(title or f"categories with the largest small-object share (at least {min_objects} objects)", fontsize=10)
    ax.legend(frameon=False, fontsize=8, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.06))
    figure.tight_layout()
    return figure


def table_beside_paper(sizes: SizeStatistics, matching: AnchorMatchingStatistics | None = None,
                       paper: Mapping[str, Mapping[str, float]] = KISANTAL_TABLE_2, label: str = "measured") -> str:
    """Kisantal's Table 2 layout, two rows per bin: ours (``label``) and the paper's, rounded for printing.

    Columns: object %, image %, pixel-area %, and with ``matching`` the share of positive anchors %, matched
    anchors per object and mean best-anchor IoU.
    """
    header = ["bin", "source", "objects %", "images %", "area %"]
    if matching is not None:
        header += ["pos. anchors %", "anchors/object", "mean max IoU"]
    shares = size_shares(sizes)
    rows = []
    for k, b in enumerate(sizes.bins):
        ours = [f"{shares['objects'][b.bin]:.2f}", f"{shares['images'][b.bin]:.2f}", f"{shares['area'][b.bin]:.2f}"]
        theirs = [f"{paper['objects'][b.bin]:.2f}", f"{paper['images'][b.bin]:.2f}", f"{paper['area'][b.bin]:.2f}"]
        if matching is not None:
            m = matching.bins[k]
            ours += [f"{100 * m.positive_anchor_share:.2f}", f"{m.matched_anchors_per_object:.2f}", f"{m.mean_best_iou:.2f}"]
            theirs += [f"{paper['positive_anchors'][b.bin]:.2f}", f"{paper['anchors_per_object'][b.bin]:.2f}",
                       f"{paper['mean_best_iou'][b.bin]:.2f}"]
        rows.append([b.bin, label, *ours])
        rows.append(["", "Kisantal", *theirs])
    return format_table(rows, header)
