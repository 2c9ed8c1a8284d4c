"""Backbones with a feature pyramid, from a CPU-trainable narrow ResNet up to ResNet-50/101.

Every builder returns a module with an ``out_channels`` attribute whose ``forward(images: Tensor[B, 3, H, W])``
returns an ordered dict of feature maps, as torchvision's detection models expect:

- with ``fpn=True``: keys ``"0", "1", "2", "3", "pool"`` at strides 4, 8, 16, 32, 64 (ResNets; the
  MobileNet returns its two last stages plus ``"pool"``), each ``Tensor[B, out_channels, H / s, W / s]``;
- with ``fpn=False``: one map ``"0"`` (the stride-16 stage ``C4`` of a ResNet, as the original Faster R-CNN,
  or MobileNet's last stage).

Names (:data:`BACKBONES`):

==================  ==============================================  ========================
name                stages (block, widths, blocks per stage)        ImageNet weights
==================  ==============================================  ========================
``resnet_tiny``     BasicBlock, 16/32/64/128, 1/1/1/1               none (trained from scratch)
``resnet_narrow``   BasicBlock, 32/64/128/256, 2/2/2/2              none (ResNet-18 at half width)
``resnet18/34``     torchvision                                     torchvision
``resnet50/101``    torchvision (Bottleneck)                        torchvision
``mobilenet_v3``    torchvision ``mobilenet_v3_large``              torchvision
==================  ==============================================  ========================

Trained from scratch, every backbone uses ordinary (trainable) ``BatchNorm2d``; with ImageNet weights the
torchvision backbones freeze their batch norm (``FrozenBatchNorm2d``) and their first stages, as usual when
fine-tuning with a few images per batch.
"""
from __future__ import annotations

import urllib.error
from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _mobilenet_extractor, _resnet_fpn_extractor
from torchvision.models.resnet import BasicBlock
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

__all__ = ["BACKBONES", "NarrowResNet", "PretrainedWeightsUnavailable", "build_backbone", "resnet_conv4_conv5"]

NARROW_RESNETS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "resnet_tiny": ((16, 32, 64, 128), (1, 1, 1, 1)),
    "resnet_narrow": ((32, 64, 128, 256), (2, 2, 2, 2)),
}
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
BACKBONES: tuple[str, ...] = (*NARROW_RESNETS, *TORCHVISION_RESNETS, "mobilenet_v3")


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights were asked for but cannot be loaded (no network, or no weights for this backbone)."""


class NarrowResNet(nn.Module):
    """A ResNet with BasicBlocks and free stage widths, small enough to train on a CPU.

    Stem: two 3x3 convolutions of stride 2 (no max-pool, which throws away three quarters of the pixels of a
    small object before any learning), so stage ``k`` (``layer1..layer4``) has stride ``2^(k+1)``: 4, 8, 16,
    32, and ``widths[k]`` channels.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), blocks: tuple[int, ...] = (2, 2, 2, 2),
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        if len(widths) != 4 or len(blocks) != 4 or min(widths) < 1 or min(blocks) < 1:
            raise ValueError(f"NarrowResNet needs four positive widths and block counts; got widths={widths}, blocks={blocks}")
        stem_width = widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_width // 2 or 1, 3, stride=2, padding=1, bias=False), norm_layer(stem_width // 2 or 1), nn.ReLU(inplace=True),
            nn.Conv2d(stem_width // 2 or 1, stem_width, 3, stride=2, padding=1, bias=False), norm_layer(stem_width), nn.ReLU(inplace=True),
        )
        in_channels = stem_width
        for index, (width, count) in enumerate(zip(widths, blocks), start=1):
            stride = 1 if index == 1 else 2
            layers = []
            for block in range(count):
                downsample = None
                if block == 0 and (stride != 1 or in_channels != width):
                    downsample = nn.Sequential(nn.Conv2d(in_channels, width, 1, stride=stride, bias=False), norm_layer(width))
                layers.append(BasicBlock(in_channels, width, stride if block == 0 else 1, downsample, norm_layer=norm_layer))
                in_channels = width
            setattr(self, f"layer{index}", nn.Sequential(*layers))
        self.widths = tuple(widths)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():  # zero-init the last BN of each residual branch: blocks start as identities
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        """``Tensor[B, 3, H, W]`` -> the last stage, ``Tensor[B, widths[3], H / 32, W / 32]``."""
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class _SingleMap(nn.Module):
    """``body(x)`` as the ordered dict ``{"0": map}`` that torchvision's detection heads expect."""

    def __init__(self, body: nn.Module, out_channels: int):
        super().__init__()
        self.body = body
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        return OrderedDict([("0", self.body(x))])


def _torchvision_weights(name: str):
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet18_Weights, ResNet34_Weights, ResNet50_Weights, ResNet101_Weights

    return {"resnet18": ResNet18_Weights, "resnet34": ResNet34_Weights, "resnet50": ResNet50_Weights,
            "resnet101": ResNet101_Weights, "mobilenet_v3": MobileNet_V3_Large_Weights}[name].DEFAULT


def _load_imagenet_state(name: str) -> dict[str, Tensor]:
    """torchvision's ImageNet weights of ``name`` (from the torch hub cache, or downloaded)."""
    weights = _torchvision_weights(name)
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        cache = torch.hub.get_dir()
        raise PretrainedWeightsUnavailable(
            f"pretrained_backbone=True: could not load torchvision's ImageNet weights for {name!r} from {weights.url} "
            f"({type(error).__name__}: {error}). This machine may be offline. Fix: download that file once into "
            f"{cache}/checkpoints/ on a machine with internet, or use pretrained_backbone=False (train from scratch)."
        ) from error


