"""Checkpoints that resume exactly: model, optimizer, gradient scaler, step, loss history and every RNG state.

A checkpoint is one ``torch.save`` file (written to ``<name>.tmp`` then renamed, so a crash never leaves half a
file) holding::

    {"format": 1, "iteration": int, "model": state_dict, "optimizer": state_dict, "scaler": state_dict,
     "history": [per-step records], "config": TrainConfig as a dict, "model_config": dict | None,
     "categories": [{"label", "id", "name"}] | None (what the model's labels mean),
     "rng": [per process: {"torch", "cuda", "numpy", "python"}], "world_size": int}

The data order needs no state: the step number, the seed and the epoch determine which images come next
(see :mod:`sodlib.engine.train`).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CHECKPOINT_FORMAT", "rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = 1


def rng_state() -> dict[str, Any]:
    """The states of torch's CPU (and CUDA) generators, numpy's and Python's global generators."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(), "cuda": None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generator states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the format number) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (trusted files only: it holds pickled RNG states)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; fix: pass <run_dir>/checkpoints/last.pt of a finished or running training")
    checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT or "model" not in checkpoint:
        raise ValueError(f"{path} is not a sodlib checkpoint (format {CHECKPOINT_FORMAT}); fix: pass a file written by sodlib.engine.train")
    return checkpoint
