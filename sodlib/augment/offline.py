"""Offline copy-paste: write an augmented COCO dataset (images + instances json) once, train from it later.

Kisantal et al. (2019, section 5.2, Table 4) compare two settings, both available here:

- ``"augmented"``: every image holding a small object is replaced by its augmented copy (same image id, a new
  file); the paper's "aug". Oversampling that output 2x (``python -m sodlib oversample``) is "aug +
  oversample 2x".
- ``"original+augmented"`` (default): every image holding a small object is kept as it is and an augmented
  copy is added (new image id, ``"copy_pasted_from"``: the original image id); the paper's best setting,
  equivalent to 2x oversampling with augmentation of the duplicates (``p = 0.5``).

Images without small objects are kept as they are. An image with small objects where nothing could be pasted
(no copyable object, no free place) still gets its copy in ``"original+augmented"``, pointing at the original
file, so that the setting stays a 2x oversampling of those images.

Output under ``out_dir``: ``instances.json`` and ``images/`` (originals copied, so that editing an output image
never edits the dataset; hard-linked with ``link_images=True``, which saves the space but shares the files;
augmented images as ``<name>_copy_paste.png``, lossless, or ``.jpg``). Pasted annotations carry a
compressed RLE ``segmentation``, ``area`` = its pixel count, ``bbox`` = its tight box, the source's
``category_id``, ``iscrowd = 0`` and ``"copy_pasted_from"``: the source annotation's id. Original annotations
are written unchanged (copies on a new image get new ids and the new ``image_id`` only).

Nothing is lost or written elsewhere: ``out_dir`` must be apart from the inputs (not the json or the image
folder, not inside the image folder, not holding either), and every ``file_name`` must be a relative path that
stays inside the image folder (no ``..``, not absolute), so that every output lies under ``out_dir``; both are
checked before any work. Everything is written to a work folder ``.<out name>-<8 characters>`` beside
``out_dir`` and renamed into place at the end: a failure, Ctrl-C or SIGTERM leaves nothing half-written (the
work folder is removed, then SIGTERM ends the process as it asks). Work folders that a killed run (SIGKILL, a
lost machine) left for the same ``out_dir`` are removed, with a warning, when the next run starts.

Image ``i`` draws from ``numpy.random.default_rng([seed, i])``, so the output does not depend on the order of
the images.
"""
from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from tqdm.auto import tqdm

from sodlib.augment.copy_paste import CopyPasteSettings, PasteCounts, copy_paste_small_objects
from sodlib.augment.masks import is_small_object
from sodlib.data.coco import CocoFormatError, check_image_files, load_coco
from sodlib.data.files import (check_output_apart_from_inputs, remove_leftover_work_folders, sigterm_unwinds,
                               work_folder_beside, write_json_atomically)

logger = logging.getLogger(__name__)

SETTINGS = ("augmented", "original+augmented")
IMAGE_FORMATS = {"png": ".png", "jpg": ".jpg"}


@dataclass
class OfflineCopyPasteResult:
    """What :func:`copy_paste_coco` wrote: ``annotations`` (json path), ``image_dir``, ``images`` (records
    written), ``augmented_images`` (files with pasted objects), ``annotations_written``, ``counts``, and
    ``leftovers_removed``: ``[(folder, bytes)]`` of the work folders of interrupted runs removed first."""

    annotations: Path
    image_dir: Path
    images: int
    augmented_images: int
    annotations_written: int
    counts: PasteCounts
    leftovers_removed: list[tuple[Path, int]] = field(default_factory=list)


def _check_arguments(setting: str, image_format: str, seed: int, out_dir: Path, overwrite: bool) -> None:
    if setting not in SETTINGS:
        raise ValueError(f"setting={setting!r} is unknown; use 'original+augmented' (keep each image and add its "
                         "augmented copy, the paper's best) or 'augmented' (replace it)")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format={image_format!r}; use 'png' (lossless) or 'jpg'")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    if out_dir.exists() and not overwrite:
        raise ValueError(f"{out_dir} already exists; fix: pass overwrite=True (--overwrite) or another output folder")


def _check_masks(coco: COCO, source: str) -> None:
    missing = [a["id"] for a in coco.dataset["annotations"] if not a.get("segmentation")]
    if missing:
        raise CocoFormatError(source, [f"{len(missing)} annotation(s) have no 'segmentation' (ids {missing[:5]}); "
                                       "copy-paste cuts objects by their masks and keeps copies off every other "
                                       "object's mask; fix: use a dataset with instance masks"])


def _read_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _target_of(coco: COCO, annotations: list[dict]) -> dict:
    """The target :func:`copy_paste_small_objects` needs, for a non-empty list of annotations; labels are the
    COCO category ids."""
    return {
        "masks": torch.from_numpy(np.stack([coco.annToMask(a) for a in annotations])),
        "boxes": torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                               for a in annotations], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([a["category_id"] for a in annotations], dtype=torch.int64),
        "area": torch.tensor([float(a["area"]) for a in annotations], dtype=torch.float64),
        "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in annotations], dtype=torch.int64),
    }


