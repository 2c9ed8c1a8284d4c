"""Invariants of precise RoI pooling (shared/reference/prroi_test_vectors.md, "Invariants worth a property test").

Numbered as in that file. The compiled op is tested; the reference is held to it in
test_prroi_kernel_vs_reference.py.
"""
from __future__ import annotations

import pytest
import torch

from sodlib.ops import prroi_pool, ps_prroi_pool, ps_roi_align_pixel_convention, roi_align


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_rois(count: int, batch: int, low: float, high: float, min_size: float, max_size: float, seed: int,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Tensor[count, 5] boxes with corners in [low, high] and sides in [min_size, max_size]."""
    g = generator(seed)
    index = torch.randint(0, batch, (count, 1), generator=g).to(dtype)
    size = min_size + (max_size - min_size) * torch.rand(count, 2, generator=g, dtype=dtype)
    corner = low + (high - low - size) * torch.rand(count, 2, generator=g, dtype=dtype)
    return torch.cat([index, corner, corner + size], dim=1)


def test_1_linear_in_features_and_backward_is_the_adjoint() -> None:
    a, b = (torch.randn(2, 3, 9, 11, generator=generator(s), dtype=torch.float64) for s in (0, 1))
    rois = random_rois(12, 2, -3, 14, 0.2, 8, seed=2)
    pooled = lambda f: prroi_pool(f, rois, (3, 4), 0.9)  # noqa: E731
    torch.testing.assert_close(pooled(2 * a - 3 * b), 2 * pooled(a) - 3 * pooled(b), rtol=1e-12, atol=1e-12)
    # <P a, g> == <a, P^T g>: the feature gradient is the adjoint of the forward map
    g = torch.randn(12, 3, 3, 4, generator=generator(3), dtype=torch.float64)
    a.requires_grad_()
    (adjoint,) = torch.autograd.grad((pooled(a) * g).sum(), a)
    torch.testing.assert_close((pooled(a) * g).sum(), (a * adjoint).sum(), rtol=1e-12, atol=1e-12)


def test_2_feature_gradient_of_an_interior_bin_sums_to_one() -> None:
    features = torch.randn(1, 2, 10, 12, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 1.7, 10.6, 8.9], [0, 2.0, 3.0, 2.4, 3.1]], dtype=torch.float64)
    output = prroi_pool(features, rois, (2, 3), 1.0)
    for k, c, i, j in [(0, 0, 0, 0), (0, 1, 1, 2), (1, 0, 1, 1)]:
        (grad,) = torch.autograd.grad(output[k, c, i, j], features, retain_graph=True)
        torch.testing.assert_close(grad.sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-12)
        assert grad[:, 1 - c].abs().sum() == 0  # only the pooled channel is touched


def test_3_constant_map_pools_the_constant_with_zero_box_gradient() -> None:
    features = torch.full((1, 1, 8, 8), 2.5, dtype=torch.float64)
    rois = random_rois(10, 1, 0, 7, 0.05, 6, seed=4).requires_grad_()
    output = prroi_pool(features, rois, 3, 1.0)
    torch.testing.assert_close(output, torch.full_like(output, 2.5), rtol=0, atol=1e-12)
    output.sum().backward()
    torch.testing.assert_close(rois.grad, torch.zeros_like(rois), rtol=0, atol=1e-10)


@pytest.mark.parametrize("pool", [prroi_pool, ps_prroi_pool])
def test_4_integer_translation_of_map_and_roi(pool) -> None:
    features = torch.randn(1, 8, 7, 9, generator=generator(5), dtype=torch.float64)
    rois = random_rois(10, 1, -2, 10, 0.1, 7, seed=6)  # some cross the border
    shifted_features = torch.nn.functional.pad(features, (3, 0, 2, 0))  # 3 columns left, 2 rows on top
    scale = 0.5
    shifted_rois = rois + torch.tensor([0, 3, 2, 3, 2], dtype=torch.float64) / scale
    torch.testing.assert_close(pool(shifted_features, shifted_rois, 2, scale), pool(features, rois, 2, scale),
                               rtol=1e-12, atol=1e-12)


def test_5_scaling_rois_and_dividing_the_scale_changes_nothing() -> None:
    features = torch.randn(2, 3, 10, 10, generator=generator(7), dtype=torch.float64)
    rois = random_rois(15, 2, -5, 40, 0.5, 30, seed=8)
    s = torch.tensor([1, 3.0, 3.0, 3.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(prroi_pool(features, rois * s, 7, 0.25 / 3), prroi_pool(features, rois, 7, 0.25),
                               rtol=1e-10, atol=1e-12)


def test_6_roi_align_converges_to_prroi_inside_the_map() -> None:
    features = torch.randn(1, 4, 12, 12, generator=generator(9), dtype=torch.float64)
    rois = random_rois(8, 1, 0.5, 10.5, 1.0, 6, seed=10)  # interior: bins stay inside [0, 11]
    exact = prroi_pool(features, rois, 2, 1.0)

    def gap(sampling_ratio: int) -> torch.Tensor:
        approx = roi_align(features, rois, 2, 1.0, sampling_ratio=sampling_ratio, aligned=False)
        return (approx - exact).abs()

    assert gap(64).mean() < 1e-4 and gap(64).max() < 5e-4  # about 1e-4
    assert gap(128).max() < gap(64).max() / 3  # the midpoint rule converges like 1 / samples^2
    assert gap(2).mean() > 1e-2  # about 3e-2 at torchvision's usual sampling_ratio=2
    assert gap(0).mean() > 1e-2  # adaptive sampling (ceil(bin size) points) does not converge

    ps_features = torch.randn(1, 8, 12, 12, generator=generator(11), dtype=torch.float64)
    ps_exact = ps_prroi_pool(ps_features, rois, 2, 1.0)
    ps_approx = ps_roi_align_pixel_convention(ps_features, rois, 2, 1.0, sampling_ratio=64)
    assert (ps_approx - ps_exact).abs().mean() < 1e-4 and (ps_approx - ps_exact).abs().max() < 5e-4


def test_7_position_sensitive_reads_one_channel_per_bin() -> None:
    k, classes = 3, 2
    features = torch.randn(2, classes * k * k, 9, 9, generator=generator(12), dtype=torch.float64)
    rois = random_rois(6, 2, -1, 10, 0.3, 8, seed=13)
    ps = ps_prroi_pool(features, rois, k, 1.0)
    plain = prroi_pool(features, rois, k, 1.0)
    for c in range(classes):
        for i in range(k):
            for j in range(k):
                # the CPU kernels sum the same terms in a different order (plain pooling integrates the
                # rows of all bins first, PS-PrRoI one bin at a time), so they agree to float64 rounding;
                # reading a wrong channel would be off by O(1)
                torch.testing.assert_close(ps[:, c, i, j], plain[:, (c * k + i) * k + j, i, j], rtol=1e-13, atol=1e-14)


def distance_of_bin_edges_to_pixels(roi: torch.Tensor, bins: int) -> float:
    """How close any bin edge of ``roi`` (Tensor[5], scale 1) comes to an integer, where f has a kink."""
    steps = torch.arange(bins + 1, dtype=roi.dtype) / bins
    edges = torch.cat([roi[1] + steps * (roi[3] - roi[1]), roi[2] + steps * (roi[4] - roi[2])])
    return (edges - edges.round()).abs().min().item()


@pytest.mark.parametrize("pool", [prroi_pool, ps_prroi_pool])
def test_8_box_gradient_matches_central_differences_on_every_edge(pool) -> None:
    features = torch.randn(2, 8, 9, 10, generator=generator(14), dtype=torch.float64)
    rois = torch.cat([
        random_rois(6, 2, 0, 9, 0.3, 6, seed=15),
        torch.tensor([[1, -1.7, -0.6, 3.2, 4.1], [0, 7.3, 6.2, 11.6, 10.4], [1, 2.0, 3.0, 5.0, 7.0]], dtype=torch.float64),
    ])
    out_channels = 2 if pool is ps_prroi_pool else 8
    weights = torch.randn(rois.shape[0], out_channels, 2, 2, generator=generator(16), dtype=torch.float64)
    loss = lambda r: (pool(features, r, 2, 1.0) * weights).sum()  # noqa: E731
    rois_var = rois.clone().requires_grad_()
    (analytic,) = torch.autograd.grad(loss(rois_var), rois_var)
    assert analytic[:, 0].abs().sum() == 0  # the batch-index column gets no gradient
    checked = 0
    for eps in (1e-4, 1e-6):
        for k in range(rois.shape[0]):
            # f has kinks at integer x and y, so the box gradient has kinks where a bin edge crosses one;
            # central differences straddling a kink are only O(eps) accurate: use those whose steps do not
            if distance_of_bin_edges_to_pixels(rois[k], 2) < 2 * eps:
                continue
            for column in range(1, 5):  # x1, y1, x2, y2: every edge separately
                step = torch.zeros_like(rois)
                step[k, column] = eps
                numeric = (loss(rois + step) - loss(rois - step)) / (2 * eps)
                torch.testing.assert_close(analytic[k, column], numeric, rtol=1e-6, atol=1e-8)
                checked += 1
    assert checked >= 2 * 4 * (rois.shape[0] - 1)


def test_8_box_gradient_at_integer_edges_matches_small_central_differences() -> None:
    features = torch.randn(1, 3, 9, 10, generator=generator(23), dtype=torch.float64)
    rois = torch.tensor([[0, 2.0, 3.0, 5.0, 7.0]], dtype=torch.float64, requires_grad=True)
    loss = lambda r: prroi_pool(features, r, 2, 1.0).sum()  # noqa: E731
    (analytic,) = torch.autograd.grad(loss(rois), rois)
    eps = 1e-7  # the derivative is continuous at a kink of f, so differences converge from both sides
    for column in range(1, 5):
        step = torch.zeros_like(rois)
        step[0, column] = eps
        numeric = (loss(rois.detach() + step) - loss(rois.detach() - step)) / (2 * eps)
        torch.testing.assert_close(analytic[0, column], numeric, rtol=1e-6, atol=1e-6)


def test_9_degenerate_rois_pool_zero_without_nans_and_empty_roi_sets() -> None:
    features = torch.randn(1, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 2, 2, 2, 4], [0, 2, 2, 4, 2], [0, 4, 4, 1, 1], [0, 1, 1, 3, 3]], dtype=torch.float64,
                        requires_grad=True)
    output = prroi_pool(features, rois, 2, 1.0)
    assert output[:3].abs().sum() == 0 and output[3].abs().sum() > 0
    output.sum().backward()
    assert torch.isfinite(rois.grad).all() and torch.isfinite(features.grad).all()
    assert rois.grad[:3].abs().sum() == 0

    empty = torch.zeros(0, 5, dtype=torch.float64, requires_grad=True)
    for pool, channels in ((prroi_pool, 3), (ps_prroi_pool, 4)):
        maps = torch.randn(1, channels * (4 if pool is ps_prroi_pool else 1), 6, 6, dtype=torch.float64,
                           requires_grad=True)
        out = pool(maps, empty, 2, 1.0)
        assert out.shape == (0, channels, 2, 2)
        out.sum().backward()
        assert maps.grad.abs().sum() == 0 and empty.grad.shape == (0, 5)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_10_tensors_on_a_non_current_gpu() -> None:
    features = torch.randn(2, 4, 9, 9, generator=generator(17))
    rois = random_rois(7, 2, -1, 9, 0.3, 7, seed=18, dtype=torch.float32)
    expected = prroi_pool(features, rois, 3, 1.0)
    with torch.cuda.device(0):
        features1, rois1 = features.to("cuda:1").requires_grad_(), rois.to("cuda:1").requires_grad_()
        output = prroi_pool(features1, rois1, 3, 1.0)
        output.sum().backward()
    assert output.device == torch.device("cuda:1") and rois1.grad.device == torch.device("cuda:1")
    torch.testing.assert_close(output.cpu(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("box_px", "bound"), [(16.0, 2e-3), (1.0, 3e-2)])
def test_11_small_boxes_in_float32_stay_within_the_expected_box_gradient_error(box_px: float, bound: float) -> None:
    """At stride 16 with 7 x 7 bins a 1 px box gives 1/112 px bins: the edge gradient subtracts two nearly
    equal terms, so float32 loses digits (~1e-4 relative at 16 px, ~6e-3 at 1 px); it must not lose more."""
    features = torch.randn(1, 16, 38, 63, generator=generator(19), dtype=torch.float64)
    g = generator(20)
    corner = 32 + 900 * torch.rand(40, 2, generator=g, dtype=torch.float64)
    rois = torch.cat([torch.zeros(40, 1, dtype=torch.float64), corner, corner + box_px], dim=1)
    weights = torch.randn(40, 16, 7, 7, generator=g, dtype=torch.float64)

    def box_gradient(dtype: torch.dtype) -> torch.Tensor:
        r = rois.to(dtype).requires_grad_()
        (grad,) = torch.autograd.grad((prroi_pool(features.to(dtype), r, 7, 1 / 16) * weights.to(dtype)).sum(), r)
        return grad.double()

    exact = box_gradient(torch.float64)
    relative = (box_gradient(torch.float32) - exact).norm() / exact.norm()
    assert relative < bound


def test_11_half_inputs_are_accumulated_in_float32() -> None:
    features = torch.randn(1, 8, 20, 20, generator=generator(21))
    rois = random_rois(20, 1, 0, 300, 4, 100, seed=22, dtype=torch.float32)
    exact = prroi_pool(features.double(), rois.double(), 7, 1 / 16)
    for dtype in (torch.float16, torch.bfloat16):
        half_features = features.to(dtype).requires_grad_()
        rois_var = rois.clone().requires_grad_()  # float32 RoIs are accepted with half features
        output = prroi_pool(half_features, rois_var, 7, 1 / 16)
        assert output.dtype == dtype
        output.float().sum().backward()
        assert half_features.grad.dtype == dtype and rois_var.grad.dtype == torch.float32
        assert torch.isfinite(rois_var.grad).all()
        # only the rounding of the inputs and of the output: float32 accumulation inside
        rounded_input = prroi_pool(features.to(dtype).double(), rois.double(), 7, 1 / 16)
        unit = 2.0 ** -8 if dtype == torch.float16 else 2.0 ** -5
        assert (output.double() - rounded_input).abs().max() <= unit * rounded_input.abs().max()
        assert (output.double() - exact).abs().max() < 4 * unit * exact.abs().max()
