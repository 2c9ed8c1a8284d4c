"""The training loop: seeded, resumable exactly, and distributed under ``torchrun`` without code changes.

What decides every number of a run (so that two runs with one config give the same losses on the CPU, and a
run resumed from a checkpoint continues with exactly the losses it would have had):

- **data order**: a ``DistributedSampler(seed=config.seed, drop_last=True)`` set to the epoch gives this
  process's share of the shuffled indices (with ``W`` processes, process ``r`` gets every ``W``-th index from
  ``r``: disjoint shares); step ``i`` of epoch ``e = i // S`` reads the ``(i - e * S)``-th batch of it, so
  resuming at step ``i`` needs no saved loader state;
- **crowd regions** are left out of the targets (:func:`without_crowd`), as COCOeval ignores them;
- **augmentation** (horizontal flip with probability 1/2): drawn from ``numpy.random.default_rng([seed,
  epoch, index])``, independent of workers and of the order of reading;
- **the model's own randomness** (the RPN's and the RoI head's sampling of positives and negatives) uses
  torch's global generator, seeded with ``seed + rank`` at the start and saved in every checkpoint;
- **the arithmetic**: the same thread count on the same machine (CPU kernels of different thread counts may
  sum in a different order); on CUDA, cuDNN and atomics make runs close but not bit-identical.

Under ``torchrun`` the model is wrapped in ``DistributedDataParallel`` (gradients are averaged over processes
at every step, so the parameters stay identical), only rank 0 writes files and shows the progress bar, and the
logged losses are means over processes. At the end every process holds rank 0's buffers (batch-norm
running statistics), so all processes end with the model the checkpoint stores.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from sodlib.augment.flip import HorizontalFlipView
from sodlib.data.dataset import detection_collate
from sodlib.engine import distributed
from sodlib.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from sodlib.engine.config import TrainConfig
from sodlib.eval.evaluate import bare_model, dataset_categories

__all__ = ["TrainResult", "train", "learning_rate_factor", "build_optimizer", "without_crowd"]

logger = logging.getLogger(__name__)

@dataclass
class TrainResult:
    """What :func:`train` returns (on every process; ``metrics`` only where the validation ran, rank 0)."""

    history: list[dict[str, Any]]
    iterations: int
    seconds: float
    run_dir: Path | None = None
    checkpoint: Path | None = None
    metrics: dict[str, float] | None = None
    ms_per_image: float | None = None  # the validation's detector time per image (sodlib.eval.evaluate)
    image_ids_per_rank: list[list[int]] = field(default_factory=list)


def learning_rate_factor(iteration: int, total: int, config: TrainConfig) -> float:
    """``lr(i) / lr`` of step ``i`` of ``total`` (warm-up times decay, see :class:`TrainConfig`)."""
    warmup = 1.0
    if iteration < config.warmup_iterations:
        warmup = config.warmup_factor + (1.0 - config.warmup_factor) * iteration / config.warmup_iterations
    if config.schedule == "cosine":
        decay = config.final_lr_factor + (1.0 - config.final_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * iteration / total))
    elif config.schedule == "step":
        decay = config.gamma ** sum(iteration >= m * total for m in config.milestones)
    else:
        decay = 1.0
    return warmup * decay


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over the trainable parameters; weight decay on weights only (not on biases
    and normalisation parameters, the one-dimensional tensors)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


def _check_inputs(model: nn.Module, train_set: Dataset, world_size: int, config: TrainConfig) -> int:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module (a torchvision-style detector), got {type(model).__name__}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model has no trainable parameters; fix: build it with pretrained_backbone=False or more trainable_layers")
    try:
        length = len(train_set)
    except TypeError:
        raise ValueError("train_set must be a map-style dataset with __len__ (e.g. sodlib.data.CocoDetection)") from None
    steps_per_epoch = (length // world_size) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"train_set has {length} images, fewer than one batch of {config.batch_size} per process "
                         f"({world_size} process(es)); fix: lower batch_size or add images")
    return steps_per_epoch


def _checkpoint_path(run_dir: Path | None, config: TrainConfig) -> Path | None:
    """The checkpoint to resume from: ``config.resume`` when it is a path, ``<run_dir>/checkpoints/last.pt`` when
    it is True (which must exist: a resume that silently started over would waste the run), else None."""
    if isinstance(config.resume, (str, os.PathLike)) and not isinstance(config.resume, bool):
        return Path(config.resume)
    if config.resume and run_dir is not None:
        candidate = run_dir / "checkpoints" / "last.pt"
        if not candidate.is_file():
            raise FileNotFoundError(f"resume: {candidate} does not exist, so there is nothing to continue; fix: train "
                                    "without --resume (resume=False) to start the run, or use --resume-if-present")
        return candidate
    return None


def _check_resumable(checkpoint: Mapping[str, Any], config: TrainConfig, path: Path, world_size: int) -> None:
    saved = checkpoint.get("config", {})
    for name in TrainConfig.SCHEDULE_FIELDS:
        ours = getattr(config, name)
        theirs = saved.get(name)
        if isinstance(ours, tuple):
            theirs = tuple(theirs) if theirs is not None else None
        if theirs != ours:
            raise ValueError(f"resume from {path}: the checkpoint was trained with {name}={theirs!r} but this config has "
                             f"{name}={ours!r}; fix: resume with the checkpoint's config (its config.json)")
    if checkpoint.get("world_size", 1) != world_size:
        logger.warning("resuming a %d-process checkpoint with %d process(es): the data order changes from here on",
                       checkpoint.get("world_size", 1), world_size)


def without_crowd(target: Mapping[str, Any]) -> dict[str, Any]:
    """``target`` without its crowd regions (``iscrowd == 1``): every per-object entry (``boxes Tensor[N, 4]``,
    ``labels``, ``area``, ``iscrowd``, ``masks``) keeps the rows with ``iscrowd == 0``.

    A crowd region is one box around many instances; given to the detector as one object of its class it would
    teach it to box whole clusters. COCOeval ignores detections on crowd regions, and training leaves them out.
    """
    if "iscrowd" not in target:
        return dict(target)
    keep = target["iscrowd"] == 0
    if bool(keep.all()):
        return dict(target)
    return {k: (v[keep] if k in ("boxes", "labels", "area", "iscrowd", "masks") else v) for k, v in target.items()}


def _to_device(images: list[torch.Tensor], targets: list[dict], device: torch.device):
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    return images, targets


def train(model: nn.Module, train_set: Dataset, val_set: Dataset | None = None,
          config: TrainConfig | Mapping[str, Any] | None = None) -> TrainResult:
    """Train a torchvision-style detector on ``train_set``; evaluate on ``val_set`` at the end if given.

    Args:
        model: ``model(images, targets)`` returns a dict of losses in train mode (e.g. :func:`sodlib.models.faster_rcnn`).
        train_set: items ``(image Tensor[3, H, W], target dict)`` (a :class:`sodlib.data.CocoDetection`); each
            target's ``image_id`` is recorded per step.
        val_set: a :class:`sodlib.data.CocoDetection` evaluated with :func:`sodlib.eval.evaluate` at the end.
        config: a :class:`TrainConfig` or a dict of its fields.

    With ``config.run_dir`` the run folder receives ``config.json``, ``checkpoints/last.pt`` (and
    ``checkpoints/iteration_<i>.pt`` every ``checkpoint_every`` steps), ``history.json`` (per step: epoch, lr,
    the four losses, their sum, the image ids), ``figures/loss_curves.png`` and, with ``val_set``,
    ``metrics.json`` and ``detections_val.json`` (COCO results).

    Returns:
        :class:`TrainResult` with the per-step history (losses averaged over processes).
    """
    config = config if isinstance(config, TrainConfig) else TrainConfig.from_mapping(config or {})
    context = distributed.setup(config.device)
    threads = torch.get_num_threads()
    try:
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        return _train(model, train_set, val_set, config, context)
    finally:
        torch.set_num_threads(threads)
        distributed.teardown(context)


def _train(model: nn.Module, train_set: Dataset, val_set: Dataset | None, config: TrainConfig,
           context: distributed.DistributedContext) -> TrainResult:
    steps_per_epoch = _check_inputs(model, train_set, context.world_size, config)
    total = config.iterations or config.epochs * steps_per_epoch
    run_dir = Path(config.run_dir) if config.run_dir is not None else None
    resume_path = _checkpoint_path(run_dir, config)
    model.to(context.device)
    optimizer = build_optimizer(model, config)
    use_amp = config.amp and context.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    torch.manual_seed(config.seed + context.rank)
    history: list[dict[str, Any]] = []
    start = 0
    if resume_path is not None:
        checkpoint = load_checkpoint(resume_path, map_location=context.device)
        _check_resumable(checkpoint, config, resume_path, context.world_size)
        bare_model(model).load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        history = list(checkpoint["history"])
        start = int(checkpoint["iteration"])
        states = checkpoint["rng"]
        set_rng_state(states[context.rank] if context.rank < len(states) else states[0])
        logger.info("resumed from %s at step %d of %d", resume_path, start, total)
    if run_dir is not None and context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, default=str))
    ddp_model: nn.Module = model
    if context.distributed:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[context.device.index] if context.device.type == "cuda" else None)
    sampler = DistributedSampler(train_set, num_replicas=context.world_size, rank=context.rank, shuffle=True,
                                 seed=config.seed, drop_last=True)
    seen: list[int] = [i for row in history for i in row.get("image_ids", {}).get(str(context.rank), [])]
    model_config = getattr(bare_model(model), "build_options", None)
    categories = dataset_categories(train_set)

    def checkpoint_payload(iteration: int) -> dict[str, Any]:
        return {"iteration": iteration, "model": bare_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "history": history, "config": config.to_dict(), "model_config": model_config,
                "categories": categories,
                "rng": distributed.all_gather_objects(context, rng_state()), "world_size": context.world_size}

    def write_checkpoint(iteration: int, also_numbered: bool) -> Path | None:
        payload = checkpoint_payload(iteration)  # every process joins the RNG gather
        if run_dir is None or not context.is_main:
            return None
        last = save_checkpoint(run_dir / "checkpoints" / "last.pt", payload)
        if also_numbered:
            save_checkpoint(run_dir / "checkpoints" / f"iteration_{iteration:06d}.pt", payload)
        return last

    bar = tqdm(total=total, initial=start, desc="train", disable=not (config.progress and context.is_main), dynamic_ncols=True)
    began = time.perf_counter()
    ddp_model.train()
    iteration = start
    while iteration < total:
        epoch = iteration // steps_per_epoch
        sampler.set_epoch(epoch)
        indices = list(sampler)[: steps_per_epoch * config.batch_size]
        first = (iteration - epoch * steps_per_epoch) * config.batch_size
        view = HorizontalFlipView(train_set, config.seed, epoch, config.horizontal_flip)
        loader = DataLoader(view, batch_size=config.batch_size, sampler=indices[first:], collate_fn=detection_collate,
                            num_workers=config.num_workers, generator=torch.Generator().manual_seed(config.seed + epoch),
                            pin_memory=context.device.type == "cuda")
        for images, targets in loader:
            if iteration >= total:
                break
            lr = config.lr * learning_rate_factor(iteration, total, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, targets = _to_device(images, [without_crowd(t) for t in targets], context.device)
            with torch.autocast(device_type=context.device.type, enabled=use_amp):
                losses = ddp_model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"step {iteration}: the loss is {loss.item()} ({ {k: float(v) for k, v in losses.items()} }); "
                                         "fix: lower lr, lengthen the warm-up, or set clip_grad_norm")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.clip_grad_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            names = sorted(losses)
            means = distributed.mean_across_processes(context, torch.stack([losses[k].detach().float() for k in names]).cpu())
            ids = [int(t["image_id"]) for t in targets]
            all_ids = distributed.all_gather_objects(context, ids)
            seen.extend(ids)
            record = {"iteration": iteration + 1, "epoch": epoch, "lr": lr, **{k: float(v) for k, v in zip(names, means)}}
            record["loss"] = float(means.sum())
            record["image_ids"] = {str(r): row for r, row in enumerate(all_ids)}
            history.append(record)
            iteration += 1
            bar.update(1)
            window = history[-config.log_every:]
            bar.set_postfix(loss=f"{np.mean([h['loss'] for h in window]):.3f}",
                            cls=f"{np.mean([h.get('loss_classifier', 0.0) for h in window]):.3f}", lr=f"{lr:.2g}")
            if iteration % config.log_every == 0:
                logger.info("step %d/%d loss %.4f lr %.3g", iteration, total, record["loss"], lr)
            if config.checkpoint_every and iteration % config.checkpoint_every == 0 and iteration < total:
                write_checkpoint(iteration, also_numbered=True)
    bar.close()
    seconds = time.perf_counter() - began
    if context.distributed:
        # DDP keeps parameters identical, but batch-norm running statistics are updated by each process's last
        # forward after DDP's broadcast; give every process rank 0's buffers, the ones the checkpoint stores
        for buffer in bare_model(model).buffers():
            torch.distributed.broadcast(buffer, src=0)
    checkpoint_file = write_checkpoint(iteration, also_numbered=False)
    image_ids_per_rank = distributed.all_gather_objects(context, seen)
    result = TrainResult(history=history, iterations=iteration, seconds=seconds, run_dir=run_dir, checkpoint=checkpoint_file,
                         image_ids_per_rank=image_ids_per_rank)
    if context.is_main:
        if run_dir is not None:
            _write_run_files(run_dir, result)
        if val_set is not None:
            from sodlib.eval.evaluate import evaluate

            results_path = run_dir / "detections_val.json" if run_dir is not None else None
            timings: dict[str, float] = {}
            result.metrics = evaluate(model, val_set, config.size_bins or None, batch_size=config.eval_batch_size,
                                      device=context.device, results_path=results_path, progress=config.progress,
                                      timings=timings, f1_score_threshold=config.f1_score_threshold)
            result.ms_per_image = timings["ms_per_image"]
            if run_dir is not None:
                (run_dir / "metrics.json").write_text(json.dumps({"split": "val", "iterations": iteration,
                                                                  "train_seconds": seconds, "ms_per_image": result.ms_per_image,
                                                                  **result.metrics}, indent=2))
    if context.distributed:
        torch.distributed.barrier()
    return result


def _write_run_files(run_dir: Path, result: TrainResult) -> None:
    import matplotlib.pyplot as plt

    from sodlib.viz.detection import plot_loss_curves

    (run_dir / "history.json").write_text(json.dumps({"iterations": result.iterations, "train_seconds": result.seconds,
                                                      "history": result.history}))
    (run_dir / "figures").mkdir(exist_ok=True)
    figure = plot_loss_curves(result.history)
    figure.savefig(run_dir / "figures" / "loss_curves.png", dpi=110)
    plt.close(figure)
