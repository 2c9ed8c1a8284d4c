"""sodlib.models.rfcn: R-FCN's vote, OHEM, the stride-16 dilated conv5, the three poolings, and the detection API."""
from __future__ import annotations

import pytest
import torch

from sodlib.models import build_model, rebuild_model
from sodlib.models.rfcn import POOLINGS, PositionSensitiveHead, ohem_select, position_sensitive_vote
from tests.engine_fixtures import one_thread  # noqa: F401  (one_thread is used through pytestmark)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_rfcn(pooling: str = "ps_prroi", seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_model("rfcn", num_classes=4, backbone="resnet_tiny", pooling=pooling, k=3, min_size=128,
                       max_size=128, reduced_channels=32, **options)


def batch():
    images = [torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(1)),
              torch.rand(3, 112, 128, generator=torch.Generator().manual_seed(2))]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0], [50.0, 60.0, 70.0, 90.0]]), "labels": torch.tensor([1, 2])},
               {"boxes": torch.tensor([[5.0, 5.0, 30.0, 20.0]]), "labels": torch.tensor([3])}]
    return images, targets


def test_the_vote_is_the_mean_over_the_bins():
    pooled = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    expected = torch.zeros(5, 4, dtype=torch.float64)
    for r in range(5):
        for c in range(4):
            expected[r, c] = sum(pooled[r, c, i, j] for i in range(3) for j in range(3)) / 9
    torch.testing.assert_close(position_sensitive_vote(pooled), expected, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match=r"Tensor\[R, C, k, k\]"):
        position_sensitive_vote(pooled[0])


def test_ohem_keeps_exactly_the_largest_losses_of_each_image():
    generator = torch.Generator().manual_seed(0)
    losses = torch.rand(40, generator=generator)
    images = torch.randint(0, 3, (40,), generator=generator)
    keep = ohem_select(losses, images, 5)
    expected = []
    for image in range(3):
        members = [r for r in range(40) if images[r] == image]
        expected += sorted(members, key=lambda r: -float(losses[r]))[:5]
    assert keep.tolist() == sorted(expected)
    assert ohem_select(losses[:3], torch.zeros(3, dtype=torch.int64), 10).tolist() == [0, 1, 2]  # fewer than B: all


def test_conv5_stays_at_stride_16():
    model = tiny_rfcn()
    features = model.backbone(torch.rand(2, 3, 128, 96))
    assert features["0"].shape[-2:] == features["conv5"].shape[-2:] == (8, 6)
    assert features["conv5"].shape[1] == model.backbone.conv5_channels


@pytest.mark.parametrize("pooling", POOLINGS)
def test_each_pooling_gives_the_detection_api_and_learns_a_batch(pooling):
    model = tiny_rfcn(pooling)
    images, targets = batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    totals = []
    for _ in range(12):
        losses = model(images, targets)
        assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
        total = sum(losses.values())
        assert torch.isfinite(total)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
    assert totals[-1] < 0.7 * totals[0], totals
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for detection, image in zip(detections, images):
        assert set(detection) == {"boxes", "labels", "scores"}
        boxes = detection["boxes"]
        assert boxes.shape[1] == 4 and len(boxes) == len(detection["labels"]) == len(detection["scores"]) <= 100
        assert (boxes[:, 2] <= image.shape[-1] + 1e-4).all() and (boxes[:, 3] <= image.shape[-2] + 1e-4).all()
        assert ((detection["labels"] >= 1) & (detection["labels"] <= 3)).all()


def test_the_precise_pooling_passes_gradients_to_the_maps_and_the_boxes():
    head = PositionSensitiveHead(8, 3, k=3, pooling="ps_prroi", reduced_channels=8).double()
    features = {"conv5": torch.randn(1, 8, 6, 6, dtype=torch.float64, requires_grad=True)}
    boxes = torch.tensor([[8.0, 10.0, 60.0, 70.0]], dtype=torch.float64, requires_grad=True)
    class_logits, box_deltas = head(features, [boxes], [(96, 96)])
    (class_logits.sum() + box_deltas.sum()).backward()
    assert features["conv5"].grad.abs().sum() > 0
    assert torch.isfinite(boxes.grad).all() and boxes.grad.abs().sum() > 0  # what box refinement climbs


def test_same_seed_same_weights_and_the_checkpoint_options_rebuild_it():
    a, b = tiny_rfcn(seed=3), tiny_rfcn(seed=3)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    rebuilt = rebuild_model(a.build_options)
    rebuilt.load_state_dict(a.state_dict(), strict=True)
    assert a.build_options["name"] == "rfcn" and a.build_options["pooling"] == "ps_prroi"


