"""Upscaling 100 object crops: the SR networks against bicubic and bilinear interpolation, as ratios from one run
(``python -m sodlib bench sr``; notebook 06 shows the table).

Each method upscales one batch of 100 low-resolution crops of ``lr_size`` pixels (random values: the time depends
on the shapes, not the pixels) by 2 and by 4, in inference mode; the calls take turns and the fastest run counts
(:func:`sodlib.bench.prroi.fastest_seconds`, warm: the batch's buffers allocated by the run before).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sodlib.bench.prroi import fastest_seconds
from sodlib.models.super_resolution import INTERPOLATIONS, build_sr_model, list_sr_models, upscale

__all__ = ["SRTimings", "benchmark_sr"]


@dataclass
class SRTimings:
    """``ms[scale][method]``: fastest warm milliseconds to upscale ``crops`` crops."""

    crops: int
    lr_size: int
    threads: int
    device: str
    ms: dict[int, dict[str, float]]

    def table(self) -> str:
        from sodlib.tables import format_table

        methods = list(next(iter(self.ms.values())))
        rows = [[m] + [f"{self.ms[s][m]:.1f}" for s in self.ms] + [f"{self.ms[s][m] / self.ms[s]['bicubic']:.1f}" for s in self.ms]
                for m in methods]
        header = ["method"] + [f"ms x{s}" for s in self.ms] + [f"/ bicubic x{s}" for s in self.ms]
        return (f"{self.crops} crops of {self.lr_size} x {self.lr_size} px, {self.device}, CPU threads {self.threads}; "
                "fastest of the repeats, warm\n" + format_table(rows, header))


def benchmark_sr(crops: int = 100, lr_size: int = 32, scales: tuple[int, ...] = (2, 4), repeats: int = 5,
                 device: str = "cpu", seed: int = 0) -> SRTimings:
    """Time every registered SR model (freshly initialised) and bicubic / bilinear at each scale."""
    torch.manual_seed(seed)
    target = torch.device(device)
    images = torch.rand(crops, 3, lr_size, lr_size, device=target)
    ms: dict[int, dict[str, float]] = {}
    for scale in scales:
        models = {name: build_sr_model(name, scale).to(target).eval() for name in list_sr_models()}
        calls = {name: (lambda m=model, s=scale: upscale(images, s, m)) for name, model in models.items()}
        calls.update({name: (lambda n=name, s=scale: upscale(images, s, n)) for name in INTERPOLATIONS if name != "nearest"})
        with torch.inference_mode():
            best = fastest_seconds(calls, {name: repeats for name in calls}, target)
        ms[scale] = {name: 1000.0 * best[name]["warm"] for name in calls}
    return SRTimings(crops, lr_size, torch.get_num_threads(), device, ms)
