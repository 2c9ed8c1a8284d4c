"""Box refinement by gradient ascent on a PS-PrRoI pooled score climbs to the object."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from sodlib.models.box_refinement import part_score_maps, pooled_part_score, refine_box


def test_part_maps_mark_each_part_positive_and_the_other_parts_negative() -> None:
    box = torch.tensor([12.0, 12.0, 36.0, 36.0])
    maps = part_score_maps(box, 3, (64, 64), 8)  # parts of 8 x 8 px: exactly the cells 2, 3, 4 on each axis
    assert maps.shape == (1, 9, 8, 8)
    assert maps[0, 0, 2, 2] == pytest.approx(1.0) and maps[0, 0, 3, 3] == pytest.approx(-1.0)
    assert maps[0, 4, 3, 3] == pytest.approx(1.0) and maps[0, 8, 3, 2] == pytest.approx(-1.0)
    assert maps[0, :, 6, 6].abs().sum() == 0  # background
    assert maps[0, 0, 1, 2] == 0  # the cell just above the object


def test_gradient_ascent_moves_a_displaced_box_onto_the_object() -> None:
    truth = torch.tensor([70.0, 54.0, 118.0, 94.0], dtype=torch.float64)
    maps = part_score_maps(truth, 3, (192, 192), 8)
    start = torch.tensor([80.0, 44.0, 136.0, 100.0], dtype=torch.float64)
    path = refine_box(lambda b: pooled_part_score(maps, b, 3, 1 / 8), start, steps=60, step_size=1.0)
    iou = box_iou(path, truth[None])[:, 0]
    assert path.shape == (61, 4)
    assert iou[0] < 0.5 and iou[-1] > 0.9
    scores = torch.stack([pooled_part_score(maps, b, 3, 1 / 8) for b in path])
    assert scores[-1] > scores[0] + 0.2


def test_refine_box_rejects_bad_steps() -> None:
    with pytest.raises(ValueError, match="step_size"):
        refine_box(lambda b: b.sum(), torch.zeros(4), steps=3, step_size=0.0)
