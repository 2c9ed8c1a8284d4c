"""``python -m sodlib train | evaluate | experiment``: detector training and evaluation from the shell.

- ``train --config configs/fast.toml [--run-dir runs/fast] [--resume] [--set train.lr=0.01 ...]``: train and
  evaluate one run configuration into a run folder (see :mod:`sodlib.engine.runs`); works under ``torchrun``.
- ``evaluate --checkpoint runs/fast/checkpoints/last.pt [--split val | --annotations A --images DIR]
  [--size-bin tiny=0,256] [--out DIR]``: COCO AP / AR of a checkpoint, with its results json.
- ``experiment NAME [--quick]``: a named experiment (:mod:`sodlib.engine.experiments`) whose results json goes
  under ``notebooks/results/``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from sodlib.eval.coco_eval import METRIC_NAMES


def format_metrics(metrics: dict[str, float]) -> str:
    """The figures as two aligned rows of ``name value``."""
    names = list(METRIC_NAMES) + [k for k in metrics if k not in METRIC_NAMES]
    return "\n".join("  " + "  ".join(f"{n:>7s} {metrics[n]:6.3f}" for n in names[i:i + 6]) for i in range(0, len(names), 6))


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["python", "-m", "sodlib", *sys.argv[1:]])


def _train(args: argparse.Namespace) -> int:
    from sodlib.engine.runs import apply_overrides, check_run_dir, load_run_config, run_training

    config = apply_overrides(load_run_config(args.config), args.set)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / Path(args.config).stem
    check_run_dir(config, run_dir)
    first_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 creates the folder
    if first_process and run_dir.exists() and any(run_dir.iterdir()) and not args.resume and not args.overwrite:
        raise ValueError(f"run folder {run_dir} already holds a run; fix: --resume to continue it, --overwrite to "
                         "start again in it, or --run-dir for a new one")
    summary = run_training(config, run_dir, resume=args.resume, command=_command_line())
    if summary:
        print(f"trained {summary['iterations']} steps in {summary['train_seconds']:.1f} s; run folder {run_dir}")
        if summary["metrics"]:
            print("validation:\n" + format_metrics(summary["metrics"]))
    return 0


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


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from sodlib.data import CocoDetection, embedded_dataset
    from sodlib.data.files import check_output_apart_from_inputs
    from sodlib.data.synthetic import embedded_paths
    from sodlib.engine.checkpoint import load_checkpoint
    from sodlib.eval.evaluate import evaluate
    from sodlib.engine.runs import hardware_description
    from sodlib.models import rebuild_model

    bins = _size_bins(args.size_bin)
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
    model = rebuild_model(checkpoint["model_config"])
    model.load_state_dict(checkpoint["model"])
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    metrics = evaluate(model, dataset, bins or None, batch_size=args.batch_size, results_path=out / "detections.json",
                       progress=not args.quiet)
    seconds = time.perf_counter() - started
    (out / "metrics.json").write_text(json.dumps({"checkpoint": str(checkpoint_path), "iteration": checkpoint["iteration"],
                                                  "images": len(dataset), "seconds": round(seconds, 1),
                                                  "hardware": hardware_description(), **metrics}, indent=2))
    print(f"{checkpoint_path} (step {checkpoint['iteration']}) on {len(dataset)} images in {seconds:.1f} s:")
    print(format_metrics(metrics))
    print(f"written: {out / 'metrics.json'}, {out / 'detections.json'}")
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from sodlib.engine.experiments import EXPERIMENTS, run_experiment

    if args.name == "list":
        for name, experiment in EXPERIMENTS.items():
            print(f"{name:16s} {experiment.description}")
        return 0
    record = run_experiment(args.name, quick=args.quick, overrides=args.set, results_dir=args.results_dir, command=_command_line(),
                            seed=args.seed)
    print(f"{args.name}: {record['duration_s']:.1f} s; written {record['path']}")
    for run_name, run in record["runs"].items():
        if run.get("metrics"):
            print(f"{run_name} ({run['train_seconds']:.1f} s of training):\n" + format_metrics(run["metrics"]))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train``, ``evaluate`` and ``experiment`` sub-commands."""
    train = subparsers.add_parser("train", help="train and evaluate a detector from a config file (works under torchrun)")
    train.add_argument("--config", required=True, help="run configuration (.toml or .json), e.g. configs/fast.toml")
    train.add_argument("--run-dir", default=None,
                       help="run folder (default runs/<config name>); apart from the data the config names")
    train.add_argument("--resume", action="store_true", help="continue from <run-dir>/checkpoints/last.pt")
    train.add_argument("--overwrite", action="store_true", help="train again into an existing run folder")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a setting, e.g. --set train.iterations=100 (repeatable)")
    train.set_defaults(func=_train)

    evaluate = subparsers.add_parser("evaluate", help="COCO AP / AR of a checkpoint, per size bin")
    evaluate.add_argument("--checkpoint", required=True, help="a checkpoint written by train (…/checkpoints/last.pt)")
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
