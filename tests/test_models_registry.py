"""sodlib.models.registry: detectors by name, and the engine training and evaluating any registered one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from sodlib.data import CocoDetection, generate_synthetic_coco
from sodlib.engine.checkpoint import load_checkpoint
from sodlib.engine.runs import apply_overrides, check_run_config, load_run_config, run_training
from sodlib.models import DEFAULT_MODEL, build_model, faster_rcnn, list_models, rebuild_model, register_model, registry
from tests.engine_fixtures import one_thread, tiny_run_config  # noqa: F401  (one_thread is used through pytestmark)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry for one test, so that the names a test registers leave with it."""
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))


class BoxPriorDetector(nn.Module):
    """The smallest detector that keeps torchvision's detection API: one learned box per class, in fractions of
    the image, and one learned score per class.

    Training loss: ``|b_c - t|_1`` averaged over the target boxes ``t`` (scaled to ``[0, 1]``) of class ``c``,
    plus the binary cross-entropy of the class scores against "the class is in the image".
    Eval: per image, one box ``b_c * (W, H, W, H)`` for every class ``c`` with its score.
    """

    def __init__(self, num_classes: int, width: float = 0.5):
        super().__init__()
        self.num_classes = num_classes
        self.boxes = nn.Parameter(torch.tensor([[0.5 - width / 2, 0.5 - width / 2, 0.5 + width / 2, 0.5 + width / 2]]
                                               * (num_classes - 1)))
        self.logits = nn.Parameter(torch.zeros(num_classes - 1))

    def forward(self, images, targets=None):
        if self.training:
            box_loss, class_loss = self.boxes.sum() * 0.0, self.logits.sum() * 0.0
            for image, target in zip(images, targets):
                height, width = image.shape[-2:]
                scale = torch.tensor([width, height, width, height], dtype=torch.float32)
                present = torch.zeros(self.num_classes - 1)
                if len(target["boxes"]):
                    labels = target["labels"] - 1
                    box_loss = box_loss + (self.boxes[labels] - target["boxes"] / scale).abs().sum(1).mean()
                    present[labels] = 1.0
                class_loss = class_loss + nn.functional.binary_cross_entropy_with_logits(self.logits, present)
            return {"loss_box": box_loss / len(images), "loss_class": class_loss / len(images)}
        detections = []
        for image in images:
            height, width = image.shape[-2:]
            scale = torch.tensor([width, height, width, height], dtype=torch.float32)
            b = self.boxes.detach()
            corners = torch.stack([torch.minimum(b[:, 0], b[:, 2]), torch.minimum(b[:, 1], b[:, 3]),
                                   torch.maximum(b[:, 0], b[:, 2]), torch.maximum(b[:, 1], b[:, 3])], dim=1)
            boxes = corners * scale
            detections.append({"boxes": boxes, "labels": torch.arange(1, self.num_classes),
                               "scores": torch.sigmoid(self.logits.detach())})
        return detections


def test_faster_rcnn_is_registered_and_is_the_default():
    assert "faster_rcnn" in list_models() and DEFAULT_MODEL == "faster_rcnn"
    assert list_models() == sorted(list_models())
    torch.manual_seed(0)
    model = build_model("faster_rcnn", num_classes=3, backbone="resnet_tiny", fpn_channels=16, min_size=64, max_size=64)
    assert model.build_options["name"] == "faster_rcnn" and "builder" not in model.build_options
    torch.manual_seed(0)
    direct = faster_rcnn(3, "resnet_tiny", fpn_channels=16, min_size=64, max_size=64)
    for (name, a), (_, b) in zip(model.state_dict().items(), direct.state_dict().items()):
        assert torch.equal(a, b), name  # the registry adds nothing to the builder


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"'frcnn' is not registered; registered models: .*faster_rcnn"):
        build_model("frcnn", num_classes=3)


def test_a_taken_name_and_a_bad_name_are_refused(scratch_registry):
    with pytest.raises(ValueError, match="registered already"):
        register_model("faster_rcnn")(BoxPriorDetector)
    with pytest.raises(ValueError, match="must be an identifier"):
        register_model("my detector")
    register_model("faster_rcnn")(faster_rcnn)  # the same builder again is harmless


