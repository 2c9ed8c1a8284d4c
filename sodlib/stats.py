"""Size-bin statistics and anchor-matching statistics of a COCO annotation file (Kisantal et al., Table 2).

Two questions, answered per COCO size bin (``sodlib.data.sizes.SIZE_BINS``: both edges inclusive as
pycocotools, so an object of area exactly 1024 counts as small *and* medium, and per-bin shares can add up to
a little over 100 %):

- :func:`size_statistics`: how many objects, how many images holding at least one, how much of the annotated
  pixel area each bin has, and per category how its objects spread over the bins;
- :func:`anchor_matching_statistics`: how the RPN's anchor matching treats each bin: the share of all
  positively matched anchors that go to the bin's objects, the mean number of matched anchors per object, and
  the mean of each object's best-anchor IoU.

Conventions, stated in every result:

- ``area="mask"`` (default) uses the annotation's ``area`` field, as COCOeval; ``area="box"`` uses the bbox
  ``w * h``;
- crowd annotations are left out unless ``include_crowd=True``;
- ``resize=(min_size, max_size)`` resizes every image as torchvision's ``GeneralizedRCNNTransform``:
  ``scale = min(min_size / short side, max_size / long side)``, new side ``floor(side * scale)``, boxes
  scaled by ``new / old`` per axis, areas by the product of the two ratios;
- matching is :func:`sodlib.anchors.match_anchors` (torchvision's ``Matcher``): an anchor is positive if its
  IoU with some object is ``>= pos_iou`` or (``allow_low_quality``) it is a best anchor of an object, and a
  positive anchor belongs to the object it overlaps most. ``ties="all"`` (the default, what torchvision and
  detectron train with) promotes every anchor tied at an object's best IoU, so a small object inside several
  equal anchors gets several; ``ties="one"`` promotes one anchor per object (the lowest index), which is what
  Kisantal's 1.00 matched anchors per small object suggests;
- objects whose box has zero width or height cannot be matched (IoU 0 with every anchor) and are left out of
  the matching statistics, counted in ``degenerate_objects``.

The matching runs in a numba kernel that, for each object, visits only the anchors that overlap its box, on
the anchor shapes that can still reach the object's best IoU so far or ``neg_iou`` (an upper bound per shape
orders and prunes them). :func:`anchor_matching_reference` computes the same with dense torch IoU matrices
and :func:`~sodlib.anchors.match_anchors`; the tests hold the two equal.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numba
import numpy as np
import torch
from pycocotools.coco import COCO

from sodlib.anchors import FPN_ANCHORS, AnchorSet, TieRule, base_anchors, match_anchors
from sodlib.data.sizes import SIZE_BINS, AreaMode, check_area_mode, in_size_bin

logger = logging.getLogger(__name__)

__all__ = [
    "AnchorBinStatistics",
    "AnchorMatchingStatistics",
    "CategorySizeStatistics",
    "ObjectTable",
    "SizeBinStatistics",
    "SizeStatistics",
    "anchor_matching_reference",
    "anchor_matching_statistics",
    "object_table",
    "resize_ratios",
    "size_statistics",
]

Resize = tuple[int, int] | None


# ----------------------------------------------------------------------------------------------------------
# reading the annotations into arrays
# ----------------------------------------------------------------------------------------------------------
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


def _as_coco(coco: COCO | str | os.PathLike) -> COCO:
    if isinstance(coco, COCO):
        if not isinstance(getattr(coco, "dataset", None), dict) or "images" not in coco.dataset or "annotations" not in coco.dataset:
            raise ValueError("coco is a COCO object without 'images' and 'annotations'; load it with sodlib.data.load_coco(path)")
        return coco
    if isinstance(coco, (str, os.PathLike)):
        from sodlib.data import load_coco

        return load_coco(coco)
    raise ValueError(f"coco must be a path to a COCO instances json or a pycocotools COCO, got {type(coco).__name__}")


def _check_resize(resize: Any) -> Resize:
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
    resize = _check_resize(resize)
    coco = _as_coco(coco)
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


def _no_objects_error(table: ObjectTable) -> ValueError:
    crowd = f" ({table.crowd_excluded} crowd annotations left out; include_crowd=True counts them)" if table.crowd_excluded else ""
    return ValueError(f"the COCO file has {table.num_images} images but no annotations to count{crowd}")


# ----------------------------------------------------------------------------------------------------------
# size statistics
# ----------------------------------------------------------------------------------------------------------
@dataclass
class SizeBinStatistics:
    """One size bin: ``objects`` and their share of all objects, ``images`` holding at least one such object
    and their share of all images, and the bin's summed object ``area`` and its share of all objects' area."""

    bin: str
    area_range: tuple[float, float]
    objects: int
    object_share: float
    images: int
    image_share: float
    area: float
    area_share: float


@dataclass
class CategorySizeStatistics:
    """One category: ``objects`` in all, ``objects_per_bin`` and ``share_per_bin`` (of the category's objects)."""

    category_id: int
    name: str
    objects: int
    objects_per_bin: dict[str, int]
    share_per_bin: dict[str, float]


@dataclass
class SizeStatistics:
    """Result of :func:`size_statistics`; ``rows()`` and ``category_rows()`` give flat dicts for tables."""

    bins: list[SizeBinStatistics]
    categories: list[CategorySizeStatistics]
    num_images: int
    num_objects: int
    area_mode: str
    resize: Resize
    include_crowd: bool
    crowd_excluded: int

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"bin": b.bin, "objects": b.objects, "object_share": b.object_share, "images": b.images, "image_share": b.image_share, "area": b.area, "area_share": b.area_share}
            for b in self.bins
        ]

    def category_rows(self) -> list[dict[str, Any]]:
        return [
            {"category_id": c.category_id, "name": c.name, "objects": c.objects, **{f"{k}_share": v for k, v in c.share_per_bin.items()}}
            for c in self.categories
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def size_statistics(
    coco: COCO | str | os.PathLike,
    area: AreaMode = "mask",
    resize: Resize = None,
    include_crowd: bool = False,
    bins: Mapping[str, tuple[float, float]] = SIZE_BINS,
) -> SizeStatistics:
    """Per size bin: share of objects, of images holding at least one, and of annotated pixel area.

    For bin ``b`` with ``lo <= area <= hi`` (both inclusive):

    - ``object_share = #objects in b / #objects``;
    - ``image_share = #images with an object in b / #images`` (all images of the file, empty ones included);
    - ``area_share = sum of areas in b / sum of all areas`` (resized areas when ``resize`` is given).

    Categories are sorted by their small-object share (the first bin), largest first.
    """
    area = check_area_mode(area)
    resize = _check_resize(resize)
    coco = _as_coco(coco)
    table = object_table(coco, area=area, resize=resize, include_crowd=include_crowd)
    if table.num_objects == 0:
        raise _no_objects_error(table)
    total_area = float(table.areas.sum())
    bin_rows = []
    members = {}
    for name, (lo, hi) in bins.items():
        member = in_size_bin(table.areas, name, bins)
        members[name] = member
        images_with = int(np.unique(table.object_image[member]).size)
        bin_area = float(table.areas[member].sum())
        bin_rows.append(
            SizeBinStatistics(
                bin=name,
                area_range=(float(lo), float(hi)),
                objects=int(member.sum()),
                object_share=float(member.mean()),
                images=images_with,
                image_share=images_with / table.num_images,
                area=bin_area,
                area_share=bin_area / total_area if total_area > 0 else float("nan"),
            )
        )
    names = {c["id"]: c.get("name", str(c["id"])) for c in coco.dataset.get("categories", [])}
    category_rows = []
    for category_id in np.unique(table.category_ids):
        of_category = table.category_ids == category_id
        count = int(of_category.sum())
        per_bin = {name: int((member & of_category).sum()) for name, member in members.items()}
        category_rows.append(
            CategorySizeStatistics(
                category_id=int(category_id),
                name=names.get(int(category_id), str(int(category_id))),
                objects=count,
                objects_per_bin=per_bin,
                share_per_bin={name: n / count for name, n in per_bin.items()},
            )
        )
    first_bin = next(iter(bins))
    category_rows.sort(key=lambda c: (-c.share_per_bin[first_bin], c.category_id))
    return SizeStatistics(
        bins=bin_rows,
        categories=category_rows,
        num_images=table.num_images,
        num_objects=table.num_objects,
        area_mode=table.area_mode,
        resize=table.resize,
        include_crowd=table.include_crowd,
        crowd_excluded=table.crowd_excluded,
    )


# ----------------------------------------------------------------------------------------------------------
# anchor matching: the numba kernel
# ----------------------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _reserve_int(values, needed):
    """``values`` if it holds ``needed`` entries, else a copy at least twice as long (called outside hot loops:
    reassigning an array inside the innermost loop stops numba from optimising it)."""
    if needed <= values.shape[0]:
        return values
    bigger = np.empty(max(needed, 2 * values.shape[0]), dtype=values.dtype)
    bigger[: values.shape[0]] = values
    return bigger


@numba.njit(cache=True)
def _reserve_float(values, needed):
    if needed <= values.shape[0]:
        return values
    bigger = np.empty(max(needed, 2 * values.shape[0]), dtype=values.dtype)
    bigger[: values.shape[0]] = values
    return bigger


@numba.njit(cache=True)
def _reserve_boxes(values, needed):
    if needed <= values.shape[0]:
        return values
    bigger = np.empty((max(needed, 2 * values.shape[0]), 4), dtype=values.dtype)
    bigger[: values.shape[0]] = values
    return bigger


@numba.njit(cache=True)
def _iou(bx1, by1, bx2, by2, area_object, x1, y1, x2, y2):
    """IoU with the operations and order of ``sodlib.anchors.box_iou(objects, anchors)`` (bitwise equal)."""
    iw = min(bx2, x2) - max(bx1, x1)
    ih = min(by2, y2) - max(by1, y1)
    if iw < 0.0:
        iw = 0.0
    if ih < 0.0:
        ih = 0.0
    inter = iw * ih
    return inter / (area_object + (x2 - x1) * (y2 - y1) - inter)


@numba.njit(cache=True)
def _match_images(
    image_start,  # int64 [I + 1]
    boxes,  # float64 [N, 4]
    feature_h,  # int64 [I, L]
    feature_w,  # int64 [I, L]
    level_start,  # int64 [I, L]: global index of each level's first anchor in the image
    strides,  # float64 [L]
    base,  # float64 [L, K, 4] base anchors, K = max anchors per location
    base_count,  # int64 [L]
    offset,  # float64, fraction of the stride
    pos_iou,
    neg_iou,
    allow_low_quality,
    tie_one,
    best_iou_out,  # float64 [N]
    matched_out,  # int64 [N]
    positive_out,  # int64 [I]
    ignored_out,  # int64 [I]
):
    """Match every image's anchors to its objects as ``match_anchors`` does, visiting only anchors near boxes.

    Per object ``g``: for each anchor shape (level, base anchor) the largest IoU it can reach anywhere is
    ``min(aw, w) min(ah, h) / (aw ah + w h - min(aw, w) min(ah, h))``; shapes are visited in decreasing
    order of that bound until it falls below both the best IoU found so far and ``neg_iou``. On a visited
    shape only grid cells whose anchor overlaps the box are computed. The visit records every anchor with IoU
    ``>= neg_iou`` (candidates for positive / ignored) and the anchors tied at the object's best IoU (all, or
    the lowest index with ``tie_one``). Per image, the promoted best anchors and the candidates are then
    resolved: each goes to the first object it overlaps most (recomputed over all objects for promoted ones),
    is positive if promoted or ``>= pos_iou``, ignored if only ``>= neg_iou``. Outputs are added to / written
    into the ``*_out`` arrays.
    """
    num_levels = strides.shape[0]
    num_shapes = 0
    for level in range(num_levels):
        num_shapes += base_count[level]
    shape_level = np.empty(num_shapes, dtype=np.int64)
    shape_k = np.empty(num_shapes, dtype=np.int64)
    n = 0
    for level in range(num_levels):
        for k in range(base_count[level]):
            shape_level[n] = level
            shape_k[n] = k
            n += 1
    bound = np.empty(num_shapes, dtype=np.float64)
    cand_anchor = np.empty(1024, dtype=np.int64)
    cand_object = np.empty(1024, dtype=np.int64)
    cand_iou = np.empty(1024, dtype=np.float64)
    tie_anchor = np.empty(256, dtype=np.int64)
    tie_box = np.empty((256, 4), dtype=np.float64)
    promoted_anchor = np.empty(256, dtype=np.int64)
    promoted_box = np.empty((256, 4), dtype=np.float64)

    for image in range(image_start.shape[0] - 1):
        first = image_start[image]
        num_objects = image_start[image + 1] - first
        if num_objects == 0:
            continue
        num_cand = 0
        num_promoted = 0
        for g in range(num_objects):
            bx1 = boxes[first + g, 0]
            by1 = boxes[first + g, 1]
            bx2 = boxes[first + g, 2]
            by2 = boxes[first + g, 3]
            w = bx2 - bx1
            h = by2 - by1
            area_object = w * h
            # largest IoU each anchor shape can reach anywhere: full containment one way or the other
            for s in range(num_shapes):
                level = shape_level[s]
                k = shape_k[s]
                aw = base[level, k, 2] - base[level, k, 0]
                ah = base[level, k, 3] - base[level, k, 1]
                inter = min(aw, w) * min(ah, h)
                bound[s] = inter / (aw * ah + area_object - inter)
            order = np.argsort(-bound)
            best = -1.0
            num_ties = 0
            for oi in range(num_shapes):
                s = order[oi]
                if bound[s] < best - 1e-9 and bound[s] < neg_iou - 1e-9:
                    break
                level = shape_level[s]
                k = shape_k[s]
                stride = strides[level]
                shift = offset * stride
                ax1 = base[level, k, 0]
                ay1 = base[level, k, 1]
                ax2 = base[level, k, 2]
                ay2 = base[level, k, 3]
                fw = feature_w[image, level]
                fh = feature_h[image, level]
                i_lo = max(0, int(math.floor((bx1 - ax2) / stride - offset)) - 1)
                i_hi = min(fw - 1, int(math.ceil((bx2 - ax1) / stride - offset)) + 1)
                j_lo = max(0, int(math.floor((by1 - ay2) / stride - offset)) - 1)
                j_hi = min(fh - 1, int(math.ceil((by2 - ay1) / stride - offset)) + 1)
                per_location = base_count[level]
                start = level_start[image, level]
                visits = max(0, i_hi - i_lo + 1) * max(0, j_hi - j_lo + 1)
                cand_anchor = _reserve_int(cand_anchor, num_cand + visits)
                cand_object = _reserve_int(cand_object, num_cand + visits)
                cand_iou = _reserve_float(cand_iou, num_cand + visits)
                tie_anchor = _reserve_int(tie_anchor, num_ties + visits)
                tie_box = _reserve_boxes(tie_box, num_ties + visits)
                for j in range(j_lo, j_hi + 1):
                    cy = j * stride + shift
                    y1 = cy + ay1
                    y2 = cy + ay2
                    if min(by2, y2) - max(by1, y1) <= 0.0:
                        continue
                    for i in range(i_lo, i_hi + 1):
                        cx = i * stride + shift
                        x1 = cx + ax1
                        x2 = cx + ax2
                        if min(bx2, x2) - max(bx1, x1) <= 0.0:
                            continue
                        iou = _iou(bx1, by1, bx2, by2, area_object, x1, y1, x2, y2)
                        anchor = start + (j * fw + i) * per_location + k
                        if iou >= neg_iou:
                            cand_anchor[num_cand] = anchor
                            cand_object[num_cand] = g
                            cand_iou[num_cand] = iou
                            num_cand += 1
                        if iou > best or (iou == best and (not tie_one or anchor < tie_anchor[0])):
                            if iou > best or tie_one:
                                num_ties = 0
                            best = iou
                            tie_anchor[num_ties] = anchor
                            tie_box[num_ties, 0] = x1
                            tie_box[num_ties, 1] = y1
                            tie_box[num_ties, 2] = x2
                            tie_box[num_ties, 3] = y2
                            num_ties += 1
            best_iou_out[first + g] = max(best, 0.0)
            if allow_low_quality and best > 0.0:
                promoted_anchor = _reserve_int(promoted_anchor, num_promoted + num_ties)
                promoted_box = _reserve_boxes(promoted_box, num_promoted + num_ties)
                for t in range(num_ties):
                    promoted_anchor[num_promoted] = tie_anchor[t]
                    promoted_box[num_promoted] = tie_box[t]
                    num_promoted += 1

        positives = 0
        ignored = 0
        # promoted anchors: positive, assigned to the object they overlap most (first such object)
        promoted_order = np.argsort(promoted_anchor[:num_promoted])
        unique_promoted = np.empty(num_promoted, dtype=np.int64)
        num_unique = 0
        for p in range(num_promoted):
            q = promoted_order[p]
            if num_unique > 0 and unique_promoted[num_unique - 1] == promoted_anchor[q]:
                continue
            unique_promoted[num_unique] = promoted_anchor[q]
            num_unique += 1
            top = -1.0
            top_object = -1
            for g in range(num_objects):
                bx1 = boxes[first + g, 0]
                by1 = boxes[first + g, 1]
                bx2 = boxes[first + g, 2]
                by2 = boxes[first + g, 3]
                iou = _iou(bx1, by1, bx2, by2, (bx2 - bx1) * (by2 - by1), promoted_box[q, 0], promoted_box[q, 1], promoted_box[q, 2], promoted_box[q, 3])
                if iou > top:
                    top = iou
                    top_object = g
            matched_out[first + top_object] += 1
            positives += 1
        unique_promoted = unique_promoted[:num_unique]
        # anchors with IoU >= neg_iou for some object: group by anchor, objects in increasing order
        keys = cand_anchor[:num_cand] * num_objects + cand_object[:num_cand]
        cand_order = np.argsort(keys)
        c = 0
        while c < num_cand:
            anchor = cand_anchor[cand_order[c]]
            top = -1.0
            top_object = -1
            while c < num_cand and cand_anchor[cand_order[c]] == anchor:
                if cand_iou[cand_order[c]] > top:
                    top = cand_iou[cand_order[c]]
                    top_object = cand_object[cand_order[c]]
                c += 1
            where = np.searchsorted(unique_promoted, anchor)
            if where < num_unique and unique_promoted[where] == anchor:
                continue
            if top >= pos_iou:
                matched_out[first + top_object] += 1
                positives += 1
            else:
                ignored += 1
        positive_out[image] = positives
        ignored_out[image] = ignored


def _kernel_inputs(table: ObjectTable, anchors: AnchorSet) -> dict[str, Any]:
    num_levels = len(anchors.strides)
    bases = [base_anchors(sizes, anchors.aspect_ratios) for sizes in anchors.sizes]
    most = max(b.shape[0] for b in bases)
    base = np.zeros((num_levels, most, 4), dtype=np.float64)
    for level, b in enumerate(bases):
        base[level, : b.shape[0]] = b
    base_count = np.array([b.shape[0] for b in bases], dtype=np.int64)
    d = anchors.size_divisible
    padded_h = -(-table.image_heights // d) * d
    padded_w = -(-table.image_widths // d) * d
    strides = np.array(anchors.strides, dtype=np.float64)
    feature_h = np.ceil(padded_h[:, None] / strides[None, :]).astype(np.int64)
    feature_w = np.ceil(padded_w[:, None] / strides[None, :]).astype(np.int64)
    per_level = feature_h * feature_w * base_count[None, :]
    level_start = np.zeros_like(per_level)
    level_start[:, 1:] = np.cumsum(per_level, axis=1)[:, :-1]
    return dict(feature_h=feature_h, feature_w=feature_w, level_start=level_start, strides=strides, base=base, base_count=base_count, anchors_per_image=per_level.sum(axis=1))


# ----------------------------------------------------------------------------------------------------------
# anchor matching statistics
# ----------------------------------------------------------------------------------------------------------
@dataclass
class AnchorBinStatistics:
    """One size bin: ``objects`` matched, ``positive_anchors`` assigned to them and their share of all positive
    anchors, ``matched_anchors_per_object`` (mean), ``mean_best_iou`` (mean of each object's best IoU over all
    anchors), and ``unmatched_share`` (share of its objects left with no positive anchor)."""

    bin: str
    objects: int
    positive_anchors: int
    positive_anchor_share: float
    matched_anchors_per_object: float
    mean_best_iou: float
    unmatched_share: float


@dataclass
class AnchorMatchingStatistics:
    """Result of :func:`anchor_matching_statistics`.

    Totals over the dataset: ``anchors`` (all anchors of all images), ``positive_anchors``, ``ignored_anchors``
    (IoU in ``[neg_iou, pos_iou)``, not promoted), ``negative_anchors``. ``best_iou``, ``matched_anchors``,
    ``areas`` (``[N]`` per matched object, in the table's object order) are kept for plots, not for json.
    """

    bins: list[AnchorBinStatistics]
    num_images: int
    num_objects: int
    degenerate_objects: int
    anchors: int
    positive_anchors: int
    ignored_anchors: int
    negative_anchors: int
    anchor_set: str
    pos_iou: float
    neg_iou: float
    allow_low_quality: bool
    ties: str
    area_mode: str
    resize: Resize
    include_crowd: bool
    best_iou: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    matched_anchors: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.int64))
    areas: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(b) for b in self.bins]

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("best_iou", "matched_anchors", "areas")}
        return out


