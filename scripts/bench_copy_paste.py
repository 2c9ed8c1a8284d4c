"""Benchmark small-object copy-paste on one core, and what it and oversampling do to the data.

    python scripts/bench_copy_paste.py [--images 48] [--rounds 5] [--anchor-images 200] [--seed 0]

Measured in one run, with ``torch.set_num_threads(1)``:

1. Throughput: ``--images`` images of 512 x 512 px, each with 10 small objects (masks of 6-30 px across, no
   two overlapping, on a smooth-noise background), held as JPEG bytes. The reference step is decoding such a
   JPEG into a ``float32 [3, 512, 512]`` tensor (what ``sodlib.data.read_image`` does for every training
   image); each copy-paste setting is timed on the decoded images and shown beside it as images per second
   and as a multiple of the decode time. A second reference is reading one item of the embedded dataset with
   its masks (``CocoDetection(..., masks=True)[i]``: JPEG decode plus one mask per object from its polygon).
   Steps are interleaved over ``--rounds`` rounds; the best round counts.
2. Anchors: the embedded training set's first ``--anchor-images`` images with and without copy-paste
   (``all`` x1, the paper's Table 7 best), matched to Kisantal's FPN anchors at Mask R-CNN's training size
   (800 / 1333) and at their own size, with ``sodlib.stats.anchor_matching_statistics``: small objects (by the
   area at that size), their positive anchors, their share of all positive anchors, matched anchors per small
   object (ties ``all``: every anchor tied at an object's best IoU, as torchvision's Matcher; ``one``: one
   per object, as counted in Kisantal's Table 2); plus the transform's skip counts.
3. Oversampling: one epoch of ``SmallObjectOversampler`` on the embedded training set per factor, and the
   observed repeat rate of the images with small objects against the factor.
"""
from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from sodlib.augment import PasteCounts, SmallObjectCopyPaste, SmallObjectOversampler
from sodlib.data import CocoDetection, embedded_dataset

SIZE = 512
OBJECTS_PER_IMAGE = 10
SETTINGS = [
    ("all x1", dict(strategy="all", count=1)),
    ("all x3", dict(strategy="all", count=3)),
    ("one x2", dict(strategy="one", count=2)),
    ("several x3", dict(strategy="several", count=3)),
    ("all x1, edge blur 5", dict(strategy="all", count=1, edge_blur=5)),
    ("all x1, overlap allowed", dict(strategy="all", count=1, allow_overlap=True)),
]