def test_rebuild_reads_checkpoints_written_before_the_registry():
    torch.manual_seed(0)
    model = faster_rcnn(3, "resnet_tiny", fpn_channels=16, min_size=64, max_size=64)
    old = {("builder" if k == "name" else k): v for k, v in model.build_options.items()}
    rebuilt = rebuild_model(old)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.build_options == model.build_options
    with pytest.raises(ValueError, match="num_classes"):
        rebuild_model({"name": "faster_rcnn"})


def test_run_config_names_its_model_and_unknown_names_are_refused_before_work(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(tiny_run_config(tmp_path / "a.json", tmp_path / "images"))
    config = load_run_config(path)  # no name: the default
    assert "name" not in config["model"]
    with pytest.raises(ValueError, match=r"\[model\] model 'rfcnn' is not registered; registered models: .*faster_rcnn"):
        apply_overrides(config, ["model.name=rfcnn"])
    with pytest.raises(ValueError, match="must be a string"):
        check_run_config({"model": {"name": 3}})


def test_a_registered_dummy_detector_trains_and_evaluates_through_run_training(tmp_path, scratch_registry):
    @register_model("box_prior")
    def box_prior(num_classes: int, width: float = 0.5) -> nn.Module:
        return BoxPriorDetector(num_classes, width)

    assert "box_prior" in list_models()
    annotations = generate_synthetic_coco(tmp_path / "data", 6, seed=2, image_size=64, workers=1, progress=False)
    path = tmp_path / "run.toml"
    path.write_text(tiny_run_config(annotations, tmp_path / "data" / "train", train_extra="lr = 0.05"))
    config = load_run_config(path)
    config["model"] = {"name": "box_prior", "width": 0.4}
    config["train"].update(iterations=6, warmup_iterations=0)
    summary = run_training(config, tmp_path / "run")
    assert summary["iterations"] == 6
    assert set(summary["final_losses"]) == {"loss", "loss_box", "loss_class"}
    assert {"AP", "AP50", "APs", "AP_tiny"} <= set(summary["metrics"])
    history = json.loads((tmp_path / "run" / "history.json").read_text())["history"]
    assert history[-1]["loss_class"] < history[0]["loss_class"]  # it learned which classes appear
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    num_classes = CocoDetection(annotations, tmp_path / "data" / "train").num_classes
    assert checkpoint["model_config"] == {"name": "box_prior", "num_classes": num_classes, "width": 0.4}
    rebuilt = rebuild_model(checkpoint["model_config"])
    rebuilt.load_state_dict(checkpoint["model"])
    assert isinstance(rebuilt, BoxPriorDetector) and rebuilt.boxes.shape == (num_classes - 1, 4)
    assert Path(tmp_path / "run" / "figures" / "pr_curves_iou50.png").is_file()


@pytest.mark.parametrize("section, key, nearest", [
    ("model", "backbon", "backbone"),                 # a builder argument
    ("model", "rpn_nms_tresh", "rpn_nms_thresh"),     # an argument passed on to torchvision's FasterRCNN
    ("train", "warmup_iteration", "warmup_iterations"),
    ("data", "trian", "train"),
    ("evaluate", "size_bin", "size_bins"),
])
def test_a_misspelt_key_in_any_section_is_refused_with_the_nearest_name(tmp_path, section, key, nearest):
    path = tmp_path / "run.toml"
    path.write_text(tiny_run_config(tmp_path / "a.json", tmp_path / "images"))
    config = load_run_config(path)
    config[section][key] = 1
    with pytest.raises(ValueError, match=f"unknown (key|option) '{key}' \\(did you mean '{nearest}'\\?\\)"):
        check_run_config(config)


def test_build_model_checks_option_names_and_a_builder_with_kwargs_takes_any(scratch_registry):
    with pytest.raises(ValueError, match="model options of faster_rcnn: unknown option 'min_sise' \\(did you mean 'min_size'"):
        build_model("faster_rcnn", num_classes=3, min_sise=64)

    @register_model("takes_anything")
    def takes_anything(num_classes: int, **options) -> nn.Module:
        return BoxPriorDetector(num_classes)

    @register_model("passes_on", extra_options=["width_factor"])
    def passes_on(num_classes: int, **options) -> nn.Module:
        return BoxPriorDetector(num_classes)

    assert isinstance(build_model("takes_anything", num_classes=3, whatever=1), BoxPriorDetector)
    assert isinstance(build_model("passes_on", num_classes=3, width_factor=1), BoxPriorDetector)
    with pytest.raises(ValueError, match="unknown option 'width'"):
        build_model("passes_on", num_classes=3, width=1)
