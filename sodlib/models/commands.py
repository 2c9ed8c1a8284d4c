"""``python -m sodlib models``: the detectors of the model registry, one line each."""
from __future__ import annotations

import argparse


def _models(args: argparse.Namespace) -> int:
    from sodlib.models import list_models, model_builder

    for name in list_models():
        doc = (model_builder(name).__doc__ or "").strip().splitlines()
        print(f"{name:16s} {doc[0] if doc else ''}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` command."""
    parser = subparsers.add_parser("models", help="list the detectors a run config can name ([model] name = ...)")
    parser.set_defaults(func=_models)
