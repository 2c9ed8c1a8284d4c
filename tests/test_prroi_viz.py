"""The figures of notebook 04 build from plain data and return matplotlib Figures."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sodlib.viz import pooling  # noqa: E402


def test_every_pooling_figure_is_a_figure() -> None:
    maps = torch.zeros(1, 9, 24, 24, dtype=torch.float64)
    path = torch.tensor([[80.0, 44.0, 136.0, 100.0], [72.0, 52.0, 120.0, 96.0]], dtype=torch.float64)
    figures = [
        pooling.plot_roi_pool_bins((203.0, 117.0, 227.0, 141.0), (7, 7), 16, (38, 63)),
        pooling.plot_misalignment_by_size([16, 32, 64], [7.5, 8.0, 7.7], [19.0, 20.0, 19.2], 16),
        pooling.plot_sampling_convergence([1, 2, 4], [1e-2, 3e-3, 7e-4], [0.3, 0.08, 0.02], 1e-2),
        pooling.plot_edge_gradient_check([0.1, -0.2, 0.3], [0.1, -0.2, 0.3]),
        pooling.plot_position_sensitive_layout(3, out_channel=1),
        pooling.plot_box_refinement(maps, 8, path, [70.0, 54.0, 118.0, 94.0], [0.4, 0.6], [-0.2, 0.1]),
    ]
    for figure in figures:
        assert isinstance(figure, Figure) and figure.axes
    layout = figures[4].axes[0]
    assert [t.get_text() for t in layout.texts][:3] == ["9", "10", "11"]  # (c k + i) k + j for c = 1, i = 0
    plt.close("all")
