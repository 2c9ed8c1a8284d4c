"""Time the synthetic dataset generators and report what they produce.

    python scripts/bench_synthetic.py [--images 1000] [--image-size 512] [--workers 2] [--skip-annotation-only]

Prints: the time to draw and write ``--images`` images (target: 1,000 images of 512 x 512 in under a minute
on 2 cores), their size mix next to COCO's, objects per image, the on-disk size; then the time to write the
COCO-train-scale annotation-only json (118,287 images, 860,001 objects; target: under 30 s).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sodlib.data.sizes import count_by_size_bin  # noqa: E402
from sodlib.data.synthetic import SIZE_BIN_PROBABILITIES, generate_annotation_only_coco, generate_synthetic_coco  # noqa: E402


def folder_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def describe(json_path: Path) -> None:
    document = json.loads(json_path.read_text())
    areas = np.array([a["area"] for a in document["annotations"]], dtype=np.float64)
    counts = count_by_size_bin(areas)
    crowd = sum(a["iscrowd"] for a in document["annotations"])
    per_image = np.bincount([a["image_id"] for a in document["annotations"]], minlength=len(document["images"]) + 1)[1:]
    print(f"  images {len(document['images']):,}, annotations {len(areas):,} ({crowd} crowd, {100 * crowd / len(areas):.2f} %)")
    print(f"  objects per image: mean {per_image.mean():.2f}, median {np.median(per_image):.0f}, max {per_image.max()}")
    print("  size mix (by area, both edges inclusive):   ours      COCO train2017")
    for name, count in counts.items():
        print(f"    {name:<8} {count:>8,}   {100 * count / len(areas):6.2f} %   {100 * SIZE_BIN_PROBABILITIES[name]:6.2f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-annotation-only", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        start = time.perf_counter()
        json_path = generate_synthetic_coco(scratch / "synth", args.images, args.seed, image_size=args.image_size,
                                            workers=args.workers, progress=False)
        seconds = time.perf_counter() - start
        print(f"generate_synthetic_coco: {args.images:,} images of {args.image_size} px in {seconds:.1f} s "
              f"({1000 * seconds / args.images:.1f} ms per image), {folder_megabytes(scratch / 'synth'):.1f} MB on disk")
        describe(json_path)

        if not args.skip_annotation_only:
            start = time.perf_counter()
            json_path = generate_annotation_only_coco(scratch / "coco_scale.json", progress=False)
            seconds = time.perf_counter() - start
            print(f"generate_annotation_only_coco: 118,287 images, 860,001 objects in {seconds:.1f} s, "
                  f"{json_path.stat().st_size / 1e6:.0f} MB")
            describe(json_path)


if __name__ == "__main__":
    main()
