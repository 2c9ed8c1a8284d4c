"""Training a super-resolution model on crop pairs, resumably, into an output folder.

The folder holds three files, each written atomically (a temporary file renamed), so a crash leaves either the
previous version or the new one:

- ``checkpoint.pt``: model, optimizer, step, loss history and RNG state, every ``checkpoint_every`` steps and at
  the end; a second call with the same settings continues from it (a finished run returns at once);
- ``weights.pt``: written at the end: ``{"format", "build_options", "state_dict", "protocol", "config"}``, what
  :func:`load_sr_weights` and ``python -m sodlib sr evaluate`` read;
- ``run.json``: the settings, the data protocol and source, the loss every 10 steps, seconds, ``complete``.

Batches need no state to resume: step ``t`` draws its ``batch_size`` pair indices and one of the eight flips /
quarter turns of the square crops from ``torch.Generator`` seeded with ``(seed, t)``. Adam, constant learning rate.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from sodlib.data.files import write_json_atomically
from sodlib.data.sr_pairs import SRPairs
from sodlib.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from sodlib.models.feature_loss import FeatureExtractor, FeatureLoss
from sodlib.models.super_resolution import build_sr_model, check_scale

__all__ = ["SR_LOSSES", "SRTrainConfig", "train_sr", "load_sr_weights", "read_sr_weights_header", "dihedral"]

logger = logging.getLogger(__name__)

SR_LOSSES = ("l1", "mse", "feature")
WEIGHTS_FORMAT = 1


@dataclass
class SRTrainConfig:
    """What one SR training run is: model and scale, steps, batch, Adam's learning rate, the loss, the seed."""

    model: str
    scale: int
    iterations: int = 2000
    batch_size: int = 16
    learning_rate: float = 1e-3
    loss: str = "l1"
    feature_weight: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    model_options: dict[str, Any] = field(default_factory=dict)

    def check(self) -> "SRTrainConfig":
        """Every field checked, with the flag to fix in the message; returns itself."""
        check_scale(self.model, self.scale)
        for name in ("iterations", "batch_size", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer (--{name.replace('_', '-')})")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate!r} must be positive")
        if self.loss not in SR_LOSSES:
            raise ValueError(f"loss={self.loss!r} must be one of {', '.join(SR_LOSSES)} (--loss)")
        if self.seed < 0:
            raise ValueError(f"seed={self.seed} must be >= 0")
        return self


def dihedral(images: Tensor, k: int) -> Tensor:
    """One of the 8 symmetries of a square ``Tensor[B, C, N, N]``: ``k % 4`` quarter turns, then a left-right flip
    when ``k >= 4``."""
    out = torch.rot90(images, k % 4, dims=(-2, -1))
    return out.flip(-1) if k >= 4 else out


