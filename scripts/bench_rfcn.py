"""R-FCN against Faster R-CNN with the same backbone, and R-FCN's three poolings, as ratios from one run.

    python scripts/bench_rfcn.py [--threads 1] [--repeats 5]

The same as ``python -m sodlib bench rfcn`` (:mod:`sodlib.bench.rfcn` says what is timed and how).
"""
from __future__ import annotations

import argparse

import torch

from sodlib.bench.rfcn import benchmark_rfcn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(benchmark_rfcn(repeats=args.repeats).summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
