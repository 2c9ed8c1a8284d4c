"""Low / high resolution crop pairs of objects, with one stated protocol, for training and measuring SR.

The protocol (:class:`SRProtocol`, written into every result that uses it):

- **Crop**: a square of ``lr_size`` pixels at low resolution, ``s * lr_size`` at high resolution, centred on the
  object (COCO: on its box centre, the window shifted into the image where it would leave it), with the object's
  extent times ``1 + 2 margin`` inside the crop, so at least ``margin`` of its extent is context on each side.
- **Objects in range**: at low resolution the box side ``sqrt(w h)`` is at least ``min_lr_side`` and the longer
  box side times ``1 + 2 margin`` fits in the crop. Non-crowd annotations only.
- **Degradation** (COCO): the high-resolution crop is the image's own pixels, the low-resolution one their
  :func:`sodlib.data.resample.downscale_antialiased` by ``s`` (bicubic with antialiasing), rounded to ``uint8``.
  The embedded source instead draws the object twice (:func:`sodlib.data.synthetic.render_object_pair`): its
  low-resolution crop is a real small object of the dataset's kind, not a downscaled image.
- **Values**: RGB ``uint8`` in storage, ``float32`` in ``[0, 1]`` (``/ 255``) for models and metrics.
- **Metric border**: ``shave = s`` high-resolution pixels are left out on each side (the border where an
  upsampler lacks neighbours), see :mod:`sodlib.eval.image_quality`.
- **Split** (COCO): images sorted by id; every fifth (positions 4, 9, 14, ...) is ``"val"``, the others ``"train"``.

Both sources return :class:`SRPairs` and are deterministic (the embedded one for a seed; COCO has no
randomness, ``max_crops`` keeps the first crops in image-id then annotation-id order).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sodlib.data.dataset import CocoDetection
from sodlib.data.resample import DOWNSCALE_KERNEL, downscale_antialiased
from sodlib.data.synthetic import CATEGORIES, render_object_pair

__all__ = ["SRProtocol", "SRPairs", "SPLITS", "embedded_sr_pairs", "coco_sr_pairs", "split_image_ids", "crop_window_start"]

SPLITS = ("train", "val", "all")


@dataclass(frozen=True)
class SRProtocol:
    """How pairs are cut, degraded and measured (see the module docstring)."""

    scale: int = 2
    lr_size: int = 32
    margin: float = 0.25
    min_lr_side: float = 6.0

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, int) or self.scale < 2:
            raise ValueError(f"scale={self.scale!r} must be an integer >= 2")
        if not isinstance(self.lr_size, int) or self.lr_size < 8:
            raise ValueError(f"lr_size={self.lr_size!r} must be an integer >= 8 (low-resolution crop side in pixels)")
        if not 0 <= self.margin < 2:
            raise ValueError(f"margin={self.margin!r} must be in [0, 2) (context as a fraction of the object's extent)")
        if self.min_lr_side <= 0 or self.min_lr_side * (1 + 2 * self.margin) > self.lr_size:
            raise ValueError(f"min_lr_side={self.min_lr_side!r} must be positive and fit, with the margin, in lr_size={self.lr_size}")

    @property
    def hr_size(self) -> int:
        return self.lr_size * self.scale

    @property
    def shave(self) -> int:
        """High-resolution pixels left out of the metrics on each side."""
        return self.scale

    @property
    def max_lr_side(self) -> float:
        """The longest box side (low resolution) that fits in the crop with the margin."""
        return self.lr_size / (1 + 2 * self.margin)

    def describe(self) -> dict:
        """The protocol as a json-able dict, with the kernel, value range and metric border spelt out."""
        return {**asdict(self), "hr_size": self.hr_size, "shave": self.shave,
                "object_lr_sides": [self.min_lr_side, round(self.max_lr_side, 2)],
                "downscale": DOWNSCALE_KERNEL, "values": "RGB, float32 in [0, 1] (uint8 / 255)",
                "metric_border": f"{self.shave} px shaved on each side of the high-resolution crop"}


@dataclass
class SRPairs:
    """``N`` crop pairs: ``lr uint8 Tensor[N, 3, P, P]``, ``hr uint8 Tensor[N, 3, s P, s P]``, the object's box in
    each crop (``boxes_lr``, ``boxes_hr``: ``float32 Tensor[N, 4]`` xyxy), ``category_ids int64 Tensor[N]``,
    ``image_ids int64 Tensor[N]`` (-1 for drawn pairs), ``category_names`` (id -> name), the ``source``."""

    lr: Tensor
    hr: Tensor
    boxes_lr: Tensor
    boxes_hr: Tensor
    category_ids: Tensor
    image_ids: Tensor
    protocol: SRProtocol
    source: str
    category_names: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.lr.shape[0])

    def batch(self, indices: Tensor | list[int] | slice) -> tuple[Tensor, Tensor]:
        """``(lr, hr)`` of the given pairs as ``float32`` in ``[0, 1]``."""
        return self.lr[indices].float() / 255.0, self.hr[indices].float() / 255.0

    def subset(self, indices: Tensor | list[int]) -> "SRPairs":
        """The pairs at ``indices``, in that order."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return SRPairs(self.lr[index], self.hr[index], self.boxes_lr[index], self.boxes_hr[index],
                       self.category_ids[index], self.image_ids[index], self.protocol, self.source, self.category_names)

    @property
    def lr_sides(self) -> Tensor:
        """``float32 Tensor[N]``: the object's box side ``sqrt(w h)`` at low resolution."""
        wh = self.boxes_lr[:, 2:] - self.boxes_lr[:, :2]
        return (wh[:, 0] * wh[:, 1]).sqrt()


