"""Shared pieces of the engine tests: one torch thread per test, and a tiny run configuration."""
from __future__ import annotations

import pytest
import torch

TINY_RUN_CONFIG = """
[data]
train_annotations = "{annotations}"
train_images = "{images}"
val_annotations = "{annotations}"
val_images = "{images}"
{data_extra}

[model]
backbone = "resnet_tiny"
fpn_channels = 16
representation_size = 32
min_size = 64
max_size = 64
anchor_sizes = [[8.0], [16.0], [32.0], [64.0], [128.0]]
box_batch_size_per_image = 32
rpn_pre_nms_top_n_train = 100
rpn_post_nms_top_n_train = 50

[train]
iterations = 2
batch_size = 2
warmup_iterations = 1
progress = false
num_threads = 1
seed = {seed}
{train_extra}

[evaluate]
size_bins = {{ tiny = [0.0, 64.0] }}
"""


def tiny_run_config(annotations, images, *, seed: int = 1, data_extra: str = "", train_extra: str = "") -> str:
    """A two-step run configuration of a tiny detector on 64 px images (TOML text)."""
    return TINY_RUN_CONFIG.format(annotations=annotations, images=images, seed=seed, data_extra=data_extra,
                                  train_extra=train_extra)


@pytest.fixture
def one_thread():
    """Run the test on one torch thread (two threads spin-wait for each other on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