def _check_matching_args(anchors: AnchorSet, pos_iou: float, neg_iou: float, ties: str) -> None:
    if not isinstance(anchors, AnchorSet):
        raise ValueError(f"anchors must be a sodlib.anchors.AnchorSet (e.g. FPN_ANCHORS or AnchorSet.single_level(16, [32, 64])), got {type(anchors).__name__}")
    if not 0.0 < neg_iou <= pos_iou <= 1.0:
        raise ValueError(f"need 0 < neg_iou <= pos_iou <= 1, got neg_iou={neg_iou}, pos_iou={pos_iou}")
    if ties not in ("all", "one"):
        raise ValueError(f"ties={ties!r}; use 'all' (every anchor tied at an object's best IoU, as torchvision's Matcher) or 'one' (one per object)")


def _summarise(table: ObjectTable, valid: np.ndarray, best: np.ndarray, matched: np.ndarray, anchors_total: int, positives: int, ignored: int,
               anchors: AnchorSet, pos_iou: float, neg_iou: float, allow_low_quality: bool, ties: str, bins: Mapping[str, tuple[float, float]]) -> AnchorMatchingStatistics:
    areas = table.areas[valid]
    best = best[valid]
    matched = matched[valid]
    rows = []
    for name in bins:
        member = in_size_bin(areas, name, bins)
        count = int(member.sum())
        positive_in_bin = int(matched[member].sum())
        rows.append(
            AnchorBinStatistics(
                bin=name,
                objects=count,
                positive_anchors=positive_in_bin,
                positive_anchor_share=positive_in_bin / positives if positives else float("nan"),
                matched_anchors_per_object=float(matched[member].mean()) if count else float("nan"),
                mean_best_iou=float(best[member].mean()) if count else float("nan"),
                unmatched_share=float((matched[member] == 0).mean()) if count else float("nan"),
            )
        )
    return AnchorMatchingStatistics(
        bins=rows,
        num_images=table.num_images,
        num_objects=int(valid.sum()),
        degenerate_objects=int((~valid).sum()),
        anchors=int(anchors_total),
        positive_anchors=int(positives),
        ignored_anchors=int(ignored),
        negative_anchors=int(anchors_total - positives - ignored),
        anchor_set=anchors.describe(),
        pos_iou=float(pos_iou),
        neg_iou=float(neg_iou),
        allow_low_quality=bool(allow_low_quality),
        ties=ties,
        area_mode=table.area_mode,
        resize=table.resize,
        include_crowd=table.include_crowd,
        best_iou=best,
        matched_anchors=matched,
        areas=areas,
    )


