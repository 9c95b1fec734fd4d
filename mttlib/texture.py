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
* :class:`TextureBatchSource`, the batch source the distillation loop calls in texture mode
  (``wrap=False`` gives the control without wrap-around);
* :func:`distill_textures` (with :func:`texture_config` and :func:`texture_source`): texture
  mode run by :func:`mttlib.distill.distill`, so checkpoints, resume, metrics and snapshots are
  the loop's; :func:`load_textures` reads the result;
* evaluation with crops: :func:`crop_transform`, :func:`evaluate_textures`;
* the seam measures :func:`seam_ratio` and :func:`seam_score`, and :func:`export_pngs`;
* :func:`mttlib.widgets.tiling_widget` for the classroom, and ``python -m mttlib texture distill|export``
  (:func:`cli`).

Texture mode works in pixel space only: :func:`check_texture_data` refuses ZCA-whitened data.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import Tensor

from mttlib.augment import DSA, DSAParams

if TYPE_CHECKING:  # imported for type hints only, so this module loads without them
    from mttlib.data import ImageData
    from mttlib.distill import DistillConfig, DistillResult

__all__ = [
    "random_offsets",
    "toroidal_crop",
    "tile",
    "seam_ratio",
    "seam_score",
    "check_texture_data",
    "class_indices",
    "init_canvases",
    "TextureBatchSource",
    "TEXTURE_PRESET_CHANGES",
    "texture_config",
    "texture_source",
    "distill_textures",
    "load_textures",
    "crop_transform",
    "class_subset",
    "export_pngs",

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

    A ratio well *below* 1 is a seam too, of the other kind: a border that changes less than the
    inside, such as the band of barely trained pixels that distillation without wrap-around
    leaves along the edges (the crops rarely reach them). :func:`seam_score` counts both kinds.

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


def seam_score(canvas: Tensor) -> float | Tensor:
    """How far the seams are from invisible: ``|ln seam_ratio(canvas)|``; 0 means seamless.

    It treats both kinds of seam alike: a cut (the border changes more than the inside, ratio
    above 1) and a flat frame (it changes less, ratio below 1); a ratio of 2 and one of 0.5 both
    score ``ln 2 = 0.69``. ``[C, H, W]`` gives a float; ``[N, C, H, W]`` a tensor ``[N]``.
    """
    ratio = seam_ratio(canvas)
    if isinstance(ratio, float):
        return abs(math.log(max(ratio, 1e-12)))
    return ratio.clamp_min(1e-12).log().abs()


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


def class_indices(data: ImageData, classes: Sequence[int | str] | str | None) -> list[int]:
    """Class indices from indices or names, in the order given (``None``: all classes).

    ``classes`` may also be one comma-separated string (``"airplane,ship"`` or ``"0,8"``).
    Unknown names, indices out of range and repeats raise a ``ValueError``.
    """
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    if classes is None:
        return list(range(data.num_classes))
    out: list[int] = []
    for item in classes:
        if isinstance(item, str) and not item.strip().lstrip("-").isdigit():
            if item not in data.classes:
                raise ValueError(f"unknown class {item!r}; {data.name} has {', '.join(data.classes)}")
            index = data.classes.index(item)
        else:
            index = int(item)
        if not 0 <= index < data.num_classes:
            raise ValueError(f"class index {index} is out of range: {data.name} has classes 0..{data.num_classes - 1}")
        if index in out:
            raise ValueError(f"class {data.classes[index]!r} is listed twice in classes={list(classes)}")
        out.append(index)
    if not out:
        raise ValueError("classes is empty; pass None for all classes or at least one class")
    return out


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
    classes: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Starting canvases for texture distillation: ``(canvases, labels)``, class by class.

    ``canvases`` is float32 ``[K * per_class, C, S, S]`` with ``S = canvas_size * image_size`` in
    the data's preprocessed (normalised) space; ``labels`` int64, ``per_class`` canvases of the
    first class, then of the second, ... ``classes`` picks the classes (indices into
    ``data.classes``, kept as labels; default all ``K = num_classes`` of them).

    * ``init="noise"``: standard normal pixels;
    * ``init="real"``: each canvas is a ``canvas_size x canvas_size`` grid of real training
      images of its class, all different within a canvas (and across canvases while the class
      has enough images).
    """
    check_texture_data(data)
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    side = _canvas_side(data, canvas_size)
    wanted = class_indices(data, classes)
    k, c, s = len(wanted), data.channels, int(canvas_size)
    labels = torch.tensor(wanted, dtype=torch.long).repeat_interleave(per_class)
    if init == "noise":
        canvases = torch.randn(k * per_class, c, side, side, generator=generator)
        return canvases.to(device or "cpu"), labels.to(device or "cpu")
    if init != "real":
        raise ValueError(f"unknown init {init!r}; use 'noise' or 'real'")
    chosen = []
    train_labels = data.train_labels.cpu()
    for cls in wanted:
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

    ``wrap=False`` is the control experiment, not texture mode: crops stay fully inside the
    canvas (top-left corners uniform over the positions where the crop fits), so nothing ever
    ties the left edge to the right edge or the top to the bottom.

    :meth:`plans` draws all the randomness of one iteration up front, as CPU tensors;
    :meth:`batch` is deterministic given a plan, so replaying a plan rebuilds the batch exactly.
    """

    def __init__(self, num_canvases: int, canvas_hw: Size, image_size: Size, canvas_samples: int = 1,
                 batch_canvases: int | None = None, dsa: DSA | None = None, wrap: bool = True) -> None:
        if num_canvases < 1 or canvas_samples < 1:
            raise ValueError(f"need num_canvases >= 1 and canvas_samples >= 1, got {num_canvases} "
                             f"and {canvas_samples}")
        if batch_canvases is not None and batch_canvases < 1:
            raise ValueError(f"batch_canvases must be positive or None (all canvases), got {batch_canvases}")
        self.num_canvases = int(num_canvases)
        self.canvas_hw = _pair(canvas_hw)
        self.image_size = _pair(image_size)
        if not wrap and (self.image_size[0] > self.canvas_hw[0] or self.image_size[1] > self.canvas_hw[1]):
            raise ValueError(f"crops of {self.image_size} do not fit inside canvases of {self.canvas_hw}; "
                             "without wrap-around the canvas must be at least the crop size")
        self.canvas_samples = int(canvas_samples)
        self.batch_canvases = None if batch_canvases is None or batch_canvases >= num_canvases else int(batch_canvases)
        self.dsa = dsa
        self.wrap = bool(wrap)

    def __repr__(self) -> str:
        return (f"TextureBatchSource(num_canvases={self.num_canvases}, canvas_hw={self.canvas_hw}, "
                f"image_size={self.image_size}, canvas_samples={self.canvas_samples}, "
                f"batch_canvases={self.batch_canvases}, dsa={self.dsa!r}, wrap={self.wrap})")

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
            if self.wrap:
                offsets = random_offsets(b * self.canvas_samples, self.canvas_hw, generator)
            else:  # the control without wrap-around: top-left corners that keep the crop inside
                room = (self.canvas_hw[0] - self.image_size[0] + 1, self.canvas_hw[1] - self.image_size[1] + 1)
                offsets = random_offsets(b * self.canvas_samples, room, generator)
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


# --- texture distillation ----------------------------------------------------------------------

# texture settings that must not change when a run is resumed (they shape what was computed)
_RESUME_KEYS = ("canvas_size", "canvas_samples", "classes", "init", "wrap")

# Texture mode's changes to the normal-mode presets, per size. Canvases start as noise, so early
# student steps lead away from the experts (matching loss above 1) and the gradient on syn_lr
# is large: with the classroom preset's lr_lr 1e-6 syn_lr turned negative within about ten
# iterations (cifar10-mini, 4 classes). Measured on a 2-core CPU for the classroom size: 200
# iterations of 10 student steps, lr_img 1000 and lr_lr 1e-7 give textures that tile and learn.
# Smoke takes a large pixel step so that its 8 iterations already move the canvases well beyond
# their starting noise (enough to tell texture mode from its control in continuous integration).
# The paper size keeps the published values (the reference texture run uses the ImageNet row).
TEXTURE_PRESET_CHANGES: dict[str, dict[str, Any]] = {
    "classroom": {"syn_steps": 10, "lr_img": 1000.0, "lr_lr": 1e-7, "iterations": 100},
    "smoke": {"lr_img": 10000.0, "lr_lr": 1e-7, "iterations": 8},
    "paper": {},
}


def texture_config(dataset: str, ipc: int = 1, preset: str = "classroom", **overrides: Any) -> DistillConfig:
    """The run configuration of texture mode: the preset's hyper-parameters, noise init, no ZCA.

    ``preset`` is a size of :func:`mttlib.presets.get_preset` (``paper``, ``classroom`` or
    ``smoke``), changed for texture mode by :data:`TEXTURE_PRESET_CHANGES`; ``overrides`` are
    :class:`mttlib.distill.DistillConfig` fields and win over both (``None`` values are
    ignored). Texture mode works in pixel space, so ``zca`` is always False (the paper's CIFAR
    presets whiten; texture runs use experts trained without ZCA), and ``init`` defaults to
    ``"noise"``: the reference code warns that real images take very long to lose their borders.
    """
    from mttlib.distill import DistillConfig
    from mttlib.presets import get_preset

    if overrides.get("zca"):
        raise ValueError("texture mode cannot use ZCA (a canvas larger than the images has no pixel-space "
                         "inverse); use zca=False and experts trained without ZCA")
    found = get_preset(dataset, ipc, preset)
    changes = {**TEXTURE_PRESET_CHANGES.get(preset, {}), "init": "noise"}
    changes.update({k: v for k, v in overrides.items() if v is not None})
    changes["zca"] = False
    return DistillConfig.from_preset(found, **changes)


def texture_source(config: DistillConfig, data: ImageData, num_canvases: int, canvas_size: int = 2,
                   canvas_samples: int = 1, wrap: bool = True) -> TextureBatchSource:
    """The :class:`TextureBatchSource` of a run: ``config.batch_syn`` canvases per step (``None``:
    all), ``canvas_samples`` crops of the data's image size from each, the dataset's DSA when
    ``config.dsa`` (``config.dsa_strategy`` if set)."""
    side = _canvas_side(data, canvas_size)
    dsa = DSA(config.dsa_strategy or data.dsa_strategy) if config.dsa else None
    return TextureBatchSource(num_canvases, side, data.image_size, canvas_samples, config.batch_syn, dsa, wrap=wrap)


def distill_textures(
    data: ImageData,
    experts: Sequence[Any],
    out_dir: str | Path | None,
    *,
    config: DistillConfig | None = None,
    ipc: int = 1,
    canvas_size: int = 2,
    canvas_samples: int = 1,
    init: str = "noise",
    classes: Sequence[int | str] | None = None,
    preset: str = "classroom",
    wrap: bool = True,
    device: str | torch.device | None = None,
    progress: bool = True,
    resume: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
    **overrides: Any,
) -> DistillResult:
    """Distill tileable textures: ``ipc`` canvases per class, trained through random toroidal crops.

    Each canvas is ``canvas_size`` times the image side. At every student step each canvas gives
    ``canvas_samples`` random crops of image size with uniform offsets and wrap-around, then DSA
    (:class:`TextureBatchSource`); everything else is the distillation loop of
    :func:`mttlib.distill.distill` -- the same meta-gradient strategies, checkpoints and
    ``resume``, metrics and snapshots, written to ``out_dir``. ``distilled.pt`` there is the
    texture set (``images`` are the canvases) that ``python -m mttlib texture export`` reads;
    ``config.json`` records the texture settings under ``"texture"``.

    Args:
        data: the dataset, loaded without ZCA (:func:`check_texture_data`).
        experts: trajectories trained on ``data`` without ZCA.
        config: a full :class:`~mttlib.distill.DistillConfig`; default :func:`texture_config`
            ``(data.name, ipc, preset)``. ``overrides`` (``iterations``, ``strategy``, ``lr_img``,
            ``seed``, ...) are applied to it either way.
        init: ``"noise"`` or ``"real"`` (each canvas a grid of real images of its class); it
            sets ``config.init`` too. The starting canvases are drawn with ``config.seed``.
        classes: distill only these classes (indices or names; labels keep their indices);
            default all.
        wrap: ``False`` runs the control without wrap-around (crops inside the canvas only):
            same everything else, but its canvases do not tile.

    Returns the :class:`mttlib.distill.DistillResult` (``images`` are the canvases).
    """
    import json

    from mttlib.distill import distill

    check_texture_data(data)
    if config is None:
        config = texture_config(data.name, ipc, preset, init=init, **overrides)
    else:
        config = config.replace(**{k: v for k, v in overrides.items() if v is not None})
    config = config.replace(init=init)
    if config.zca:
        raise ValueError("texture mode cannot use a config with zca=True; set zca=False and use experts trained "
                         "without ZCA")
    config.validate()
    if int(canvas_samples) != canvas_samples or canvas_samples < 1:
        raise ValueError(f"canvas_samples must be a positive integer (crops per canvas per step), got {canvas_samples}")
    wanted = class_indices(data, classes)
    canvases, labels = init_canvases(data, config.ipc, canvas_size, init, torch.Generator().manual_seed(config.seed),
                                     classes=wanted)
    source = texture_source(config, data, len(canvases), canvas_size, canvas_samples, wrap)
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
    """Read a texture set (a run folder or its ``distilled.pt``).

    Returns the set's dict (``images`` = canvases, ``labels``, ``syn_lr``, ``config``) plus, when
    the run folder's ``config.json`` is beside it, ``texture`` (the texture settings) and
    ``data`` (the dataset's description: name, classes, mean, std).
    """
    import json

    from mttlib.io import safe_load

    path = Path(path)
    if path.is_dir():
        path = path / "distilled.pt"
    if not path.exists():
        raise FileNotFoundError(f"no texture set at {path}; distill one with `python -m mttlib texture distill`")
    obj = safe_load(path, map_location=device)
    if not isinstance(obj, dict) or "images" not in obj or "labels" not in obj:
        raise ValueError(f"{path} is not a texture set: expected a dict with 'images' (canvases), "
                         "'labels' and 'config'; distilled sets are written by `python -m mttlib texture distill`")
    run_config = path.parent / "config.json"
    if run_config.exists():
        try:
            record = json.loads(run_config.read_text())
        except ValueError:
            record = {}
        for key in ("texture", "data"):
            if isinstance(record.get(key), dict):
                obj.setdefault(key, record[key])
    return obj


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


def class_subset(data: ImageData, classes: Sequence[int | str]) -> ImageData:
    """``data`` restricted to some classes, relabelled ``0 .. K-1`` in the order given.

    Train and test splits keep only those classes' images; normalisation (mean, std) is
    unchanged, so a canvas made in ``data``'s space is in the subset's space too. The name
    becomes ``<name>[<class>,...]``. Used to evaluate textures of a few classes as a K-way task.
    """
    from mttlib.data import ImageData as _ImageData

    check_texture_data(data)
    wanted = class_indices(data, classes)
    lookup = torch.full((data.num_classes,), -1, dtype=torch.long)
    lookup[torch.tensor(wanted)] = torch.arange(len(wanted))
    splits = {}
    for split in ("train", "test"):
        labels = getattr(data, f"{split}_labels").cpu().long()
        keep = lookup[labels] >= 0
        splits[split] = (getattr(data, f"{split}_images")[keep], lookup[labels[keep]])
    names = [data.classes[c] for c in wanted]
    return _ImageData(name=f"{data.name}[{','.join(names)}]", train_images=splits["train"][0],
                      train_labels=splits["train"][1], test_images=splits["test"][0], test_labels=splits["test"][1],
                      classes=names, mean=data.mean, std=data.std, zca=None, digits=data.digits)


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


# --- stored pixels ------------------------------------------------------------------------------


class StoredPixels:
    """Deprocessing from stored mean and std, for a set whose dataset is not at hand."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def deprocess(self, x: Tensor) -> Tensor:
        return (x.float().cpu() * self.std + self.mean).clamp(0, 1)
