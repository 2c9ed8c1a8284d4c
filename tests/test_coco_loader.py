"""load_coco: every malformed input gets an error naming the record, the field and the fix."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sodlib.data import CocoFormatError, embedded_dataset, generate_annotation_only_coco, load_coco, validate_coco
from sodlib.data.coco import CocoWarning, check_image_files, decode_rle_counts
from sodlib.data.synthetic import uncompressed_rle
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



# --- boxes, areas and segmentations that would crash or mislead training -------------------------------------------

def compressed_rle(mask: np.ndarray) -> dict:
    """pycocotools' compressed RLE of a binary ``[H, W]`` mask, its counts as json text."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": [int(v) for v in rle["size"]]}


def crowd_mask(height: int = 40, width: int = 40) -> np.ndarray:
    """The tiny crowd's region (annotation id 5: x 0..3, y 0..1) on an image of the given size."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[0:2, 0:4] = 1
    return mask


@pytest.mark.parametrize("field, name", [(2, "width"), (3, "height")])
@pytest.mark.parametrize("value", [0, 0.0])
def test_box_of_zero_size_is_warned_and_left_out_of_the_targets(tmp_path, tiny_coco, field, name, value):
    tiny_coco["annotations"][1]["bbox"][field] = value
    path, image_dir = write_coco(tmp_path, tiny_coco)
    with pytest.warns(CocoWarning, match=r"1 annotation\(s\) have a bbox of zero width or height.*ids 2\)"):
        coco = load_coco(path)
    from sodlib.data import CocoDetection

    dataset = CocoDetection(coco, image_dir)
    image_index = dataset.image_ids.index(tiny_coco["annotations"][1]["image_id"])
    assert 2 not in [a["id"] for a in dataset.annotations_of(image_index)]
    assert (dataset.target_of(image_index)["boxes"][:, 2:] > dataset.target_of(image_index)["boxes"][:, :2]).all()
    tiny_coco["annotations"][1]["bbox"][field] = -1
    assert f"annotations[1] (id 2): bbox {name} is -1 (negative)" in error_for(tmp_path, tiny_coco)


NON_FINITE = [float("nan"), float("inf"), -float("inf")]


@pytest.mark.parametrize("value", NON_FINITE, ids=repr)
@pytest.mark.parametrize("field, expected", [("bbox", "'bbox' is [2, {}, 10, 20]"), ("area", "'area' is {}"),
                                             ("segmentation", "segmentation[0] holds {}")])
def test_non_finite_numbers(tmp_path, tiny_coco, field, expected, value):
    annotation = tiny_coco["annotations"][0]
    if field == "area":
        annotation["area"] = value
    else:
        (annotation["bbox"] if field == "bbox" else annotation["segmentation"][0])[1] = value
    message = error_for(tmp_path, tiny_coco)  # json writes NaN / Infinity, which json.load reads back
    assert f"annotations[0] (id 1): {expected.format(value)}" in message and "fix:" in message


@pytest.mark.parametrize("segmentation, expected", [
    ([[2, 3, 12, 3]], "segmentation[0] has 4 numbers"),
    ([[2, 3, 12, 3, 12, 23, 2]], "segmentation[0] has 7 numbers"),
    ([[2, 3, 12, 3, 12, 23, 2, 23], [1, 1]], "segmentation[1] has 2 numbers"),
    ([2, 3, 12, 3, 12, 23, 2, 23], "'segmentation' is a flat list of numbers"),
    ([[2, 3, 12, "3", 12, 23]], "segmentation[0] holds '3'"),
    ([[2, 3, 12, 3, 12, True]], "segmentation[0] holds True"),
    (["2,3,12,3,12,23"], "segmentation[0] is '2,3,12,3,12,23'"),
    ([{"counts": [3072], "size": [48, 64]}], "segmentation[0] is {"),
])
def test_malformed_polygons(tmp_path, tiny_coco, segmentation, expected):
    tiny_coco["annotations"][0]["segmentation"] = segmentation
    message = error_for(tmp_path, tiny_coco)
    assert f"annotations[0] (id 1): {expected}" in message and "fix:" in message


@pytest.mark.parametrize("segmentation, expected", [
    ("polygon", "'segmentation' is 'polygon'"),
    (5, "'segmentation' is 5"),
    ({"size": [48, 64]}, "RLE 'counts' is None"),
    ({"counts": [3072]}, "RLE 'size' is None"),
    ({"counts": [3072], "size": [48.0, 64.0]}, "RLE 'size' is [48.0, 64.0]"),
    ({"counts": 3072, "size": [48, 64]}, "RLE 'counts' is 3072"),
])
def test_segmentation_of_the_wrong_type(tmp_path, tiny_coco, segmentation, expected):
    tiny_coco["annotations"][0]["segmentation"] = segmentation
    message = error_for(tmp_path, tiny_coco)
    assert f"annotations[0] (id 1): {expected}" in message and "fix:" in message


@pytest.mark.parametrize("counts, size, expected", [
    ([0, 2, 38, 2, 38, 2, 38, 2, 1478], [40, 41], "RLE 'size' is [40, 41] but the image is [40, 40] ([height, width])"),
    ([0, 2, 38, 2, 38, 2, 38, 2, 1400], [40, 40], "RLE 'counts' add up to 1522 pixels, but 'size' [40, 40] holds 1600"),
    ([0, 2, 38, -2, 42, 2, 38, 2, 1478], [40, 40], "RLE 'counts' has a negative run (-2 at position 3)"),
    ([0, 2.5, 38, 2, 38, 2, 38, 2, 1477.5], [40, 40], "RLE 'counts' holds 2.5"),
])
def test_bad_uncompressed_rle(tmp_path, tiny_coco, counts, size, expected):
    tiny_coco["annotations"][2]["segmentation"] = {"counts": counts, "size": size}
    message = error_for(tmp_path, tiny_coco)
    assert f"annotations[2] (id 5): {expected}" in message and "fix:" in message


def test_rle_in_width_height_order_is_named(tmp_path, tiny_coco):
    tiny_coco["annotations"][0].update(segmentation={"counts": [3072], "size": [64, 48]}, area=0)
    assert "RLE 'size' is [64, 48] (that is [width, height]) but the image is [48, 64]" in error_for(tmp_path, tiny_coco)


@pytest.mark.parametrize("change, expected", [
    (lambda rle: dict(rle, counts="zz" + rle["counts"]), "the compressed RLE 'counts' cannot be decoded (character 'z' at position 0"),
    (lambda rle: dict(rle, counts="\u00e9" + rle["counts"]), "the compressed RLE 'counts' cannot be decoded (character 'é' at position 0"),
    (lambda rle: dict(rle, counts=rle["counts"] + "h"), "the compressed RLE 'counts' cannot be decoded (the string is cut off inside a number"),
    (lambda rle: dict(rle, counts="0O" + rle["counts"]), "RLE 'counts' has a negative run (-1 at position 1)"),
    (lambda rle: compressed_rle(crowd_mask(40, 39)) | {"size": [40, 40]}, "RLE 'counts' add up to 1560 pixels"),
    (lambda rle: compressed_rle(crowd_mask(40, 20)), "RLE 'size' is [40, 20] but the image is [40, 40]"),
])
def test_bad_compressed_rle(tmp_path, tiny_coco, change, expected):
    tiny_coco["annotations"][2]["segmentation"] = change(compressed_rle(crowd_mask()))
    message = error_for(tmp_path, tiny_coco)
    assert f"annotations[2] (id 5): {expected}" in message and "fix:" in message


def test_compressed_rle_is_accepted_for_crowd_and_single_objects(tmp_path, tiny_coco):
    tiny_coco["annotations"][2]["segmentation"] = compressed_rle(crowd_mask())
    single = np.zeros((48, 64), dtype=np.uint8)
    single[3:23, 2:12] = 1
    tiny_coco["annotations"][0]["segmentation"] = compressed_rle(single)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coco = load_coco(write_coco(tmp_path, tiny_coco, with_images=False)[0])
    assert int(coco.annToMask(coco.anns[5]).sum()) == 8 and int(coco.annToMask(coco.anns[1]).sum()) == 200


def test_rle_decoder_agrees_with_pycocotools():
    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 5)), np.ones((7, 5)), rng.random((30, 17)) < 0.5, rng.random((300, 200)) < 0.01]
    for mask in masks:
        assert decode_rle_counts(compressed_rle(mask)["counts"]) == uncompressed_rle(mask)["counts"]


@pytest.mark.parametrize("index, key, value, expected", [
    (3, "bbox", [500, 5, 20, 30], "annotations[3] (id 9): bbox [500, 5, 20, 30] lies 480 px beyond its 40x40 image"),
    (0, "segmentation", [[0, 0, 1e9, 0, 1e9, 1e9]], "annotations[0] (id 1): 'segmentation' reaches 1e+09 px beyond"),
])
def test_coordinates_far_outside_the_image(tmp_path, tiny_coco, index, key, value, expected):
    tiny_coco["annotations"][index][key] = value  # the polygon is refused before pycocotools would rasterise it
    message = error_for(tmp_path, tiny_coco)
    assert expected in message and "not normalised" in message


@pytest.mark.parametrize("width, height", [(64.5, 48), (64, True)])
def test_image_size_must_be_whole_pixels(tmp_path, tiny_coco, width, height):
    tiny_coco["images"][0].update(width=width, height=height)
    assert "images[0] (id 1): " in error_for(tmp_path, tiny_coco)


# --- warnings: suspicious but usable ---------------------------------------------------------------------------------

def load_warnings(tmp_path, data) -> list[str]:
    """The CocoWarning messages that loading ``data`` gives (it must load)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_coco(write_coco(tmp_path, data, with_images=False)[0])
    assert all(issubclass(w.category, CocoWarning) for w in caught)
    return [str(w.message) for w in caught]