def _without_degenerate(table: ObjectTable) -> tuple[ObjectTable, np.ndarray]:
    """The table without zero-width or zero-height boxes, and the ``bool [N]`` mask of the kept ones."""
    valid = (table.boxes[:, 2] > table.boxes[:, 0]) & (table.boxes[:, 3] > table.boxes[:, 1])
    if valid.all():
        return table, valid
    object_image = table.object_image[valid]
    image_start = np.zeros(table.num_images + 1, dtype=np.int64)
    np.cumsum(np.bincount(object_image, minlength=table.num_images), out=image_start[1:])
    kept = ObjectTable(**{**table.__dict__, "image_start": image_start, "object_image": object_image, "boxes": np.ascontiguousarray(table.boxes[valid]),
                          "areas": table.areas[valid], "category_ids": table.category_ids[valid], "annotation_ids": table.annotation_ids[valid]})
    return kept, valid


def anchor_matching_statistics(
    coco: COCO | str | os.PathLike | ObjectTable,
    anchors: AnchorSet = FPN_ANCHORS,
    pos_iou: float = 0.7,
    neg_iou: float = 0.3,
    allow_low_quality: bool = True,
    ties: TieRule = "all",
    area: AreaMode = "mask",
    resize: Resize = None,
    include_crowd: bool = False,
    bins: Mapping[str, tuple[float, float]] = SIZE_BINS,
    progress: bool = False,
) -> AnchorMatchingStatistics:
    """Per size bin: share of positive anchors, matched anchors per object, mean best-anchor IoU.

    Every image gets the anchors of ``anchors`` for its (resized) size and is matched as
    :func:`sodlib.anchors.match_anchors` would (see the module docstring for the rule and ``ties``). For bin
    ``b``: ``positive_anchor_share = sum_{g in b} matched(g) / #positive anchors``,
    ``matched_anchors_per_object = mean_{g in b} matched(g)``, ``mean_best_iou = mean_{g in b} max_a IoU(g, a)``.
    ``coco`` may also be an :class:`ObjectTable` (then ``area``, ``resize``, ``include_crowd`` are its own).
    """
    _check_matching_args(anchors, pos_iou, neg_iou, ties)
    check_area_mode(area)
    _check_resize(resize)
    table = coco if isinstance(coco, ObjectTable) else object_table(coco, area=area, resize=resize, include_crowd=include_crowd)
    if table.num_objects == 0:
        raise _no_objects_error(table)
    kept, valid = _without_degenerate(table)
    inputs = _kernel_inputs(kept, anchors)
    best = np.zeros(kept.num_objects, dtype=np.float64)
    matched = np.zeros(kept.num_objects, dtype=np.int64)
    positive = np.zeros(kept.num_images, dtype=np.int64)
    ignored = np.zeros(kept.num_images, dtype=np.int64)
    chunks = np.linspace(0, kept.num_images, num=min(kept.num_images, 100) + 1).astype(np.int64)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=kept.num_images, unit="img", desc="matching anchors")
    for lo, hi in zip(chunks[:-1], chunks[1:]):
        first, last = kept.image_start[lo], kept.image_start[hi]
        _match_images(
            kept.image_start[lo : hi + 1] - first,
            kept.boxes[first:last],
            inputs["feature_h"][lo:hi],
            inputs["feature_w"][lo:hi],
            inputs["level_start"][lo:hi],
            inputs["strides"],
            inputs["base"],
            inputs["base_count"],
            float(anchors.offset),
            float(pos_iou),
            float(neg_iou),
            bool(allow_low_quality),
            ties == "one",
            best[first:last],
            matched[first:last],
            positive[lo:hi],
            ignored[lo:hi],
        )
        if progress:
            bar.update(int(hi - lo))
    if progress:
        bar.close()
    full_best = np.zeros(table.num_objects)
    full_matched = np.zeros(table.num_objects, dtype=np.int64)
    full_best[valid], full_matched[valid] = best, matched
    return _summarise(table, valid, full_best, full_matched, int(inputs["anchors_per_image"].sum()), int(positive.sum()), int(ignored.sum()),
                      anchors, pos_iou, neg_iou, allow_low_quality, ties, bins)


