"""ZCA whitening exactly as the paper's code does it, and its exact inverse.

The paper's code scales CIFAR pixels to [0, 1] (no normalisation) and fits kornia's
``ZCAWhitening(eps=0.1)``: ``C = U diag(S) U^T`` is the covariance of the flattened train images
(denominator N-1) and whitening is ``(x - mean) @ U diag(1 / sqrt(S + eps)) U^T``. ``eps`` is
absolute: on the embedded set's [0, 1] pixels only 129 of 3,072 eigenvalues exceed 0.1, so it
whitens the strong, smooth directions and leaves fine detail and JPEG block edges almost alone.
The kit before 0.2 normalised first, which acts like eps 0.004-0.006 (585 eigenvalues above it);
experts and distilled sets record the :data:`RECIPE`, and another one is refused, not mixed.
Taught in notebook ``00_setup_and_data``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import Tensor

__all__ = ["ZCA", "ZCA_EPS", "RECIPE", "check_recipe"]

ZCA_EPS = 0.1
#: Names the input space of a whitening; stored with experts and distilled sets.
RECIPE = "pixels01-kornia"
_MAX_DIM = 3 * 64 * 64


def check_recipe(described: dict | None, where: str) -> None:
    """Refuse a ZCA description (``ImageData.describe()["zca"]``) fitted another way.

    ``where`` names what is refused (a folder, a file) in the message.
    """
    if described and described.get("recipe") != RECIPE:
        old = described.get("recipe") or "normalised, then whitened: the kit before 0.2"
        raise ValueError(f"{where} was made on ZCA-whitened data of another recipe ({old}); the kit now whitens "
                         f"the [0, 1] pixels as the paper does ({RECIPE}). Delete it and train the experts (and "
                         "distil) again.")


def _chunk_rows(values_per_row: int) -> int:
    """Rows per chunk so that a float64 copy of a chunk stays near 128 MB."""
    return max(1, (1 << 24) // max(1, values_per_row))


def _from_gram(centred: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The ZCA matrices from the N x N Gram matrix, for N centred samples of D > N values: the
    covariance's nonzero eigenpairs come from ``Xc Xc^T / (N-1)`` (``u = Xc^T v / sqrt((N-1) s)``),
    the rest has eigenvalue 0, so ``W = U diag(1/sqrt(S+eps)) U^T + (I - U U^T)/sqrt(eps)``."""
    n, d = centred.shape
    eigenvalues, v = torch.linalg.eigh(centred @ centred.T / (n - 1))
    keep = eigenvalues > eigenvalues.max().clamp_min(0) * 1e-10  # drop the null space (centring, duplicates)
    s, v = eigenvalues[keep], v[:, keep]
    u = (centred.T @ v) / ((n - 1) * s).sqrt()
    identity = torch.eye(d, dtype=torch.float64, device=centred.device)
    root_eps = eps ** 0.5
    matrix = (u * ((s + eps).rsqrt() - 1 / root_eps)) @ u.T + identity / root_eps
    inverse_matrix = (u * ((s + eps).sqrt() - root_eps)) @ u.T + identity * root_eps
    return matrix, inverse_matrix


