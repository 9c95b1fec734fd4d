"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen, ICML 2021), as used by MTT.

Every operation is differentiable in the pixels, so gradients flow through the augmentation into the synthetic
images. Each call picks *one* operation group of the strategy (``"color_crop_cutout_flip_scale_rotate"``) and draws
parameters per sample. :meth:`DSA.sample` draws all random numbers on the CPU into a :class:`DSAParams`;
:meth:`DSA.apply` is a deterministic function of the images and those parameters, so replaying a :class:`DSAParams`
reproduces an augmentation exactly on any device, which the exact-recomputation meta-gradient relies on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from mttlib.data import DIGIT_STRATEGY, DSA_STRATEGY

__all__ = ["DSA_STRATEGY", "DIGIT_STRATEGY", "OPS", "DSAParams", "DSA", "Passes", "apply_passes"]

OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


@dataclass
class DSAParams:
    """The random draws of one DSA call: the operation group ``op`` and, for ``N`` samples, its tensors (others None):

    * ``color``: ``brightness``, ``saturation``, ``contrast`` -- ``[N]``, uniform in [0, 1);
    * ``crop``: ``shift`` -- ``[N, 2]`` int64 ``(rows, cols)``; content moves down/right by it;
    * ``cutout``: ``centre`` -- ``[N, 2]`` int64 ``(row, col)`` of the zeroed square;
    * ``flip``: ``flip`` -- ``[N]`` bool, True where the sample is mirrored left-right;
    * ``scale``: ``scale`` -- ``[N, 2]`` factors ``(sx, sy)`` of the sampling grid;
    * ``rotate``: ``angle`` -- ``[N]`` in radians (positive turns the image anticlockwise).
    """

    op: str
    brightness: Tensor | None = None
    saturation: Tensor | None = None
    contrast: Tensor | None = None
    shift: Tensor | None = None
    centre: Tensor | None = None
    flip: Tensor | None = None
    scale: Tensor | None = None
    angle: Tensor | None = None

    def tensors(self) -> dict[str, Tensor]:
        """The tensors that are set, by field name."""
        return {name: value for name, value in vars(self).items() if name != "op" and value is not None}

    def to(self, device: str | torch.device) -> DSAParams:
        """A copy with every tensor on ``device``."""
        return replace(self, **{k: v.to(device) for k, v in self.tensors().items()})


