"""Interactive explorers of notebooks 02, 05, 06 and 07 (ipywidgets 8).

The widgets are thin: they read their controls, call a pure function of :mod:`sodlib.viz.anchors`
(:func:`~sodlib.viz.anchors.iou_explorer_view`, :func:`~sodlib.viz.anchors.anchor_explorer_view`) or
:mod:`sodlib.viz.position_sensitive` (:func:`~sodlib.viz.position_sensitive.ps_pooling_explorer_view`) or
:mod:`sodlib.viz.super_resolution` (:func:`~sodlib.viz.super_resolution.upscaling_view`) or
:mod:`sodlib.viz.pyramid_levels` (:func:`~sodlib.viz.pyramid_levels.level_assignment` drawn by
:func:`~sodlib.viz.pyramid_levels.plot_level_assignment`, as :func:`~sodlib.viz.pyramid_levels.level_explorer_view`
does) that returns a figure and a report, show the figure in an ``Output`` widget and the report as text. Everything they compute
is tested without a kernel; the widgets only wire.
"""
from __future__ import annotations

import html
from typing import Any, Callable, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt

from sodlib.viz.anchors import anchor_explorer_view, iou_explorer_view
from sodlib.viz.position_sensitive import ps_pooling_explorer_view
from sodlib.viz.pyramid_levels import LevelAssignment, level_assignment, plot_level_assignment
from sodlib.viz.super_resolution import upscaling_view

__all__ = ["ASPECT_RATIO_CHOICES", "Explorer", "anchor_explorer", "explorer_anchor_sizes", "iou_explorer",
           "level_explorer", "ps_pooling_explorer", "sr_explorer"]

#: Aspect-ratio sets (``h / w``) offered by the anchor explorer's slider.
ASPECT_RATIO_CHOICES: dict[str, tuple[float, ...]] = {
    "1": (1.0,),
    "0.5, 1, 2": (0.5, 1.0, 2.0),
    "1/3, 1/2, 1, 2, 3": (1.0 / 3.0, 0.5, 1.0, 2.0, 3.0),
}
STRIDE_CHOICES: tuple[int, ...] = (4, 8, 16, 32, 64)


def explorer_anchor_sizes(smallest: float, count: int, per_octave: int) -> tuple[float, ...]:
    """``count`` anchor sizes from ``smallest``, ``per_octave`` of them per doubling:
    ``smallest * 2 ** (k / per_octave)`` for ``k = 0 .. count - 1`` (16, 6, 2 gives 16, 22.6, 32, 45.3, 64, 90.5,
    close to Krishna and Jawahar's {16, 25, 32, 45, 64, 90})."""
    if smallest <= 0 or count < 1 or per_octave < 1:
        raise ValueError(f"need smallest > 0, count >= 1 and per_octave >= 1, got {smallest}, {count}, {per_octave}")
    return tuple(float(smallest) * 2.0 ** (k / per_octave) for k in range(int(count)))


class Explorer(widgets.VBox):
    """A column of controls above an ``Output`` showing the current figure and a text report.

    ``controls``: name -> widget; ``render()`` redraws from the current control values (called on every
    change); ``report``: the last report object; ``renders``: how many times it drew.
    """

    def __init__(self, controls: dict[str, widgets.Widget], view: Callable[..., tuple[Any, Any]],
                 arguments: Callable[[dict[str, Any]], dict[str, Any]], columns: int = 2) -> None:
        self.controls = controls
        self.output = widgets.Output(layout=widgets.Layout(min_height="320px"))
        self.text = widgets.HTML()
        self.report: Any = None
        self.renders = 0
        self._view = view
        self._arguments = arguments
        names = list(controls)
        rows = [widgets.HBox([controls[n] for n in names[i:i + columns]]) for i in range(0, len(names), columns)]
        super().__init__([*rows, self.output, self.text])
        for control in controls.values():
            control.observe(lambda _change: self.render(), names="value")
        self.render()

    def values(self) -> dict[str, Any]:
        return {name: control.value for name, control in self.controls.items()}

    def render(self) -> None:
        from IPython.display import display

        try:
            figure, report = self._view(**self._arguments(self.values()))
        except ValueError as error:  # an impossible combination of controls: say why, keep the last figure
            self.text.value = f"<pre style='color:#b00'>{html.escape(str(error))}</pre>"
            return
        self.report = report
        self.renders += 1
        with self.output:
            self.output.clear_output(wait=True)
            display(figure)
        plt.close(figure)
        self.text.value = f"<pre style='font-size:11px'>{html.escape(report.summary())}</pre>"


