"""Run a detector over a dataset and score it with COCOeval (:mod:`sodlib.eval.coco_eval`)."""
from __future__ import annotations

import logging
import os
from typing import Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from sodlib.data.dataset import CocoDetection, detection_collate
from sodlib.data.files import write_json_atomically
from sodlib.eval.coco_eval import coco_results, evaluate_results

__all__ = ["predict", "predict_one", "evaluate", "bare_model"]

logger = logging.getLogger(__name__)


def _check_dataset(dataset) -> None:
    for attribute in ("coco", "image_ids", "label_to_category_id"):
        if not hasattr(dataset, attribute):
            raise ValueError(f"dataset has no {attribute!r}; evaluate needs a sodlib.data.CocoDetection (or a dataset "
                             "with coco, image_ids and label_to_category_id)")


def bare_model(model: nn.Module) -> nn.Module:
    """The detector itself: the module inside a ``DistributedDataParallel`` wrapper, else ``model``."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def predict(model: nn.Module, dataset: CocoDetection, *, batch_size: int = 4, device: str | torch.device | None = None,
            num_workers: int = 0, progress: bool = False) -> list[dict]:
    """Detections of ``model`` (in eval mode) for every item of ``dataset``, on the CPU.

    Returns one dict per image, in dataset order: ``image_id`` (int), ``boxes`` (``Tensor[D, 4]`` xyxy in the
    image's pixels), ``labels`` (``Tensor[D]``), ``scores`` (``Tensor[D]``). The model's train/eval mode is
    restored afterwards.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer")
    model = bare_model(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    loader = torch.utils.data.DataLoader(dataset, batch_size=int(batch_size), shuffle=False, num_workers=num_workers,
                                         collate_fn=detection_collate)
    was_training = model.training
    model.eval()
    predictions: list[dict] = []
    try:
        for images, targets in tqdm(loader, desc="predict", disable=not progress, leave=False):
            outputs = model([image.to(device) for image in images])
            for output, target in zip(outputs, targets):
                predictions.append({"image_id": int(target["image_id"]), **{k: v.detach().cpu() for k, v in output.items()}})
    finally:
        model.train(was_training)
    return predictions


@torch.no_grad()
def predict_one(model: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Detections of one image ``Tensor[3, H, W]``: ``boxes Tensor[D, 4]``, ``labels``, ``scores`` (on the CPU)."""
    model = bare_model(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        output = model([image.to(device)])[0]
    finally:
        model.train(was_training)
    return {k: v.detach().cpu() for k, v in output.items()}


def evaluate(model: nn.Module, dataset: CocoDetection, size_bins: Mapping[str, tuple[float, float]] | None = None, *,
             batch_size: int = 4, device: str | torch.device | None = None, num_workers: int = 0,
             results_path: str | os.PathLike | None = None, progress: bool = False) -> dict[str, float]:
    """COCO box AP / AR of ``model`` on ``dataset``.

    Args:
        model: a torchvision-style detector (``model(images)`` returns boxes, labels, scores per image).
        dataset: a :class:`sodlib.data.CocoDetection`; its images are evaluated against its ``coco`` ground truth.
        size_bins: extra area bins, e.g. ``{"tiny": (0, 16**2)}`` -> ``AP_tiny``, ``AR_tiny``.
        results_path: also write the COCO results json (``[{image_id, category_id, bbox, score}]``) here.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}`` plus the
        extra bins (see :mod:`sodlib.eval.coco_eval`); no detections give zeros.
    """
    _check_dataset(dataset)
    predictions = predict(model, dataset, batch_size=batch_size, device=device, num_workers=num_workers, progress=progress)
    results = coco_results(predictions, dataset.label_to_category_id)
    if results_path is not None:
        write_json_atomically(results, results_path)
    metrics = evaluate_results(dataset.coco, results, size_bins=size_bins, image_ids=dataset.image_ids)
    logger.info("evaluated %d images, %d detections: AP %.3f AP50 %.3f", len(dataset), len(results), metrics["AP"], metrics["AP50"])
    return metrics