@pytest.mark.parametrize("options, message", [
    ({"pooling": "roi_align"}, "pooling='roi_align' is unknown; choose one of ps_roi_pool, ps_roi_align, ps_prroi"),
    ({"k": 0}, "k=0 must be a positive integer"),
    ({"k": 2.5}, "k=2.5 must be a positive integer"),
    ({"ohem_batch_size": 0}, "ohem_batch_size=0 must be a positive integer"),
    ({"backbone": "mobilenet_v3"}, "not available for R-FCN"),
    ({"poolng": "ps_prroi"}, "unknown option 'poolng' \\(did you mean 'pooling'\\?\\)"),
])
def test_bad_options_are_refused_with_the_allowed_values(options, message):
    with pytest.raises(ValueError, match=message):
        build_model("rfcn", num_classes=3, **{"backbone": "resnet_tiny", **options})


@pytest.mark.parametrize("setting", ["fast", "full"])
def test_the_rfcn_configs_are_the_faster_rcnn_ones_with_the_rfcn_model(setting):
    from sodlib.data.paths import CHECKOUT_DIR
    from sodlib.engine.runs import build_run_model, load_run_config

    faster = load_run_config(CHECKOUT_DIR / "configs" / f"{setting}.toml")
    config = load_run_config(CHECKOUT_DIR / "configs" / f"{setting}_rfcn.toml")
    assert {k: v for k, v in config.items() if k != "model"} == {k: v for k, v in faster.items() if k != "model"}
    for key in ("backbone", "min_size", "max_size", "aspect_ratios"):
        assert config["model"][key] == faster["model"][key], key
    # one stride-16 level with the sizes Faster R-CNN spreads over its pyramid levels
    assert config["model"]["anchor_sizes"] == [size for (size,) in faster["model"]["anchor_sizes"]]
    model = build_run_model(config, 7)
    assert model.build_options["name"] == "rfcn" and model.roi_heads.head.k == 7
    assert model.transform.min_size == (faster["model"]["min_size"],)


def test_jittered_boxes_overlap_their_source_as_iou_net_samples_them():
    from torchvision.ops import box_iou

    from sodlib.models.rfcn import jitter_boxes

    boxes = torch.tensor([[10.0, 10.0, 40.0, 30.0], [50.0, 50.0, 58.0, 66.0]])
    jittered, iou = jitter_boxes(boxes, 200, torch.Generator().manual_seed(0))
    assert 100 < len(jittered) <= 400 and (iou >= 0.5).all() and (iou <= 1.0).all()
    best = box_iou(jittered, boxes).max(dim=1).values
    torch.testing.assert_close(best, iou)  # each keeps its IoU with its own source
    assert len(jitter_boxes(boxes[:0], 5)[0]) == 0


def test_the_iou_branch_trains_and_refinement_climbs_the_predicted_iou():
    model = tiny_rfcn(iou_head=True, refine_steps=3)
    images, targets = batch()
    model.train()
    losses = model(images, targets)
    assert "loss_iou" in losses and torch.isfinite(losses["loss_iou"]) and losses["loss_iou"] > 0
    sum(losses.values()).backward()
    assert model.roi_heads.head.iou_maps.weight.grad.abs().sum() > 0
    model.eval()
    heads = model.roi_heads
    with torch.no_grad():  # a fixed example whose predicted IoU varies with the box well above rounding
        heads.head.iou_maps.weight.copy_(torch.randn(heads.head.iou_maps.weight.shape, generator=torch.Generator().manual_seed(5)))
        transformed, _ = model.transform(images)
        features = model.backbone(transformed.tensors)
        reduced = heads.head.reduce(features["conv5"])
    boxes = [torch.tensor([[20.0, 20.0, 60.0, 50.0], [70.0, 30.0, 100.0, 90.0], [5.0, 60.0, 30.0, 80.0]])]
    # the gradient reaches the box coordinates through PS-PrRoI pooling
    leaf = boxes[0].clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(heads.head.predicted_iou(reduced[:1], [leaf]).sum(), leaf)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    with torch.no_grad():
        start = heads.head.predicted_iou(reduced[:1], boxes)
        refined, iou = heads.refine(reduced[:1], boxes, transformed.image_sizes[:1], steps=3)
    assert (iou[0] >= start - 1e-7).all() and (iou[0] > start).any()  # never lower, higher where it moved
    assert not torch.equal(refined[0], boxes[0])
    with torch.no_grad():
        detections = model(images)
    assert all("predicted_iou" in d and len(d["predicted_iou"]) == len(d["boxes"]) for d in detections)
    with pytest.raises(ValueError, match="refine_steps > 0 climbs the predicted IoU; fix: iou_head=True"):
        tiny_rfcn(refine_steps=2)


