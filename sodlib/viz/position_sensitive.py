"""Figures of notebook 05 (R-FCN): the k x k position-sensitive maps of a detection, and the pooling explorer.

:func:`ps_pooling_explorer_view` is the pure function behind the explorer widget
(:func:`sodlib.viz.widgets.ps_pooling_explorer`): a box moved by sub-pixel steps over a stride-16 map, the bins
each pooling really reads (:func:`sodlib.ops.effective_bin_centres`) and the voted score of each pooling against
the shift: a staircase for PS-RoI pooling, smooth for PS-PrRoI.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.patches as patches
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from sodlib.ops.position_sensitive import POOLINGS, effective_bin_centres, position_sensitive_vote, ps_pool
from sodlib.ops.roi_pool_geometry import exact_bins_in_pixels

__all__ = ["POOLING_STYLES", "PSPoolingReport", "bin_misalignment_px", "voted_scores", "ps_pooling_explorer_view",
           "plot_score_map_grid", "plot_misalignment_by_pooling"]

#: Colour, marker and label of each pooling in every figure of the notebook.
POOLING_STYLES: dict[str, tuple[str, str, str]] = {
    "ps_roi_pool": ("tab:red", "s", "PS-RoI pooling"),
    "ps_roi_align": ("tab:blue", "x", "PS-RoIAlign"),
    "ps_prroi": ("tab:green", "o", "PS-PrRoI"),
}


def _rois(boxes: torch.Tensor) -> torch.Tensor:
    """``Tensor[R, 4]`` boxes of image 0 -> ``Tensor[R, 5]`` RoIs (float64)."""
    boxes = boxes.double().reshape(-1, 4)
    return torch.cat([boxes.new_zeros(len(boxes), 1), boxes], dim=1)


def bin_misalignment_px(boxes: torch.Tensor, k: int, stride: int, feature_size: tuple[int, int], pooling: str,
                        sampling_ratio: int = 2) -> torch.Tensor:
    """Distance in image pixels from where each bin of each box really looks (:func:`effective_bin_centres`) to
    the centre of the exact bin: ``Tensor[R, k, k]``. ``boxes``: ``Tensor[R, 4]`` inside the map."""
    rois = _rois(boxes)
    exact = exact_bins_in_pixels(rois, (k, k))
    centres = torch.stack([(exact[..., 0] + exact[..., 2]) / 2, (exact[..., 1] + exact[..., 3]) / 2], dim=-1)
    return (effective_bin_centres(rois, k, stride, feature_size, pooling, sampling_ratio) - centres).norm(dim=-1)


def voted_scores(score_maps: torch.Tensor, boxes: torch.Tensor, stride: int, pooling: str,
                 sampling_ratio: int = 2) -> torch.Tensor:
    """R-FCN's voted score of each box, ``Tensor[R]``: ``score_maps`` ``Tensor[1, k^2, H, W]`` (one class, one
    image) pooled by ``pooling`` over ``boxes`` ``Tensor[R, 4]`` and averaged over the ``k x k`` bins."""
    k = int(round(score_maps.shape[1] ** 0.5))
    if k * k != score_maps.shape[1]:
        raise ValueError(f"score_maps must have k^2 channels, got {score_maps.shape[1]}")
    pooled = ps_pool(score_maps.double(), _rois(boxes), k, 1.0 / stride, pooling, sampling_ratio)
    return position_sensitive_vote(pooled)[:, 0]


@dataclass
class PSPoolingReport:
    """What the explorer shows: the box, each pooling's voted score and its worst bin misalignment (px)."""

    box: tuple[float, float, float, float]
    scores: dict[str, float]
    worst_misalignment_px: dict[str, float]

    def summary(self) -> str:
        x1, y1, x2, y2 = self.box
        lines = [f"box ({x1:.2f}, {y1:.2f}, {x2:.2f}, {y2:.2f}), {x2 - x1:.1f} px wide"]
        for pooling in POOLINGS:
            lines.append(f"{POOLING_STYLES[pooling][2]:15s} score {self.scores[pooling]:+.3f}   worst bin off by "
                         f"{self.worst_misalignment_px[pooling]:.2f} px")
        return "\n".join(lines)


