"""Tileable textures by dataset distillation (*Wearable ImageNet*, Cazenavette et al. 2022).

In texture mode each synthetic sample is a *canvas* larger than the dataset's images
(``canvas_size`` times the image side, e.g. 64x64 for 32 px images). The student network never
sees a canvas whole: at every student step it is fed random crops of image size taken with
circular (toroidal) wrap-around, so a crop that runs off the right edge continues at the left
edge and one that runs off the bottom continues at the top. Every pixel of the canvas is
therefore trained to agree with its neighbours *across* the borders too, and the finished canvas
tiles seamlessly: laid out side by side it shows no seams.

What lives here:

* the primitives: :func:`random_offsets`, :func:`toroidal_crop`, :func:`tile`;
* initialisation: :func:`init_canvases` (noise, or real images of the class tiled in);
* :class:`TextureBatchSource`, the batch source the distillation loop calls in texture mode;
* evaluation with crops: :func:`crop_transform`, :func:`evaluate_textures`;
* the seam measure :func:`seam_ratio` and :func:`export_pngs`;
* :func:`tiling_widget` for the classroom, and ``python -m mttlib texture`` (:func:`cli`).

Texture mode works in pixel space only: :func:`check_texture_data` refuses ZCA-whitened data.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import Tensor

from mttlib.augment import DSA, DSAParams

if TYPE_CHECKING:  # imported for type hints only, so this module loads without them
    from mttlib.data import ImageData

__all__ = [
    "random_offsets",
    "toroidal_crop",
    "tile",
    "seam_ratio",
    "check_texture_data",
    "init_canvases",
    "TextureBatchSource",
    "crop_transform",
    "evaluate_textures",
    "export_pngs",
    "tiling_widget",
    "cli",
]

Size = int | tuple[int, int]


def _pair(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


# --- primitives --------------------------------------------------------------------------------


def random_offsets(n: int, canvas_hw: Size, generator: torch.Generator | None = None) -> Tensor:
    """``n`` crop offsets ``(row, col)`` drawn uniformly over every canvas position, on the CPU.

    Rows are uniform over ``0 .. H-1`` and columns over ``0 .. W-1``: with wrap-around every
    position is a valid top-left corner, so no position is favoured. Returns int64 ``[n, 2]``.
    """
    h, w = _pair(canvas_hw)
    if n < 0 or h < 1 or w < 1:
        raise ValueError(f"need n >= 0 and a positive canvas size, got n={n}, canvas_hw={(h, w)}")
    rows = torch.randint(h, (n,), generator=generator)
    cols = torch.randint(w, (n,), generator=generator)
    return torch.stack([rows, cols], 1)


def toroidal_crop(canvases: Tensor, offsets: Tensor, size: Size, index: Tensor | None = None) -> Tensor:
    """Crop ``size`` patches out of ``canvases`` ``[N, C, H, W]`` with circular wrap-around.

    Crop ``m`` has its top-left corner at ``offsets[m] = (row, col)`` of canvas ``index[m]``
    (``index`` defaults to ``0 .. N-1``, one crop per canvas):
    ``out[m, :, i, j] = canvases[index[m], :, (row + i) % H, (col + j) % W]``.
    One gather, no loop over samples; differentiable in ``canvases`` (each crop pixel's gradient
    lands on exactly the canvas pixel it was read from). Returns ``[M, C, h, w]``.
    """
    if canvases.dim() != 4:
        raise ValueError(f"canvases must be a batch [N, C, H, W], got shape {tuple(canvases.shape)}")
    n, _, big_h, big_w = canvases.shape
    h, w = _pair(size)
    if h < 1 or w < 1:
        raise ValueError(f"crop size must be positive, got {(h, w)}")
    offsets = torch.as_tensor(offsets, device=canvases.device).long()
    if offsets.dim() != 2 or offsets.shape[1] != 2:
        raise ValueError(f"offsets must be [M, 2] (row, col), got shape {tuple(offsets.shape)}")
    if index is None:
        if offsets.shape[0] != n:
            raise ValueError(f"{offsets.shape[0]} offsets for {n} canvases; pass one offset per canvas, "
                             "or an `index` saying which canvas each crop comes from")
        index = torch.arange(n, device=canvases.device)
    else:
        index = torch.as_tensor(index, device=canvases.device).long()
        if index.shape != offsets.shape[:1]:
            raise ValueError(f"index has shape {tuple(index.shape)} but there are {offsets.shape[0]} offsets")
    rows = (offsets[:, :1] + torch.arange(h, device=canvases.device)) % big_h  # [M, h]
    cols = (offsets[:, 1:] + torch.arange(w, device=canvases.device)) % big_w  # [M, w]
    # advanced indices separated by a slice: the indexed dims come first -> [M, h, w, C]
    patches = canvases[index[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return patches.permute(0, 3, 1, 2).contiguous()


def tile(canvas: Tensor, rows: int, cols: int) -> Tensor:
    """Lay ``canvas`` (``[C, H, W]`` or ``[N, C, H, W]``) out ``rows`` x ``cols`` times."""
    if canvas.dim() not in (3, 4):
        raise ValueError(f"tile expects [C, H, W] or [N, C, H, W], got shape {tuple(canvas.shape)}")
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be at least 1, got {rows} x {cols}")
    return canvas.repeat(*([1] * (canvas.dim() - 2)), rows, cols)


def seam_ratio(canvas: Tensor) -> float | Tensor:
    """How visible the wrap-around seams of a canvas are; about 1 means seamless.

    The mean absolute pixel difference across the wrap-around edges (last row against first row,
    last column against first column), divided by the mean absolute difference between
    neighbouring rows and columns inside the canvas. A canvas that tiles seamlessly changes no
    more across its borders than inside (ratio around 1; a smooth periodic pattern gives a value
    between 0 and about 1.6 depending on where the border cuts its phase, noise about 1); a
    photograph's opposite edges do not match, so its ratio is well above 1.

    ``[C, H, W]`` gives a float; ``[N, C, H, W]`` a tensor ``[N]``.
    """
    if canvas.dim() not in (3, 4) or canvas.shape[-1] < 3 or canvas.shape[-2] < 3:
        raise ValueError(f"seam_ratio expects [C, H, W] or [N, C, H, W] with H, W >= 3, "
                         f"got shape {tuple(canvas.shape)}")
    x = canvas.detach().double()
    single = x.dim() == 3
    if single:
        x = x.unsqueeze(0)
    wrap = torch.cat([(x[:, :, -1, :] - x[:, :, 0, :]).abs().flatten(1),
                      (x[:, :, :, -1] - x[:, :, :, 0]).abs().flatten(1)], 1)
    inner = torch.cat([(x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1),
                       (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1)], 1)
    ratio = wrap.mean(1) / inner.mean(1).clamp_min(1e-12)
    return float(ratio[0]) if single else ratio.float()


# --- data and initialisation -------------------------------------------------------------------


def check_texture_data(data: ImageData) -> None:
    """Raise a clear error if ``data`` cannot be used in texture mode (ZCA-whitened data)."""
    if getattr(data, "zca", None) is not None:
        raise ValueError(
            f"Texture mode needs data in pixel space, but {data.name!r} was loaded with ZCA whitening. "
            "ZCA is fitted on whole images of the dataset's size, so a larger canvas has no pixel-space "
            "inverse: it could be neither shown nor tiled, and a whitened canvas does not tile in pixel "
            "space. The expert trajectories must also match the data's preprocessing. Load the dataset "
            f"without ZCA (load_dataset({data.name!r}, zca=False)) and use experts trained without ZCA "
            "(ExpertConfig(zca=False))."
        )


def _canvas_side(data: ImageData, canvas_size: int) -> int:
    if int(canvas_size) != canvas_size or canvas_size < 1:
        raise ValueError(f"canvas_size must be a positive integer (canvas side in image sides), got {canvas_size}")
    return int(canvas_size) * data.image_size


def init_canvases(
    data: ImageData,
    per_class: int,
    canvas_size: int = 2,
    init: str = "noise",
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Starting canvases for texture distillation: ``(canvases, labels)``, class by class.

    ``canvases`` is float32 ``[num_classes * per_class, C, S, S]`` with ``S = canvas_size *
    image_size`` in the data's preprocessed (normalised) space; ``labels`` int64, ``per_class``
    canvases of class 0, then of class 1, ...

    * ``init="noise"``: standard normal pixels;
    * ``init="real"``: each canvas is a ``canvas_size x canvas_size`` grid of real training
      images of its class, all different within a canvas (and across canvases while the class
      has enough images).
    """
    check_texture_data(data)
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    side = _canvas_side(data, canvas_size)
    k, c, s = data.num_classes, data.channels, int(canvas_size)
    labels = torch.arange(k).repeat_interleave(per_class)
    if init == "noise":
        canvases = torch.randn(k * per_class, c, side, side, generator=generator)
        return canvases.to(device or "cpu"), labels.to(device or "cpu")
    if init != "real":
        raise ValueError(f"unknown init {init!r}; use 'noise' or 'real'")
    chosen = []
    train_labels = data.train_labels.cpu()
    for cls in range(k):
        pool = (train_labels == cls).nonzero().flatten()
        need = per_class * s * s
        if len(pool) < s * s:
            raise ValueError(f"class {data.classes[cls]!r} has {len(pool)} training images but a "
                             f"{s}x{s} canvas needs {s * s} different ones; use a smaller canvas_size "
                             "or init='noise'")
        if len(pool) >= need:  # all different
            picks = pool[torch.randperm(len(pool), generator=generator)[:need]]
        else:  # different within each canvas
            picks = torch.cat([pool[torch.randperm(len(pool), generator=generator)[: s * s]]
                               for _ in range(per_class)])
        chosen.append(picks)
    index = torch.cat(chosen)
    images = data.preprocess(data.train_images[index], device=device)  # [K*ipc*s*s, C, h, w]
    h = w = data.image_size
    grid = images.view(k * per_class, s, s, c, h, w).permute(0, 3, 1, 4, 2, 5)
    canvases = grid.reshape(k * per_class, c, s * h, s * w).contiguous()
    return canvases, labels.to(canvases.device)


