"""Figures for the course: every function returns a matplotlib ``Figure`` so it can be tested and reused.

:func:`plot_error_decomposition` draws :func:`sodlib.eval.error_decomposition` per size bin, one bar per detector;
:func:`plot_tile_grid` and :func:`plot_detections_compared` picture sliced inference.
"""
from sodlib.viz.boxes import draw_target, plot_samples, plot_size_mix
from sodlib.viz.statistics import plot_best_iou_vs_side, plot_category_small_share, plot_share_bars, plot_side_histogram, size_shares, table_beside_paper
from sodlib.viz.anchors import anchor_explorer_view, iou_explorer_view, plot_anchor_design, plot_matching_comparison
from sodlib.viz.super_resolution import plot_upscaling_grid
from sodlib.viz.pyramid_levels import level_assignment, level_explorer_view, plot_level_assignment
from sodlib.viz.error_decomposition import plot_error_decomposition
from sodlib.viz.slicing import plot_detections_compared, plot_tile_grid

__all__ = [
    "anchor_explorer_view",
    "draw_target",
    "iou_explorer_view",
    "level_assignment",
    "level_explorer_view",
    "plot_anchor_design",
    "plot_best_iou_vs_side",
    "plot_category_small_share",
    "plot_detections_compared",
    "plot_error_decomposition",
    "plot_level_assignment",
    "plot_matching_comparison",
    "plot_samples",
    "plot_share_bars",
    "plot_side_histogram",
    "plot_size_mix",
    "plot_tile_grid",
    "plot_upscaling_grid",
    "size_shares",
    "table_beside_paper",
]
