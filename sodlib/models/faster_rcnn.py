"""The baseline detector: Faster R-CNN assembled from torchvision's detection parts and sodlib's anchors.

Data flow (torchvision's ``GeneralizedRCNN``): ``GeneralizedRCNNTransform`` normalises each image and resizes
it so that its short side is ``min_size`` (long side at most ``max_size``), batching with zero padding to a
multiple of 32 -> backbone (+ FPN) -> RPN (``SodlibAnchorGenerator`` + ``RPNHead``) -> ``MultiScaleRoIAlign``
(7 x 7, sampling ratio 2) -> ``TwoMLPHead`` -> ``FastRCNNPredictor``. Anchor sizes are in pixels of the
*resized* image; detections are mapped back to the input image's pixels.

Training: ``model(images, targets)`` with ``images`` a list of ``Tensor[3, H, W]`` in ``[0, 1]`` and
torchvision targets returns the loss dict ``loss_objectness, loss_rpn_box_reg, loss_classifier, loss_box_reg``.
Evaluation: ``model(images)`` returns per image ``{"boxes": Tensor[D, 4] xyxy, "labels": Tensor[D],
"scores": Tensor[D]}``.
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from sodlib.anchors import FPN_ANCHORS
from sodlib.models.anchor_generator import SodlibAnchorGenerator
from sodlib.models.backbones import build_backbone
from sodlib.models.registry import register_model

__all__ = ["faster_rcnn", "DEFAULT_ANCHOR_SIZES"]

#: FPN anchor sizes (Kisantal et al., FPN): one size per level, 32..512 on strides 4..64.
DEFAULT_ANCHOR_SIZES: tuple[tuple[float, ...], ...] = FPN_ANCHORS.sizes


def _pyramid_keys(backbone: nn.Module, fpn: bool) -> list[str]:
    if not fpn:
        return ["0"]
    extra = getattr(getattr(backbone, "fpn", None), "extra_blocks", None)
    levels = len(backbone.fpn.inner_blocks)
    keys = [str(k) for k in range(levels)]
    return keys + (["pool"] if extra is not None else [])


# What ``**detector_options`` may hold: torchvision's FasterRCNN arguments that the builder does not set itself, and
# the two that FasterRCNN passes on to its GeneralizedRCNNTransform.
_SET_BY_THE_BUILDER = {"self", "backbone", "num_classes", "min_size", "max_size", "rpn_anchor_generator", "rpn_head",
                       "box_roi_pool", "box_head", "box_predictor", "kwargs"}
DETECTOR_OPTIONS: tuple[str, ...] = tuple(
    [p for p in inspect.signature(FasterRCNN.__init__).parameters if p not in _SET_BY_THE_BUILDER]
    + ["size_divisible", "fixed_size"])


@register_model("faster_rcnn", extra_options=DETECTOR_OPTIONS)
def faster_rcnn(
    num_classes: int,
    backbone: str = "resnet_narrow",
    anchor_sizes: Sequence[Sequence[float]] | None = None,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    fpn: bool = True,
    pretrained_backbone: bool = False,
    min_size: int = 800,
    max_size: int = 1333,
    *,
    anchor_offset: float = 0.0,
    fpn_channels: int | None = None,
    representation_size: int | None = None,
    trainable_layers: int | None = None,
    **detector_options: Any,
) -> FasterRCNN:
    """A torchvision ``FasterRCNN`` with a backbone from :mod:`sodlib.models.backbones` and unrounded anchors.

    Args:
        num_classes: object categories **plus one** for the background (``CocoDetection.num_classes``).
        backbone: a name from :data:`sodlib.models.backbones.BACKBONES` (``resnet_tiny`` / ``resnet_narrow``
            train on a CPU; ``resnet50`` / ``resnet101`` are the usual ones on a GPU).
        anchor_sizes: ``anchor_sizes[l]``: the sizes ``sqrt(w * h)`` of pyramid level ``l`` in resized-image
            pixels (default: 32, 64, 128, 256, 512 on the five FPN levels; all five on the one map without
            FPN). Anchors are built by :class:`SodlibAnchorGenerator` from :func:`sodlib.anchors.base_anchors`:
            ``w = s / sqrt(r)``, ``h = s * sqrt(r)``, not rounded, centres at ``(i + anchor_offset) * stride``.
        aspect_ratios: anchor ratios ``h / w``, the same on every level.
        fpn: use a feature pyramid (strides 4..64) or one stride-16 map.
        pretrained_backbone: load torchvision's ImageNet weights; fails with
            :class:`~sodlib.models.backbones.PretrainedWeightsUnavailable` when they cannot be had (offline).
        min_size, max_size: the resize of ``GeneralizedRCNNTransform`` (short side to ``min_size``, long side at
            most ``max_size``); detections come back in the input's pixels.
        anchor_offset: centre offset of the anchors as a fraction of the stride.
        fpn_channels: channels of the pyramid (default 64 for the narrow ResNets, 256 otherwise).
        representation_size: width of the two fully connected layers of the box head (default 256 for the
            narrow ResNets, 1024 otherwise).
        trainable_layers: backbone stages left trainable with ImageNet weights.
        **detector_options: passed to ``torchvision.models.detection.FasterRCNN`` (``rpn_*``, ``box_*``,
            ``image_mean``, ``image_std``, ...).
    """
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} counts the background too, so it is at least 2; "
                         "fix: pass dataset.num_classes (categories + 1)")
    for name, value in (("min_size", min_size), ("max_size", max_size)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"{name}={value!r} must be a whole number of pixels (the resized image's short side / "
                             "long side), e.g. 800 and 1333")
    if int(min_size) <= 0 or int(max_size) < int(min_size):
        raise ValueError(f"min_size={min_size}, max_size={max_size}: need 0 < min_size <= max_size")
    body = build_backbone(backbone, fpn=fpn, pretrained=pretrained_backbone, fpn_channels=fpn_channels,
                          trainable_layers=trainable_layers)
    keys = _pyramid_keys(body, fpn)
    if anchor_sizes is None:
        anchor_sizes = DEFAULT_ANCHOR_SIZES if fpn else (tuple(s for level in DEFAULT_ANCHOR_SIZES for s in level),)
    anchor_sizes = tuple(tuple(level) for level in anchor_sizes)
    if len(anchor_sizes) != len(keys):
        raise ValueError(f"anchor_sizes has {len(anchor_sizes)} levels but the backbone returns {len(keys)} feature maps "
                         f"({', '.join(keys)}); fix: give one tuple of sizes per map, e.g. "
                         f"{tuple((32.0 * 2 ** k,) for k in range(len(keys)))}")
    anchor_generator = SodlibAnchorGenerator(anchor_sizes, tuple(aspect_ratios), offset=anchor_offset)
    channels = body.out_channels
    rpn_head = RPNHead(channels, anchor_generator.num_anchors_per_location()[0])
    if len(set(anchor_generator.num_anchors_per_location())) != 1:
        raise ValueError("every pyramid level needs the same number of anchor sizes (the RPN head is shared across levels)")
    roi_pool = MultiScaleRoIAlign(featmap_names=[k for k in keys if k != "pool"], output_size=7, sampling_ratio=2)
    narrow = backbone.startswith("resnet_")
    width = representation_size or (256 if narrow else 1024)
    box_head = TwoMLPHead(channels * 7 * 7, width)
    predictor = FastRCNNPredictor(width, int(num_classes))
    model = FasterRCNN(body, num_classes=None, min_size=int(min_size), max_size=int(max_size),
                       rpn_anchor_generator=anchor_generator, rpn_head=rpn_head, box_roi_pool=roi_pool,
                       box_head=box_head, box_predictor=predictor, **detector_options)
    # how to build it again (stored in checkpoints, so that a checkpoint alone rebuilds its model)
    model.build_options = {"name": "faster_rcnn", "num_classes": int(num_classes), "backbone": backbone,
                           "anchor_sizes": [list(level) for level in anchor_sizes], "aspect_ratios": list(aspect_ratios),
                           "fpn": bool(fpn), "pretrained_backbone": False, "min_size": int(min_size), "max_size": int(max_size),
                           "anchor_offset": float(anchor_offset), "fpn_channels": fpn_channels,
                           "representation_size": representation_size, "trainable_layers": trainable_layers,
                           **detector_options}
    return model

