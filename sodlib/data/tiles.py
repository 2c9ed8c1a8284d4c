"""Cutting large images into overlapping tiles: the grid, and a training dataset of tiles.

**The grid** (:func:`tile_boxes`), the rule of SAHI's ``get_slice_bboxes`` (Akyon et al., 2022), so that training
tiles and sliced inference cut an image the same way. With tile side ``T`` and overlap ratio ``o``, neighbouring
tiles share ``floor(o T)`` pixels: tile ``k`` of a row starts at ``x_k = k (T - floor(o T))``, and the tile that
would cross the right border is moved left to end on it (``x = W - T``); rows likewise. Every pixel lies in at
least one tile, and an object narrower than ``floor(o T) + 1`` pixels lies wholly inside at least one tile::

    1600 px, T = 512, o = 0.2:  x = 0, 410, 820, 1088   (floor(0.2 * 512) = 102; the last tile moved to end at 1600)

**Training on tiles** (:class:`TiledDataset`): every tile of every image is one item, and with ``full_image=True``
each whole image is one more item (the detector's resize then shows it at a lower scale, as the SAHI paper's
fine-tuning keeps the full images beside the patches). An object is kept in a tile when the part of its mask
inside the tile holds at least ``min_area_ratio`` of its area (SAHI's ``slice_coco`` default, 0.1); its box,
area and mask become those of that part (an object without a segmentation is its filled box).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from sodlib.data.dataset import CocoDetection, Target
from sodlib.data.masks import mask_box

__all__ = ["check_tiling", "tile_boxes", "tile_count", "TiledDataset", "TileSettings"]

DEFAULT_MIN_AREA_RATIO = 0.1


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_tiling(tile_size: int, overlap: float, image_size: tuple[int, int] | None = None, *,
                 what: str = "tile_size") -> None:
    """Refuse a tile side or overlap that cannot cut an image: ``tile_size`` an integer >= 32, ``overlap`` in
    ``[0, 1)``, and (with ``image_size = (height, width)``) a tile no larger than the image's shorter side."""
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < 32:
        raise ValueError(f"{what}={tile_size!r} must be an integer >= 32 (pixels); a detector needs room for its "
                         "anchors, e.g. 512")
    if not _is_number(overlap) or not 0 <= overlap < 1:
        raise ValueError(f"overlap={overlap!r} must be a number in [0, 1) (the share of a tile its neighbour "
                         "covers; 1 would never move on), e.g. 0.2")
    if image_size is not None:
        height, width = image_size
        if tile_size > min(height, width):
            raise ValueError(f"{what}={tile_size} is larger than the image ({width} x {height} px); fix: a tile of at "
                             f"most {min(height, width)} px, or full-image inference for images this small")


def _starts(length: int, tile: int, step: int) -> list[int]:
    """Tile starts along one axis: ``0, step, 2 step, ...``, the last moved back to end at ``length``."""
    starts, start = [], 0
    while True:
        if start + tile >= length:
            starts.append(max(0, length - tile))
            return starts
        starts.append(start)
        start += step