def _slider_style() -> dict[str, Any]:
    return dict(style={"description_width": "110px"}, layout=widgets.Layout(width="380px"), continuous_update=False)


def iou_explorer(object_side: float = 16.0, anchor_side: float = 24.0, offset: float = 4.0,
                 iou_threshold: float = 0.5, strides: Sequence[float] = STRIDE_CHOICES) -> Explorer:
    """Sliders for a square object's side, a square anchor's side, their centre distance ``d`` on each axis and
    the IoU threshold; draws :func:`sodlib.viz.anchors.iou_explorer_view` (the boxes, IoU against ``d`` with the
    threshold, the smallest matchable object per stride)."""
    style = _slider_style()
    controls = {
        "object_side": widgets.FloatSlider(value=object_side, min=2.0, max=256.0, step=1.0, description="object side (px)", **style),
        "anchor_side": widgets.FloatSlider(value=anchor_side, min=2.0, max=512.0, step=1.0, description="anchor side (px)", **style),
        "offset": widgets.FloatSlider(value=offset, min=0.0, max=64.0, step=0.5, description="offset d (px)", **style),
        "iou_threshold": widgets.FloatSlider(value=iou_threshold, min=0.05, max=0.95, step=0.05, description="IoU threshold", **style),
    }
    return Explorer(controls, iou_explorer_view, lambda v: {**v, "strides": tuple(strides)})


def anchor_explorer(dataset, image_index: int = 0, stride: int = 16, smallest: float = 32.0, count: int = 3,
                    per_octave: int = 1, ratios: str = "0.5, 1, 2", offset: float = 0.0, pos_iou: float = 0.7,
                    neg_iou: float = 0.3) -> Explorer:
    """Pick an image of ``dataset`` (``dataset[i] -> (image Tensor[3, H, W], target dict)``, e.g.
    :class:`sodlib.data.CocoDetection`) and set one anchor level: stride, sizes (smallest, how many, how many per
    octave), aspect ratios, centre offset, and the two IoU thresholds. Draws
    :func:`sodlib.viz.anchors.anchor_explorer_view`: ground truth coloured by size bin, each object's matched
    anchors, all anchor shapes at the first small object's location; reports per object its matched anchors and
    best IoU, and the image's share of small objects with no anchor above the threshold."""
    style = _slider_style()
    if len(dataset) == 0:
        raise ValueError("the dataset is empty; pass e.g. sodlib.data.CocoDetection(*embedded_dataset('train'))")
    controls = {
        "image": widgets.IntSlider(value=image_index, min=0, max=len(dataset) - 1, description="image", **style),
        "stride": widgets.SelectionSlider(options=list(STRIDE_CHOICES), value=stride, description="stride (px)", **style),
        "smallest": widgets.SelectionSlider(options=[4, 8, 11, 16, 23, 32, 45, 64, 91, 128], value=smallest, description="smallest anchor", **style),
        "count": widgets.IntSlider(value=count, min=1, max=8, description="anchor sizes", **style),
        "per_octave": widgets.IntSlider(value=per_octave, min=1, max=3, description="sizes / octave", **style),
        "ratios": widgets.SelectionSlider(options=list(ASPECT_RATIO_CHOICES), value=ratios, description="ratios h/w", **style),
        "offset": widgets.FloatSlider(value=offset, min=0.0, max=0.75, step=0.25, description="centre offset", **style),
        "pos_iou": widgets.FloatSlider(value=pos_iou, min=0.3, max=0.95, step=0.05, description="positive IoU", **style),
        "neg_iou": widgets.FloatSlider(value=neg_iou, min=0.05, max=0.7, step=0.05, description="negative IoU", **style),
    }

    def arguments(values: dict[str, Any]) -> dict[str, Any]:
        image, target = dataset[values["image"]]
        return {
            "image": image, "target": target, "stride": float(values["stride"]),
            "sizes": explorer_anchor_sizes(values["smallest"], values["count"], values["per_octave"]),
            "aspect_ratios": ASPECT_RATIO_CHOICES[values["ratios"]], "offset": values["offset"],
            "pos_iou": values["pos_iou"], "neg_iou": values["neg_iou"],
        }

    return Explorer(controls, anchor_explorer_view, arguments, columns=3)


