"""A COCO file's objects as flat arrays (:class:`ObjectTable`), optionally resized as torchvision's
``GeneralizedRCNNTransform`` resizes images: what the size and matching statistics read."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from sodlib.data.sizes import AreaMode, check_area_mode

Resize = tuple[int, int] | None


@dataclass
class ObjectTable:
    """Flat arrays of a COCO file's objects, sorted by image (stable: file order within an image).

    - ``image_heights``, ``image_widths``: ``int64 [I]``, after the resize when one was asked for;
    - ``object_image``: ``int64 [N]`` index into the image arrays; ``image_start``: ``int64 [I + 1]``, the
      objects of image ``i`` are ``image_start[i]:image_start[i + 1]``;
    - ``boxes``: ``float64 [N, 4]`` ``(x1, y1, x2, y2)``; ``areas``: ``float64 [N]`` by the chosen area mode;
    - ``category_ids``: ``int64 [N]``; ``annotation_ids``: ``int64 [N]``.
    """

    image_ids: np.ndarray
    image_heights: np.ndarray
    image_widths: np.ndarray
    image_start: np.ndarray
    object_image: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    category_ids: np.ndarray
    annotation_ids: np.ndarray
    area_mode: str
    resize: Resize
    include_crowd: bool
    crowd_excluded: int

    @property
    def num_images(self) -> int:
        return int(self.image_ids.shape[0])

    @property
    def num_objects(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def box_sides(self) -> np.ndarray:
        """``float64 [N]``: ``sqrt(w h)`` of each box, the side of the square with the box's area. Anchors are
        matched against boxes, so anchor sizes are derived from these; a mask's ``sqrt(area)`` is smaller (a
        mask fills only part of its box) and is for the size bins only."""
        wh = np.clip(self.boxes[:, 2:] - self.boxes[:, :2], 0.0, None)
        return np.sqrt(wh[:, 0] * wh[:, 1])


def as_coco(coco: COCO | str | os.PathLike) -> COCO:
    if isinstance(coco, COCO):
        if not isinstance(getattr(coco, "dataset", None), dict) or "images" not in coco.dataset or "annotations" not in coco.dataset:
            raise ValueError("coco is a COCO object without 'images' and 'annotations'; load it with sodlib.data.load_coco(path)")
        return coco
    if isinstance(coco, (str, os.PathLike)):
        from sodlib.data import load_coco

        return load_coco(coco)
    raise ValueError(f"coco must be a path to a COCO instances json or a pycocotools COCO, got {type(coco).__name__}")


def check_resize(resize: Any) -> Resize:
    if resize is None:
        return None
    try:
        min_size, max_size = (int(v) for v in resize)
    except (TypeError, ValueError):
        raise ValueError(f"resize={resize!r} must be None or (min_size, max_size), e.g. (800, 1333)") from None
    if min_size <= 0 or max_size < min_size:
        raise ValueError(f"resize={resize!r} needs 0 < min_size <= max_size, e.g. (800, 1333)")
    return (min_size, max_size)


def resize_ratios(heights: np.ndarray, widths: np.ndarray, resize: Resize) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(new_heights, new_widths, ratio_y, ratio_x)`` as torchvision's ``GeneralizedRCNNTransform`` resizes.

    ``scale = min(min_size / min(h, w), max_size / max(h, w))``, ``new = floor(side * scale)`` (what
    ``interpolate(scale_factor=scale, recompute_scale_factor=True)`` produces), ``ratio = new / old``.
    """
    heights = np.asarray(heights, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    if resize is None:
        ones = np.ones(heights.shape, dtype=np.float64)
        return heights, widths, ones, ones
    min_size, max_size = resize
    short = np.minimum(heights, widths).astype(np.float64)
    long = np.maximum(heights, widths).astype(np.float64)
    scale = np.minimum(min_size / short, max_size / long)
    new_heights = np.floor(heights * scale).astype(np.int64)
    new_widths = np.floor(widths * scale).astype(np.int64)
    return new_heights, new_widths, new_heights / heights, new_widths / widths


def object_table(coco: COCO | str | os.PathLike, area: AreaMode = "mask", resize: Resize = None, include_crowd: bool = False) -> ObjectTable:
    """The objects of a COCO file as flat arrays (see :class:`ObjectTable`), resized and filtered.

    Raises ``ValueError`` naming the record and field when an image lacks ``height`` / ``width``, an
    annotation names an unknown image, or a bbox is not ``[x, y, w, h]`` with ``w, h >= 0``.
    """
    area = check_area_mode(area)
    resize = check_resize(resize)
    coco = as_coco(coco)
    images = coco.dataset["images"]
    annotations = coco.dataset["annotations"]
    if not images:
        raise ValueError("the COCO file has no images; nothing to count")
    try:
        image_ids = np.array([im["id"] for im in images], dtype=np.int64)
        heights = np.array([im["height"] for im in images], dtype=np.int64)
        widths = np.array([im["width"] for im in images], dtype=np.int64)
    except KeyError as error:
        raise ValueError(f"every image needs 'id', 'height' and 'width'; one lacks {error}; fix the file or load it with sodlib.data.load_coco for a full report") from None
    if np.any(heights <= 0) or np.any(widths <= 0):
        bad = int(np.nonzero((heights <= 0) | (widths <= 0))[0][0])
        raise ValueError(f"image id {image_ids[bad]} has height {heights[bad]} and width {widths[bad]}; both must be positive")
    crowd = np.array([a.get("iscrowd", 0) for a in annotations], dtype=bool)
    keep = np.ones(len(annotations), dtype=bool) if include_crowd else ~crowd
    kept = [a for a, k in zip(annotations, keep) if k]
    try:
        bboxes = np.array([a["bbox"] for a in kept], dtype=np.float64).reshape(-1, 4)
        object_image_ids = np.array([a["image_id"] for a in kept], dtype=np.int64)
        category_ids = np.array([a.get("category_id", -1) for a in kept], dtype=np.int64)
        annotation_ids = np.array([a.get("id", -1) for a in kept], dtype=np.int64)
        areas = np.array([a["area"] for a in kept], dtype=np.float64) if area == "mask" else bboxes[:, 2] * bboxes[:, 3]
    except KeyError as error:
        raise ValueError(f"every annotation needs 'bbox', 'image_id'{' and area' if area == 'mask' else ''}; one lacks {error} (use area='box' for files without 'area')") from None
    except ValueError:
        raise ValueError("every annotation's 'bbox' must be four numbers [x, y, width, height]; load the file with sodlib.data.load_coco for a full report") from None
    if bboxes.shape[0] and (np.any(~np.isfinite(bboxes)) or np.any(bboxes[:, 2:] < 0)):
        bad = int(np.nonzero(~np.isfinite(bboxes).all(axis=1) | (bboxes[:, 2:] < 0).any(axis=1))[0][0])
        raise ValueError(f"annotation id {annotation_ids[bad]} has bbox {bboxes[bad].tolist()}; it must be [x, y, width, height] with width, height >= 0")
    order_of_ids = np.argsort(image_ids, kind="stable")
    position = np.searchsorted(image_ids[order_of_ids], object_image_ids)
    position = np.minimum(position, len(image_ids) - 1)
    found = image_ids[order_of_ids][position] == object_image_ids
    if not np.all(found):
        bad = int(np.nonzero(~found)[0][0])
        raise ValueError(f"annotation id {annotation_ids[bad]} names image_id {object_image_ids[bad]}, which is not in 'images'")
    object_image = order_of_ids[position]
    new_heights, new_widths, ratio_y, ratio_x = resize_ratios(heights, widths, resize)
    rx, ry = ratio_x[object_image], ratio_y[object_image]
    boxes = np.stack([bboxes[:, 0] * rx, bboxes[:, 1] * ry, (bboxes[:, 0] + bboxes[:, 2]) * rx, (bboxes[:, 1] + bboxes[:, 3]) * ry], axis=1)
    areas = areas * rx * ry
    order = np.argsort(object_image, kind="stable")
    object_image = object_image[order]
    image_start = np.zeros(len(image_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(object_image, minlength=len(image_ids)), out=image_start[1:])
    return ObjectTable(
        image_ids=image_ids,
        image_heights=new_heights,
        image_widths=new_widths,
        image_start=image_start,
        object_image=object_image,
        boxes=np.ascontiguousarray(boxes[order]),
        areas=areas[order],
        category_ids=category_ids[order],
        annotation_ids=annotation_ids[order],
        area_mode=area,
        resize=resize,
        include_crowd=include_crowd,
        crowd_excluded=0 if include_crowd else int(crowd.sum()),
    )


def no_objects_error(table: ObjectTable) -> ValueError:
    crowd = f" ({table.crowd_excluded} crowd annotations left out; include_crowd=True counts them)" if table.crowd_excluded else ""
    return ValueError(f"the COCO file has {table.num_images} images but no annotations to count{crowd}")
