"""Size-aware oversampling: images that hold small objects are seen ``factor`` times per epoch.

Kisantal et al. (2019, sections 4 and 5.1, Table 3) note that only about half of COCO's training images
hold any small object, and raise AP on small objects by showing those images 2, 3 or 4 times as often (3x
was best for small objects; large objects lose a little at every factor). An image "holds a small object"
when at least one of its non-crowd annotations has ``area <= 32^2`` (COCO's small bin by the annotation's
mask area, the edge inclusive as in COCOeval; crowd regions are not objects).

Three ways to get it, with the same rule:

- :class:`SmallObjectOversampler`, a ``torch.utils.data.Sampler`` for any :mod:`sodlib.data` dataset: each
  epoch yields every index once, plus ``factor - 1`` more times for the images with small objects, shuffled.
- :class:`OversampledDataset`, a dataset view listing those items ``factor`` times, for training loops that
  bring their own sampler (``sodlib.engine.train`` shuffles with a ``DistributedSampler``);
- :func:`oversample_coco` / :func:`write_oversampled_coco`, the offline mode the paper used: a COCO json in
  which each image with small objects appears ``factor`` times (the copies get new image and annotation ids,
  point at the same file and carry ``"oversampled_from"``: the original image id).

A fractional factor ``f`` repeats every such image ``floor(f)`` times and ``round((f - floor(f)) * n)``
of the ``n`` images with small objects once more, drawn at random (per epoch for the sampler), so the
repeat rate is ``f`` up to rounding and the epoch length is fixed. Annotations are never changed.
"""
from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from sodlib.augment.masks import SMALL_AREA_MAX, is_small_object
from sodlib.data.coco import load_coco
from sodlib.data.files import check_output_apart_from_inputs, write_json_atomically

logger = logging.getLogger(__name__)


