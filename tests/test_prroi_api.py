"""The public API of the pooling ops: RoI formats, modules, argument errors, and the fallback to the reference."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from sodlib import ops


def test_list_of_boxes_equals_rois_with_batch_index_and_gradients_reach_the_boxes() -> None:
    features = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    boxes = [torch.tensor([[1.0, 1.0, 5.0, 6.0]], dtype=torch.float64, requires_grad=True),
             torch.tensor([[0.5, 2.0, 3.0, 7.5], [2.0, 2.0, 7.0, 4.0]], dtype=torch.float64, requires_grad=True)]
    rois = torch.tensor([[0, 1, 1, 5, 6], [1, 0.5, 2, 3, 7.5], [1, 2, 2, 7, 4]], dtype=torch.float64)
    from_list = ops.prroi_pool(features, boxes, 2, 1.0)
    torch.testing.assert_close(from_list, ops.prroi_pool(features, rois, 2, 1.0))
    from_list.sum().backward()
    assert boxes[0].grad.shape == (1, 4) and boxes[1].grad.abs().sum() > 0


def test_modules_wrap_the_functions() -> None:
    features = torch.randn(1, 18, 9, 9)
    rois = torch.tensor([[0, 1.0, 2.0, 30.0, 25.0]])
    pool, ps_pool = ops.PrRoIPool((3, 3), 0.25), ops.PSPrRoIPool(3, 0.25)
    torch.testing.assert_close(pool(features, rois), ops.prroi_pool(features, rois, 3, 0.25))
    torch.testing.assert_close(ps_pool(features, rois), ops.ps_prroi_pool(features, rois, 3, 0.25))
    assert ps_pool(features, rois).shape == (1, 2, 3, 3)
    assert "spatial_scale=0.25" in repr(pool)


def test_torchvision_ops_are_exposed_for_comparison() -> None:
    import torchvision

    assert ops.roi_align is torchvision.ops.roi_align and ops.RoIPool is torchvision.ops.RoIPool
    assert ops.ps_roi_align is torchvision.ops.ps_roi_align


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda f, r: ops.prroi_pool(f[0], r, 2), ValueError, r"Tensor\[N, C, H, W\].*input\[None\]"),
        (lambda f, r: ops.prroi_pool(f.long(), r.long(), 2), TypeError, "floating point"),
        (lambda f, r: ops.prroi_pool(f, r[:, 1:], 2), ValueError, r"Tensor\[K, 5\].*list"),
        (lambda f, r: ops.prroi_pool(f, r[None], 2), ValueError, r"Tensor\[K, 5\]"),
        (lambda f, r: ops.prroi_pool(f, r.double(), 2), TypeError, r"rois.to\(input.dtype\)"),
        (lambda f, r: ops.prroi_pool(f, r, 0), ValueError, "output_size must be positive"),
        (lambda f, r: ops.prroi_pool(f, r, (2, 2, 2)), TypeError, "output_size"),
        (lambda f, r: ops.prroi_pool(f, r, 2.5), TypeError, "output_size"),
        (lambda f, r: ops.prroi_pool(f, r, 2, -1.0), ValueError, "spatial_scale"),
        (lambda f, r: ops.ps_prroi_pool(f, r, 3), ValueError, "multiple of kh \\* kw"),
        (lambda f, r: ops.prroi_pool(f, r + torch.tensor([3.0, 0, 0, 0, 0]), 2), ValueError, r"rois\[:, 0\]"),
        (lambda f, r: ops.ps_prroi_pool(f, r + torch.tensor([0.5, 0, 0, 0, 0]), 2), ValueError, r"rois\[:, 0\]"),
        (lambda f, r: ops.prroi_pool(f, r * torch.tensor([float("nan"), 1, 1, 1, 1]), 2), ValueError,
         r"rois\[:, 0\]"),
        (lambda f, r: ops.prroi_pool_reference(f, r - torch.tensor([1.0, 0, 0, 0, 0]), 2), ValueError,
         r"rois\[:, 0\]"),
        # a NaN or infinite box (a diverging box regression) is refused with its row, in the kernel and the reference
        (lambda f, r: ops.prroi_pool(f, r * torch.tensor([[1.0, 1, 1, 1, 1], [1, 1, float("nan"), 1, 1]]), 2),
         ValueError, r"rois\[:, 1:\] must be finite box coordinates, got \(0(\.0+)?, nan, 2(\.0+)?, 3(\.0+)?\) in row 1"),
        (lambda f, r: ops.ps_prroi_pool(f, r + torch.tensor([0, 0, 0, float("inf"), 0]), 2), ValueError,
         r"rois\[:, 1:\] must be finite.* in row 0"),
        (lambda f, r: ops.prroi_pool_reference(f, r + torch.tensor([0, float("-inf"), 0, 0, 0]), 2), ValueError,
         r"rois\[:, 1:\] must be finite.* in row 0"),
        (lambda f, r: ops.ps_prroi_pool_reference(f, r * torch.tensor([[1.0, 1, 1, 1, 1], [1, 1, 1, 1, float("nan")]]), 2),
         ValueError, r"rois\[:, 1:\] must be finite box coordinates, got \[0\.0, 0\.0, 2\.0, nan\] in row 1"),
        (lambda f, r: ops.prroi_pool(f, [r[:, 1:]] * 3, 2), ValueError, "batch of 2"),
        (lambda f, r: ops.prroi_pool(f, [r], 2), ValueError, r"rois\[0\] must be Tensor\[L, 4\]"),
        (lambda f, r: ops.prroi_pool(f, "boxes", 2), TypeError, "rois must be"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_fix(call, error, message) -> None:
    features = torch.randn(2, 8, 6, 6)
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0], [1, 0.0, 0.0, 2.0, 3.0]])
    with pytest.raises(error, match=message):
        call(features, rois)


def test_half_features_accept_float32_rois_but_float32_features_refuse_half_rois() -> None:
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]])
    assert ops.prroi_pool(torch.randn(1, 2, 6, 6).half(), rois, 2).dtype == torch.float16
    with pytest.raises(TypeError, match="rois are torch.float16"):
        ops.prroi_pool(torch.randn(1, 2, 6, 6), rois.half(), 2)


HIDE_EXTENSION = textwrap.dedent(
    """
    import sys, warnings

    class HideCompiledExtension:
        def find_spec(self, name, path=None, target=None):
            if name == "sodlib._C":
                raise ImportError("sodlib._C hidden by the test")
            return None

    sys.meta_path.insert(0, HideCompiledExtension())
    """
)


def run_python(code: str, require_extension: bool) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "SODLIB_REQUIRE_EXT"}
    if require_extension:
        env["SODLIB_REQUIRE_EXT"] = "1"
    return subprocess.run([sys.executable, "-c", HIDE_EXTENSION + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_without_the_extension_the_reference_runs_after_one_warning() -> None:
    result = run_python(
        """
        import torch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import sodlib.ops as ops
            features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], requires_grad=True)
            rois = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]], requires_grad=True)
            for _ in range(3):
                output = ops.prroi_pool(features, rois, 2)
            output.sum().backward()
        assert not ops.EXTENSION_LOADED
        print([str(w.message)[:40] for w in caught if issubclass(w.category, RuntimeWarning)])
        print(output.flatten().tolist(), rois.grad.flatten().tolist())
        """,
        require_extension=False,
    )
    assert result.returncode == 0, result.stderr
    warnings_line, values_line = result.stdout.strip().splitlines()
    assert warnings_line.count("sodlib._C is not loaded") == 1
    assert values_line == "[1.75, 2.25, 2.75, 3.25] [0.0, 2.0, 4.0, 2.0, 4.0]"


def test_require_ext_turns_the_fallback_into_an_error() -> None:
    result = run_python("import sodlib.ops", require_extension=True)
    assert result.returncode != 0
    assert "SODLIB_REQUIRE_EXT=1 but the compiled extension sodlib._C failed to load" in result.stderr
    assert "pip install --no-build-isolation -e ." in result.stderr


def test_meta_tensors_give_output_shapes_without_computing() -> None:
    features = torch.empty(2, 18, 10, 10, device="meta")
    rois = torch.empty(5, 5, device="meta")
    assert ops.ps_prroi_pool(features, rois, 3, 0.5).shape == (5, 2, 3, 3)
    assert ops.prroi_pool(features, rois, (2, 4), 0.5).shape == (5, 18, 2, 4)