def _stack(images: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def embedded_sr_pairs(num_pairs: int, protocol: SRProtocol = SRProtocol(), seed: int = 0) -> SRPairs:
    """``num_pairs`` drawn pairs (:func:`~sodlib.data.synthetic.render_object_pair` ``seed``, ``0..N-1``): small
    objects of the embedded dataset's kind with their true high-resolution twins."""
    if isinstance(num_pairs, bool) or not isinstance(num_pairs, int) or num_pairs < 1:
        raise ValueError(f"num_pairs={num_pairs!r} must be a positive integer")
    pairs = [render_object_pair(seed, i, protocol.lr_size, protocol.scale, protocol.margin, protocol.min_lr_side)
             for i in range(num_pairs)]
    return SRPairs(_stack([p.lr for p in pairs]), _stack([p.hr for p in pairs]),
                   torch.tensor([p.box_lr for p in pairs], dtype=torch.float32),
                   torch.tensor([p.box_hr for p in pairs], dtype=torch.float32),
                   torch.tensor([p.category_id for p in pairs]), torch.full((num_pairs,), -1),
                   protocol, f"embedded (drawn twice, seed {seed})", {c["id"]: c["name"] for c in CATEGORIES})


def split_image_ids(image_ids: list[int], split: str) -> list[int]:
    """The ids of ``split`` (``"train"``, ``"val"`` or ``"all"``): sorted, every fifth (positions 4, 9, ...) is val."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} must be one of {', '.join(SPLITS)}")
    ordered = sorted(image_ids)
    if split == "all":
        return ordered
    return [i for k, i in enumerate(ordered) if (k % 5 == 4) == (split == "val")]


def crop_window_start(centre: float, crop: int, extent: int) -> int | None:
    """The start of a ``crop``-pixel window centred on ``centre``, shifted into ``[0, extent)``; None if it cannot fit."""
    if crop > extent:
        return None
    return int(min(max(round(centre - crop / 2), 0), extent - crop))


def coco_sr_pairs(annotations: str | os.PathLike, images: str | os.PathLike, protocol: SRProtocol = SRProtocol(),
                  split: str = "all", max_crops: int | None = None) -> SRPairs:
    """Pairs cut from real images: every non-crowd object whose box fits the protocol's range at high
    resolution (``s * min_lr_side <= sqrt(w h)`` and ``max(w, h) (1 + 2 margin) <= s P``), the image's pixels
    as the high-resolution crop and their antialiased downscaling as the low-resolution one.

    Raises ``ValueError`` before reading any image when no object is in range (naming the range and the fix),
    and for a bad split; the json and image files are checked by :class:`~sodlib.data.CocoDetection`.
    """
    if max_crops is not None and (isinstance(max_crops, bool) or not isinstance(max_crops, int) or max_crops < 1):
        raise ValueError(f"max_crops={max_crops!r} must be a positive integer or None")
    s, crop = protocol.scale, protocol.hr_size
    dataset = CocoDetection(annotations, images, include_crowd=False)
    coco = dataset.coco
    chosen = split_image_ids(list(dataset.image_ids), split)
    wanted: list[tuple[int, dict]] = []  # (image id, annotation) in range, in id order
    for image_id in chosen:
        info = coco.imgs[image_id]
        for ann in sorted(coco.imgToAnns.get(image_id, []), key=lambda a: a["id"]):
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd", 0) or w <= 0 or h <= 0:
                continue
            if math.sqrt(w * h) < s * protocol.min_lr_side or max(w, h) * (1 + 2 * protocol.margin) > crop:
                continue
            if crop > info["width"] or crop > info["height"]:
                continue
            wanted.append((image_id, ann))
    if max_crops is not None:
        wanted = wanted[:max_crops]
    if not wanted:
        raise ValueError(f"{annotations} ({split} split): no object has a box side sqrt(w h) >= {s * protocol.min_lr_side:g} px "
                         f"and a longer side <= {crop / (1 + 2 * protocol.margin):.1f} px (scale {s}, lr_size {protocol.lr_size}, "
                         f"margin {protocol.margin}); fix: another split, a larger lr_size, or a smaller scale")
    position = {image_id: k for k, image_id in enumerate(dataset.image_ids)}
    lr, hr, boxes_lr, boxes_hr = [], [], [], []
    current_id, pixels = None, None
    for image_id, ann in wanted:
        if image_id != current_id:
            image = dataset.read_image_of(position[image_id])
            pixels = (image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
            current_id = image_id
        x, y, w, h = ann["bbox"]
        x0 = crop_window_start(x + w / 2, crop, pixels.shape[1])
        y0 = crop_window_start(y + h / 2, crop, pixels.shape[0])
        high = np.ascontiguousarray(pixels[y0:y0 + crop, x0:x0 + crop])
        hr.append(high)
        lr.append(downscale_antialiased(high, s))
        box = np.array([x - x0, y - y0, x + w - x0, y + h - y0], dtype=np.float32)
        boxes_hr.append(box)
        boxes_lr.append(box / s)
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    return SRPairs(_stack(lr), _stack(hr), torch.from_numpy(np.stack(boxes_lr)), torch.from_numpy(np.stack(boxes_hr)),
                   torch.tensor([a["category_id"] for _, a in wanted]), torch.tensor([i for i, _ in wanted]),
                   protocol, f"COCO {Path(annotations).name} ({split} split)", names)
