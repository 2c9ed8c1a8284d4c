"""A feature ("perceptual") loss for super-resolution, with the features of a network we can actually load.

Johnson et al. (2016) compare an SR output and its reference in the feature space of a VGG-16 trained on
ImageNet, instead of pixel by pixel::

    L_feature(y_hat, y) = mean (phi(y_hat) - phi(y))^2,    phi = the first stages of a frozen network

The course runs offline, where no ImageNet VGG can be downloaded, so the default ``phi`` is the stem and first
stages of **one of our own trained detectors** (:func:`detector_feature_extractor`): features that tell the
embedded categories apart, which is what a detector needs of an upscaled crop. A user with the weights (or a
network) passes ``imagenet_feature_extractor()``; without them it raises
:class:`~sodlib.models.backbones.PretrainedWeightsUnavailable`, saying so.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sodlib.models.backbones import PretrainedWeightsUnavailable

__all__ = ["FeatureExtractor", "FeatureLoss", "detector_feature_extractor", "imagenet_feature_extractor"]


class FeatureExtractor(nn.Module):
    """A frozen ``body`` run on normalised images: ``forward(Tensor[B, 3, H, W] in [0, 1]) -> Tensor[B, C, H', W']``,
    ``(x - mean) / std`` per channel first (the normalisation the body was trained with)."""

    def __init__(self, body: nn.Module, mean: Sequence[float], std: Sequence[float], description: str) -> None:
        super().__init__()
        self.body = body.eval()
        for parameter in self.body.parameters():
            parameter.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.description = description

    def train(self, mode: bool = True) -> "FeatureExtractor":
        super().train(mode)
        self.body.eval()  # frozen: batch norm keeps its running statistics
        return self

    def forward(self, images: Tensor) -> Tensor:
        return self.body((images - self.mean) / self.std)


def detector_feature_extractor(detector: nn.Module, stages: int = 2) -> FeatureExtractor:
    """The stem and the first ``stages`` residual stages of a sodlib detector's backbone (stride ``2^(stages+1)``),
    frozen, with the detector's own input normalisation."""
    body = getattr(getattr(detector, "backbone", None), "body", None)
    if body is None or not hasattr(body, "stem"):
        raise ValueError("the detector has no backbone.body with a stem (a sodlib narrow ResNet); fix: pass a "
                         "faster_rcnn or rfcn built on resnet_tiny / resnet_narrow")
    names = ["stem"] + [f"layer{k}" for k in range(1, stages + 1)]
    missing = [n for n in names if not hasattr(body, n)]
    if missing or not 1 <= stages <= 4:
        raise ValueError(f"stages={stages} must be 1..4 (the backbone has stem and layer1..layer4)")
    layers = nn.Sequential(*(getattr(body, n) for n in names))
    transform = detector.transform
    return FeatureExtractor(layers, transform.image_mean, transform.image_std,
                            f"a trained detector's backbone (stem + layer1..{stages})")


def imagenet_feature_extractor(layer: int = 16) -> FeatureExtractor:
    """torchvision's ImageNet VGG-16 up to ``features[:layer]`` (16 = after relu3_3, as Johnson et al.)."""
    from torchvision.models import VGG16_Weights, vgg16

    try:
        network = vgg16(weights=VGG16_Weights.IMAGENET1K_V1)
    except Exception as error:  # no network, no cached file
        raise PretrainedWeightsUnavailable(f"ImageNet VGG-16 weights could not be loaded ({error}); fix: download them once "
                                           "with internet (torchvision caches them), or use detector_feature_extractor") from error
    return FeatureExtractor(network.features[:layer], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                            f"ImageNet VGG-16 features[:{layer}]")


class FeatureLoss(nn.Module):
    """``L = L1(y_hat, y) + weight * mean (phi(y_hat) - phi(y))^2``: the pixel term keeps colours right, which the
    feature term alone does not constrain."""

    def __init__(self, extractor: FeatureExtractor, weight: float = 1.0) -> None:
        super().__init__()
        if weight <= 0:
            raise ValueError(f"weight={weight} must be positive")
        self.extractor, self.weight = extractor, float(weight)

    def forward(self, prediction: Tensor, reference: Tensor) -> Tensor:
        with torch.no_grad():
            target_features = self.extractor(reference)
        return F.l1_loss(prediction, reference) + self.weight * F.mse_loss(self.extractor(prediction), target_features)
