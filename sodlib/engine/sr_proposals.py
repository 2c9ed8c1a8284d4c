"""Seed 001's Table II on the embedded data: re-scoring a detector's small detections with a classifier of upscaled
crops (``python -m sodlib experiment sr_proposals --seed S``).

Krishna and Jawahar (2017) super-resolve the RPN's proposals and re-score them with a classifier trained on
super-resolved training crops. Here, for one seed:

1. **Detector**: Faster R-CNN of ``configs/fast.toml`` (the engine's baseline) trained on the embedded train split.
2. **Crops**: a ``32 x 32`` window (:data:`WINDOW`) centred on each box, shifted into the image. Training crops:
   every non-crowd train object whose box side ``sqrt(w h)`` is at most 32 px (label: its category) and as many
   background windows (label 0): the detector's own false detections on the train images (IoU < 0.3 with every
   object), then random windows that overlap no object, so that the classifier learns what fools the detector.
3. **Upscaling** by :data:`SCALE` (2) with each method: bilinear, bicubic, each SR network (trained on drawn
   embedded pairs, L1, with this seed), and the **HR twin**: the window cut from the image drawn again twice as
   large (:func:`sodlib.data.synthetic.embedded_twin`), which only a generated dataset can give: the upper bound
   of any upsampler.
4. **Classifier** per method (:class:`~sodlib.models.crop_classifier.CropClassifier`, trained on that method's
   training crops, the same schedule and seed for all).
5. **Re-scoring**: every val detection with box side <= 32 px gets ``score' = sqrt(score * p(label))``, ``p`` the
   classifier's probability of the detector's label (a geometric mean: a detection both must believe in);
   larger detections keep their score. COCO AP, AP50, AP_S and AP50 per category for each method against the
   detector alone; the classifier's accuracy on the val objects' crops by object side.

The choices the paper leaves open (the window, the factor, the score combination, negatives) are ours and
stated here and in notebook 06. Results: ``notebooks/results/sr_proposals_seedS.json``, rewritten after every row.
"""
from __future__ import annotations

import datetime
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sodlib.anchors import box_iou
from sodlib.data import CocoDetection, embedded_dataset
from sodlib.data.files import write_json_atomically
from sodlib.data.paths import CHECKOUT_DIR
from sodlib.data.sr_pairs import SRProtocol, crop_window_start, embedded_sr_pairs
from sodlib.data.synthetic import embedded_twin
from sodlib.engine.runs import apply_overrides, hardware_description, load_run_config, run_training
from sodlib.engine.sr_training import SRTrainConfig, dihedral, load_sr_weights, train_sr
from sodlib.eval.coco_eval import coco_results, per_category_ap, run_cocoeval, summarize
from sodlib.eval.evaluate import predict
from sodlib.models.crop_classifier import CropClassifier
from sodlib.models.super_resolution import INTERPOLATIONS, list_sr_models, upscale

__all__ = ["WINDOW", "SCALE", "SMALL_SIDE", "ProposalSetting", "window_crops", "rescore", "run_sr_proposals"]

WINDOW = 32
SCALE = 2
SMALL_SIDE = 32.0
SIDE_BINS = ((0.0, 8.0), (8.0, 16.0), (16.0, 32.0))


@dataclass(frozen=True)
class ProposalSetting:
    """The schedule of one seed (``quick``: a few steps on a few images, to check the pipeline)."""

    sr_iterations: int = 1200
    sr_pairs: int = 2000
    classifier_iterations: int = 600
    classifier_batch: int = 48
    train_images: int | None = None  # None: all
    val_images: int | None = None


QUICK = ProposalSetting(sr_iterations=2, sr_pairs=16, classifier_iterations=2, classifier_batch=8, train_images=12, val_images=6)


def _side(boxes: Tensor) -> Tensor:
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    return (wh[:, 0] * wh[:, 1]).sqrt()


def window_crops(image: Tensor, boxes: Tensor, size: int = WINDOW, scale: int = 1) -> Tensor:
    """``Tensor[K, 3, s size, s size]``: a window of ``size`` pixels (times ``scale``) centred on each box of
    ``boxes`` (``Tensor[K, 4]`` xyxy, in pixels of the ``scale = 1`` image), shifted into ``image``
    (``Tensor[3, sH, sW]``)."""
    height, width = image.shape[-2:]
    crop = size * scale
    out = image.new_zeros((len(boxes), 3, crop, crop))
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        x0 = crop_window_start((x1 + x2) / 2 * scale, crop, width)
        y0 = crop_window_start((y1 + y2) / 2 * scale, crop, height)
        out[k] = image[:, y0:y0 + crop, x0:x0 + crop]
    return out


def _first_images(split: str, limit: int | None) -> CocoDetection:
    """The embedded ``split`` (the data of ``configs/fast.toml``), its first ``limit`` images only when given."""
    annotations, images = embedded_dataset(split)
    full = CocoDetection(annotations, images)
    return full if limit is None else CocoDetection(full.coco, images, image_ids=list(full.image_ids)[:limit])


def _image_tensor(dataset, index: int) -> Tensor:
    return dataset.read_image_of(index)