def pasted_annotation(mask: np.ndarray, category_id: int, source_id: int) -> dict:
    """A COCO annotation (without ``id`` / ``image_id``) for a pasted ``[H, W]`` mask, as compressed RLE."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return {"category_id": int(category_id), "segmentation": {"counts": rle["counts"].decode("ascii"), "size": list(rle["size"])},
            "area": float(mask_utils.area(rle)), "bbox": [x, y, w, h], "iscrowd": 0, "copy_pasted_from": int(source_id)}


def _place_file(source: Path, destination: Path, link: bool) -> None:
    """Copy ``source`` to ``destination`` (:func:`shutil.copy2`), or hard-link it with ``link`` (copied where
    the file system cannot link)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, destination)
            return
        except OSError:
            pass
    shutil.copy2(source, destination)


def _augmented_name(file_name: str, image_format: str) -> str:
    path = Path(file_name)
    return str(path.with_name(f"{path.stem}_copy_paste{IMAGE_FORMATS[image_format]}"))


@dataclass
class _Job:
    """What every image's work needs (module-level in each worker process, set once by :func:`_start_worker`)."""

    coco: COCO
    image_dir: Path
    out_images: Path
    settings: CopyPasteSettings
    seed: int
    image_format: str


_JOB: _Job | None = None


def _start_worker(job: _Job | None, worker_process: bool = False) -> None:
    global _JOB
    _JOB = job
    if worker_process:
        torch.set_num_threads(1)  # one image per process; no thread pools inside forked workers


def _augment_image(image_id: int) -> tuple[int, str | None, list[dict], PasteCounts]:
    """Copy-paste one image: ``(image id, augmented file name or None, pasted annotations, counts)``.

    The augmented image is written under the job's output folder; annotations get their ids later, in order.
    """
    job = _JOB
    assert job is not None, "_start_worker sets the job first"
    image = job.coco.imgs[image_id]
    annotations = job.coco.imgToAnns.get(image_id, [])
    if not any(is_small_object(a, job.settings.small_area_max) for a in annotations):
        return image_id, None, [], PasteCounts(images=1, images_without_candidates=1)
    rng = np.random.default_rng([job.seed, int(image_id)])
    pixels = torch.from_numpy(np.ascontiguousarray(_read_pixels(job.image_dir / image["file_name"]).transpose(2, 0, 1)))
    result = copy_paste_small_objects(pixels, _target_of(job.coco, annotations), rng, job.settings)
    pasted = []
    for mask, source in zip(result.target["masks"][len(annotations):].numpy(), result.sources):
        source_annotation = annotations[int(source)]
        pasted.append(pasted_annotation(mask, source_annotation["category_id"], source_annotation["id"]))
    if not pasted:
        return image_id, None, [], result.counts
    new_file = _augmented_name(image["file_name"], job.image_format)
    destination = job.out_images / new_file
    destination.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(result.image.numpy().transpose(1, 2, 0))
    Image.fromarray(array).save(destination, **({"quality": 95} if job.image_format == "jpg" else {}))
    return image_id, new_file, pasted, result.counts


