"""Images with their boxes coloured by COCO size bin, and size-mix bar charts."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.patches as patches
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sodlib.data.sizes import SIZE_BIN_COLORS, SIZE_BINS, size_bin_label


def draw_target(ax: Axes, image: torch.Tensor, target: Mapping, *, title: str | None = None,
                crowd_style: str = "dotted") -> Axes:
    """Draw ``image`` (``Tensor[3, H, W]`` in [0, 1]) with ``target["boxes"]`` (``Tensor[N, 4]`` xyxy).

    Each box is coloured by the size bin of ``target["area"]`` (the first bin that holds it, so an area of
    exactly 1024 is drawn as small); crowd regions (``iscrowd == 1``) are drawn dotted.
    """
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    boxes = target["boxes"].reshape(-1, 4).tolist()
    areas = target["area"].tolist()
    crowd = target.get("iscrowd", torch.zeros(len(boxes), dtype=torch.int64)).tolist()
    for (x1, y1, x2, y2), area, is_crowd in zip(boxes, areas, crowd):
        color = SIZE_BIN_COLORS[size_bin_label(area)]
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.2,
                                       linestyle=crowd_style if is_crowd else "solid"))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def _legend_handles() -> list[patches.Patch]:
    return [patches.Patch(edgecolor=SIZE_BIN_COLORS[name], facecolor="none", label=name) for name in SIZE_BINS]


def plot_samples(dataset, indices: Sequence[int], *, ncols: int = 4, size: float = 3.2,
                 title: str | None = None) -> Figure:
    """A grid of dataset items (``dataset[i] -> (image, target)``) with boxes coloured by size bin."""
    rows = max(1, int(np.ceil(len(indices) / ncols)))
    figure, axes = plt.subplots(rows, ncols, figsize=(size * ncols, size * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, index in zip(axes.flat, indices):
        image, target = dataset[index]
        draw_target(ax, image, target, title=f"image {target['image_id']}: {len(target['boxes'])} object{'s' if len(target['boxes']) != 1 else ''}")
    figure.legend(handles=_legend_handles(), loc="lower center", ncol=len(SIZE_BINS), frameon=False)
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    return figure


def plot_size_mix(shares: Mapping[str, Mapping[str, float]], *, title: str = "objects per size bin") -> Figure:
    """Grouped bars of size-bin shares, one group per bin and one bar per source.

    ``shares`` maps a source name (for instance ``"embedded"``, ``"COCO train2017"``) to ``{bin: percent}``.
    """
    sources = list(shares)
    bins = list(SIZE_BINS)
    width = 0.8 / max(1, len(sources))
    figure, ax = plt.subplots(figsize=(6, 3.2))
    for offset, source in enumerate(sources):
        positions = np.arange(len(bins)) + (offset - (len(sources) - 1) / 2) * width
        values = [shares[source].get(name, 0.0) for name in bins]
        bars = ax.bar(positions, values, width=width, label=source)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(np.arange(len(bins)), bins)
    top = max((max(values.values(), default=0.0) for values in shares.values()), default=0.0)
    ax.set_ylim(0, max(1.0, top) * 1.45)  # head room for the legend above the bars
    ax.set_ylabel("% of objects")
    ax.set_title(title)
    ax.legend(frameon=False, loc="upper right")
    figure.tight_layout()
    return figure
