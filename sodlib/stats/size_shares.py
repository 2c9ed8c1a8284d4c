"""Per size bin: the shares of objects, of images holding one, and of annotated pixel area
(:func:`size_statistics`; Kisantal et al., Table 1)."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
from pycocotools.coco import COCO

from sodlib.data.sizes import SIZE_BINS, AreaMode, check_area_mode, in_size_bin
from sodlib.stats.objects import Resize, as_coco, check_resize, no_objects_error, object_table


@dataclass
class SizeBinStatistics:
    """One size bin: ``objects`` and their share of all objects, ``images`` holding at least one such object
    and their share of all images, and the bin's summed object ``area`` and its share of all objects' area."""

    bin: str
    area_range: tuple[float, float]
    objects: int
    object_share: float
    images: int
    image_share: float
    area: float
    area_share: float


@dataclass
class CategorySizeStatistics:
    """One category: ``objects`` in all, ``objects_per_bin`` and ``share_per_bin`` (of the category's objects)."""

    category_id: int
    name: str
    objects: int
    objects_per_bin: dict[str, int]
    share_per_bin: dict[str, float]


@dataclass
class SizeStatistics:
    """Result of :func:`size_statistics`; ``rows()`` and ``category_rows()`` give flat dicts for tables."""

    bins: list[SizeBinStatistics]
    categories: list[CategorySizeStatistics]
    num_images: int
    num_objects: int
    area_mode: str
    resize: Resize
    include_crowd: bool
    crowd_excluded: int

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"bin": b.bin, "objects": b.objects, "object_share": b.object_share, "images": b.images, "image_share": b.image_share, "area": b.area, "area_share": b.area_share}
            for b in self.bins
        ]

    def category_rows(self) -> list[dict[str, Any]]:
        return [
            {"category_id": c.category_id, "name": c.name, "objects": c.objects, **{f"{k}_share": v for k, v in c.share_per_bin.items()}}
            for c in self.categories
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def size_statistics(
    coco: COCO | str | os.PathLike,
    area: AreaMode = "mask",
    resize: Resize = None,
    include_crowd: bool = False,
    bins: Mapping[str, tuple[float, float]] = SIZE_BINS,
) -> SizeStatistics:
    """Per size bin: share of objects, of images holding at least one, and of annotated pixel area.

    For bin ``b`` with ``lo <= area <= hi`` (both inclusive):

    - ``object_share = #objects in b / #objects``;
    - ``image_share = #images with an object in b / #images`` (all images of the file, empty ones included);
    - ``area_share = sum of areas in b / sum of all areas`` (resized areas when ``resize`` is given).

    Categories are sorted by their small-object share (the first bin), largest first.
    """
    area = check_area_mode(area)
    resize = check_resize(resize)
    coco = as_coco(coco)
    table = object_table(coco, area=area, resize=resize, include_crowd=include_crowd)
    if table.num_objects == 0:
        raise no_objects_error(table)
    total_area = float(table.areas.sum())
    bin_rows = []
    members = {}
    for name, (lo, hi) in bins.items():
        member = in_size_bin(table.areas, name, bins)
        members[name] = member
        images_with = int(np.unique(table.object_image[member]).size)
        bin_area = float(table.areas[member].sum())
        bin_rows.append(
            SizeBinStatistics(
                bin=name,
                area_range=(float(lo), float(hi)),
                objects=int(member.sum()),
                object_share=float(member.mean()),
                images=images_with,
                image_share=images_with / table.num_images,
                area=bin_area,
                area_share=bin_area / total_area if total_area > 0 else float("nan"),
            )
        )
    names = {c["id"]: c.get("name", str(c["id"])) for c in coco.dataset.get("categories", [])}
    category_rows = []
    for category_id in np.unique(table.category_ids):
        of_category = table.category_ids == category_id
        count = int(of_category.sum())
        per_bin = {name: int((member & of_category).sum()) for name, member in members.items()}
        category_rows.append(
            CategorySizeStatistics(
                category_id=int(category_id),
                name=names.get(int(category_id), str(int(category_id))),
                objects=count,
                objects_per_bin=per_bin,
                share_per_bin={name: n / count for name, n in per_bin.items()},
            )
        )
    first_bin = next(iter(bins))
    category_rows.sort(key=lambda c: (-c.share_per_bin[first_bin], c.category_id))
    return SizeStatistics(
        bins=bin_rows,
        categories=category_rows,
        num_images=table.num_images,
        num_objects=table.num_objects,
        area_mode=table.area_mode,
        resize=table.resize,
        include_crowd=table.include_crowd,
        crowd_excluded=table.crowd_excluded,
    )
