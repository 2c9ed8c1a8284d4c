"""Seconds per training step of a run configuration at several thread counts, measured interleaved.

    .venv/bin/python scripts/bench_engine.py [--config configs/fast.toml] [--threads 1 2] [--steps 20] [--rounds 2]

Prints one row per (round, thread count) and the load average, so that a timing taken on a shared machine can
be read for what it is. Each measurement builds the model afresh (same seed) and times ``--steps`` optimizer
steps of :func:`sodlib.engine.train` on the configuration's training data (no evaluation).
"""
from __future__ import annotations

import argparse
import os

import torch

from sodlib.engine import TrainConfig, train
from sodlib.engine.runs import datasets_from_config, load_run_config
from sodlib.models import faster_rcnn


def seconds_per_step(config: dict, train_set, threads: int, steps: int) -> float:
    torch.manual_seed(0)
    model = faster_rcnn(train_set.num_classes, **config["model"])
    values = dict(config["train"], iterations=steps, num_threads=threads, progress=False, checkpoint_every=0,
                  warmup_iterations=min(steps, config["train"].get("warmup_iterations", 0)))
    return train(model, train_set, None, TrainConfig.from_mapping(values)).seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fast.toml")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    config = load_run_config(args.config)
    train_set, _ = datasets_from_config(config)
    print(f"{args.config}: {args.steps} steps per measurement, batch {config['train'].get('batch_size', 4)}")
    print(f"{'round':>5} {'threads':>7} {'s/step':>8} {'load (1/5/15 min)':>20}")
    for round_index in range(args.rounds):
        for threads in args.threads:
            value = seconds_per_step(config, train_set, threads, args.steps)
            load = "/".join(f"{v:.2f}" for v in os.getloadavg())
            print(f"{round_index:>5} {threads:>7} {value:8.3f} {load:>20}", flush=True)


if __name__ == "__main__":
    main()
