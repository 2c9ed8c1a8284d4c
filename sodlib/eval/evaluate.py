"""Run a detector over a dataset and score it with COCOeval (:mod:`sodlib.eval.coco_eval`)."""
from __future__ import annotations

import logging
import os
import time
from typing import Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from sodlib.data.dataset import CocoDetection, detection_collate
from sodlib.data.files import write_json_atomically
from sodlib.eval.coco_eval import coco_results, evaluate_results
from sodlib.eval.threshold_metrics import check_score_threshold, f1_by_size

__all__ = ["predict", "predict_one", "evaluate", "bare_model", "dataset_categories", "label_map_for"]

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


def dataset_categories(dataset) -> list[dict] | None:
    """``[{"label", "id", "name"}]`` of a dataset's categories in label order (``label`` 1..C: what a model trained
    on it predicts), or None for a dataset without ``label_to_category_id`` / ``category_names``. Checkpoints
    store it, so that evaluation maps a model's labels to the right categories of any file."""
    while not hasattr(dataset, "label_to_category_id") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset  # a wrapper such as OversampledDataset
    mapping, names = getattr(dataset, "label_to_category_id", None), getattr(dataset, "category_names", None)
    if mapping is None or names is None:
        return None
    return [{"label": int(label), "id": int(category_id), "name": str(names[label])} for label, category_id in
            sorted(mapping.items())]


def label_map_for(trained: Sequence[Mapping] | None, dataset: CocoDetection) -> dict[int, int]:
    """Model label -> category id of ``dataset`` for a model trained on the categories ``trained``
    (:func:`dataset_categories` of its training set), matched by name.

    The same names under other ids, or in another order, map correctly; a name missing on either side is refused
    (AP against the wrong categories would be silently wrong). ``trained=None`` (a checkpoint that does not
    record its categories) keeps the dataset's own order, with a warning.
    """
    if trained is None:
        logger.warning("the checkpoint does not record its categories: labels are mapped by the evaluation file's "
                       "sorted category ids, which is right only if it is the training file's category list")
        return dict(dataset.label_to_category_id)
    by_name = {}
    for category in dataset.coco.dataset["categories"]:
        by_name.setdefault(category["name"], []).append(int(category["id"]))
    trained_names = [str(c["name"]) for c in trained]
    missing = sorted(set(trained_names) - set(by_name))
    extra = sorted(set(by_name) - set(trained_names))
    repeated = sorted(name for name, ids in by_name.items() if len(ids) > 1)
    if missing or extra or repeated:
        raise ValueError(f"the model was trained on the categories {trained_names}, but the evaluation file has "
                         f"{sorted(by_name)} (missing: {missing or 'none'}; not trained: {extra or 'none'}; named twice: "
                         f"{repeated or 'none'}); fix: evaluate on a file with the categories the model was trained on")
    return {int(c["label"]): by_name[str(c["name"])][0] for c in trained}


def evaluate(model: nn.Module, dataset: CocoDetection, size_bins: Mapping[str, tuple[float, float]] | None = None, *,
             batch_size: int = 4, device: str | torch.device | None = None, num_workers: int = 0,
             results_path: str | os.PathLike | None = None, progress: bool = False,
             label_to_category_id: Mapping[int, int] | None = None, timings: dict | None = None,
             f1_score_threshold: float | None = None) -> dict[str, float]:
    """COCO box AP / AR of ``model`` on ``dataset``; with ``f1_score_threshold``, also the traffic-sign protocol's
    precision / recall / F1 per size bin of the detections scoring at least that.

    Args:
        model: a torchvision-style detector (``model(images)`` returns boxes, labels, scores per image).
        dataset: a :class:`sodlib.data.CocoDetection`; its images are evaluated against its ``coco`` ground truth.
        size_bins: extra area bins, e.g. ``{"tiny": (0, 16**2)}`` -> ``AP_tiny``, ``AR_tiny``.
        results_path: also write the COCO results json (``[{image_id, category_id, bbox, score}]``) here.
        label_to_category_id: model label -> category id of ``dataset`` (default: the dataset's own, right for a
            model trained on a file with the same category list; :func:`label_map_for` gives it for others).
        timings: a dict to receive ``ms_per_image``: the wall time of the detector over the dataset (data
            loading, resize, forward and post-processing; not COCOeval) divided by the number of images.
        f1_score_threshold: a score in ``[0, 1]``: also return :func:`sodlib.eval.threshold_metrics.f1_by_size`
            of the detections scoring at least this (IoU 0.5), for the default and the extra bins.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}`` plus the
        extra bins (see :mod:`sodlib.eval.coco_eval`); no detections give zeros. With ``f1_score_threshold``
        also ``P``, ``R``, ``F1`` and ``P_<bin>``, ``R_<bin>``, ``F1_<bin>`` for small, medium, large and every
        extra bin (``-1`` where undefined).
    """
    _check_dataset(dataset)
    if f1_score_threshold is not None:
        f1_score_threshold = check_score_threshold(f1_score_threshold, "f1_score_threshold")
    started = time.perf_counter()
    predictions = predict(model, dataset, batch_size=batch_size, device=device, num_workers=num_workers, progress=progress)
    if timings is not None:
        timings["ms_per_image"] = round(1000 * (time.perf_counter() - started) / max(len(dataset), 1), 2)
    results = coco_results(predictions, label_to_category_id or dataset.label_to_category_id)
    if results_path is not None:
        write_json_atomically(results, results_path)
    metrics = evaluate_results(dataset.coco, results, size_bins=size_bins, image_ids=dataset.image_ids)
    if f1_score_threshold is not None:
        metrics.update(f1_by_size(dataset.coco, results, score_threshold=f1_score_threshold, size_bins=size_bins,
                                  image_ids=dataset.image_ids))
    logger.info("evaluated %d images, %d detections: AP %.3f AP50 %.3f", len(dataset), len(results), metrics["AP"], metrics["AP50"])
    return metrics
