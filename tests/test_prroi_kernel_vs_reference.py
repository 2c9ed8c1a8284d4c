"""The compiled kernels against the pure-PyTorch reference, gradcheck, opcheck and torch.compile.

Random RoIs mix ordinary boxes, boxes of 1 px and less, boxes over the border and far outside the map,
and degenerate boxes. CUDA variants are marked ``cuda`` and skip without a GPU.
"""
from __future__ import annotations

import pytest
import torch

from sodlib.ops import has_compiled_kernel, prroi_pool, ps_prroi_pool
from sodlib.ops.prroi_reference import pool_reference

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]),
]


def mixed_rois(count: int, batch: int, height: int, width: int, scale: float, seed: int,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Tensor[count, 5] RoIs in image coordinates: a mix of ordinary, tiny (<= 1 px), border-crossing,
    outside and degenerate boxes."""
    g = torch.Generator().manual_seed(seed)
    kind = torch.arange(count) % 5
    index = torch.randint(0, batch, (count,), generator=g).to(dtype)
    tiny = torch.rand(count, 2, generator=g, dtype=dtype)  # sides of 0 .. 1 image pixel
    ordinary = (0.2 + 0.8 * torch.rand(count, 2, generator=g, dtype=dtype)) * torch.tensor([width, height]) / scale
    side = torch.where((kind == 1)[:, None], tiny, ordinary)
    low = torch.tensor([-0.5 * width, -0.5 * height], dtype=dtype) / scale
    span = torch.tensor([1.6 * width, 1.6 * height], dtype=dtype) / scale
    corner = low + span * torch.rand(count, 2, generator=g, dtype=dtype)
    corner = torch.where((kind == 3)[:, None], corner + 2 * span, corner)  # entirely outside the map
    second = corner + side
    second = torch.where((kind == 4)[:, None], corner - side * torch.tensor([1.0, 0.0], dtype=dtype), second)  # x2 <= x1
    return torch.cat([index[:, None], corner, second], dim=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("position_sensitive", [False, True], ids=["plain", "ps"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bins", [(3, 2), (3, 5)], ids=["6bins", "15bins"])  # the CPU kernels move bins 8 at a time
def test_kernel_matches_reference_forward_and_backward(device: str, position_sensitive: bool, dtype, bins) -> None:
    (kh, kw), scale = bins, 0.25
    g = torch.Generator().manual_seed(3)
    features = torch.randn(2, 2 * kh * kw, 11, 13, generator=g, dtype=dtype).to(device)
    rois = mixed_rois(40, 2, 11, 13, scale, seed=4, dtype=dtype).to(device)
    pool = ps_prroi_pool if position_sensitive else prroi_pool
    ours_input, ours_rois = features.clone().requires_grad_(), rois.clone().requires_grad_()
    ref_input, ref_rois = features.clone().requires_grad_(), rois.clone().requires_grad_()
    ours = pool(ours_input, ours_rois, (kh, kw), scale)
    reference = pool_reference(ref_input, ref_rois, kh, kw, scale, position_sensitive)
    weights = torch.randn(ours.shape, generator=g, dtype=dtype).to(device)
    (ours * weights).sum().backward()
    (reference * weights).sum().backward()
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours, reference, **tol)
    # a feature gradient sums the contributions of many bins in a different order: float32 error grows
    # with the largest gradient
    scale = ref_input.grad.abs().max().item()
    torch.testing.assert_close(ours_input.grad, ref_input.grad, rtol=tol["rtol"], atol=tol["atol"] * max(1.0, scale))
    if dtype == torch.float32:
        # box gradients of sub-pixel boxes are ill-conditioned in float32 (invariant 11; both implementations
        # are ~1 % off the float64 value there): compare the others, in norm
        not_tiny = torch.arange(rois.shape[0], device=device) % 5 != 1
        difference = (ours_rois.grad - ref_rois.grad)[not_tiny].norm()
        assert difference <= 1e-4 * ref_rois.grad[not_tiny].norm()
    else:
        torch.testing.assert_close(ours_rois.grad, ref_rois.grad, **tol)
    assert ours[4::5].abs().sum() == 0 and ours_rois.grad[4::5].abs().sum() == 0  # degenerate boxes


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("position_sensitive", [False, True], ids=["plain", "ps"])
def test_gradcheck_features_and_box_coordinates(device: str, position_sensitive: bool) -> None:
    g = torch.Generator().manual_seed(5)
    features = torch.randn(2, 8, 6, 7, generator=g, dtype=torch.float64).to(device).requires_grad_()
    rois = torch.tensor([[0, 1.3, 2.2, 5.7, 5.1], [1, -2.0, -1.5, 4.3, 3.2], [0, 3.1, 3.2, 3.5, 3.4],
                         [1, 4.2, 1.1, 8.9, 7.3], [0, 2.05, 0.7, 2.9, 1.45]], dtype=torch.float64, device=device)
    index, corners = rois[:, :1], rois[:, 1:].clone().requires_grad_()
    pool = ps_prroi_pool if position_sensitive else prroi_pool
    # the batch-index column is an integer label, not a differentiable input: keep it out of the check
    assert torch.autograd.gradcheck(lambda f, c: pool(f, torch.cat([index, c], dim=1), 2, 0.9), (features, corners))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("position_sensitive", [False, True], ids=["plain", "ps"])
def test_opcheck(device: str, position_sensitive: bool) -> None:
    g = torch.Generator().manual_seed(6)
    features = torch.randn(2, 8, 6, 7, generator=g, dtype=torch.float64).to(device).requires_grad_()
    rois = mixed_rois(10, 2, 6, 7, 1.0, seed=7).to(device).requires_grad_()
    forward = torch.ops.sodlib.prroi_pool_forward
    torch.library.opcheck(forward, (features, rois, 1.0, 2, 2, position_sensitive))
    output = forward(features.detach(), rois.detach(), 1.0, 2, 2, position_sensitive)
    grad = torch.randn_like(output)
    torch.library.opcheck(torch.ops.sodlib.prroi_pool_backward_input,
                          (grad, rois.detach(), 1.0, 2, 2, position_sensitive, *features.shape))
    torch.library.opcheck(torch.ops.sodlib.prroi_pool_backward_rois,
                          (grad, features.detach(), rois.detach(), output, 1.0, 2, 2, position_sensitive))


def test_torch_compile_traces_forward_and_backward_without_graph_breaks() -> None:
    features = torch.randn(2, 8, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = mixed_rois(10, 2, 6, 7, 1.0, seed=8).requires_grad_()
    compiled = torch.compile(lambda f, r: ps_prroi_pool(f, r, 2, 1.0), backend="aot_eager", fullgraph=True)
    output = compiled(features, rois)
    output.sum().backward()
    torch.testing.assert_close(output, ps_prroi_pool(features, rois, 2, 1.0))
    assert features.grad.abs().sum() > 0 and rois.grad[:, 1:].abs().sum() > 0


def test_the_compiled_kernel_serves_cpu() -> None:
    assert has_compiled_kernel(torch.device("cpu"))


@pytest.mark.parametrize("position_sensitive", [False, True], ids=["plain", "ps"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpu_half_inputs_pool_in_float32(position_sensitive: bool, dtype: torch.dtype) -> None:
    """Half and bfloat16 are read as they are and accumulated in float32: the same numbers as float32 inputs
    holding the same values, rounded once at the end."""
    g = torch.Generator().manual_seed(12)
    features = torch.randn(1, 2 * 49, 19, 23, generator=g).to(dtype)
    rois = mixed_rois(30, 1, 19, 23, 1 / 8, seed=13, dtype=torch.float32)
    pool = ps_prroi_pool if position_sensitive else prroi_pool
    half, single = features.clone().requires_grad_(), features.float().requires_grad_()
    out_half, out_single = pool(half, rois, 7, 1 / 8), pool(single, rois, 7, 1 / 8)
    assert out_half.dtype == dtype
    weights = torch.randn(out_single.shape, generator=g).to(dtype)
    (out_half * weights).sum().backward()
    (out_single * weights.float()).sum().backward()
    torch.testing.assert_close(out_half, out_single.to(dtype))
    torch.testing.assert_close(half.grad, single.grad.to(dtype))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cuda_matches_cpu_in_every_dtype(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(9)
    features = torch.randn(1, 98, 38, 63, generator=g).to(dtype)
    rois = mixed_rois(60, 1, 38, 63, 1 / 16, seed=10, dtype=torch.float32)
    cpu_features, cuda_features = features.clone().requires_grad_(), features.cuda().requires_grad_()
    cpu_rois, cuda_rois = rois.clone().requires_grad_(), rois.cuda().requires_grad_()
    cpu = ps_prroi_pool(cpu_features, cpu_rois, 7, 1 / 16)
    cuda = ps_prroi_pool(cuda_features, cuda_rois, 7, 1 / 16)
    cpu.float().sum().backward()
    cuda.float().sum().backward()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(cuda.cpu(), cpu, **tol)
    torch.testing.assert_close(cuda_features.grad.cpu(), cpu_features.grad, **tol)
    # box gradients: float32 inside on both devices, summed in different orders; sub-pixel boxes (every fifth)
    # are ill-conditioned (invariant 11), so they get the looser bound
    tiny = torch.arange(rois.shape[0]) % 5 == 1
    difference = cuda_rois.grad.cpu() - cpu_rois.grad
    assert difference[~tiny].norm() <= 1e-4 * cpu_rois.grad[~tiny].norm()
    assert difference[tiny].norm() <= 1e-2 * cpu_rois.grad[tiny].norm()


_KERNEL_RUN = """
import sys, torch
import sodlib.ops
from tests.test_prroi_kernel_vs_reference import mixed_rois
torch.manual_seed(0)
results = {"kernels": torch.ops.sodlib.cpu_kernels()}
for ps in (False, True):
    for dtype in (torch.float32, torch.float64):
        features = torch.randn(2, 18 if ps else 21, 23, 31, dtype=dtype)
        rois = mixed_rois(60, 2, 23, 31, 0.25, seed=3, dtype=dtype)
        output = torch.ops.sodlib.prroi_pool_forward(features, rois, 0.25, 3, 3, ps)
        grad = torch.randn_like(output)
        results[ps, dtype] = (output,
                              torch.ops.sodlib.prroi_pool_backward_input(grad, rois, 0.25, 3, 3, ps, *features.shape),
                              torch.ops.sodlib.prroi_pool_backward_rois(grad, features, rois, output, 0.25, 3, 3, ps))
torch.save(results, sys.argv[1])
"""


@pytest.mark.skipif(not has_compiled_kernel(torch.device("cpu")), reason="needs the compiled extension")
def test_baseline_and_avx2_builds_of_the_cpu_kernels_agree(tmp_path) -> None:
    """The CPU kernels are compiled twice (any CPU, and AVX2 + FMA); SODLIB_CPU_KERNELS=baseline picks the first."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    saved = {}
    for choice in ("default", "baseline"):
        env = {k: v for k, v in os.environ.items() if k != "SODLIB_CPU_KERNELS"}
        if choice == "baseline":
            env["SODLIB_CPU_KERNELS"] = "baseline"
        path = tmp_path / f"{choice}.pt"
        subprocess.run([sys.executable, "-c", _KERNEL_RUN, str(path)], check=True, cwd=root, env=env)
        saved[choice] = torch.load(path)
    assert saved["baseline"]["kernels"] == "baseline"
    if saved["default"]["kernels"] != "avx2":
        pytest.skip("this CPU or compiler has no AVX2 kernels; only the baseline runs")
    for key, baseline in saved["baseline"].items():
        if key == "kernels":
            continue
        for a, b in zip(saved["default"][key], baseline):
            # FMA rounds differently; the box gradient of sub-pixel boxes subtracts near-equal terms, so float32
            # results are compared against the scale of the whole result (both builds are as far from float64)
            scale = float(b.abs().max()) if b.numel() else 1.0
            tolerance = {"rtol": 1e-4, "atol": 1e-4 * scale} if key[1] == torch.float32 else {"rtol": 1e-10, "atol": 1e-12 * scale}
            torch.testing.assert_close(a, b, **tolerance)


@pytest.mark.skipif(not has_compiled_kernel(torch.device("cpu")), reason="needs the compiled extension")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plain_kernels_give_the_same_result_from_the_whole_map_and_from_roi_windows(dtype) -> None:
    """Many RoIs make the CPU kernels copy the whole map into channel blocks, one RoI copies only its window:
    pooling the RoIs together or one by one must agree."""
    torch.manual_seed(0)
    features = torch.randn(2, 19, 40, 50, dtype=dtype)
    rois = mixed_rois(40, 2, 40, 50, 0.5, seed=5, dtype=dtype)
    grad = torch.randn(len(rois), 19, 3, 4, dtype=dtype)
    ops = torch.ops.sodlib
    together = ops.prroi_pool_forward(features, rois, 0.5, 3, 4, False)
    together_input = ops.prroi_pool_backward_input(grad, rois, 0.5, 3, 4, False, *features.shape)
    together_rois = ops.prroi_pool_backward_rois(grad, features, rois, together, 0.5, 3, 4, False)
    one_by_one = torch.cat([ops.prroi_pool_forward(features, rois[k:k + 1], 0.5, 3, 4, False) for k in range(len(rois))])
    input_sum = sum(ops.prroi_pool_backward_input(grad[k:k + 1], rois[k:k + 1], 0.5, 3, 4, False, *features.shape)
                    for k in range(len(rois)))
    rois_grad = torch.cat([ops.prroi_pool_backward_rois(grad[k:k + 1], features, rois[k:k + 1], together[k:k + 1],
                                                       0.5, 3, 4, False) for k in range(len(rois))])
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(one_by_one, together, **tolerance)
    torch.testing.assert_close(input_sum, together_input, **tolerance)
    torch.testing.assert_close(rois_grad, together_rois, **tolerance)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("output_size", [(7, 7), (11, 5), (3, 8)])
def test_small_and_large_roi_windows_inside_and_across_the_border(device: str, output_size: tuple[int, int]) -> None:
    """The CPU kernels pool RoIs whose pixels fit a 4 x 4 window straight from the map (bin rows as vectors of 8
    lanes: fewer bins, more bin rows than lanes, exactly 8 bins), larger ones with taps on channel blocks:
    both against the reference, with windows cut by every border of the map."""
    height, width, (kh, kw) = 12, 14, output_size
    sides = [0.3, 1.0, 1.7, 2.6, 3.4, 4.5, 7.0]
    corners = [(5.3, 4.6), (-0.6, -0.4), (width - 1.3, height - 0.8), (-1.5, height - 2.2), (width - 2.4, -2.1)]
    rois = torch.tensor([[0.0, x, y, x + side, y + 0.8 * side] for side in sides for x, y in corners],
                        dtype=torch.float64)
    # pixels each RoI touches (hats overlapping it, inside the map), to be sure both paths are exercised
    columns = rois[:, 3].ceil().clamp(max=width - 1) - rois[:, 1].floor().clamp(min=0) + 1
    rows = rois[:, 4].ceil().clamp(max=height - 1) - rois[:, 2].floor().clamp(min=0) + 1
    small = (columns <= 4) & (rows <= 4)
    assert small.any() and (~small).any()
    g = torch.Generator().manual_seed(8)
    features = torch.randn(1, 11, height, width, generator=g, dtype=torch.float64).to(device)
    rois = rois.to(device)
    ours_input, ours_rois = features.clone().requires_grad_(), rois.clone().requires_grad_()
    ref_input, ref_rois = features.clone().requires_grad_(), rois.clone().requires_grad_()
    ours = prroi_pool(ours_input, ours_rois, (kh, kw))
    reference = pool_reference(ref_input, ref_rois, kh, kw, 1.0, False)
    weights = torch.randn(ours.shape, generator=g, dtype=torch.float64).to(device)
    (ours * weights).sum().backward()
    (reference * weights).sum().backward()
    tolerance = {"rtol": 1e-10, "atol": 1e-10}
    torch.testing.assert_close(ours, reference, **tolerance)
    torch.testing.assert_close(ours_input.grad, ref_input.grad, **tolerance)
    torch.testing.assert_close(ours_rois.grad, ref_rois.grad, **tolerance)


@pytest.mark.skipif(not has_compiled_kernel(torch.device("cpu")), reason="needs the compiled extension")
@pytest.mark.parametrize(("height", "width", "max_side"), [(38, 63, 300.0), (200, 300, 150.0)],
                         ids=["whole-map", "roi-windows"])
def test_cpu_threads_split_the_feature_gradient_into_row_bands(height: int, width: int, max_side: float) -> None:
    """The plain feature gradient runs one task per (band of map rows, block of 8 channels), with as many bands
    as threads: more threads than blocks (21 channels: 3), RoIs across band borders, small and large RoIs, on
    the whole map's blocks and on RoI windows, must give what one thread gives."""
    g = torch.Generator().manual_seed(11)
    side = 8 + (max_side - 8) * torch.rand(300, 2, generator=g, dtype=torch.float64)
    corner = torch.rand(300, 2, generator=g, dtype=torch.float64) * torch.tensor([16.0 * width, 16.0 * height])
    rois = torch.cat([torch.zeros(300, 1, dtype=torch.float64), corner, corner + side], dim=1)
    grad = torch.randn(300, 21, 7, 7, generator=g, dtype=torch.float64)

    def feature_gradient(threads: int) -> torch.Tensor:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return torch.ops.sodlib.prroi_pool_backward_input(grad, rois, 1 / 16, 7, 7, False, 1, 21, height, width)
        finally:
            torch.set_num_threads(before)

    torch.testing.assert_close(feature_gradient(5), feature_gradient(1), rtol=0, atol=1e-12)
