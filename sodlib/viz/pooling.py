"""Figures of notebook 04 (precise RoI pooling); every function returns a matplotlib ``Figure``."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.patches as patches
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from sodlib.ops.roi_pool_geometry import exact_bins_in_pixels, roi_pool_bins_in_pixels


def _centres(bins: torch.Tensor) -> np.ndarray:
    """``Tensor[kh, kw, 4]`` bins -> ``[kh * kw, 2]`` centres."""
    b = bins.reshape(-1, 4).numpy()
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)


def plot_roi_pool_bins(box: Sequence[float], output_size: tuple[int, int], stride: int,
                       feature_size: tuple[int, int], margin: float = 24.0) -> Figure:
    """A small object on a stride-``stride`` grid: the exact bin centres (green) against RoIPool's (red).

    Grey lines are the borders of the feature cells (cell ``j`` around the image point ``j * stride``), the black
    box is the object, the dashed red box the cells RoIPool reads after rounding the RoI, and each red dot sits
    at the centre of the cells one RoIPool bin max-pools; a line joins it to the centre of the exact bin.
    """
    rois = torch.tensor([[0.0, *box]], dtype=torch.float64)
    exact = exact_bins_in_pixels(rois, output_size)[0]
    quantised = roi_pool_bins_in_pixels(rois, output_size, 1 / stride, feature_size)[0]
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    x1, y1, x2, y2 = box
    lo_x, hi_x = min(x1, quantised[..., 0].min().item()) - margin, max(x2, quantised[..., 2].max().item()) + margin
    lo_y, hi_y = min(y1, quantised[..., 1].min().item()) - margin, max(y2, quantised[..., 3].max().item()) + margin
    for edge in np.arange(np.floor(lo_x / stride) - 0.5, hi_x / stride + 1) * stride:
        ax.axvline(edge, color="0.85", linewidth=0.8, zorder=0)
    for edge in np.arange(np.floor(lo_y / stride) - 0.5, hi_y / stride + 1) * stride:
        ax.axhline(edge, color="0.85", linewidth=0.8, zorder=0)
    ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="black", linewidth=1.8,
                                   label="object box"))
    qx1, qy1 = quantised[..., 0].min().item(), quantised[..., 1].min().item()
    qx2, qy2 = quantised[..., 2].max().item(), quantised[..., 3].max().item()
    ax.add_patch(patches.Rectangle((qx1, qy1), qx2 - qx1, qy2 - qy1, fill=False, edgecolor="tab:red",
                                   linestyle="--", linewidth=1.2, label="cells read by RoIPool"))
    exact_c, quant_c = _centres(exact), _centres(quantised)
    for (ex, ey), (qx, qy) in zip(exact_c, quant_c):
        ax.plot([ex, qx], [ey, qy], color="tab:red", linewidth=0.7, alpha=0.6)
    ax.scatter(exact_c[:, 0], exact_c[:, 1], s=14, color="tab:green", label="exact bin centres (PrRoI)", zorder=3)
    ax.scatter(quant_c[:, 0], quant_c[:, 1], s=14, color="tab:red", label="RoIPool bin centres", zorder=3)
    ax.set_xlim(lo_x, hi_x)
    ax.set_ylim(hi_y, lo_y)
    ax.set_aspect("equal")
    ax.set_xlabel("x (image px)")
    ax.set_ylabel("y (image px)")
    ax.set_title(f"{x2 - x1:.0f} x {y2 - y1:.0f} px object, stride {stride}, {output_size[0]} x {output_size[1]} bins",
                 fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_misalignment_by_size(sizes: Sequence[float], mean_px: Sequence[float], max_px: Sequence[float],
                              stride: int) -> Figure:
    """Mean and worst distance between RoIPool's and the exact bin centres, in pixels, against object size."""
    fig, (ax_px, ax_rel) = plt.subplots(1, 2, figsize=(9, 3.4))
    sizes_arr = np.asarray(sizes, dtype=float)
    ax_px.plot(sizes_arr, mean_px, "o-", label="mean")
    ax_px.plot(sizes_arr, max_px, "s--", label="worst")
    ax_px.axhline(stride / 2, color="0.6", linewidth=0.8, linestyle=":", label="half a cell")
    ax_px.set_xscale("log", base=2)
    ax_px.set_xlabel("object side (px)")
    ax_px.set_ylabel("bin-centre misalignment (px)")
    ax_px.legend(fontsize=8)
    ax_rel.plot(sizes_arr, np.asarray(mean_px) / sizes_arr, "o-")
    ax_rel.set_xscale("log", base=2)
    ax_rel.set_xlabel("object side (px)")
    ax_rel.set_ylabel("mean misalignment / object side")
    fig.suptitle(f"RoIPool at stride {stride}: how far its bins sit from where they should", fontsize=10)
    fig.tight_layout()
    return fig


