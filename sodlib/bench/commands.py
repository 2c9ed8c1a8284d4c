"""``python -m sodlib bench prroi|rfcn|sr|efpn|all``: timing ratios of precise RoI pooling (:mod:`sodlib.bench.prroi`), of
R-FCN against Faster R-CNN and across its poolings (:mod:`sodlib.bench.rfcn`), and of the SR networks against
bicubic upscaling (:mod:`sodlib.bench.sr`)."""
from __future__ import annotations

import argparse
from dataclasses import replace

import torch

BENCH_TARGETS = ["prroi", "rfcn", "sr", "efpn", "all"]  # `all` runs every benchmark


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command."""
    parser = subparsers.add_parser(
        "bench",
        help="time compiled ops against their references and torchvision, as ratios from one run",
        description="Print forward and forward+backward time ratios of PrRoI / PS-PrRoI pooling against the "
        "pure-PyTorch reference and torchvision's roi_align / ps_roi_align (sampling_ratio=2) on an R-FCN-sized "
        "workload (k=7, 21 classes, stride-16 map of a 600x1000 image, 300 mostly small RoIs); rfcn: inference ms "
        "per image of R-FCN against Faster R-CNN with the same backbone at 300 RoIs, and R-FCN's training step "
        "with each pooling (the fast configs, CPU); sr: ms to upscale 100 crops of 32 px by 2 and 4 with each SR "
        "network, bicubic and bilinear; efpn: ms per image and peak memory of FPN 1x, FPN 2x, FPN 1x with the 2x "
        "input's P2, EFPN without FTT and EFPN, as ratios to FPN 1x, and where EFPN's time goes.",
    )
    parser.add_argument("target", choices=BENCH_TARGETS, help="what to benchmark")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                        help="where to run (all: CPU, and CUDA when present)")
    parser.add_argument("--rois", type=int, default=300, help="number of RoIs (default 300)")
    parser.add_argument("--classes", type=int, default=21,
                        help="classes with background (default 21, VOC as Zhang et al.; 81 for COCO: 81 x 49 = 3,969 score maps)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per op (the fastest counts; default 10)")
    parser.add_argument("--reference-repeats", type=int, default=5, help="timed runs of the slow references")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for every op (default: torch's default, all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.repeats <= 0:
        raise ValueError("--repeats must be positive")
    if args.threads is not None and args.threads <= 0:
        raise ValueError("--threads must be positive")
    if args.target in ("prroi", "all"):
        run_prroi(args)
    if args.target in ("rfcn", "all"):
        from sodlib.bench.rfcn import benchmark_rfcn

        if args.threads is not None:
            torch.set_num_threads(args.threads)
        print()
        print("R-FCN benchmark (CPU)")
        print(benchmark_rfcn(repeats=args.repeats).summary())
    if args.target in ("sr", "all"):
        from sodlib.bench.sr import benchmark_sr

        if args.threads is not None:
            torch.set_num_threads(args.threads)
        print()
        print("Super-resolution benchmark: upscaling 100 object crops")
        devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
        for device in [d for d in devices if d == "cpu" or torch.cuda.is_available()]:
            print(benchmark_sr(repeats=args.repeats, device=device, seed=args.seed).table())
    if args.target in ("efpn", "all"):
        from sodlib.bench.efpn import benchmark_efpn, efpn_cost_breakdown

        if args.threads is not None:
            torch.set_num_threads(args.threads)
        devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
        for device in [d for d in devices if d == "cpu" or torch.cuda.is_available()]:
            print()
            print(benchmark_efpn(repeats=min(args.repeats, 3), device=device).table())
        print("EFPN's forward part by part (CPU, ms): " + ", ".join(f"{k} {v:.1f}" for k, v in efpn_cost_breakdown().items()))
    return 0


def run_prroi(args: argparse.Namespace) -> None:
    from sodlib.bench.prroi import (Workload, benchmark_prroi, fixed_cost_seconds, format_ratio_table,
                                      format_times_table, ratio_table)

    if args.rois <= 0 or args.repeats <= 0 or args.reference_repeats <= 0 or args.classes <= 0:
        raise ValueError("--rois, --classes, --repeats and --reference-repeats must be positive")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available; use --device cpu")
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    if args.threads is not None:
        if args.threads <= 0:
            raise ValueError("--threads must be positive")
        torch.set_num_threads(args.threads)

    workload = replace(Workload(), rois=args.rois, classes=args.classes)
    height, width = workload.feature_size
    print(f"PrRoI benchmark: {workload.rois} RoIs ({workload.small_fraction:.0%} small), k={workload.bins}, "
          f"{workload.classes} classes, stride-{workload.stride} map {height}x{width} of a "
          f"{workload.image_height}x{workload.image_width} image; CPU threads: {torch.get_num_threads()}")
    if "cuda" not in devices:
        print("CUDA: not available, CPU rows only")
    timings = []
    for device in devices:
        timings += benchmark_prroi(device, workload, args.repeats, args.reference_repeats, args.seed)
    print(format_ratio_table(ratio_table(timings)))
    print("speed-up: reference time / compiled time; time ratio: compiled time / torchvision time (<1 is faster)")
    print("cold: an op's first run after the other ops; warm: its runs right after itself (the steady state of "
          "back-to-back timing)")
    print()
    print("fastest times, for reading the ratios (they depend on the machine and its load):")
    print(format_times_table(timings))
    print()
    for device in devices:
        fixed = fixed_cost_seconds(device, workload, seed=args.seed)
        print(f"{device}: the fixed cost of a call (prroi_pool forward+backward on 1 RoI): "
              f"cold {fixed['cold'] * 1e3:.3f} ms, warm {fixed['warm'] * 1e3:.3f} ms")
