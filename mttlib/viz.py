"""Figures for the notebooks, each a returned ``Figure`` (never ``plt.show``); :func:`save_figure` keeps one,
:func:`record_results` hands a notebook's final numbers to the tests, :func:`distillation_gif` animates a run."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch, Rectangle
from matplotlib.path import Path as MplPath
from torch import Tensor

from mttlib.data import ImageData
from mttlib.io import atomic_write_bytes, atomic_write_json
from mttlib.run import load_snapshots

__all__ = ["RESULTS_MARKER", "save_figure", "record_results", "image_grid", "class_grid", "expert_accuracy_figure",
           "step_length_figure", "segment_length_figure", "trajectory_projection_figure", "distillation_curves_figure",
           "distillation_gif", "memory_figure", "tiling_figure", "shirt_mask", "garment_figure", "crop_windows_figure",
           "soft_labels_figure", "ablation_figure"]

RESULTS_MARKER = "mttlib_results"  # the metadata key the notebook tests look for


def save_figure(fig: Figure, out_dir: str | Path, name: str, caption: str = "", dpi: int = 110) -> Path:
    """Save ``fig`` atomically as ``out_dir/figures/<name>.png``; ``caption`` goes to ``figures/captions.json``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    path = atomic_write_bytes(buffer.getvalue(), Path(out_dir) / "figures" / f"{name}.png")
    if caption:
        captions_file = path.parent / "captions.json"
        captions = json.loads(captions_file.read_text()) if captions_file.exists() else {}
        atomic_write_json({**captions, f"{name}.png": caption}, captions_file)
    return path


def record_results(results: dict, out_dir: str | Path | None = None, name: str | None = None) -> dict:
    """Print a notebook's final numbers and display them as JSON for the notebook tests (every notebook
    ends with it); with ``out_dir`` and ``name`` also write ``out_dir/results/<name>.json``."""
    from IPython.display import display
    clean = {k: (v.item() if isinstance(v, Tensor) else v) for k, v in results.items()}
    print("\n".join(f"{key:>32}: {value}" for key, value in clean.items()))
    display({"application/json": clean}, metadata={"application/json": {RESULTS_MARKER: True}}, raw=True)
    if out_dir is not None and name is not None:
        atomic_write_json(clean, Path(out_dir) / "results" / f"{name}.json")
    return clean


def _finish(fig: Figure, title: str | None = None) -> Figure:
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    plt.close(fig)  # detached from pyplot, so a notebook shows the returned figure once
    return fig


def _hwc(images: Tensor) -> Tensor:
    """A float batch ``[N, C, H, W]`` (or one ``[C, H, W]``) in [0, 1] as ``[N, H, W, C]`` on CPU."""
    images = images.detach().float().cpu().clamp(0, 1)
    return (images.unsqueeze(0) if images.dim() == 3 else images).permute(0, 2, 3, 1)


