"""Figures of detector training and error analysis: loss curves, PR curves per size bin, TPs / FPs / misses.

These functions draw what they are given: the curves and the matches are computed by :mod:`sodlib.eval`
(:func:`sodlib.eval.precision_recall_by_bin`, :func:`sodlib.eval.match_image`)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.patches as patches
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sodlib.data.sizes import SIZE_BIN_COLORS, SIZE_BINS

__all__ = ["plot_loss_curves", "plot_pr_curves", "plot_detection_errors"]

_LOSS_LABELS = {"loss": "total", "loss_objectness": "RPN objectness", "loss_rpn_box_reg": "RPN box",
                "loss_classifier": "classifier", "loss_box_reg": "box regression"}


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` steps (shorter at the start): ``s_i = mean(v[max(0, i-w+1) .. i])``."""
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(1, len(values) + 1)
    lower = np.maximum(0, index - window)
    return (cumulative[index] - cumulative[lower]) / (index - lower)


def plot_loss_curves(history: Sequence[Mapping[str, Any]], *, window: int = 20, title: str = "training losses") -> Figure:
    """The losses of a training history (``TrainResult.history``) against the step, raw (faint) and as a
    trailing mean over ``window`` steps, with the learning rate on a second panel."""
    if len(history) == 0:
        raise ValueError("history is empty: nothing was trained (check iterations / epochs)")
    steps = np.array([h["iteration"] for h in history])
    figure, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for key, label in _LOSS_LABELS.items():
        if key not in history[0]:
            continue
        values = np.array([h[key] for h in history], dtype=float)
        line, = ax_loss.plot(steps, _smooth(values, window), label=label, linewidth=1.6 if key == "loss" else 1.1)
        ax_loss.plot(steps, values, color=line.get_color(), alpha=0.2, linewidth=0.6)
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.legend(fontsize=8, ncol=2)
    ax_loss.set_title(title)
    ax_lr.plot(steps, [h["lr"] for h in history], color="k", linewidth=1)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    figure.tight_layout()
    return figure


def plot_pr_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], *, iou: float = 0.5,
                   title: str | None = None, ax: Axes | None = None) -> Figure:
    """Precision-recall curves per size bin at one IoU, AP in the legend.

    ``curves``: ``{bin: (recall [R], precision [R], AP)}`` as :func:`sodlib.eval.precision_recall_by_bin`
    returns them at IoU ``iou`` (which labels the legend and the title).
    """
    figure, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.2, 4.2))
    for name, (recall, precision, ap) in curves.items():
        color = SIZE_BIN_COLORS.get(name, "k")
        ax.plot(recall, precision, color=color, linewidth=2.0 if name != "all" else 1.2,
                linestyle="-" if name != "all" else "--", label=f"{name}: AP{int(round(iou * 100))} = {ap:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (interpolated, mean over classes)")
    ax.set_title(title or f"precision-recall per size bin, IoU {iou:.2f}")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def plot_detection_errors(image: torch.Tensor, target: Mapping[str, torch.Tensor], prediction: Mapping[str, torch.Tensor],
                          errors: Any, *, category_names: Sequence[str] | None = None, title: str | None = None,
                          ax: Axes | None = None) -> Figure:
    """One image with its true positives (solid), false positives (dashed) and missed objects (dotted, with a
    cross at the centre), each coloured by size bin (objects by their area, false positives by their box area).

    ``image``: ``Tensor[3, H, W]`` in [0, 1]; ``target``: boxes (``Tensor[N, 4]``); ``prediction``: boxes
    (``Tensor[D, 4]``), labels, scores; ``errors``: the matches of the two, an
    :class:`sodlib.eval.ImageErrors` from :func:`sodlib.eval.match_image` (its index tensors
    ``true_positives``, ``matched_objects``, ``false_positives``, ``missed``, its ``object_bins`` /
    ``detection_bins`` and ``counts_by_bin()``).
    """
    figure, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.4, 6.4))
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
    boxes = prediction["boxes"].detach().cpu().reshape(-1, 4).tolist()
    gt_boxes = target["boxes"].cpu().reshape(-1, 4).tolist()

    def draw(box, color, style, label=None):
        x1, y1, x2, y2 = box
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.5, linestyle=style))
        if label:
            ax.text(x1, y1 - 1, label, color=color, fontsize=6, va="bottom")

    def name_of(label: int) -> str:
        return category_names[label] if category_names is not None and label < len(category_names) else str(label)

    labels = prediction["labels"].detach().cpu().tolist()
    scores = prediction["scores"].detach().cpu().tolist()
    for d, g in zip(errors.true_positives.tolist(), errors.matched_objects.tolist()):
        draw(boxes[d], SIZE_BIN_COLORS[errors.object_bins[g]], "solid", f"{name_of(labels[d])} {scores[d]:.2f}")
    for d in errors.false_positives.tolist():
        draw(boxes[d], SIZE_BIN_COLORS[errors.detection_bins[d]], "dashed", f"{name_of(labels[d])} {scores[d]:.2f}")
    for g in errors.missed.tolist():
        draw(gt_boxes[g], SIZE_BIN_COLORS[errors.object_bins[g]], "dotted")
        x1, y1, x2, y2 = gt_boxes[g]
        ax.plot([(x1 + x2) / 2], [(y1 + y2) / 2], marker="x", color=SIZE_BIN_COLORS[errors.object_bins[g]], markersize=4)
    counts = errors.counts_by_bin()
    summary = ", ".join(f"{n}: {c['tp']} TP / {c['fp']} FP / {c['missed']} missed" for n, c in counts.items())
    handles = [Line2D([], [], color=SIZE_BIN_COLORS[n], linewidth=2, label=n) for n in SIZE_BINS]
    handles += [Line2D([], [], color="k", linestyle=style, label=label)
                for style, label in (("solid", "true positive"), ("dashed", "false positive"), ("dotted", "missed"))]
    ax.legend(handles=handles, fontsize=7, loc="lower right", ncol=2, framealpha=0.8)
    ax.set_title((title + "\n" if title else "") + summary, fontsize=7)
    ax.set_axis_off()
    figure.tight_layout()
    return figure
