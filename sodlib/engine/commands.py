"""``python -m sodlib train | evaluate | experiment``: detector training and evaluation from the shell.

- ``train --config configs/fast.toml [--run-dir runs/fast] [--resume | --resume-if-present] [--set train.lr=0.01 ...]
  [--train-annotations A --train-images DIR] [--val-annotations A --val-images DIR]``: train and evaluate one run
  configuration into a run folder (see :mod:`sodlib.engine.runs`), on the config's data or your own COCO files;
  works under ``torchrun``.
- ``evaluate --checkpoint runs/fast/checkpoints/last.pt [--split val | --annotations A --images DIR]
  [--size-bin tiny=0,256] [--out DIR]``: COCO AP / AR of a checkpoint, with its results json;
  ``evaluate --results results.json --annotations A``: of a results json made elsewhere (``predict``, SAHI).
- ``experiment NAME [--quick]``: a named experiment (:mod:`sodlib.engine.experiments`) whose results json goes
  under ``notebooks/results/``; modules above the engine add theirs to :data:`EXTRA_EXPERIMENTS` (``capstone``).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import Callable
from pathlib import Path

from sodlib.eval.coco_eval import METRIC_NAMES


def format_metrics(metrics: dict[str, float]) -> str:
    """The figures as two aligned rows of ``name value``."""
    names = list(METRIC_NAMES) + [k for k in metrics if k not in METRIC_NAMES]
    return "\n".join("  " + "  ".join(f"{n:>7s} {metrics[n]:6.3f}" for n in names[i:i + 6]) for i in range(0, len(names), 6))


def format_per_category(rows: list[dict]) -> str:
    """The per-category figures of :func:`sodlib.eval.per_category_ap` as an aligned table."""
    from sodlib.tables import format_table

    return format_table([[row["name"], row["objects"], *(f"{row[k]:.3f}" for k in ("AP", "AP50", "APs"))] for row in rows],
                        ["category", "objects", "AP", "AP50", "APs"])


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["python", "-m", "sodlib", *sys.argv[1:]])


def _train(args: argparse.Namespace) -> int:
    from sodlib.engine.runs import apply_overrides, check_run_config, check_run_dir, load_run_config, run_training

    config = apply_overrides(load_run_config(args.config), args.set)
    config = check_run_config(with_data_flags(config, args), "--train-annotations / --val-annotations")
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / Path(args.config).stem
    check_run_dir(config, run_dir)
    first_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 creates the folder
    resume = args.resume or (args.resume_if_present and (run_dir / "checkpoints" / "last.pt").is_file())
    if first_process and run_dir.exists() and any(run_dir.iterdir()) and not resume and not args.overwrite:
        raise ValueError(f"run folder {run_dir} already holds a run; fix: --resume to continue it, --overwrite to "
                         "start again in it, or --run-dir for a new one")
    summary = run_training(config, run_dir, resume=resume, command=_command_line())
    if summary:
        print(f"trained {summary['iterations']} steps in {summary['train_seconds']:.1f} s; run folder {run_dir}")
        if summary["metrics"]:
            print("validation:\n" + format_metrics(summary["metrics"]))
    return 0


def with_data_flags(config: dict, args: argparse.Namespace) -> dict:
    """``config`` with the ``[data]`` files given on the command line (``--train-annotations A --train-images DIR``,
    the same for val; ``--val-annotations none`` skips validation): each pair replaces that split's source."""
    data = dict(config.get("data", {}))
    for split in ("train", "val"):
        annotations, images = getattr(args, f"{split}_annotations"), getattr(args, f"{split}_images")
        if split == "val" and annotations == "none" and images is None:
            data = {k: v for k, v in data.items() if not k.startswith("val_")}
            data["val"] = "none"
            continue
        if (annotations is None) != (images is None):
            raise ValueError(f"--{split}-annotations and --{split}-images go together; fix: give both (a COCO "
                             "instances json and its image folder)")
        if annotations is not None:
            data = {k: v for k, v in data.items() if k != split}
            data[f"{split}_annotations"], data[f"{split}_images"] = str(annotations), str(images)
    return {**config, "data": data}


