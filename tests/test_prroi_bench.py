"""The benchmark command runs end to end on a tiny workload and prints a ratio table (no timing asserts)."""
from __future__ import annotations

import pytest

from sodlib.cli import main
from sodlib.bench.prroi import Timing, Workload, format_ratio_table, format_times_table, random_boxes, ratio_table


def test_bench_prroi_prints_every_comparison(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "prroi", "--device", "cpu", "--rois", "4", "--repeats", "1", "--reference-repeats", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "4 RoIs" in out and "38x63" in out
    for label in ("PrRoI: reference / compiled", "PS-PrRoI: compiled / ps_roi_align(sr=2)"):
        for cache in ("cold", "warm"):
            assert f"{cache}   {label}" in out
    assert "cpu     warm   prroi_pool " in out
    assert "cpu: the fixed cost of a call" in out


def test_bench_prroi_takes_the_coco_class_count(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "prroi", "--device", "cpu", "--rois", "2", "--classes", "81", "--repeats", "1",
                 "--reference-repeats", "1"])
    assert code == 0 and "81 classes" in capsys.readouterr().out
    assert main(["bench", "prroi", "--device", "cpu", "--classes", "0"]) == 2
    assert "--classes" in capsys.readouterr().err


def test_cold_is_the_first_run_of_a_turn_and_warm_the_runs_after_it() -> None:
    import time

    import torch

    from sodlib.bench.prroi import fastest_seconds

    runs = {"a": 0, "b": 0}

    def call(name: str):
        def run() -> None:  # slow on the first run of each turn of 1 + 2 runs, after one warm-up run
            runs[name] += 1
            time.sleep(0.02 if runs[name] % 3 == 2 else 0.001)
        return run

    best = fastest_seconds({"a": call("a"), "b": call("b")}, {"a": 3, "b": 2}, torch.device("cpu"), warm_runs=2)
    assert runs == {"a": 1 + 3 * 3, "b": 1 + 2 * 3}
    for name in runs:
        assert best[name]["cold"] >= 0.02 > 0.01 > best[name]["warm"]


def test_bench_rejects_bad_counts() -> None:
    assert main(["bench", "all", "--device", "cpu", "--rois", "0"]) == 2


def test_ratio_table_divides_the_right_way() -> None:
    timings = [Timing("prroi_pool", "cpu", "forward", 1.0), Timing("prroi_pool_reference", "cpu", "forward", 30.0),
               Timing("roi_align(sampling_ratio=2)", "cpu", "forward", 2.0)]
    rows = {row["comparison"]: row for row in ratio_table(timings)}
    assert rows["PrRoI: reference / compiled (speed-up)"]["forward"] == 30.0
    assert rows["PrRoI: compiled / roi_align(sr=2) (time ratio)"]["forward"] == 0.5
    assert rows["PS-PrRoI: reference / compiled (speed-up)"]["forward"] is None
    assert rows["PrRoI: reference / compiled (speed-up)"]["cache"] == "cold"
    assert "30.00" in format_ratio_table(list(rows.values()))
    times = format_times_table(timings)
    assert "1000.000" in times and "30000.000" in times


def test_workload_boxes_are_mostly_small_and_inside_the_image() -> None:
    import torch

    workload = Workload()
    boxes = random_boxes(workload, torch.Generator().manual_seed(0))
    side = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    assert boxes.shape == (300, 4) and workload.feature_size == (38, 63)
    assert (side < 32).float().mean() > 0.6
    assert (boxes >= 0).all() and (boxes[:, 2] <= 1000).all() and (boxes[:, 3] <= 600).all()


def test_bench_rfcn_times_both_detectors_and_every_pooling(capsys: pytest.CaptureFixture[str]) -> None:
    from sodlib.bench.rfcn import benchmark_rfcn
    from sodlib.ops import POOLINGS

    timings = benchmark_rfcn(repeats=1, images=1)
    assert set(timings.inference_ms_per_image) == {"faster_rcnn", "rfcn"}
    assert set(timings.training_step_ms) == set(POOLINGS)
    assert all(t > 0 for t in [*timings.inference_ms_per_image.values(), *timings.training_step_ms.values()])
    summary = timings.summary()
    assert "R-FCN / Faster R-CNN" in summary and "PS-PrRoI / PS-RoIAlign" in summary
    with pytest.raises(ValueError, match="repeats=0 and images=1 must be positive"):
        benchmark_rfcn(repeats=0, images=1)
    assert main(["bench", "rfcn", "--repeats", "0"]) == 2
    assert "--repeats must be positive" in capsys.readouterr().err
