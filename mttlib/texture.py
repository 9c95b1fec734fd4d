"""Tileable textures by dataset distillation (*Wearable ImageNet*, Cazenavette et al. 2022).

Each synthetic sample is a *canvas* ``canvas_size`` image sides wide. The student sees only crops taken
with wrap-around (*toroidal*: off the right edge back in at the left, off the bottom at the top), so the
canvas learns to tile without seams (``wrap=False`` is the control). The loop is :func:`mttlib.run.distill`."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch import Tensor

from mttlib.augment import DSA, DSAParams
from mttlib.data import ImageData
from mttlib.distill import DistillConfig
from mttlib.io import atomic_write_bytes, safe_load
from mttlib.models import FunctionalModel, make_model
from mttlib.presets import get_preset
from mttlib.run import DistillResult, check_distilled, distill
from mttlib.trajectory import Trajectory

__all__ = ["random_offsets", "toroidal_crop", "tile", "seam_ratio", "seam_score", "check_texture_data",
           "class_indices", "init_canvases", "crossfade", "TextureBatchSource", "TEXTURE_PRESET_CHANGES",
           "texture_config", "distill_textures", "load_textures", "crop_transform", "class_subset",
           "expert_classifier", "crop_recognition", "export_pngs", "StoredPixels"]

Size = int | tuple[int, int]
_NO_ZCA = "texture mode cannot use ZCA (no inverse for a larger canvas); use zca=False and experts trained without ZCA"


def _pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


# --- crops, tiling and seams -------------------------------------------------------------------
def random_offsets(n: int, canvas_hw: Size, generator: torch.Generator | None = None) -> Tensor:
    """``n`` crop corners ``(row, col)``, uniform over every canvas position: int64 ``[n, 2]`` on the CPU."""
    h, w = _pair(canvas_hw)
    return torch.stack([torch.randint(h, (n,), generator=generator), torch.randint(w, (n,), generator=generator)], 1)


def toroidal_crop(canvases: Tensor, offsets: Tensor, size: Size, index: Tensor | None = None) -> Tensor:
    """Crops of ``size`` from ``canvases`` ``[N, C, H, W]`` with wrap-around: ``[M, C, h, w]``.

    ``out[m, :, i, j] = canvases[index[m], :, (row + i) % H, (col + j) % W]``, ``(row, col) = offsets[m]``,
    ``index`` by default one crop per canvas. One gather: each crop pixel's gradient lands on the pixel it was
    read from. Taught in notebook ``04_tileable_textures``."""
    (h, w), dev = _pair(size), canvases.device
    offsets = torch.as_tensor(offsets, device=dev).long()
    index = torch.arange(len(canvases), device=dev) if index is None else torch.as_tensor(index, device=dev).long()
    if canvases.dim() != 4 or index.dim() != 1 or offsets.shape != (len(index), 2) or h < 1 or w < 1:
        raise ValueError(f"need canvases [N, C, H, W], offsets [M, 2] (M = N or an `index` [M]), a size > 0; got "
                         f"{tuple(canvases.shape)}, {tuple(offsets.shape)}, {tuple(index.shape)}, {(h, w)}")
    rows = (offsets[:, :1] + torch.arange(h, device=dev)) % canvases.shape[-2]  # [M, h]
    cols = (offsets[:, 1:] + torch.arange(w, device=dev)) % canvases.shape[-1]  # [M, w]
    # advanced indices separated by a slice: the indexed dims come first -> [M, h, w, C]
    return canvases[index[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def tile(canvas: Tensor, rows: int, cols: int) -> Tensor:
    """``canvas`` [..., H, W] repeated rows x cols times. Taught in notebook ``04_tileable_textures``."""
    return canvas.repeat(*([1] * (canvas.dim() - 2)), rows, cols)


def seam_ratio(canvas: Tensor) -> float | Tensor:
    """Mean absolute change across the wrap-around borders over that between neighbours inside: 1 is seamless.

    A photo's edges do not match (well above 1); well *below* 1 is a faint frame, such as the untrained border
    of crops without wrap-around. ``[C, H, W]`` gives a float, ``[N, C, H, W]`` a tensor ``[N]``. Taught in
    notebook ``04_tileable_textures``."""
    if canvas.dim() not in (3, 4) or canvas.shape[-1] < 3 or canvas.shape[-2] < 3:
        raise ValueError(f"seam_ratio expects [C, H, W] or [N, C, H, W] with H, W >= 3, got {tuple(canvas.shape)}")
    x = canvas.detach().double().view(-1, *canvas.shape[-3:])
    wrap = torch.cat([(x[:, :, -1] - x[:, :, 0]).abs().flatten(1), (x[..., -1] - x[..., 0]).abs().flatten(1)], 1)
    inner = torch.cat([(x[:, :, 1:] - x[:, :, :-1]).abs().flatten(1), (x[..., 1:] - x[..., :-1]).abs().flatten(1)], 1)
    ratio = wrap.mean(1) / inner.mean(1).clamp_min(1e-12)
    return float(ratio[0]) if canvas.dim() == 3 else ratio.float()


def seam_score(canvas: Tensor) -> float | Tensor:
    """``|ln seam_ratio|``: 0 is seamless; cuts and frames count alike. Taught in notebook ``04_tileable_textures``."""
    ratio = seam_ratio(canvas)
    return abs(math.log(max(ratio, 1e-12))) if isinstance(ratio, float) else ratio.clamp_min(1e-12).log().abs()


# --- data and starting canvases ----------------------------------------------------------------
def check_texture_data(data: ImageData) -> None:
    """Raise a clear error if ``data`` cannot be used in texture mode (ZCA-whitened data)."""
    if getattr(data, "zca", None) is not None:
        raise ValueError(f"Texture mode needs pixel-space data, but {data.name!r} is ZCA-whitened (a canvas would not "
                         f"tile): use load_dataset({data.name!r}, zca=False) and experts trained with zca=False.")


def class_indices(data: ImageData, classes: Sequence[int | str] | str | None) -> list[int]:
    """Class indices from indices or names (or one string ``"airplane,ship"``) in the order given; ``None``: all.

    Unknown names, bad indices, repeats raise. Taught in notebook ``04_tileable_textures``."""
    if classes is None:
        return list(range(data.num_classes))
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    out: list[int] = []
    for item in classes:
        if isinstance(item, str) and not item.strip().lstrip("-").isdigit():
            if item not in data.classes:
                raise ValueError(f"unknown class {item!r}; {data.name} has {', '.join(data.classes)}")
            item = data.classes.index(item)
        if not 0 <= int(item) < data.num_classes:
            raise ValueError(f"class index {item} is out of range: {data.name} has classes 0..{data.num_classes - 1}")
        if int(item) in out:
            raise ValueError(f"class {data.classes[int(item)]!r} is listed twice in classes={list(classes)}")
        out.append(int(item))
    if not out:
        raise ValueError("classes is empty; pass None for all classes or at least one class")
    return out


def init_canvases(data: ImageData, per_class: int, canvas_size: int = 2, init: str = "noise",
                  generator: torch.Generator | None = None, device: str | torch.device | None = None,
                  classes: Sequence[int | str] | None = None) -> tuple[Tensor, Tensor]:
    """Starting canvases ``[K * per_class, C, S, S]`` (``S = canvas_size * image_size``) and labels.

    Class by class (``classes``, default all), normalised. ``init="noise"``: normal pixels; ``"real"``: a
    grid of different training images of the class (the reference code's default); ``"mosaic"`` (not in the
    paper): that grid made seamless by :func:`crossfade`. Taught in notebook ``04_tileable_textures``."""
    check_texture_data(data)
    if per_class < 1 or int(canvas_size) != canvas_size or canvas_size < 1:
        raise ValueError(f"per_class and canvas_size must be positive integers, got {per_class} and {canvas_size}")
    s, h, c, wanted = int(canvas_size), data.image_size, data.channels, class_indices(data, classes)
    n, side = len(wanted) * per_class, s * h
    labels = torch.tensor(wanted, dtype=torch.long).repeat_interleave(per_class)
    if init == "noise":
        return torch.randn(n, c, side, side, generator=generator).to(device or "cpu"), labels.to(device or "cpu")
    if init not in ("real", "mosaic"):
        raise ValueError(f"unknown init {init!r}; use 'noise', 'real' or 'mosaic'")
    chosen = []
    for cls in wanted:
        pool = (data.train_labels.cpu() == cls).nonzero().flatten()
        if len(pool) < s * s:
            raise ValueError(f"class {data.classes[cls]!r} has {len(pool)} training images but a {s}x{s} canvas "
                             f"needs {s * s} different ones; use a smaller canvas_size or init='noise'")
        if len(pool) >= per_class * s * s:  # all different
            chosen.append(pool[torch.randperm(len(pool), generator=generator)[:per_class * s * s]])
        else:  # different within each canvas
            chosen += [pool[torch.randperm(len(pool), generator=generator)[:s * s]] for _ in range(per_class)]
    images = data.preprocess(data.train_images[torch.cat(chosen)], device=device)  # [n * s * s, C, h, h]
    canvases = images.view(n, s, s, c, h, h).permute(0, 3, 1, 4, 2, 5).reshape(n, c, side, side).contiguous()
    return (crossfade(canvases, h) if init == "mosaic" else canvases), labels.to(canvases.device)


def crossfade(canvases: Tensor, side: int) -> Tensor:
    """A grid of ``side``-px photos ``[N, C, S, S]`` without seams (not in the paper): along each axis in turn,
    a copy shifted by half a photo covers the photo borders and fades out towards the centres (weight ``sin²``)."""
    w = torch.sin(math.pi * (torch.arange(canvases.shape[-1], device=canvases.device) % side + 0.5) / side) ** 2
    x = w * canvases + (1 - w) * canvases.roll(side // 2, -1)
    return w[:, None] * x + (1 - w[:, None]) * x.roll(side // 2, -2)


# --- the batch source of texture mode ----------------------------------------------------------
@dataclass
class TextureBatchSource:
    """The student's batches in texture mode: random toroidal crops of the canvases, then DSA.

    Per step: all canvases or a chunk of ``batch_canvases`` (from a permutation), ``canvas_samples`` crops
    from each; ``wrap=False`` keeps crops inside. :meth:`plans` draws the randomness, :meth:`batch` replays
    a plan exactly (``BatchSource`` of :mod:`mttlib.matching`). Taught in notebook ``04_tileable_textures``."""

    num_canvases: int
    canvas_hw: Size
    image_size: Size
    canvas_samples: int = 1
    batch_canvases: int | None = None
    dsa: DSA | None = None
    wrap: bool = True

    def __post_init__(self) -> None:
        self.canvas_hw, self.image_size = _pair(self.canvas_hw), _pair(self.image_size)
        if min(self.num_canvases, self.canvas_samples, 1 if self.batch_canvases is None else self.batch_canvases) < 1:
            raise ValueError(f"num_canvases, canvas_samples and batch_canvases (None: all) must be at least 1, got "
                             f"{self.num_canvases}, {self.canvas_samples} and {self.batch_canvases}")
        if not self.wrap and any(i > c for i, c in zip(self.image_size, self.canvas_hw)):
            raise ValueError(f"crops of {self.image_size} do not fit inside canvases of {self.canvas_hw} without wrap")
        if self.batch_canvases is not None and self.batch_canvases >= self.num_canvases:
            self.batch_canvases = None

    def plans(self, num_steps: int, generator: torch.Generator | None = None) -> list[dict[str, Any]]:
        """Per step, CPU tensors: ``index`` ``[B]``, ``offsets`` ``[B, canvas_samples, 2]``, ``dsa`` params."""
        chunks: list[Tensor] = []
        while len(chunks) < num_steps:  # as many permutations as the steps use up
            chunks += ([torch.arange(self.num_canvases)] if self.batch_canvases is None else
                       list(torch.randperm(self.num_canvases, generator=generator).split(self.batch_canvases)))
        room = self.canvas_hw if self.wrap else tuple(c - i + 1 for c, i in zip(self.canvas_hw, self.image_size))
        out = []
        for index in chunks[:num_steps]:
            m = len(index) * self.canvas_samples
            offsets = random_offsets(m, room, generator).view(len(index), self.canvas_samples, 2)
            dsa = self.dsa.sample(m, self.image_size, generator) if self.dsa is not None else DSAParams("none")
            out.append({"index": index, "offsets": offsets, "dsa": dsa})
        return out

    def batch(self, canvases: Tensor, labels: Tensor, plan: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The step's batch ``(x, y)``: crops of the plan's canvases, then DSA; differentiable in ``canvases``."""
        if tuple(canvases.shape[-2:]) != self.canvas_hw or canvases.shape[0] != self.num_canvases:
            raise ValueError(f"this source was made for {self.num_canvases} canvases of {self.canvas_hw}, got "
                             f"{tuple(canvases.shape)}")
        index = plan["index"].to(canvases.device).repeat_interleave(self.canvas_samples)
        x = toroidal_crop(canvases, plan["offsets"].reshape(-1, 2), self.image_size, index=index)
        return (self.dsa.apply(x, plan["dsa"]) if self.dsa is not None else x), labels[index]