def check_factor(factor: Any) -> float:
    """``factor`` as a float, or a ValueError naming the fix (it must be a finite number >= 1)."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float, np.integer, np.floating)) or not math.isfinite(factor):
        raise ValueError(f"factor={factor!r} must be a number >= 1 (the paper uses 2, 3 and 4)")
    if factor < 1:
        raise ValueError(f"factor={factor!r} is below 1; an oversampling factor is how many times an image with "
                         "small objects is seen per epoch, so use 1 (no oversampling) or more (the paper: 2, 3, 4)")
    return float(factor)


def small_object_flags(dataset: Any, small_area_max: float = SMALL_AREA_MAX) -> np.ndarray:
    """``bool [len(dataset)]``: does item ``i`` hold at least one small non-crowd object?

    Works for :class:`sodlib.data.CocoDetection` (its ``annotations_of``), for a ``torch.utils.data.Subset`` or
    ``ConcatDataset`` of such datasets, and for any dataset with ``annotations_of(index) -> list[dict]``.
    Only the annotations are read, never the images.
    """
    if isinstance(dataset, torch.utils.data.Subset):
        return small_object_flags(dataset.dataset, small_area_max)[np.asarray(dataset.indices, dtype=np.int64)]
    if isinstance(dataset, torch.utils.data.ConcatDataset):
        parts = [small_object_flags(part, small_area_max) for part in dataset.datasets]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
    if not hasattr(dataset, "annotations_of"):
        raise ValueError(f"cannot tell which items of a {type(dataset).__name__} hold small objects; fix: use a "
                         "sodlib.data.CocoDetection (or a Subset / ConcatDataset of them), or pass "
                         "has_small_objects=[bool per item]")
    return np.array([any(is_small_object(a, small_area_max) for a in dataset.annotations_of(i))
                     for i in range(len(dataset))], dtype=bool)


def images_with_small_objects(data: Mapping, small_area_max: float = SMALL_AREA_MAX) -> np.ndarray:
    """``bool [len(data["images"])]``: does each image of a COCO dict hold a small non-crowd object?"""
    small_images = {a["image_id"] for a in data["annotations"] if is_small_object(a, small_area_max)}
    return np.array([image["id"] in small_images for image in data["images"]], dtype=bool)


def oversampled_length(flags: np.ndarray, factor: float) -> int:
    """Items per epoch: ``N_other + floor(f) * N_small + round(frac(f) * N_small)``."""
    small = int(np.count_nonzero(flags))
    whole = math.floor(factor)
    return len(flags) - small + whole * small + int(round((factor - whole) * small))


def _repeats(rng: np.random.Generator, flags: np.ndarray, factor: float) -> np.ndarray:
    """``int64 [N]`` times each item is used: 1, or ``floor(f)`` (+1 for a random ``round(frac * n)``)."""
    repeats = np.ones(len(flags), dtype=np.int64)
    small = np.flatnonzero(flags)
    whole = math.floor(factor)
    repeats[small] = whole
    extra = int(round((factor - whole) * len(small)))
    if extra:
        repeats[rng.choice(small, size=extra, replace=False)] += 1
    return repeats


class SmallObjectOversampler(torch.utils.data.Sampler[int]):
    """Yields dataset indices so that images holding small objects come ``factor`` times per epoch.

    Args:
        dataset: a :mod:`sodlib.data` dataset (see :func:`small_object_flags`); not needed when
            ``has_small_objects`` is given.
        factor: how many times an image with small objects is used per epoch (>= 1; 2, 3, 4 in the paper).
        has_small_objects: ``bool`` per item, to skip reading the annotations (or for other datasets).
        shuffle: shuffle each epoch's indices (else: in order, each repeated in place).
        seed: seed of the sampler's own ``torch.Generator``.
        generator: a ``torch.Generator`` to draw from instead (as ``RandomSampler``'s).
        small_area_max: largest small area (COCO: ``32^2``).

    With neither ``seed`` nor ``generator``, each epoch draws its permutation from a seed taken from torch's
    global RNG, as ``RandomSampler`` does. ``len(sampler)`` is the number of indices per epoch:
    ``N_other + round(factor * N_small)``. ``repeats_per_item`` is the last epoch's count per index.
    """

    def __init__(self, dataset: Any = None, factor: float = 2.0, *, has_small_objects: Sequence[bool] | None = None,
                 shuffle: bool = True, seed: int | None = None, generator: torch.Generator | None = None,
                 small_area_max: float = SMALL_AREA_MAX):
        self.factor = check_factor(factor)
        if seed is not None and generator is not None:
            raise ValueError("pass either seed or generator, not both")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed={seed!r} must be a non-negative integer")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}; "
                             "fix: torch.Generator().manual_seed(0), or pass seed=0")
        if has_small_objects is not None:
            flags = np.asarray(has_small_objects)
            if flags.ndim != 1 or flags.dtype != bool:
                raise ValueError("has_small_objects must be a flat sequence of booleans, one per dataset item")
            if dataset is not None and len(flags) != len(dataset):
                raise ValueError(f"has_small_objects holds {len(flags)} flags for a dataset of {len(dataset)} items; "
                                 "fix: one flag per item")
        elif dataset is None:
            raise ValueError("pass the dataset, or has_small_objects=[bool per item]")
        else:
            flags = small_object_flags(dataset, small_area_max)
        self.has_small_objects = flags
        self.shuffle = bool(shuffle)
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        self.generator = generator
        self.repeats_per_item = np.ones(len(flags), dtype=np.int64)
        small = int(flags.sum())
        self._length = oversampled_length(flags, self.factor)
        logger.info("oversampling %d of %d images with small objects %.2fx: %d indices per epoch", small,
                    len(flags), self.factor, self._length)

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[int]:
        if self.generator is None:
            seed = int(torch.randint(0, 2**62, (1,)))
            generator = torch.Generator().manual_seed(seed)
        else:
            generator = self.generator
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        self.repeats_per_item = _repeats(rng, self.has_small_objects, self.factor)
        indices = np.repeat(np.arange(len(self.has_small_objects)), self.repeats_per_item)
        if self.shuffle:
            indices = indices[torch.randperm(len(indices), generator=generator).numpy()]
        return iter(indices.tolist())


class OversampledDataset(torch.utils.data.Dataset):
    """A view of ``dataset`` in which each item holding a small object appears ``factor`` times (the paper's
    offline copies, without writing a file), for training loops that bring their own sampler.

    Item ``i`` of the view is ``dataset[indices[i]]``; ``indices`` lists every item once, the items with small
    objects ``floor(factor)`` times in a row, and for a fractional factor ``round(frac * N_small)`` of them
    (drawn with ``seed``) once more. The loop's sampler does the shuffling. ``annotations_of`` passes through,
    so :func:`small_object_flags` works on the view.

    Args:
        dataset: a :mod:`sodlib.data` dataset (see :func:`small_object_flags`).
        factor: >= 1. has_small_objects: optional precomputed flags. seed: picks the fractional extras.
    """

    def __init__(self, dataset: Any, factor: float, *, has_small_objects: Sequence[bool] | None = None, seed: int = 0,
                 small_area_max: float = SMALL_AREA_MAX):
        self.factor = check_factor(factor)
        flags = small_object_flags(dataset, small_area_max) if has_small_objects is None else np.asarray(has_small_objects)
        if flags.ndim != 1 or flags.dtype != bool or len(flags) != len(dataset):
            raise ValueError(f"has_small_objects must hold one boolean per item ({len(dataset)}); fix: pass "
                             "small_object_flags(dataset) or leave it out")
        self.dataset = dataset
        self.has_small_objects = flags
        self.repeats_per_item = _repeats(np.random.default_rng(seed), flags, self.factor)
        self.indices = np.repeat(np.arange(len(flags)), self.repeats_per_item)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[int(self.indices[index])]

    def annotations_of(self, index: int) -> list[dict]:
        return self.dataset.annotations_of(int(self.indices[index]))


def oversample_coco(data: Mapping, factor: float, seed: int = 0, small_area_max: float = SMALL_AREA_MAX) -> dict:
    """A COCO dict in which each image holding a small object appears ``factor`` times (module docstring).

    Args:
        data: a valid COCO instances dict (e.g. ``load_coco(path).dataset``); not modified.
        factor: >= 1; a fractional part picks that share of the images for one more copy, by ``seed``.

    Returns:
        A new dict: the original images and annotations unchanged and first, then the copies. A copy of image
        ``i`` gets a new id (after the largest id), the same ``file_name`` and ``"oversampled_from": i``; its
        annotations are the originals with new ids and the new ``image_id``, nothing else changed.
    """
    factor = check_factor(factor)
    by_image: dict[int, list[dict]] = {}
    for annotation in data["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    flags = images_with_small_objects(data, small_area_max)
    repeats = _repeats(np.random.default_rng(seed), flags, factor)
    out = {key: copy.deepcopy(value) for key, value in data.items() if key not in ("images", "annotations")}
    images = copy.deepcopy(list(data["images"]))
    annotations = copy.deepcopy(list(data["annotations"]))
    next_image_id = max((image["id"] for image in images), default=0) + 1
    next_annotation_id = max((annotation["id"] for annotation in annotations), default=0) + 1
    for image, times in zip(data["images"], repeats):
        for _ in range(int(times) - 1):
            images.append({**copy.deepcopy(image), "id": next_image_id, "oversampled_from": image["id"]})
            for annotation in by_image.get(image["id"], []):
                annotations.append({**copy.deepcopy(annotation), "id": next_annotation_id, "image_id": next_image_id})
                next_annotation_id += 1
            next_image_id += 1
    out["images"], out["annotations"] = images, annotations
    return out


def write_oversampled_coco(annotations: str | os.PathLike, out: str | os.PathLike, factor: float, *, seed: int = 0,
                           overwrite: bool = False, small_area_max: float = SMALL_AREA_MAX) -> tuple[Path, int, int]:
    """Read a COCO json, oversample it (:func:`oversample_coco`) and write the result atomically.

    The images are not copied: the written json names the same files, so use it with the same image folder.
    Returns ``(out path, images with small objects, images written)``. Raises ValueError for a bad factor, an
    ``out`` that is the input or a folder holding it (:func:`sodlib.data.files.check_output_apart_from_inputs`)
    or an existing ``out`` without ``overwrite`` (before reading anything), and :class:`sodlib.data.CocoFormatError`
    for a malformed input.
    """
    factor = check_factor(factor)
    out = Path(out)
    check_output_apart_from_inputs(out, [annotations], what="the output file (out, --out)")
    if out.is_dir():
        raise ValueError(f"the output {out} is a folder; fix: pass the path of the json file to write, "
                         f"e.g. {out / 'instances_oversampled.json'}")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} already exists; fix: pass overwrite=True (--overwrite) or another output path")
    data = load_coco(annotations).dataset
    document = oversample_coco(data, factor, seed, small_area_max)
    with_small = int(images_with_small_objects(data, small_area_max).sum())
    write_json_atomically(document, out)
    logger.info("wrote %s: %d images (%d with small objects, %.2fx)", out, len(document["images"]), with_small, factor)
    return out, with_small, len(document["images"])
