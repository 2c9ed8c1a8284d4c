"""Reading and validating COCO instances files.

``load_coco`` checks the whole file before anything else happens and reports every problem it finds
(up to a limit) in one :class:`CocoFormatError`, each naming the record, the field and the fix. Only a
file that passes is handed to pycocotools, whose own loader would fail later, deep inside an
evaluation, or not at all.

What is checked (an error):

- the file: UTF-8 (or UTF-16/32) json text; anything else is "not a COCO json", in one line;
- top level: an object with ``images``, ``annotations`` and ``categories`` lists;
- images: ``id`` (integer, unique), ``file_name``, ``width`` and ``height`` (positive whole numbers);
- categories: ``id`` (integer, unique) and ``name``;
- annotations: ``id`` (integer, unique), ``image_id`` and ``category_id`` that exist, ``bbox`` as four
  finite numbers ``[x, y, width, height]`` with ``width > 0`` and ``height > 0``, ``area`` finite and
  ``>= 0``, ``iscrowd`` 0 or 1 (a missing ``iscrowd`` is read as 0, as most converters mean it), and for
  crowd annotations an RLE ``segmentation``;
- segmentations (either form for crowd and non-crowd; none at all is allowed): a list of polygons, each an
  even count ``>= 6`` of finite numbers, or an RLE ``{"counts", "size"}`` whose ``size`` is the image's
  ``[height, width]`` and whose counts (a list of integers, or pycocotools' compressed string) are
  non-negative and add up to ``height * width``;
- a box or polygon reaching more than a whole image size (``max(width, height)``) beyond its image (pixel
  coordinates of another image, or normalised ones; pycocotools would also rasterise such a polygon at a
  huge cost);
- with ``image_dir`` and ``check_images=True``: every image file exists, is not empty, decodes fully and
  decodes to the json's ``width`` x ``height``.

What is warned about (:class:`CocoWarning`, one warning per kind with the count and the first ids; loading
goes on), thresholds chosen so that real COCO (coco-mini, 2,838 annotations) gives none:

- ``area`` far from the mask's pixel area: ``|area - pixels| > AREA_ABSOLUTE_TOLERANCE`` (4 px^2) and
  ``> AREA_RELATIVE_TOLERANCE * max(area, pixels)`` (0.5: one more than twice the other). COCO's areas
  differ from pycocotools' pixel counts a little (median 0.2 %, 34 % at most on coco-mini, for a crowd);
- a box reaching more than ``BOX_OVERHANG_TOLERANCE`` (1 px) beyond its image (COCO's sub-pixel overhangs
  stay silent).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import reprlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Mapping

from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

MAX_REPORTED_PROBLEMS = 10
MAX_WARNED_IDS = 5
AREA_RELATIVE_TOLERANCE = 0.5
AREA_ABSOLUTE_TOLERANCE = 4.0
BOX_OVERHANG_TOLERANCE = 1.0

ImageSizes = dict[int, tuple[int, int] | None]
"""Image id -> ``(width, height)``, or None for an image whose size is itself invalid."""


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

    @classmethod
    def not_coco_json(cls, source: str, problem: str) -> "CocoFormatError":
        """The error for a file that is not a COCO json at all (not text, not json), in one line."""
        error = cls(source, [problem])
        error.args = (f"{source}: not a COCO json: {problem}",)
        return error


class CocoWarning(UserWarning):
    """Something in a COCO file that is probably wrong but does not stop loading (see the module docstring)."""


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


class _Warnings:
    """Collects the annotations flagged by each kind of warning: their ids (all counted, the first few kept) and
    the first one's example."""

    def __init__(self):
        self.ids: dict[str, list[int]] = {}
        self.counts: dict[str, int] = {}
        self.examples: dict[str, str] = {}

    def add(self, kind: str, record_id: int, example: str) -> None:
        ids = self.ids.setdefault(kind, [])
        self.examples.setdefault(kind, example)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(ids) < MAX_WARNED_IDS:
            ids.append(record_id)

    def emit(self, source: str) -> None:
        """One :class:`CocoWarning` per kind, in one line: ``source: N annotation(s) <what> (ids 1, 2, ...), e.g.
        <example>; fix: <fix>`` (a kind is ``"<what>; fix: <fix>"``)."""
        for kind, ids in self.ids.items():
            what, fix = kind.split("; fix: ")
            listed = ", ".join(map(str, ids)) + (", ..." if self.counts[kind] > len(ids) else "")
            warnings.warn(CocoWarning(f"{source}: {self.counts[kind]} annotation(s) {what} (ids {listed}), "
                                      f"e.g. {self.examples[kind]}; fix: {fix}"), stacklevel=3)