def _twin_tensor(split: str, image_id: int) -> Tensor:
    return torch.from_numpy(embedded_twin(split, image_id, SCALE)).permute(2, 0, 1).float() / 255.0


def _training_windows(dataset, predictions: list[dict], seed: int):
    """Per train image: (index, boxes Tensor[K, 4], labels Tensor[K]) of positives and background windows."""
    rng = np.random.default_rng(seed)
    items = []
    for index in range(len(dataset)):
        target = dataset.target_of(index)
        keep = (target["iscrowd"] == 0) & (_side(target["boxes"]) <= SMALL_SIDE)
        positives, labels = target["boxes"][keep], target["labels"][keep]
        detections = predictions[index]["boxes"]
        detections = detections[_side(detections) <= SMALL_SIDE]
        if len(target["boxes"]) and len(detections):
            false = box_iou(detections.double(), target["boxes"].double()).max(dim=1).values < 0.3
            detections = detections[false]
        negatives = detections[: max(len(positives), 1)]
        info = dataset.image_info(index)
        tries = 0
        while len(negatives) < max(len(positives), 1) and tries < 50:  # random windows that overlap no object
            tries += 1
            cx, cy = rng.uniform(8, info["width"] - 8), rng.uniform(8, info["height"] - 8)
            box = torch.tensor([[cx - 8, cy - 8, cx + 8, cy + 8]], dtype=torch.float32)
            if len(target["boxes"]) and box_iou(box.double(), target["boxes"].double()).max() > 0:
                continue
            negatives = torch.cat([negatives, box])
        boxes = torch.cat([positives, negatives])
        items.append((index, boxes, torch.cat([labels, torch.zeros(len(negatives), dtype=torch.long)])))
    return items


def _upscaled(windows: Tensor, method) -> Tensor:
    return torch.cat([upscale(windows[k:k + 256], SCALE, method) for k in range(0, len(windows), 256)])


def _crops_for(items, dataset, split: str, method) -> Tensor:
    """The upscaled (or twin) windows of every item, ``Tensor[N, 3, 64, 64]``."""
    crops = []
    for index, boxes, _ in items:
        if not len(boxes):
            continue
        if method == "hr_twin":
            crops.append(window_crops(_twin_tensor(split, int(dataset.image_ids[index])), boxes, WINDOW, SCALE))
        else:
            crops.append(_upscaled(window_crops(_image_tensor(dataset, index), boxes), method))
    return torch.cat(crops) if crops else torch.zeros(0, 3, WINDOW * SCALE, WINDOW * SCALE)


