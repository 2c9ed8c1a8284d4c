"""load_coco: every malformed input gets an error naming the record, the field and the fix."""
from __future__ import annotations

import json

import pytest
from pycocotools.coco import COCO

from sodlib.data import CocoFormatError, load_coco, validate_coco
from tests.conftest import write_coco


def test_valid_file_loads_into_a_pycocotools_index(tiny_coco_files):
    path, image_dir = tiny_coco_files
    coco = load_coco(path, image_dir, check_images=True)
    assert isinstance(coco, COCO)
    assert sorted(coco.imgs) == [1, 7] and sorted(coco.anns) == [1, 2, 5, 9] and sorted(coco.cats) == [3, 10]
    assert [a["id"] for a in coco.imgToAnns[7]] == [5, 9]


def test_loading_prints_nothing(tiny_coco_files, capsys):
    load_coco(tiny_coco_files[0])
    assert capsys.readouterr().out == ""


def test_missing_iscrowd_is_read_as_zero(tmp_path, tiny_coco):
    del tiny_coco["annotations"][0]["iscrowd"]
    coco = load_coco(write_coco(tmp_path, tiny_coco, with_images=False)[0])
    assert coco.anns[1]["iscrowd"] == 0


def error_for(tmp_path, data) -> str:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CocoFormatError) as info:
        load_coco(path)
    return str(info.value)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(tmp_path, tiny_coco, key):
    del tiny_coco[key]
    message = error_for(tmp_path, tiny_coco)
    assert f"missing top-level key '{key}'" in message and "fix:" in message


def test_results_file_instead_of_instances(tmp_path):
    assert "results" in error_for(tmp_path, [{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}])


@pytest.mark.parametrize("field, value, expected", [(2, -3.0, "bbox width is -3.0"), (3, -1, "bbox height is -1")])
def test_negative_box_size(tmp_path, tiny_coco, field, value, expected):
    tiny_coco["annotations"][1]["bbox"][field] = value
    message = error_for(tmp_path, tiny_coco)
    assert "annotations[1] (id 2)" in message and expected in message and "[x, y, width, height]" in message


def test_malformed_bbox(tmp_path, tiny_coco):
    tiny_coco["annotations"][0]["bbox"] = [1, 2, 3]
    assert "'bbox' is [1, 2, 3]" in error_for(tmp_path, tiny_coco)


def test_annotation_of_unknown_image(tmp_path, tiny_coco):
    tiny_coco["annotations"][3]["image_id"] = 99
    message = error_for(tmp_path, tiny_coco)
    assert "annotations[3] (id 9): image_id 99 is not in 'images'" in message


def test_annotation_of_unknown_category(tmp_path, tiny_coco):
    tiny_coco["annotations"][0]["category_id"] = 4
    assert "annotations[0] (id 1): category_id 4 is not in 'categories'" in error_for(tmp_path, tiny_coco)


def test_missing_area(tmp_path, tiny_coco):
    del tiny_coco["annotations"][2]["area"]
    message = error_for(tmp_path, tiny_coco)
    assert "annotations[2] (id 5): 'area' is None" in message and "pycocotools.mask.area" in message


@pytest.mark.parametrize("section, index, field", [("images", 1, "id"), ("annotations", 3, "id"), ("categories", 1, "id")])
def test_duplicate_ids(tmp_path, tiny_coco, section, index, field):
    tiny_coco[section][index][field] = tiny_coco[section][0][field]
    assert "duplicate" in error_for(tmp_path, tiny_coco)


def test_image_without_size(tmp_path, tiny_coco):
    del tiny_coco["images"][0]["width"]
    assert "images[0] (id 1): 'width' is None" in error_for(tmp_path, tiny_coco)


def test_crowd_without_rle(tmp_path, tiny_coco):
    tiny_coco["annotations"][2]["segmentation"] = [[0, 0, 4, 0, 4, 2]]
    assert "crowd annotation needs an RLE" in error_for(tmp_path, tiny_coco)


def test_every_problem_is_reported_at_once(tmp_path, tiny_coco):
    tiny_coco["annotations"][0]["bbox"][2] = -1
    tiny_coco["annotations"][3]["image_id"] = 99
    message = error_for(tmp_path, tiny_coco)
    assert "2 problem(s)" in message and "bbox width" in message and "image_id 99" in message


def test_long_lists_of_problems_are_cut_and_counted(tmp_path, tiny_coco):
    base = tiny_coco["annotations"][0]
    tiny_coco["annotations"] = [dict(base, id=i, bbox=[0, 0, -1, 1]) for i in range(25)]
    message = error_for(tmp_path, tiny_coco)
    assert "25 problem(s)" in message and "and 15 more" in message


def test_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(CocoFormatError, match="line 2"):
        load_coco(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_coco(tmp_path / "nope.json")


def test_missing_image_file_is_found_before_any_work(tmp_path, tiny_coco):
    path, image_dir = write_coco(tmp_path, tiny_coco)
    (image_dir / "b.png").unlink()
    with pytest.raises(CocoFormatError, match=r"image id 7: file .*b\.png is missing"):
        load_coco(path, image_dir, check_images=True)
    load_coco(path)  # the annotations alone are fine


def test_check_images_needs_a_folder(tiny_coco_files):
    with pytest.raises(ValueError, match="needs image_dir"):
        load_coco(tiny_coco_files[0], check_images=True)


def test_validate_coco_accepts_the_valid_dict(tiny_coco):
    assert validate_coco(tiny_coco) is None
