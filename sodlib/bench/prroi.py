"""Timing precise RoI pooling against its reference and torchvision's RoIAlign, as ratios from one run.

The workload is R-FCN-sized (the R-FCN of Zhang et al., 2021): a stride-16 feature map of a 600 x 1000 image
(38 x 63 cells), k = 7 bins, 21 classes (20 + background), 300 RoIs, mostly small boxes.

- PS-PrRoI pools ``Tensor[1, 21 * 49, 38, 63]`` score maps into ``Tensor[300, 21, 7, 7]``;
  compared with ``ps_roi_align(sampling_ratio=2)`` on the same maps.
- PrRoI pools ``Tensor[1, 21, 38, 63]`` into ``Tensor[300, 21, 7, 7]``, the same output count;
  compared with ``roi_align(sampling_ratio=2, aligned=False)``.

"forward + backward" is the forward pass and the gradient of the features (the usual training case,
where proposals are constants); a separate row adds the box gradient.

The ops take turns, and in its turn an op runs several times in a row. The first run ("cold") finds the
caches and branch predictors filled by the other ops (the PS maps alone are 10 MB), as an op inside a network
does; the runs after it ("warm") find the op's own data and code, and PyTorch's, where the run before left
them, which is the steady state that back-to-back timers such as ``torch.utils.benchmark`` measure.
:func:`fixed_cost_seconds` times a call that does almost nothing (one RoI): the fixed cost of Python, the
dispatcher, autograd and the allocator, which a cold run pays several times over, as the other ops have pushed
PyTorch's own code out of the caches.
Times are the fastest of the repeats; only ratios measured in the same run are meant to be compared.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from sodlib.ops.prroi import prroi_pool, ps_prroi_pool
from sodlib.ops.prroi_reference import prroi_pool_reference, ps_prroi_pool_reference
from sodlib.ops.torchvision_pooling import ps_roi_align, roi_align


@dataclass(frozen=True)
class Workload:
    """Sizes of the benchmark: image, stride, bins, classes and RoIs."""

    image_height: int = 600
    image_width: int = 1000
    stride: int = 16
    bins: int = 7
    classes: int = 21
    rois: int = 300
    small_fraction: float = 0.7  # boxes with sqrt(area) < 32 px (COCO "small")

    @property
    def feature_size(self) -> tuple[int, int]:
        return math.ceil(self.image_height / self.stride), math.ceil(self.image_width / self.stride)


def random_boxes(workload: Workload, generator: torch.Generator) -> Tensor:
    """``Tensor[rois, 4]`` boxes ``(x1, y1, x2, y2)`` in image pixels: ``small_fraction`` of them with
    ``sqrt(area)`` in ``[4, 32)`` px, the rest in ``[32, 300)`` px; aspect ratios in ``[1/2, 2]``."""
    n = workload.rois
    small = torch.rand(n, generator=generator) < workload.small_fraction
    side = torch.where(small, 4 + 28 * torch.rand(n, generator=generator), 32 + 268 * torch.rand(n, generator=generator))
    aspect = 2 ** (2 * torch.rand(n, generator=generator) - 1)  # height / width
    width, height = side / aspect.sqrt(), side * aspect.sqrt()
    cx = torch.rand(n, generator=generator) * workload.image_width
    cy = torch.rand(n, generator=generator) * workload.image_height
    boxes = torch.stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], dim=1)
    return boxes.clamp(min=0).minimum(torch.tensor([workload.image_width, workload.image_height] * 2))


def workload_tensors(workload: Workload, device: torch.device, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """The workload's inputs on ``device``, drawn from ``seed``: score maps ``Tensor[1, classes * k * k, H, W]``,
    features ``Tensor[1, classes, H, W]`` and RoIs ``Tensor[rois, 5]`` (batch index 0, boxes from
    :func:`random_boxes`)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = workload.feature_size
    k, classes = workload.bins, workload.classes
    score_maps = torch.randn(1, classes * k * k, height, width, generator=generator).to(device)
    features = torch.randn(1, classes, height, width, generator=generator).to(device)
    boxes = random_boxes(workload, generator)
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1).to(device)
    return score_maps, features, rois