AREA_WARNING = (f"have an 'area' far from their mask's pixel area (more than {AREA_ABSOLUTE_TOLERANCE:g} px^2 and "
                f"{100 * AREA_RELATIVE_TOLERANCE:g} % of the larger apart); fix: set 'area' to pycocotools.mask.area "
                "of the segmentation (the size bins are decided by it)")
ZERO_SIZE_WARNING = ("have a bbox of zero width or height, which no anchor can match; fix: drop them (CocoDetection "
                     "leaves them out of its targets)")
OVERHANG_WARNING = (f"have a bbox reaching more than {BOX_OVERHANG_TOLERANCE:g} px beyond their image; fix: clip the "
                    "box to the image or check the image's 'width' and 'height'")


def _shown(value: Any) -> str:
    """A value as a message quotes it: its repr, shortened (long lists, strings and integers cut with '...')."""
    return reprlib.repr(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float (a bool is not a number here, nor an integer too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _are_numbers(values: list) -> bool:
    """Every value passes :func:`_is_number`. A list of plain ints and floats with a finite sum (the usual case)
    is decided without a Python call per value."""
    try:
        if set(map(type, values)) <= {int, float} and math.isfinite(sum(values)):
            return True
    except OverflowError:
        pass
    return all(_is_number(v) for v in values)


def _are_ints(values: list) -> bool:
    """Every value passes :func:`_is_int`; a list of plain ints (the usual case) is decided without a Python call
    per value."""
    return set(map(type, values)) <= {int} or all(_is_int(v) for v in values)


def _is_whole_positive(value: Any) -> bool:
    return _is_number(value) and value > 0 and value == int(value)


def _reach_beyond(x_min: float, y_min: float, x_max: float, y_max: float, size: tuple[int, int]) -> float:
    """How far, in pixels, the extent ``[x_min, x_max] x [y_min, y_max]`` reaches beyond a ``(width, height)``
    image: ``max(-x_min, -y_min, x_max - width, y_max - height)``, 0 when inside."""
    width, height = size
    return max(0.0, -x_min, -y_min, x_max - width, y_max - height)


def _far_outside(reach: float, size: tuple[int, int]) -> bool:
    """A reach beyond the image of more than a whole image size (``max(width, height)``)."""
    return reach > max(size)


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
            problems.add(f"{where}: 'id' is {_shown(record_id)}; fix: give every entry of '{section}' a unique "
                         "integer id")
            continue
        where = f"{where} (id {record_id})"
        if record_id in ids:
            problems.add(f"{where}: duplicate id; fix: ids in '{section}' must be unique")
            continue
        ids.add(record_id)
        yield where, record


def _check_images(images: list, problems: _Problems) -> ImageSizes:
    """Check the image records; return their sizes by id (None for an image whose size is invalid)."""
    sizes: ImageSizes = {}
    for where, image in _records_with_ids(images, "images", "{'id', 'file_name', 'width', 'height'}", problems, set()):
        name = image.get("file_name")
        if not isinstance(name, str) or not name:
            problems.add(f"{where}: missing 'file_name'; fix: the image's file name relative to the image folder")
        elif PurePosixPath(name.replace("\\", "/")).is_absolute() or ".." in PurePosixPath(name.replace("\\", "/")).parts \
                or PureWindowsPath(name).drive:
            problems.add(f"{where}: 'file_name' {name!r} leaves the image folder (an absolute path or '..'); fix: a "
                         "path relative to the image folder, inside it (tools that write datasets copy the images "
                         "under their output folder by these names)")
        valid = True
        for key in ("width", "height"):
            value = image.get(key)
            if not _is_whole_positive(value):
                problems.add(f"{where}: '{key}' is {_shown(value)}; fix: the image's {key} in pixels, a positive "
                             "whole number")
                valid = False
        sizes[image["id"]] = (int(image["width"]), int(image["height"])) if valid else None
    return sizes


def _check_categories(categories: list, problems: _Problems) -> set[int]:
    ids: set[int] = set()
    for where, category in _records_with_ids(categories, "categories", "{'id', 'name'}", problems, ids):
        if not isinstance(category.get("name"), str):
            problems.add(f"{where}: missing 'name'; fix: add the category's name")
    return ids


def _check_references(annotation: Mapping, where: str, images: ImageSizes, category_ids: set[int],
                      problems: _Problems) -> None:
    """``image_id`` and ``category_id`` are integers naming an existing image and category."""
    image_id, category_id = annotation.get("image_id"), annotation.get("category_id")
    if not _is_int(image_id) or image_id not in images:
        problems.add(f"{where}: image_id {_shown(image_id)} is not in 'images'; "
                     "fix: point it at an existing image id or add that image")
    if not _is_int(category_id) or category_id not in category_ids:
        problems.add(f"{where}: category_id {_shown(category_id)} is not in 'categories'; "
                     "fix: point it at an existing category id or add that category")


def _check_bbox(annotation: Mapping, where: str, size: tuple[int, int] | None, problems: _Problems,
                warned: _Warnings) -> None:
    """``bbox``: four finite numbers ``[x, y, w, h]`` with ``w >= 0`` and ``h >= 0``; a box of zero width or
    height is a warning, not an error, because COCO train2017 itself has two (ids 918 and 2206849, per cocoapi
    issue #355): :class:`sodlib.data.CocoDetection` leaves them out of its targets (given to torchvision's
    training they crash it at the first step). An error if the box reaches far outside its image
    (:func:`_far_outside`), a warning if by more than ``BOX_OVERHANG_TOLERANCE``."""
    bbox = annotation.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not _are_numbers(list(bbox)):
        problems.add(f"{where}: 'bbox' is {_shown(bbox)}; fix: four finite numbers [x, y, width, height] in pixels")
        return
    x, y, width, height = bbox
    degenerate = False
    for name, value in (("width", width), ("height", height)):
        if value < 0:
            problems.add(f"{where}: bbox {name} is {value} (negative); fix: COCO boxes are [x, y, width, height] "
                         f"with {name} >= 0: convert a box given as [x1, y1, x2, y2]")
            degenerate = True
        elif value == 0 and not degenerate:
            warned.add(ZERO_SIZE_WARNING, annotation["id"], f"{where}: bbox {list(bbox)}")
            degenerate = True
    if size is None or degenerate:
        return
    reach = _reach_beyond(x, y, x + width, y + height, size)
    if _far_outside(reach, size):
        problems.add(f"{where}: bbox {list(bbox)} lies {reach:g} px beyond its {size[0]}x{size[1]} image; fix: "
                     "boxes are in pixels of their image (not normalised, not from another image size)")
    elif reach > BOX_OVERHANG_TOLERANCE:
        warned.add(OVERHANG_WARNING, annotation["id"], f"id {annotation['id']}: bbox {list(bbox)} in a "
                   f"{size[0]}x{size[1]} image")


def _check_area(annotation: Mapping, where: str, problems: _Problems) -> bool:
    """``area``: a finite number ``>= 0``; returns whether it is one."""
    area = annotation.get("area")
    if not _is_number(area) or area < 0:
        problems.add(f"{where}: 'area' is {_shown(area)}; fix: the object's mask area in pixels (pycocotools.mask.area "
                     "of its segmentation), or its box width * height when there is no mask")
        return False
    return True


def _check_iscrowd(annotation: Mapping, where: str, problems: _Problems) -> None:
    """``iscrowd``: 0 or 1 (missing is 0); a crowd's segmentation is an RLE."""
    iscrowd = annotation.get("iscrowd", 0)
    if iscrowd not in (0, 1) or isinstance(iscrowd, bool):
        problems.add(f"{where}: 'iscrowd' is {_shown(iscrowd)}; fix: 0 for a single object, 1 for a crowd region")
    elif iscrowd == 1 and not isinstance(annotation.get("segmentation"), dict):
        problems.add(f"{where}: a crowd annotation needs an RLE 'segmentation' ({{'counts', 'size'}}); "
                     "fix: encode the crowd region as RLE or set iscrowd to 0")


def _shoelace_area(polygon: list) -> float:
    """The area enclosed by a polygon ``[x1, y1, x2, y2, ...]``: ``|sum_i (x_i y_{i+1} - x_{i+1} y_i)| / 2``."""
    xs, ys = polygon[0::2], polygon[1::2]
    next_xs, next_ys = xs[1:] + xs[:1], ys[1:] + ys[:1]
    return abs(sum(x * y_next - x_next * y for x, y, x_next, y_next in zip(xs, ys, next_xs, next_ys))) / 2


def _polygons_pixels(polygons: list, where: str, size: tuple[int, int] | None, problems: _Problems,
                     area: float | None = None) -> int | None:
    """Check a list of polygons and return the pixel count of their union as pycocotools rasterises it (None if
    invalid or the image size is unknown). Each polygon is a list of an even count ``>= 6`` (three points or
    more) of finite numbers, reaching no further than a whole image size beyond the image.

    With ``area`` (the annotation's, to be compared with the mask), the polygons are rasterised only when their
    own enclosed (shoelace) area is far from it (:func:`area_is_far`), and None is returned otherwise: the two
    agree to a pixel row along the outline, and rasterising every polygon of a COCO-scale file costs seconds."""
    if _are_numbers(polygons):
        problems.add(f"{where}: 'segmentation' is a flat list of numbers; fix: polygons are nested, "
                     "[[x1, y1, x2, y2, ...], ...]")
        return None
    valid = True
    for index, polygon in enumerate(polygons):
        field = f"segmentation[{index}]"
        if not isinstance(polygon, list):
            problems.add(f"{where}: {field} is {_shown(polygon)}; fix: each polygon is a list "
                         "[x1, y1, x2, y2, ...] of pixel coordinates")
        elif len(polygon) < 6 or len(polygon) % 2:
            problems.add(f"{where}: {field} has {len(polygon)} numbers; fix: a polygon is an even count >= 6 "
                         "(three points or more) [x1, y1, x2, y2, x3, y3, ...]; drop a degenerate one")
        elif not _are_numbers(polygon):
            bad = next(v for v in polygon if not _is_number(v))
            problems.add(f"{where}: {field} holds {_shown(bad)}; fix: polygon coordinates are finite numbers in pixels")
        else:
            continue
        valid = False
    if not valid or size is None:
        return None
    reach = max(_reach_beyond(min(p[0::2]), min(p[1::2]), max(p[0::2]), max(p[1::2]), size) for p in polygons)
    if _far_outside(reach, size):
        problems.add(f"{where}: 'segmentation' reaches {reach:g} px beyond its {size[0]}x{size[1]} image; fix: "
                     "polygons are in pixels of their image (not normalised, not from another image size)")
        return None
    if area is not None and not area_is_far(area, sum(_shoelace_area(p) for p in polygons)):
        return None
    width, height = size
    return int(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))))


