"""Commands ``python -m sodlib stats`` and ``python -m sodlib anchors``.

- ``stats ANNOTATIONS.json [--area box] [--resize 800 1333] [--anchors SPEC] [--ties all|one|exact]
  [--format table|json|csv]``: Kisantal's Table 2 for a COCO file: per size bin the object, image and
  pixel-area shares, and how the RPN's anchor matching treats the bin;
- ``anchors --annotations FILE --stride 16 --iou 0.5``: anchor sizes derived from the file's object sizes so
  that every object between the chosen quantiles has an anchor reaching the IoU in the worst placement.

An anchor SPEC is ``fpn`` (Kisantal's FPN set: 32..512 on strides 4..64) or levels ``STRIDE:SIZE,SIZE;...``,
e.g. ``16:16,25,32,45,64,90`` (one level) or ``4:32;8:64;16:128;32:256;64:512``.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from typing import Any

import numpy as np

from sodlib.anchors import FPN_ANCHORS, TIE_RTOL, TIE_RULES, AnchorSet
from sodlib.tables import format_table

LARGE_FILE_ANNOTATIONS = 50_000  # show progress bars from this many annotations on


def parse_anchor_spec(spec: str, ratios: str = "0.5,1,2", offset: float = 0.0) -> AnchorSet:
    """``"fpn"`` or ``"STRIDE:SIZE,SIZE;STRIDE:SIZE"`` (and ``--ratios`` as ``"0.5,1,2"``) to an AnchorSet."""
    try:
        aspect_ratios = tuple(float(r) for r in ratios.split(","))
    except ValueError:
        raise ValueError(f"--ratios {ratios!r} must be comma-separated numbers (h / w), e.g. 0.5,1,2") from None
    if spec.strip().lower() == "fpn":
        return AnchorSet(FPN_ANCHORS.strides, FPN_ANCHORS.sizes, aspect_ratios, offset=offset)
    strides, sizes = [], []
    try:
        for level in spec.split(";"):
            stride, level_sizes = level.split(":")
            strides.append(float(stride))
            sizes.append(tuple(float(s) for s in level_sizes.split(",")))
    except ValueError:
        raise ValueError(f"--anchors {spec!r} must be 'fpn' or levels 'STRIDE:SIZE,SIZE;STRIDE:SIZE', e.g. '16:16,25,32,45,64,90'") from None
    return AnchorSet(tuple(strides), tuple(sizes), aspect_ratios, offset=offset)


def _percent(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"


def _number(value: float, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table_rows(sizes, matching) -> tuple[list[str], list[list[str]]]:
    header = ["bin", "objects", "object share", "images", "image share", "area share"]
    if matching is not None:
        header += ["pos. anchor share", "anchors / object", "mean best IoU", "no anchor"]
    rows = []
    for i, b in enumerate(sizes.bins):
        row = [b.bin, str(b.objects), _percent(b.object_share), str(b.images), _percent(b.image_share), _percent(b.area_share)]
        if matching is not None:
            m = matching.bins[i]
            row += [_percent(m.positive_anchor_share), _number(m.matched_anchors_per_object), _number(m.mean_best_iou), _percent(m.unmatched_share)]
        rows.append(row)
    return header, rows


def _csv_text(sizes, matching, categories: int) -> str:
    """The bin table as csv (the matching statistics' own object count as ``matched_objects``: objects with a
    box of non-zero size); with ``categories``, an empty row and the table of the first ``categories`` categories."""
    out = io.StringIO()
    writer = csv.writer(out)
    matching_rows = [{("matched_objects" if k == "objects" else k): v for k, v in row.items() if k != "bin"}
                     for row in matching.rows()] if matching is not None else [{} for _ in sizes.bins]
    rows = [{**row, **extra} for row, extra in zip(sizes.rows(), matching_rows)]
    writer.writerow(list(rows[0]))
    writer.writerows([list(row.values()) for row in rows])
    if categories:
        category_rows = sizes.category_rows()[:categories]
        writer.writerow([])
        writer.writerow(list(category_rows[0]) if category_rows else ["category_id", "name", "objects"])
        writer.writerows([list(row.values()) for row in category_rows])
    return out.getvalue()


def _note_large_file(path: str) -> None:
    """Reading a COCO-train-sized json takes 10-20 s without a way to show progress: say so first."""
    try:
        megabytes = os.path.getsize(path) / 2**20
    except OSError:
        return
    if megabytes >= 50:
        print(f"reading {path} ({megabytes:.0f} MB) ...", file=sys.stderr, flush=True)


def _stats(args: argparse.Namespace) -> int:
    from sodlib.data import load_coco
    from sodlib.stats import anchor_matching_statistics, object_table, size_statistics

    resize = tuple(args.resize) if args.resize else None
    anchors = parse_anchor_spec(args.anchors, args.ratios, args.offset)
    _note_large_file(args.annotations)
    coco = load_coco(args.annotations)
    large = len(coco.dataset["annotations"]) >= LARGE_FILE_ANNOTATIONS
    sizes = size_statistics(coco, area=args.area, resize=resize, include_crowd=args.include_crowd)
    matching = None
    if not args.no_matching:
        table = object_table(coco, area=args.area, resize=resize, include_crowd=args.include_crowd)
        matching = anchor_matching_statistics(table, anchors=anchors, pos_iou=args.pos_iou, neg_iou=args.neg_iou, allow_low_quality=not args.no_low_quality,
                                              ties=args.ties, progress=large)
    if args.format == "json":
        document: dict[str, Any] = {"annotations": str(args.annotations), "size_statistics": sizes.to_dict()}
        if matching is not None:
            document["anchor_matching"] = matching.to_dict()
        if args.categories:
            document["categories"] = sizes.category_rows()[: args.categories]
        print(json.dumps(document, indent=2, default=float))
        return 0
    header, rows = _table_rows(sizes, matching)
    if args.format == "csv":
        sys.stdout.write(_csv_text(sizes, matching, args.categories))
        return 0
    resized = f"resized to {resize[0]}/{resize[1]} as torchvision" if resize else "original image sizes"
    crowd = "crowd included" if sizes.include_crowd else f"crowd excluded ({sizes.crowd_excluded})"
    print(f"{args.annotations}: {sizes.num_images} images, {sizes.num_objects} objects; bins by {sizes.area_mode} area "
          f"(both edges inclusive), {resized}, {crowd}")
    if matching is not None:
        rule = f"IoU >= {matching.pos_iou:g}" + (f" or best anchor of an object (ties: {matching.ties})" if matching.allow_low_quality else "")
        print(f"anchors: {matching.anchor_set}; positive if {rule}; "
              f"{matching.positive_anchors} positive of {matching.anchors} anchors"
              + (f"; {matching.degenerate_objects} zero-size boxes not matched" if matching.degenerate_objects else ""))
    print(format_table(rows, header))
    if args.categories:
        first = sizes.bins[0].bin
        print(f"\ncategories with the largest {first} share:")
        cat_rows = [[c.name, str(c.objects)] + [_percent(c.share_per_bin[b.bin]) for b in sizes.bins] for c in sizes.categories[: args.categories]]
        print(format_table(cat_rows, ["category", "objects"] + [b.bin for b in sizes.bins]))
    return 0


def _anchors(args: argparse.Namespace) -> int:
    from sodlib.anchors import derive_anchor_sizes
    from sodlib.data import load_coco
    from sodlib.stats import object_table

    resize = tuple(args.resize) if args.resize else None
    _note_large_file(args.annotations)
    table = object_table(load_coco(args.annotations), area=args.area, resize=resize, include_crowd=False)
    if table.num_objects == 0:
        raise ValueError(f"{args.annotations} has no (non-crowd) annotations to derive anchor sizes from")
    all_sides = table.box_sides if args.sides == "box" else np.sqrt(np.clip(table.areas, 0.0, None))
    sides = all_sides[all_sides > 0]
    if sides.size == 0:
        raise ValueError(f"{args.annotations}: every box has zero width or height; nothing to derive anchor sizes from")
    derived = derive_anchor_sizes(sides, args.stride, args.iou, quantiles=(args.quantiles[0], args.quantiles[1]))
    if args.format == "json":
        print(json.dumps({"annotations": str(args.annotations), "sides": args.sides, **derived.__dict__}, indent=2, default=float))
        return 0
    lo, hi = derived.covered_range
    source = "sqrt(w h) of the boxes" if args.sides == "box" else f"sqrt({table.area_mode} area)"
    print(f"{args.annotations}: {derived.num_objects} objects, sides {source}"
          + (f" after resizing to {resize[0]}/{resize[1]}" if resize else ""))
    print(f"stride {args.stride:g}, IoU {args.iou:g}, worst placement (centres stride/2 apart on each axis): "
          f"smallest matchable side {derived.min_matchable_size:.2f} px; "
          f"{100 * derived.unmatchable_share:.1f}% of objects are smaller")
    sizes = ", ".join(f"{s:.1f}" for s in derived.sizes)
    print(f"anchor sizes covering sides {lo:.1f}..{hi:.1f} px (quantiles {args.quantiles[0]:g}..{args.quantiles[1]:g}): "
          f"{sizes} px")
    print(f"as a run config line, for one stride-{args.stride:g} map ([model] fpn = false): anchor_sizes = [[{sizes}]]")
    return 0


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--area", choices=("mask", "box"), default="mask", help="size bins by the annotation's area field (default, as COCOeval) or by bbox w*h")
    parser.add_argument("--resize", nargs=2, type=int, metavar=("MIN", "MAX"), help="resize images as torchvision's GeneralizedRCNNTransform, e.g. 800 1333")


def register(subparsers: argparse._SubParsersAction) -> None:
    stats = subparsers.add_parser("stats", help="size-bin and anchor-matching statistics of a COCO file (Kisantal Table 2)",
                                  description="Per COCO size bin: object, image and pixel-area shares, and RPN anchor matching.")
    stats.add_argument("annotations", help="COCO instances json")
    _add_common(stats)
    stats.add_argument("--anchors", default="fpn", help="'fpn' (32..512 on strides 4..64) or 'STRIDE:SIZE,SIZE;...'")
    stats.add_argument("--ratios", default="0.5,1,2", help="anchor aspect ratios h / w (default 0.5,1,2)")
    stats.add_argument("--offset", type=float, default=0.0, help="anchor centre offset as a fraction of the stride (0 as torchvision, or 0.5)")
    stats.add_argument("--pos-iou", type=float, default=0.7)
    stats.add_argument("--neg-iou", type=float, default=0.3)
    stats.add_argument("--ties", choices=TIE_RULES, default="all",
                       help=f"best-anchor rule: every anchor tied at an object's best IoU to a relative {TIE_RTOL:g} (default), one per object, "
                       "or 'exact' (bitwise equal IoUs, as torchvision's Matcher)")
    stats.add_argument("--no-low-quality", action="store_true", help="do not promote each object's best anchor")
    stats.add_argument("--include-crowd", action="store_true", help="count crowd annotations too")
    stats.add_argument("--no-matching", action="store_true", help="size statistics only")
    stats.add_argument("--categories", type=int, default=0, metavar="N", help="also list the N categories with the largest small share (json: a 'categories' list; csv: a "
                       "second table after an empty row)")
    stats.add_argument("--format", choices=("table", "json", "csv"), default="table")
    stats.set_defaults(func=_stats)

    anchors = subparsers.add_parser("anchors", help="derive anchor sizes from a COCO file's object sizes",
                                    description="Anchor sizes so that every object side between the quantiles has an anchor "
                                                "reaching the IoU threshold when placed worst (centres stride/2 apart).")
    anchors.add_argument("--annotations", required=True, help="COCO instances json")
    anchors.add_argument("--stride", type=float, required=True, help="feature stride in pixels")
    anchors.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default 0.5)")
    anchors.add_argument("--quantiles", nargs=2, type=float, default=(0.01, 0.99), metavar=("LOW", "HIGH"))
    anchors.add_argument("--sides", choices=("box", "mask"), default="box",
                         help="object sides from the boxes, sqrt(w h) (default: anchors are matched against boxes), or sqrt(area) "
                              "of the area field (--area picks mask or box area)")
    _add_common(anchors)
    anchors.add_argument("--format", choices=("table", "json"), default="table")
    anchors.set_defaults(func=_anchors)
