"""``python -m sodlib predict`` and ``experiment capstone``: detection of a folder of images, whole or sliced
(:mod:`sodlib.integrations.sahi`), and the capstone (:mod:`sodlib.integrations.capstone`)."""
from __future__ import annotations

import argparse
import functools
import json
import shlex
from pathlib import Path

__all__ = ["register", "images_to_predict"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def images_to_predict(folder: str | Path, annotations: str | Path | None = None) -> tuple[list[tuple[int, Path]], list[dict] | None]:
    """``[(image_id, path)]`` of what ``predict`` detects on, and the image records it writes when there is no
    annotation file.

    With ``annotations`` (a COCO instances json): the json's images, found under ``folder`` by ``file_name``, with
    the json's ids (so that ``evaluate --results`` can score them); every one must exist. Without: every image file
    of ``folder`` in name order, numbered 1..N, with ``[{"id", "file_name", "width", "height"}]`` to write beside
    the results."""
    from PIL import Image

    from sodlib.data.coco import load_coco

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {folder} is not a folder; fix: give the folder that holds the images")
    if annotations is not None:
        coco = load_coco(annotations)
        images = [(int(image["id"]), folder / image["file_name"]) for image in
                  sorted(coco.dataset["images"], key=lambda image: image["id"])]
        missing = [str(path) for _, path in images if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images of {annotations} are not under {folder} (first: "
                                    f"{missing[0]}); fix: give the folder the json's file_name entries are relative to")
        return images, None
    paths = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not paths:
        raise ValueError(f"--images {folder} holds no image file ({', '.join(IMAGE_SUFFIXES)})")
    records = []
    for image_id, path in enumerate(paths, start=1):
        with Image.open(path) as opened:
            records.append({"id": image_id, "file_name": path.name, "width": opened.width, "height": opened.height})
    return [(record["id"], path) for record, path in zip(records, paths)], records


def _needs_sahi():
    """The SAHI module, or a one-line error with the fix when the ``slicing`` extra is not installed."""
    try:
        from sodlib.integrations import sahi
    except ImportError as error:
        raise ValueError(str(error)) from None
    return sahi


def _slicing(args: argparse.Namespace):
    SliceSettings = _needs_sahi().SliceSettings

    if args.slice is None:
        if args.overlap is not None:
            raise ValueError("--overlap needs --slice SIZE (the tile side in pixels)")
        return None
    return SliceSettings(size=args.slice, overlap=0.2 if args.overlap is None else args.overlap, merge=args.merge,
                         match_metric=args.match_metric, match_threshold=args.match_threshold,
                         standard_prediction=not args.no_full_image)


def _predict(args: argparse.Namespace) -> int:
    import torch

    from sodlib.data.files import check_output_apart_from_inputs

    sahi = _needs_sahi()
    detection_model_from_checkpoint, predict_images = sahi.detection_model_from_checkpoint, sahi.predict_images

    if (args.run is None) == (args.checkpoint is None):
        raise ValueError("give exactly one of --run (a run folder) and --checkpoint (a .pt file)")
    checkpoint = Path(args.checkpoint) if args.checkpoint else Path(args.run) / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint} does not exist; fix: give a run folder or checkpoint written by "
                                "`python -m sodlib train`")
    out = Path(args.out)
    if out.suffix != ".json":
        raise ValueError(f"--out {out}: name a .json file, e.g. --out results.json")
    slicing = _slicing(args)  # bad tile settings are refused before any work
    images, records = images_to_predict(args.images, args.annotations)
    inputs = [Path(args.images), checkpoint] + ([Path(args.annotations)] if args.annotations else [])
    check_output_apart_from_inputs(out.parent / out.name, inputs, what="--out")
    detection_model = detection_model_from_checkpoint(checkpoint, confidence_threshold=args.score_threshold,
                                                      device=args.device)
    if args.annotations:
        known = {category["id"] for category in json.loads(Path(args.annotations).read_text())["categories"]}
        unknown = sorted({category_id for category_id, _ in detection_model.label_to_category.values()} - known)
        if unknown:
            raise ValueError(f"the checkpoint's category ids {unknown[:5]} are not in {args.annotations}; fix: "
                             "predict with a model trained on these categories")
    if args.threads:
        torch.set_num_threads(args.threads)
    timings: dict = {}
    results = predict_images(detection_model, images, slicing, progress=not args.quiet, timings=timings)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results))
    temporary.replace(out)
    written = [str(out)]
    if records is not None:
        images_path = out.with_suffix(".images.json")
        images_path.write_text(json.dumps({"images": records}, indent=1))
        written.append(str(images_path))
    how = (f"sliced: {slicing.size} px tiles, overlap {slicing.overlap}, {timings['tiles_per_image']:.0f} passes per "
           f"image, {slicing.merge} by {slicing.match_metric} {slicing.match_threshold}" if slicing else "whole images")
    print(f"{len(images)} images ({how}): {len(results)} detections, {timings['ms_per_image']:.0f} ms per image")
    print("written: " + ", ".join(written))
    if args.annotations:
        print(f"score it: python -m sodlib evaluate --results {shlex.quote(str(out))} "
              f"--annotations {shlex.quote(str(args.annotations))}")
    return 0


