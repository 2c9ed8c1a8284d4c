"""Reading and validating COCO instances files.

``load_coco`` checks the whole file before anything else happens and reports every problem it finds
(up to a limit) in one :class:`CocoFormatError`, each naming the record, the field and the fix. Only a
file that passes is handed to pycocotools, whose own loader would fail later, deep inside an
evaluation, or not at all.

What is checked:

- top level: an object with ``images``, ``annotations`` and ``categories`` lists;
- images: ``id`` (integer, unique), ``file_name``, ``width`` and ``height`` (positive);
- categories: ``id`` (integer, unique) and ``name``;
- annotations: ``id`` (integer, unique), ``image_id`` and ``category_id`` that exist, ``bbox`` as four
  finite numbers ``[x, y, width, height]`` with ``width >= 0`` and ``height >= 0``, ``area >= 0``,
  ``iscrowd`` 0 or 1 (a missing ``iscrowd`` is read as 0, as most converters mean it), and for crowd
  annotations an RLE ``segmentation``;
- with ``image_dir`` and ``check_images=True``: every image file exists.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

from pycocotools.coco import COCO

logger = logging.getLogger(__name__)

MAX_REPORTED_PROBLEMS = 10


class CocoFormatError(ValueError):
    """A COCO file that cannot be used, with every problem found listed in the message."""

    def __init__(self, source: str, problems: list[str], total: int | None = None):
        self.source = source
        self.problems = problems
        total = len(problems) if total is None else total
        lines = [f"{source}: {total} problem(s) in the COCO data:"] + [f"  - {p}" for p in problems]
        if total > len(problems):
            lines.append(f"  ... and {total - len(problems)} more of the same kinds")
        super().__init__("\n".join(lines))


class _Problems:
    """Collects problem descriptions, keeping the first few and counting the rest."""

    def __init__(self, limit: int = MAX_REPORTED_PROBLEMS):
        self.limit = limit
        self.kept: list[str] = []
        self.total = 0

    def add(self, message: str) -> None:
        self.total += 1
        if len(self.kept) < self.limit:
            self.kept.append(message)

    def raise_if_any(self, source: str) -> None:
        if self.total:
            raise CocoFormatError(source, self.kept, self.total)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_top_level(data: Any, problems: _Problems) -> bool:
    if isinstance(data, list):
        problems.add("the file holds a list, which is a COCO *results* file (detections), not an instances file; "
                     "fix: pass the ground-truth instances json (an object with images, annotations and categories)")
        return False
    if not isinstance(data, dict):
        problems.add(f"the top level is a {type(data).__name__}; fix: an instances json is an object with "
                     "'images', 'annotations' and 'categories' lists")
        return False
    ok = True
    for key in ("images", "annotations", "categories"):
        if key not in data:
            problems.add(f"missing top-level key '{key}'; fix: an instances json needs 'images', 'annotations' "
                         "and 'categories' lists (an empty list is allowed for 'annotations')")
            ok = False
        elif not isinstance(data[key], list):
            problems.add(f"top-level '{key}' is a {type(data[key]).__name__}; fix: make it a list of objects")
            ok = False
    return ok


def _records_with_ids(records: list, section: str, shape: str, problems: _Problems, ids: set[int]):
    """Yield ``(where, record)`` for each record of ``section`` that is an object with a new integer ``id``.

    Records that are not objects, lack an integer id or repeat one are reported and skipped; the ids seen
    are added to ``ids``.
    """
    for index, record in enumerate(records):
        where = f"{section}[{index}]"
        if not isinstance(record, dict):
            problems.add(f"{where} is not an object; fix: each entry of '{section}' is {shape}")
            continue
        record_id = record.get("id")
        if not _is_int(record_id):
            problems.add(f"{where}: 'id' is {record_id!r}; fix: give every entry of '{section}' a unique integer id")
            continue
        where = f"{where} (id {record_id})"
        if record_id in ids:
            problems.add(f"{where}: duplicate id; fix: ids in '{section}' must be unique")
            continue
        ids.add(record_id)
        yield where, record


def _check_images(images: list, problems: _Problems) -> set[int]:
    ids: set[int] = set()
    for where, image in _records_with_ids(images, "images", "{'id', 'file_name', 'width', 'height'}", problems, ids):
        if not isinstance(image.get("file_name"), str) or not image.get("file_name"):
            problems.add(f"{where}: missing 'file_name'; fix: the image's file name relative to the image folder")
        for key in ("width", "height"):
            value = image.get(key)
            if not _is_number(value) or value <= 0:
                problems.add(f"{where}: '{key}' is {value!r}; fix: the image's {key} in pixels, a positive number")
    return ids


def _check_categories(categories: list, problems: _Problems) -> set[int]:
    ids: set[int] = set()
    for where, category in _records_with_ids(categories, "categories", "{'id', 'name'}", problems, ids):
        if not isinstance(category.get("name"), str):
            problems.add(f"{where}: missing 'name'; fix: add the category's name")
    return ids


def _check_annotation(annotation: Mapping, where: str, image_ids: set[int], category_ids: set[int],
                      problems: _Problems) -> None:
    if annotation.get("image_id") not in image_ids:
        problems.add(f"{where}: image_id {annotation.get('image_id')!r} is not in 'images'; "
                     "fix: point it at an existing image id or add that image")
    if annotation.get("category_id") not in category_ids:
        problems.add(f"{where}: category_id {annotation.get('category_id')!r} is not in 'categories'; "
                     "fix: point it at an existing category id or add that category")
    bbox = annotation.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        problems.add(f"{where}: 'bbox' is {bbox!r}; fix: four finite numbers [x, y, width, height] in pixels")
    else:
        if bbox[2] < 0:
            problems.add(f"{where}: bbox width is {bbox[2]} (negative); fix: COCO boxes are [x, y, width, height] "
                         "with width >= 0 (a box given as [x1, y1, x2, y2] must be converted)")
        if bbox[3] < 0:
            problems.add(f"{where}: bbox height is {bbox[3]} (negative); fix: COCO boxes are [x, y, width, height] "
                         "with height >= 0 (a box given as [x1, y1, x2, y2] must be converted)")
    area = annotation.get("area")
    if not _is_number(area) or area < 0:
        problems.add(f"{where}: 'area' is {area!r}; fix: the object's mask area in pixels (pycocotools.mask.area of "
                     "its segmentation), or its box width * height when there is no mask")
    iscrowd = annotation.get("iscrowd", 0)
    if iscrowd not in (0, 1) or isinstance(iscrowd, bool):
        problems.add(f"{where}: 'iscrowd' is {iscrowd!r}; fix: 0 for a single object, 1 for a crowd region")
    elif iscrowd == 1 and not isinstance(annotation.get("segmentation"), dict):
        problems.add(f"{where}: a crowd annotation needs an RLE 'segmentation' ({{'counts', 'size'}}); "
                     "fix: encode the crowd region as RLE or set iscrowd to 0")


def _check_annotations(annotations: list, image_ids: set[int], category_ids: set[int], problems: _Problems) -> None:
    shape = "{'id', 'image_id', 'category_id', 'bbox', 'area', 'iscrowd', 'segmentation'}"
    for where, annotation in _records_with_ids(annotations, "annotations", shape, problems, set()):
        _check_annotation(annotation, where, image_ids, category_ids, problems)


def validate_coco(data: Any, source: str = "COCO data") -> None:
    """Raise :class:`CocoFormatError` listing what is wrong with an instances dict; return None if it is valid."""
    problems = _Problems()
    if _check_top_level(data, problems):
        image_ids = _check_images(data["images"], problems)
        category_ids = _check_categories(data["categories"], problems)
        _check_annotations(data["annotations"], image_ids, category_ids, problems)
    problems.raise_if_any(source)


def check_image_files(data: Mapping, image_dir: str | os.PathLike, source: str = "COCO data") -> None:
    """Raise :class:`CocoFormatError` if any image's ``file_name`` is missing under ``image_dir``."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir} does not exist; fix: pass the folder that holds the "
                                f"images named in {source}")
    present = set(os.listdir(image_dir))
    problems = _Problems()
    for image in data["images"]:
        name = image["file_name"]
        if name not in present and not (image_dir / name).is_file():
            problems.add(f"image id {image['id']}: file {image_dir / name} is missing; fix: copy the image there "
                         "or pass the right image folder")
    problems.raise_if_any(source)