def test_area_far_from_the_mask_warns_with_count_and_ids(tmp_path, tiny_coco):
    tiny_coco["annotations"][0]["area"] = 900.0  # its polygon covers 200 pixels
    (message,) = load_warnings(tmp_path, tiny_coco)
    assert "1 annotation(s) have an 'area' far from their mask's pixel area" in message
    assert "(ids 1), e.g. id 1: area 900, mask 200 px" in message and "fix: set 'area'" in message


def test_many_warned_annotations_are_counted_and_the_first_ids_listed(tmp_path, tiny_coco):
    base = tiny_coco["annotations"][0]
    tiny_coco["annotations"] = [dict(base, id=i, area=1.0) for i in range(12)]
    (message,) = load_warnings(tmp_path, tiny_coco)
    assert "12 annotation(s)" in message and "(ids 0, 1, 2, 3, 4, ...)" in message


@pytest.mark.parametrize("area", [203.0, 197.0, 110.0, 390.0])
def test_areas_near_the_mask_are_silent(tmp_path, tiny_coco, area):
    tiny_coco["annotations"][0]["area"] = area  # mask 200 px: within 4 px^2, or less than a factor 2 apart
    assert load_warnings(tmp_path, tiny_coco) == []


def test_small_areas_differing_by_a_few_pixels_are_silent(tmp_path, tiny_coco):
    tiny_coco["annotations"][2]["area"] = 4.5  # crowd mask of 8 px: 44 % apart but only 3.5 px^2
    assert load_warnings(tmp_path, tiny_coco) == []