def _capstone(benchmark: str, args: argparse.Namespace, command: str) -> int:
    _needs_sahi()
    from sodlib.integrations.capstone import run_capstone

    if args.set:
        raise ValueError(f"experiment {benchmark!r} takes no --set (its schedule is fixed; use `train` for others)")
    record = run_capstone(args.seed or 0, benchmark=benchmark, quick=args.quick, results_dir=args.results_dir,
                          command=command)
    print(f"{benchmark}: {record['duration_s']:.1f} s; written {record['path']}")
    for row, values in record["rows"].items():
        metrics = values["metrics"]
        print(f"{row:22s} AP {metrics['AP']:.3f}  AP_S {metrics['APs']:.3f}  AR_S {metrics['ARs']:.3f}  "
              f"AP_tiny {metrics['AP_tiny']:.3f}  {values['ms_per_image']:.0f} ms/img")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict``, and ``capstone`` to ``experiment``."""
    from sodlib.engine.commands import EXTRA_EXPERIMENTS

    predict = subparsers.add_parser("predict", help="detect on a folder of images, whole or sliced (SAHI); writes a "
                                    "COCO results json")
    predict.add_argument("--run", default=None, help="a run folder (its checkpoints/last.pt)")
    predict.add_argument("--checkpoint", default=None, help="instead of --run: a checkpoint written by train")
    predict.add_argument("--images", required=True, help="the image folder")
    predict.add_argument("--annotations", default=None,
                         help="a COCO instances json of these images: its image ids go in the results (to evaluate "
                         "them); without it, the folder's images are numbered 1..N in name order")
    predict.add_argument("--out", required=True, help="the results json to write, e.g. results.json")
    predict.add_argument("--slice", type=int, default=None, metavar="SIZE", help="sliced inference with tiles of SIZE px")
    predict.add_argument("--overlap", type=float, default=None, help="with --slice: the tiles' overlap, a share of "
                         "the tile in [0, 1) (default 0.2)")
    predict.add_argument("--merge", default="GREEDYNMM", choices=["GREEDYNMM", "NMM", "NMS"],
                         help="with --slice: SAHI's merge of the tiles' detections (default GREEDYNMM)")
    predict.add_argument("--match-metric", default="IOS", choices=["IOS", "IOU"],
                         help="with --slice: what two detections are matched by (default IOS)")
    predict.add_argument("--match-threshold", type=float, default=0.5, help="with --slice (default 0.5)")
    predict.add_argument("--no-full-image", action="store_true",
                         help="with --slice: the tiles only, without the whole-image pass")
    predict.add_argument("--score-threshold", type=float, default=0.05, help="drop detections below it (default 0.05)")
    predict.add_argument("--device", default=None, help="cpu, cuda, ... (default: the GPU when there is one)")
    predict.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(func=_predict)

    EXTRA_EXPERIMENTS["capstone"] = (
        "every remedy of the course on the embedded large-image data, each with whole-image and sliced (SAHI) "
        "inference: AP, AP_S, AR_S, AP of the tiny bin, error decomposition, ms per image, peak memory "
        "(trains experiment capstone_training's runs first)", functools.partial(_capstone, "capstone"))
    EXTRA_EXPERIMENTS["capstone_tiny"] = (
        "the capstone on the embedded tiny-object data (640 px images, 320 px tiles at a 448 px input) "
        "(trains experiment capstone_tiny_training's runs first)", functools.partial(_capstone, "capstone_tiny"))
