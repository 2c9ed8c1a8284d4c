"""sodlib.viz.augment: the before/after figures draw what copy-paste returns."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from sodlib.augment import CopyPasteSettings, copy_paste_small_objects  # noqa: E402
from sodlib.data import CocoDetection, embedded_dataset  # noqa: E402
from sodlib.viz.augment import closeup_strip, plot_copy_paste, plot_repeat_rates  # noqa: E402


@pytest.fixture(scope="module")
def example():
    annotations, images = embedded_dataset("train")
    image, target = CocoDetection(annotations, images, masks=True, image_ids=[2])[0]
    result = copy_paste_small_objects(image, target, np.random.default_rng(0), CopyPasteSettings("all", 1))
    return image, target, result.image, result.target, result.sources.tolist()


def test_plot_copy_paste_draws_before_after_and_closeups(example):
    figure = plot_copy_paste([example, example], closeups=3, title="copy-paste")
    assert len(figure.axes) == 6
    before, after, closeups = figure.axes[:3]
    assert len(after.patches) == len(before.patches) + 2 * len(example[4])  # size-bin box + cyan outline
    assert closeups.get_images()[0].get_array().shape[1] == 2 * min(3, len(example[4])) * 50
    plt.close(figure)


def test_closeup_strip_and_errors(example):
    image, target, *_ = example
    empty = closeup_strip(image, image, target, target, [])
    assert empty.shape == (48, 48, 3)
    with pytest.raises(ValueError, match="examples is empty"):
        plot_copy_paste([])
    figure = plot_repeat_rates([1, 2, 3], [1.0, 2.0, 3.0])
    assert len(figure.axes[0].lines) == 2
    plt.close(figure)
    assert torch.is_tensor(image)