# --- the texture-mode run ----------------------------------------------------------------------
_RESUME_KEYS = ("canvas_size", "canvas_samples", "classes", "init", "wrap")  # a resumed run must keep these

# With four classes and wrapped crops the first student steps overshoot, and classroom's lr_lr 1e-6 turned syn_lr
# negative. Classroom: 200 iterations at lr_img 300 kept the photos of a mosaic start readable (notebook 04 has the
# measurements). Smoke: a large pixel step lets its 8 iterations tell the control apart.
TEXTURE_PRESET_CHANGES: dict[str, dict[str, Any]] = {
    "classroom": {"syn_steps": 10, "lr_img": 300.0, "lr_lr": 1e-7, "iterations": 200},
    "smoke": {"lr_img": 3000.0, "lr_lr": 1e-7, "iterations": 8}, "paper": {}}


def texture_config(dataset: str, ipc: int = 1, preset: str = "classroom", **overrides: Any) -> DistillConfig:
    """The preset (``paper``, ``classroom``, ``smoke``) with :data:`TEXTURE_PRESET_CHANGES`, noise init, no ZCA;
    ``overrides`` (``None`` ignored) win. Taught in notebook ``04_tileable_textures``."""
    if overrides.get("zca"):
        raise ValueError(_NO_ZCA)
    changes = {**TEXTURE_PRESET_CHANGES.get(preset, {}), "init": "noise"}
    changes.update({k: v for k, v in overrides.items() if v is not None}, zca=False)
    return DistillConfig.from_preset(get_preset(dataset, ipc, preset), **changes)


