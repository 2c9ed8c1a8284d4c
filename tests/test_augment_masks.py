"""sodlib.augment.masks: connected pieces (hand-drawn cases), tight boxes, the small-object rule."""
from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sodlib.augment.masks import count_connected_pieces, is_small_object, mask_box


def grid(text: str) -> np.ndarray:
    return np.array([[c == "#" for c in row.strip()] for row in text.strip().splitlines()], dtype=np.uint8)


@pytest.mark.parametrize("drawing, pieces8, pieces4", [
    ("....\n....", 0, 0),
    ("#...\n....", 1, 1),
    ("##..\n.##.", 1, 1),
    ("#...\n.#..", 1, 2),             # corner touch: one piece by 8-, two by 4-connectivity
    ("#.#\n...\n#.#", 4, 4),
    ("###\n#.#\n###", 1, 1),          # a ring
    ("#.#\n#.#\n###", 1, 1),          # a U: joined only at the bottom row
    ("##.##\n.....\n#####", 3, 3),
    ("#..#\n.##.\n#..#", 1, 5),       # an X
    ("..#..#\n.#..#.\n#..#..", 2, 6),  # two diagonals
])
def test_count_connected_pieces_on_drawings(drawing, pieces8, pieces4):
    mask = grid(drawing)
    assert count_connected_pieces(mask) == pieces8
    assert count_connected_pieces(mask, connectivity=4) == pieces4


def test_count_connected_pieces_matches_a_flood_fill_on_random_masks():
    rng = np.random.default_rng(3)

    def flood_fill_count(mask: np.ndarray) -> int:
        seen = np.zeros_like(mask, dtype=bool)
        pieces = 0
        for start in zip(*np.nonzero(mask)):
            if seen[start]:
                continue
            pieces += 1
            stack = [start]
            seen[start] = True
            while stack:
                y, x = stack.pop()
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = y + dy, x + dx
                        if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            stack.append((ny, nx))
        return pieces

    for _ in range(200):
        mask = rng.random((int(rng.integers(1, 12)), int(rng.integers(1, 12)))) < rng.uniform(0.2, 0.7)
        assert count_connected_pieces(mask) == flood_fill_count(mask)


def test_bad_connectivity_is_refused():
    with pytest.raises(ValueError, match="connectivity=6"):
        count_connected_pieces(np.ones((2, 2)), connectivity=6)


def test_mask_box_is_cocos_bbox_as_corners():
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[4:9, 10:13] = 1
    mask[20, 31] = 1
    x, y, w, h = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask)))
    assert mask_box(mask) == (x, y, x + w, y + h) == (10, 4, 32, 21)
    assert mask_box(np.zeros((3, 3), dtype=bool)) is None


def test_small_objects_are_non_crowd_with_area_up_to_1024_inclusive():
    assert is_small_object({"area": 1024.0, "iscrowd": 0})
    assert not is_small_object({"area": 1024.5, "iscrowd": 0})
    assert not is_small_object({"area": 10.0, "iscrowd": 1})
    assert is_small_object({"area": 10.0})
