"""Small-object copy-paste inside the same image, with the rules of Kisantal et al. (2019, sections 4-6).

The paper raises AP on small objects by copying small objects by their masks and pasting them elsewhere in
the same image, so that each image holds more small objects (more anchors matched to small objects, a larger
share of the RPN loss) in the right context. The rules it follows, and this module with it:

- **Which objects** (section 4): small ones (COCO's bin, ``area <= 32^2`` by the annotation's area, edge
  inclusive), not crowd regions, and only those whose mask is one connected piece (8-connected): a mask in
  several pieces usually belongs to an occluded object, and pasting it shows unseen parts as holes.
- **Transform** (section 4): each copy is scaled by a factor drawn uniformly from ``[0.8, 1.2]`` (on the side)
  and rotated by an angle drawn uniformly from ``[-15, 15]`` degrees, drawn again for every copy.
- **Place** (section 4): a copy overlaps no existing object and no copy pasted before it (masks, pixel by
  pixel; crowd regions count as taken) and keeps at least 5 px between its mask and every image border. The
  place is drawn uniformly among the free ones; when none exists the paste is skipped and counted, never
  forced. ``allow_overlap=True`` drops the overlap test (the paper's "overlapping" ablation, Table 8); the
  originals' annotations are then still kept as they were, even where a copy now covers them.
- **Strategies** (section 5.3, Tables 5-7), with ``count = k``:

  =========== ==============================================================================
  ``one``      one small object chosen at random, pasted ``k`` times
  ``several``  ``k`` distinct small objects chosen at random (all of them if fewer), each once
  ``all``      every small object, each pasted ``k`` times
  =========== ==============================================================================

- **Setting** (section 5.2, Table 4): ``probability`` is the chance that an image is augmented at all.
  ``1.0`` replaces every image by its augmented copy (the paper's "aug"); ``0.5`` together with 2x
  oversampling of the images with small objects (:class:`sodlib.augment.SmallObjectOversampler`) gives, in
  expectation, each such image once as it is and once augmented (the paper's best, "original + aug"). The
  offline writer :func:`sodlib.augment.copy_paste_coco` writes that setting exactly.
- **Seam** (section 5.4, Table 8): ``edge_blur=3`` or ``5`` Gaussian-blurs a band around each pasted outline
  (the paper found it no better than pasting as is, so it is off by default).

Every pasted object gets a mask (the pixels written), a box (that mask's tight box, ``x2``/``y2`` one past the
last pixel, as COCO's ``toBbox``), an area (its pixel count), the source's label and ``iscrowd = 0``; they are
appended after the original objects, which stay exactly as they were (annotations, and with overlap off also
their pixels).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import torch

from sodlib.augment.masks import SMALL_AREA_MAX, count_connected_pieces
from sodlib.augment.placement import blur_seam, find_place, warp_object
from sodlib.data.masks import mask_box

logger = logging.getLogger(__name__)

Strategy = Literal["one", "several", "all"]
STRATEGIES: tuple[str, ...] = ("one", "several", "all")
Target = dict[str, Any]
PER_OBJECT_KEYS = ("boxes", "labels", "masks", "area", "iscrowd")


@dataclass(frozen=True)
class CopyPasteSettings:
    """What one copy-paste does (see the module docstring for the rules and the paper's sections).

    Attributes:
        strategy: ``"one"``, ``"several"`` or ``"all"``.
        count: ``k`` of the strategy (pastes per object, or objects for ``"several"``), >= 1.
        scale_range: ``(low, high)`` of the uniform scale on the object's side; ``(0.8, 1.2)`` is +-20 %.
        max_rotation_degrees: angles are uniform in ``[-max, max]``; 15 in the paper.
        border_margin: free pixels kept between a pasted mask and every image border; 5 in the paper.
        allow_overlap: paste without looking at other objects (the paper's ablation; off by default).
        edge_blur: ``None``, or an odd Gaussian kernel size (3 or 5 in the paper) for the pasted outline.
        small_area_max: objects with ``area <=`` this are small (COCO: ``32^2``).
        placement_tries: random draws before the exact (FFT) search for a free place.
    """

    strategy: Strategy = "all"
    count: int = 1
    scale_range: tuple[float, float] = (0.8, 1.2)
    max_rotation_degrees: float = 15.0
    border_margin: int = 5
    allow_overlap: bool = False
    edge_blur: int | None = None
    small_area_max: float = SMALL_AREA_MAX
    placement_tries: int = 30

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r} is unknown; use 'one' (one object pasted count times), "
                             "'several' (count objects pasted once each) or 'all' (every small object count times)")
        if not _is_int(self.count) or self.count < 1:
            raise ValueError(f"count={self.count!r} must be an integer >= 1 (the paper uses 1 to 5)")
        try:
            low, high = (float(v) for v in self.scale_range)
        except (TypeError, ValueError):
            raise ValueError(f"scale_range={self.scale_range!r} must be two numbers (low, high), e.g. (0.8, 1.2)") from None
        if not (0 < low <= high) or not math.isfinite(high):
            raise ValueError(f"scale_range={self.scale_range!r} needs 0 < low <= high, e.g. (0.8, 1.2) for +-20 %")
        object.__setattr__(self, "scale_range", (low, high))
        if not _is_number(self.max_rotation_degrees) or not 0 <= self.max_rotation_degrees <= 180:
            raise ValueError(f"max_rotation_degrees={self.max_rotation_degrees!r} must be a number in [0, 180] (15 in the paper)")
        if not _is_int(self.border_margin) or self.border_margin < 0:
            raise ValueError(f"border_margin={self.border_margin!r} must be an integer >= 0 (5 in the paper)")
        if not isinstance(self.allow_overlap, bool):
            raise ValueError(f"allow_overlap={self.allow_overlap!r} must be True or False")
        if self.edge_blur is not None and (not _is_int(self.edge_blur) or self.edge_blur < 3 or self.edge_blur % 2 == 0):
            raise ValueError(f"edge_blur={self.edge_blur!r} must be None (no blur) or an odd kernel size >= 3 (3 or 5 in the paper)")
        if not _is_number(self.small_area_max) or self.small_area_max <= 0:
            raise ValueError(f"small_area_max={self.small_area_max!r} must be a positive area in pixels (COCO: 1024)")
        if not _is_int(self.placement_tries) or self.placement_tries < 0:
            raise ValueError(f"placement_tries={self.placement_tries!r} must be an integer >= 0")


#: The names of :class:`CopyPasteSettings`' fields, in their order.
SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(CopyPasteSettings))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class PasteCounts:
    """What copy-paste did, summed over images (``a + b`` adds two).

    Attributes:
        images: images seen.
        images_augmented: images that got at least one pasted object.
        images_without_candidates: images (among those drawn for augmentation) with no small object to copy.
        small_objects: non-crowd small objects seen (in images drawn for augmentation).
        split_masks: of those, the ones left out because their mask is in several pieces (or empty).
        planned_pastes: pastes the strategy asked for.
        pasted: pastes done.
        skipped_no_room: pastes skipped because no free place inside the margin fitted the copy.
        skipped_vanished: pastes skipped because the scaled copy had no pixel left.
    """

    images: int = 0
    images_augmented: int = 0
    images_without_candidates: int = 0
    small_objects: int = 0
    split_masks: int = 0
    planned_pastes: int = 0
    pasted: int = 0
    skipped_no_room: int = 0
    skipped_vanished: int = 0

    def __add__(self, other: "PasteCounts") -> "PasteCounts":
        return PasteCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class CopyPasteResult:
    """Output of :func:`copy_paste_small_objects`.

    Attributes:
        image: the augmented image, same shape and dtype as the input (a new tensor).
        target: the input target with the pasted objects appended to every per-object field.
        sources: ``int64 [P]``, for each pasted object the index of the original object it copies.
        counts: what happened, as :class:`PasteCounts` for this one image.
    """

    image: torch.Tensor
    target: Target
    sources: np.ndarray
    counts: PasteCounts


def check_target(image: torch.Tensor, target: Target) -> int:
    """Check an ``(image, target)`` pair for copy-paste; return the number of objects ``N``.

    Needs ``image`` ``Tensor[C, H, W]`` and ``target["masks"]`` ``Tensor[N, H, W]``, with ``boxes`` ``[N, 4]``
    and ``labels`` ``[N]``; ``area`` and ``iscrowd`` ``[N]`` when present.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise ValueError(f"image must be a Tensor[C, H, W], got {type(image).__name__}"
                         f"{' of shape ' + str(tuple(image.shape)) if isinstance(image, torch.Tensor) else ''}; "
                         "fix: apply copy-paste to the image tensor before batching")
    if not isinstance(target, dict) or "masks" not in target:
        raise ValueError("copy-paste needs the objects' masks in target['masks'] (Tensor[N, H, W]); fix: build the "
                         "dataset with masks, e.g. sodlib.data.CocoDetection(..., masks=True)")
    masks = target["masks"]
    height, width = image.shape[-2:]
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3 or tuple(masks.shape[-2:]) != (height, width):
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(f"target['masks'] must be a Tensor[N, {height}, {width}] matching the image, got {shape}; "
                         "fix: resize masks together with the image")
    count = masks.shape[0]
    for key in PER_OBJECT_KEYS:
        if key == "masks" or key not in target:
            if key in ("boxes", "labels") and key not in target:
                raise ValueError(f"target has no '{key}'; fix: pass a torchvision detection target "
                                 "(boxes, labels, masks, and optionally area, iscrowd)")
            continue
        value = target[key]
        if not isinstance(value, torch.Tensor) or value.shape[0] != count:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"target['{key}'] has shape {shape} but target['masks'] holds {count} objects; "
                             "fix: keep every per-object field the same length")
    if "keypoints" in target:
        raise ValueError("target has 'keypoints', which copy-paste cannot carry over; fix: drop them or paste without them")
    return count


def eligible_objects(masks: np.ndarray, areas: np.ndarray, iscrowd: np.ndarray, small_area_max: float) -> tuple[np.ndarray, int, int]:
    """Indices of the objects that may be copied, the number of small non-crowd objects, and how many of those
    are left out for a mask in several pieces (or an empty mask).

    Args:
        masks: ``[N, H, W]`` binary; areas: ``[N]`` annotation areas; iscrowd: ``[N]``.
    """
    small = np.flatnonzero((areas <= small_area_max) & (iscrowd == 0))
    keep = [int(i) for i in small if count_connected_pieces(masks[i]) == 1]
    return np.asarray(keep, dtype=np.int64), len(small), len(small) - len(keep)


def plan_pastes(rng: np.random.Generator, candidates: np.ndarray, strategy: Strategy, count: int) -> np.ndarray:
    """Source index of every paste the strategy asks for, in a random order (``int64 [P]``)."""
    if len(candidates) == 0:
        return np.zeros(0, dtype=np.int64)
    if strategy == "one":
        plan = np.full(count, candidates[rng.integers(len(candidates))])
    elif strategy == "several":
        plan = rng.choice(candidates, size=min(count, len(candidates)), replace=False)
    else:
        plan = np.repeat(candidates, count)
    return rng.permutation(plan).astype(np.int64)


def copy_paste_small_objects(image: torch.Tensor, target: Target, rng: np.random.Generator,
                             settings: CopyPasteSettings = CopyPasteSettings()) -> CopyPasteResult:
    """Paste copies of an image's small objects into the same image (rules: module docstring).

    Args:
        image: ``Tensor[C, H, W]``, float (any range) or uint8; not modified.
        target: torchvision detection target with ``masks`` ``Tensor[N, H, W]``, ``boxes`` ``[N, 4]`` xyxy,
            ``labels`` ``[N]``, optionally ``area`` ``[N]`` (else the mask pixel count is used) and ``iscrowd``.
        rng: every random draw comes from it.
        settings: the strategy and the paper's parameters.

    Returns:
        A :class:`CopyPasteResult`; its target holds the ``N`` original objects unchanged, then the ``P`` pasted
        ones (``boxes`` = each mask's tight box, ``area`` = its pixel count, ``iscrowd`` = 0).
    """
    count_objects = check_target(image, target)
    masks_np = target["masks"].numpy().astype(bool, copy=False)
    areas = (target["area"].numpy().astype(np.float64) if "area" in target
             else masks_np.reshape(count_objects, -1).sum(axis=1).astype(np.float64))
    iscrowd = target["iscrowd"].numpy() if "iscrowd" in target else np.zeros(count_objects, dtype=np.int64)
    candidates, small_count, split_count = eligible_objects(masks_np, areas, iscrowd, settings.small_area_max)
    plan = plan_pastes(rng, candidates, settings.strategy, settings.count)
    counts = PasteCounts(images=1, images_without_candidates=int(len(candidates) == 0), small_objects=small_count,
                         split_masks=split_count, planned_pastes=len(plan))

    source_pixels = image.detach().cpu().numpy().astype(np.float32)  # a copy; the input stays as it was
    # copies are cut from the original pixels; without overlap, pasting never writes on an original object
    canvas = source_pixels.copy() if settings.allow_overlap else source_pixels
    height, width = canvas.shape[-2:]
    occupied = masks_np.any(axis=0) if count_objects else np.zeros((height, width), dtype=bool)
    if settings.allow_overlap:
        occupied = np.zeros_like(occupied)
    source_boxes = {int(i): mask_box(masks_np[i]) for i in np.unique(plan)}
    pasted_masks, pasted_boxes, sources = [], [], []
    for source in plan:
        x1, y1, x2, y2 = source_boxes[int(source)]
        scale = rng.uniform(*settings.scale_range)
        angle = rng.uniform(-settings.max_rotation_degrees, settings.max_rotation_degrees)
        warped = warp_object(source_pixels[:, y1:y2, x1:x2], masks_np[source, y1:y2, x1:x2], scale, angle)
        if warped is None:
            counts.skipped_vanished += 1
            continue
        values, mask = warped
        place = find_place(rng, occupied, mask, settings.border_margin, settings.placement_tries)
        if place is None:
            counts.skipped_no_room += 1
            continue
        top, left = place
        h, w = mask.shape
        region = canvas[:, top:top + h, left:left + w]
        region[:, mask] = values[:, mask]
        if settings.edge_blur is not None:
            blur_seam(canvas, mask, top, left, occupied, settings.edge_blur)
        if not settings.allow_overlap:
            occupied[top:top + h, left:left + w] |= mask
        pasted_masks.append((mask, top, left))
        pasted_boxes.append((left, top, left + w, top + h))
        sources.append(int(source))
    counts.pasted = len(sources)
    counts.images_augmented = int(counts.pasted > 0)

    out_image = _as_image_dtype(canvas, image.dtype)
    out_target = _append_objects(target, pasted_masks, pasted_boxes, sources, (height, width))
    return CopyPasteResult(image=out_image, target=out_target, sources=np.asarray(sources, dtype=np.int64), counts=counts)


def _as_image_dtype(canvas: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.uint8:
        return torch.from_numpy(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))
    return torch.from_numpy(canvas).to(dtype)


def _append_objects(target: Target, pasted_masks: list[tuple[np.ndarray, int, int]], boxes: list[tuple[int, int, int, int]],
                    sources: list[int], size: tuple[int, int]) -> Target:
    """The target with the pasted objects appended (a new dict; the input's tensors are not changed)."""
    out = dict(target)
    if not sources:
        return out
    index = torch.as_tensor(sources, dtype=torch.int64)
    masks = torch.zeros((len(sources), *size), dtype=target["masks"].dtype)
    masks_view = masks.numpy()
    for row, (mask, top, left) in enumerate(pasted_masks):
        masks_view[row, top:top + mask.shape[0], left:left + mask.shape[1]] = mask
    out["masks"] = torch.cat([target["masks"], masks])
    out["boxes"] = torch.cat([target["boxes"], torch.tensor(boxes, dtype=target["boxes"].dtype)])
    out["labels"] = torch.cat([target["labels"], target["labels"][index]])
    if "area" in target:
        areas = torch.tensor([float(m.sum()) for m, _, _ in pasted_masks], dtype=target["area"].dtype)
        out["area"] = torch.cat([target["area"], areas])
    if "iscrowd" in target:
        out["iscrowd"] = torch.cat([target["iscrowd"], torch.zeros(len(sources), dtype=target["iscrowd"].dtype)])
    return out


class SmallObjectCopyPaste:
    """Copy-paste of small objects as a transform on ``(image, target)`` (rules: module docstring).

    Use it as ``sodlib.data.CocoDetection(..., masks=True, transforms=SmallObjectCopyPaste(...))`` or call it on
    ``image`` ``Tensor[C, H, W]`` and a target with ``masks`` ``Tensor[N, H, W]``.

    Args:
        strategy, count: see :class:`CopyPasteSettings`.
        **settings: the other fields of :class:`CopyPasteSettings` (``scale_range``, ``max_rotation_degrees``,
            ``border_margin``, ``allow_overlap``, ``edge_blur``, ``small_area_max``, ``placement_tries``).
        probability: chance that an image is augmented (``1.0``: always, the paper's "aug"; ``0.5`` with 2x
            oversampling: the paper's "original + aug").
        return_masks: keep ``target["masks"]`` in the output; ``False`` drops them after pasting, for box-only
            detectors (Faster R-CNN) that would otherwise resize them for nothing.
        seed: an integer seed for the transform's own ``numpy.random.Generator``.
        generator: a ``numpy.random.Generator`` to draw from, or a ``torch.Generator`` that seeds one.

    Randomness: with neither ``seed`` nor ``generator``, each call seeds its draws from torch's global RNG,
    as torchvision's transforms do, so ``torch.manual_seed`` makes runs repeatable and ``DataLoader`` workers
    (which seed torch per worker) draw differently. With a ``seed`` or ``generator``, the transform's stream is
    mixed with the worker's torch seed inside a ``DataLoader`` worker, so workers never repeat each other.

    ``counts`` (:class:`PasteCounts`) sums what the transform did in this process (each ``DataLoader`` worker
    keeps its own); ``last_sources`` holds the source indices of the latest call's pasted objects.
    """

    def __init__(self, strategy: Strategy = "all", count: int = 1, *, probability: float = 1.0,
                 return_masks: bool = True, seed: int | None = None,
                 generator: np.random.Generator | torch.Generator | None = None, **settings: Any):
        unknown = sorted(set(settings) - set(SETTING_NAMES))
        if unknown:
            raise ValueError(f"unknown copy-paste setting(s) {', '.join(unknown)}; known: probability, return_masks, "
                             f"seed, generator and the fields of CopyPasteSettings: {', '.join(SETTING_NAMES)}")
        self.settings = CopyPasteSettings(strategy=strategy, count=count, **settings)
        if not _is_number(probability) or not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability={probability!r} must be in [0, 1] (1.0: augment every image; 0.5 with "
                             "2x oversampling: the paper's original + augmented setting)")
        self.probability = float(probability)
        if not isinstance(return_masks, bool):
            raise ValueError(f"return_masks={return_masks!r} must be True or False")
        self.return_masks = return_masks
        if seed is not None and generator is not None:
            raise ValueError("pass either seed or generator, not both")
        if seed is not None and (not _is_int(seed) or seed < 0):
            raise ValueError(f"seed={seed!r} must be a non-negative integer")
        if generator is not None and not isinstance(generator, (np.random.Generator, torch.Generator)):
            raise ValueError(f"generator must be a numpy.random.Generator or a torch.Generator, got {type(generator).__name__}")
        if isinstance(generator, torch.Generator):
            generator = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        self._rng: np.random.Generator | None = np.random.default_rng(seed) if seed is not None else generator
        self._worker_seed: int | None = None
        self.counts = PasteCounts()
        self.last_sources = np.zeros(0, dtype=np.int64)

    def _next_rng(self) -> np.random.Generator:
        if self._rng is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        worker = torch.utils.data.get_worker_info()
        if worker is not None and worker.seed != self._worker_seed:
            # a copy of this transform in a DataLoader worker: give it its own stream
            self._worker_seed = worker.seed
            self._rng = np.random.default_rng([int(self._rng.integers(2**62)), worker.seed])
        return self._rng

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        check_target(image, target)
        rng = self._next_rng()
        self.last_sources = np.zeros(0, dtype=np.int64)
        if rng.random() >= self.probability:
            self.counts += PasteCounts(images=1)
            return image, self._output_target(target)
        result = copy_paste_small_objects(image, target, rng, self.settings)
        self.counts += result.counts
        self.last_sources = result.sources
        return result.image, self._output_target(result.target)

    def _output_target(self, target: Target) -> Target:
        if self.return_masks:
            return target
        return {key: value for key, value in target.items() if key != "masks"}

    def __repr__(self) -> str:
        s = self.settings
        return (f"SmallObjectCopyPaste(strategy={s.strategy!r}, count={s.count}, probability={self.probability}, "
                f"scale_range={s.scale_range}, max_rotation_degrees={s.max_rotation_degrees}, "
                f"border_margin={s.border_margin}, allow_overlap={s.allow_overlap}, edge_blur={s.edge_blur}, "
                f"return_masks={self.return_masks})")
