"""The numba kernel of the anchor-matching statistics: for each object, only the anchors that overlap its
box, on the anchor shapes that can still reach its best IoU so far or ``neg_iou``."""
from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from sodlib.anchors import AnchorSet, base_anchors
from sodlib.stats.objects import ObjectTable


@numba.njit(cache=True)
def _reserve(values, needed):
    """``values`` if it holds ``needed`` rows, else a copy with at least twice as many (rows past the old ones
    uninitialised). One function for every array of the kernel: numba compiles it once per dtype and rank.
    Called outside the hot loops: reassigning an array inside the innermost loop stops numba from optimising it."""
    if needed <= values.shape[0]:
        return values
    bigger = np.empty((max(needed, 2 * values.shape[0]),) + values.shape[1:], dtype=values.dtype)
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
def match_images(
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
    tie_rtol,  # float64: an anchor ties at the best IoU b if its IoU >= b (1 - tie_rtol); 0 is exact equality
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
    ``>= neg_iou`` (candidates for positive / ignored) and the anchors tied at the object's best IoU ``b``,
    those with IoU ``>= b (1 - tie_rtol)`` (all of them, or the lowest index with ``tie_one``). Per image, the promoted best anchors and the candidates are then
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
    tie_iou = np.empty(256, dtype=np.float64)
    tie_box = np.empty((256, 4), dtype=np.float64)
    promoted_anchor = np.empty(256, dtype=np.int64)
    promoted_box = np.empty((256, 4), dtype=np.float64)
    tie_keep = 1.0 - tie_rtol

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
                if bound[s] < best * tie_keep - 1e-9 and bound[s] < neg_iou - 1e-9:
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
                cand_anchor = _reserve(cand_anchor, num_cand + visits)
                cand_object = _reserve(cand_object, num_cand + visits)
                cand_iou = _reserve(cand_iou, num_cand + visits)
                tie_anchor = _reserve(tie_anchor, num_ties + visits)
                tie_iou = _reserve(tie_iou, num_ties + visits)
                tie_box = _reserve(tie_box, num_ties + visits)
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
                        if iou >= best * tie_keep:  # a tie so far; the final best filters them below
                            if iou > best:
                                best = iou
                            tie_anchor[num_ties] = anchor
                            tie_iou[num_ties] = iou
                            tie_box[num_ties, 0] = x1
                            tie_box[num_ties, 1] = y1
                            tie_box[num_ties, 2] = x2
                            tie_box[num_ties, 3] = y2
                            num_ties += 1
            best_iou_out[first + g] = max(best, 0.0)
            kept = 0
            for t in range(num_ties):
                if tie_iou[t] >= best * tie_keep and (not tie_one or kept == 0 or tie_anchor[t] < tie_anchor[0]):
                    if tie_one:
                        kept = 0
                    tie_anchor[kept] = tie_anchor[t]
                    tie_box[kept] = tie_box[t]
                    kept += 1
            num_ties = kept
            if allow_low_quality and best > 0.0:
                promoted_anchor = _reserve(promoted_anchor, num_promoted + num_ties)
                promoted_box = _reserve(promoted_box, num_promoted + num_ties)
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


def kernel_inputs(table: ObjectTable, anchors: AnchorSet) -> dict[str, Any]:
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
