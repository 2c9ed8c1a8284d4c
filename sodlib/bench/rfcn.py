"""R-FCN against Faster R-CNN with the same backbone, and R-FCN's three poolings in training, as ratios from one run
(``python -m sodlib bench rfcn``; notebook 05 runs a short version).

- inference, ms per image, at 300 proposals: Faster R-CNN (``configs/fast.toml``'s model) and R-FCN
  (``configs/fast_rfcn.toml``'s) on the same embedded validation images; R-FCN's claim is a nearly free per-RoI head;
- a training step (forward + backward of one batch) of R-FCN with PS-PrRoI, PS-RoIAlign and PS-RoI pooling.

The models are freshly initialised: the time depends on the shapes, not the weights, and both heads see exactly
300 RoIs per image at test (``rpn_post_nms_top_n_test``, with the score threshold at 0 so every proposal reaches
the head). The calls take turns and the fastest of the repeats counts (:func:`sodlib.bench.prroi.fastest_seconds`,
cold runs).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import torch

from sodlib.bench.prroi import fastest_seconds
from sodlib.data import CocoDetection, embedded_dataset
from sodlib.data.paths import CHECKOUT_DIR
from sodlib.models import build_model
from sodlib.ops.position_sensitive import POOLINGS

__all__ = ["RFCNTimings", "benchmark_rfcn"]


@dataclass
class RFCNTimings:
    """Fastest cold times of one run: inference ms per image of each detector and training-step ms per pooling."""

    images: int
    threads: int
    repeats: int
    inference_ms_per_image: dict[str, float]  # "faster_rcnn", "rfcn"
    training_step_ms: dict[str, float]        # pooling -> ms for a batch of ``images``

    def summary(self) -> str:
        inference, steps = self.inference_ms_per_image, self.training_step_ms
        return "\n".join([
            f"embedded val, {self.images} images resized to the fast configs' 384 px, 300 proposals per image at "
            f"test, CPU threads: {self.threads}; fastest of {self.repeats} (cold)",
            f"inference ms per image: Faster R-CNN {inference['faster_rcnn']:.1f}, R-FCN (PS-PrRoI) "
            f"{inference['rfcn']:.1f}; R-FCN / Faster R-CNN {inference['rfcn'] / inference['faster_rcnn']:.2f}",
            f"training step ms ({self.images} images): " + ", ".join(f"{p} {t:.0f}" for p, t in steps.items())
            + f"; PS-PrRoI / PS-RoIAlign {steps['ps_prroi'] / steps['ps_roi_align']:.2f}, "
              f"PS-PrRoI / PS-RoI {steps['ps_prroi'] / steps['ps_roi_pool']:.2f}",
        ])


def _model_options(config_name: str, configs: Path) -> dict:
    with open(configs / config_name, "rb") as handle:
        return dict(tomllib.load(handle)["model"])


def benchmark_rfcn(repeats: int = 5, images: int = 4, configs: str | Path | None = None) -> RFCNTimings:
    """Time the calls of the module docstring on ``images`` embedded validation images, ``repeats`` turns each,
    in the current torch thread setting. ``configs``: the folder of ``fast.toml`` / ``fast_rfcn.toml``."""
    if repeats < 1 or images < 1:
        raise ValueError(f"repeats={repeats} and images={images} must be positive")
    configs = Path(configs) if configs is not None else CHECKOUT_DIR / "configs"
    dataset = CocoDetection(*embedded_dataset("val"))
    items = [dataset[i] for i in range(images)]
    batch = [image for image, _ in items]
    targets = [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in items]

    def model(config_name: str, **changes):
        options = {**_model_options(config_name, configs), **changes}
        torch.manual_seed(0)
        built = build_model(options.pop("name", "faster_rcnn"), num_classes=dataset.num_classes, **options)
        built.roi_heads.score_thresh = 0.0  # every proposal reaches the head: both pool exactly 300 RoIs an image
        return built

    detectors = {"faster_rcnn": model("fast.toml"), "rfcn": model("fast_rfcn.toml")}
    trained = {pooling: model("fast_rfcn.toml", pooling=pooling) for pooling in POOLINGS}

    def infer(detector):
        detector.eval()

        def run():
            with torch.no_grad():
                detector(batch)
        return run

    def train_step(detector):
        detector.train()

        def run():
            losses = detector(batch, targets)
            sum(losses.values()).backward()
        return run

    calls = {f"{name} inference": infer(d) for name, d in detectors.items()}
    calls.update({f"{pooling} training step": train_step(d) for pooling, d in trained.items()})
    best = fastest_seconds(calls, {name: repeats for name in calls}, torch.device("cpu"), warm_runs=0)
    return RFCNTimings(images=images, threads=torch.get_num_threads(), repeats=repeats,
                       inference_ms_per_image={n: best[f"{n} inference"]["cold"] / images * 1e3 for n in detectors},
                       training_step_ms={p: best[f"{p} training step"]["cold"] * 1e3 for p in trained})
