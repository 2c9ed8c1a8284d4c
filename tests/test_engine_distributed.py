"""Two processes under ``torchrun`` (gloo, CPU) train the same script that runs in one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from sodlib.data import CocoDetection, generate_synthetic_coco
from sodlib.engine import evaluate
from sodlib.engine.checkpoint import load_checkpoint
from sodlib.models import rebuild_model

# The script knows nothing of distribution: sodlib.engine.train joins torchrun's process group by itself.
SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch
    from sodlib.data import CocoDetection
    from sodlib.engine import train
    from sodlib.models import faster_rcnn

    torch.set_num_threads(1)
    annotations, images, out = sys.argv[1], sys.argv[2], sys.argv[3]
    dataset = CocoDetection(annotations, images)
    torch.manual_seed(0 + int(os.environ.get("RANK", 0)))  # different initialisations: DDP must align them
    model = faster_rcnn(dataset.num_classes, "resnet_tiny", anchor_sizes=((8.,), (16.,), (32.,), (64.,), (128.,)),
                        min_size=64, max_size=64, box_batch_size_per_image=32, rpn_batch_size_per_image=64,
                        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100)
    result = train(model, dataset, config={"iterations": 2, "batch_size": 2, "lr": 0.01, "warmup_iterations": 1,
                                           "progress": False, "seed": 5, "run_dir": out + "/run"})
    rank = int(os.environ.get("RANK", 0))
    torch.save(model.state_dict(), f"{out}/final_rank{rank}.pt")
    with open(f"{out}/seen_rank{rank}.json", "w") as handle:
        json.dump({"mine": result.image_ids_per_rank[rank], "all": result.image_ids_per_rank}, handle)
''')


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    root = tmp_path / "data"
    annotations = generate_synthetic_coco(root, 8, seed=2, image_size=96, workers=1, progress=False)
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
               str(annotations), str(root / "train"), str(tmp_path)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    # identical parameters in both processes at the end
    rank0, rank1 = (torch.load(tmp_path / f"final_rank{r}.pt") for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    # each process saw a different half: 2 steps x 2 images, disjoint, together all 8 images
    seen = [json.loads((tmp_path / f"seen_rank{r}.json").read_text()) for r in (0, 1)]
    mine0, mine1 = seen[0]["mine"], seen[1]["mine"]
    assert len(mine0) == len(mine1) == 4 and not set(mine0) & set(mine1)
    assert sorted(mine0 + mine1) == list(range(1, 9))
    assert seen[0]["all"] == seen[1]["all"] == [mine0, mine1]

    # the checkpoint (written by rank 0 only) loads and evaluates in this single process
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert checkpoint["world_size"] == 2 and checkpoint["iteration"] == 2 and len(checkpoint["rng"]) == 2
    model = rebuild_model(checkpoint["model_config"])
    model.load_state_dict(checkpoint["model"])
    for name, value in model.state_dict().items():
        assert torch.equal(value, rank0[name]), name
    metrics = evaluate(model, CocoDetection(annotations, root / "train"))
    assert set(metrics) >= {"AP", "AP50", "APs", "ARl"} and all(-1.0 <= v <= 1.0 for v in metrics.values())
    history = json.loads((tmp_path / "run" / "history.json").read_text())["history"]
    assert [row["image_ids"] for row in history] == [{"0": mine0[:2], "1": mine1[:2]}, {"0": mine0[2:], "1": mine1[2:]}]
