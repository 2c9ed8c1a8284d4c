"""Pictures of sliced inference: the tile grid over an image, and whole-image against sliced detections."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.patches as patches
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_tile_grid", "plot_detections_compared"]

_TILE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")


def plot_tile_grid(image: np.ndarray, tiles: Sequence[Sequence[int]], boxes: np.ndarray | None = None, *,
                   title: str | None = None, size: float = 6.0) -> Figure:
    """``image`` (``uint8 [H, W, 3]``) with the ``tiles`` ``[(x1, y1, x2, y2)]`` drawn over it (neighbours in
    different colours and a little inset, so that the overlaps show) and ground-truth ``boxes`` (``[N, 4]`` xyxy)."""
    figure, ax = plt.subplots(figsize=(size, size))
    ax.imshow(image)
    xs = sorted({tile[0] for tile in tiles})
    ys = sorted({tile[1] for tile in tiles})
    for x1, y1, x2, y2 in tiles:
        color = _TILE_COLORS[(xs.index(x1) % 2) + 2 * (ys.index(y1) % 2)]
        inset = 4 * ((xs.index(x1) + ys.index(y1)) % 2)
        ax.add_patch(patches.Rectangle((x1 + inset, y1 + inset), x2 - x1 - 2 * inset, y2 - y1 - 2 * inset, fill=False,
                                       edgecolor=color, linewidth=1.4))
    for x1, y1, x2, y2 in ([] if boxes is None else np.asarray(boxes).reshape(-1, 4)):
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linewidth=0.6))
    ax.set_axis_off()
    ax.set_title(title or f"{len(tiles)} tiles", fontsize=10)
    figure.tight_layout()
    return figure


def plot_detections_compared(image: np.ndarray, ground_truth: np.ndarray, detections: Mapping[str, np.ndarray], *,
                             crop: Sequence[int] | None = None, size: float = 5.0) -> Figure:
    """One panel per entry of ``detections`` (``{name: [D, 4] xyxy}``): the image (``uint8 [H, W, 3]``), its
    ground truth in green and the detections in red; ``crop = (x1, y1, x2, y2)`` zooms in on one region."""
    names = list(detections)
    figure, axes = plt.subplots(1, len(names), figsize=(size * len(names), size), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.imshow(image)
        for x1, y1, x2, y2 in np.asarray(ground_truth).reshape(-1, 4):
            ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="lime", linewidth=1.4))
        for x1, y1, x2, y2 in np.asarray(detections[name]).reshape(-1, 4):
            ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", linewidth=1.4))
        if crop is not None:
            ax.set_xlim(crop[0], crop[2])
            ax.set_ylim(crop[3], crop[1])
        ax.set_axis_off()
        ax.set_title(f"{name}: {len(np.asarray(detections[name]).reshape(-1, 4))} detections", fontsize=10)
    figure.tight_layout()
    return figure
