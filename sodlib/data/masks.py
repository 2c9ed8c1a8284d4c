"""Binary object masks: the tight box of a mask."""
from __future__ import annotations

import numpy as np

__all__ = ["mask_box"]


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x1, y1, x2, y2)`` whole-pixel box of the mask's pixels (``x2``, ``y2`` exclusive), or None if empty.

    Args:
        mask: ``bool/uint8 [H, W]``.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
