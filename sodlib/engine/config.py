"""Training configuration: one dataclass, validated before any work starts, readable from TOML or JSON."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from sodlib.checks import refuse_unknown_names

__all__ = ["TrainConfig", "read_config_file"]


@dataclass
class TrainConfig:
    """How :func:`sodlib.engine.train` trains.

    Schedule (per optimizer step ``i = 0 .. N-1``, ``N`` = ``iterations`` or ``epochs * steps_per_epoch``)::

        lr(i) = lr * warmup(i) * decay(i)
        warmup(i) = warmup_factor + (1 - warmup_factor) * i / warmup_iterations   for i < warmup_iterations, else 1
        decay(i)  = final_lr_factor + (1 - final_lr_factor) * (1 + cos(pi * i / N)) / 2      (cosine)
                  = gamma ** (number of milestones m with i >= m * N)                     (step; m are fractions)
                  = 1                                                                      (constant)

    ``batch_size`` is per process; under ``torchrun`` with ``W`` processes an optimizer step sees ``W *
    batch_size`` images and an epoch has ``len(dataset) // (W * batch_size)`` steps.
    """

    epochs: int = 1
    iterations: int | None = None
    batch_size: int = 4
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iterations: int = 100
    warmup_factor: float = 0.001
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: tuple[float, ...] = (0.67, 0.89)
    gamma: float = 0.1
    final_lr_factor: float = 0.0
    clip_grad_norm: float | None = 10.0
    amp: bool = True
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    num_workers: int = 0
    horizontal_flip: bool = True
    checkpoint_every: int = 0
    run_dir: str | None = None
    resume: bool | str = False
    progress: bool = True
    log_every: int = 20
    eval_batch_size: int = 4
    size_bins: dict[str, tuple[float, float]] = field(default_factory=dict)
    f1_score_threshold: float | None = None  # also P / R / F1 per size bin of the detections scoring >= this

    # fields that must agree between a checkpoint and the run that resumes it, for the resume to be exact
    SCHEDULE_FIELDS = ("epochs", "iterations", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "warmup_iterations",
                       "warmup_factor", "schedule", "milestones", "gamma", "final_lr_factor", "clip_grad_norm", "seed",
                       "horizontal_flip")

    def __post_init__(self) -> None:
        def need(condition: bool, name: str, fix: str) -> None:
            if not condition:
                raise ValueError(f"train config: {name}={getattr(self, name)!r}; {fix}")

        need(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "use a positive integer")
        need(self.iterations is None or (isinstance(self.iterations, int) and self.iterations >= 1), "iterations",
             "use a positive integer, or leave it out to train for `epochs`")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "use a positive integer (images per process)")
        need(self.optimizer in ("sgd", "adamw"), "optimizer", "use 'sgd' (with momentum) or 'adamw'")
        need(isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0, "lr", "use a positive learning rate")
        need(0 <= self.momentum < 1, "momentum", "use a value in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", "use a non-negative value")
        need(isinstance(self.warmup_iterations, int) and self.warmup_iterations >= 0, "warmup_iterations", "use an integer >= 0")
        need(0 < self.warmup_factor <= 1, "warmup_factor", "use a value in (0, 1]")
        need(self.schedule in ("cosine", "step", "constant"), "schedule", "use 'cosine', 'step' or 'constant'")
        self.milestones = tuple(float(m) for m in self.milestones)
        need(all(0 < m < 1 for m in self.milestones) and list(self.milestones) == sorted(self.milestones), "milestones",
             "use increasing fractions of the run in (0, 1), e.g. (0.67, 0.89)")
        need(0 < self.gamma <= 1, "gamma", "use a value in (0, 1]")
        need(0 <= self.final_lr_factor <= 1, "final_lr_factor", "use a value in [0, 1]")
        need(self.clip_grad_norm is None or self.clip_grad_norm > 0, "clip_grad_norm", "use a positive norm, or None for no clipping")
        need(isinstance(self.seed, int) and self.seed >= 0, "seed", "use a non-negative integer")
        need(self.num_threads is None or (isinstance(self.num_threads, int) and self.num_threads >= 1), "num_threads",
             "use a positive integer, or None to keep torch's setting")
        need(isinstance(self.num_workers, int) and self.num_workers >= 0, "num_workers", "use an integer >= 0")
        need(isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 0, "checkpoint_every",
             "use an integer >= 0 (0: a checkpoint at the end only)")
        need(isinstance(self.log_every, int) and self.log_every >= 1, "log_every", "use a positive integer")
        need(isinstance(self.eval_batch_size, int) and self.eval_batch_size >= 1, "eval_batch_size", "use a positive integer")
        threshold = self.f1_score_threshold
        need(threshold is None or (isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0 <= threshold <= 1),
             "f1_score_threshold", "use a detection score in [0, 1] such as 0.5, or leave it out for AP / AR only")
        need(self.resume is False or self.run_dir is not None or isinstance(self.resume, (str, os.PathLike)), "resume",
             "resume=True looks for <run_dir>/checkpoints/last.pt, so set run_dir, or give the checkpoint's path")
        need(self.checkpoint_every == 0 or self.run_dir is not None, "checkpoint_every", "checkpoints need a run_dir")
        self.size_bins = {str(k): (float(v[0]), float(v[1])) for k, v in dict(self.size_bins).items()}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """A config from a dict (a ``[train]`` table), refusing unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        refuse_unknown_names(values, known, "train config")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what ``config.json`` and checkpoints store)."""
        return dataclasses.asdict(self)


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A run configuration from a ``.toml`` or ``.json`` file (tables ``model``, ``data``, ``train``, ``evaluate``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist; fix: pass a path such as configs/fast.toml")
    if path.suffix == ".toml":
        with path.open("rb") as handle:
            try:
                return tomllib.load(handle)
            except tomllib.TOMLDecodeError as error:
                raise ValueError(f"config file {path}: {error}") from None
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"config file {path}: {error}") from None
    raise ValueError(f"config file {path}: use a .toml or .json file")
