"""Real COCO: coco-mini's known counts (skipped when this machine lacks it)."""
from __future__ import annotations

import warnings

import torch

from sodlib.data import CocoDetection, annotation_areas, count_by_size_bin, load_coco
from sodlib.data.coco import CocoWarning


def test_counts(coco_mini):
    annotations, image_dir = coco_mini
    coco = load_coco(annotations, image_dir, check_images=True)
    all_annotations = coco.dataset["annotations"]
    assert len(coco.imgs) == 337 and len(all_annotations) == 2838 and len(coco.cats) == 80
    assert sum(a["iscrowd"] for a in all_annotations) == 28
    assert count_by_size_bin(annotation_areas(all_annotations)) == {"small": 1249, "medium": 986, "large": 603}
    single = [a for a in all_annotations if not a["iscrowd"]]
    assert count_by_size_bin(annotation_areas(single)) == {"small": 1247, "medium": 971, "large": 592}


def test_dataset_items(coco_mini):
    dataset = CocoDetection(*coco_mini, masks=True)
    assert len(dataset) == 337 and dataset.num_classes == 81
    crowd_items = 0
    for index in (0, 1, 100, 336):
        image, target = dataset[index]
        info = dataset.image_info(index)
        assert image.shape == (3, info["height"], info["width"])
        boxes = target["boxes"]
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        assert target["labels"].min() >= 1 and target["labels"].max() <= 80
        # pycocotools' polygon rasterisation agrees with the stored mask area to within a few percent
        pixels = target["masks"].flatten(1).sum(1).float()
        single = target["iscrowd"] == 0
        relative = (pixels[single] - target["area"][single]).abs() / target["area"][single].clamp(min=1)
        assert torch.median(relative) < 0.05
        crowd_items += int(target["iscrowd"].sum())
    crowd_total = sum(len([a for a in dataset.annotations_of(i) if a["iscrowd"]]) for i in range(len(dataset)))
    assert crowd_total == 28


def test_real_coco_passes_every_check_without_warnings(coco_mini):
    """Every image decodes to its json size; no area or box warning fires on COCO's own annotations (its areas are
    within 34 % of pycocotools' pixel counts, its boxes inside their images)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CocoWarning)
        coco = load_coco(*coco_mini, check_images=True, workers=2)
    assert len(coco.imgs) == 337
