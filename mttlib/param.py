"""Synthetic images learned through a basis: a 1/f-scaled, colour-decorrelated Fourier basis or a Laplacian pyramid.

Gradient steps on raw pixels follow the matching loss wherever it points, and the pixel gradient of
a trajectory-matching loss is mostly fine, high-frequency detail: after a short run the images (and
texture canvases) look like coloured noise. Feature visualisation (Olah, Mordvintsev and Schubert,
*Feature Visualization*, Distill 2017; Mordvintsev et al., *Differentiable Image Parameterizations*,
Distill 2018) learns its images as coefficients ``c`` of a basis instead, ``x = D c``:

* ``fourier``: ``x = M · irfft2(s(f) · c)``. Each spatial frequency ``f`` gets the scale
  ``s(f) ∝ 1/f`` (natural images have about that amplitude spectrum) and the colour matrix ``M`` is
  the square root of the data's channel covariance (luminance strong, colour differences weak).
  The FFT is periodic, so on a texture canvas the basis wraps around like the crops do.
* ``pyramid``: ``x = Σ_k w_k · up^k(c_k)``, a Laplacian pyramid (levels at 1, 1/2, 1/4, ... of the
  side, upsampled bilinearly with wrap-around), coarser levels weighted ``w_k ∝ 2^k``.

The gradient with respect to ``c`` is ``Dᵀ g`` (``g`` the pixel gradient): frequencies natural images
are rich in take large steps, pixel noise small ones. ``D`` is linear and fixed, so SGD with momentum
on ``c`` moves the pixels exactly as SGD with momentum on ``x`` whose gradient is replaced by
``P g = D Dᵀ g`` (the pixel-space momentum buffer is ``D`` times the coefficients' one). The
distillation loop uses that form, :meth:`ImageParam.precondition`: it keeps pixels, so checkpoints,
``distilled.pt`` and every consumer see images of the same size as before (the same number of stored
values), and a resumed run continues bit for bit. Both ``P`` are scaled so that their mean eigenvalue
is 1 (a white gradient keeps its expected size). Taught in notebook ``04_tileable_textures``;
``DistillConfig.param`` selects one for plain distillation too.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mttlib.data import ImageData

__all__ = ["PARAMS", "validate", "ImageParam", "Fourier", "Pyramid", "colour_matrix", "make_param"]

PARAMS = ("pixels", "fourier", "pyramid")
Shape = Sequence[int]


def validate(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is one of :data:`PARAMS`."""
    if name not in PARAMS:
        raise ValueError(f"param must be one of {PARAMS} (how the images are learned), got {name!r}")


