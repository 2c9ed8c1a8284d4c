"""R-FCN against Faster R-CNN with the same backbone, and R-FCN's three poolings, as ratios from one run.

    python scripts/bench_rfcn.py [--threads 1] [--repeats 5] [--size 384]

- inference, ms per image, at 300 proposals: Faster R-CNN (``configs/fast.toml``'s model) and R-FCN
  (``configs/fast_rfcn.toml``'s) on the same images; R-FCN's claim is a nearly free per-RoI head;
- a training step (forward + backward of a batch of 4) of R-FCN with PS-PrRoI, PS-RoIAlign and PS-RoI pooling.

The models are freshly initialised (the time does not depend on the weights, only on the shapes: both heads see
300 RoIs per image at test, fixed by ``rpn_post_nms_top_n_test``; a trained RPN would not change that). The calls
take turns and the fastest of the repeats counts (``sodlib.bench.prroi.fastest_seconds``, cold runs).
"""
from __future__ import annotations

import argparse

import torch

from sodlib.bench.prroi import fastest_seconds
from sodlib.data import CocoDetection, embedded_dataset
from sodlib.data.paths import CHECKOUT_DIR
from sodlib.engine.runs import build_run_model, load_run_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = CocoDetection(*embedded_dataset("val"))
    items = [dataset[i] for i in range(4)]
    images = [image for image, _ in items]
    targets = [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in items]

    def model(config_name: str, **options):
        config = load_run_config(CHECKOUT_DIR / "configs" / config_name)
        config["model"].update(options)
        torch.manual_seed(0)
        built = build_run_model(config, dataset.num_classes)
        # every proposal survives to the head at test, so both detectors pool exactly 300 RoIs per image
        built.roi_heads.score_thresh = 0.0
        return built

    detectors = {"faster_rcnn": model("fast.toml"), "rfcn ps_prroi": model("fast_rfcn.toml")}
    trained = {pooling: model("fast_rfcn.toml", pooling=pooling) for pooling in ("ps_prroi", "ps_roi_align", "ps_roi_pool")}

    def infer(detector):
        detector.eval()

        def run():
            with torch.no_grad():
                detector(images)
        return run

    def train_step(detector):
        detector.train()

        def run():
            losses = detector(images, targets)
            sum(losses.values()).backward()
        return run

    calls = {f"{name} inference": infer(d) for name, d in detectors.items()}
    calls.update({f"rfcn {pooling} training step": train_step(d) for pooling, d in trained.items()})
    best = fastest_seconds(calls, {name: args.repeats for name in calls}, torch.device("cpu"), warm_runs=0)
    cold = {name: times["cold"] for name, times in best.items()}
    print(f"embedded val, 4 images of 512 px resized to 384, 300 proposals per image at test, "
          f"CPU threads: {torch.get_num_threads()}; fastest of {args.repeats} (cold)")
    per_image = {name: cold[f"{name} inference"] / len(images) * 1e3 for name in detectors}
    print(f"inference ms per image: Faster R-CNN {per_image['faster_rcnn']:.1f}, R-FCN (PS-PrRoI) "
          f"{per_image['rfcn ps_prroi']:.1f}; R-FCN / Faster R-CNN {per_image['rfcn ps_prroi'] / per_image['faster_rcnn']:.2f}")
    steps = {pooling: cold[f"rfcn {pooling} training step"] * 1e3 for pooling in trained}
    print("training step ms (4 images): " + ", ".join(f"{p} {t:.0f}" for p, t in steps.items())
          + f"; PS-PrRoI / PS-RoIAlign {steps['ps_prroi'] / steps['ps_roi_align']:.2f}, "
          f"PS-PrRoI / PS-RoI {steps['ps_prroi'] / steps['ps_roi_pool']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