def distill_textures(data: ImageData, experts: Sequence[Any], out_dir: str | Path | None, *,
                     config: DistillConfig | None = None, ipc: int = 1, canvas_size: int = 2, canvas_samples: int = 1,
                     init: str = "noise", classes: Sequence[int | str] | None = None, preset: str = "classroom",
                     wrap: bool = True, device: str | torch.device | None = None, progress: bool = True,
                     resume: bool = False, callback: Callable[[dict[str, Any]], None] | None = None,
                     **overrides: Any) -> DistillResult:
    """Distill ``ipc`` tileable canvases per class with :func:`mttlib.run.distill`.

    Only the batches differ from normal mode (:class:`TextureBatchSource`). ``config`` defaults to
    :func:`texture_config` ``(data.name, ipc, preset)``; ``overrides`` (``iterations``, ``seed``, ...) apply either
    way. ``init``: ``"noise"``, ``"real"`` or ``"mosaic"`` (:func:`init_canvases`); ``wrap=False``: the control.
    The settings go to ``config.json`` (``"texture"``); ``resume`` refuses others. Taught in notebook
    ``04_tileable_textures``."""
    check_texture_data(data)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    config = (texture_config(data.name, ipc, preset, **overrides) if config is None
              else config.replace(**overrides)).replace(init="real" if init == "mosaic" else init)
    if config.zca:
        raise ValueError(_NO_ZCA)
    wanted = class_indices(data, classes)
    canvases, labels = init_canvases(data, config.ipc, canvas_size, init, torch.Generator().manual_seed(config.seed),
                                     classes=wanted)
    source = TextureBatchSource(len(canvases), canvases.shape[-2:], data.image_size, canvas_samples, config.batch_syn,
                                DSA(config.dsa_strategy or data.dsa_strategy) if config.dsa else None, wrap)
    record = {"canvas_size": int(canvas_size), "canvas_samples": int(canvas_samples), "classes": wanted,
              "class_names": [data.classes[c] for c in wanted], "init": init, "wrap": bool(wrap),
              "canvas_side": int(canvases.shape[-1]), "image_size": int(data.image_size)}
    if resume and out_dir is not None and (Path(out_dir) / "config.json").exists():
        saved = json.loads((Path(out_dir) / "config.json").read_text()).get("texture") or {}
        differ = [f"{k}: {saved.get(k)!r} -> {record[k]!r}" for k in _RESUME_KEYS if saved.get(k) != record[k]]
        if differ:
            raise ValueError(f"cannot resume {out_dir}: its texture settings differ ({'; '.join(differ)}). Resume "
                             "with the same settings, or start a new run in another folder.")
    return distill(config, experts, data, out_dir, device=device, resume=resume, progress=progress, source=source,
                   init=(canvases, labels), callback=callback, extra_config={"texture": record})