def ps_pooling_explorer_view(score_maps: torch.Tensor, truth: Sequence[float], shift_x: float = 0.0,
                             shift_y: float = 0.0, side: float | None = None, stride: int = 16,
                             shifts: Sequence[float] | None = None) -> tuple[Figure, PSPoolingReport]:
    """A box of ``side`` px (default: the object's width) centred on the object ``truth`` ``(x1, y1, x2, y2)`` plus
    ``(shift_x, shift_y)`` px, pooled from the object's ``k x k`` score maps ``Tensor[1, k^2, H, W]`` at
    ``stride``. Left: the feature cells, the box, the exact bin centres and where PS-RoI pooling and PS-RoIAlign
    really look. Right: the voted score of each pooling against the horizontal shift (``shifts``, default one
    cell either way in quarter-pixel steps), the current shift marked."""
    k = int(round(score_maps.shape[1] ** 0.5))
    height, width = score_maps.shape[-2:]
    x1, y1, x2, y2 = (float(v) for v in truth)
    side = float(side) if side is not None else x2 - x1
    if not side > 0:
        raise ValueError(f"side={side!r} must be positive (px)")
    centre_x, centre_y = (x1 + x2) / 2 + shift_x, (y1 + y2) / 2 + shift_y
    box = torch.tensor([centre_x - side / 2, centre_y - side / 2, centre_x + side / 2, centre_y + side / 2])
    if box[0] < 0 or box[1] < 0 or box[2] > (width - 1) * stride or box[3] > (height - 1) * stride:
        raise ValueError(f"the box {box.tolist()} leaves the map ({width} x {height} cells at stride {stride}); "
                         "fix: a smaller shift or side")
    shifts = torch.tensor(list(shifts) if shifts is not None else np.arange(-stride, stride + 0.125, 0.25),
                          dtype=torch.float64)
    along = box.double()[None].repeat(len(shifts), 1)
    along[:, 0::2] += (shifts - shift_x)[:, None]
    scores, worst, curves = {}, {}, {}
    for pooling in POOLINGS:
        scores[pooling] = float(voted_scores(score_maps, box[None], stride, pooling)[0])
        worst[pooling] = float(bin_misalignment_px(box[None], k, stride, (height, width), pooling).max())
        curves[pooling] = voted_scores(score_maps, along, stride, pooling).numpy()

    fig, (ax_grid, ax_curve) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1, 1.25]})
    margin = stride * 1.5
    lo_x, hi_x = min(x1, float(box[0])) - margin, max(x2, float(box[2])) + margin
    lo_y, hi_y = min(y1, float(box[1])) - margin, max(y2, float(box[3])) + margin
    for edge in np.arange(np.floor(lo_x / stride) - 0.5, hi_x / stride + 1) * stride:
        ax_grid.axvline(edge, color="0.85", linewidth=0.8, zorder=0)
    for edge in np.arange(np.floor(lo_y / stride) - 0.5, hi_y / stride + 1) * stride:
        ax_grid.axhline(edge, color="0.85", linewidth=0.8, zorder=0)
    ax_grid.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="0.4", linestyle=":",
                                        linewidth=1.2, label="object"))
    bx1, by1, bx2, by2 = box.tolist()
    ax_grid.add_patch(patches.Rectangle((bx1, by1), bx2 - bx1, by2 - by1, fill=False, edgecolor="black",
                                        linewidth=1.6, label="RoI"))
    for pooling in POOLINGS:
        colour, marker, label = POOLING_STYLES[pooling]
        centres = effective_bin_centres(_rois(box[None]), k, stride, (height, width), pooling)[0].reshape(-1, 2)
        ax_grid.scatter(centres[:, 0], centres[:, 1], s=22 if marker != "o" else 10, color=colour, marker=marker,
                        label=f"{label} bins", zorder=3, alpha=0.85)
    ax_grid.set_xlim(lo_x, hi_x)
    ax_grid.set_ylim(hi_y, lo_y)
    ax_grid.set_aspect("equal")
    ax_grid.set_xlabel("x (image px)")
    ax_grid.set_ylabel("y (image px)")
    ax_grid.set_title(f"{side:.1f} px RoI, {k} x {k} bins, stride {stride}: where each bin reads", fontsize=9)
    ax_grid.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=7, frameon=False)
    for pooling in POOLINGS:
        colour, _, label = POOLING_STYLES[pooling]
        ax_curve.plot(shifts.numpy(), curves[pooling], color=colour, label=label,
                      drawstyle="steps-mid" if pooling == "ps_roi_pool" else "default")
    ax_curve.axvline(shift_x, color="black", linewidth=0.8, linestyle="--", label="current shift")
    ax_curve.set_xlabel("horizontal shift of the RoI (px)")
    ax_curve.set_ylabel("voted score (mean of the k x k bins)")
    ax_curve.set_title("moving the RoI: the staircase of rounding against the exact integral", fontsize=9)
    ax_curve.legend(fontsize=8)
    fig.tight_layout()
    return fig, PSPoolingReport(tuple(float(v) for v in box), scores, worst)


