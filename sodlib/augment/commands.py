"""Commands ``python -m sodlib augment`` and ``python -m sodlib oversample`` (offline, after Kisantal et al.).

- ``augment --annotations FILE --images DIR --out DIR --strategy one|several|all [--count K]
  [--setting original+augmented|augmented] [--seed S] [--allow-overlap] [--edge-blur 3|5] [--format png|jpg] [--workers N]
  [--link-images] [--overwrite]``: writes ``DIR/instances.json`` and ``DIR/images/`` with small objects copy-pasted
  (:func:`sodlib.augment.copy_paste_coco`); the unchanged images are copied (hard-linked with ``--link-images``).
  ``DIR`` must be apart from the inputs; work folders of an interrupted run for ``DIR`` are removed and named.
- ``oversample --annotations FILE --out FILE --factor F [--seed S]``: writes a json in which every image
  holding a small object appears ``F`` times (:func:`sodlib.augment.write_oversampled_coco`); it names the same
  image files, so train with the original image folder.
"""
from __future__ import annotations

import argparse

from sodlib.augment.copy_paste import STRATEGIES, CopyPasteSettings
from sodlib.augment.offline import IMAGE_FORMATS, SETTINGS, copy_paste_coco
from sodlib.augment.oversampling import write_oversampled_coco


def _augment(args: argparse.Namespace) -> int:
    settings = CopyPasteSettings(strategy=args.strategy, count=args.count, scale_range=tuple(args.scale),
                                 max_rotation_degrees=args.rotation, border_margin=args.margin,
                                 allow_overlap=args.allow_overlap, edge_blur=args.edge_blur)
    result = copy_paste_coco(args.annotations, args.images, args.out, settings, setting=args.setting, seed=args.seed,
                             image_format=args.format, overwrite=args.overwrite, link_images=args.link_images,
                             workers=args.workers, progress=not args.quiet)
    for folder, size in result.leftovers_removed:
        print(f"removed {folder} ({size / 1e6:.1f} MB), a work folder left by an interrupted run")
    counts = result.counts
    print(f"wrote {result.annotations} ({result.images} images, {result.augmented_images} with pasted objects, "
          f"{result.annotations_written} annotations) and the images in {result.image_dir}")
    print(f"  strategy {args.strategy} x{args.count}, setting {args.setting}: {counts.pasted} of "
          f"{counts.planned_pastes} pastes done, {counts.skipped_no_room} skipped for lack of room, "
          f"{counts.skipped_vanished} for vanishing when scaled down")
    print(f"  {counts.small_objects} small objects in {counts.images - counts.images_without_candidates} images with "
          f"copyable small objects; {counts.split_masks} left out for a mask in several pieces")
    return 0


def _oversample(args: argparse.Namespace) -> int:
    path, with_small, written = write_oversampled_coco(args.annotations, args.out, args.factor, seed=args.seed,
                                                       overwrite=args.overwrite)
    print(f"wrote {path}: {written} images ({with_small} with small objects, each {args.factor:g}x); "
          "it names the original image files, so use it with the original image folder")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    augment = subparsers.add_parser("augment", help="copy-paste small objects into their images (offline)",
                                    description="Copy-paste small objects (Kisantal et al.) and write a COCO dataset.")
    augment.add_argument("--annotations", required=True, help="input COCO instances json (with masks)")
    augment.add_argument("--images", required=True, help="folder of the input images")
    augment.add_argument("--out", required=True,
                         help="output folder (gets instances.json and images/ with copies of the unchanged images); "
                              "apart from the inputs")
    augment.add_argument("--strategy", required=True, choices=STRATEGIES,
                         help="one: one object pasted COUNT times; several: COUNT objects once each; "
                              "all: every small object COUNT times")
    augment.add_argument("--count", type=int, default=1, help="k of the strategy (default 1)")
    augment.add_argument("--setting", choices=SETTINGS, default="original+augmented",
                         help="keep each image with small objects and add its augmented copy (default), or replace it")
    augment.add_argument("--seed", type=int, default=0)
    augment.add_argument("--scale", type=float, nargs=2, default=(0.8, 1.2), metavar=("LOW", "HIGH"),
                         help="range of the random scale on the object's side (default 0.8 1.2)")
    augment.add_argument("--rotation", type=float, default=15.0, help="largest rotation in degrees (default 15)")
    augment.add_argument("--margin", type=int, default=5, help="free pixels kept to the image border (default 5)")
    augment.add_argument("--allow-overlap", action="store_true", help="paste without avoiding other objects (ablation)")
    augment.add_argument("--edge-blur", type=int, default=None, help="Gaussian kernel size for the pasted outline (3 or 5)")
    augment.add_argument("--format", choices=tuple(IMAGE_FORMATS), default="png", help="format of augmented images")
    augment.add_argument("--workers", type=int, default=1, help="processes doing the images (same output for any number)")
    augment.add_argument("--link-images", action="store_true",
                         help="hard-link the unchanged images instead of copying them (saves space, but an output "
                              "image is then the same file as its source: editing one edits the other)")
    augment.add_argument("--overwrite", action="store_true",
                         help="replace an existing output folder (never an input, nor a folder holding one)")
    augment.add_argument("--quiet", action="store_true", help="no progress bar")
    augment.set_defaults(func=_augment)

    oversample = subparsers.add_parser("oversample", help="repeat images with small objects in a COCO json (offline)",
                                       description="Write a COCO json where images holding small objects appear FACTOR times.")
    oversample.add_argument("--annotations", required=True, help="input COCO instances json")
    oversample.add_argument("--out", required=True, help="output json path")
    oversample.add_argument("--factor", type=float, required=True, help="times each image with small objects appears (>= 1)")
    oversample.add_argument("--seed", type=int, default=0, help="picks the extra copies of a fractional factor")
    oversample.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    oversample.set_defaults(func=_oversample)