RLE_CHARACTERS = range(48, 48 + 64)
"""pycocotools' compressed RLE strings use the characters ``'0'`` (48) to ``'o'`` (111)."""


def decode_rle_counts(counts: str | bytes) -> list[int]:
    """The run lengths of pycocotools' compressed RLE string, decoded as ``rleFrString`` does (without its
    unchecked reads): each count is a little-endian sequence of 5-bit groups, ``char - 48``, bit 0x20 meaning
    "more follows" and bit 0x10 of the last group the sign; from the third count on, a count is stored as its
    difference to the count two before.

    Raises:
        ValueError: a character outside ``'0'``..``'o'``, or a string cut off inside a number.
    """
    text = counts.decode("ascii", errors="replace") if isinstance(counts, bytes) else counts
    values: list[int] = []
    value = shift = 0
    for position, character in enumerate(text):
        if ord(character) not in RLE_CHARACTERS:
            raise ValueError(f"character {character!r} at position {position} is not an RLE character")
        group = ord(character) - 48
        value |= (group & 0x1F) << shift
        shift += 5
        if group & 0x20:
            continue
        if group & 0x10:
            value -= 1 << shift
        if len(values) > 2:
            value += values[-2]
        values.append(value)
        value = shift = 0
    if shift:
        raise ValueError("the string is cut off inside a number")
    return values


