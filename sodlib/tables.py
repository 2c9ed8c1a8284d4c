"""Plain-text tables, for the commands that print them and the notebooks that show them."""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_table"]


def format_table(rows: Sequence[Sequence[object]], header: Sequence[object]) -> str:
    """``rows`` under ``header`` as aligned plain text: the first column left-aligned, the others right-aligned,
    a rule of dashes under the header, columns two spaces apart."""
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(line, widths))) for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
