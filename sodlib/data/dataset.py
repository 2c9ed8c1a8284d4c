"""A torch ``Dataset`` over a COCO instances file, returning torchvision detection targets.

Each item is ``(image, target)``:

- ``image``: ``float32 Tensor[3, H, W]`` in ``[0, 1]`` (RGB);
- ``target["boxes"]``: ``float32 Tensor[N, 4]``, ``(x1, y1, x2, y2)`` in pixels, from COCO's
  ``[x, y, w, h]`` as ``x2 = x + w``, ``y2 = y + h``;
- ``target["labels"]``: ``int64 Tensor[N]``, contiguous labels ``1..C`` in the order of sorted COCO
  category ids (0 is the background, as torchvision's detection models expect);
  ``dataset.label_to_category_id`` maps them back;
- ``target["area"]``: ``float32 Tensor[N]``, the annotation's ``area`` (the mask area);
- ``target["iscrowd"]``: ``int64 Tensor[N]``; crowd regions are kept and flagged, never dropped silently
  (``include_crowd=False`` leaves them out on purpose);
- ``target["masks"]``: ``uint8 Tensor[N, H, W]``, only with ``masks=True``;
- ``target["image_id"]``: the COCO image id (``int``).

Reading an item checks what the json says against the files: an image that cannot be decoded, or that decodes
to another size than its ``width`` x ``height``, and a mask of another size than its image, raise a
``ValueError`` naming the image id and file (boxes and masks would otherwise be in the wrong coordinates).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO

from sodlib.data.coco import (CocoFormatError, check_image_files, image_decode_problem, image_size_problem,
                              load_coco)

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """``float32 Tensor[3, H, W]`` in ``[0, 1]`` from an image file (converted to RGB)."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def coco_boxes_to_xyxy(bboxes: Sequence[Sequence[float]]) -> torch.Tensor:
    """``Tensor[N, 4]`` ``(x1, y1, x2, y2)`` from COCO ``[x, y, w, h]`` boxes."""
    boxes = torch.as_tensor(np.asarray(bboxes, dtype=np.float32).reshape(-1, 4))
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


class CocoDetection(torch.utils.data.Dataset):
    """COCO images and their annotations as torchvision detection targets.

    Args:
        annotations: path of an instances json, or a ``COCO`` from :func:`sodlib.data.load_coco`.
        image_dir: the folder holding the images; every file is checked to exist up front.
        masks: also return ``target["masks"]`` (decoded from polygons or RLE).
        include_crowd: keep crowd annotations (flagged by ``iscrowd``); ``False`` leaves them out.
        transforms: an optional ``(image, target) -> (image, target)`` callable.
        image_ids: restrict to these COCO image ids (default: all, sorted).
    """

    def __init__(self, annotations: str | os.PathLike | COCO, image_dir: str | os.PathLike, *, masks: bool = False,
                 include_crowd: bool = True, transforms: Transform | None = None,
                 image_ids: Sequence[int] | None = None):
        self.coco = annotations if isinstance(annotations, COCO) else load_coco(annotations)
        self.image_dir = Path(image_dir)
        check_image_files(self.coco.dataset, self.image_dir)
        self.masks = masks
        self.include_crowd = include_crowd
        self.transforms = transforms
        known_ids = set(self.coco.imgs)
        if image_ids is None:
            self.image_ids = sorted(known_ids)
        else:
            unknown = [i for i in image_ids if i not in known_ids]
            if unknown:
                raise ValueError(f"image_ids holds ids that are not in the annotations: {unknown[:5]}; "
                                 "fix: pass ids from dataset.coco.imgs")
            self.image_ids = list(image_ids)
        if masks:
            self._check_segmentations()
        self.category_ids = sorted(self.coco.cats)
        self.category_id_to_label = {cat_id: label for label, cat_id in enumerate(self.category_ids, start=1)}
        self.label_to_category_id = {label: cat_id for cat_id, label in self.category_id_to_label.items()}
        self.category_names = ["__background__"] + [self.coco.cats[c]["name"] for c in self.category_ids]

    def _check_segmentations(self) -> None:
        missing = [a["id"] for a in self.coco.dataset["annotations"] if not a.get("segmentation")]
        if missing:
            raise CocoFormatError("masks=True", [f"{len(missing)} annotation(s) have no 'segmentation' "
                                                 f"(ids {missing[:5]}); fix: use masks=False or add the masks"])

    @property
    def num_classes(self) -> int:
        """Number of object categories plus one for the background."""
        return len(self.category_ids) + 1

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_info(self, index: int) -> dict:
        """The COCO ``images`` record of item ``index``."""
        return self.coco.imgs[self.image_ids[index]]

    def annotations_of(self, index: int) -> list[dict]:
        """The COCO annotations of item ``index`` (crowd included unless ``include_crowd=False``), without boxes
        of zero width or height (:func:`sodlib.data.load_coco` warns about them: no anchor can match them, and
        torchvision's training fails on them)."""
        annotations = [a for a in self.coco.imgToAnns.get(self.image_ids[index], []) if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        if not self.include_crowd:
            annotations = [a for a in annotations if not a.get("iscrowd", 0)]
        return annotations

    def target_of(self, index: int) -> Target:
        """The torchvision target dict of item ``index`` (without reading the image)."""
        info = self.image_info(index)
        annotations = self.annotations_of(index)
        target: Target = {
            "boxes": coco_boxes_to_xyxy([a["bbox"] for a in annotations]),
            "labels": torch.tensor([self.category_id_to_label[a["category_id"]] for a in annotations], dtype=torch.int64),
            "area": torch.tensor([a["area"] for a in annotations], dtype=torch.float32),
            "iscrowd": torch.tensor([a.get("iscrowd", 0) for a in annotations], dtype=torch.int64),
            "image_id": int(info["id"]),
        }
        if self.masks:
            target["masks"] = self._masks_of(info, annotations)
        return target

    def _masks_of(self, info: dict, annotations: list[dict]) -> torch.Tensor:
        """``uint8 [N, H, W]`` masks; a mask of another size than the image raises a ValueError naming both."""
        height, width = int(info["height"]), int(info["width"])
        stacked = np.zeros((len(annotations), height, width), dtype=np.uint8)
        for row, annotation in enumerate(annotations):
            mask = self.coco.annToMask(annotation)
            if mask.shape != (height, width):
                raise ValueError(f"image id {info['id']}: file {self.image_dir / info['file_name']}: the mask of "
                                 f"annotation id {annotation['id']} is {mask.shape[1]}x{mask.shape[0]} pixels (width x "
                                 f"height) but the image is {width}x{height}; fix: encode the segmentation at its "
                                 "image's size (an RLE 'size' is [height, width]); sodlib.data.load_coco finds these")
            stacked[row] = mask
        return torch.from_numpy(stacked)

    def read_image_of(self, index: int) -> torch.Tensor:
        """The image of item ``index`` (``float32 [3, H, W]``), checked to decode to its json ``width`` x
        ``height``; a ValueError naming the image id and file otherwise."""
        info = self.image_info(index)
        path = self.image_dir / info["file_name"]
        try:
            image = read_image(path)
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ...
            raise ValueError(image_decode_problem(info, path, error)) from error
        problem = image_size_problem(info, path, (image.shape[2], image.shape[1]))
        if problem:
            raise ValueError(problem)
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image = self.read_image_of(index)
        target = self.target_of(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def detection_collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Collate for detection ``DataLoader``s: a list of images and a list of targets (sizes differ)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)