def _batch(pairs: SRPairs, config: SRTrainConfig, step: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    indices = torch.randint(len(pairs), (config.batch_size,), generator=generator)
    k = int(torch.randint(8, (1,), generator=generator))
    lr, hr = pairs.batch(indices)
    return dihedral(lr, k), dihedral(hr, k)


def _loss_function(config: SRTrainConfig, extractor: FeatureExtractor | None):
    if config.loss == "l1":
        return F.l1_loss
    if config.loss == "mse":
        return F.mse_loss
    if extractor is None:
        raise ValueError("loss='feature' needs a feature extractor; fix: pass --features <detector checkpoint> "
                         "(sodlib.models.feature_loss.detector_feature_extractor)")
    return FeatureLoss(extractor, config.feature_weight)


def _settings(config: SRTrainConfig, pairs: SRPairs) -> dict[str, Any]:
    return {"config": asdict(config), "protocol": pairs.protocol.describe(), "pairs": len(pairs), "source": pairs.source}


def train_sr(pairs: SRPairs, config: SRTrainConfig, out_dir: str | os.PathLike, *,
             feature_extractor: FeatureExtractor | None = None, progress: bool = True) -> dict[str, Any]:
    """Train ``config.model`` on ``pairs`` into ``out_dir`` (see the module docstring); returns the ``run.json`` dict.

    Refused before any step: a config that does not check, pairs of another scale, a feature loss without an
    extractor, and an ``out_dir`` holding a run with other settings (continue it with the same settings, or
    choose another folder).
    """
    config.check()
    if pairs.protocol.scale != config.scale:
        raise ValueError(f"the pairs are for x{pairs.protocol.scale}, the model for x{config.scale}; fix: the same --scale for both")
    loss_function = _loss_function(config, feature_extractor)
    out = Path(out_dir)
    settings = _settings(config, pairs)
    checkpoint_path, run_path = out / "checkpoint.pt", out / "run.json"
    if not checkpoint_path.is_file() and out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no SR checkpoint; fix: another --out (nothing was written)")
    torch.manual_seed(config.seed)  # the initial weights come from the seed
    model = build_sr_model(config.model, config.scale, **config.model_options)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    start, history, seconds = 0, [], 0.0
    if checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path)
        if state.get("settings") != settings:
            raise ValueError(f"{out} holds an SR run with other settings or data; fix: the same settings to continue it, "
                             "or another --out")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start, history, seconds = state["iteration"], state["history"], state["seconds"]
        logger.info("resuming %s at step %d of %d", out, start, config.iterations)

    def save(step: int) -> None:
        save_checkpoint(checkpoint_path, {"iteration": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                          "history": history, "seconds": seconds, "rng": rng_state(), "settings": settings})

    model.train()
    recent: list[float] = []
    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, disable=not progress,
               desc=f"sr train {config.model} x{config.scale}")
    for step in bar:
        began = time.perf_counter()
        lr, hr = _batch(pairs, config, step)
        loss = loss_function(model(lr), hr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds += time.perf_counter() - began
        recent.append(float(loss.detach()))
        if (step + 1) % 10 == 0 or step + 1 == config.iterations:
            history.append({"step": step + 1, "loss": sum(recent) / len(recent)})
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
            recent = []
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.iterations:
            save(step + 1)
    if start < config.iterations or not (out / "weights.pt").is_file():
        save(config.iterations)
        save_checkpoint(out / "weights.pt", {"build_options": model.build_options, "state_dict": model.state_dict(),
                                             "protocol": pairs.protocol.describe(), "config": asdict(config)})
    summary = {**settings, "iterations": config.iterations, "history": history, "train_seconds": round(seconds, 2),
               "complete": True, "weights": str(out / "weights.pt")}
    write_json_atomically(summary, run_path)
    return summary


def read_sr_weights_header(path: str | os.PathLike) -> dict[str, Any]:
    """The ``build_options``, ``protocol`` and ``config`` of a ``weights.pt`` (checked to be one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "weights.pt"
    if not path.is_file():
        raise FileNotFoundError(f"SR weights {path} do not exist; fix: pass the weights.pt that 'sr train --out DIR' wrote")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or "build_options" not in payload or "state_dict" not in payload:
        raise ValueError(f"{path} is not an SR weights file; fix: pass DIR/weights.pt written by 'sr train'")
    return payload


def load_sr_weights(path: str | os.PathLike, scale: int | None = None) -> nn.Module:
    """The trained model in ``path`` (``weights.pt`` or its folder), in eval mode; with ``scale``, weights of another
    scale are an error."""
    payload = read_sr_weights_header(path)
    options = dict(payload["build_options"])
    name, trained_scale = options.pop("name"), options.pop("scale")
    if scale is not None and scale != trained_scale:
        raise ValueError(f"{path} holds x{trained_scale} weights, not x{scale}; fix: --scale {trained_scale}, or weights trained for x{scale}")
    model = build_sr_model(name, trained_scale, **options)
    model.load_state_dict(payload["state_dict"])
    return model.eval()