def _size_bins(values: list[str]) -> dict[str, tuple[float, float]]:
    bins = {}
    for value in values:
        name, sep, bounds = value.partition("=")
        try:
            lo, hi = (float(v) for v in bounds.split(","))
        except ValueError:
            raise ValueError(f"--size-bin {value!r}: use NAME=LO,HI with areas in pixels^2, e.g. tiny=0,256") from None
        if not sep or not name:
            raise ValueError(f"--size-bin {value!r}: use NAME=LO,HI, e.g. tiny=0,256")
        bins[name] = (lo, hi)
    return bins


def _evaluate_results_file(args: argparse.Namespace, bins: dict[str, tuple[float, float]]) -> int:
    """``evaluate --results FILE --annotations JSON``: the figures of detections made elsewhere (``predict``, SAHI)."""
    from sodlib.data.coco import load_coco
    from sodlib.eval import evaluate_results, per_category_ap, read_results, run_cocoeval

    if args.annotations is None:
        raise ValueError("--results needs --annotations: the COCO instances json of the images it was made on")
    coco_gt = load_coco(args.annotations)
    results = read_results(args.results)  # every record checked before scoring
    image_ids = sorted({int(record["image_id"]) for record in results}) if args.only_predicted_images else None
    cocoeval = run_cocoeval(coco_gt, results, size_bins=bins or None, image_ids=image_ids)
    metrics = evaluate_results(coco_gt, results, size_bins=bins or None, image_ids=image_ids)
    images = len(image_ids) if image_ids is not None else len(coco_gt.imgs)
    print(f"{args.results}: {len(results)} detections on {images} images of {args.annotations}:")
    print(format_metrics(metrics))
    print("per category (-1: no object of the category in that bin):")
    print(format_per_category(per_category_ap(cocoeval)))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({"results": str(args.results), "annotations": str(args.annotations),
                                                      "images": images, **metrics}, indent=2))
        print(f"written: {out / 'metrics.json'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from sodlib.data import CocoDetection, embedded_dataset
    from sodlib.data.files import check_output_apart_from_inputs
    from sodlib.data.synthetic import embedded_paths
    from sodlib.engine.checkpoint import load_checkpoint
    from sodlib.engine.runs import hardware_description
    from sodlib.eval import per_category_ap, run_cocoeval
    from sodlib.eval.evaluate import evaluate, label_map_for
    from sodlib.models import rebuild_model

    bins = _size_bins(args.size_bin)
    if (args.checkpoint is None) == (args.results is None):
        raise ValueError("give exactly one of --checkpoint (detect, then score) and --results (score a results json, "
                         "e.g. from `python -m sodlib predict`)")
    if args.results is not None:
        return _evaluate_results_file(args, bins)
    if (args.annotations is None) != (args.images is None):
        raise ValueError("--annotations and --images go together (or use --split for the embedded dataset)")
    checkpoint_path = Path(args.checkpoint)
    out = Path(args.out) if args.out else checkpoint_path.parent.parent / f"eval_{args.split if args.annotations is None else 'custom'}"
    data = (args.annotations, args.images) if args.annotations is not None else embedded_paths(args.split)
    check_output_apart_from_inputs(out, [*data, checkpoint_path], what="the output folder (--out)")
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint.get("model_config") is None:
        raise ValueError(f"{checkpoint_path} does not record how its model was built (model_config); it was not "
                         "trained with a detector of sodlib's model registry")
    dataset = (CocoDetection(args.annotations, args.images) if args.annotations is not None
               else CocoDetection(*embedded_dataset(args.split)))
    label_map = label_map_for(checkpoint.get("categories"), dataset)  # refuses other categories before any work
    model = rebuild_model(checkpoint["model_config"])
    model.load_state_dict(checkpoint["model"])
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    metrics = evaluate(model, dataset, bins or None, batch_size=args.batch_size, results_path=out / "detections.json",
                       progress=not args.quiet, label_to_category_id=label_map)
    seconds = time.perf_counter() - started
    results = json.loads((out / "detections.json").read_text())
    per_category = per_category_ap(run_cocoeval(dataset.coco, results, image_ids=dataset.image_ids))
    (out / "metrics.json").write_text(json.dumps({"checkpoint": str(checkpoint_path), "iteration": checkpoint["iteration"],
                                                  "images": len(dataset), "seconds": round(seconds, 1),
                                                  "hardware": hardware_description(), **metrics,
                                                  "per_category": per_category}, indent=2))
    print(f"{checkpoint_path} (step {checkpoint['iteration']}) on {len(dataset)} images in {seconds:.1f} s:")
    print(format_metrics(metrics))
    print("per category (-1: no object of the category in that bin):")
    print(format_per_category(per_category))
    print(f"written: {out / 'metrics.json'}, {out / 'detections.json'}")
    return 0


EXTRA_EXPERIMENTS: dict[str, tuple[str, Callable[[argparse.Namespace, str], int]]] = {}
"""Experiments that modules above the engine add (name -> (description, ``runner(args, command) -> exit code``)),
filled by their ``register`` before the command line is parsed."""


def _experiment(args: argparse.Namespace) -> int:
    from sodlib.engine.experiments import EXPERIMENTS, run_experiment
    from sodlib.engine.sr_experiments import SR_EXPERIMENTS, run_sr_experiment

    if args.name == "list":
        for name, experiment in {**EXPERIMENTS, **SR_EXPERIMENTS}.items():
            print(f"{name:16s} {experiment.description}")
        print(f"{'efpn_features':16s} what distillation does to EFPN's features: the error of P'2 and P'3 against the "
              "teacher on object cells and on the background, and Fig. 6's pictures, from experiment efpn's runs")
        print(f"{'sr_proposals':16s} seed 001's Table II: a detector's small detections re-scored by a classifier of crops "
              "upscaled by bilinear, bicubic, each SR network or cut from the HR twin")
        for name, (description, _) in EXTRA_EXPERIMENTS.items():
            print(f"{name:16s} {description}")
        return 0
    if args.name in EXTRA_EXPERIMENTS:
        return EXTRA_EXPERIMENTS[args.name][1](args, _command_line())
    if args.name == "sr_proposals":
        from sodlib.engine.sr_proposals import run_sr_proposals

        if args.set:
            raise ValueError("experiment 'sr_proposals' takes no --set (its schedule is fixed)")
        record = run_sr_proposals(seed=args.seed or 0, quick=args.quick, results_dir=args.results_dir, command=_command_line())
        print(f"sr_proposals: {record['duration_s']:.1f} s; written {record['path']}")
        for row_name, row in record["rows"].items():
            m = row["metrics"]
            print(f"{row_name:16s} AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}  AP_S {m['APs']:.3f}")
        return 0
    if args.name == "efpn_features":
        from sodlib.engine.efpn_features import analyse_efpn_features

        if args.set or args.quick:
            raise ValueError("experiment 'efpn_features' takes no --set or --quick (it reads experiment efpn's runs)")
        record = analyse_efpn_features(args.seed or 0, results_dir=args.results_dir, command=_command_line())
        print(f"efpn_features: {record['duration_s']:.1f} s; written {record['path']}")
        for run, levels in record["runs"].items():
            print(f"{run:24s} " + "  ".join(f"{level} object {e['object']:.4f} background {e['background']:.4f}"
                                            for level, e in levels.items()))
        return 0
    if args.name in SR_EXPERIMENTS:
        if args.set:
            raise ValueError(f"experiment {args.name!r} takes no --set (its schedule is fixed; use 'sr train' for others)")
        record = run_sr_experiment(args.name, seed=args.seed or 0, quick=args.quick, results_dir=args.results_dir,
                                   command=_command_line())
        print(f"{args.name}: {record['duration_s']:.1f} s; written {record['path']}")
        for row_name, row in record["rows"].items():
            measured = row.get("coco_val", row["embedded_twins"])["methods"]
            print(f"{row_name}: PSNR model {measured['model']['psnr']:.2f} dB, bicubic {measured['bicubic']['psnr']:.2f} dB")
        return 0
    record = run_experiment(args.name, quick=args.quick, overrides=args.set, results_dir=args.results_dir, command=_command_line(),
                            seed=args.seed)
    print(f"{args.name}: {record['duration_s']:.1f} s; written {record['path']}")
    for run_name, run in record["runs"].items():
        if run.get("metrics"):
            how = (f"{run['train_seconds']:.1f} s of training" if "evaluated_from" not in run else
                   f"the weights of {run['evaluated_from']} with {json.dumps(run['test_options'])}")
            print(f"{run_name} ({how}, {run['ms_per_image']:.0f} ms per image):\n" + format_metrics(run["metrics"]))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train``, ``evaluate`` and ``experiment`` sub-commands."""
    train = subparsers.add_parser("train", help="train and evaluate a detector from a config file (works under torchrun)")
    train.add_argument("--config", required=True, help="run configuration (.toml or .json), e.g. configs/fast.toml")
    train.add_argument("--run-dir", default=None,
                       help="run folder (default runs/<config name>); apart from the data the config names")
    train.add_argument("--resume", action="store_true",
                       help="continue from <run-dir>/checkpoints/last.pt (refused when there is none)")
    train.add_argument("--resume-if-present", action="store_true",
                       help="continue from <run-dir>/checkpoints/last.pt if it exists, else start the run (for jobs "
                       "that may be restarted)")
    train.add_argument("--overwrite", action="store_true", help="train again into an existing run folder")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a setting, e.g. --set train.iterations=100 (repeatable)")
    for split in ("train", "val"):
        train.add_argument(f"--{split}-annotations", default=None, metavar="JSON",
                           help=f"your own {split} split: a COCO instances json (with --{split}-images), in place of the "
                           "config's [data]" + ("; 'none' to skip validation" if split == "val" else ""))
        train.add_argument(f"--{split}-images", default=None, metavar="DIR", help=f"the image folder of --{split}-annotations")
    train.set_defaults(func=_train)

    evaluate = subparsers.add_parser("evaluate", help="COCO AP / AR of a checkpoint or of a results json, per size bin")
    evaluate.add_argument("--checkpoint", default=None, help="a checkpoint written by train (…/checkpoints/last.pt)")
    evaluate.add_argument("--results", default=None, metavar="JSON",
                          help="instead of --checkpoint: a COCO results json to score (from predict or SAHI), with "
                          "--annotations")
    evaluate.add_argument("--only-predicted-images", action="store_true",
                          help="with --results: score only the images the results name (default: every image)")
    evaluate.add_argument("--split", choices=["train", "val"], default="val", help="embedded split (default val)")
    evaluate.add_argument("--annotations", default=None, help="instead of --split: a COCO instances json")
    evaluate.add_argument("--images", default=None, help="with --annotations: the image folder")
    evaluate.add_argument("--size-bin", action="append", default=[], metavar="NAME=LO,HI",
                          help="an extra area bin in pixels^2, e.g. tiny=0,256 (repeatable)")
    evaluate.add_argument("--batch-size", type=int, default=4)
    evaluate.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    evaluate.add_argument("--out", default=None,
                          help="output folder (default <run-dir>/eval_<split>); apart from the data and the checkpoint")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=_evaluate)

    experiment = subparsers.add_parser("experiment", help="run a named experiment; results json under notebooks/results/")
    experiment.add_argument("name", help="experiment name, or 'list'")
    experiment.add_argument("--quick", action="store_true", help="a few steps only (checks the pipeline, numbers meaningless)")
    experiment.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                            help="override a setting of every run (written as NAME_custom.json)")
    experiment.add_argument("--seed", type=int, default=None,
                            help="[train] seed of every run (written as NAME_seedS.json; one file per seed)")
    experiment.add_argument("--results-dir", default=None,
                            help="where the results json goes (default notebooks/results); apart from the runs' data")
    experiment.set_defaults(func=_experiment)
