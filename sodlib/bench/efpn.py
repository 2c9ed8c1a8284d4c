"""EFPN's efficiency claim (Deng et al., 2021, Table III) measured on one footing: ``python -m sodlib bench efpn``.

Five detectors at test time, as ratios to FPN 1x from one run:

- ``fpn_1x``: the FPN baseline (``configs/tiny_fpn.toml``'s model, 448 px);
- ``fpn_2x``: the same detector tested on the input resized to 896 px;
- ``fpn_1x_teacher_p2``: FPN 1x plus the 2x input's ``P2`` and ``P3`` as the extended level (the paper's
  "FPN-1400 + P2-2800": both passes);
- ``efpn_nearest``: EFPN with nearest-neighbour upsampling instead of FTT;
- ``efpn``: EFPN with FTT and its ``P'2`` head (stage 3).

Time: the fastest of ``repeats`` cold turns over single images (the calls take turns,
:func:`sodlib.bench.prroi.fastest_seconds`), ms per image. Memory: on CUDA the peak of allocated memory over the
forward (``torch.cuda.max_memory_allocated``); on the CPU, where torch keeps no such count, the growth of the
resident memory over the first forward in a fresh process that built the model (Linux's peak resident size
``VmHWM``, reset through ``/proc/self/clear_refs``, minus the resident size before the forward: the interpreter,
the libraries and the weights are not counted, as the CUDA figure does not count them; a second forward would
reuse the pages the allocator kept and show almost nothing).

The models are freshly initialised (the cost depends on the shapes, not the weights) and every proposal reaches
the heads (score threshold 0), so all see the same number of RoIs. :func:`efpn_cost_breakdown` times EFPN's
parts one after the other, to say where its extra cost goes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from sodlib.bench.memory import peak_resident_growth_mb
from sodlib.bench.prroi import fastest_seconds
from sodlib.data.paths import CHECKOUT_DIR

__all__ = ["EFPN_VARIANTS", "EFPNEfficiency", "benchmark_efpn", "efpn_cost_breakdown", "build_variant"]

EFPN_VARIANTS: dict[str, dict] = {
    "fpn_1x": {"name": "faster_rcnn"},
    "fpn_2x": {"name": "faster_rcnn", "scale": 2},
    "fpn_1x_teacher_p2": {"name": "efpn", "extended_source": "teacher", "stage": 2},
    "efpn_nearest": {"name": "efpn", "sr_module": "nearest", "stage": 3},
    "efpn": {"name": "efpn", "sr_module": "ftt", "stage": 3},
}
CONFIG = "tiny_fpn.toml"
NUM_CLASSES = 7  # the embedded data's six shapes + background


def build_variant(variant: str, configs: str | Path | None = None) -> torch.nn.Module:
    """The detector of ``variant`` (:data:`EFPN_VARIANTS`) with ``configs/tiny_fpn.toml``'s options, in eval mode."""
    from sodlib.models import build_model

    if variant not in EFPN_VARIANTS:
        raise ValueError(f"variant={variant!r} is unknown; choose one of {', '.join(EFPN_VARIANTS)}")
    configs = Path(configs) if configs is not None else CHECKOUT_DIR / "configs"
    with open(configs / CONFIG, "rb") as handle:
        options = dict(tomllib.load(handle)["model"])
    options.pop("name", None)
    spec = dict(EFPN_VARIANTS[variant])
    name, scale = spec.pop("name"), spec.pop("scale", 1)
    options["min_size"], options["max_size"] = options["min_size"] * scale, options["max_size"] * scale
    torch.manual_seed(0)
    model = build_model(name, num_classes=NUM_CLASSES, **options, **spec)
    model.roi_heads.score_thresh = 0.0
    return model.eval()


def _images(count: int, side: int = 640, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, side, side, generator=generator) for _ in range(count)]


