"""Figures of detector training and error analysis: loss curves, PR curves per size bin, TPs / FPs / misses."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_loss_curves"]

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
