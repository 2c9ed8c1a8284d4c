"""sodlib.engine.train: determinism, exact resume, schedules, run folders, and refused inputs."""
from __future__ import annotations

import json
import math

import pytest
import torch

from sodlib.data import CocoDetection, generate_synthetic_coco
from sodlib.engine import TrainConfig, evaluate, learning_rate_factor, train
from sodlib.engine.checkpoint import load_checkpoint
from sodlib.augment import HorizontalFlipView
from sodlib.models import faster_rcnn, rebuild_model
from tests.engine_fixtures import one_thread  # noqa: F401  (one_thread is used through pytestmark)

LOSSES = ("loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> CocoDetection:
    root = tmp_path_factory.mktemp("synthetic")
    path = generate_synthetic_coco(root, 8, seed=11, image_size=96, workers=1, progress=False)
    return CocoDetection(path, root / "train")


def _model(dataset: CocoDetection, seed: int = 0):
    torch.manual_seed(seed)
    return faster_rcnn(dataset.num_classes, "resnet_tiny", anchor_sizes=((8.0,), (16.0,), (32.0,), (64.0,), (128.0,)),
                       min_size=64, max_size=64, rpn_batch_size_per_image=64, box_batch_size_per_image=32,
                       rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=200,
                       rpn_post_nms_top_n_test=100)


def _config(**changes) -> TrainConfig:
    values = dict(iterations=6, batch_size=2, lr=0.01, warmup_iterations=2, progress=False, seed=3)
    values.update(changes)
    return TrainConfig(**values)


def _losses(history):
    return [[row[k] for k in LOSSES] for row in history]


def test_two_runs_with_one_seed_give_identical_losses(tiny_set):
    first = train(_model(tiny_set), tiny_set, config=_config())
    second = train(_model(tiny_set), tiny_set, config=_config())
    assert _losses(first.history) == _losses(second.history)
    assert len(first.history) == 6 and all(math.isfinite(v) for row in _losses(first.history) for v in row)
    third = train(_model(tiny_set), tiny_set, config=_config(seed=4))
    assert _losses(third.history) != _losses(first.history)


def test_resume_reproduces_the_uninterrupted_run_exactly(tiny_set, tmp_path):
    whole_model = _model(tiny_set)
    whole = train(whole_model, tiny_set, config=_config(run_dir=str(tmp_path / "whole"), checkpoint_every=3, optimizer="adamw",
                                                         lr=2e-3, schedule="step", milestones=(0.5,)))
    middle = tmp_path / "whole" / "checkpoints" / "iteration_000003.pt"
    assert middle.is_file()
    # a fresh process would start from a freshly built (differently initialised) model: only the checkpoint matters
    resumed_model = _model(tiny_set, seed=99)
    resumed = train(resumed_model, tiny_set, config=_config(run_dir=str(tmp_path / "resumed"), resume=str(middle),
                                                            optimizer="adamw", lr=2e-3, schedule="step", milestones=(0.5,)))
    assert [r["iteration"] for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert _losses(resumed.history) == _losses(whole.history)
    for (name, a), b in zip(whole_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_true_continues_a_run_folder_and_refuses_a_changed_schedule(tiny_set, tmp_path):
    run_dir = str(tmp_path / "run")
    train(_model(tiny_set), tiny_set, config=_config(run_dir=run_dir, iterations=2))
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["iteration"] == 2
    with pytest.raises(ValueError, match="iterations=2 but this config has iterations=4"):
        train(_model(tiny_set), tiny_set, config=_config(run_dir=run_dir, iterations=4, resume=True))
    with pytest.raises(ValueError, match="lr=0.01 but this config has lr=0.5"):
        train(_model(tiny_set), tiny_set, config=_config(run_dir=run_dir, iterations=2, lr=0.5, resume=True))


def test_one_epoch_visits_each_image_once_and_flips_are_seeded(tiny_set):
    result = train(_model(tiny_set), tiny_set, config=_config(iterations=None, epochs=2, batch_size=3))
    assert result.iterations == 2 * (8 // 3)
    seen = result.image_ids_per_rank[0]
    first, second = seen[:6], seen[6:]
    assert len(set(first)) == 6 and len(set(second)) == 6 and first != second
    assert set(first) <= set(tiny_set.image_ids)
    view = HorizontalFlipView(tiny_set, seed=3, epoch=0)
    flips = [view.flips(i) for i in range(len(tiny_set))]
    assert flips == [HorizontalFlipView(tiny_set, seed=3, epoch=0).flips(i) for i in range(len(tiny_set))]
    assert 0 < sum(flips) < len(flips)
    index = flips.index(True)
    image, target = tiny_set[index]
    flipped_image, flipped_target = view[index]
    torch.testing.assert_close(flipped_image, image.flip(-1))
    width = image.shape[-1]
    expected = torch.stack([width - target["boxes"][:, 2], target["boxes"][:, 1], width - target["boxes"][:, 0], target["boxes"][:, 3]], 1)
    torch.testing.assert_close(flipped_target["boxes"], expected)


def test_crowd_regions_are_left_out_of_training_targets():
    from sodlib.engine.train import without_crowd

    target = {"boxes": torch.tensor([[0.0, 0, 4, 4], [1, 1, 9, 9], [2, 2, 3, 3]]), "labels": torch.tensor([1, 2, 3]),
              "area": torch.tensor([16.0, 64, 1]), "iscrowd": torch.tensor([0, 1, 0]), "masks": torch.zeros(3, 10, 10, dtype=torch.uint8),
              "image_id": 7}
    kept = without_crowd(target)
    assert kept["labels"].tolist() == [1, 3] and kept["boxes"].shape == (2, 4) and kept["masks"].shape == (2, 10, 10)
    assert kept["iscrowd"].tolist() == [0, 0] and kept["area"].tolist() == [16.0, 1.0] and kept["image_id"] == 7
    no_crowd = {k: v for k, v in target.items() if k != "iscrowd"}
    assert without_crowd(no_crowd)["labels"].tolist() == [1, 2, 3]


def test_learning_rate_schedules():
    cosine = TrainConfig(warmup_iterations=10, warmup_factor=0.1, schedule="cosine", final_lr_factor=0.0)
    assert learning_rate_factor(0, 100, cosine) == pytest.approx(0.1)
    assert learning_rate_factor(5, 100, cosine) == pytest.approx((0.1 + 0.9 * 0.5) * 0.5 * (1 + math.cos(math.pi * 0.05)))
    assert learning_rate_factor(50, 100, cosine) == pytest.approx(0.5)
    assert learning_rate_factor(100, 100, cosine) == pytest.approx(0.0, abs=1e-12)
    step = TrainConfig(warmup_iterations=0, schedule="step", milestones=(0.5, 0.75), gamma=0.1)
    assert [learning_rate_factor(i, 100, step) for i in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_run_folder_holds_config_checkpoint_history_figure_metrics_and_detections(tiny_set, tmp_path):
    run_dir = tmp_path / "run"
    result = train(_model(tiny_set), tiny_set, tiny_set, config=_config(run_dir=str(run_dir), iterations=3, size_bins={"tiny": (0, 64)}))
    for name in ("config.json", "checkpoints/last.pt", "history.json", "figures/loss_curves.png", "metrics.json", "detections_val.json"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["AP"] == result.metrics["AP"] and "AP_tiny" in metrics
    assert json.loads((run_dir / "config.json").read_text())["iterations"] == 3
    # the checkpoint alone rebuilds and evaluates the model
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    model = rebuild_model(checkpoint["model_config"])
    model.load_state_dict(checkpoint["model"])
    assert evaluate(model, tiny_set, {"tiny": (0, 64)}) == result.metrics


def test_bad_configs_and_inputs_are_refused_before_training(tiny_set):
    with pytest.raises(ValueError, match="optimizer='adam'"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="unknown key 'learning_rate'; known: amp, batch_size"):
        TrainConfig.from_mapping({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="unknown key 'iteration' \\(did you mean 'iterations'\\?\\)"):
        TrainConfig.from_mapping({"iteration": 10})
    with pytest.raises(ValueError, match="milestones"):
        TrainConfig(milestones=(0.9, 0.5))
    with pytest.raises(ValueError, match="checkpoints need a run_dir"):
        TrainConfig(checkpoint_every=5)
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(_model(tiny_set), tiny_set, config=_config(batch_size=9))
    with pytest.raises(ValueError, match="torch.nn.Module"):
        train(lambda images, targets: {}, tiny_set, config=_config())