def _rle_pixels(rle: dict, where: str, size: tuple[int, int] | None, problems: _Problems) -> int | None:
    """Check an RLE ``{"counts", "size"}`` and return its foreground pixel count (None if invalid or the image size
    is unknown): ``size`` is the image's ``[height, width]``; ``counts`` is a list of integers or a compressed
    string (:func:`decode_rle_counts`); the runs are ``>= 0`` and add up to ``height * width``."""
    rle_size, counts = rle.get("size"), rle.get("counts")
    if not isinstance(rle_size, list) or len(rle_size) != 2 or not all(_is_int(v) and v > 0 for v in rle_size):
        problems.add(f"{where}: RLE 'size' is {_shown(rle_size)}; fix: the image's [height, width]")
        return None
    if size is not None and rle_size != [size[1], size[0]]:
        swapped = " (that is [width, height])" if rle_size == list(size) else ""
        problems.add(f"{where}: RLE 'size' is {rle_size}{swapped} but the image is [{size[1]}, {size[0]}] "
                     "([height, width]); fix: encode the mask at its image's size")
        return None
    if isinstance(counts, (str, bytes)):
        try:
            runs = decode_rle_counts(counts)
        except ValueError as error:
            problems.add(f"{where}: the compressed RLE 'counts' cannot be decoded ({error}); fix: re-encode the mask "
                         "with pycocotools.mask.encode")
            return None
    elif isinstance(counts, list):
        if not _are_ints(counts):
            bad = next(c for c in counts if not _is_int(c))
            problems.add(f"{where}: RLE 'counts' holds {_shown(bad)}; fix: run lengths are whole numbers of pixels")
            return None
        runs = counts
    else:
        problems.add(f"{where}: RLE 'counts' is {_shown(counts)}; fix: a list of run lengths (uncompressed) "
                     "or pycocotools' compressed string")
        return None
    lowest = min(runs, default=0)
    if lowest < 0:
        problems.add(f"{where}: RLE 'counts' has a negative run ({lowest} at position {runs.index(lowest)}); "
                     "fix: re-encode the mask with pycocotools.mask.encode")
        return None
    height, width = rle_size
    if sum(runs) != height * width:
        problems.add(f"{where}: RLE 'counts' add up to {sum(runs)} pixels, but 'size' {rle_size} holds "
                     f"{height * width}; fix: re-encode the mask with pycocotools.mask.encode")
        return None
    return sum(runs[1::2])