def anchor_matching_reference(
    coco: COCO | str | os.PathLike | ObjectTable,
    anchors: AnchorSet = FPN_ANCHORS,
    pos_iou: float = 0.7,
    neg_iou: float = 0.3,
    allow_low_quality: bool = True,
    ties: TieRule = "all",
    area: AreaMode = "mask",
    resize: Resize = None,
    include_crowd: bool = False,
    bins: Mapping[str, tuple[float, float]] = SIZE_BINS,
    images: Sequence[int] | None = None,
) -> AnchorMatchingStatistics:
    """The same as :func:`anchor_matching_statistics`, computed plainly: per image, all anchors
    ``Tensor[A, 4]`` (float64), the dense IoU matrix ``[G, A]`` and :func:`sodlib.anchors.match_anchors`.

    ``images``: indices (into the file's image list) to restrict the computation to, for timing on a subset.
    """
    _check_matching_args(anchors, pos_iou, neg_iou, ties)
    table = coco if isinstance(coco, ObjectTable) else object_table(coco, area=area, resize=resize, include_crowd=include_crowd)
    if table.num_objects == 0:
        raise _no_objects_error(table)
    valid = (table.boxes[:, 2] > table.boxes[:, 0]) & (table.boxes[:, 3] > table.boxes[:, 1])
    best = np.zeros(table.num_objects)
    matched = np.zeros(table.num_objects, dtype=np.int64)
    anchors_total = positives = ignored = 0
    chosen = range(table.num_images) if images is None else images
    in_subset = np.zeros(table.num_objects, dtype=bool)
    boxes_all = torch.from_numpy(table.boxes)
    for image in chosen:
        lo, hi = int(table.image_start[image]), int(table.image_start[image + 1])
        all_anchors = anchors.anchors_for_image(int(table.image_heights[image]), int(table.image_widths[image]))
        anchors_total += all_anchors.shape[0]
        keep = np.nonzero(valid[lo:hi])[0] + lo
        in_subset[lo:hi] = True
        if keep.size == 0:
            continue
        result = match_anchors(all_anchors, boxes_all[keep], pos_iou, neg_iou, allow_low_quality, ties)
        best[keep] = result.best_iou_per_object.numpy()
        matched[keep] = result.matched_anchors_per_object.numpy()
        positives += int((result.labels == 1).sum())
        ignored += int((result.labels == -1).sum())
    if images is not None:
        sub_valid = valid & in_subset
    else:
        sub_valid = valid
    stats = _summarise(table, sub_valid, best, matched, anchors_total, positives, ignored, anchors, pos_iou, neg_iou, allow_low_quality, ties, bins)
    stats.num_images = len(chosen)
    stats.degenerate_objects = int((in_subset & ~valid).sum())
    return stats
