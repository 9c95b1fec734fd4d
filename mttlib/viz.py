"""Figures for the notebooks: every function returns a ``matplotlib.figure.Figure``.

Nothing here calls ``plt.show()``; a notebook displays the returned figure and, through
:func:`save_figure`, writes it to the outputs folder. :func:`record_results` is how a
notebook hands its final numbers to the tests and to the demo report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from mttlib.io import atomic_write_json

__all__ = ["image_grid", "class_grid", "save_figure", "record_results", "to_display"]

RESULTS_MARKER = "mttlib_results"


def to_display(images: torch.Tensor) -> torch.Tensor:
    """Turn a float batch ``[N, C, H, W]`` in [0, 1] into ``[N, H, W, C]`` (C = 1 or 3) on CPU."""
    images = images.detach().float().cpu().clamp(0, 1)
    if images.dim() == 3:
        images = images.unsqueeze(0)
    return images.permute(0, 2, 3, 1)


def image_grid(
    images: torch.Tensor,
    ncols: int | None = None,
    titles: Sequence[str] | None = None,
    scale: float = 1.2,
    suptitle: str | None = None,
) -> Figure:
    """Show a batch of images (float in [0, 1], ``[N, C, H, W]``) as a grid, one per axis."""
    pics = to_display(images)
    n = pics.shape[0]
    ncols = ncols or min(n, 10)
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            pic = pics[i]
            ax.imshow(pic.squeeze(-1), cmap="gray" if pic.shape[-1] == 1 else None, vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    plt.close(fig)  # the caller displays it; do not leave it in pyplot's global state
    return fig


def class_grid(
    images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], per_class: int, scale: float = 1.0,
    suptitle: str | None = None,
) -> Figure:
    """Rows are classes, columns the first ``per_class`` images of each class."""
    pics = to_display(images)
    labels = labels.cpu()
    fig, axes = plt.subplots(len(classes), per_class, figsize=(scale * per_class + 1.2, scale * len(classes)),
                             squeeze=False)
    for c, name in enumerate(classes):
        idx = (labels == c).nonzero().flatten()[:per_class]
        for j, ax in enumerate(axes[c]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(idx):
                pic = pics[idx[j]]
                ax.imshow(pic.squeeze(-1), cmap="gray" if pic.shape[-1] == 1 else None, vmin=0, vmax=1)
        axes[c][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    plt.close(fig)
    return fig


def save_figure(fig: Figure, out_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Save ``fig`` as ``out_dir/figures/<name>.png`` and return the path."""
    path = Path(out_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    tmp.replace(path)
    return path


def record_results(results: dict, out_dir: str | Path | None = None, name: str | None = None) -> dict:
    """Show a notebook's final numbers and hand them to tests and the demo report.

    The numbers are displayed as a JSON output that the notebook tests read back from the
    executed notebook; with ``out_dir`` and ``name`` they are also written to
    ``out_dir/results/<name>.json``.
    """
    from IPython.display import display

    clean = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in results.items()}
    for key, value in clean.items():
        print(f"{key:>32}: {value}")
    display({"application/json": clean}, metadata={"application/json": {RESULTS_MARKER: True}}, raw=True)
    if out_dir is not None and name is not None:
        atomic_write_json(clean, Path(out_dir) / "results" / f"{name}.json")
    return clean


# --- tileable textures -------------------------------------------------------------------------


def _rgb(canvas_rgb: torch.Tensor) -> torch.Tensor:
    """A displayable ``[H, W, 3]`` in [0, 1] from a ``[C, H, W]`` canvas (C = 1 or 3)."""
    if canvas_rgb.dim() != 3 or canvas_rgb.shape[0] not in (1, 3):
        raise ValueError(f"expected one canvas [C, H, W] with C = 1 or 3 (values in [0, 1]), "
                         f"got shape {tuple(canvas_rgb.shape)}; deprocess it with data.deprocess first")
    pic = to_display(canvas_rgb)[0]
    return pic.expand(-1, -1, 3) if pic.shape[-1] == 1 else pic