class ImageParam:
    """Pixels as they are: ``decode(encode(x)) = x`` with one coefficient tensor equal to ``x``.

    Subclasses define :meth:`encode` and :meth:`decode` (linear, differentiable); :meth:`precondition`
    follows from them."""

    name = "pixels"

    def encode(self, x: Tensor) -> list[Tensor]:
        """Coefficients of images ``x`` ``[N, C, H, W]`` (a list of tensors)."""
        return [x]

    def decode(self, coeffs: Sequence[Tensor]) -> Tensor:
        """Images ``[N, C, H, W]`` from coefficients; differentiable."""
        return coeffs[0]

    def precondition(self, grad: Tensor) -> Tensor:
        """``D Dᵀ grad``: how far SGD on the coefficients moves the pixels, given the pixel gradient ``grad``.

        ``Dᵀ grad`` (the coefficients' gradient) comes from one autograd call through :meth:`decode`, which
        is linear, so decoding zeros is enough to build the graph."""
        if type(self) is ImageParam:
            return grad
        with torch.enable_grad():
            zeros = [c.detach().requires_grad_(True) for c in self.encode(torch.zeros_like(grad))]
            coeff_grads = torch.autograd.grad(self.decode(zeros), zeros, grad)
        return self.decode([g.detach() for g in coeff_grads]).detach()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def colour_matrix(data: ImageData | None, channels: int, samples: int = 2000) -> Tensor:
    """The symmetric square root of the channel covariance of ``data``'s (preprocessed) training images,
    scaled so that its square has mean eigenvalue 1; the identity without data or for one channel."""
    if data is None or channels == 1:
        return torch.eye(channels, dtype=torch.float64)
    step = max(1, data.train_images.shape[0] // samples)  # every k-th image: deterministic, cheap
    x = data.preprocess(data.train_images[::step].cpu()).double().transpose(0, 1).reshape(channels, -1)
    evals, evecs = torch.linalg.eigh(torch.cov(x))
    evals = evals.clamp_min(1e-6 * float(evals.max())) / evals.clamp_min(0).mean()
    return evecs @ torch.diag(evals.sqrt()) @ evecs.T


class Fourier(ImageParam):
    """``x = M · irfft2(s · c)`` on images of ``shape`` ``(C, H, W)``; ``c`` is the half spectrum as real and
    imaginary parts ``[N, C, H, W // 2 + 1, 2]``; ``s(f) = 1 / max(f, 1 / max(H, W)) ** decay``."""

    name = "fourier"

    def __init__(self, shape: Shape, colour: Tensor | None = None, decay: float = 1.0) -> None:
        c, h, w = (int(s) for s in shape)
        f = torch.sqrt(torch.fft.fftfreq(h, dtype=torch.float64)[:, None] ** 2
                       + torch.fft.rfftfreq(w, dtype=torch.float64)[None, :] ** 2)
        # first one grey channel, to measure the mean eigenvalue of D Dᵀ: a convolution on the torus, so the
        # mean is its response at the point of a unit impulse; then the scale that makes it 1, and the colours
        self.colour, self.shape, self.decay = torch.eye(1, dtype=torch.float64), (1, h, w), float(decay)
        self.scale = 1.0 / f.clamp_min(1.0 / max(h, w)) ** decay
        impulse = torch.zeros(1, 1, h, w, dtype=torch.float64)
        impulse[..., 0, 0] = 1.0
        self.scale = self.scale / math.sqrt(float(self.precondition(impulse)[..., 0, 0]))
        self.colour = torch.eye(c, dtype=torch.float64) if colour is None else colour.double()
        self.shape = (c, h, w)

    def _mix(self, m: Tensor, x: Tensor) -> Tensor:
        return torch.einsum("ij,njhw->nihw", m.to(x), x)

    def encode(self, x: Tensor) -> list[Tensor]:
        spectrum = torch.fft.rfft2(self._mix(torch.linalg.inv(self.colour), x), norm="ortho")
        return [torch.view_as_real(spectrum / self.scale.to(x))]

    def decode(self, coeffs: Sequence[Tensor]) -> Tensor:
        c = coeffs[0]
        spectrum = torch.view_as_complex(c.contiguous()) * self.scale.to(c)
        return self._mix(self.colour, torch.fft.irfft2(spectrum, s=self.shape[1:], norm="ortho"))

    def __repr__(self) -> str:
        return f"Fourier(shape={self.shape}, decay={self.decay:g})"


def _up(x: Tensor) -> Tensor:
    """Bilinear upsampling x2 with wrap-around (the image is a torus)."""
    padded = F.pad(x, (1, 1, 1, 1), mode="circular")
    big = F.interpolate(padded, scale_factor=2, mode="bilinear", align_corners=False)
    return big[..., 2:2 + 2 * x.shape[-2], 2:2 + 2 * x.shape[-1]]


class Pyramid(ImageParam):
    """``x = Σ_k w_k · up^k(c_k)``: level ``k`` has side ``H / 2^k``, as many levels as halving allows (at most
    ``levels``); weights ``w_k ∝ 2^k`` (1/f per octave), scaled so that ``D Dᵀ`` has mean eigenvalue 1."""

    name = "pyramid"

    def __init__(self, shape: Shape, levels: int = 4) -> None:
        c, h, w = (int(s) for s in shape)
        sides = [(h, w)]
        while len(sides) < levels and sides[-1][0] % 2 == 0 and sides[-1][1] % 2 == 0:
            sides.append((sides[-1][0] // 2, sides[-1][1] // 2))
        self.shape, self.sides = (c, h, w), sides
        self.weights = [2.0 ** k for k in range(len(sides))]
        energy = 0.0  # trace(D Dᵀ) / pixels: each level's basis images are translates of one
        for k, (hk, wk) in enumerate(sides):
            delta = torch.zeros(1, 1, hk, wk, dtype=torch.float64)
            delta[..., 0, 0] = 1.0
            for _ in range(k):
                delta = _up(delta)
            energy += self.weights[k] ** 2 * float(delta.square().sum()) * hk * wk / (h * w)
        self.weights = [wk / math.sqrt(energy) for wk in self.weights]

    def encode(self, x: Tensor) -> list[Tensor]:
        gauss = [x]
        for _ in self.sides[1:]:
            gauss.append(F.avg_pool2d(gauss[-1], 2))
        bands = [g - _up(nxt) for g, nxt in zip(gauss[:-1], gauss[1:])] + [gauss[-1]]
        return [b / wk for b, wk in zip(bands, self.weights)]

    def decode(self, coeffs: Sequence[Tensor]) -> Tensor:
        x = coeffs[-1] * self.weights[-1]
        for c, wk in zip(reversed(coeffs[:-1]), reversed(self.weights[:-1])):
            x = c * wk + _up(x)
        return x

    def __repr__(self) -> str:
        return f"Pyramid(shape={self.shape}, levels={len(self.sides)})"


def make_param(name: str, shape: Shape, data: ImageData | None = None) -> ImageParam:
    """The parameterisation ``name`` (:data:`PARAMS`) of images of ``shape`` ``(C, H, W)``; ``data`` gives the
    Fourier basis its colour matrix (:func:`colour_matrix`)."""
    validate(name)
    if name == "fourier":
        return Fourier(shape, colour_matrix(data, int(shape[0])))
    return Pyramid(shape) if name == "pyramid" else ImageParam()
