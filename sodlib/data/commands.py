"""``python -m sodlib data ...``: write the embedded dataset, a benchmark-scale json, or check a COCO file.

- ``data embedded``: the embedded train and val splits under ``data/embedded`` (written once, reused);
  ``data embedded --tiny``: those of the tiny-object variant under ``data/embedded_tiny``, with their size mix;
  ``--large``: the large-image variant under ``data/embedded_large``.
- ``data synth --out DIR --images N --seed S [--size-mix tiny]``: a synthetic COCO dataset of your own size.
- ``data synth-annotations --out FILE``: an annotation-only json at COCO-train scale, for benchmarks.
- ``data check FILE [--images DIR] [--workers N]``: validate an instances json (and, with ``--images``, decode
  every image and compare its size with the json's), print the warnings as ``warning: ...`` lines on stderr,
  and print its size-bin counts.

``synth`` and ``synth-annotations`` read nothing, but they never write over, into or around the datasets the
course reads (the embedded splits, coco-mini where it is): with ``--overwrite`` that would replace them.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from pycocotools.coco import COCO

from sodlib.data.coco import load_coco
from sodlib.data.files import check_output_apart_from_inputs
from sodlib.data.sizes import SIZE_BINS, annotation_areas, count_by_size_bin


def _check_apart_from_course_data(output: Path, what: str) -> None:
    """Refuse an ``output`` that is, lies inside or holds the embedded dataset's files or coco-mini's."""
    from sodlib.data.paths import COCO_MINI_ANNOTATIONS, COCO_MINI_IMAGES, coco_mini_dir
    from sodlib.data.synthetic import EMBEDDED_DATASETS, embedded_files

    course = [path for dataset in EMBEDDED_DATASETS for split in ("train", "val")
              for path in embedded_files(dataset, split, generate=False)]
    mini = coco_mini_dir()
    if mini is not None:
        course += [mini / COCO_MINI_ANNOTATIONS, mini / COCO_MINI_IMAGES]
    check_output_apart_from_inputs(output, course, what=what, kind="course dataset")


def _embedded(args: argparse.Namespace) -> int:
    from sodlib.data.sizes import size_mix_report
    from sodlib.data.synthetic import embedded_dataset, embedded_files

    if args.tiny and args.large:
        raise ValueError("--tiny and --large name two datasets; fix: give one of them (or neither, for the main set)")
    for split in ("train", "val"):
        if args.tiny or args.large:
            annotations, images = embedded_files("embedded_tiny" if args.tiny else "embedded_large", split)
            report = size_mix_report(annotations)
            shares = " / ".join(f"{name} {100 * value:.1f} %" for name, value in report["image_area_shares"].items())
            print(f"{split}: {annotations} (images in {images}); of the image area: {shares}; "
                  f"{report['instances_per_image']:.1f} instances per image")
        else:
            annotations, images = embedded_dataset(split)
            print(f"{split}: {annotations} (images in {images})")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from sodlib.data.synthetic import SIZE_MIXES, generate_synthetic_coco

    out = Path(args.out)
    _check_apart_from_course_data(out / args.split, "the split's image folder (--out, --split)")
    _check_apart_from_course_data(out / "annotations" / f"instances_{args.split}.json", "the split's json (--out, --split)")
    start = time.perf_counter()
    path = generate_synthetic_coco(args.out, args.images, args.seed, split=args.split, image_size=args.image_size,
                                   workers=args.workers, overwrite=args.overwrite, mix=SIZE_MIXES[args.size_mix])
    print(f"wrote {args.images} images and {path} in {time.perf_counter() - start:.1f} s")
    return 0


def _synth_annotations(args: argparse.Namespace) -> int:
    from sodlib.data.synthetic import generate_annotation_only_coco

    _check_apart_from_course_data(Path(args.out), "the output json (--out)")
    start = time.perf_counter()
    path = generate_annotation_only_coco(args.out, num_images=args.images, num_objects=args.objects, seed=args.seed)
    print(f"wrote {path} ({args.images} images, {args.objects} objects) in {time.perf_counter() - start:.1f} s")
    return 0


def _load_printing_warnings(args: argparse.Namespace) -> COCO:
    """``load_coco`` for ``data check``; each warning it gives becomes one ``warning: ...`` line on stderr (also
    when it then fails), with a progress bar while decoding images on a terminal."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return load_coco(args.annotations, args.images, check_images=args.images is not None,
                             workers=args.workers, progress=sys.stderr.isatty())
        finally:
            for warning in caught:
                print(f"warning: {warning.message}", file=sys.stderr)


def _check(args: argparse.Namespace) -> int:
    coco = _load_printing_warnings(args)
    annotations = coco.dataset["annotations"]
    crowd = sum(1 for a in annotations if a.get("iscrowd", 0))
    print(f"{args.annotations}: valid; {len(coco.imgs)} images, {len(annotations)} annotations "
          f"({crowd} crowd), {len(coco.cats)} categories")
    for label, subset in (("all", annotations), ("non-crowd", [a for a in annotations if not a.get("iscrowd", 0)])):
        counts = count_by_size_bin(annotation_areas(subset, args.area))
        shares = " / ".join(f"{name} {counts[name]}" for name in SIZE_BINS)
        print(f"  by {args.area} area, {label}: {shares} (edges inclusive, as pycocotools)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="write or check datasets")
    commands = parser.add_subparsers(dest="data_command", required=True)

    embedded = commands.add_parser("embedded", help="write (once) and locate the embedded train/val splits")
    embedded.add_argument("--tiny", action="store_true", help="the tiny-object variant (data/embedded_tiny: 640 px "
                          "images, nine objects in ten under 0.2 %% of the image area) instead")
    embedded.add_argument("--large", action="store_true", help="the large-image variant (data/embedded_large: 1600 px "
                          "images with about 40 objects of 4-32 px each, for sliced inference) instead")
    embedded.set_defaults(func=_embedded)

    synth = commands.add_parser("synth", help="write a synthetic COCO dataset (images + instances json)")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--images", type=int, required=True, help="number of images")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--split", default="train", help="split name used in file and folder names")
    synth.add_argument("--image-size", type=int, default=512, help="square image side in pixels")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing split")
    synth.add_argument("--size-mix", choices=["coco_like", "tiny", "large"], default="coco_like",
                       help="object sizes and counts: coco_like (COCO's bins), tiny (traffic-sign-like, meant "
                       "for --image-size 640) or large (aerial-like, 4-32 px, meant for --image-size 1600)")
    synth.set_defaults(func=_synth)

    annotations = commands.add_parser("synth-annotations", help="write a COCO-train-scale annotation-only json")
    annotations.add_argument("--out", required=True, help="output json path")
    annotations.add_argument("--images", type=int, default=118_287)
    annotations.add_argument("--objects", type=int, default=860_001)
    annotations.add_argument("--seed", type=int, default=0)
    annotations.set_defaults(func=_synth_annotations)

    check = commands.add_parser("check", help="validate a COCO instances json and count objects per size bin")
    check.add_argument("annotations", help="instances json")
    check.add_argument("--images", default=None, help="image folder: also check every image file exists, decodes "
                       "fully and has the json's width and height")
    check.add_argument("--workers", type=int, default=None, help="threads decoding the images (default: the CPU "
                       "count, at most 8)")
    check.add_argument("--area", choices=["mask", "box"], default="mask", help="area that decides the size bin")
    check.set_defaults(func=_check)
