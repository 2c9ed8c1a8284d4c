"""Super-resolution experiments: ``python -m sodlib experiment sr_quality --seed S``.

``sr_quality`` trains each (model, scale) row on the object crops of coco-mini's train split (the embedded
drawn pairs when coco-mini is absent) with the same schedule and seed, and measures PSNR / SSIM on two held-out
sets, against bicubic and bilinear upscaling of the same crops:

- ``coco_val``: coco-mini's val split (every fifth image), real COCO objects downscaled into the small range;
- ``embedded_twins``: 300 drawn pairs (seed ``1000 + S``): small objects as the embedded dataset draws them, with
  their true high-resolution twins (aliased small objects, unlike the antialiased downscaling trained on).

ESPCN runs twice: as published, and with ``residual=True`` (the bicubic upscaling added to its output, as VDSR
does), which isolates what a global skip is worth on this schedule. SRCNN runs at x2 only: at x4 its 9x9 and 5x5 layers work on 128 x 128 crops and a step costs about 16 times
ESPCN's (``python -m sodlib bench sr``), too long for this schedule on a CPU; ``sr train --model srcnn --scale 4``
trains it. The json (``notebooks/results/sr_quality_seedS.json``) is rewritten after every row, ``"complete":
false`` until the last, and a row whose run folder holds a finished training is not trained again.
"""
from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sodlib.data.files import write_json_atomically
from sodlib.data.paths import CHECKOUT_DIR, COCO_MINI_ANNOTATIONS, COCO_MINI_IMAGES, coco_mini_dir
from sodlib.data.sr_pairs import SRProtocol, coco_sr_pairs, embedded_sr_pairs
from sodlib.engine.runs import hardware_description
from sodlib.engine.sr_training import SRTrainConfig, load_sr_weights, train_sr
from sodlib.eval.image_quality import compare_upscalers

__all__ = ["SRRow", "SRExperiment", "SR_EXPERIMENTS", "run_sr_experiment"]

TWIN_PAIRS = 300


@dataclass(frozen=True)
class SRRow:
    """One trained network of an SR experiment: the registered model, its scale and build options."""

    model: str
    scale: int
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        suffix = "".join(f"_{key}" if value is True else f"_{key}{value}" for key, value in self.options)
        return f"{self.model}{suffix}_x{self.scale}"


@dataclass(frozen=True)
class SRExperiment:
    description: str
    rows: tuple[SRRow, ...]
    iterations: int
    batch_size: int = 16
    learning_rate: float = 1e-3


SR_EXPERIMENTS: dict[str, SRExperiment] = {
    "sr_quality": SRExperiment(
        "PSNR / SSIM of ESPCN (as published, and with a bicubic skip), the encoder-decoder (x2, x4) and SRCNN (x2) "
        "against bicubic and bilinear, trained on coco-mini's train crops (L1, 1,200 steps of 16 crops, one thread), "
        "measured on its val crops and on drawn embedded objects with their true HR twins",
        (SRRow("espcn", 2), SRRow("encoder_decoder", 2), SRRow("srcnn", 2), SRRow("espcn", 4), SRRow("encoder_decoder", 4),
         SRRow("espcn", 2, (("residual", True),)), SRRow("espcn", 4, (("residual", True),))),
        iterations=1200),
}


def _training_pairs(protocol: SRProtocol, seed: int):
    root = coco_mini_dir()
    if root is None:
        return embedded_sr_pairs(2000, protocol, seed=seed), None
    return (coco_sr_pairs(root / COCO_MINI_ANNOTATIONS, root / COCO_MINI_IMAGES, protocol, split="train"),
            coco_sr_pairs(root / COCO_MINI_ANNOTATIONS, root / COCO_MINI_IMAGES, protocol, split="val"))


def run_sr_experiment(name: str, seed: int = 0, *, quick: bool = False, results_dir: str | os.PathLike | None = None,
                      runs_root: str | os.PathLike | None = None, command: str | None = None) -> dict[str, Any]:
    """Run SR experiment ``name`` for ``seed``; writes and returns the record (with its ``path``)."""
    if name not in SR_EXPERIMENTS:
        raise ValueError(f"SR experiment {name!r} is unknown; known: {', '.join(SR_EXPERIMENTS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    experiment = SR_EXPERIMENTS[name]
    tag = f"{name}_seed{seed}" + ("_quick" if quick else "")
    out = Path(results_dir) if results_dir is not None else CHECKOUT_DIR / "notebooks" / "results"
    runs = Path(runs_root) if runs_root is not None else CHECKOUT_DIR / "runs" / "experiments" / tag
    iterations = 3 if quick else experiment.iterations
    path = out / f"{tag}.json"
    started, started_utc = time.perf_counter(), datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows: dict[str, Any] = {}
    try:
        for spec in experiment.rows:
            scale = spec.scale
            protocol = SRProtocol(scale=scale)
            train, coco_val = _training_pairs(protocol, seed)
            twins = embedded_sr_pairs(20 if quick else TWIN_PAIRS, protocol, seed=1000 + seed)
            config = SRTrainConfig(spec.model, scale, iterations=iterations, batch_size=experiment.batch_size,
                                   learning_rate=experiment.learning_rate, seed=seed, model_options=dict(spec.options))
            summary = train_sr(train, config, runs / spec.name, progress=False)
            model = load_sr_weights(runs / spec.name, scale=scale)
            methods = {"model": model, "bicubic": "bicubic", "bilinear": "bilinear"}
            row = {"model": spec.model, "options": dict(spec.options), "scale": scale, "iterations": iterations,
                   "train_seconds": summary["train_seconds"],
                   "train_crops": len(train), "train_source": train.source, "final_loss": summary["history"][-1]["loss"],
                   "embedded_twins": compare_upscalers(twins, methods)}
            if coco_val is not None:
                row["coco_val"] = compare_upscalers(coco_val, methods)
            rows[spec.name] = row
            record = {"name": name, "description": experiment.description, "seed": seed, "quick": quick, "command": command,
                      "hardware": hardware_description(), "started_utc": started_utc,
                      "duration_s": round(time.perf_counter() - started, 1),
                      "complete": len(rows) == len(experiment.rows), "rows": rows}
            write_json_atomically(record, path)
    finally:
        torch.set_num_threads(threads)
    record["path"] = str(path)
    return record