def coco_from_dict(data: dict) -> COCO:
    """A pycocotools ``COCO`` index over an already validated dict, without pycocotools' printing."""
    for annotation in data["annotations"]:
        annotation.setdefault("iscrowd", 0)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def read_json(path: str | os.PathLike) -> Any:
    """Parse a json file, turning syntax errors into a :class:`CocoFormatError` with line and column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist; fix: pass the path of a COCO instances json")
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise CocoFormatError(str(path), [f"not valid json: {error.msg} at line {error.lineno}, column {error.colno}; "
                                          "fix: repair or re-export the file"]) from None


def load_coco(path: str | os.PathLike, image_dir: str | os.PathLike | None = None, *,
              check_images: bool = False) -> COCO:
    """Read, validate and index a COCO instances json.

    Args:
        path: the instances json.
        image_dir: the folder holding the images; needed only with ``check_images``.
        check_images: also require every image file to exist under ``image_dir``.

    Returns:
        A ``pycocotools.coco.COCO`` whose ``dataset`` is the validated dict (a missing ``iscrowd`` filled in
        as 0) and whose indexes (``anns``, ``imgs``, ``cats``, ``imgToAnns``) are built.

    Raises:
        FileNotFoundError: the json or the image folder does not exist.
        CocoFormatError: anything in the file is malformed (every problem found is listed).
    """
    if check_images and image_dir is None:
        raise ValueError("check_images=True needs image_dir; fix: pass the folder that holds the images")
    data = read_json(path)
    validate_coco(data, source=str(path))
    if check_images:
        check_image_files(data, image_dir, source=str(path))  # type: ignore[arg-type]
    coco = coco_from_dict(data)
    logger.info("loaded %s: %d images, %d annotations, %d categories", path, len(coco.imgs), len(coco.anns),
                len(coco.cats))
    return coco