class DSA:
    """Differentiable siamese augmentation with one operation group per call (mode 'S').

    ``strategy`` names the groups joined by ``_`` (see :data:`OPS`); ``"none"`` or ``""`` gives the identity. The
    keyword arguments are the strengths of the reference code."""

    def __init__(self, strategy: str = DSA_STRATEGY, *, scale: float = 1.2, rotate: float = 15.0,
                 crop: float = 0.125, cutout: float = 0.5, brightness: float = 1.0,
                 saturation: float = 2.0, contrast: float = 0.5, flip_prob: float = 0.5) -> None:
        names = [] if strategy.lower() in ("", "none") else strategy.split("_")
        if unknown := [name for name in names if name not in OPS]:
            raise ValueError(f"unknown DSA operation(s) {unknown} in strategy {strategy!r}; "
                             f"valid operations are {', '.join(OPS)} (joined by '_'), or 'none'")
        if not (scale >= 1 and rotate >= 0 and 0 <= crop < 1 and 0 <= cutout <= 1
                and 0 <= flip_prob <= 1):
            raise ValueError("DSA strengths out of range: need scale >= 1, rotate >= 0, "
                             "0 <= crop < 1, 0 <= cutout <= 1 and 0 <= flip_prob <= 1")
        self.strategy, self.ops = strategy, tuple(names)
        self.scale, self.rotate, self.crop, self.cutout = float(scale), float(rotate), float(crop), float(cutout)
        self.brightness, self.saturation, self.contrast = float(brightness), float(saturation), float(contrast)
        self.flip_prob = float(flip_prob)

    @property
    def config(self) -> dict[str, float]:
        """The strengths, as keyword arguments of the constructor (JSON-able)."""
        return dict(scale=self.scale, rotate=self.rotate, crop=self.crop, cutout=self.cutout,
                    brightness=self.brightness, saturation=self.saturation, contrast=self.contrast,
                    flip_prob=self.flip_prob)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config.items())
        return f"DSA({self.strategy!r}, {args})"

    def sample(self, n: int, image_size: int | tuple[int, int], generator: torch.Generator | None = None) -> DSAParams:
        """Draw the operation group and the per-sample parameters for ``n`` images, on the CPU."""
        h, w = (image_size, image_size) if isinstance(image_size, int) else (int(s) for s in image_size)
        if n < 0 or h < 1 or w < 1:
            raise ValueError(f"need n >= 0 and a positive image size, got n={n}, image_size={(h, w)}")
        if not self.ops:
            return DSAParams("none")

        def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> Tensor:
            return low + (high - low) * torch.rand(*shape, generator=generator, dtype=torch.float32)

        def integers(low: int, high: int) -> Tensor:  # [n] draws in [low, high), per axis
            return torch.randint(low, high, (n,), generator=generator)

        op = self.ops[int(torch.randint(len(self.ops), (1,), generator=generator))]
        if op == "color":
            return DSAParams(op, brightness=uniform(n), saturation=uniform(n), contrast=uniform(n))
        if op == "crop":
            sh, sw = int(h * self.crop + 0.5), int(w * self.crop + 0.5)
            return DSAParams(op, shift=torch.stack([integers(-sh, sh + 1), integers(-sw, sw + 1)], 1))
        if op == "cutout":
            ch, cw = self._cutout_side(h, w)
            # as in the reference: an even side can sit one pixel further, so it sticks out at either edge equally
            return DSAParams(op, centre=torch.stack([integers(0, h + 1 - ch % 2), integers(0, w + 1 - cw % 2)], 1))
        if op == "flip":
            return DSAParams(op, flip=uniform(n) < self.flip_prob)
        if op == "scale":
            return DSAParams(op, scale=uniform(n, 2, low=1 / self.scale, high=self.scale))
        limit = math.radians(self.rotate)  # op == "rotate"
        return DSAParams(op, angle=uniform(n, low=-limit, high=limit))

    def _cutout_side(self, h: int, w: int) -> tuple[int, int]:
        return int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)

    def passes(self, params: DSAParams, image_size: int | tuple[int, int]) -> Passes:
        """The draws of ``params`` as the three passes of :func:`apply_passes` (CPU tensors): the colour group
        as one elementwise pass, crop, flip, scale and rotate as one resampling, cutout as a mask; the groups
        not drawn are None (:meth:`Passes.every` fills in identities)."""
        h, w = (image_size, image_size) if isinstance(image_size, int) else (int(s) for s in image_size)
        if params.op not in OPS + ("none",):
            raise ValueError(f"unknown DSA operation {params.op!r}; valid operations are {', '.join(OPS)}")
        color = theta = keep = None
        if params.op == "color":
            rb, rs, rc = (r.double().view(-1, 1, 1, 1) for r in (params.brightness, params.saturation, params.contrast))
            contrast = rc + self.contrast
            color = ((rb - 0.5) * self.brightness, contrast, contrast * rs * self.saturation)
        elif params.op == "cutout":
            keep = self._keep(params.centre, h, w)
        elif params.op != "none":
            theta = _theta(params, h, w)
        return Passes(color, theta, keep)

    def apply(self, x: Tensor, params: DSAParams) -> Tensor:
        """Augment ``x`` ``[N, C, H, W]`` with ``params``; deterministic, differentiable in ``x``."""
        if x.dim() != 4:
            raise ValueError(f"DSA expects a batch [N, C, H, W], got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"DSA needs float images, got {x.dtype}; preprocess them first")
        if (n := next((len(t) for t in params.tensors().values()), None)) not in (None, x.shape[0]):
            raise ValueError(f"DSA parameters are for {n} samples but the batch has {x.shape[0]}; sample them with "
                             "n = x.shape[0]")
        return apply_passes(x, self.passes(params, tuple(x.shape[-2:])))

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Sample fresh parameters for ``x`` and apply them."""
        return self.apply(x, self.sample(x.shape[0], tuple(x.shape[-2:]), generator))

    def _keep(self, centre: Tensor, h: int, w: int) -> Tensor:
        """``[N, 1, H, W]``: 0 inside each sample's cutout square (clipped to the image), 1 elsewhere."""
        ch, cw = self._cutout_side(h, w)
        top, left = (centre - torch.tensor([ch // 2, cw // 2])).unbind(1)
        rows, cols = torch.arange(h), torch.arange(w)
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + ch)  # [N, H]
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + cw)  # [N, W]
        return (~(in_rows[:, :, None] & in_cols[:, None, :])).unsqueeze(1).float()


@dataclass
class Passes:
    """One DSA call as three passes (:func:`apply_passes`); a pass that is None is skipped.

    * ``color``: ``(shift, contrast, contrast x saturation)``, each ``[N, 1, 1, 1]``;
    * ``theta``: ``[N, 2, 3]`` affine maps of the sampling grid (``align_corners=True``);
    * ``keep``: ``[N, 1, H, W]``, 0 where cutout zeroes the image.
    """

    color: tuple[Tensor, Tensor, Tensor] | None = None
    theta: Tensor | None = None
    keep: Tensor | None = None

    def tensors(self) -> list[Tensor]:
        """The tensors that are set, in a fixed order."""
        return [*(self.color or ()), *(t for t in (self.theta, self.keep) if t is not None)]

    def every(self, n: int, image_size: tuple[int, int]) -> Passes:
        """All three passes, the identity where this one has None (a CUDA graph replays every pass every step)."""
        one = torch.ones(n, 1, 1, 1)
        return Passes(self.color or (torch.zeros(n, 1, 1, 1), one, one.clone()),
                      torch.tensor([[1.0, 0, 0], [0, 1, 0]]).repeat(n, 1, 1) if self.theta is None else self.theta,
                      torch.ones(n, 1, *image_size) if self.keep is None else self.keep)

    def to(self, device: str | torch.device, dtype: torch.dtype) -> Passes:
        """A copy with every tensor on ``device`` in ``dtype``."""
        return Passes(*(None if v is None else tuple(t.to(device, dtype) for t in v) if isinstance(v, tuple)
                        else v.to(device, dtype) for v in (self.color, self.theta, self.keep)))


def apply_passes(x: Tensor, passes: Passes) -> Tensor:
    """Apply a DSA call's passes to ``x``: colour, then resampling, then cutout. Differentiable in ``x``."""
    p = passes.to(x.device, x.dtype)
    if p.color is not None:
        # brightness, saturation and contrast in one: the image mean plus the shift, contrast times the grey
        # level's offset from it, contrast x saturation times each channel's offset from the grey level
        shift, contrast, chroma = p.color
        grey, mean = x.mean(1, keepdim=True), x.mean((1, 2, 3), keepdim=True)
        x = torch.addcmul(torch.addcmul(mean + shift, contrast, grey - mean), chroma, x - grey)
    if p.theta is not None:
        grid = F.affine_grid(p.theta, list(x.shape), align_corners=True)
        x = F.grid_sample(x, grid, align_corners=True)
    if p.keep is not None:
        x = x * p.keep
    return x


def _theta(params: DSAParams, h: int, w: int) -> Tensor:
    """The affine sampling map ``[N, 2, 3]`` (float64, output -> input, normalised coordinates with
    ``align_corners=True``) of a crop, flip, scale or rotate draw."""
    if params.op == "crop":  # out[i, j] = x[i - dy, j - dx]: sample one shift back, in units of 2 / (size - 1)
        n = len(params.shift)
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        dy, dx = params.shift.double().unbind(1)
        theta[:, 0, 2] = -2 * dx / max(w - 1, 1)
        theta[:, 1, 2] = -2 * dy / max(h - 1, 1)
        return theta
    if params.op == "flip":
        sign = 1 - 2 * params.flip.double()
        zero = torch.zeros_like(sign)
        return torch.stack([sign, zero, zero, zero, zero + 1, zero], 1).view(-1, 2, 3)
    if params.op == "scale":
        sx, sy = params.scale.double().unbind(1)
        zero = torch.zeros_like(sx)
        return torch.stack([sx, zero, zero, zero, sy, zero], 1).view(-1, 2, 3)
    angle = params.angle.double()  # rotate
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    return torch.stack([cos, -sin, zero, sin, cos, zero], 1).view(-1, 2, 3)