def _train_classifier(crops: Tensor, labels: Tensor, num_classes: int, setting: ProposalSetting, seed: int) -> CropClassifier:
    torch.manual_seed(seed)
    model = CropClassifier(num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(setting.classifier_iterations):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        index = torch.randint(len(crops), (setting.classifier_batch,), generator=generator)
        k = int(torch.randint(8, (1,), generator=generator))
        loss = F.cross_entropy(model(dihedral(crops[index], k)), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def _probabilities(model: CropClassifier, crops: Tensor) -> Tensor:
    """``Tensor[N, C + 1]``: the classifier's softmax over the crops (``N`` may be 0)."""
    if not len(crops):
        return torch.zeros(0, model.num_classes + 1)
    return torch.cat([F.softmax(model(crops[k:k + 256]), dim=1) for k in range(0, len(crops), 256)])


def rescore(predictions: list[dict], probabilities: list[Tensor]) -> list[dict]:
    """Detections with ``score' = sqrt(score * p[label])`` where the box side is at most :data:`SMALL_SIDE`.

    ``probabilities[i]``: ``Tensor[D_i_small, C + 1]``, the classifier's softmax for image ``i``'s small
    detections, in their order."""
    out = []
    for prediction, probs in zip(predictions, probabilities):
        scores = prediction["scores"].clone()
        small = _side(prediction["boxes"]) <= SMALL_SIDE
        if small.any():
            p = probs.gather(1, prediction["labels"][small].view(-1, 1)).squeeze(1)
            scores[small] = (scores[small] * p).sqrt()
        out.append({**prediction, "scores": scores})
    return out


def _metrics(dataset, predictions: list[dict], image_ids: list[int]) -> dict[str, Any]:
    evaluation = run_cocoeval(dataset.coco, coco_results(predictions, dataset.label_to_category_id), image_ids=image_ids)
    return {"metrics": summarize(evaluation),
            "per_category_AP50": {row["name"]: row["AP50"] for row in per_category_ap(evaluation)}}


def _accuracy_by_side(model: CropClassifier, crops: Tensor, labels: Tensor, sides: Tensor) -> dict[str, Any]:
    predicted = _probabilities(model, crops).argmax(dim=1)
    table = {}
    for lo, hi in SIDE_BINS:
        inside = (sides > lo) & (sides <= hi)
        table[f"{lo:g}-{hi:g}"] = {"objects": int(inside.sum()),
                                   "accuracy": float((predicted[inside] == labels[inside]).float().mean()) if inside.any() else None}
    table["all"] = {"objects": len(labels), "accuracy": float((predicted == labels).float().mean()) if len(labels) else None}
    return table


def run_sr_proposals(seed: int = 0, *, quick: bool = False, results_dir: str | os.PathLike | None = None,
                     runs_root: str | os.PathLike | None = None, configs: str | os.PathLike | None = None,
                     command: str | None = None) -> dict[str, Any]:
    """Run the experiment of the module docstring for ``seed``; writes and returns the record (with ``path``)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    setting = QUICK if quick else ProposalSetting()
    tag = f"sr_proposals_seed{seed}" + ("_quick" if quick else "")
    out = Path(results_dir) if results_dir is not None else CHECKOUT_DIR / "notebooks" / "results"
    runs = Path(runs_root) if runs_root is not None else CHECKOUT_DIR / "runs" / "experiments" / tag
    config_dir = Path(configs) if configs is not None else Path(os.environ.get("SODLIB_CONFIGS", CHECKOUT_DIR / "configs"))
    config = apply_overrides(load_run_config(config_dir / "fast.toml"), [f"train.seed={seed}"])
    if quick:
        config["train"].update({"iterations": 4, "batch_size": 2, "warmup_iterations": 2, "checkpoint_every": 0})
    path = out / f"{tag}.json"
    started, started_utc = time.perf_counter(), datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if not (runs / "detector" / "summary.json").is_file():
            run_training(config, runs / "detector", command=command)
        from sodlib.engine.checkpoint import load_checkpoint
        from sodlib.models import rebuild_model

        checkpoint = load_checkpoint(runs / "detector" / "checkpoints" / "last.pt")
        detector = rebuild_model(checkpoint["model_config"])
        detector.load_state_dict(checkpoint["model"])
        train_set, val_set = (_first_images(split, limit) for split, limit in
                              (("train", setting.train_images), ("val", setting.val_images)))
        val_ids = list(val_set.image_ids)
        train_predictions = predict(detector, train_set)
        val_predictions = predict(detector, val_set)
        items = _training_windows(train_set, train_predictions, seed)
        train_labels = torch.cat([labels for _, boxes, labels in items if len(boxes)])
        # the val objects' own windows, for the classifier's accuracy by side
        val_index = {int(i): k for k, i in enumerate(val_set.image_ids)}
        val_objects = []
        for image_id in val_ids:
            target = val_set.target_of(val_index[image_id])
            keep = (target["iscrowd"] == 0) & (_side(target["boxes"]) <= SMALL_SIDE)
            val_objects.append((val_index[image_id], target["boxes"][keep], target["labels"][keep]))
        object_labels = torch.cat([labels for _, _, labels in val_objects])
        object_sides = torch.cat([_side(boxes) for _, boxes, _ in val_objects])
        detections_small = [(val_index[p["image_id"]], p["boxes"][_side(p["boxes"]) <= SMALL_SIDE], None) for p in val_predictions]

        rows: dict[str, Any] = {"detector": _metrics(val_set, val_predictions, val_ids)}
        protocol = SRProtocol(scale=SCALE, lr_size=WINDOW)
        methods: dict[str, Any] = {name: name for name in INTERPOLATIONS if name != "nearest"}
        for name in list_sr_models():
            folder = runs / f"sr_{name}"
            train_sr(embedded_sr_pairs(setting.sr_pairs, protocol, seed=seed),
                     SRTrainConfig(name, SCALE, iterations=setting.sr_iterations, seed=seed), folder, progress=False)
            methods[name] = load_sr_weights(folder, scale=SCALE)
        methods["hr_twin"] = "hr_twin"
        for name, method in methods.items():
            began = time.perf_counter()
            classifier = _train_classifier(_crops_for(items, train_set, "train", method), train_labels,
                                           train_set.num_classes - 1, setting, seed)
            all_probabilities = _probabilities(classifier, _crops_for(detections_small, val_set, "val", method))
            probabilities, start = [], 0
            for _, boxes, _ in detections_small:
                probabilities.append(all_probabilities[start:start + len(boxes)])
                start += len(boxes)
            row = _metrics(val_set, rescore(val_predictions, probabilities), val_ids)
            row["classifier_accuracy_by_side"] = _accuracy_by_side(classifier, _crops_for(val_objects, val_set, "val", method),
                                                                   object_labels, object_sides)
            row["seconds"] = round(time.perf_counter() - began, 1)
            rows[name] = row
            record = {"name": "sr_proposals", "seed": seed, "quick": quick, "command": command, "window": WINDOW,
                      "scale": SCALE, "small_side": SMALL_SIDE, "train_crops": len(train_labels),
                      "train_background_crops": int((train_labels == 0).sum()), "val_images": len(val_ids),
                      "val_small_detections": sum(len(b) for _, b, _ in detections_small),
                      "hardware": hardware_description(), "started_utc": started_utc,
                      "duration_s": round(time.perf_counter() - started, 1),
                      "complete": len(rows) == len(methods) + 1, "rows": dict(rows)}
            write_json_atomically(record, path)
    finally:
        torch.set_num_threads(threads)
    record["path"] = str(path)
    return record
