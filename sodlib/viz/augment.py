"""Figures of notebook 03: an image before and after small-object copy-paste, with close-ups of the copies.

Inputs are what :func:`sodlib.augment.copy_paste_small_objects` returns (or the transform's output and its
``last_sources``): the original ``(image, target)``, the augmented ``(image, target)`` whose first ``N``
objects are the originals, and for each pasted object the index of the original it copies.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.patches as patches
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sodlib.viz.boxes import draw_target

PASTED_COLOR = "#17becf"


def _pad_box(box: Sequence[float], pad: int, height: int, width: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, width), min(y2 + pad, height)


def closeup_strip(image: torch.Tensor, out_image: torch.Tensor, target: Mapping, out_target: Mapping,
                  sources: Sequence[int], count: int = 4, cell: int = 48, pad: int = 4) -> np.ndarray:
    """``float [cell, count * 2 * (cell + 2), 3]``: for up to ``count`` pasted objects, the source's crop and the
    copy's crop (boxes grown by ``pad`` px, each scaled to ``cell`` px high by nearest neighbour), side by side."""
    height, width = image.shape[-2:]
    originals = len(target["boxes"])
    tiles = []
    for row, source in list(enumerate(sources))[:count]:
        for picture, box in ((image, target["boxes"][int(source)]), (out_image, out_target["boxes"][originals + row])):
            x1, y1, x2, y2 = _pad_box(box.tolist(), pad, height, width)
            crop = picture[:, y1:y2, x1:x2].permute(1, 2, 0).clamp(0, 1).numpy()
            rows = np.minimum((np.arange(cell) * crop.shape[0] / cell).astype(int), crop.shape[0] - 1)
            cols = np.minimum((np.arange(cell) * crop.shape[1] / cell).astype(int), crop.shape[1] - 1)
            tile = np.ones((cell, cell + 2, 3))
            tile[:, :cell] = crop[rows][:, cols]
            tiles.append(tile)
    return np.concatenate(tiles, axis=1) if tiles else np.ones((cell, cell, 3))


def draw_copy_paste(axes: Sequence[Axes], image: torch.Tensor, target: Mapping, out_image: torch.Tensor,
                    out_target: Mapping, sources: Sequence[int], closeups: int = 4) -> None:
    """Draw into three axes: the original (boxes by size bin), the augmented image (pasted objects outlined in
    cyan, dashed), and close-ups of the first ``closeups`` pasted objects (source | copy pairs)."""
    originals = len(target["boxes"])
    draw_target(axes[0], image, target, title=f"original: {originals} objects")
    draw_target(axes[1], out_image, out_target, title=f"copy-paste: +{len(sources)} pasted")
    for box in out_target["boxes"][originals:].tolist():
        x1, y1, x2, y2 = box
        axes[1].add_patch(patches.Rectangle((x1 - 2, y1 - 2), x2 - x1 + 4, y2 - y1 + 4, fill=False,
                                            edgecolor=PASTED_COLOR, linewidth=1.4, linestyle="--"))
    axes[2].imshow(closeup_strip(image, out_image, target, out_target, sources, closeups))
    axes[2].set_axis_off()
    axes[2].set_title("source | copy (scaled +-20 %, turned +-15 deg)" if len(sources) else "nothing pasted", fontsize=9)


def plot_copy_paste(examples: Sequence[tuple[torch.Tensor, Mapping, torch.Tensor, Mapping, Sequence[int]]], *,
                    closeups: int = 4, size: float = 3.0, title: str | None = None) -> Figure:
    """One row per example ``(image, target, out_image, out_target, sources)``: before, after, close-ups."""
    if not examples:
        raise ValueError("examples is empty; pass at least one (image, target, out_image, out_target, sources)")
    figure, axes = plt.subplots(len(examples), 3, figsize=(size * 3.6, size * len(examples)), squeeze=False,
                                gridspec_kw={"width_ratios": [1, 1, 1.6]})
    for row, example in zip(axes, examples):
        draw_copy_paste(row, *example, closeups=closeups)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_repeat_rates(factors: Sequence[float], observed: Sequence[float], *, title: str = "oversampling") -> Figure:
    """Observed repeat rate of the images with small objects against the sampler's factor (the diagonal)."""
    figure, ax = plt.subplots(figsize=(4, 3.4))
    top = max(max(factors), max(observed)) + 0.5
    ax.plot([1, top], [1, top], color="0.7", linewidth=1, label="rate = factor")
    ax.plot(factors, observed, "o", color="#d62728", label="observed (one epoch)")
    ax.set_xlabel("oversampling factor")
    ax.set_ylabel("uses per epoch, images with small objects")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    figure.tight_layout()
    return figure