def tiling_figure(canvas_rgb: torch.Tensor, rows: int = 3, cols: int = 3, zoom: float = 1.0,
                  grid: bool = True, title: str | None = None) -> Figure:
    """One texture canvas (``[C, H, W]`` in [0, 1]) beside a ``rows`` x ``cols`` tiling of it.

    With ``grid`` thin dashed lines mark where the copies meet: on a seamless texture they are
    the only way to find the borders. ``zoom`` scales the whole figure.
    """
    pic = _rgb(canvas_rgb)
    h, w = pic.shape[:2]
    tiled = pic.repeat(rows, cols, 1)
    side = 2.2 * zoom
    fig, (ax_one, ax_all) = plt.subplots(1, 2, figsize=(side * (1 + max(1.0, cols / rows)) + 0.4, side * 1.15),
                                         gridspec_kw={"width_ratios": [1, max(1.0, cols / rows)]})
    ax_one.imshow(pic.numpy(), interpolation="nearest")
    ax_one.set_title("one canvas", fontsize=9)
    ax_all.imshow(tiled.numpy(), interpolation="nearest")
    ax_all.set_title(f"tiled {rows} x {cols}", fontsize=9)
    if grid:
        for r in range(1, rows):
            ax_all.axhline(r * h - 0.5, color="white", lw=0.6, ls="--", alpha=0.7)
        for c in range(1, cols):
            ax_all.axvline(c * w - 0.5, color="white", lw=0.6, ls="--", alpha=0.7)
    for ax in (ax_one, ax_all):
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def shirt_path() -> "matplotlib.path.Path":
    """A T-shirt silhouette as a closed ``matplotlib.path.Path`` in the unit square (y up)."""
    from matplotlib.path import Path as MplPath

    # right half, from the neckline's lowest point round to the hem's middle; mirrored below
    neck = [(0.5 + 0.12 * math.sin(t), 0.93 - 0.08 * math.cos(t)) for t in
            [i * math.pi / 16 for i in range(9)]]  # half ellipse, 0 .. pi/2
    right = neck + [(0.78, 0.90), (0.99, 0.72), (0.88, 0.58), (0.76, 0.66), (0.76, 0.02), (0.5, 0.02)]
    left = [(1.0 - x, y) for x, y in reversed(right[:-1])]
    points = right + left[:-1] + [right[0]]
    return MplPath(points, closed=True)


def shirt_mask(height: int, width: int) -> torch.Tensor:
    """Boolean ``[height, width]`` mask of :func:`shirt_path`, row 0 at the top."""
    ys = (torch.arange(height, dtype=torch.float64) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    yy, xx = torch.meshgrid(1.0 - ys, xs, indexing="ij")  # image rows go down, the path's y goes up
    points = torch.stack([xx.flatten(), yy.flatten()], 1).numpy()
    return torch.from_numpy(shirt_path().contains_points(points)).view(height, width)


def garment_figure(canvas_rgb: torch.Tensor, tiles: int = 4, zoom: float = 1.0, outline: bool = True,
                   title: str | None = None) -> Figure:
    """A T-shirt made of the texture: the canvas tiled ``tiles`` times across, cut to a shirt shape.

    ``canvas_rgb`` is one canvas ``[C, H, W]`` in [0, 1]. The silhouette is
    :func:`shirt_mask`; outside it the figure is white.
    """
    if tiles < 1:
        raise ValueError(f"tiles must be at least 1, got {tiles}")
    pic = _rgb(canvas_rgb)
    cloth = pic.repeat(tiles, tiles, 1)
    fine = max(1, math.ceil(256 / cloth.shape[0]))  # nearest upscale so the cut edge is smooth
    cloth = cloth.repeat_interleave(fine, 0).repeat_interleave(fine, 1)
    mask = shirt_mask(cloth.shape[0], cloth.shape[1])
    rgba = torch.cat([cloth, mask.unsqueeze(-1).to(cloth.dtype)], -1)
    fig, ax = plt.subplots(figsize=(3.2 * zoom, 3.2 * zoom))
    ax.imshow(rgba.numpy(), extent=(0, 1, 0, 1), interpolation="nearest")
    if outline:
        from matplotlib.patches import PathPatch

        ax.add_patch(PathPatch(shirt_path(), facecolor="none", edgecolor="0.25", lw=1.2))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


__all__ += ["tiling_figure", "garment_figure", "shirt_path", "shirt_mask"]
