"""Detectors built on torchvision's detection parts: backbones, sodlib's anchor generator, Faster R-CNN."""
from sodlib.models.anchor_generator import SodlibAnchorGenerator, anchor_generator_from_set
from sodlib.models.backbones import BACKBONES, NarrowResNet, PretrainedWeightsUnavailable, build_backbone
from sodlib.models.faster_rcnn import DEFAULT_ANCHOR_SIZES, build_model, faster_rcnn

__all__ = [
    "BACKBONES",
    "DEFAULT_ANCHOR_SIZES",
    "NarrowResNet",
    "PretrainedWeightsUnavailable",
    "SodlibAnchorGenerator",
    "anchor_generator_from_set",
    "build_backbone",
    "build_model",
    "faster_rcnn",
]
