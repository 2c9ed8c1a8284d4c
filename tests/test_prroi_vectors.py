"""External test vectors of precise RoI pooling (shared/reference/prroi_test_vectors.md).

Each vector is checked on the compiled op and on the pure-PyTorch reference, in float32 and float64:
the output, the gradient of ``sum(output)`` with respect to the input, and with respect to the RoIs.
"""
from __future__ import annotations

import pytest
import torch

from sodlib.ops import prroi_pool, prroi_pool_reference, ps_prroi_pool, ps_prroi_pool_reference

POOLS = {"compiled": prroi_pool, "reference": prroi_pool_reference}
PS_POOLS = {"compiled": ps_prroi_pool, "reference": ps_prroi_pool_reference}
DTYPES = [torch.float32, torch.float64]

# mmcv's published vectors: output size 2 x 2, spatial_scale 1 (checked there to rtol 1e-3)
MMCV_VECTORS = [
    (
        [[[[1, 2], [3, 4]]]],
        [[0, 0, 0, 1, 1]],
        [[[[1.75, 2.25], [2.75, 3.25]]]],
        [[[[1, 1], [1, 1]]]],
        [[0, 2, 4, 2, 4]],
    ),
    (
        [[[[1, 2], [3, 4]], [[4, 3], [2, 1]]]],
        [[0, 0, 0, 1, 1]],
        [[[[1.75, 2.25], [2.75, 3.25]], [[3.25, 2.75], [2.25, 1.75]]]],
        [[[[1, 1], [1, 1]], [[1, 1], [1, 1]]]],
        [[0, 0, 0, 0, 0]],
    ),
    (
        [[[[1, 2, 5, 6], [3, 4, 7, 8], [9, 10, 13, 14], [11, 12, 15, 16]]]],
        [[0, 0, 0, 3, 3]],
        [[[[3.75, 6.91666651], [10.08333302, 13.25]]]],
        [[[[1 / 9, 2 / 9, 2 / 9, 1 / 9], [2 / 9, 4 / 9, 4 / 9, 2 / 9], [2 / 9, 4 / 9, 4 / 9, 2 / 9], [1 / 9, 2 / 9, 2 / 9, 1 / 9]]]],
        [[0, 3.33333302, 6.66666603, 3.33333349, 6.66666698]],
    ),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", POOLS)
@pytest.mark.parametrize("vector", range(len(MMCV_VECTORS)))
def test_mmcv_vectors(vector: int, impl: str, dtype: torch.dtype) -> None:
    features, rois, expected, expected_grad_input, expected_grad_rois = (
        torch.tensor(v, dtype=dtype) for v in MMCV_VECTORS[vector]
    )
    features.requires_grad_()
    rois.requires_grad_()
    output = POOLS[impl](features, rois, (2, 2), 1.0)
    output.sum().backward()
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(output, expected, **tol)
    torch.testing.assert_close(features.grad, expected_grad_input, **tol)
    torch.testing.assert_close(rois.grad, expected_grad_rois, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", POOLS)
@pytest.mark.parametrize(
    ("roi", "expected"),
    [([0, 0, 3, 3], 1.0), ([0, 0, 4, 4], 0.765625), ([-0.5, -0.5, 3.5, 3.5], 0.87890625)],
)
def test_constant_map_pins_the_zero_padded_border(roi: list[float], expected: float, impl: str, dtype) -> None:
    ones = torch.ones(1, 1, 4, 4, dtype=dtype)
    output = POOLS[impl](ones, torch.tensor([[0.0, *roi]], dtype=dtype), 1, 1.0)
    atol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(output, torch.full((1, 1, 1, 1), expected, dtype=dtype), rtol=0, atol=atol)


@pytest.mark.parametrize("impl", POOLS)
def test_unit_bins_at_integer_positions_average_four_pixels(impl: str) -> None:
    features = torch.randn(1, 3, 9, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rois = torch.tensor([[0, 0, 0, 14, 14]], dtype=torch.float64)
    output = POOLS[impl](features, rois, (7, 7), 0.5)
    expected = torch.nn.functional.avg_pool2d(features, 2, stride=1)[0, :, :7, :7]
    torch.testing.assert_close(output[0], expected, rtol=0, atol=1e-12)


def position_sensitive_maps(dtype: torch.dtype) -> torch.Tensor:
    """Input channel m = arange(16).reshape(4, 4) + 10 * m, m = 0..3: Tensor[1, 4, 4, 4]."""
    return torch.stack([torch.arange(16, dtype=dtype).reshape(4, 4) + 10 * m for m in range(4)])[None]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", PS_POOLS)
def test_position_sensitive_layout(impl: str, dtype: torch.dtype) -> None:
    rois = torch.tensor([[0, 0, 0, 3, 3]], dtype=dtype)
    output = PS_POOLS[impl](position_sensitive_maps(dtype), rois, 2, 1.0)
    expected = torch.tensor([[[[3.75, 15.25], [29.75, 41.25]]]], dtype=dtype)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-5)
    transposed = torch.tensor([[[[3.75, 25.25], [19.75, 41.25]]]], dtype=dtype)
    assert not torch.allclose(output, transposed)