def load_textures(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A texture set (run folder or ``distilled.pt``), with the run's ``texture`` settings and ``data`` if known."""
    path = Path(path) / "distilled.pt" if Path(path).is_dir() else Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no texture set at {path}; distill one with `python -m mttlib texture distill`")
    obj = check_distilled(safe_load(path, map_location=device), path, "texture set", "python -m mttlib texture distill")
    run_record = path.parent / "config.json"  # a run's record; a set on its own may describe its data in "config"
    record = json.loads(run_record.read_text()) if run_record.exists() else obj.get("config")
    record = record if isinstance(record, dict) else {}
    obj.update({k: record[k] for k in ("texture", "data") if isinstance(record.get(k), dict) and k not in obj})
    return obj


# --- evaluation with crops ---------------------------------------------------------------------
def crop_transform(image_size: Size) -> Callable[[Tensor, torch.Generator | None], Tensor]:
    """A training transform: one random toroidal crop per canvas (an image-size canvas comes back rolled)."""
    return lambda x, generator=None: toroidal_crop(x, random_offsets(len(x), x.shape[-2:], generator), image_size)


def class_subset(data: ImageData, classes: Sequence[int | str]) -> ImageData:
    """``data`` with only some classes, relabelled ``0 .. K-1`` in the order given; normalisation unchanged."""
    check_texture_data(data)
    wanted = class_indices(data, classes)
    lookup = torch.full((data.num_classes,), -1, dtype=torch.long)
    lookup[torch.tensor(wanted)] = torch.arange(len(wanted))
    splits = {}
    for split in ("train", "test"):
        y = lookup[getattr(data, f"{split}_labels").cpu().long()]
        splits[f"{split}_images"], splits[f"{split}_labels"] = getattr(data, f"{split}_images")[y >= 0], y[y >= 0]
    names = [data.classes[c] for c in wanted]
    return replace(data, name=f"{data.name}[{','.join(names)}]", classes=names, zca=None, **splits)


# --- does a texture show its class? ------------------------------------------------------------
def expert_classifier(experts: Sequence[Trajectory], data: ImageData) -> Callable[[Tensor], Tensor]:
    """Networks trained on all the real training images: the experts' final weights (``traj[-1]``).

    Maps images ``[M, C, h, w]`` to class probabilities ``[M, classes]``, the mean over the experts."""
    cfg = experts[0].meta["config"]
    fm = FunctionalModel(make_model(cfg["model"], data.channels, data.num_classes, data.image_size,
                                    **cfg["model_kwargs"]).eval())
    return lambda x: torch.stack([fm(traj[-1].to(x), x).softmax(1) for traj in experts]).mean(0)


@torch.no_grad()
def crop_recognition(net: Callable[[Tensor], Tensor], canvases: Tensor, labels: Tensor, image_size: Size,
                     crops: int = 64, generator: torch.Generator | None = None, batch: int = 512) -> dict[int, float]:
    """Per class ``{label: top-1 accuracy}`` of ``net`` (scores over all classes) on ``crops`` random toroidal
    crops of each canvas of that class. Real photos tiled into canvases (``init_canvases(..., "real")``) give
    the reference. Taught in notebook ``04_tileable_textures``."""
    index, labels = torch.arange(len(canvases)).repeat_interleave(crops), torch.as_tensor(labels).cpu()
    offsets, dev = random_offsets(len(index), canvases.shape[-2:], generator), canvases.device
    guess = torch.cat([net(toroidal_crop(canvases, offsets[i:i + batch], image_size, index[i:i + batch].to(dev)))
                       .argmax(1).cpu() for i in range(0, len(index), batch)])
    return {int(c): float((guess[labels[index] == c] == c).float().mean()) for c in labels.unique()}


# --- PNG export --------------------------------------------------------------------------------
def _write_png(pixels: Tensor, path: Path, upscale: int) -> Path:
    """Save ``[C, H, W]`` in [0, 1] as a PNG (atomically), each pixel an ``upscale`` x ``upscale`` block."""
    x = pixels.detach().float().cpu().clamp(0, 1).repeat_interleave(upscale, 1).repeat_interleave(upscale, 2)
    arr = (x * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buffer, format="PNG")  # mode L or RGB
    return atomic_write_bytes(buffer.getvalue(), path)


def export_pngs(canvases: Tensor, labels: Tensor, classes: Sequence[str], data: ImageData | StoredPixels,
                out_dir: str | Path, upscale: int = 4, repeats: int = 3, pad: int = 2) -> list[Path]:
    """Write the textures as PNGs (through ``data.deprocess``, upscaled) and return their paths.

    Per canvas ``<class>[_<k>]_tile.png`` and a ``repeats`` x ``repeats`` ``..._tiled.png``, last
    ``sheet.png`` (a row per class, or rows of five). Taught in notebook ``04_tileable_textures``."""
    if canvases.dim() != 4 or canvases.shape[0] != len(labels) or upscale < 1 or repeats < 1:
        raise ValueError(f"need canvases [N, C, H, W], N labels and upscale, repeats >= 1; got "
                         f"{tuple(canvases.shape)}, {len(labels)}, {upscale}, {repeats}")
    out, pixels, labels = Path(out_dir), data.deprocess(canvases.detach()).cpu(), torch.as_tensor(labels).cpu()
    counts, paths = torch.bincount(labels, minlength=len(classes)), []
    rows: list[list[Tensor]] = [[] for _ in classes]
    for canvas, label in zip(pixels, labels.tolist()):
        stem = re.sub(r"[^A-Za-z0-9]+", "_", classes[label]).strip("_").lower() or "class"
        stem += f"_{len(rows[label])}" if counts[label] > 1 else ""
        paths.append(_write_png(canvas, out / f"{stem}_tile.png", upscale))
        paths.append(_write_png(tile(canvas, repeats, repeats), out / f"{stem}_tiled.png", upscale))
        rows[label].append(canvas)
    used = [r for r in rows if r]
    if max(len(r) for r in used) == 1:  # one canvas per class: a compact grid instead of a column
        used = [[r[0] for r in used[i:i + 5]] for i in range(0, len(used), 5)]
    (c, h, w), ncols = pixels.shape[1:], max(len(r) for r in used)
    sheet = torch.ones(c, len(used) * (h + pad) + pad, ncols * (w + pad) + pad)
    for i, row in enumerate(used):
        for j, canvas in enumerate(row):
            sheet[:, pad + i * (h + pad):(i + 1) * (h + pad), pad + j * (w + pad):(j + 1) * (w + pad)] = canvas
    return paths + [_write_png(sheet, out / "sheet.png", upscale)]


class StoredPixels:
    """Deprocessing from a set's stored mean and std, for exporting when its dataset is not at hand."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = (torch.tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in (mean, std))

    def deprocess(self, x: Tensor) -> Tensor:
        """Network input -> pixels in [0, 1] (CPU)."""
        return (x.float().cpu() * self.std + self.mean).clamp(0, 1)
