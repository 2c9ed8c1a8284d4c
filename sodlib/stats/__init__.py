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
  positive anchor belongs to the object it overlaps most. ``ties="all"`` (the default) promotes every anchor tied
  at an object's best IoU to a relative :data:`sodlib.anchors.TIE_RTOL`, so a small object inside several
  geometrically equal anchors gets all of them; ``ties="one"`` promotes one anchor per object (the lowest
  index), which is what Kisantal's 1.00 matched anchors per small object suggests; ``ties="exact"`` compares
  IoUs bit for bit, as torchvision's ``Matcher`` and detectron train: the anchors' coordinates are shifted
  floats, so which of the tied anchors pass is rounding noise;
- objects whose box has zero width or height cannot be matched (IoU 0 with every anchor) and are left out of
  the matching statistics, counted in ``degenerate_objects``.

The package: :mod:`~sodlib.stats.objects` reads a file into flat arrays (:class:`ObjectTable`),
:mod:`~sodlib.stats.size_shares` computes the shares, :mod:`~sodlib.stats.anchor_matching` the matching
statistics with the numba kernel of :mod:`~sodlib.stats.matching_kernel`, and :mod:`~sodlib.stats.commands`
holds the ``stats`` and ``anchors`` commands; :mod:`~sodlib.stats.pyramid_levels` counts the objects per FPN / EFPN
pyramid level once resized (:func:`level_shares`).

The matching runs in a numba kernel that, for each object, visits only the anchors that overlap its box, on
the anchor shapes that can still reach the object's best IoU so far or ``neg_iou`` (an upper bound per shape
orders and prunes them). :func:`anchor_matching_reference` computes the same with dense torch IoU matrices
and :func:`~sodlib.anchors.match_anchors`; the tests hold the two equal.
"""
from __future__ import annotations
from sodlib.stats.anchor_matching import (AnchorBinStatistics, AnchorMatchingStatistics, anchor_matching_reference,
                                          anchor_matching_statistics, simulate_random_squares)
from sodlib.stats.objects import ObjectTable, object_table, resize_ratios
from sodlib.stats.pyramid_levels import DEFAULT_SIDE_EDGES, level_shares, levels_by_side, resize_scale
from sodlib.stats.size_shares import CategorySizeStatistics, SizeBinStatistics, SizeStatistics, size_statistics

__all__ = [
    "AnchorBinStatistics",
    "AnchorMatchingStatistics",
    "CategorySizeStatistics",
    "DEFAULT_SIDE_EDGES",
    "ObjectTable",
    "SizeBinStatistics",
    "SizeStatistics",
    "anchor_matching_reference",
    "anchor_matching_statistics",
    "level_shares",
    "levels_by_side",
    "object_table",
    "resize_ratios",
    "resize_scale",
    "simulate_random_squares",
    "size_statistics",
]
