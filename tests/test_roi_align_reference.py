"""The pure-PyTorch RoIAlign against torchvision's op: same forward, same feature gradient, and a box gradient
that finite differences confirm (torchvision returns none)."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from sodlib.ops import roi_align_reference
from sodlib.ops.roi_align_reference import sample_weights


def random_rois(count: int, generator: torch.Generator, extent: float = 120.0) -> torch.Tensor:
    """RoIs over two images, some across the map's border, some smaller than one cell of stride 8."""
    corner = torch.rand(count, 2, generator=generator, dtype=torch.float64) * (extent + 40) - 20
    size = torch.rand(count, 2, generator=generator, dtype=torch.float64) * 60 + 0.5
    batch = torch.randint(0, 2, (count, 1), generator=generator).double()
    return torch.cat([batch, corner, corner + size], dim=1)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 4])
def test_forward_and_feature_gradient_equal_torchvision(sampling_ratio, aligned):
    generator = torch.Generator().manual_seed(sampling_ratio)
    features = torch.randn(2, 3, 12, 15, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = random_rois(50, generator)
    ours = roi_align_reference(features, rois, (7, 5), 1 / 8, sampling_ratio, aligned)
    theirs = roi_align(features, rois, (7, 5), 1 / 8, sampling_ratio, aligned)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    weights = torch.randn(theirs.shape, generator=generator, dtype=torch.float64)
    (ours_grad,) = torch.autograd.grad((ours * weights).sum(), features)
    (theirs_grad,) = torch.autograd.grad((theirs * weights).sum(), features)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=0, atol=1e-12)


def test_box_gradient_matches_finite_differences():
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(2, 4, 12, 15, generator=generator, dtype=torch.float64)
    rois = random_rois(8, generator, extent=90.0)
    weights = torch.randn(8, 4, 3, 3, generator=generator, dtype=torch.float64)

    def loss(coordinates: torch.Tensor) -> torch.Tensor:
        return (roi_align_reference(features, torch.cat([rois[:, :1], coordinates], dim=1), 3, 1 / 8, 2) * weights).sum()

    coordinates = rois[:, 1:].clone().requires_grad_()
    assert torch.autograd.gradcheck(loss, (coordinates,), eps=1e-7, atol=1e-6)
    (gradient,) = torch.autograd.grad(loss(coordinates), coordinates)
    assert gradient.abs().max() > 1e-3  # torchvision's roi_align gives these boxes no gradient at all


def test_sample_weights_follow_torchvision_border_rules():
    weights = sample_weights(torch.tensor([-1.5, -0.5, 0.25, 3.5, 4.0, 4.5], dtype=torch.float64), 5)
    expected = torch.tensor([[0, 0, 0, 0, 0],          # beyond one pixel outside: 0
                             [1, 0, 0, 0, 0],          # within it: clamped to the border pixel
                             [0.75, 0.25, 0, 0, 0],
                             [0, 0, 0, 0.5, 0.5],
                             [0, 0, 0, 0, 1],          # the last pixel line
                             [0, 0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(weights, expected)


def test_bad_sampling_ratio_is_named():
    features = torch.zeros(1, 1, 4, 4)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="sampling_ratio"):
            roi_align_reference(features, torch.tensor([[0.0, 0, 0, 2, 2]]), 2, 1.0, bad)
