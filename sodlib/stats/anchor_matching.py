"""How the RPN's anchor matching treats each size bin (:func:`anchor_matching_statistics`, Kisantal et al.,
Table 2), with a plain dense-IoU reference (:func:`anchor_matching_reference`)."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO

from sodlib.anchors import FPN_ANCHORS, TIE_RTOL, TIE_RULES, AnchorSet, TieRule, match_anchors
from sodlib.data.sizes import SIZE_BINS, AreaMode, check_area_mode, in_size_bin
from sodlib.stats.matching_kernel import kernel_inputs, match_images
from sodlib.stats.objects import ObjectTable, Resize, check_resize, no_objects_error, object_table


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
    if ties not in TIE_RULES:
        raise ValueError(f"ties={ties!r}; use 'all' (every anchor tied at an object's best IoU, to a relative {TIE_RTOL:g}), "
                         f"'one' (one per object) or 'exact' (bitwise equal IoUs, as torchvision's Matcher)")


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
    check_resize(resize)
    table = coco if isinstance(coco, ObjectTable) else object_table(coco, area=area, resize=resize, include_crowd=include_crowd)
    if table.num_objects == 0:
        raise no_objects_error(table)
    kept, valid = _without_degenerate(table)
    inputs = kernel_inputs(kept, anchors)
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
        match_images(
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
            0.0 if ties == "exact" else TIE_RTOL,
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
        raise no_objects_error(table)
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


def simulate_random_squares(sides: Sequence[float], anchors: AnchorSet = FPN_ANCHORS, per_side: int = 200,
                            seed: int = 0, image_hw: tuple[int, int] = (480, 640), margin: float = 64.0) -> dict[float, tuple[float, float]]:
    """Mean best-anchor IoU of squares of each side placed uniformly at random (away from the border by
    ``margin``) in a ``image_hw`` image, against ``anchors``; ``{side: (mean, standard error)}``.

    Each square gets its own image, so squares never compete for anchors; the matching is
    :func:`anchor_matching_statistics` (the numba kernel). This is how R16 is checked.
    """
    from sodlib.data.coco import coco_from_dict

    rng = np.random.default_rng(seed)
    height, width = image_hw
    images, annotations = [], []
    for side in sides:
        if side <= 0 or side + 2 * margin >= min(height, width):
            raise ValueError(f"side {side} does not fit in a {height} x {width} image with margin {margin}")
        for _ in range(per_side):
            image_id = len(images) + 1
            images.append({"id": image_id, "height": height, "width": width, "file_name": f"{image_id}.jpg"})
            x, y = rng.uniform(margin, width - margin - side), rng.uniform(margin, height - margin - side)
            annotations.append({"id": image_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                "bbox": [x, y, float(side), float(side)], "area": float(side) ** 2})
    coco = coco_from_dict({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "square"}]})
    best = anchor_matching_statistics(coco, anchors=anchors).best_iou.reshape(len(sides), per_side)
    return {float(side): (float(row.mean()), float(row.std(ddof=1) / math.sqrt(per_side))) for side, row in zip(sides, best)}
