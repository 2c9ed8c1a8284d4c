"""PrRoI pooling on a large map with few RoIs (an FPN's finest level), against torchvision's roi_align.

    python scripts/bench_prroi_large_map.py [--rois 100] [--channels 256] [--threads 1] [--repeats 5]

The workload: a stride-4 map of an 800 x 1344 image (256 x 200 x 336), and RoIs of 16 to 48 image pixels,
the boxes an FPN assigns to its finest level. Here the RoIs cover less than the map, so the CPU kernels read
the RoIs within 4 x 4 pixels straight from the map and copy each larger RoI's window, not the whole map.
Prints the fastest forward and forward + backward (features) times of prroi_pool and
roi_align(sampling_ratio=2, aligned=False), and their ratio, measured in one run, each run after the other
ops' ("cold" in sodlib.bench.prroi).
"""
from __future__ import annotations

import argparse

import torch

from sodlib.ops import prroi_pool
from sodlib.bench.prroi import fastest_seconds
from sodlib.ops.torchvision_pooling import roi_align


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rois", type=int, default=100)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, args.channels, 200, 336, generator=generator)
    corner = torch.rand(args.rois, 2, generator=generator) * torch.tensor([1296.0, 752.0])
    size = 16 + 32 * torch.rand(args.rois, 2, generator=generator)
    rois = torch.cat([torch.zeros(args.rois, 1), corner, corner + size], dim=1)
    leaf = features.clone().requires_grad_()
    grad = torch.ones(args.rois, args.channels, 7, 7)

    def forward(pool):
        def run():
            with torch.no_grad():
                pool(features, rois)
        return run

    pools = {"prroi_pool": lambda f, r: prroi_pool(f, r, 7, 0.25),
             "roi_align(sampling_ratio=2)": lambda f, r: roi_align(f, r, 7, 0.25, 2, aligned=False)}
    calls = {}
    for name, pool in pools.items():
        calls[f"{name} forward"] = forward(pool)
        calls[f"{name} forward+backward"] = (lambda p: lambda: torch.autograd.grad(p(leaf, rois), leaf, grad))(pool)
    best = fastest_seconds(calls, {name: args.repeats for name in calls}, torch.device("cpu"), warm_runs=0)
    print(f"map 1x{args.channels}x200x336 (stride 4 of 800x1344), {args.rois} RoIs of 16-48 px, "
          f"CPU threads: {torch.get_num_threads()}; cold runs (after the other ops)")
    for mode in ("forward", "forward+backward"):
        ours, theirs = best[f"prroi_pool {mode}"]["cold"], best[f"roi_align(sampling_ratio=2) {mode}"]["cold"]
        print(f"{mode:<17} prroi_pool {ours * 1e3:8.2f} ms   roi_align {theirs * 1e3:8.2f} ms   "
              f"prroi / roi_align {ours / theirs:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