@pytest.mark.parametrize("bbox, warned", [
    ([5, 5, 35.9, 30], False), ([-0.9, 5, 20, 30], False), ([5, 5, 20, 35.99], False),
    ([5, 5, 36.5, 30], True), ([-1.5, 5, 20, 30], True), ([5, -3, 20, 30], True),
])
def test_box_beyond_the_image_warns_past_one_pixel(tmp_path, tiny_coco, bbox, warned):
    tiny_coco["annotations"][3]["bbox"] = bbox  # image 7 is 40 x 40
    messages = load_warnings(tmp_path, tiny_coco)
    assert [m for m in messages if "beyond their image" in m] == messages
    assert len(messages) == warned
    if warned:
        assert f"(ids 9), e.g. id 9: bbox {bbox} in a 40x40 image" in messages[0]


def test_warnings_come_with_the_errors(tmp_path, tiny_coco):
    tiny_coco["annotations"][0]["area"] = 900.0
    tiny_coco["annotations"][1]["bbox"][2] = -2
    with pytest.warns(CocoWarning, match="far from their mask"), pytest.raises(CocoFormatError, match="bbox width is -2"):
        load_coco(write_coco(tmp_path, tiny_coco, with_images=False)[0])


def test_sodlib_own_data_passes_without_warnings(tmp_path):
    annotation_only = generate_annotation_only_coco(tmp_path / "scale.json", num_images=300, num_objects=2000, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CocoWarning)
        for split in ("train", "val"):
            coco = load_coco(*embedded_dataset(split), check_images=True)
            assert any(a["iscrowd"] for a in coco.dataset["annotations"])
        load_coco(annotation_only)


# --- files that are not COCO json at all -----------------------------------------------------------------------------

