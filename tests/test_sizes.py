"""Size bins as pycocotools counts them: by the area field, both edges inclusive."""
from __future__ import annotations

import numpy as np
import pytest

from sodlib.data.sizes import (SIZE_BINS, annotation_area, annotation_areas, count_by_size_bin, in_size_bin,
                               size_bin_label)


def cocoeval_area_ranges() -> dict[str, tuple[float, float]]:
    """The ranges COCOeval itself uses, read from pycocotools' Params."""
    from pycocotools.cocoeval import Params

    params = Params(iouType="bbox")
    return {label: tuple(rng) for label, rng in zip(params.areaRngLbl, params.areaRng) if label != "all"}


def test_bins_are_cocoevals():
    assert {name: tuple(map(float, rng)) for name, rng in cocoeval_area_ranges().items()} == SIZE_BINS


@pytest.mark.parametrize("area, bins", [(0.0, {"small"}), (1023.9, {"small"}), (1024.0, {"small", "medium"}),
                                        (1024.1, {"medium"}), (9216.0, {"medium", "large"}), (9216.5, {"large"})])
def test_edges_are_inclusive(area, bins):
    assert {name for name in SIZE_BINS if in_size_bin([area], name)[0]} == bins


def test_edge_objects_are_counted_in_both_bins():
    assert count_by_size_bin([10.0, 1024.0, 5000.0, 9216.0, 20000.0]) == {"small": 2, "medium": 3, "large": 2}


def test_area_field_decides_not_the_box():
    annotation = {"area": 900.0, "bbox": [0, 0, 40, 40]}  # a thin diagonal object: small mask, medium box
    assert annotation_area(annotation) == 900.0 and annotation_area(annotation, "box") == 1600.0
    assert size_bin_label(annotation_area(annotation)) == "small"
    assert size_bin_label(annotation_area(annotation, "box")) == "medium"


def test_area_mode_is_checked():
    with pytest.raises(ValueError, match="area='mask'"):
        annotation_areas([{"area": 1.0, "bbox": [0, 0, 1, 1]}], area="mask_area")


def test_unknown_bin_is_refused():
    with pytest.raises(ValueError, match="known bins: small, medium, large"):
        in_size_bin(np.array([1.0]), "tiny")


def test_label_picks_the_first_bin_for_drawing():
    assert size_bin_label(1024.0) == "small" and size_bin_label(9216.0) == "medium"