class ZCA:
    """ZCA whitening of flattened samples, with its exact inverse.

    ``transform(x) = (x_flat - mean) @ W`` and ``inverse(y) = y_flat @ W_inv + mean`` with
    ``W = U diag(1/sqrt(S + eps)) U^T`` and ``W_inv = U diag(sqrt(S + eps)) U^T``, where
    ``U diag(S) U^T`` is the covariance of the samples it was fitted on. Both maps are linear,
    so gradients flow through them (the distilled pixels can live in whitened space).
    Taught in notebook ``00_setup_and_data``.
    """

    def __init__(self, mean: Tensor, matrix: Tensor, inverse_matrix: Tensor, eps: float,
                 shape: tuple[int, ...]) -> None:
        d = int(np.prod(shape))
        if mean.shape != (d,) or matrix.shape != (d, d) or inverse_matrix.shape != (d, d):
            raise ValueError(
                f"ZCA tensors do not fit samples of shape {tuple(shape)} (D={d}): mean "
                f"{tuple(mean.shape)}, matrix {tuple(matrix.shape)}, inverse {tuple(inverse_matrix.shape)}."
            )
        self.mean = mean.detach().float().cpu()
        self.matrix = matrix.detach().float().cpu()
        self.inverse_matrix = inverse_matrix.detach().float().cpu()
        self.eps = float(eps)
        self.shape = tuple(int(s) for s in shape)
        # What the ZCA was fitted on (a hash of the images and settings), when known: unlike the
        # matrix's own bytes it is the same on every machine, so experts can compare it.
        self.fitted_on: str | None = None
        self._placed: dict[tuple[str, torch.dtype], tuple[Tensor, Tensor, Tensor]] = {}

    @classmethod
    def fit(cls, x: Tensor, eps: float = ZCA_EPS) -> "ZCA":
        """Fit on samples ``x`` [N, ...] (N >= 2); computed in float64, stored in float32."""
        if x.dim() < 2 or x.shape[0] < 2:
            raise ValueError(f"ZCA.fit needs a batch of at least 2 samples [N, ...], got shape {tuple(x.shape)}.")
        if eps < 0:
            raise ValueError(f"ZCA eps must be >= 0, got {eps}.")
        n = x.shape[0]
        flat = x.detach().reshape(n, -1)
        d = flat.shape[1]
        if d > _MAX_DIM:
            raise ValueError(
                f"ZCA on samples of {d} values needs a {d}x{d} matrix ({d * d * 8 / 1e9:.0f} GB in "
                f"float64); it is meant for small images (up to {_MAX_DIM} values, e.g. 3x64x64). "
                "Load the dataset without zca, or at a lower resolution."
            )
        rows = _chunk_rows(d)
        mean = torch.zeros(d, dtype=torch.float64, device=flat.device)
        for chunk in flat.split(rows):
            mean += chunk.double().sum(0)
        mean /= n
        if n < d and eps > 0:
            matrix, inverse_matrix = _from_gram(flat.double() - mean, eps)
        else:
            cov = torch.zeros(d, d, dtype=torch.float64, device=flat.device)
            for chunk in flat.split(rows):
                centred = chunk.double() - mean
                cov += centred.T @ centred
            cov /= n - 1
            eigenvalues, vectors = torch.linalg.eigh(cov)
            eigenvalues = eigenvalues.clamp_min(0)  # round-off can make zero eigenvalues slightly negative
            matrix = (vectors * (eigenvalues + eps).rsqrt()) @ vectors.T
            inverse_matrix = (vectors * (eigenvalues + eps).sqrt()) @ vectors.T
        return cls(mean, matrix, inverse_matrix, eps, tuple(x.shape[1:]))

    def _on(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        dtype = like.dtype if like.is_floating_point() else torch.float32
        key = (str(like.device), dtype)
        if key not in self._placed:
            self._placed[key] = tuple(t.to(like.device, dtype)
                                      for t in (self.mean, self.matrix, self.inverse_matrix))
        return self._placed[key]

    def _flat(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        if tuple(x.shape) == self.shape:  # one sample
            return x.reshape(1, -1), tuple(x.shape)
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"ZCA was fitted on samples of shape {self.shape}, got a tensor of shape "
                f"{tuple(x.shape)}; pass [N, {', '.join(map(str, self.shape))}]."
            )
        return x.reshape(x.shape[0], -1), tuple(x.shape)

    def transform(self, x: Tensor) -> Tensor:
        """Whiten ``x`` ([N, *shape] or one sample of ``shape``); differentiable in ``x``."""
        flat, shape = self._flat(x)
        mean, matrix, _ = self._on(flat)
        return ((flat - mean) @ matrix).reshape(shape)

    def inverse(self, x: Tensor) -> Tensor:
        """Undo :meth:`transform`: map whitened samples back to the fitted space."""
        flat, shape = self._flat(x)
        mean, _, inverse_matrix = self._on(flat)
        return (flat @ inverse_matrix + mean).reshape(shape)

    def state_dict(self) -> dict[str, Tensor]:
        """The tensors that define this ZCA (for :func:`mttlib.io.atomic_save`)."""
        return {"mean": self.mean.clone(), "matrix": self.matrix.clone(),
                "inverse_matrix": self.inverse_matrix.clone(),
                "eps": torch.tensor(self.eps, dtype=torch.float64),
                "shape": torch.tensor(self.shape, dtype=torch.int64)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> "ZCA":
        """Rebuild a ZCA from :meth:`state_dict`'s output."""
        missing = {"mean", "matrix", "inverse_matrix", "eps", "shape"} - set(state)
        if missing:
            raise ValueError(f"not a ZCA state dict: missing {sorted(missing)}.")
        return cls(state["mean"], state["matrix"], state["inverse_matrix"], float(state["eps"]),
                   tuple(int(s) for s in state["shape"].tolist()))

    def fingerprint(self) -> str:
        """A short hash of the mean and the whitening matrix (which ZCA this is)."""
        digest = hashlib.sha256()
        digest.update(self.mean.numpy().tobytes())
        digest.update(self.matrix.numpy().tobytes())
        return digest.hexdigest()[:12]

    def __repr__(self) -> str:
        return f"ZCA(shape={self.shape}, eps={self.eps})"