@dataclass(frozen=True)
class Timing:
    """Fastest seconds of one op on one device in one mode (``forward``, ``forward+backward``, ...), with the
    caches ``cold`` (run after the other ops) or ``warm`` (run right after itself)."""

    op: str
    device: str
    mode: str
    seconds: float
    cache: str = "cold"


CACHES = ("cold", "warm")


def fastest_seconds(calls: dict[str, Callable[[], object]], counts: dict[str, int], device: torch.device,
                    warmup: int = 1, warm_runs: int = 3) -> dict[str, dict[str, float]]:
    """Fastest wall time of each ``calls[name]()`` over ``counts[name]`` turns, cold and warm:
    ``{name: {"cold": s, "warm": s}}``.

    The calls take turns (round-robin), so that load from other processes falls on all of them alike, and
    the fastest run is the one least disturbed by it. In its turn a call runs ``1 + warm_runs`` times in a
    row: the first run is timed as "cold" (after the other calls), the others as "warm" (after itself).
    CUDA is synchronised around every run.
    """
    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def seconds(fn: Callable[[], object]) -> float:
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        return time.perf_counter() - start

    for fn in calls.values():
        for _ in range(warmup):
            fn()
    best = {name: {cache: math.inf for cache in CACHES} for name in calls}
    for round_ in range(max(counts.values())):
        for name, fn in calls.items():
            if round_ < counts[name]:
                best[name]["cold"] = min(best[name]["cold"], seconds(fn))
                for _ in range(warm_runs):
                    best[name]["warm"] = min(best[name]["warm"], seconds(fn))
    return best


def benchmark_prroi(device: str | torch.device = "cpu", workload: Workload = Workload(), repeats: int = 10,
                    reference_repeats: int = 5, seed: int = 0) -> list[Timing]:
    """Time every op of the comparison on ``device``; returns one :class:`Timing` per (op, mode)."""
    device = torch.device(device)
    k, classes, scale = workload.bins, workload.classes, 1.0 / workload.stride
    score_maps, features, rois = workload_tensors(workload, device, seed)
    grad_output = torch.ones(len(rois), classes, k, k, device=device)

    # name: (op, its maps, its RoIs)
    ops: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], Tensor, Tensor]] = {
        "prroi_pool": (lambda f, r: prroi_pool(f, r, k, scale), features, rois),
        "prroi_pool_reference": (lambda f, r: prroi_pool_reference(f, r, k, scale), features, rois),
        "roi_align(sampling_ratio=2)": (lambda f, r: roi_align(f, r, k, scale, 2, aligned=False), features, rois),
        "ps_prroi_pool": (lambda f, r: ps_prroi_pool(f, r, k, scale), score_maps, rois),
        "ps_prroi_pool_reference": (lambda f, r: ps_prroi_pool_reference(f, r, k, scale), score_maps, rois),
        "ps_roi_align(sampling_ratio=2)": (lambda f, r: ps_roi_align(f, r, k, scale, 2), score_maps, rois),
    }

    def forward(pool, maps, rois):
        def run() -> None:
            with torch.no_grad():
                pool(maps, rois)
        return run

    def forward_backward(pool, maps, rois):
        leaf, grad = maps.clone().requires_grad_(), grad_output[:len(rois)]
        return lambda: torch.autograd.grad(pool(leaf, rois), leaf, grad)

    def with_box_gradient(pool, maps, rois):
        leaf, boxes_leaf, grad = maps.clone().requires_grad_(), rois.clone().requires_grad_(), grad_output[:len(rois)]
        return lambda: torch.autograd.grad(pool(leaf, boxes_leaf), (leaf, boxes_leaf), grad)

    counts = {name: reference_repeats if name.endswith("reference") else repeats for name in ops}
    timings = []
    for mode, make in (("forward", forward), ("forward+backward", forward_backward),
                       ("forward+backward incl. boxes", with_box_gradient)):
        # torchvision's ops have no box gradient
        names = [n for n in ops if mode != "forward+backward incl. boxes" or "roi_align" not in n]
        calls = {name: make(*ops[name]) for name in names}
        for name, by_cache in fastest_seconds(calls, counts, device).items():
            for cache, seconds in by_cache.items():
                timings.append(Timing(name, device.type, mode, seconds, cache))
    return timings


