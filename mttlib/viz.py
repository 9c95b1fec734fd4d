"""Figures for the notebooks: every function returns a ``matplotlib.figure.Figure``.

Nothing here calls ``plt.show()``; a notebook displays the returned figure and, through
:func:`save_figure`, writes it to the outputs folder. :func:`record_results` is how a
notebook hands its final numbers to the tests and to the demo report.
"""

from __future__ import annotations

import json
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
    return _finish(fig)


def save_figure(fig: Figure, out_dir: str | Path, name: str, caption: str = "", dpi: int = 110) -> Path:
    """Save ``fig`` as ``out_dir/figures/<name>.png`` and return the path.

    ``caption`` (one line saying what the figure shows) is kept in ``figures/captions.json``,
    which the demo report uses to explain each figure.
    """
    path = Path(out_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    tmp.replace(path)
    if caption:
        captions_file = path.parent / "captions.json"
        captions = json.loads(captions_file.read_text()) if captions_file.exists() else {}
        captions[f"{name}.png"] = caption
        atomic_write_json(captions, captions_file)
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


def _finish(fig: Figure, title: str | None = None) -> Figure:
    """Every figure function's last step: optional suptitle, tight layout, detach from pyplot."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


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
    return _finish(fig, title)


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
    return _finish(fig)


__all__ += ["tiling_figure", "garment_figure", "shirt_path", "shirt_mask"]


# --- expert trajectories -----------------------------------------------------------------------


def expert_accuracy_figure(trajectories: Sequence, title: str | None = None) -> Figure:
    """Train (dashed, augmented batches during the epoch) and test accuracy (solid) per epoch of
    each expert; epoch 0 is the test accuracy of the initial parameters."""
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, traj in enumerate(trajectories):
        meta, color = traj.meta, colors[i % len(colors)]
        epochs = list(range(1, len(meta["train_acc"]) + 1))
        ax.plot([0] + epochs, [meta.get("init_test_acc", float("nan"))] + list(meta["test_acc"]), color=color,
                lw=1.4, label=f"expert {meta.get('index', i)} test")
        ax.plot(epochs, meta["train_acc"], color=color, lw=1.0, ls="--", alpha=0.8)
    ax.plot([], [], color="0.4", ls="--", label="train (augmented)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title or "Expert accuracy per epoch", fontsize=10)
    return _finish(fig)


def step_length_figure(steps: Sequence[torch.Tensor], title: str | None = None) -> Figure:
    """``||θ_{e+1} − θ_e||`` against the epoch, one line per expert (``steps[k]`` is ``[E]``)."""
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    for k, s in enumerate(steps):
        s = torch.as_tensor(s).double().cpu()
        ax.plot(range(1, len(s) + 1), s.numpy(), marker="o", ms=3, lw=1.2, label=f"expert {k}")
    ax.set_xlabel("epoch e + 1")
    ax.set_ylabel(r"$\|\theta_{e+1} - \theta_e\|$")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if len(steps) <= 10:
        ax.legend(fontsize=7)
    ax.set_title(title or "How far one epoch moves the parameters", fontsize=10)
    return _finish(fig)


def segment_length_figure(spans: dict[int, torch.Tensor], title: str | None = None) -> Figure:
    """``||θ_t − θ_{t+M}||`` against the start epoch ``t`` for several ``M``.

    ``spans[M]`` is ``[num_experts, E + 1 − M]``: the line is the mean over experts, the band
    their range.
    """
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    for m, values in sorted(spans.items()):
        v = torch.as_tensor(values).double().cpu()
        v = v.unsqueeze(0) if v.dim() == 1 else v
        t = range(v.shape[1])
        line, = ax.plot(t, v.mean(0).numpy(), marker="o", ms=3, lw=1.4, label=f"M = {m}")
        if v.shape[0] > 1:
            ax.fill_between(t, v.min(0).values.numpy(), v.max(0).values.numpy(), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("start epoch t")
    ax.set_ylabel(r"$\|\theta_t - \theta_{t+M}\|$")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "How long a segment t -> t + M is", fontsize=10)
    return _finish(fig)


def trajectory_projection_figure(coords: Sequence[torch.Tensor], explained: torch.Tensor | None = None,
                                 title: str | None = None) -> Figure:
    """Trajectories projected to 2-D (``coords[k]`` is ``[E + 1, 2]``): circles mark the
    initialisation, stars the last epoch, small dots every epoch in between."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for k, c in enumerate(coords):
        c = torch.as_tensor(c).double().cpu()
        line, = ax.plot(c[:, 0].numpy(), c[:, 1].numpy(), marker=".", ms=5, lw=1.2, label=f"expert {k}")
        ax.plot(c[0, 0].item(), c[0, 1].item(), "o", color=line.get_color(), ms=8, mfc="none")
        ax.plot(c[-1, 0].item(), c[-1, 1].item(), "*", color=line.get_color(), ms=11)
    labels = ["PC 1", "PC 2"]
    if explained is not None:
        labels = [f"PC {i + 1} ({100 * float(e):.0f}% of variance)" for i, e in enumerate(explained[:2])]
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_aspect("equal", adjustable="datalim")  # distances on the page are distances in the plane
    ax.grid(alpha=0.3)
    if len(coords) <= 10:
        ax.legend(fontsize=7)
    ax.set_title(title or "Trajectories in parameter space (o start, * end)", fontsize=10)
    return _finish(fig)


__all__ += ["expert_accuracy_figure", "step_length_figure", "segment_length_figure", "trajectory_projection_figure"]


# --- distillation runs -------------------------------------------------------------------------


def _grid_pixels(images: torch.Tensor, ncols: int, pad: int = 1) -> torch.Tensor:
    """Display images ``[N, C, H, W]`` in [0, 1] laid out as one uint8 ``[H', W', 3]`` grid."""
    pics = to_display(images)
    if pics.shape[-1] == 1:
        pics = pics.expand(-1, -1, -1, 3)
    n, h, w, _ = pics.shape
    nrows = max(1, math.ceil(n / ncols))
    sheet = torch.ones(nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3)
    for i in range(n):
        r, c = divmod(i, ncols)
        sheet[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = pics[i]
    return (sheet * 255).round().to(torch.uint8)


def distillation_gif(snapshots, data, path: str | Path, *, ncols: int | None = None, max_images: int = 100,
                     scale: int = 3, duration_ms: int = 150, final_pause_ms: int = 1500) -> Path:
    """Animate a distillation: one frame per snapshot, written to ``path`` as a looping GIF.

    ``snapshots`` is a run folder, its ``snapshots/`` folder, or a list of ``(iteration, images)``
    (as :func:`mttlib.distill.load_snapshots` returns); ``data`` (an ``ImageData``) turns the
    images back into pixels (undoing normalisation and ZCA), ``None`` if they are in [0, 1]
    already. Up to ``max_images`` images are shown, ``ncols`` per row (default: the images per
    class when the labels are class-major, else 10), each enlarged ``scale`` times.
    """
    from PIL import Image, ImageDraw

    from mttlib.io import _atomic_write

    if isinstance(snapshots, (str, Path)):
        from mttlib.distill import load_snapshots

        snapshots = load_snapshots(snapshots)
    snapshots = list(snapshots)
    if not snapshots:
        raise ValueError("no snapshots to animate")
    frames = []
    for iteration, images in snapshots:
        images = images[:max_images].float()
        shown = data.deprocess(images) if data is not None else images.clamp(0, 1)
        cols = ncols or min(10, shown.shape[0])
        pixels = _grid_pixels(shown, cols).numpy()
        img = Image.fromarray(pixels).resize((pixels.shape[1] * scale, pixels.shape[0] * scale), Image.NEAREST)
        canvas = Image.new("RGB", (img.width, img.height + 14), (255, 255, 255))
        canvas.paste(img, (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), f"iteration {iteration}", fill=(0, 0, 0))
        frames.append(canvas)
    durations = [duration_ms] * (len(frames) - 1) + [final_pause_ms]

    def write(handle) -> None:
        frames[0].save(handle, format="GIF", save_all=True, append_images=frames[1:], duration=durations,
                       loop=0)

    return _atomic_write(Path(path), write)


def distillation_curves_figure(metrics: Sequence[dict], smooth: int = 10, title: str | None = None) -> Figure:
    """Matching loss and learned step size ``syn_lr`` over the iterations of a run.

    ``metrics`` are the lines of ``metrics.jsonl`` (or ``DistillResult.metrics``); the loss is
    also drawn as a running mean over ``smooth`` iterations (the raw curve is noisy because every
    iteration draws another expert and start epoch).
    """
    its = [m["iteration"] for m in metrics]
    loss = torch.tensor([m["loss"] for m in metrics], dtype=torch.float64)
    lr = [m["syn_lr"] for m in metrics]
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(its, loss.numpy(), lw=0.6, alpha=0.4, label="per iteration")
    if len(loss) >= smooth > 1:
        kernel = torch.ones(smooth, dtype=torch.float64) / smooth
        running = torch.nn.functional.conv1d(loss.view(1, 1, -1), kernel.view(1, 1, -1)).flatten()
        ax_loss.plot(its[smooth - 1:], running.numpy(), lw=1.6, label=f"mean of {smooth}")
    ax_loss.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("matching loss")
    ax_loss.set_title("normalised distance to the expert (1 = student did not move)", fontsize=9)
    ax_loss.legend(fontsize=7)
    ax_loss.grid(alpha=0.3)
    ax_lr.plot(its, lr, lw=1.2, color="tab:green")
    ax_lr.set_xlabel("iteration")
    ax_lr.set_ylabel("syn_lr")
    ax_lr.set_title("learned student step size", fontsize=9)
    ax_lr.grid(alpha=0.3)
    return _finish(fig, title)


__all__ += ["distillation_gif", "distillation_curves_figure"]


# --- memory of a distillation iteration ----------------------------------------------------------


def memory_figure(estimates: dict[str, dict[str, float]], gpu_sizes_gib: dict[str, float] | None = None,
                  title: str | None = None) -> Figure:
    """Grouped bars of memory per iteration, in GiB: ``estimates[setting][strategy]``.

    ``gpu_sizes_gib`` (e.g. ``{"24 GB GPU": 22.4}``) draws a dashed line per GPU size, so a
    reader sees at a glance which strategy fits on which card.
    """
    settings = list(estimates)
    strategies = list(dict.fromkeys(s for row in estimates.values() for s in row))
    width = 0.8 / max(1, len(strategies))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.8 * len(settings) + 2), 3.4))
    for k, strategy in enumerate(strategies):
        xs = [i + (k - (len(strategies) - 1) / 2) * width for i in range(len(settings))]
        values = [estimates[s].get(strategy, float("nan")) for s in settings]
        bars = ax.bar(xs, values, width, label=strategy)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8, padding=2)
    for name, size in (gpu_sizes_gib or {}).items():
        ax.axhline(size, color="grey", lw=0.8, ls="--")
        ax.text(len(settings) - 0.5, size, f" {name}", va="bottom", ha="right", fontsize=7, color="grey")
    ax.set_xticks(range(len(settings)), settings)
    ax.set_ylabel("GiB per iteration (estimated)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return _finish(fig)


__all__ += ["memory_figure"]


# --- toroidal crops ------------------------------------------------------------------------------


def crop_windows_figure(canvas_rgb: torch.Tensor, offsets: Sequence[Sequence[int]], size: int,
                        title: str | None = None) -> Figure:
    """Where toroidal crops come from: the canvas tiled 2 x 2 with each crop's window, then the crops.

    ``canvas_rgb`` is one canvas ``[C, H, W]`` in [0, 1]; ``offsets`` the crops' top-left
    corners ``(row, col)`` in the canvas; ``size`` their side. On the 2 x 2 tiling a crop that
    wraps around the canvas border is one unbroken square (dashed lines mark the copies), which is
    why its pixels are neighbours on a seamless texture.
    """
    from matplotlib.patches import Rectangle

    pic = _rgb(canvas_rgb)
    h, w = pic.shape[:2]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    n = len(offsets)
    fig = plt.figure(figsize=(3.0 + 1.3 * n, 3.1))
    grid = fig.add_gridspec(1, n + 2, width_ratios=[2.4, 0.15] + [1.0] * n)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(pic.repeat(2, 2, 1).numpy(), interpolation="nearest")
    ax.axhline(h - 0.5, color="white", lw=0.8, ls="--")
    ax.axvline(w - 0.5, color="white", lw=0.8, ls="--")
    for k, (r, c) in enumerate(offsets):
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), size, size, fill=False, lw=1.8, color=colours[k % len(colours)]))
    ax.set_title("canvas, tiled 2 x 2", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    for k, (r, c) in enumerate(offsets):
        crop = torch.roll(pic, shifts=(-int(r), -int(c)), dims=(0, 1))[:size, :size]
        sub = fig.add_subplot(grid[0, k + 2])
        sub.imshow(crop.numpy(), interpolation="nearest")
        for spine in sub.spines.values():
            spine.set_color(colours[k % len(colours)])
            spine.set_linewidth(2.5)
        wraps = r + size > h or c + size > w
        sub.set_title(f"({r}, {c})" + ("\nwraps" if wraps else ""), fontsize=8)
        sub.set_xticks([])
        sub.set_yticks([])
    return _finish(fig, title)


__all__ += ["crop_windows_figure"]


# --- follow-ups beyond the paper -------------------------------------------------------------------


def soft_labels_figure(probs: torch.Tensor, classes: Sequence[str], hard: torch.Tensor | None = None,
                       title: str | None = None) -> Figure:
    """Soft labels as a heat map: one row per synthetic image, one column per class.

    ``probs`` are ``[N, num_classes]`` probabilities; ``hard`` (optional, ``[N]``) marks each
    image's own class with a dot, so a reader sees how much probability stays on it.
    """
    p = probs.detach().float().cpu()
    fig, ax = plt.subplots(figsize=(0.45 * p.shape[1] + 2.2, min(0.22 * p.shape[0] + 1.4, 9)))
    im = ax.imshow(p.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    if hard is not None:
        ax.scatter(hard.cpu().numpy(), range(p.shape[0]), s=8, color="white", marker="o")
    ax.set_xticks(range(p.shape[1]), list(classes), rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("synthetic image")
    fig.colorbar(im, ax=ax, fraction=0.05, label="probability")
    if title:
        ax.set_title(title, fontsize=10)
    return _finish(fig)


def ablation_figure(rows: Sequence[dict], title: str | None = None) -> Figure:
    """Accuracy per variant: bars of ``mean`` ± ``std`` (fractions or percent, as given).

    Each row has ``variant``, ``images`` (``raw``/``ema``), ``labels`` (``hard``/``soft``),
    ``mean`` and ``std``. Soft-label results are hatched: they include knowledge distillation
    and are not comparable with the hard-label bars.
    """
    fig, ax = plt.subplots(figsize=(max(4.5, 0.7 * len(rows) + 2), 3.4))
    names = [f"{r['variant']}" + (" (ema)" if r.get("images") == "ema" else "") + (" soft" if r["labels"] == "soft" else "")
             for r in rows]
    for i, r in enumerate(rows):
        soft = r["labels"] == "soft"
        ax.bar(i, r["mean"], yerr=r["std"], color="tab:orange" if soft else "tab:blue", hatch="//" if soft else None,
               capsize=3)
    ax.set_xticks(range(len(rows)), names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.grid(axis="y", alpha=0.3)
    if any(r["labels"] == "soft" for r in rows):
        ax.text(0.99, 0.98, "hatched: soft labels (knowledge distillation)", transform=ax.transAxes, ha="right",
                va="top", fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return _finish(fig)


__all__ += ["soft_labels_figure", "ablation_figure"]