def ps_pooling_explorer(score_maps, truth, stride: int = 16, side: float | None = None) -> Explorer:
    """Sliders that move a RoI by quarter pixels (up to one cell either way) and set its side over the ``k x k``
    score maps ``Tensor[1, k^2, H, W]`` of the object ``truth`` (image px); draws
    :func:`sodlib.viz.position_sensitive.ps_pooling_explorer_view` (where each pooling's bins read, and each
    pooling's voted score against the shift) and reports the three scores and worst bin misalignments."""
    style = _slider_style()
    width = float(truth[2]) - float(truth[0])
    controls = {
        "shift_x": widgets.FloatSlider(value=0.0, min=-stride, max=stride, step=0.25, description="shift x (px)", **style),
        "shift_y": widgets.FloatSlider(value=0.0, min=-stride, max=stride, step=0.25, description="shift y (px)", **style),
        "side": widgets.FloatSlider(value=side if side is not None else width, min=4.0, max=4.0 * stride, step=0.5,
                                    description="RoI side (px)", **style),
    }
    return Explorer(controls, ps_pooling_explorer_view,
                    lambda v: {**v, "score_maps": score_maps, "truth": tuple(truth), "stride": stride})


def sr_explorer(cases: Callable[[int, int, str], dict[str, Any]], count: int, methods: Sequence[str],
                scales: Sequence[int] = (2, 4), index: int = 0, method: str = "bicubic") -> Explorer:
    """Pick a crop, a scale and an upsampler; draws :func:`sodlib.viz.super_resolution.upscaling_view` (low
    resolution, upscaled, high-resolution reference) with the crop's PSNR, SSIM and, when ``cases`` has a
    classifier, its probability of the true class. ``cases(index, scale, method)`` computes the view's arguments
    (:class:`sodlib.eval.image_quality.UpscalingCases`)."""
    if count < 1:
        raise ValueError("no crops to explore")
    style = _slider_style()
    controls = {
        "index": widgets.IntSlider(value=index, min=0, max=count - 1, description="crop", **style),
        "scale": widgets.SelectionSlider(options=list(scales), value=scales[0], description="scale", **style),
        "method": widgets.Dropdown(options=list(methods), value=method, description="upsampler",
                                   style={"description_width": "110px"}, layout=widgets.Layout(width="380px")),
    }
    return Explorer(controls, upscaling_view, lambda v: cases(v["index"], v["scale"], v["method"]), columns=3)


def level_explorer(object_side: float = 12.0, input_scale: float = 0.7, min_size: float = 448) -> Explorer:
    """Sliders for a square object's side in the original image and the input scale (resized side over original
    side, 448 / 640 = 0.7 for the tiny-object data); draws :func:`sodlib.viz.pyramid_levels.plot_level_assignment`
    (the RoI on its FPN and EFPN levels' grids, the level against the RoI side) and reports
    :meth:`~sodlib.viz.pyramid_levels.LevelAssignment.summary`: levels, cells covered and the smallest matching
    anchor in FPN and in EFPN, whose threshold is ``56 * min_size / 1400``. ``report`` is the
    :class:`~sodlib.viz.pyramid_levels.LevelAssignment`."""
    style = _slider_style()
    controls = {
        "object_side": widgets.FloatSlider(value=object_side, min=2.0, max=256.0, step=0.5, description="object side (px)", **style),
        "input_scale": widgets.FloatSlider(value=input_scale, min=0.25, max=2.0, step=0.05, description="input scale", **style),
    }

    def view(**arguments: Any) -> tuple[Any, LevelAssignment]:
        assignment = level_assignment(**arguments)
        return plot_level_assignment(assignment), assignment

    return Explorer(controls, view, lambda v: {**v, "min_size": min_size})