# --- the batch source of texture mode ----------------------------------------------------------


class TextureBatchSource:
    """Synthetic batches of random toroidal crops, for the distillation loop.

    Each student step uses a set of canvases (all of them, or a chunk of ``batch_canvases`` from
    a fresh permutation per distillation iteration, as normal mode does with images), takes
    ``canvas_samples`` random crops of ``image_size`` from each, then applies ``dsa`` (no
    augmentation if ``None``). Crops of one canvas are consecutive in the batch and its label is
    repeated for each of them.

    :meth:`plans` draws all the randomness of one iteration up front, as CPU tensors;
    :meth:`batch` is deterministic given a plan, so replaying a plan rebuilds the batch exactly.
    """

    def __init__(self, num_canvases: int, canvas_hw: Size, image_size: Size, canvas_samples: int = 1,
                 batch_canvases: int | None = None, dsa: DSA | None = None) -> None:
        if num_canvases < 1 or canvas_samples < 1:
            raise ValueError(f"need num_canvases >= 1 and canvas_samples >= 1, got {num_canvases} "
                             f"and {canvas_samples}")
        if batch_canvases is not None and batch_canvases < 1:
            raise ValueError(f"batch_canvases must be positive or None (all canvases), got {batch_canvases}")
        self.num_canvases = int(num_canvases)
        self.canvas_hw = _pair(canvas_hw)
        self.image_size = _pair(image_size)
        self.canvas_samples = int(canvas_samples)
        self.batch_canvases = None if batch_canvases is None or batch_canvases >= num_canvases else int(batch_canvases)
        self.dsa = dsa

    def __repr__(self) -> str:
        return (f"TextureBatchSource(num_canvases={self.num_canvases}, canvas_hw={self.canvas_hw}, "
                f"image_size={self.image_size}, canvas_samples={self.canvas_samples}, "
                f"batch_canvases={self.batch_canvases}, dsa={self.dsa!r})")

    def _chunks(self, num_steps: int, generator: torch.Generator | None) -> list[Tensor]:
        if self.batch_canvases is None:
            return [torch.arange(self.num_canvases) for _ in range(num_steps)]
        chunks: list[Tensor] = []
        while len(chunks) < num_steps:  # as many permutations as the steps use up
            chunks += list(torch.randperm(self.num_canvases, generator=generator).split(self.batch_canvases))
        return chunks[:num_steps]

    def plans(self, num_steps: int, generator: torch.Generator | None = None) -> list[dict[str, Any]]:
        """All the randomness of ``num_steps`` student steps, one dict per step (CPU tensors).

        Keys: ``index`` int64 ``[B]`` (the canvases used), ``offsets`` int64 ``[B, canvas_samples,
        2]`` (top-left corners of the crops), ``dsa`` (:class:`~mttlib.augment.DSAParams` for the
        ``B * canvas_samples`` crops).
        """
        out = []
        for index in self._chunks(num_steps, generator):
            b = len(index)
            offsets = random_offsets(b * self.canvas_samples, self.canvas_hw, generator)
            m = b * self.canvas_samples
            dsa = self.dsa.sample(m, self.image_size, generator) if self.dsa is not None else DSAParams("none")
            out.append({"index": index, "offsets": offsets.view(b, self.canvas_samples, 2), "dsa": dsa})
        return out

    def batch(self, canvases: Tensor, labels: Tensor, plan: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The step's batch ``(x, y)``: crops of the plan's canvases, then DSA; differentiable in ``canvases``."""
        if tuple(canvases.shape[-2:]) != self.canvas_hw or canvases.shape[0] != self.num_canvases:
            raise ValueError(f"this source was made for {self.num_canvases} canvases of {self.canvas_hw}, "
                             f"got shape {tuple(canvases.shape)}")
        k = self.canvas_samples
        index = plan["index"].to(canvases.device).repeat_interleave(k)
        x = toroidal_crop(canvases, plan["offsets"].reshape(-1, 2), self.image_size, index=index)
        if self.dsa is not None:
            x = self.dsa.apply(x, plan["dsa"])
        return x, labels[index]


# --- evaluation with crops ---------------------------------------------------------------------


def crop_transform(image_size: Size) -> Callable[[Tensor, torch.Generator | None], Tensor]:
    """A training transform ``(x, generator) -> crops``: one random toroidal crop per canvas.

    ``x`` is a batch of canvases ``[N, C, H, W]``; offsets are uniform over each canvas (drawn on
    the CPU). A canvas the size of an image (a real photo as a 1x1 canvas) comes back rolled:
    shifted with wrap-around. Meant for ``mttlib.evaluate.train_and_test(train_transform=...)``.
    """
    size = _pair(image_size)

    def transform(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        offsets = random_offsets(x.shape[0], tuple(x.shape[-2:]), generator)
        return toroidal_crop(x, offsets, size)

    return transform


def evaluate_textures(
    canvases: Tensor,
    labels: Tensor,
    data: ImageData,
    lr: float | Tensor,
    *,
    epochs: int,
    num_runs: int = 5,
    model: str = "convnet",
    baselines: Sequence[str] = ("real",),
    baseline_lr: float | None = 0.01,
    seed: int = 0,
    **evaluate_kwargs: Any,
) -> dict[str, Any]:
    """Test accuracy of fresh networks trained on crops of ``canvases``, with baselines.

    Training uses :func:`crop_transform`: each time a canvas is drawn into a batch the network
    sees one random toroidal crop of image size (then the evaluation recipe's DSA). Baselines go
    through the very same recipe (epochs, crops, augmentation, networks and seeds), with as many
    samples per class as there are canvases per class:

    * ``"real"``: random real training images, each a 1x1 canvas -- its crops are the image
      rolled with wrap-around. This is the paper's "random real" baseline with the texture
      recipe; each network draws its own images (``mttlib.evaluate.evaluate_random_real``).
    * ``"real_tiles"``: canvases of the textures' size, each tiled with real images of its class
      (``init_canvases(init="real")``): the same pixel budget as the textures, and the
      starting point of a real-initialised distillation.

    ``lr`` is the textures' learned ``syn_lr``; baselines train with ``baseline_lr`` (0.01, the
    paper's rate for real images; ``None`` uses ``lr``). Other keyword arguments (``device``,
    ``progress``, ``model_kwargs``, ``eval_on``, ...) go to ``mttlib.evaluate.evaluate_set``.
    Returns ``{"textures": EvalResult, "<baseline>": EvalResult, ...}``.
    """
    from mttlib import evaluate  # imported here so this module loads without the evaluate module

    check_texture_data(data)
    if canvases.dim() != 4 or labels.dim() != 1 or canvases.shape[0] != labels.shape[0]:
        raise ValueError(f"need canvases [N, C, H, W] and labels [N], got {tuple(canvases.shape)} "
                         f"and {tuple(labels.shape)}")
    counts = torch.bincount(labels.cpu(), minlength=data.num_classes)
    per_class = int(counts.max())
    if baselines and not bool((counts == per_class).all()):
        raise ValueError(f"baselines need the same number of canvases per class, got counts {counts.tolist()}; "
                         "pass baselines=() to evaluate the textures alone")
    common = dict(epochs=epochs, num_runs=num_runs, model=model, seed=seed,
                  train_transform=crop_transform(data.image_size), **evaluate_kwargs)
    rate = lr if baseline_lr is None else baseline_lr
    results = {"textures": evaluate.evaluate_set(canvases.detach(), labels, data, lr=lr, **common)}
    for name in baselines:
        if name == "real":
            results[name] = evaluate.evaluate_random_real(data, per_class, lr=rate, **common)
        elif name == "real_tiles":
            canvas_size = max(1, canvases.shape[-1] // data.image_size)
            x, y = init_canvases(data, per_class, canvas_size, "real", torch.Generator().manual_seed(seed))
            results[name] = evaluate.evaluate_set(x, y, data, lr=rate, **common)
        else:
            raise ValueError(f"unknown baseline {name!r}; use 'real' or 'real_tiles'")
        results[name].config.update(texture_baseline=name)
    return results


# --- export ------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "class"


def _write_png(pixels: Tensor, path: Path, upscale: int) -> Path:
    """Save ``[C, H, W]`` in [0, 1] as a PNG, each pixel an ``upscale`` x ``upscale`` block."""
    from PIL import Image

    x = pixels.detach().float().cpu().clamp(0, 1)
    if upscale > 1:
        x = x.repeat_interleave(upscale, 1).repeat_interleave(upscale, 2)
    arr = (x * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)  # uint8: mode L or RGB
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)  # never leave a half-written PNG behind
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def export_pngs(canvases: Tensor, labels: Tensor, classes: Sequence[str], data: ImageData,
                out_dir: str | Path, upscale: int = 4, repeats: int = 3, pad: int = 2) -> list[Path]:
    """Write the textures as PNGs and return their paths.

    Pixels go through ``data.deprocess`` (to [0, 1]) and are upscaled nearest-neighbour by
    ``upscale``. Per canvas: ``<class>[_<k>]_tile.png`` (the canvas) and
    ``<class>[_<k>]_tiled.png`` (a ``repeats`` x ``repeats`` tiling; the suffix ``_<k>`` only
    when a class has several canvases); then ``sheet.png``, all canvases in a grid with ``pad``
    white pixels between them (one row per class, or rows of five classes when each class has
    one canvas). The sheet comes last in the list.
    """
    if canvases.dim() != 4 or canvases.shape[0] != len(labels):
        raise ValueError(f"need canvases [N, C, H, W] and N labels, got {tuple(canvases.shape)} and {len(labels)}")
    if upscale < 1 or repeats < 1:
        raise ValueError(f"upscale and repeats must be at least 1, got {upscale} and {repeats}")
    out = Path(out_dir)
    pixels = data.deprocess(canvases.detach()).cpu()
    labels = torch.as_tensor(labels).cpu()
    counts = torch.bincount(labels, minlength=len(classes))
    paths: list[Path] = []
    seen: dict[int, int] = {}
    rows: list[list[Tensor]] = [[] for _ in classes]
    for canvas, label in zip(pixels, labels.tolist()):
        k = seen.get(label, 0)
        seen[label] = k + 1
        stem = _slug(classes[label]) + (f"_{k}" if counts[label] > 1 else "")
        paths.append(_write_png(canvas, out / f"{stem}_tile.png", upscale))
        paths.append(_write_png(tile(canvas, repeats, repeats), out / f"{stem}_tiled.png", upscale))
        rows[label].append(canvas)
    c, h, w = pixels.shape[1:]
    used = [r for r in rows if r]
    if max(len(r) for r in used) == 1:  # one canvas per class: a compact grid instead of a column
        flat = [r[0] for r in used]
        per_row = min(len(flat), 5)
        used = [flat[i:i + per_row] for i in range(0, len(flat), per_row)]
    ncols = max(len(r) for r in used)
    sheet = torch.ones(c, len(used) * (h + pad) + pad, ncols * (w + pad) + pad)
    for i, row in enumerate(used):
        for j, canvas in enumerate(row):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            sheet[:, top:top + h, left:left + w] = canvas
    paths.append(_write_png(sheet, out / "sheet.png", upscale))
    return paths


# --- classroom widget --------------------------------------------------------------------------


def tiling_widget(canvases: Tensor, classes: Sequence[str], data: ImageData,
                  labels: Tensor | None = None) -> Any:
    """An ipywidgets control to browse textures tiled and worn: class, tiles and zoom.

    Redraws :func:`mttlib.viz.tiling_figure` and :func:`mttlib.viz.garment_figure` for the
    chosen class's first canvas. Without ``labels`` the canvases are taken to be in class order
    with the same number per class (as :func:`init_canvases` makes them).
    """
    import ipywidgets as widgets
    from IPython.display import display

    from mttlib import viz

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


# --- command line ------------------------------------------------------------------------------


class _Pixels:
    """Deprocessing from stored mean and std, for a set whose dataset is not at hand."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def deprocess(self, x: Tensor) -> Tensor:
        return (x.float().cpu() * self.std + self.mean).clamp(0, 1)


def _load_texture_set(path: Path) -> dict:
    from mttlib.io import safe_load

    obj = safe_load(path)
    if not isinstance(obj, dict) or "images" not in obj or "labels" not in obj:
        raise ValueError(f"{path} is not a texture set: expected a dict with 'images' (canvases), "
                         "'labels' and 'config'; distilled sets are written by `python -m mttlib texture distill`")
    return obj


def _export(args: argparse.Namespace) -> int:
    tex = _load_texture_set(Path(args.set))
    config = tex.get("config") or {}
    meta = config.get("data") if isinstance(config.get("data"), dict) else config
    if args.dataset is None and "mean" in meta and "std" in meta and "classes" in meta:
        data, classes = _Pixels(meta["mean"], meta["std"]), list(meta["classes"])
    else:
        from mttlib.data import load_dataset

        name = args.dataset or config.get("dataset")
        if not name:
            raise SystemExit(f"{args.set} does not say which dataset it comes from; pass --dataset NAME")
        data = load_dataset(name, args.data_root, zca=False)
        classes = list(data.classes)
    out = Path(args.out) if args.out else Path(args.set).with_suffix("").with_name(Path(args.set).stem + "_png")
    paths = export_pngs(tex["images"], tex["labels"], classes, data, out, upscale=args.upscale, repeats=args.repeats)
    print(f"wrote {len(paths)} PNGs to {out}")
    return 0


def cli(argv: list[str]) -> int:
    """``python -m mttlib texture <action>``: ``export`` a texture set as PNGs (``distill`` to come)."""
    parser = argparse.ArgumentParser(prog="python -m mttlib texture",
                                     description="Tileable textures by dataset distillation.")
    sub = parser.add_subparsers(dest="action", required=True)
    exp = sub.add_parser("export", help="write tile, tiling and sheet PNGs of a texture set")
    exp.add_argument("set", help="texture set file (a dict with images, labels and config)")
    exp.add_argument("--out", default=None, help="output folder (default: <set>_png beside the file)")
    exp.add_argument("--upscale", type=int, default=4, help="nearest-neighbour upscale factor (default 4)")
    exp.add_argument("--repeats", type=int, default=3, help="tiles per side of the tiling PNG (default 3)")
    exp.add_argument("--dataset", default=None, help="dataset name, if the set's config lacks it")
    exp.add_argument("--data-root", default=None, help="dataset root (default $MTT_DATA_ROOT or <kit>/data)")
    sub.add_parser("distill", help="distill tileable textures (not available in this version)")
    args = parser.parse_args(argv)
    if args.action == "export":
        return _export(args)
    print("`texture distill` is not available yet; use mttlib.texture.TextureBatchSource with the "
          "distillation loop in mttlib.distill.", file=sys.stderr)
    return 2