def _show(ax: Axes, pic: Tensor, title: str = "", fontsize: int = 9) -> None:
    """Draw one ``[H, W, C]`` picture (grey for one channel) without ticks, under ``title``."""
    ax.imshow(pic.squeeze(-1).numpy(), cmap="gray" if pic.shape[-1] == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set(xticks=[], yticks=[])
    ax.set_title(title, fontsize=fontsize)


def _rgb(canvas: Tensor) -> Tensor:
    """A displayable ``[H, W, 3]`` from one canvas ``[C, H, W]`` in [0, 1] (C = 1 or 3)."""
    if canvas.dim() != 3 or canvas.shape[0] not in (1, 3):
        raise ValueError(f"expected one canvas [C, H, W] with C = 1 or 3 (values in [0, 1]), got shape "
                         f"{tuple(canvas.shape)}; deprocess it with data.deprocess first")
    return _hwc(canvas)[0].expand(-1, -1, 3)


def _axes(size: tuple[float, float], xlabel: str, ylabel: str, grid: str = "both") -> tuple[Figure, Axes]:
    fig, ax = plt.subplots(figsize=size)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(axis=grid, alpha=0.3)
    return fig, ax


def image_grid(images: Tensor, ncols: int | None = None, titles: Sequence[str] | None = None, scale: float = 1.2,
               suptitle: str | None = None) -> Figure:
    """Images ``[N, C, H, W]`` in [0, 1] as a grid, ``ncols`` per row. Taught in notebook ``00_setup_and_data``."""
    pics = _hwc(images)
    ncols = ncols or min(len(pics), 10)
    nrows = max(1, math.ceil(len(pics) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(pics):
            _show(ax, pics[i], titles[i] if titles is not None else "", fontsize=8)
    return _finish(fig, suptitle)


def class_grid(images: Tensor, labels: Tensor, classes: Sequence[str], per_class: int, scale: float = 1.0,
               suptitle: str | None = None) -> Figure:
    """One row per class with its first ``per_class`` images. Taught in notebook ``00_setup_and_data``."""
    pics, labels = _hwc(images), labels.cpu()
    fig, axes = plt.subplots(len(classes), per_class, figsize=(scale * per_class + 1.2, scale * len(classes)),
                             squeeze=False)
    for c, name in enumerate(classes):
        idx = (labels == c).nonzero().flatten()[:per_class]
        for j, ax in enumerate(axes[c]):
            ax.set(xticks=[], yticks=[], frame_on=False)
            if j < len(idx):
                _show(ax, pics[idx[j]])
        axes[c][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    return _finish(fig, suptitle)


def expert_accuracy_figure(trajectories: Sequence[Any], title: str | None = None) -> Figure:
    """Test (solid, epoch 0 = initial parameters) and augmented train accuracy (dashed) per epoch of
    each expert trajectory. Taught in notebook ``01_expert_trajectories``."""
    fig, ax = _axes((6.0, 3.6), "epoch", "accuracy")
    for i, traj in enumerate(trajectories):
        meta, color = traj.meta, f"C{i}"  # the default colour cycle
        epochs = list(range(1, len(meta["train_acc"]) + 1))
        ax.plot([0] + epochs, [meta.get("init_test_acc", float("nan"))] + list(meta["test_acc"]), color=color,
                lw=1.4, label=f"expert {meta.get('index', i)} test")
        ax.plot(epochs, meta["train_acc"], color=color, lw=1.0, ls="--", alpha=0.8)
    ax.plot([], [], color="0.4", ls="--", label="train (augmented)")
    ax.legend(fontsize=7, ncol=2)
    return _finish(fig, title or "Expert accuracy per epoch")


def step_length_figure(steps: Sequence[Tensor], title: str | None = None) -> Figure:
    """``||θ_{e+1} − θ_e||`` per epoch, a line per expert ``[E]``. Taught in notebook ``01_expert_trajectories``."""
    fig, ax = _axes((5.6, 3.4), "epoch e + 1", r"$\|\theta_{e+1} - \theta_e\|$")
    for k, s in enumerate(steps):
        ax.plot(range(1, len(s) + 1), torch.as_tensor(s).double().cpu().numpy(), marker="o", ms=3, lw=1.2,
                label=f"expert {k}")
    ax.set_ylim(bottom=0)
    if len(steps) <= 10:
        ax.legend(fontsize=7)
    return _finish(fig, title or "How far one epoch moves the parameters")


def segment_length_figure(spans: dict[int, Tensor], title: str | None = None) -> Figure:
    """``||θ_t − θ_{t+M}||`` against the start epoch ``t``; ``spans[M]`` is ``[num_experts, E + 1 − M]``:
    the line is their mean, the band their range. Taught in notebook ``01_expert_trajectories``."""
    fig, ax = _axes((5.6, 3.4), "start epoch t", r"$\|\theta_t - \theta_{t+M}\|$")
    for m, values in sorted(spans.items()):
        v = torch.atleast_2d(torch.as_tensor(values).double().cpu())
        line, = ax.plot(range(v.shape[1]), v.mean(0).numpy(), marker="o", ms=3, lw=1.4, label=f"M = {m}")
        if len(v) > 1:
            ax.fill_between(range(v.shape[1]), v.amin(0).numpy(), v.amax(0).numpy(), color=line.get_color(), alpha=0.15)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return _finish(fig, title or "How long a segment t -> t + M is")


def trajectory_projection_figure(coords: Sequence[Tensor], explained: Tensor | None = None,
                                 title: str | None = None) -> Figure:
    """Trajectories in a plane (``coords[k]`` is ``[E + 1, 2]``; o start, * end); ``explained`` (each
    axis's share of variance) labels the axes. Taught in notebook ``01_expert_trajectories``."""
    labels = [f"PC {i + 1}" + ("" if explained is None else f" ({100 * float(explained[i]):.0f}% of variance)")
              for i in range(2)]
    fig, ax = _axes((5.2, 4.4), *labels)
    for k, c in enumerate(coords):
        c = torch.as_tensor(c).double().cpu()
        line, = ax.plot(c[:, 0].numpy(), c[:, 1].numpy(), marker=".", ms=5, lw=1.2, label=f"expert {k}")
        ax.plot(c[0, 0].item(), c[0, 1].item(), "o", color=line.get_color(), ms=8, mfc="none")
        ax.plot(c[-1, 0].item(), c[-1, 1].item(), "*", color=line.get_color(), ms=11)
    ax.set_aspect("equal", adjustable="datalim")  # distances on the page are distances in the plane
    if len(coords) <= 10:
        ax.legend(fontsize=7)
    return _finish(fig, title or "Trajectories in parameter space (o start, * end)")


def distillation_curves_figure(metrics: Sequence[dict], smooth: int = 10, title: str | None = None) -> Figure:
    """Matching loss (raw, and a running mean over ``smooth`` iterations) and the learned ``syn_lr``
    from a run's ``metrics.jsonl`` lines. Taught in notebook ``02_trajectory_matching``."""
    its = [m["iteration"] for m in metrics]
    loss = torch.tensor([m["loss"] for m in metrics], dtype=torch.float64)
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(its, loss.numpy(), lw=0.6, alpha=0.4, label="per iteration")
    if len(loss) >= smooth > 1:
        ax_loss.plot(its[smooth - 1:], loss.unfold(0, smooth, 1).mean(1).numpy(), lw=1.6, label=f"mean of {smooth}")
    ax_loss.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax_loss.legend(fontsize=7)
    ax_lr.plot(its, [m["syn_lr"] for m in metrics], lw=1.2, color="tab:green")
    for ax, ylabel, what in ((ax_loss, "matching loss", "normalised distance to the expert (1 = student did not move)"),
                             (ax_lr, "syn_lr", "learned student step size")):
        ax.set(xlabel="iteration", ylabel=ylabel)
        ax.set_title(what, fontsize=9)
        ax.grid(alpha=0.3)
    return _finish(fig, title)


def distillation_gif(run_dir_or_snapshots: str | Path | Sequence[tuple[int, Tensor]], data: ImageData | None,
                     path: str | Path, ncols: int = 10, max_images: int = 100, scale: int = 3,
                     duration_ms: int = 150) -> Path:
    """A GIF (written atomically) of a run folder's snapshots or ``(iteration, images)`` pairs: the first ``max_images``
    images, ``ncols`` per row, ``scale`` times larger, the last frame for 1.5 s; ``data`` undoes normalisation and
    ZCA (``None``: images in [0, 1]). Taught in notebook ``02_trajectory_matching``."""
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid
    snapshots = run_dir_or_snapshots
    snapshots = load_snapshots(snapshots) if isinstance(snapshots, (str, Path)) else snapshots
    if not snapshots:
        raise ValueError("no snapshots to animate")
    frames = []
    for iteration, images in snapshots:
        images = images[:max_images].float()
        shown = data.deprocess(images) if data is not None else images.clamp(0, 1)
        sheet = make_grid(shown.cpu(), nrow=ncols, padding=1, pad_value=1.0)
        sheet = F.pad(sheet.repeat_interleave(scale, 1).repeat_interleave(scale, 2), (0, 0, 14, 0), value=1.0)
        frame = Image.fromarray((sheet.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
        ImageDraw.Draw(frame).text((2, 1), f"iteration {iteration}", fill=(0, 0, 0))  # on the white top strip
        frames.append(frame)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], loop=0,
                   duration=[duration_ms] * (len(frames) - 1) + [1500])
    return atomic_write_bytes(buffer.getvalue(), path)


def memory_figure(estimates: dict[str, dict[str, float]], gpu_sizes_gib: dict[str, float] | None = None,
                  title: str | None = None) -> Figure:
    """Grouped bars of estimated GiB per iteration, ``estimates[setting][strategy]``; ``gpu_sizes_gib``
    (e.g. ``{"24 GB GPU": 22.4}``) draws a dashed line per card. Taught in notebook ``03_imagenet_subsets``."""
    settings = list(estimates)
    strategies = list(dict.fromkeys(s for row in estimates.values() for s in row))
    width = 0.8 / max(1, len(strategies))
    fig, ax = _axes((max(4.5, 1.8 * len(settings) + 2), 3.4), "", "GiB per iteration (estimated)", grid="y")
    for k, strategy in enumerate(strategies):
        xs = [i + (k - (len(strategies) - 1) / 2) * width for i in range(len(settings))]
        values = [estimates[s].get(strategy, float("nan")) for s in settings]
        ax.bar_label(ax.bar(xs, values, width, label=strategy), fmt="{:.1f}", fontsize=8, padding=2)
    for name, size in (gpu_sizes_gib or {}).items():
        ax.axhline(size, color="grey", lw=0.8, ls="--")
        ax.text(len(settings) - 0.5, size, f" {name}", va="bottom", ha="right", fontsize=7, color="grey")
    ax.set_xticks(range(len(settings)), settings)
    ax.legend(fontsize=8, loc="upper left")
    return _finish(fig, title)


def tiling_figure(canvas_rgb: Tensor, rows: int = 3, cols: int = 3, zoom: float = 1.0, grid: bool = True,
                  title: str | None = None) -> Figure:
    """One canvas ``[C, H, W]`` in [0, 1] beside its ``rows`` x ``cols`` tiling; with ``grid`` dashed
    lines mark where the copies meet. Taught in notebook ``04_tileable_textures``."""
    pic = _rgb(canvas_rgb)
    ratio, side = max(1.0, cols / rows), 2.2 * zoom
    fig, (ax_one, ax_all) = plt.subplots(1, 2, figsize=(side * (1 + ratio) + 0.4, side * 1.15),
                                         gridspec_kw={"width_ratios": [1, ratio]})
    _show(ax_one, pic, "one canvas")
    _show(ax_all, pic.repeat(rows, cols, 1), f"tiled {rows} x {cols}")
    for r in range(1, rows if grid else 1):
        ax_all.axhline(r * pic.shape[0] - 0.5, color="white", lw=0.6, ls="--", alpha=0.7)
    for c in range(1, cols if grid else 1):
        ax_all.axvline(c * pic.shape[1] - 0.5, color="white", lw=0.6, ls="--", alpha=0.7)
    return _finish(fig, title)


def _shirt_path() -> MplPath:
    """A T-shirt outline in the unit square (y up): the right half from the neckline's lowest point round
    to the hem's middle, then mirrored."""
    neck = [(0.5 + 0.12 * math.sin(t), 0.93 - 0.08 * math.cos(t)) for t in [i * math.pi / 16 for i in range(9)]]
    right = neck + [(0.78, 0.90), (0.99, 0.72), (0.88, 0.58), (0.76, 0.66), (0.76, 0.02), (0.5, 0.02)]
    left = [(1.0 - x, y) for x, y in reversed(right[:-1])]
    return MplPath(right + left[:-1] + [right[0]], closed=True)


def shirt_mask(height: int, width: int) -> Tensor:
    """Boolean ``[height, width]`` T-shirt silhouette (row 0 at the top): the garment's cut."""
    ys = (torch.arange(height, dtype=torch.float64) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    yy, xx = torch.meshgrid(1.0 - ys, xs, indexing="ij")  # image rows go down, the path's y goes up
    points = torch.stack([xx.flatten(), yy.flatten()], 1).numpy()
    return torch.from_numpy(_shirt_path().contains_points(points)).view(height, width)


def garment_figure(canvas_rgb: Tensor, tiles: int = 4, zoom: float = 1.0, outline: bool = True,
                   title: str | None = None) -> Figure:
    """A T-shirt of the texture: one canvas ``[C, H, W]`` in [0, 1] tiled ``tiles`` x ``tiles`` and cut
    to :func:`shirt_mask` (transparent outside). Taught in notebook ``04_tileable_textures``."""
    if tiles < 1:
        raise ValueError(f"tiles must be at least 1, got {tiles}")
    cloth = _rgb(canvas_rgb).repeat(tiles, tiles, 1)
    fine = max(1, math.ceil(256 / cloth.shape[0]))  # nearest upscale, so the cut edge is smooth
    cloth = cloth.repeat_interleave(fine, 0).repeat_interleave(fine, 1)
    alpha = shirt_mask(cloth.shape[0], cloth.shape[1]).unsqueeze(-1).to(cloth.dtype)
    fig, ax = plt.subplots(figsize=(3.2 * zoom, 3.2 * zoom))
    ax.imshow(torch.cat([cloth, alpha], -1).numpy(), extent=(0, 1, 0, 1), interpolation="nearest")
    if outline:
        ax.add_patch(PathPatch(_shirt_path(), facecolor="none", edgecolor="0.25", lw=1.2))
    ax.axis("off")
    return _finish(fig, title)


def crop_windows_figure(canvas_rgb: Tensor, offsets: Sequence[Sequence[int]], size: int,
                        title: str | None = None) -> Figure:
    """The canvas ``[C, H, W]`` tiled 2 x 2 with each toroidal crop's window (top-left ``offsets`` ``(row, col)``,
    side ``size``), then the crops: one that wraps is an unbroken square on the tiling. Taught in notebook
    ``04_tileable_textures``."""
    pic = _rgb(canvas_rgb)
    h, w = pic.shape[:2]
    fig = plt.figure(figsize=(3.0 + 1.3 * len(offsets), 3.1))
    grid = fig.add_gridspec(1, len(offsets) + 2, width_ratios=[2.4, 0.15] + [1.0] * len(offsets))
    ax = fig.add_subplot(grid[0, 0])
    _show(ax, pic.repeat(2, 2, 1), "canvas, tiled 2 x 2")
    ax.axhline(h - 0.5, color="white", lw=0.8, ls="--")
    ax.axvline(w - 0.5, color="white", lw=0.8, ls="--")
    for k, (r, c) in enumerate(offsets):
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), size, size, fill=False, lw=1.8, color=f"C{k}"))
        sub = fig.add_subplot(grid[0, k + 2])
        crop = torch.roll(pic, shifts=(-int(r), -int(c)), dims=(0, 1))[:size, :size]
        _show(sub, crop, f"({r}, {c})" + ("\nwraps" if r + size > h or c + size > w else ""), fontsize=8)
        plt.setp(list(sub.spines.values()), color=f"C{k}", linewidth=2.5)
    return _finish(fig, title)


def soft_labels_figure(probs: Tensor, classes: Sequence[str], hard: Tensor | None = None,
                       title: str | None = None) -> Figure:
    """Soft labels ``[N, num_classes]`` as a heat map, one row per synthetic image; ``hard`` (``[N]``)
    dots each image's own class. Taught in notebook ``05_beyond_mtt``."""
    p = probs.detach().float().cpu()
    fig, ax = plt.subplots(figsize=(0.45 * p.shape[1] + 2.2, min(0.22 * p.shape[0] + 1.4, 9)))
    im = ax.imshow(p.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    if hard is not None:
        ax.scatter(hard.cpu().numpy(), range(p.shape[0]), s=8, color="white", marker="o")
    ax.set_xticks(range(p.shape[1]), list(classes), rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("synthetic image")
    fig.colorbar(im, ax=ax, fraction=0.05, label="probability")
    return _finish(fig, title)


def ablation_figure(rows: Sequence[dict], title: str | None = None) -> Figure:
    """Test accuracy ``mean`` ± ``std`` per row (``variant``, ``images`` raw/ema, ``labels`` hard/soft);
    soft-label bars are hatched: they include knowledge distillation. Taught in notebook ``05_beyond_mtt``."""
    fig, ax = _axes((max(4.5, 0.7 * len(rows) + 2), 3.4), "", "test accuracy", grid="y")
    soft = [r["labels"] == "soft" for r in rows]
    for i, (r, s) in enumerate(zip(rows, soft)):
        ax.bar(i, r["mean"], yerr=r["std"], color="tab:orange" if s else "tab:blue", hatch="//" if s else None,
               capsize=3)
    names = [r["variant"] + (" (ema)" if r.get("images") == "ema" else "") + (" soft" if s else "")
             for r, s in zip(rows, soft)]
    ax.set_xticks(range(len(rows)), names, rotation=35, ha="right", fontsize=8)
    if any(soft):
        ax.text(0.99, 0.98, "hatched: soft labels (knowledge distillation)", transform=ax.transAxes, ha="right",
                va="top", fontsize=7)
    return _finish(fig, title)
