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