def test_iou_guided_nms_keeps_the_best_localised_box_with_the_clusters_best_score():
    from sodlib.models.rfcn import iou_guided_nms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [0.0, 1.0, 10.0, 11.0],  # one cluster
                          [50.0, 50.0, 60.0, 60.0],                                             # alone
                          [0.0, 0.0, 10.0, 10.0]])                                              # another class
    scores = torch.tensor([0.9, 0.6, 0.3, 0.5, 0.8])
    localization = torch.tensor([0.5, 0.9, 0.7, 0.4, 0.2])  # box 1 is the best placed of the cluster
    labels = torch.tensor([1, 1, 1, 1, 2])
    keep, kept_scores = iou_guided_nms(boxes, scores, localization, labels, 0.5)
    # box 1 suppresses 0 and 2 (IoU 0.82, 0.68) and takes the cluster's best score 0.9; classes apart
    assert keep.tolist() == [1, 4, 3] and kept_scores.tolist() == pytest.approx([0.9, 0.8, 0.5])
    keep, kept_scores = iou_guided_nms(boxes, scores, localization, labels, 0.95)  # nothing overlaps that much
    assert sorted(keep.tolist()) == [0, 1, 2, 3, 4] and kept_scores.tolist() == sorted(scores.tolist(), reverse=True)
    keep, kept_scores = iou_guided_nms(boxes[:0], scores[:0], localization[:0], labels[:0], 0.5)
    assert keep.shape == (0,) and kept_scores.shape == (0,)


def test_the_iou_guided_detections_are_a_subset_of_the_candidates_with_valid_outputs():
    model = tiny_rfcn(iou_head=True, iou_guided_nms=True, box_score_thresh=0.0)
    images, _ = batch()
    model.eval()
    with torch.no_grad():
        detections = model(images)
    for detection, image in zip(detections, images):
        assert set(detection) == {"boxes", "scores", "labels", "predicted_iou"}
        assert len(detection["boxes"]) > 0 and (detection["scores"][:-1] >= detection["scores"][1:]).all()
        assert (detection["boxes"][:, 2:] <= torch.tensor([image.shape[2], image.shape[1]])).all()
    with pytest.raises(ValueError, match="iou_guided_nms ranks boxes by their predicted IoU; fix: iou_head=True"):
        tiny_rfcn(iou_guided_nms=True)


def test_the_class_score_maps_pool_and_vote_to_the_heads_logits():
    from sodlib.models.rfcn import class_score_maps
    from sodlib.ops import position_sensitive_vote, ps_pool

    model = tiny_rfcn()
    image = torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(3))  # resized by 4/3 (the long side to 128 px)
    maps, scale = class_score_maps(model, image)
    assert maps.shape[:2] == (4, 9) and scale.tolist() == pytest.approx([128 / 96] * 4, rel=0.01)
    boxes = torch.tensor([[10.0, 12.0, 40.0, 50.0], [50.0, 20.0, 90.0, 60.0]])
    model.eval()
    with torch.no_grad():
        transformed, _ = model.transform([image])
        reduced = model.roi_heads.head.reduce(model.backbone(transformed.tensors)["conv5"])
        logits, _ = model.roi_heads.head.scores(reduced, [boxes * scale])
    rois = torch.cat([torch.zeros(2, 1), boxes * scale], dim=1)
    for c in range(4):  # class c's k^2 maps, pooled bin by bin and voted, are the head's logit of class c
        voted = position_sensitive_vote(ps_pool(maps[c][None], rois, 3, 1 / 16, "ps_prroi"))[:, 0]
        torch.testing.assert_close(voted, logits[:, c])


def test_the_refinement_path_is_the_test_time_refinement_step_by_step():
    from sodlib.models.rfcn import refinement_path

    model = tiny_rfcn(iou_head=True)
    with torch.no_grad():
        heads = model.roi_heads
        heads.head.iou_maps.weight.copy_(torch.randn(heads.head.iou_maps.weight.shape, generator=torch.Generator().manual_seed(5)))
    image = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[20.0, 20.0, 60.0, 50.0], [70.0, 30.0, 100.0, 90.0]])
    path, ious = refinement_path(model, image, boxes, steps=4)
    assert path.shape == (5, 2, 4) and ious.shape == (5, 2)
    torch.testing.assert_close(path[0], boxes)
    assert (ious[1:] >= ious[:-1] - 1e-6).all()  # a step never lowers a box's predicted IoU
    model.eval()
    with torch.no_grad():
        transformed, _ = model.transform([image])
        reduced = heads.head.reduce(model.backbone(transformed.tensors)["conv5"])
        refined, iou = heads.refine(reduced, [boxes], transformed.image_sizes, 4)
    torch.testing.assert_close(path[-1], refined[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(ious[-1], iou[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="iou_head=True"):
        refinement_path(tiny_rfcn(), image, boxes, 2)
