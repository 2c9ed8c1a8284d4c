"""``python -m sodlib predict`` and ``experiment capstone``: detection of a folder of images, whole or sliced
(:mod:`sodlib.integrations.sahi`), and the capstone (:mod:`sodlib.integrations.capstone`)."""
from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def _capstone(args: argparse.Namespace, command: str) -> int:
    from sodlib.integrations.capstone import run_capstone

    if args.set:
        raise ValueError("experiment 'capstone' takes no --set (its schedule is fixed; use `train` for others)")
    record = run_capstone(args.seed or 0, quick=args.quick, results_dir=args.results_dir, command=command)
    print(f"capstone: {record['duration_s']:.1f} s; written {record['path']}")
    for row, values in record["rows"].items():
        metrics = values["metrics"]
        print(f"{row:22s} AP {metrics['AP']:.3f}  AP_S {metrics['APs']:.3f}  AR_S {metrics['ARs']:.3f}  "
              f"AP_tiny {metrics['AP_tiny']:.3f}  {values['ms_per_image']:.0f} ms/img")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict``, and ``capstone`` to ``experiment``."""
    from sodlib.engine.commands import EXTRA_EXPERIMENTS

    EXTRA_EXPERIMENTS["capstone"] = (
        "every remedy of the course on the embedded large-image data, each with whole-image and sliced (SAHI) "
        "inference: AP, AP_S, AR_S, AP of the tiny bin, error decomposition, ms per image, peak memory "
        "(trains experiment capstone_training's runs first)", _capstone)