def _segmentation_pixels(annotation: Mapping, where: str, size: tuple[int, int] | None,
                         problems: _Problems, area: float | None = None) -> int | None:
    """Check ``segmentation`` (absent or empty: no mask; polygons; or an RLE) and return its mask's pixel count,
    or None when there is no mask, it is invalid, or its image's size is unknown (for polygons with ``area``:
    also when their enclosed area agrees with it, see :func:`_polygons_pixels`)."""
    segmentation = annotation.get("segmentation")
    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        return None
    if isinstance(segmentation, list):
        return _polygons_pixels(segmentation, where, size, problems, area)
    if isinstance(segmentation, dict):
        return _rle_pixels(segmentation, where, size, problems)
    problems.add(f"{where}: 'segmentation' is {_shown(segmentation)}; fix: a list of polygons "
                 "[[x1, y1, x2, y2, ...], ...] or an RLE {'counts': ..., 'size': [height, width]}")
    return None


def area_is_far(area: float, pixels: float) -> bool:
    """Whether an ``area`` is far from a mask's ``pixels``: ``|area - pixels| > AREA_ABSOLUTE_TOLERANCE`` and
    ``> AREA_RELATIVE_TOLERANCE * max(area, pixels)`` (with 0.5: one is more than twice the other)."""
    difference = abs(area - pixels)
    return difference > AREA_ABSOLUTE_TOLERANCE and difference > AREA_RELATIVE_TOLERANCE * max(area, pixels)


