"""Tiles: the grid (SAHI's rule, every pixel covered), the checks of tile settings, and the training dataset of tiles."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sodlib.data import CocoDetection
from sodlib.data.tiles import TiledDataset, TileSettings, check_tiling, tile_boxes, tile_count

GRIDS = [(1600, 1600, 512, 0.2), (1600, 1200, 512, 0.2), (640, 640, 256, 0.0), (1000, 777, 300, 0.5),
         (512, 512, 512, 0.2), (2048, 1536, 640, 0.25), (100, 900, 64, 0.1)]


@pytest.mark.parametrize("height,width,tile,overlap", GRIDS)
def test_every_pixel_is_in_a_tile_and_every_tile_inside_the_image(height, width, tile, overlap):
    covered = np.zeros((height, width), np.int32)
    boxes = tile_boxes(height, width, tile, overlap)
    for x1, y1, x2, y2 in boxes:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert (x2 - x1, y2 - y1) == (tile, tile)  # the border tiles are moved in, never cut short
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1
    assert len(boxes) == tile_count(height, width, tile, overlap)


@pytest.mark.parametrize("height,width,tile,overlap", GRIDS)
def test_neighbours_overlap_by_floor_of_overlap_times_tile(height, width, tile, overlap):
    xs = sorted({box[0] for box in tile_boxes(height, width, tile, overlap)})
    steps = np.diff(xs)
    if len(steps) > 1:  # all but the last step (the border tile moved in, which overlaps more)
        assert set(steps[:-1].tolist()) == {tile - int(overlap * tile)}
    if len(steps):
        assert steps[-1] <= tile - int(overlap * tile)


def test_the_documented_grid_of_a_1600_px_image():
    xs = sorted({box[0] for box in tile_boxes(1600, 1600, 512, 0.2)})
    assert xs == [0, 410, 820, 1088]
    assert tile_count(1600, 1600, 512, 0.2) == 16


@pytest.mark.parametrize("height,width,tile,overlap", GRIDS)
def test_the_grid_is_sahis(height, width, tile, overlap):
    slicing = pytest.importorskip("sahi.slicing")
    theirs = slicing.get_slice_bboxes(image_height=height, image_width=width, slice_height=tile, slice_width=tile,
                                      overlap_height_ratio=overlap, overlap_width_ratio=overlap)
    assert [tuple(box) for box in theirs] == tile_boxes(height, width, tile, overlap)


def test_an_object_narrower_than_the_overlap_lies_whole_in_some_tile():
    boxes = tile_boxes(1600, 1600, 512, 0.2)
    side = int(0.2 * 512)  # 102 px
    for x in range(0, 1600 - side, 7):
        assert any(x1 <= x and x + side <= x2 for x1, _, x2, _ in boxes), x


@pytest.mark.parametrize("tile,overlap,phrase", [(0, 0.2, "integer >= 32"), (16, 0.2, "integer >= 32"),
                                                 (512.0, 0.2, "integer"), (True, 0.2, "integer"),
                                                 (512, 1.0, "[0, 1)"), (512, -0.1, "[0, 1)"), (512, "0.2", "[0, 1)")])
def test_bad_tile_settings_are_refused(tile, overlap, phrase):
    with pytest.raises(ValueError, match="must be") as error:
        check_tiling(tile, overlap)
    assert phrase in str(error.value)
    with pytest.raises(ValueError):
        TileSettings(size=tile, overlap=overlap)


def test_a_tile_larger_than_the_image_is_refused_with_the_largest_that_fits():
    with pytest.raises(ValueError, match=r"larger than the image \(900 x 600 px\).*at most 600 px"):
        tile_boxes(600, 900, 640, 0.2)


def _large_image_dataset(tmp_path, objects):
    """One 600 x 600 image with square objects ``[(x, y, side)]`` (masks as polygons)."""
    image = np.zeros((600, 600, 3), np.uint8)
    annotations = []
    for number, (x, y, side) in enumerate(objects, start=1):
        image[y:y + side, x:x + side] = 255
        annotations.append({"id": number, "image_id": 1, "category_id": 3, "bbox": [x, y, side, side],
                            "area": side * side, "iscrowd": 0,
                            "segmentation": [[x, y, x + side, y, x + side, y + side, x, y + side]]})
    Image.fromarray(image).save(tmp_path / "big.png")
    data = {"images": [{"id": 1, "file_name": "big.png", "width": 600, "height": 600}], "annotations": annotations,
            "categories": [{"id": 3, "name": "thing"}]}
    (tmp_path / "big.json").write_text(json.dumps(data))
    return CocoDetection(tmp_path / "big.json", tmp_path)


def test_tiles_cut_objects_and_keep_the_part_inside(tmp_path):
    # tiles of 256 with overlap 0.25: x = 0, 192, 344; an object at x 240..260 lies in the first two tiles
    dataset = _large_image_dataset(tmp_path, [(240, 20, 20), (100, 100, 10), (250, 500, 40)])
    tiled = TiledDataset(dataset, TileSettings(size=256, overlap=0.25, full_image=True), masks=True)
    assert len(tiled) == 9 + 1 and tiled.tiles_per_image() == 9
    first, target = tiled[0]
    assert target["tile"] == (0, 0, 256, 256) and first.shape == (3, 256, 256)
    boxes = {tuple(box.tolist()) for box in target["boxes"]}
    assert (240.0, 20.0, 256.0, 40.0) in boxes  # the part of object 1 inside the tile (16 of its 20 columns)
    assert (100.0, 100.0, 110.0, 110.0) in boxes
    index = target["boxes"].tolist().index([240.0, 20.0, 256.0, 40.0])
    assert target["area"][index] == 16 * 20 and target["masks"][index].sum() == 16 * 20
    _, second = tiled[1]  # x 192..448: object 1 whole, shifted by the tile's corner
    assert second["tile"] == (192, 0, 448, 256)
    assert [48.0, 20.0, 68.0, 40.0] in second["boxes"].tolist()
    whole, full = tiled[len(tiled) - 1]  # the whole image comes last, with every object whole
    assert whole.shape == (3, 600, 600) and len(full["boxes"]) == 3


def test_a_sliver_under_min_area_ratio_is_dropped(tmp_path):
    # object 250..290 (40 px) against tile 0..256: 6 of 40 columns inside = 15 % of its area
    dataset = _large_image_dataset(tmp_path, [(250, 20, 40)])
    keeps = TiledDataset(dataset, TileSettings(size=256, overlap=0.25, min_area_ratio=0.1))
    drops = TiledDataset(dataset, TileSettings(size=256, overlap=0.25, min_area_ratio=0.2))
    assert len(keeps[0][1]["boxes"]) == 1 and len(drops[0][1]["boxes"]) == 0
    assert len(drops[1][1]["boxes"]) == 1  # the next tile holds it whole


def test_objects_without_a_segmentation_are_cut_by_their_box(tmp_path):
    dataset = _large_image_dataset(tmp_path, [(240, 20, 20)])
    for annotation in dataset.coco.dataset["annotations"]:
        del annotation["segmentation"]
    tiled = TiledDataset(dataset, TileSettings(size=256, overlap=0.25), masks=True)
    assert tiled[0][1]["boxes"].tolist() == [[240.0, 20.0, 256.0, 40.0]]


def test_a_tiled_dataset_refuses_an_image_smaller_than_the_tile(tmp_path):
    dataset = _large_image_dataset(tmp_path, [(10, 10, 10)])
    with pytest.raises(ValueError, match="size=640 is larger than image id 1"):
        TiledDataset(dataset, TileSettings(size=640))


def test_a_run_configuration_with_tiles_trains_on_tiles(tmp_path):
    from sodlib.engine.runs import check_run_config, datasets_from_config

    _large_image_dataset(tmp_path, [(240, 20, 20), (100, 100, 10)])
    config = {"data": {"train_annotations": str(tmp_path / "big.json"), "train_images": str(tmp_path),
                       "tiles": {"size": 256, "overlap": 0.25, "full_image": False}},
              "model": {}, "train": {}}
    train, _ = datasets_from_config(check_run_config(config))
    assert len(train) == 9 and isinstance(train, TiledDataset)
    with pytest.raises(ValueError, match="tiles and oversample"):
        check_run_config({**config, "data": {**config["data"], "oversample": 2}})
    with pytest.raises(ValueError, match=r"\[data\] tiles"):
        check_run_config({**config, "data": {**config["data"], "tiles": {"size": 256, "overlap": 1.0}}})