def fixed_cost_seconds(device: str | torch.device = "cpu", workload: Workload = Workload(), repeats: int = 20,
                       seed: int = 0) -> dict[str, float]:
    """Fastest forward + feature backward of :func:`prroi_pool` on the workload's map with one RoI:
    ``{"cold": s, "warm": s}``, cold right after ``ps_roi_align`` over the workload's score maps and RoIs
    (another op's code and data), warm right after itself."""
    device = torch.device(device)
    k, classes, scale = workload.bins, workload.classes, 1.0 / workload.stride
    score_maps, features, rois = workload_tensors(workload, device, seed)
    leaf, grad = features.requires_grad_(), torch.ones(1, classes, k, k, device=device)
    calls = {"other": lambda: ps_roi_align(score_maps, rois, k, scale, 2),
             "one": lambda: torch.autograd.grad(prroi_pool(leaf, rois[:1], k, scale), leaf, grad)}
    return fastest_seconds(calls, {"other": repeats, "one": repeats}, device, warm_runs=1)["one"]


# (label, ours, other): the ratio printed is time(other) / time(ours) for the reference ("x faster")
# and time(ours) / time(other) for torchvision ("x the time of")
COMPARISONS = [
    ("PrRoI: reference / compiled (speed-up)", "prroi_pool", "prroi_pool_reference", "speedup"),
    ("PrRoI: compiled / roi_align(sr=2) (time ratio)", "prroi_pool", "roi_align(sampling_ratio=2)", "cost"),
    ("PS-PrRoI: reference / compiled (speed-up)", "ps_prroi_pool", "ps_prroi_pool_reference", "speedup"),
    ("PS-PrRoI: compiled / ps_roi_align(sr=2) (time ratio)", "ps_prroi_pool", "ps_roi_align(sampling_ratio=2)", "cost"),
]
MODES = ["forward", "forward+backward", "forward+backward incl. boxes"]


def ratio_table(timings: list[Timing]) -> list[dict[str, object]]:
    """One row per (device, caches, comparison): the ratio in each mode (``None`` where not measured)."""
    seconds = {(t.device, t.cache, t.op, t.mode): t.seconds for t in timings}
    rows = []
    for device, cache in dict.fromkeys((t.device, t.cache) for t in timings):
        for label, ours, other, kind in COMPARISONS:
            row: dict[str, object] = {"device": device, "cache": cache, "comparison": label}
            for mode in MODES:
                a, b = seconds.get((device, cache, ours, mode)), seconds.get((device, cache, other, mode))
                row[mode] = None if a is None or b is None else (b / a if kind == "speedup" else a / b)
            rows.append(row)
    return rows


def format_ratio_table(rows: list[dict[str, object]]) -> str:
    """Plain-text table of :func:`ratio_table` rows, ratios to two decimals."""
    header = f"{'device':<6}  {'cache':<5}  {'comparison':<52}" + "".join(f"  {mode:>28}" for mode in MODES)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = "".join(f"  {'-' if row[m] is None else format(row[m], '.2f'):>28}" for m in MODES)
        lines.append(f"{row['device']:<6}  {row['cache']:<5}  {row['comparison']:<52}{cells}")
    return "\n".join(lines)


def format_times_table(timings: list[Timing]) -> str:
    """Plain-text table of the fastest times in milliseconds, one row per (device, caches, op)."""
    seconds = {(t.device, t.cache, t.op, t.mode): t.seconds for t in timings}
    header = f"{'device':<6}  {'cache':<5}  {'op':<32}" + "".join(f"  {mode + ' (ms)':>33}" for mode in MODES)
    lines = [header, "-" * len(header)]
    for device, cache, op in dict.fromkeys((t.device, t.cache, t.op) for t in timings):
        cells = "".join(
            f"  {'-' if (device, cache, op, m) not in seconds else format(seconds[device, cache, op, m] * 1e3, '.3f'):>33}"
            for m in MODES)
        lines.append(f"{device:<6}  {cache:<5}  {op:<32}{cells}")
    return "\n".join(lines)