def _check_annotation(annotation: Mapping, where: str, images: ImageSizes, category_ids: set[int],
                      problems: _Problems, warned: _Warnings) -> None:
    _check_references(annotation, where, images, category_ids, problems)
    image_id = annotation.get("image_id")
    size = images.get(image_id) if _is_int(image_id) else None
    _check_bbox(annotation, where, size, problems, warned)
    area_ok = _check_area(annotation, where, problems)
    _check_iscrowd(annotation, where, problems)
    pixels = _segmentation_pixels(annotation, where, size, problems, annotation["area"] if area_ok else None)
    if area_ok and pixels is not None and area_is_far(annotation["area"], pixels):
        warned.add(AREA_WARNING, annotation["id"], f"id {annotation['id']}: area {annotation['area']:g}, "
                   f"mask {pixels} px")


def _check_annotations(annotations: list, images: ImageSizes, category_ids: set[int], problems: _Problems,
                       warned: _Warnings) -> None:
    shape = "{'id', 'image_id', 'category_id', 'bbox', 'area', 'iscrowd', 'segmentation'}"
    for where, annotation in _records_with_ids(annotations, "annotations", shape, problems, set()):
        _check_annotation(annotation, where, images, category_ids, problems, warned)


def validate_coco(data: Any, source: str = "COCO data") -> None:
    """Raise :class:`CocoFormatError` listing what is wrong with an instances dict; return None if it is valid.

    What is only suspicious is given as :class:`CocoWarning` (one per kind, before any error is raised).
    """
    problems = _Problems()
    warned = _Warnings()
    if _check_top_level(data, problems):
        images = _check_images(data["images"], problems)
        category_ids = _check_categories(data["categories"], problems)
        _check_annotations(data["annotations"], images, category_ids, problems, warned)
    warned.emit(source)
    problems.raise_if_any(source)


def image_size_problem(image: Mapping, path: Path, decoded: tuple[int, int]) -> str | None:
    """The problem when an image file decodes to another ``(width, height)`` than its record says, else None."""
    expected = (int(image["width"]), int(image["height"]))
    if tuple(decoded) == expected:
        return None
    return (f"image id {image['id']}: file {path} is {decoded[0]}x{decoded[1]} pixels (width x height) but the json "
            f"says {expected[0]}x{expected[1]}; fix: set the image's 'width' and 'height' to the file's, or put the "
            "right file there (boxes and masks are in the json's pixel coordinates)")


def image_decode_problem(image: Mapping, path: Path, error: Exception) -> str:
    """The problem when an image file cannot be decoded."""
    reason = "not an image PIL can identify" if isinstance(error, UnidentifiedImageError) else str(error)
    return (f"image id {image['id']}: file {path} cannot be decoded ({reason}); fix: replace it with a complete "
            "copy of the image")


def image_file_problem(image: Mapping, path: Path) -> str | None:
    """What is wrong with one image's file, or None: it is empty, does not decode fully (PIL ``load()``; a
    truncated file fails unless ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was set), or decodes to another size
    than the record's ``width`` x ``height``."""
    try:
        if path.stat().st_size == 0:
            return f"image id {image['id']}: file {path} is empty (0 bytes); fix: copy the image there again"
        with Image.open(path) as picture:
            picture.load()
            decoded = picture.size
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        return image_decode_problem(image, path, error)
    return image_size_problem(image, path, decoded)


def default_workers() -> int:
    """Threads that decode images: the CPU count, at most 8 (PIL releases the GIL while decoding)."""
    return max(1, min(8, os.cpu_count() or 1))


