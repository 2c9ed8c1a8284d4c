"""Detectors built on torchvision's detection parts, by name from a registry: backbones, sodlib's anchor
generator, Faster R-CNN, R-FCN (with PS-RoI, PS-RoIAlign or PS-PrRoI pooling).

``build_model(name, num_classes=..., **options)`` builds a registered detector, ``list_models()`` names them,
``register_model(name)`` adds one (see :mod:`sodlib.models.registry` for the contract a detector keeps).
"""
from sodlib.models.registry import (DEFAULT_MODEL, build_model, check_model_options, list_models, model_builder,
                                    model_option_names, rebuild_model, register_model)
from sodlib.models.anchor_generator import SodlibAnchorGenerator, anchor_generator_from_set
from sodlib.models.backbones import BACKBONES, NarrowResNet, PretrainedWeightsUnavailable, build_backbone
from sodlib.models.faster_rcnn import DEFAULT_ANCHOR_SIZES, faster_rcnn
from sodlib.models.efpn import efpn
from sodlib.models.rfcn import rfcn

__all__ = [
    "BACKBONES",
    "DEFAULT_ANCHOR_SIZES",
    "DEFAULT_MODEL",
    "NarrowResNet",
    "PretrainedWeightsUnavailable",
    "SodlibAnchorGenerator",
    "anchor_generator_from_set",
    "build_backbone",
    "build_model",
    "check_model_options",
    "efpn",
    "faster_rcnn",
    "list_models",
    "model_option_names",
    "model_builder",
    "rebuild_model",
    "register_model",
    "rfcn",
]
