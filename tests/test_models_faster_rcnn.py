"""sodlib.models: the Faster R-CNN builder, its backbones and its unrounded anchors."""
from __future__ import annotations

import urllib.error

import pytest
import torch
from torchvision.models.detection.image_list import ImageList

from sodlib.anchors import AnchorSet, base_anchors
from sodlib.models import (BACKBONES, PretrainedWeightsUnavailable, SodlibAnchorGenerator, build_backbone, faster_rcnn,
                           rebuild_model)
from tests.engine_fixtures import one_thread  # noqa: F401  (one_thread is used through pytestmark)

SIZES = ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))


pytestmark = pytest.mark.usefixtures("one_thread")


def _targets(n: int) -> list[dict]:
    return [{"boxes": torch.tensor([[4.0, 6.0, 20.0, 30.0], [40.0, 40.0, 90.0, 80.0]]), "labels": torch.tensor([1, 2])}
            for _ in range(n)]


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_anchor_generator_equals_sodlib_anchor_set(offset):
    generator = SodlibAnchorGenerator(SIZES, (0.5, 1.0, 2.0), offset=offset)
    images = ImageList(torch.zeros(2, 3, 128, 96), [(128, 96), (120, 90)])
    strides = (4, 8, 16, 32, 64)
    features = [torch.zeros(2, 8, 128 // s, 96 // s) for s in strides[:-1]] + [torch.zeros(2, 8, 2, 2)]
    anchors = generator(images, features)
    reference = AnchorSet(strides=(4.0, 8.0, 16.0, 32.0, 48.0), sizes=SIZES, offset=offset, size_divisible=1)
    # the last map (2 x 2 cells of a 128 x 96 image) has strides 64 (rows) and 48 (columns), as torchvision computes them
    expected_levels = []
    for level, stride in enumerate(strides[:-1]):
        expected_levels.append(AnchorSet.single_level(stride, SIZES[level], (0.5, 1.0, 2.0), offset).anchors_for_image(128, 96))
    from sodlib.anchors import generate_anchors

    expected_levels.append(generate_anchors((2, 2), (64.0, 48.0), SIZES[-1], (0.5, 1.0, 2.0), offset))
    expected = torch.cat(expected_levels).float()
    assert len(anchors) == 2
    torch.testing.assert_close(anchors[0], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(anchors[1], anchors[0])
    assert reference.anchors_per_location == generator.num_anchors_per_location()


def test_base_anchors_are_not_rounded():
    cell = SodlibAnchorGenerator(((8.0,),), (0.5,)).cell_anchors[0]
    width, height = float(cell[0, 2] - cell[0, 0]), float(cell[0, 3] - cell[0, 1])
    assert width == pytest.approx(8 / 0.5**0.5, rel=1e-6) and height == pytest.approx(8 * 0.5**0.5, rel=1e-6)
    assert width * height == pytest.approx(64.0, rel=1e-6)  # torchvision's rounded 12 x 6 anchor has area 72
    torch.testing.assert_close(cell.double(), torch.as_tensor(base_anchors((8.0,), (0.5,))), rtol=0, atol=1e-6)


def test_narrow_backbone_returns_five_levels_at_strides_4_to_64():
    backbone = build_backbone("resnet_tiny")
    features = backbone(torch.zeros(1, 3, 128, 128))
    assert list(features) == ["0", "1", "2", "3", "pool"]
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert all(f.shape[1] == backbone.out_channels == 64 for f in features.values())
    single = build_backbone("resnet_tiny", fpn=False)
    assert tuple(single(torch.zeros(1, 3, 128, 128))["0"].shape) == (1, 64, 8, 8)


def test_faster_rcnn_trains_and_detects_in_input_pixels():
    torch.manual_seed(0)
    model = faster_rcnn(3, "resnet_tiny", anchor_sizes=SIZES, min_size=96, max_size=96)
    images = [torch.rand(3, 128, 112), torch.rand(3, 100, 128)]
    losses = model(images, _targets(2))
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.rpn.parameters())
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    for output, image in zip(outputs, images):
        boxes = output["boxes"]
        assert boxes.shape[1] == 4 and len(boxes) == len(output["labels"]) == len(output["scores"])
        assert (boxes[:, 2] <= image.shape[-1] + 1e-3).all() and (boxes[:, 3] <= image.shape[-2] + 1e-3).all()
        assert ((output["labels"] >= 1) & (output["labels"] <= 2)).all()


def test_faster_rcnn_without_fpn_and_rebuild_model_round_trip():
    torch.manual_seed(0)
    model = faster_rcnn(4, "resnet_tiny", anchor_sizes=((16.0, 32.0, 64.0),), fpn=False, min_size=64, max_size=64,
                        box_detections_per_img=7)
    assert isinstance(model.rpn.anchor_generator, SodlibAnchorGenerator)
    assert model.roi_heads.detections_per_img == 7
    rebuilt = rebuild_model(model.build_options)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    model.eval(), rebuilt.eval()
    image = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        a, b = model(image)[0], rebuilt(image)[0]
    torch.testing.assert_close(a["boxes"], b["boxes"])


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v3"])
def test_torchvision_backbones_build_from_scratch_without_downloads(name, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", refuse)
    model = faster_rcnn(3, name, min_size=64, max_size=64, anchor_sizes=((32.0,), (64.0,), (128.0,)) if name == "mobilenet_v3" else None)
    model.eval()
    with torch.no_grad():
        model([torch.rand(3, 64, 64)])
    # trained from scratch: ordinary batch norm that learns
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())


def test_pretrained_backbone_offline_fails_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache, so torchvision would have to download

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsUnavailable, match="offline.*pretrained_backbone=False"):
        faster_rcnn(3, "resnet18", pretrained_backbone=True)


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="num_classes"):
        faster_rcnn(1)
    with pytest.raises(ValueError, match="backbone='resnet7'"):
        faster_rcnn(3, "resnet7")
    with pytest.raises(ValueError, match="anchor_sizes has 2 levels"):
        faster_rcnn(3, "resnet_tiny", anchor_sizes=((8.0,), (16.0,)))
    with pytest.raises(ValueError, match="no ImageNet weights"):
        faster_rcnn(3, "resnet_tiny", pretrained_backbone=True)
    with pytest.raises(ValueError, match="offset"):
        faster_rcnn(3, "resnet_tiny", anchor_sizes=SIZES, anchor_offset=1.5)
    with pytest.raises(ValueError, match="min_size"):
        faster_rcnn(3, "resnet_tiny", min_size=300, max_size=200)
    assert "resnet101" in BACKBONES