def plot_score_map_grid(class_maps: torch.Tensor, box: Sequence[float], stride: int, title: str = "",
                        margin_cells: float = 1.5) -> Figure:
    """R-FCN's picture of one detection: the ``k x k`` position-sensitive maps of its class, each cropped around the
    box with its own bin outlined (the only part of it that bin reads), and the pooled bins with their vote.

    ``class_maps``: ``Tensor[k^2, H, W]`` (map ``i * k + j`` for bin row ``i``, column ``j``); ``box``: image px.
    """
    k = int(round(class_maps.shape[0] ** 0.5))
    x1, y1, x2, y2 = (float(v) for v in box)
    pooled = ps_pool(class_maps[None].double(), _rois(torch.tensor([box])), k, 1.0 / stride, "ps_prroi")[0, 0]
    maps = class_maps.detach().double()
    lo_x, hi_x = x1 - margin_cells * stride, x2 + margin_cells * stride
    lo_y, hi_y = y1 - margin_cells * stride, y2 + margin_cells * stride
    c0, c1 = max(int(np.floor(lo_x / stride)), 0), min(int(np.ceil(hi_x / stride)) + 1, maps.shape[-1])
    r0, r1 = max(int(np.floor(lo_y / stride)), 0), min(int(np.ceil(hi_y / stride)) + 1, maps.shape[-2])
    crop = maps[:, r0:r1, c0:c1].numpy()
    extent = ((c0 - 0.5) * stride, (c1 - 0.5) * stride, (r1 - 0.5) * stride, (r0 - 0.5) * stride)
    limit = float(np.abs(crop).max()) or 1.0
    fig = plt.figure(figsize=(2.0 * k * 0.55 + 4.2, 2.0 * k * 0.55 + 0.6))
    grid = fig.add_gridspec(k, k + 4)
    bin_w, bin_h = (x2 - x1) / k, (y2 - y1) / k
    for i in range(k):
        for j in range(k):
            ax = fig.add_subplot(grid[i, j])
            ax.imshow(crop[i * k + j], cmap="RdBu_r", vmin=-limit, vmax=limit, extent=extent)
            ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="0.3", linewidth=0.6))
            ax.add_patch(patches.Rectangle((x1 + j * bin_w, y1 + i * bin_h), bin_w, bin_h, fill=False,
                                           edgecolor="black", linewidth=1.4))
            ax.set_xticks([])
            ax.set_yticks([])
    ax_vote = fig.add_subplot(grid[:, k + 1:])
    image = ax_vote.imshow(pooled.numpy(), cmap="RdBu_r", vmin=-float(pooled.abs().max()), vmax=float(pooled.abs().max()))
    for i in range(k):
        for j in range(k):
            ax_vote.text(j, i, f"{float(pooled[i, j]):.1f}", ha="center", va="center", fontsize=7)
    ax_vote.set_xticks([])
    ax_vote.set_yticks([])
    ax_vote.set_title(f"pooled bins (PS-PrRoI)\nvote = mean = {float(pooled.mean()):.2f}", fontsize=9)
    fig.colorbar(image, ax=ax_vote, fraction=0.046, pad=0.04)
    fig.suptitle(title or f"the {k} x {k} score maps of one class around a {x2 - x1:.0f} x {y2 - y1:.0f} px detection",
                 fontsize=10)
    return fig


def plot_misalignment_by_pooling(sides: Sequence[float], mean_px: dict[str, Sequence[float]],
                                 worst_px: dict[str, Sequence[float]], stride: int, k: int) -> Figure:
    """Mean and worst bin misalignment (px) of each pooling against the RoI side, at ``stride`` with ``k x k`` bins."""
    fig, (ax_mean, ax_worst) = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for pooling in mean_px:
        colour, marker, label = POOLING_STYLES[pooling]
        ax_mean.plot(sides, mean_px[pooling], marker=marker, color=colour, label=label)
        ax_worst.plot(sides, worst_px[pooling], marker=marker, color=colour, label=label)
    for ax, what in ((ax_mean, "mean"), (ax_worst, "worst")):
        ax.axhline(stride / 2, color="0.6", linewidth=0.8, linestyle=":", label="half a cell")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("RoI side (px)")
        ax.set_title(f"{what} over bins and sub-pixel positions", fontsize=9)
    ax_mean.set_ylabel("bin misalignment (px)")
    ax_mean.legend(fontsize=8)
    fig.suptitle(f"where a {k} x {k} bin reads against where it should, stride {stride}", fontsize=10)
    fig.tight_layout()
    return fig