@dataclass
class EFPNEfficiency:
    """ms per image and peak memory (MB) of each variant, with the device and the settings of the run."""

    device: str
    threads: int
    images: int
    repeats: int
    ms_per_image: dict[str, float]
    peak_mb: dict[str, float]
    memory_measure: str

    def ratios(self) -> dict[str, dict[str, float]]:
        """``{variant: {"time": t / t_fpn_1x, "memory": m / m_fpn_1x}}``."""
        time0, memory0 = self.ms_per_image["fpn_1x"], self.peak_mb["fpn_1x"]
        return {v: {"time": self.ms_per_image[v] / time0, "memory": self.peak_mb[v] / memory0} for v in self.ms_per_image}

    def table(self) -> str:
        lines = [f"EFPN efficiency on {self.device} ({self.threads} threads), 640 px images resized to 448 (2x: 896), "
                 f"fastest of {self.repeats} cold turns over {self.images} images; memory: {self.memory_measure}",
                 f"{'variant':<20}{'ms/img':>9}{'peak MB':>10}{'time x':>8}{'mem x':>8}"]
        for variant, ratio in self.ratios().items():
            lines.append(f"{variant:<20}{self.ms_per_image[variant]:>9.1f}{self.peak_mb[variant]:>10.1f}"
                         f"{ratio['time']:>8.2f}{ratio['memory']:>8.2f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {**self.__dict__, "ratios": self.ratios()}


def _peak_cpu_mb(variant: str, configs: Path) -> float:
    """Peak resident MB of one forward in a fresh process (module docstring)."""
    code = ("import json, sys; from sodlib.bench.efpn import _measure_cpu_peak; "
            f"print(json.dumps(_measure_cpu_peak({variant!r}, {str(configs)!r})))")
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def _measure_cpu_peak(variant: str, configs: str) -> float:
    model = build_variant(variant, configs)
    image = _images(1)

    def forward():
        with torch.no_grad():
            model(image)

    return peak_resident_growth_mb(forward)


def _peak_cuda_mb(model: torch.nn.Module, image: list[torch.Tensor]) -> float:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        model(image)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def benchmark_efpn(repeats: int = 3, images: int = 2, device: str = "cpu",
                   configs: str | Path | None = None) -> EFPNEfficiency:
    """Time and memory of every variant of :data:`EFPN_VARIANTS` in one run (module docstring)."""
    if repeats < 1 or images < 1:
        raise ValueError(f"repeats={repeats} and images={images} must be positive")
    configs = Path(configs) if configs is not None else CHECKOUT_DIR / "configs"
    target = torch.device(device)
    models = {v: build_variant(v, configs).to(target) for v in EFPN_VARIANTS}
    batch = [image.to(target) for image in _images(images)]

    def infer(model):
        def run():
            with torch.no_grad():
                for image in batch:
                    model([image])
        return run

    best = fastest_seconds({v: infer(m) for v, m in models.items()}, {v: repeats for v in models}, target, warm_runs=0)
    ms = {v: best[v]["cold"] / images * 1e3 for v in models}
    if target.type == "cuda":
        peak = {v: _peak_cuda_mb(m, batch[:1]) for v, m in models.items()}
        measure = "CUDA peak allocated over the forward"
    else:
        peak = {v: _peak_cpu_mb(v, configs) for v in models}
        measure = "CPU peak resident set of a fresh process over one forward"
    return EFPNEfficiency(device=str(target), threads=torch.get_num_threads(), images=images, repeats=repeats,
                          ms_per_image=ms, peak_mb=peak, memory_measure=measure)


def efpn_cost_breakdown(repeats: int = 3, configs: str | Path | None = None) -> "OrderedDict[str, float]":
    """ms of each part of EFPN's forward on one 640 px image (fastest of ``repeats``), run one after the other:
    resize, the FPN pyramid, ``C'2`` (stage 2 at stride 2), the SR module + lateral, the RPN on ``P'2 .. P6``,
    the RoI heads; and FPN 1x's RPN and RoI heads for comparison."""
    efpn, fpn = build_variant("efpn", configs), build_variant("fpn_1x", configs)
    image = _images(1)
    parts: OrderedDict[str, float] = OrderedDict()

    def timed(name: str, fn):
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - start)
        parts[name] = best * 1e3
        return result

    with torch.no_grad():
        image_list, _ = timed("resize", lambda: efpn.transform(image))
        x = image_list.tensors
        backbone = efpn.backbone
        regular, twice = backbone.stem(x)
        levels = timed("fpn pyramid", lambda: backbone.fpn_levels(x))
        timed("C'2 (stage 2 at stride 2)", lambda: backbone.body.layer1(backbone.stem(x)[1]))
        c2_twice = backbone.body.layer1(twice)
        p2e, _ = timed("SR module + lateral", lambda: backbone.extend(levels, c2_twice))
        features = OrderedDict([("e", p2e), *levels.items()])
        proposals, _ = timed("RPN on P'2..P6", lambda: efpn.rpn(image_list, features))
        timed("RoI heads (P'2 head + FPN head)", lambda: efpn.roi_heads(features, proposals, image_list.image_sizes))
        fpn_features = fpn.backbone(x)
        fpn_proposals, _ = timed("FPN 1x: RPN on P2..P6", lambda: fpn.rpn(image_list, fpn_features))
        timed("FPN 1x: RoI heads", lambda: fpn.roi_heads(fpn_features, fpn_proposals, image_list.image_sizes))
    return parts
