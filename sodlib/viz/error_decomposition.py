"""Figure of a TIDE-style error decomposition per size bin: one panel per bin, one stacked bar per detector.

It draws what it is given: the decompositions are computed by :func:`sodlib.eval.error_decomposition.error_decomposition`
(``{bin: {"counts": {type: int}, "dAP": {type: float}, "AP50": float, ...}}``). The error types and their order
are read from those dicts, so this module does not import the evaluation.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = ["plot_error_decomposition"]

#: A colour per TIDE error type (names as the decomposition spells them); other names take the next tab10 colour.
ERROR_TYPE_COLORS: dict[str, str] = {"classification": "#d62728", "localisation": "#ff7f0e", "both": "#9467bd",
                                     "duplicate": "#8c564b", "background": "#1f77b4", "missed": "#7f7f7f"}
_VALUE_LABELS = {"dAP": "AP50 gained by fixing one error type", "counts": "errors (count)"}


def _color(name: str, index: int) -> str:
    return ERROR_TYPE_COLORS.get(name, plt.get_cmap("tab10")(index % 10))


def plot_error_decomposition(decompositions: Mapping[str, Mapping[str, dict]], *, bins: Sequence[str] = ("tiny", "small", "all"),
                             value: str = "dAP", title: str | None = None) -> Figure:
    """Stacked horizontal bars of the error decomposition: one panel per size bin, one bar per row (a detector,
    e.g. ``"baseline"``, ``"baseline sliced"``), one segment per error type.

    Args:
        decompositions: ``{row name: error_decomposition(...)}``.
        bins: the size bins to draw, in this order; every decomposition must have each of them.
        value: ``"dAP"`` (the AP50 each fix adds) or ``"counts"`` (how many errors of each type).
        title: figure title.

    A bin without ground truth (``AP50 == -1``, every ``dAP == -1``) draws empty segments for ``dAP``. Each bar is
    labelled with its AP50.
    """
    if value not in _VALUE_LABELS:
        raise ValueError(f"value={value!r} is not drawn; use value='dAP' (AP50 gains) or value='counts' (error counts)")
    if len(decompositions) == 0:
        raise ValueError("decompositions is empty: give {row name: error_decomposition(...)} for at least one detector")
    if len(bins) == 0:
        raise ValueError("bins is empty: name the size bins to draw, e.g. bins=('small', 'all')")
    for row, decomposition in decompositions.items():
        for name in bins:
            if name not in decomposition:
                raise ValueError(f"decompositions[{row!r}] has no size bin {name!r} (it has {', '.join(decomposition)}); "
                                 f"pass size_bins={{{name!r}: (lo, hi)}} to error_decomposition or drop it from bins")
            if value not in decomposition[name]:
                raise ValueError(f"decompositions[{row!r}][{name!r}] has no {value!r}; is it an error_decomposition output?")
    first = next(iter(decompositions.values()))[bins[0]][value]
    types = list(first)
    rows = list(decompositions)
    figure, axes = plt.subplots(1, len(bins), figsize=(3.6 * len(bins) + 1.6, 0.55 * len(rows) + 1.8), squeeze=False)
    y = np.arange(len(rows))
    for ax, name in zip(axes[0], bins):
        left = np.zeros(len(rows))
        for index, kind in enumerate(types):
            widths = np.array([max(float(decompositions[row][name][value].get(kind, 0.0)), 0.0) for row in rows])
            ax.barh(y, widths, left=left, color=_color(kind, index), edgecolor="white", linewidth=0.5, label=kind)
            left += widths
        for position, row in enumerate(rows):
            ap = float(decompositions[row][name].get("AP50", -1.0))
            ax.text(left[position], position, f" AP50 {ap:.3f}" if ap > -1 else " no objects", va="center", fontsize=7)
        ax.set_xlim(0, max(float(left.max()), 1e-9) * 1.35)
        ax.set_yticks(y)
        ax.set_yticklabels(rows if ax is axes[0][0] else [""] * len(rows))
        ax.invert_yaxis()
        ax.set_title(name)
        ax.set_xlabel(_VALUE_LABELS[value], fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    handles = [Patch(color=_color(kind, index), label=kind) for index, kind in enumerate(types)]
    figure.legend(handles=handles, loc="lower center", ncol=len(types), fontsize=8, frameon=False)
    figure.suptitle(title or f"error decomposition per size bin ({value})")
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    return figure