def check_image_files(data: Mapping, image_dir: str | os.PathLike, source: str = "COCO data", *,
                      decode: bool = False, workers: int | None = None, progress: bool = False) -> None:
    """Raise :class:`CocoFormatError` if any image's ``file_name`` is missing under ``image_dir``; with
    ``decode=True`` also if one is empty, cannot be decoded fully, or decodes to another size than its
    ``width`` x ``height`` (:func:`image_file_problem`), decoding in ``workers`` threads (default
    :func:`default_workers`) with a tqdm bar when ``progress``."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir} does not exist; fix: pass the folder that holds the "
                                f"images named in {source}")
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise ValueError(f"workers={workers!r} must be an integer >= 1 (threads decoding the images)")
    present = set(os.listdir(image_dir))
    problems = _Problems()
    found = []
    for image in data["images"]:
        name = image["file_name"]
        if name not in present and not (image_dir / name).is_file():
            problems.add(f"image id {image['id']}: file {image_dir / name} is missing; fix: copy the image there "
                         "or pass the right image folder")
        else:
            found.append(image)
    if decode and found:
        with ThreadPoolExecutor(workers or default_workers()) as pool:
            outcomes = pool.map(lambda image: image_file_problem(image, image_dir / image["file_name"]), found)
            for problem in tqdm(outcomes, total=len(found), desc="decoding images", unit="img", disable=not progress):
                if problem:
                    problems.add(problem)
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


def _why_not_json(error: ValueError | RecursionError) -> str:
    """What a failed ``json.load`` says about the file, and the fix, in one line."""
    if isinstance(error, json.JSONDecodeError):
        if not error.doc.strip():
            return "the file is empty; fix: pass the instances json (re-export it if it was cut off)"
        return (f"invalid json, {error.msg} at line {error.lineno}, column {error.colno}; "
                "fix: repair or re-export the file")
    if isinstance(error, UnicodeDecodeError):
        return (f"byte 0x{error.object[error.start]:02x} at offset {error.start} is not {error.encoding} text (binary "
                "data such as an image or an archive, or text in another encoding); fix: pass the instances .json "
                "file, saved as UTF-8")
    if isinstance(error, RecursionError):
        return "its json is nested too deeply to be COCO data; fix: pass the instances .json file"
    return f"it cannot be read as json ({error}); fix: repair or re-export the file"


def read_json(path: str | os.PathLike) -> Any:
    """Parse a json file; a file that is not json text raises a one-line :class:`CocoFormatError` saying why
    (invalid json with line and column, empty, binary data)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist; fix: pass the path of a COCO instances json")
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CocoFormatError.not_coco_json(str(path), _why_not_json(error)) from None


def load_coco(path: str | os.PathLike, image_dir: str | os.PathLike | None = None, *,
              check_images: bool = False, workers: int | None = None, progress: bool = False) -> COCO:
    """Read, validate and index a COCO instances json.

    Args:
        path: the instances json.
        image_dir: the folder holding the images; needed only with ``check_images``.
        check_images: also require every image file under ``image_dir`` to exist, decode fully and have the
            json's ``width`` x ``height`` (all images are decoded: about 1-2 s per 1,000 COCO images per core).
        workers: threads decoding the images (default :func:`default_workers`).
        progress: show a tqdm bar while decoding the images.

    Returns:
        A ``pycocotools.coco.COCO`` whose ``dataset`` is the validated dict (a missing ``iscrowd`` filled in
        as 0) and whose indexes (``anns``, ``imgs``, ``cats``, ``imgToAnns``) are built.

    Raises:
        FileNotFoundError: the json or the image folder does not exist.
        CocoFormatError: anything in the file (or an image file) is malformed (every problem found is listed).

    Warns:
        CocoWarning: suspicious but usable annotations (see the module docstring).
    """
    if check_images and image_dir is None:
        raise ValueError("check_images=True needs image_dir; fix: pass the folder that holds the images")
    data = read_json(path)
    validate_coco(data, source=str(path))
    if check_images:
        check_image_files(data, image_dir, source=str(path), decode=True,  # type: ignore[arg-type]
                          workers=workers, progress=progress)
    coco = coco_from_dict(data)
    logger.info("loaded %s: %d images, %d annotations, %d categories", path, len(coco.imgs), len(coco.anns),
                len(coco.cats))
    return coco
