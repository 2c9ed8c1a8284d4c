"""CocoDetection returns torchvision detection targets, with crowd kept and flagged."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from sodlib.data import CocoDetection, CocoFormatError, detection_collate
from sodlib.data.coco import coco_from_dict
from tests.conftest import write_coco


def test_image_is_float_rgb_in_unit_range(tiny_coco_files):
    image, _ = CocoDetection(*tiny_coco_files)[0]
    assert image.dtype == torch.float32 and image.shape == (3, 48, 64)
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_target_format(tiny_coco_files):
    dataset = CocoDetection(*tiny_coco_files)
    _, target = dataset[0]
    assert target["image_id"] == 1
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (2, 4)
    torch.testing.assert_close(target["boxes"], torch.tensor([[2.0, 3.0, 12.0, 23.0], [20.0, 4.0, 52.0, 36.0]]))
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [2, 1]
    assert target["area"].tolist() == [200.0, 1024.0]
    assert target["iscrowd"].tolist() == [0, 0]
    assert "masks" not in target


def test_labels_are_contiguous_and_map_back_to_category_ids(tiny_coco_files):
    dataset = CocoDetection(*tiny_coco_files)
    assert dataset.category_id_to_label == {3: 1, 10: 2}
    assert dataset.label_to_category_id == {1: 3, 2: 10}
    assert dataset.category_names == ["__background__", "cat", "dog"]
    assert dataset.num_classes == 3


def test_crowd_is_kept_and_flagged(tiny_coco_files):
    _, target = CocoDetection(*tiny_coco_files)[1]
    assert target["iscrowd"].tolist() == [1, 0]
    _, without = CocoDetection(*tiny_coco_files, include_crowd=False)[1]
    assert without["iscrowd"].tolist() == [0] and without["boxes"].shape == (1, 4)


def test_masks_on_request_match_areas(tiny_coco_files):
    dataset = CocoDetection(*tiny_coco_files, masks=True)
    for index in range(len(dataset)):
        _, target = dataset[index]
        masks = target["masks"]
        assert masks.dtype == torch.uint8 and masks.shape[1:] == dataset[index][0].shape[1:]
        assert masks.flatten(1).sum(1).tolist() == target["area"].tolist()


def test_image_without_annotations_has_empty_tensors(tmp_path, tiny_coco):
    tiny_coco["images"].append({"id": 8, "file_name": "c.png", "width": 16, "height": 16})
    dataset = CocoDetection(*write_coco(tmp_path, tiny_coco), masks=True)
    _, target = dataset[2]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and target["masks"].shape == (0, 16, 16)


def test_missing_image_file_fails_at_construction(tmp_path, tiny_coco):
    path, image_dir = write_coco(tmp_path, tiny_coco)
    (image_dir / "a.png").unlink()
    with pytest.raises(CocoFormatError, match="a.png is missing"):
        CocoDetection(path, image_dir)


def test_masks_need_segmentations(tmp_path, tiny_coco):
    del tiny_coco["annotations"][0]["segmentation"]
    with pytest.raises(CocoFormatError, match="no 'segmentation'"):
        CocoDetection(*write_coco(tmp_path, tiny_coco), masks=True)


def test_unknown_image_ids_are_refused(tiny_coco_files):
    with pytest.raises(ValueError, match="not in the annotations"):
        CocoDetection(*tiny_coco_files, image_ids=[1, 2])


def test_transforms_and_collate(tiny_coco_files):
    flip = lambda image, target: (image.flip(-1), target)  # noqa: E731
    dataset = CocoDetection(*tiny_coco_files, transforms=flip)
    plain = CocoDetection(*tiny_coco_files)
    torch.testing.assert_close(dataset[0][0], plain[0][0].flip(-1))
    images, targets = detection_collate([dataset[0], dataset[1]])
    assert len(images) == 2 and [t["image_id"] for t in targets] == [1, 7]
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=detection_collate)
    images, targets = next(iter(loader))
    assert images[0].shape == (3, 48, 64) and images[1].shape == (3, 40, 40)


def test_an_image_of_another_size_than_the_json_is_refused_when_read(tiny_coco_files):
    path, image_dir = tiny_coco_files
    Image.new("RGB", (48, 64)).save(image_dir / "a.png")  # the json says 64 x 48
    dataset = CocoDetection(path, image_dir)  # construction only checks that the files exist
    with pytest.raises(ValueError, match=r"image id 1: file .*a\.png is 48x64 pixels \(width x height\) but the json "
                                         r"says 64x48"):
        dataset[0]
    dataset[1]  # the other image is fine


def test_an_undecodable_image_is_named_when_read(tiny_coco_files):
    path, image_dir = tiny_coco_files
    complete = (image_dir / "b.png").read_bytes()
    (image_dir / "b.png").write_bytes(complete[: len(complete) // 2])
    with pytest.raises(ValueError, match=r"image id 7: file .*b\.png cannot be decoded \("):
        CocoDetection(path, image_dir)[1]


def test_a_mask_of_another_size_than_its_image_names_both(tmp_path, tiny_coco):
    _, image_dir = write_coco(tmp_path, tiny_coco)
    tiny_coco["annotations"][2]["segmentation"]["size"] = [20, 80]  # not validated: a COCO built by hand
    dataset = CocoDetection(coco_from_dict(tiny_coco), image_dir, masks=True)
    with pytest.raises(ValueError, match=r"image id 7: file .*b\.png: the mask of annotation id 5 is 80x20 pixels "
                                         r"\(width x height\) but the image is 40x40"):
        dataset[1]