def copy_paste_coco(annotations: str | os.PathLike, image_dir: str | os.PathLike, out_dir: str | os.PathLike,
                    settings: CopyPasteSettings = CopyPasteSettings(), *, setting: str = "original+augmented",
                    seed: int = 0, image_format: str = "png", overwrite: bool = False, link_images: bool = False,
                    workers: int = 1, progress: bool = True) -> OfflineCopyPasteResult:
    """Write a copy-pasted COCO dataset to ``out_dir`` (``instances.json`` + ``images/``; module docstring).

    The inputs are only read: ``out_dir`` must be apart from them, and the images kept as they are are copied
    into ``out_dir/images``, unless ``link_images``.

    Args:
        annotations: the input instances json (must have masks; every ``file_name`` relative, without ``..``).
        image_dir: the folder of its images (every file is checked up front).
        out_dir: the output folder; must not exist unless ``overwrite``, and must not be an input, lie inside
            the image folder or hold an input.
        settings: strategy, count and the paste rules (:class:`sodlib.augment.CopyPasteSettings`).
        setting: ``"original+augmented"`` or ``"augmented"``.
        seed: image ``i`` draws from ``numpy.random.default_rng([seed, i])``.
        image_format: ``"png"`` or ``"jpg"`` (quality 95) for the augmented images.
        overwrite: replace an existing ``out_dir`` (only once the new one is complete).
        link_images: hard-link the unchanged images instead of copying them: no extra space, but an output
            file and its source are then the same file, so editing one edits the other.
        workers: processes doing the images (the output is the same bytes for any number).
        progress: show a progress bar.

    Raises:
        ValueError: a bad argument, or ``out_dir`` not apart from the inputs; FileNotFoundError: a missing file
        or folder; CocoFormatError: a malformed json, a ``file_name`` leading out of the image folder, or
        annotations without masks. All before anything is written.
    """
    out_dir = Path(out_dir)
    if not isinstance(settings, CopyPasteSettings):
        raise ValueError(f"settings must be a sodlib.augment.CopyPasteSettings, got {type(settings).__name__}")
    image_dir = Path(image_dir)
    check_output_apart_from_inputs(out_dir, [annotations, image_dir], what="the output folder (out_dir, --out)")
    _check_arguments(setting, image_format, seed, out_dir, overwrite)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers={workers!r} must be an integer >= 1 (processes doing the images)")
    coco = load_coco(annotations)  # refuses a file_name that would lead outside the image folder (and out_dir)
    check_image_files(coco.dataset, image_dir, source=str(annotations))
    _check_masks(coco, str(annotations))
    data = coco.dataset
    image_ids = sorted(coco.imgs)
    workers = min(int(workers), max(len(image_ids), 1))

    leftovers = remove_leftover_work_folders(out_dir)
    with sigterm_unwinds(), work_folder_beside(out_dir) as temporary:  # removed on any failure, Ctrl-C or SIGTERM
        (temporary / "images").mkdir()
        job = _Job(coco, image_dir, temporary / "images", settings, int(seed), image_format)
        images_out, annotations_out = [], []
        next_image_id = max(image_ids, default=0) + 1
        next_annotation_id = max((annotation["id"] for annotation in data["annotations"]), default=0) + 1
        counts = PasteCounts()
        augmented_files = 0
        pool = multiprocessing.get_context().Pool(workers, _start_worker, (job, True)) if workers > 1 else None
        if pool is None:
            _start_worker(job)
        try:
            outcomes = pool.imap(_augment_image, image_ids, chunksize=8) if pool else map(_augment_image, image_ids)
            for image_id, new_file, pasted, image_counts in tqdm(outcomes, total=len(image_ids), desc="copy-paste",
                                                                 unit="img", disable=not progress):
                image = coco.imgs[image_id]
                annotations_of_image = coco.imgToAnns.get(image_id, [])
                has_small = any(is_small_object(a, settings.small_area_max) for a in annotations_of_image)
                counts += image_counts
                augmented_files += int(new_file is not None)
                if setting == "original+augmented" or new_file is None:
                    _place_file(image_dir / image["file_name"], temporary / "images" / image["file_name"], link_images)
                    images_out.append(copy.deepcopy(image))
                    annotations_out.extend(copy.deepcopy(annotations_of_image))
                if not has_small or (setting == "augmented" and new_file is None):
                    continue
                if setting == "augmented":
                    record = {**copy.deepcopy(image), "file_name": new_file}
                    originals = copy.deepcopy(annotations_of_image)
                else:
                    record = {**copy.deepcopy(image), "id": next_image_id, "copy_pasted_from": image_id,
                              "file_name": new_file or image["file_name"]}
                    next_image_id += 1
                    originals = []
                    for annotation in annotations_of_image:
                        originals.append({**copy.deepcopy(annotation), "id": next_annotation_id, "image_id": record["id"]})
                        next_annotation_id += 1
                images_out.append(record)
                annotations_out.extend(originals)
                for annotation in pasted:
                    annotations_out.append({"id": next_annotation_id, "image_id": record["id"], **annotation})
                    next_annotation_id += 1
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            _start_worker(None)

        document = {key: copy.deepcopy(value) for key, value in data.items() if key not in ("images", "annotations")}
        document["images"], document["annotations"] = images_out, annotations_out
        write_json_atomically(document, temporary / "instances.json")
        _move_into_place(temporary, out_dir, overwrite)
    logger.info("wrote %s: %d images (%d augmented), %d annotations; %s", out_dir, len(images_out), augmented_files,
                len(annotations_out), counts.as_dict())
    return OfflineCopyPasteResult(annotations=out_dir / "instances.json", image_dir=out_dir / "images",
                                  images=len(images_out), augmented_images=augmented_files,
                                  annotations_written=len(annotations_out), counts=counts, leftovers_removed=leftovers)


def _move_into_place(temporary: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished ``temporary`` folder to ``out_dir``; an old ``out_dir`` is moved into a work folder
    of its own first and removed only after."""
    if out_dir.exists():
        if not overwrite:
            raise ValueError(f"{out_dir} appeared while writing; fix: pass overwrite=True or another output folder")
        with work_folder_beside(out_dir) as old:
            os.replace(out_dir, old / "previous")
            os.replace(temporary, out_dir)
    else:
        os.replace(temporary, out_dir)