def _torchvision_body(name: str, pretrained: bool, norm_layer: Callable[..., nn.Module]) -> nn.Module:
    import torchvision.models as tvm

    constructor = tvm.mobilenet_v3_large if name == "mobilenet_v3" else getattr(tvm, name)
    body = constructor(weights=None, norm_layer=norm_layer)
    if pretrained:
        body.load_state_dict(_load_imagenet_state(name))
    return body


def _refuse_imagenet_weights(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"backbone={name!r} has no ImageNet weights (it is sodlib's own); fix: use "
                         f"pretrained_backbone=False, or a torchvision backbone ({', '.join(TORCHVISION_RESNETS)}, mobilenet_v3)")


def resnet_conv4_conv5(name: str, pretrained: bool = False) -> tuple[nn.Module, nn.Module, int, int]:
    """A ResNet cut after its stride-16 stage: ``(conv4, conv5, conv4_channels, conv5_channels)``, where
    ``conv4`` maps ``Tensor[B, 3, H, W]`` to ``Tensor[B, conv4_channels, H/16, W/16]`` (stem and stages 1-3) and
    ``conv5`` is the last stage (stride 2, ``conv5_channels`` out). ImageNet weights freeze the batch norm."""
    if name in NARROW_RESNETS:
        _refuse_imagenet_weights(name, pretrained)
        widths, blocks = NARROW_RESNETS[name]
        body = NarrowResNet(widths, blocks)
        return nn.Sequential(body.stem, body.layer1, body.layer2, body.layer3), body.layer4, widths[2], widths[3]
    if name in TORCHVISION_RESNETS:
        body = _torchvision_body(name, pretrained, FrozenBatchNorm2d if pretrained else nn.BatchNorm2d)
        conv4 = nn.Sequential(body.conv1, body.bn1, body.relu, body.maxpool, body.layer1, body.layer2, body.layer3)
        return conv4, body.layer4, body.inplanes // 2, body.inplanes
    raise ValueError(f"backbone={name!r} is not a ResNet; choose one of {', '.join((*NARROW_RESNETS, *TORCHVISION_RESNETS))}")


def build_backbone(name: str = "resnet_narrow", *, fpn: bool = True, pretrained: bool = False,
                   fpn_channels: int | None = None, trainable_layers: int | None = None) -> nn.Module:
    """A detection backbone (see the module docstring for the names and the returned maps).

    Args:
        name: one of :data:`BACKBONES`.
        fpn: add a feature pyramid (5 levels for ResNets) or return one stride-16 map.
        pretrained: load torchvision's ImageNet weights (raises :class:`PretrainedWeightsUnavailable` when
            they cannot be loaded, e.g. offline; the narrow ResNets have none and raise ``ValueError``).
        fpn_channels: channels of every pyramid level (default 64 for the narrow ResNets, 256 otherwise).
        trainable_layers: ResNet stages (0..5) left trainable with ImageNet weights (default 3); from scratch
            everything trains.
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone={name!r} is unknown; choose one of {', '.join(BACKBONES)}")
    if name in NARROW_RESNETS:
        if not fpn:
            conv4, _, conv4_channels, _ = resnet_conv4_conv5(name, pretrained)
            return _SingleMap(conv4, conv4_channels)
        _refuse_imagenet_weights(name, pretrained)
        widths, blocks = NARROW_RESNETS[name]
        body = NarrowResNet(widths, blocks)
        channels = fpn_channels or 64
        return BackboneWithFPN(body, {f"layer{k}": str(k - 1) for k in range(1, 5)}, list(widths), channels,
                               extra_blocks=LastLevelMaxPool())
    norm_layer = FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    trainable = (3 if pretrained else 5) if trainable_layers is None else int(trainable_layers)
    if not 0 <= trainable <= 5:
        raise ValueError(f"trainable_layers={trainable_layers} must be between 0 and 5")
    body = _torchvision_body(name, pretrained, norm_layer)
    if name == "mobilenet_v3":
        if fpn_channels not in (None, 256):
            raise ValueError("fpn_channels is fixed at 256 for mobilenet_v3 (torchvision's extractor)")
        return _mobilenet_extractor(body, fpn, trainable_layers=min(trainable, 6))
    if fpn:
        backbone = _resnet_fpn_extractor(body, trainable, extra_blocks=LastLevelMaxPool())
        if fpn_channels not in (None, backbone.out_channels):
            in_channels = [body.inplanes // 8 * 2 ** k for k in range(4)]
            backbone = BackboneWithFPN(body, {f"layer{k}": str(k - 1) for k in range(1, 5)}, in_channels, fpn_channels,
                                       extra_blocks=LastLevelMaxPool())
        return backbone
    for layer_name in ["layer4", "layer3", "layer2", "layer1", "conv1"][trainable:]:
        for parameter in getattr(body, layer_name).parameters():
            parameter.requires_grad_(False)
    c4 = nn.Sequential(body.conv1, body.bn1, body.relu, body.maxpool, body.layer1, body.layer2, body.layer3)
    return _SingleMap(c4, body.inplanes // 2)