def bench_image(rng: np.random.Generator) -> tuple[bytes, dict]:
    """JPEG bytes of a 512 px image with 10 small non-overlapping objects, and its target (masks included)."""
    coarse = rng.uniform(40, 215, size=(8, 8, 3)).astype(np.uint8)
    background = np.asarray(Image.fromarray(coarse).resize((SIZE, SIZE), Image.BICUBIC), dtype=np.float64)
    pixels = np.clip(background + rng.normal(0, 8, size=background.shape), 0, 255).astype(np.uint8)
    occupied = np.zeros((SIZE, SIZE), dtype=bool)
    masks = []
    while len(masks) < OBJECTS_PER_IMAGE:
        side = rng.uniform(6, 30)
        centre = rng.uniform(side, SIZE - side, size=2)
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(5, 9))))
        radii = side / 2 * rng.uniform(0.7, 1.0, size=len(angles))
        polygon = list(zip(centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)))
        drawing = Image.new("L", (SIZE, SIZE))
        ImageDraw.Draw(drawing).polygon(polygon, fill=1)
        mask = np.asarray(drawing, dtype=bool)
        if mask.sum() < 16 or (mask & occupied).any():
            continue
        occupied |= mask
        masks.append(mask)
        pixels[mask] = rng.integers(0, 256, size=3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    stacked = torch.from_numpy(np.stack(masks).astype(np.uint8))
    rows = [np.flatnonzero(m.any(axis=1)) for m in masks]
    cols = [np.flatnonzero(m.any(axis=0)) for m in masks]
    boxes = torch.tensor([[c[0], r[0], c[-1] + 1, r[-1] + 1] for r, c in zip(rows, cols)], dtype=torch.float32)
    target = {"boxes": boxes, "labels": torch.ones(OBJECTS_PER_IMAGE, dtype=torch.int64),
              "area": stacked.flatten(1).sum(1).float(), "iscrowd": torch.zeros(OBJECTS_PER_IMAGE, dtype=torch.int64),
              "masks": stacked, "image_id": 0}
    return buffer.getvalue(), target


def decode(data: bytes) -> torch.Tensor:
    """The reference step: JPEG bytes to ``float32 [3, H, W]`` in ``[0, 1]`` (as sodlib.data.read_image)."""
    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def throughput(images: int, rounds: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    encoded, targets = zip(*(bench_image(rng) for _ in range(images)))
    decoded = [decode(data) for data in encoded]
    annotations, folder = embedded_dataset("train")
    embedded = CocoDetection(annotations, folder, masks=True, image_ids=list(range(1, images + 1)))
    steps = {"decode JPEG (reference)": lambda: [decode(data) for data in encoded],
             "read embedded item + masks": lambda: [embedded[i] for i in range(len(embedded))]}
    transforms = {}
    for name, options in SETTINGS:
        transforms[name] = SmallObjectCopyPaste(**options, seed=seed)
        steps[f"copy-paste {name}"] = (lambda t: lambda: [t(image, target) for image, target in zip(decoded, targets)])(transforms[name])
    best = {name: float("inf") for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - start)
    reference = best["decode JPEG (reference)"] / images
    print(f"\n1. throughput on one core (torch threads: {torch.get_num_threads()}), {images} images of {SIZE} x {SIZE} px "
          f"with {OBJECTS_PER_IMAGE} small objects, best of {rounds} rounds")
    print(f"{'step':34s} {'ms / image':>10s} {'images / s':>11s} {'x decode':>9s}  pasted / planned (skipped: no room)")
    for name, seconds in best.items():
        per_image = seconds / images
        counts = transforms[name[len("copy-paste "):]].counts if name.startswith("copy-paste") else None
        note = f"{counts.pasted} / {counts.planned_pastes} ({counts.skipped_no_room})" if counts else ""
        print(f"{name:34s} {1000 * per_image:10.2f} {1 / per_image:11.1f} {per_image / reference:9.2f}  {note}")


def _coco_of(targets: list[dict], size: tuple[int, int]):
    from sodlib.data.coco import coco_from_dict

    images, annotations = [], []
    for target in targets:
        images.append({"id": target["image_id"], "file_name": "", "height": size[0], "width": size[1]})
        for box, area, crowd, label in zip(target["boxes"].tolist(), target["area"].tolist(), target["iscrowd"].tolist(),
                                           target["labels"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": target["image_id"], "category_id": label,
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "area": area, "iscrowd": crowd})
    return coco_from_dict({"images": images, "annotations": annotations, "categories": []})


def anchors(images: int, seed: int) -> None:
    try:
        from sodlib.stats import anchor_matching_statistics
    except ImportError as error:  # pragma: no cover - stats is another module's work
        print(f"\n2. anchors: skipped, sodlib.stats is not importable ({error})")
        return
    annotations, folder = embedded_dataset("train")
    dataset = CocoDetection(annotations, folder, masks=True, image_ids=list(range(1, images + 1)))
    transform = SmallObjectCopyPaste("all", 1, seed=seed)
    before, after = [], []
    for index in range(len(dataset)):
        target = dataset.target_of(index)
        image = torch.zeros(3, *target["masks"].shape[-2:])  # the pixels do not change where objects go
        before.append(target)
        after.append(transform(image, target)[1])
    print(f"\n2. anchors: embedded train, first {images} images, copy-paste all x1 (seed {seed}); Kisantal's FPN anchors; "
          "small objects only (ties: all)")
    print(f"{'size':>10s} {'data':12s} {'small objects':>13s} {'pos. anchors':>12s} {'share of pos.':>13s} "
          f"{'anchors/object':>14s} {'(ties one)':>10s} {'unmatched':>9s} {'best IoU':>8s}")
    for resize in (None, (800, 1333)):
        for name, targets in (("original", before), ("copy-pasted", after)):
            coco = _coco_of(targets, (512, 512))
            small = anchor_matching_statistics(coco, resize=resize).bins[0]
            one = anchor_matching_statistics(coco, resize=resize, ties="one").bins[0]
            size = "512" if resize is None else f"{resize[0]}/{resize[1]}"
            print(f"{size:>10s} {name:12s} {small.objects:13d} {small.positive_anchors:12d} "
                  f"{100 * small.positive_anchor_share:12.2f}% {small.matched_anchors_per_object:14.2f} "
                  f"{one.matched_anchors_per_object:10.2f} {100 * small.unmatched_share:8.1f}% {small.mean_best_iou:8.2f}")
    counts: PasteCounts = transform.counts
    print(f"  pastes: {counts.pasted} of {counts.planned_pastes} done, {counts.skipped_no_room} skipped (no room), "
          f"{counts.skipped_vanished} vanished; {counts.split_masks} of {counts.small_objects} small objects not copied "
          f"(mask in several pieces); {counts.images_without_candidates} of {counts.images} images had none to copy")


def oversampling(seed: int) -> None:
    annotations, folder = embedded_dataset("train")
    dataset = CocoDetection(annotations, folder)
    print(f"\n3. oversampling: one epoch of the embedded training set ({len(dataset)} images)")
    print(f"{'factor':>6s} {'epoch length':>12s} {'images with small':>17s} {'observed repeat rate':>20s}")
    for factor in (1, 2, 2.5, 3, 4):
        sampler = SmallObjectOversampler(dataset, factor, seed=seed)
        seen = np.bincount(np.fromiter(iter(sampler), dtype=np.int64), minlength=len(dataset))
        flags = sampler.has_small_objects
        rate = seen[flags].mean() / seen[~flags].mean() if (~flags).any() else seen[flags].mean()
        print(f"{factor:6g} {len(sampler):12d} {int(flags.sum()):17d} {rate:20.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48, help="images in the throughput set")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (best counts)")
    parser.add_argument("--anchor-images", type=int, default=200, help="embedded images for the anchor statistics (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.images < 1 or args.rounds < 1 or args.anchor_images < 0:
        parser.error("--images and --rounds must be >= 1, --anchor-images >= 0")
    torch.set_num_threads(1)
    throughput(args.images, args.rounds, args.seed)
    if args.anchor_images:
        anchors(args.anchor_images, args.seed)
    oversampling(args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
