"""Benchmark sodlib.stats on a COCO-train-scale annotation file (118,287 images, 860,001 objects).

    python scripts/bench_stats.py [--file PATH] [--reference-images 200] [--resize 800 1333] [--seed 0]

The file is written once by ``sodlib.data.synthetic.generate_annotation_only_coco`` and cached under
``sodlib.data.data_dir() / "bench"``. Measured in one run and printed:

- loading (json + validation + pycocotools index), reported apart from the statistics;
- ``size_statistics`` on the loaded COCO (goal < 10 s);
- ``anchor_matching_statistics`` with the FPN anchors (goal < 2 min), after a warm-up that compiles (or
  loads from cache) the numba kernel;
- the numba kernel against the dense torch reference on the same random subset of images (the reference is
  too slow for the whole file; its full-file time is extrapolated from the subset by image count, and the
  output says so), checking that both give identical per-object results on that subset.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from sodlib.anchors import FPN_ANCHORS
from sodlib.data import data_dir, load_coco
from sodlib.stats import anchor_matching_reference, anchor_matching_statistics, object_table, size_statistics

GOALS = {"size statistics": 10.0, "anchor matching": 120.0}
DEFAULT_FILE = "annotation_only_coco_train_scale_seed0.json"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def subset_table(table, images: np.ndarray):
    """The object table restricted to the given image indices (kept in order)."""
    from sodlib.stats import ObjectTable

    counts = table.image_start[images + 1] - table.image_start[images]
    objects = np.concatenate([np.arange(table.image_start[i], table.image_start[i + 1]) for i in images]) if len(images) else np.zeros(0, dtype=np.int64)
    image_start = np.zeros(len(images) + 1, dtype=np.int64)
    np.cumsum(counts, out=image_start[1:])
    return ObjectTable(
        image_ids=table.image_ids[images], image_heights=table.image_heights[images], image_widths=table.image_widths[images],
        image_start=image_start, object_image=np.repeat(np.arange(len(images)), counts), boxes=np.ascontiguousarray(table.boxes[objects]),
        areas=table.areas[objects], category_ids=table.category_ids[objects], annotation_ids=table.annotation_ids[objects],
        area_mode=table.area_mode, resize=table.resize, include_crowd=table.include_crowd, crowd_excluded=0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=None, help="annotation json (default: generated and cached under data_dir()/bench)")
    parser.add_argument("--reference-images", type=int, default=200, help="images in the subset timed with the torch reference")
    parser.add_argument("--resize", nargs=2, type=int, default=None, metavar=("MIN", "MAX"), help="also time matching on resized images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset choice")
    args = parser.parse_args(argv)

    path = args.file or data_dir() / "bench" / DEFAULT_FILE
    if not path.is_file():
        from sodlib.data.synthetic import generate_annotation_only_coco

        print(f"writing {path} (once; cached) ...", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        _, seconds = timed(generate_annotation_only_coco, path)
        print(f"  written in {seconds:.1f} s", flush=True)

    figures: list[tuple[str, float, str]] = []
    coco, seconds = timed(load_coco, path)
    num_images, num_annotations = len(coco.dataset["images"]), len(coco.dataset["annotations"])
    figures.append(("load_coco (json, validation, index)", seconds, "not part of the goals"))

    sizes, seconds = timed(size_statistics, coco)
    figures.append(("size_statistics (mask area)", seconds, f"goal < {GOALS['size statistics']:.0f} s"))
    _, seconds = timed(size_statistics, coco, resize=(800, 1333))
    figures.append(("size_statistics (resized 800/1333)", seconds, f"goal < {GOALS['size statistics']:.0f} s"))

    table, seconds_table = timed(object_table, coco)
    small = subset_table(table, np.arange(min(20, table.num_images)))
    _, seconds = timed(anchor_matching_statistics, small)
    figures.append(("numba warm-up (compile or cache load, 20 images)", seconds, ""))
    matching, seconds = timed(anchor_matching_statistics, table, anchors=FPN_ANCHORS)
    figures.append(("anchor_matching_statistics (FPN, original sizes)", seconds_table + seconds, f"goal < {GOALS['anchor matching']:.0f} s; object table {seconds_table:.1f} s + kernel {seconds:.1f} s"))
    if args.resize:
        resized_table, seconds_table = timed(object_table, coco, resize=tuple(args.resize))
        _, seconds = timed(anchor_matching_statistics, resized_table, anchors=FPN_ANCHORS)
        figures.append((f"anchor_matching_statistics (FPN, resized {args.resize[0]}/{args.resize[1]})", seconds_table + seconds, f"goal < {GOALS['anchor matching']:.0f} s"))

    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.choice(table.num_images, size=min(args.reference_images, table.num_images), replace=False))
    subset = subset_table(table, chosen)
    kernel_subset, kernel_seconds = timed(anchor_matching_statistics, subset)
    reference_subset, reference_seconds = timed(anchor_matching_reference, subset)
    same = (np.array_equal(kernel_subset.best_iou, reference_subset.best_iou) and np.array_equal(kernel_subset.matched_anchors, reference_subset.matched_anchors)
            and kernel_subset.positive_anchors == reference_subset.positive_anchors and kernel_subset.ignored_anchors == reference_subset.ignored_anchors)
    extrapolated = reference_seconds * table.num_images / len(chosen)

    print(f"\n{path}: {num_images:,} images, {num_annotations:,} annotations ({table.num_objects:,} non-crowd objects)")
    print(f"{'step':55s} {'seconds':>9s}  note")
    for name, seconds, note in figures:
        print(f"{name:55s} {seconds:9.2f}  {note}")
    print(f"\nnumba kernel vs torch reference on the same {len(chosen)} random images (seed {args.seed}), original sizes, FPN anchors:")
    print(f"  kernel {kernel_seconds:.3f} s, reference {reference_seconds:.2f} s: speed-up {reference_seconds / kernel_seconds:.0f}x; identical results: {same}")
    print(f"  reference on the whole file, extrapolated from the subset by image count (not measured): about {extrapolated / 60:.0f} min")
    print("\nper size bin (original sizes, FPN anchors, ties: all):")
    for size_row, match_row in zip(sizes.rows(), matching.rows()):
        print(f"  {size_row['bin']:7s} objects {100 * size_row['object_share']:6.2f}%  images {100 * size_row['image_share']:6.2f}%  area {100 * size_row['area_share']:6.2f}%"
              f"  pos. anchors {100 * match_row['positive_anchor_share']:6.2f}%  anchors/object {match_row['matched_anchors_per_object']:5.2f}  best IoU {match_row['mean_best_iou']:.2f}")
    failed = [name for name, seconds, note in figures if note.startswith("goal") and seconds > float(note.split("< ")[1].split(" s")[0])]
    if failed or not same:
        print(f"\nnot met: {', '.join(failed) or ''}{'' if same else ' kernel != reference'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