def plot_sampling_convergence(sampling_ratios: Sequence[int], mean_errors: Sequence[float],
                              max_errors: Sequence[float], adaptive_mean_error: float | None = None) -> Figure:
    """|RoIAlign - PrRoI| against RoIAlign's sampling ratio (log-log), with the ``1 / n^2`` slope of the midpoint rule."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    n = np.asarray(sampling_ratios, dtype=float)
    ax.loglog(n, mean_errors, "o-", label="mean |RoIAlign - PrRoI|")
    ax.loglog(n, max_errors, "s--", label="max |RoIAlign - PrRoI|")
    ax.loglog(n, mean_errors[0] * (n / n[0]) ** -2.0, color="0.6", linewidth=0.8, label="slope $n^{-2}$")
    if adaptive_mean_error is not None:
        ax.axhline(adaptive_mean_error, color="tab:red", linestyle=":", label="mean, adaptive sampling (ratio 0)")
    ax.set_xlabel("sampling ratio n (n x n points per bin)")
    ax.set_ylabel("difference")
    ax.legend(fontsize=8)
    ax.set_title("RoIAlign converges to the exact integral", fontsize=10)
    fig.tight_layout()
    return fig


def plot_edge_gradient_check(analytic: Sequence[float], numeric: Sequence[float]) -> Figure:
    """Analytic box gradients (eq. 7 and the chain rule) against central finite differences."""
    a, n = np.asarray(analytic, dtype=float), np.asarray(numeric, dtype=float)
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    ax.scatter(n, a, s=12)
    lim = 1.05 * max(np.abs(a).max(), np.abs(n).max())
    ax.plot([-lim, lim], [-lim, lim], color="0.6", linewidth=0.8)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("central finite difference")
    ax.set_ylabel("analytic gradient")
    relative = np.abs(a - n).max() / np.abs(n).max()
    ax.set_title(f"d loss / d (x1, y1, x2, y2): max rel. error {relative:.1e}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_position_sensitive_layout(k: int, out_channel: int = 0) -> Figure:
    """Which input channel feeds each bin of output channel ``out_channel``: ``(c * k + i) * k + j``."""
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    channels = np.array([[(out_channel * k + i) * k + j for j in range(k)] for i in range(k)])
    ax.imshow(np.arange(k * k).reshape(k, k), cmap="tab20" if k * k <= 20 else "viridis")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(channels[i, j]), ha="center", va="center", fontsize=9, color="black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("bin column j")
    ax.set_ylabel("bin row i")
    ax.set_title(f"input channel of each bin (output channel c = {out_channel})", fontsize=9)
    fig.tight_layout()
    return fig


def plot_box_refinement(score_maps: torch.Tensor, stride: int, path: torch.Tensor, truth: Sequence[float],
                        ious: Sequence[float], scores: Sequence[float]) -> Figure:
    """Left: the object's part maps (each part's own channel, summed), the true box (white), the start (red),
    the corners' path and the refined box (green). Right: IoU with the true box and the pooled score per step.
    ``score_maps``: ``Tensor[1, k*k, H, W]``; ``path``: ``Tensor[steps + 1, 4]``."""
    k = int(round(score_maps.shape[1] ** 0.5))
    height, width = score_maps.shape[-2:]
    own_parts = score_maps[0].clamp(min=0).sum(0).numpy()
    fig, (ax_img, ax_curve) = plt.subplots(1, 2, figsize=(10, 4.2))
    ax_img.imshow(own_parts, cmap="magma", extent=(-stride / 2, (width - 0.5) * stride, (height - 0.5) * stride,
                                                   -stride / 2))

    def draw(box, color, style, label):
        x1, y1, x2, y2 = [float(v) for v in box]
        ax_img.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                                           linestyle=style, linewidth=1.6, label=label))

    draw(truth, "white", "-", "object")
    draw(path[0], "tab:red", "--", "start")
    draw(path[-1], "tab:green", "-", "refined")
    p = path.numpy()
    ax_img.plot(p[:, 0], p[:, 1], color="tab:cyan", linewidth=0.8)
    ax_img.plot(p[:, 2], p[:, 3], color="tab:cyan", linewidth=0.8, label="corner paths")
    corners = np.concatenate([p.reshape(-1, 2), np.asarray(truth, dtype=float).reshape(-1, 2)])
    margin = 3 * stride
    ax_img.set_xlim(corners[:, 0].min() - margin, corners[:, 0].max() + margin)
    ax_img.set_ylim(corners[:, 1].max() + margin, corners[:, 1].min() - margin)
    ax_img.set_title(f"{k} x {k} part maps of one object, stride {stride}", fontsize=10)
    ax_img.legend(fontsize=8, loc="lower right")
    ax_curve.plot(ious, label="IoU with the object")
    ax_curve.plot(scores, label="pooled score (mean of k x k bins)")
    ax_curve.set_xlabel("gradient-ascent step")
    ax_curve.set_ylim(min(0.0, float(np.min(scores))) - 0.05, 1.05)
    ax_curve.legend(fontsize=8)
    ax_curve.set_title("climbing the pooled score moves the box onto the object", fontsize=10)
    fig.tight_layout()
    return fig