@pytest.mark.parametrize("content, expected", [
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "byte 0x89 at offset 0 is not utf-8 text"),
    ('{"images": [], "categories": [{"id": 1, "name": "caf\u00e9"}]}'.encode("latin-1"), "byte 0xe9 at offset 52"),
    (b"", "the file is empty"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"images": [\n  {"id": 1,}\n]}', "invalid json, Expecting property name enclosed in double quotes at line 2"),
])
def test_a_file_that_is_not_json_is_named_in_one_line(tmp_path, content, expected):
    path = tmp_path / "instances.json"
    path.write_bytes(content)
    with pytest.raises(CocoFormatError) as info:
        load_coco(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a COCO json: ") and expected in message and "fix:" in message
    assert "\n" not in message


# --- image files ------------------------------------------------------------------------------------------------------

def break_images(image_dir):
    """a.png empty, b.png cut in half, c.png not an image, d.png 48x64 instead of 64x48; e.png fine."""
    (image_dir / "a.png").write_bytes(b"")
    complete = (image_dir / "b.png").read_bytes()
    (image_dir / "b.png").write_bytes(complete[: len(complete) // 2])
    (image_dir / "c.png").write_bytes(b"not an image at all")
    Image.new("RGB", (48, 64)).save(image_dir / "d.png")


@pytest.fixture
def broken_images(tmp_path, tiny_coco):
    tiny_coco["images"] = [{"id": i, "file_name": f"{name}.png", "width": 64, "height": 48}
                           for i, name in enumerate("abcde", start=1)]
    tiny_coco["annotations"] = [dict(a, image_id=1) for a in tiny_coco["annotations"] if a["id"] != 5]
    path, image_dir = write_coco(tmp_path, tiny_coco)
    break_images(image_dir)
    return path, image_dir


@pytest.mark.parametrize("workers", [1, 3])
def test_every_image_is_decoded_and_compared_with_the_json(broken_images, workers):
    path, image_dir = broken_images
    with pytest.raises(CocoFormatError) as info:
        load_coco(path, image_dir, check_images=True, workers=workers)
    message = str(info.value)
    assert "4 problem(s)" in message
    assert f"image id 1: file {image_dir / 'a.png'} is empty (0 bytes)" in message
    assert f"image id 2: file {image_dir / 'b.png'} cannot be decoded (" in message
    assert f"image id 3: file {image_dir / 'c.png'} cannot be decoded (not an image PIL can identify)" in message
    assert (f"image id 4: file {image_dir / 'd.png'} is 48x64 pixels (width x height) but the json says 64x48; "
            "fix: set the image's 'width' and 'height'") in message
    assert "image id 5" not in message
    load_coco(path, image_dir)  # without check_images the images are not read


def test_a_truncated_jpeg_is_refused(tmp_path, tiny_coco):
    path, image_dir = write_coco(tmp_path, tiny_coco)
    Image.open(image_dir / "a.png").convert("RGB").save(tmp_path / "a.jpg", quality=90)
    complete = (tmp_path / "a.jpg").read_bytes()
    (image_dir / "a.png").write_bytes(complete[: len(complete) * 2 // 3])  # PIL opens by content, not by name
    with pytest.raises(CocoFormatError, match=r"image id 1: file .*a\.png cannot be decoded \(image file is truncated"):
        load_coco(path, image_dir, check_images=True)


@pytest.mark.parametrize("workers", [0, -1, 1.5, "2"])
def test_bad_workers_are_refused(tiny_coco_files, workers):
    with pytest.raises(ValueError, match="workers="):
        load_coco(*tiny_coco_files, check_images=True, workers=workers)


def test_existence_alone_does_not_decode(broken_images):
    path, image_dir = broken_images
    check_image_files(json.loads(path.read_text()), image_dir)  # what CocoDetection checks up front


@pytest.mark.parametrize("name", ["../a.png", "sub/../../a.png", "/etc/a.png", "..\\a.png", "C:\\images\\a.png"])
def test_a_file_name_that_leaves_the_image_folder_is_refused(tmp_path, tiny_coco, name):
    tiny_coco["images"][0]["file_name"] = name
    message = error_for(tmp_path, tiny_coco)
    assert f"images[0] (id 1): 'file_name' {name!r} leaves the image folder" in message


def test_file_names_in_subfolders_are_fine(tmp_path, tiny_coco):
    tiny_coco["images"][0]["file_name"] = "sub/dir/a..b.png"
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(tiny_coco))
    assert load_coco(path).imgs[1]["file_name"] == "sub/dir/a..b.png"
