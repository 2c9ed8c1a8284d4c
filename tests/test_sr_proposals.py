"""Re-scoring small detections with a classifier of upscaled crops (seed 001's Table II on the embedded data)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from sodlib.engine import sr_proposals
from sodlib.engine.sr_proposals import SCALE, WINDOW, rescore, window_crops
from sodlib.models.crop_classifier import CropClassifier


def test_windows_are_centred_on_the_box_and_shifted_into_the_image():
    image = torch.arange(100 * 120, dtype=torch.float32).view(1, 100, 120).repeat(3, 1, 1)
    boxes = torch.tensor([[40.0, 30.0, 50.0, 40.0], [0.0, 0.0, 6.0, 6.0], [110.0, 90.0, 120.0, 100.0]])
    crops = window_crops(image, boxes, size=32)
    assert crops.shape == (3, 3, 32, 32)
    assert crops[0, 0, 0, 0] == image[0, 35 - 16, 45 - 16]  # centred
    assert crops[1, 0, 0, 0] == image[0, 0, 0]  # shifted in at the top left
    assert crops[2, 0, -1, -1] == image[0, 99, 119]  # and at the bottom right


def test_windows_at_scale_two_cut_the_same_place_from_the_twice_larger_image():
    small = torch.rand(3, 64, 64)
    large = torch.nn.functional.interpolate(small[None], scale_factor=2, mode="nearest")[0]
    boxes = torch.tensor([[20.0, 22.0, 30.0, 34.0]])
    lr, hr = window_crops(small, boxes, 16), window_crops(large, boxes, 16, scale=2)
    assert torch.equal(torch.nn.functional.interpolate(lr, scale_factor=2, mode="nearest"), hr)


def test_rescoring_takes_the_geometric_mean_for_small_detections_only():
    prediction = {"image_id": 1, "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 100.0, 100.0], [5.0, 5.0, 25.0, 25.0]]),
                  "labels": torch.tensor([2, 1, 1]), "scores": torch.tensor([0.8, 0.6, 0.5])}
    probabilities = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])  # the two small detections, classes 0..2
    out = rescore([prediction], [probabilities])[0]
    assert math.isclose(float(out["scores"][0]), math.sqrt(0.8 * 0.7), rel_tol=1e-6)
    assert float(out["scores"][1]) == pytest.approx(0.6)
    assert math.isclose(float(out["scores"][2]), math.sqrt(0.5 * 0.4), rel_tol=1e-6)
    assert torch.equal(prediction["scores"], torch.tensor([0.8, 0.6, 0.5]))  # the input is left alone


def test_the_crop_classifier_gives_one_logit_per_class_and_the_background():
    model = CropClassifier(6)
    assert model(torch.rand(2, 3, WINDOW * SCALE, WINDOW * SCALE)).shape == (2, 7)
    with pytest.raises(ValueError, match="Tensor\\[B, 3, N, N\\]"):
        model(torch.rand(3, 64, 64))


@pytest.mark.slow
def test_the_experiment_writes_every_row_on_a_tiny_schedule(tmp_path, monkeypatch):
    monkeypatch.setattr(sr_proposals, "QUICK", sr_proposals.ProposalSetting(
        sr_iterations=1, sr_pairs=4, classifier_iterations=1, classifier_batch=4, train_images=3, val_images=3))
    record = sr_proposals.run_sr_proposals(seed=0, quick=True, results_dir=tmp_path / "results", runs_root=tmp_path / "runs")
    written = json.loads((tmp_path / "results" / "sr_proposals_seed0_quick.json").read_text())
    assert written["complete"] and list(written["rows"]) == ["detector", "bilinear", "bicubic", "encoder_decoder", "espcn",
                                                            "srcnn", "hr_twin"]
    assert set(written["rows"]["hr_twin"]["per_category_AP50"]) == {"cross", "disc", "hexagon", "square", "star", "triangle"}
    assert written["rows"]["bicubic"]["classifier_accuracy_by_side"]["all"]["objects"] > 0
    assert record["path"].endswith("sr_proposals_seed0_quick.json")
    with pytest.raises(ValueError, match="seed"):
        sr_proposals.run_sr_proposals(seed=-1, quick=True, results_dir=tmp_path)
