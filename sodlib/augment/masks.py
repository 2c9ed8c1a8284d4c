"""Small helpers on binary masks and on what counts as a small object.

- :func:`is_small_object`: COCO's small bin (``area <= 32^2``, the edge inclusive as in pycocotools, see
  :mod:`sodlib.data.sizes`), by the annotation's ``area`` (the mask area), crowd regions excluded.
- :func:`sodlib.data.masks.mask_box` (re-exported here): the tight whole-pixel box of a mask,
  ``(x1, y1, x2, y2)`` with ``x2``/``y2`` one past the last pixel (COCO's ``toBbox`` of the mask's RLE, turned
  into corners).
- :func:`count_connected_pieces`: the number of 8-connected pieces of a mask, by a union-find over the
  horizontal runs of each row (no scipy needed; a small object has a few dozen runs).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from sodlib.data.masks import mask_box
from sodlib.data.sizes import SIZE_BINS

SMALL_AREA_MAX: float = SIZE_BINS["small"][1]
"""Largest area (pixels) of a small object: ``32^2 = 1024``, inclusive as in COCOeval."""


def is_small_object(annotation: Mapping, small_area_max: float = SMALL_AREA_MAX) -> bool:
    """True for a non-crowd COCO annotation whose ``area`` is at most ``small_area_max`` (edge inclusive)."""
    return not annotation.get("iscrowd", 0) and float(annotation["area"]) <= small_area_max


def _row_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row, start, end)`` of every horizontal run of set pixels, row-major; ``end`` is exclusive."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask.astype(bool)
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return rows, starts, ends


def count_connected_pieces(mask: np.ndarray, connectivity: int = 8) -> int:
    """Number of connected pieces of a binary ``[H, W]`` mask (0 for an empty mask).

    Two set pixels are connected when they touch by a side (``connectivity=4``) or also by a corner
    (``connectivity=8``, the default: a one-pixel diagonal step does not split an object). Runs of set pixels
    in one row are pieces already; runs in neighbouring rows are joined when their column ranges overlap
    (for 8-connectivity: overlap or touch at a corner). A union-find over the runs counts the pieces.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity={connectivity!r}; use 4 (side neighbours) or 8 (side and corner neighbours)")
    box = mask_box(mask)
    if box is None:
        return 0
    x1, y1, x2, y2 = box
    rows, starts, ends = _row_runs(mask[y1:y2, x1:x2])
    parent = list(range(len(rows)))

    def find(run: int) -> int:
        while parent[run] != run:
            parent[run] = parent[parent[run]]
            run = parent[run]
        return run

    reach = 1 if connectivity == 8 else 0
    row_start = np.searchsorted(rows, np.arange(y2 - y1 + 1))
    pieces = len(rows)
    for row in range(y2 - y1 - 1):
        a, a_end = int(row_start[row]), int(row_start[row + 1])
        b, b_end = a_end, int(row_start[row + 2])
        while a < a_end and b < b_end:  # two pointers over the sorted runs of rows `row` and `row + 1`
            if starts[a] < ends[b] + reach and starts[b] < ends[a] + reach:
                root_a, root_b = find(a), find(b)
                if root_a != root_b:
                    parent[root_a] = root_b
                    pieces -= 1
            if ends[a] < ends[b]:
                a += 1
            else:
                b += 1
    return pieces
