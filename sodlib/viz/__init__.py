"""Figures for the course: every function returns a matplotlib ``Figure`` so it can be tested and reused."""
from sodlib.viz.boxes import draw_target, plot_samples, plot_size_mix

__all__ = ["draw_target", "plot_samples", "plot_size_mix"]