def tile_boxes(height: int, width: int, tile_size: int, overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """``[(x1, y1, x2, y2)]`` of the tiles that cover a ``height`` x ``width`` image, row by row (SAHI's order).

    ``step = tile_size - floor(overlap * tile_size)``; see the module docstring. Raises ``ValueError`` for a tile
    side or overlap that :func:`check_tiling` refuses, including a tile larger than the image."""
    check_tiling(tile_size, overlap, (height, width))
    step = tile_size - int(overlap * tile_size)
    return [(x, y, x + tile_size, y + tile_size)
            for y in _starts(height, tile_size, step) for x in _starts(width, tile_size, step)]


@dataclass(frozen=True)
class TileSettings:
    """How a training set is cut (``[data] tiles`` of a run configuration).

    ``size``: tile side in pixels; ``overlap``: the share of a tile its neighbour covers; ``full_image``: add
    each whole image as one more item; ``min_area_ratio``: the share of an object's area that must lie in a tile
    for the tile to keep it."""

    size: int = 512
    overlap: float = 0.2
    full_image: bool = True
    min_area_ratio: float = DEFAULT_MIN_AREA_RATIO

    def __post_init__(self) -> None:
        check_tiling(self.size, self.overlap, what="size")
        if not isinstance(self.full_image, bool):
            raise ValueError(f"full_image={self.full_image!r} must be true or false")
        if not _is_number(self.min_area_ratio) or not 0 < self.min_area_ratio <= 1:
            raise ValueError(f"min_area_ratio={self.min_area_ratio!r} must be in (0, 1] (SAHI's default: 0.1)")


class TiledDataset(torch.utils.data.Dataset):
    """The tiles of a COCO dataset's images as detection items (see the module docstring).

    Item ``i`` is ``(image float32 [3, T, T], target)`` with the target in the tile's pixel coordinates
    (``boxes``, ``labels``, ``area``, ``iscrowd``, ``image_id``, ``masks uint8 [N, T, T]`` with ``masks=True``) and
    ``target["tile"] = (x1, y1, x2, y2)`` in the source image; the whole images come after all tiles. Every image
    must be at least ``settings.size`` on its shorter side (checked up front). ``transforms`` (copy-paste, for
    instance) apply to each item after cutting.

    Args:
        dataset: the source :class:`CocoDetection` (read without its own transforms).
        settings: tile side, overlap, whole images, ``min_area_ratio``.
        masks: return the cut masks (needed by copy-paste).
        transforms: an optional ``(image, target) -> (image, target)`` callable.
    """

    def __init__(self, dataset: CocoDetection, settings: TileSettings = TileSettings(), *, masks: bool = False,
                 transforms: Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]] | None = None):
        self.dataset = dataset
        self.settings = settings
        self.masks = masks
        self.transforms = transforms
        self.tiles: list[tuple[int, tuple[int, int, int, int]]] = []
        for index in range(len(dataset)):
            info = dataset.image_info(index)
            height, width = int(info["height"]), int(info["width"])
            if settings.size > min(height, width):
                raise ValueError(f"[data] tiles: size={settings.size} is larger than image id {info['id']} "
                                 f"({width} x {height} px); fix: a tile side of at most {min(height, width)} px")
            self.tiles += [(index, box) for box in tile_boxes(height, width, settings.size, settings.overlap)]
        self.num_classes = dataset.num_classes
        self.category_names = dataset.category_names
        self.label_to_category_id = dataset.label_to_category_id

    def __len__(self) -> int:
        return len(self.tiles) + (len(self.dataset) if self.settings.full_image else 0)

    def _mask(self, index: int, annotation: dict) -> np.ndarray:
        """The object's mask ``uint8 [H, W]``: its segmentation, or its box filled where it has none."""
        if annotation.get("segmentation"):
            return self.dataset.coco.annToMask(annotation)
        info = self.dataset.image_info(index)
        mask = np.zeros((int(info["height"]), int(info["width"])), np.uint8)
        bx, by, bw, bh = annotation["bbox"]
        mask[int(math.floor(by)):int(math.ceil(by + bh)), int(math.floor(bx)):int(math.ceil(bx + bw))] = 1
        return mask

    def _object_masks(self, index: int, box: tuple[int, int, int, int]) -> tuple[list[dict], list[np.ndarray]]:
        """The annotations of image ``index`` whose boxes meet the tile, and each one's mask cut to the tile."""
        x1, y1, x2, y2 = box
        kept, cut = [], []
        for annotation in self.dataset.annotations_of(index):
            bx, by, bw, bh = annotation["bbox"]
            if bx >= x2 or by >= y2 or bx + bw <= x1 or by + bh <= y1:
                continue
            kept.append(annotation)
            cut.append(self._mask(index, annotation)[y1:y2, x1:x2])
        return kept, cut

    def _tile(self, index: int, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, Target]:
        x1, y1, x2, y2 = box
        image = self.dataset.read_image_of(index)[:, y1:y2, x1:x2].contiguous()
        boxes, labels, areas, crowd, masks = [], [], [], [], []
        for annotation, mask in zip(*self._object_masks(index, box)):
            area = int(mask.sum())
            full_area = float(annotation["area"]) or 1.0
            if area == 0 or area / full_area < self.settings.min_area_ratio:
                continue
            boxes.append(mask_box(mask))
            labels.append(self.dataset.category_id_to_label[annotation["category_id"]])
            areas.append(area)
            crowd.append(int(annotation.get("iscrowd", 0)))
            masks.append(mask)
        target: Target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "area": torch.tensor(areas, dtype=torch.float32),
            "iscrowd": torch.tensor(crowd, dtype=torch.int64),
            "image_id": int(self.dataset.image_info(index)["id"]),
            "tile": box,
        }
        if self.masks:
            target["masks"] = torch.from_numpy(np.stack(masks) if masks else np.zeros((0, y2 - y1, x2 - x1), np.uint8))
        return image, target

    def __getitem__(self, item: int) -> tuple[torch.Tensor, Target]:
        if not 0 <= item < len(self):
            raise IndexError(f"item {item} of a TiledDataset of {len(self)} items")
        if item < len(self.tiles):
            image, target = self._tile(*self.tiles[item])
        else:
            index = item - len(self.tiles)
            info = self.dataset.image_info(index)
            image, target = self._tile(index, (0, 0, int(info["width"]), int(info["height"])))
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def tiles_per_image(self) -> float:
        """Mean number of tiles an image is cut into."""
        return len(self.tiles) / max(1, len(self.dataset))


def tile_count(height: int, width: int, tile_size: int, overlap: float) -> int:
    """Number of tiles :func:`tile_boxes` cuts a ``height`` x ``width`` image into (``rows * columns``)."""
    step = tile_size - int(overlap * tile_size)
    per_axis = lambda length: 1 + max(0, math.ceil((length - tile_size) / step))  # noqa: E731
    return per_axis(height) * per_axis(width)
