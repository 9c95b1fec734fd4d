"""Classroom widgets that redraw the same :mod:`mttlib.viz` figures a notebook first draws statically (an
exception inside a widget callback does not fail a papermill run); ipywidgets is imported only when needed."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from mttlib import viz
from mttlib.data import ImageData

__all__ = ["tiling_widget"]


def tiling_widget(canvases: Tensor, classes: Sequence[str], data: ImageData,
                  labels: Tensor | None = None) -> Any:
    """Browse textures tiled and worn: class, tiles and zoom redraw :func:`mttlib.viz.tiling_figure` and
    :func:`mttlib.viz.garment_figure` for the class's first canvas. Without ``labels`` the canvases are in class
    order, as many per class (as :func:`mttlib.texture.init_canvases` makes them). Taught in notebook
    ``04_tileable_textures``."""
    import ipywidgets as widgets  # optional: only the notebooks need it
    from IPython.display import display
    pixels = data.deprocess(canvases.detach()).cpu()
    if labels is None:
        if len(pixels) % len(classes):
            raise ValueError(f"{len(pixels)} canvases do not split evenly over {len(classes)} classes; pass labels")
        labels = torch.arange(len(classes)).repeat_interleave(len(pixels) // len(classes))
    labels = torch.as_tensor(labels).cpu()
    options = [(name, c) for c, name in enumerate(classes) if bool((labels == c).any())]
    pick = widgets.Dropdown(options=options, description="class")
    tiles = widgets.IntSlider(value=3, min=1, max=8, description="tiles")
    zoom = widgets.FloatSlider(value=1.0, min=0.5, max=3.0, step=0.25, description="zoom")
    output = widgets.Output()

    def redraw(_: Any = None) -> None:
        canvas = pixels[int((labels == pick.value).nonzero()[0])]
        output.clear_output(wait=True)
        with output:
            display(viz.tiling_figure(canvas, tiles.value, tiles.value, zoom.value))
            display(viz.garment_figure(canvas, tiles.value, zoom=zoom.value))

    for control in (pick, tiles, zoom):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([pick, tiles, zoom]), output])
