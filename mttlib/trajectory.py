"""What an expert trajectory is: the parameters of one network after every epoch of training,
how it is stored and checked, and its geometry.

A :class:`Trajectory` holds ``snapshots``, float32 ``[E + 1, P]``: row ``e`` is the flat parameter
vector (``model.parameters()`` order) after ``e`` epochs, row 0 the initialisation. Its file,
``expert_NNNNN.pt``, is a dict readable with ``weights_only=True``: ``snapshots`` and ``meta``
(plain values: ``format``, ``format_version``, ``index``, ``seed``, ``config``, ``model``,
``model_kwargs``, ``dataset``, ``dsa``, ``numel``, ``epochs``, per-epoch ``train_acc``,
``train_loss``, ``test_acc``, ``test_loss``, ``wall_time_s``, ``versions``, ...). The geometry
-- :func:`step_lengths`, :func:`segment_lengths`, :func:`project_trajectories` -- is what
notebook ``01_expert_trajectories`` teaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from mttlib.io import CorruptFileError, describe, safe_load
from mttlib.zca import check_recipe

__all__ = ["FORMAT_VERSION", "Trajectory", "load_trajectory", "step_lengths", "segment_lengths",
           "project_trajectories"]

FORMAT_VERSION = 1


@dataclass
class Trajectory:
    """One expert's parameters over training: ``traj[e]`` is the flat vector after ``e`` epochs.

    ``snapshots`` is float32 ``[E + 1, P]`` (row 0: the initialisation); ``meta`` the file's
    metadata (see the module docstring); ``path`` the file it came from, if any.
    """

    snapshots: Tensor
    meta: dict[str, Any]
    path: Path | None = None

    def __len__(self) -> int:
        return self.snapshots.shape[0]

    def __getitem__(self, epoch: int) -> Tensor:
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise TypeError(f"index a trajectory with an epoch number (int), got {epoch!r}")
        if not -len(self) <= epoch < len(self):
            raise IndexError(f"epoch {epoch} is outside this trajectory: it holds epochs 0..{self.epochs}")
        return self.snapshots[epoch]

    def __repr__(self) -> str:
        return f"Trajectory(index={self.index}, epochs={self.epochs}, numel={self.numel:,})"

    @property
    def epochs(self) -> int:
        """E, the number of training epochs (``len(traj) - 1``)."""
        return self.snapshots.shape[0] - 1

    @property
    def numel(self) -> int:
        """P, the number of parameters of the network."""
        return self.snapshots.shape[1]

    @property
    def index(self) -> int | None:
        """The expert's index in its folder."""
        return self.meta.get("index")

    @property
    def train_acc(self) -> list[float]:
        """Training accuracy of each epoch (augmented batches, measured during the epoch)."""
        return list(self.meta["train_acc"])

    @property
    def test_acc(self) -> list[float]:
        """Test accuracy after each epoch (no augmentation)."""
        return list(self.meta["test_acc"])

    def segment(self, start: int, length: int) -> tuple[Tensor, Tensor]:
        """``(traj[start], traj[start + length])``: where a student starts and what it must reach."""
        if length < 1 or start < 0 or start + length > self.epochs:
            raise IndexError(f"segment {start} -> {start + length} is outside this trajectory of {self.epochs} epochs")
        return self.snapshots[start], self.snapshots[start + length]

    def check_model(self, model: nn.Module) -> None:
        """Raise ``ValueError`` unless ``model`` (or a ``FunctionalModel``) has this trajectory's size."""
        module = getattr(model, "module", model)
        numel = sum(p.numel() for p in module.parameters())
        if numel != self.numel:
            cfg = self.meta.get("config", {})
            raise ValueError(
                f"this trajectory has {self.numel:,} parameters per snapshot but the {type(module).__name__} has "
                f"{numel:,}: it was trained with model {cfg.get('model')!r}, model_kwargs {cfg.get('model_kwargs')} "
                f"on dataset {cfg.get('dataset')!r}. Build the student with the same model, overrides and dataset.")


def _not_an_expert(path: Path, what: str) -> CorruptFileError:
    return CorruptFileError(f"{path} is not a complete expert trajectory file ({what}). Delete it and re-run "
                            "the expert training: finished experts are kept, this one is retrained.")


def _validate(obj: Any, path: Path) -> None:
    if not isinstance(obj, dict) or not isinstance(obj.get("meta"), dict) or "snapshots" not in obj \
            or obj["meta"].get("format") != "mttlib-expert":
        raise _not_an_expert(path, "it has no expert 'snapshots' and 'meta'")
    meta, snaps = obj["meta"], obj["snapshots"]
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} has expert format version {describe(version)}, but this mttlib reads versions up "
                         f"to {FORMAT_VERSION}: update the kit, or re-train the experts with this one.")
    epochs, numel = meta.get("epochs"), meta.get("numel")
    if not all(type(v) is int and v > 0 for v in (epochs, numel)) or not isinstance(meta.get("config"), dict):
        raise _not_an_expert(path, f"its metadata records {describe(epochs)} epochs, {describe(numel)} parameters "
                                   f"and a {type(meta.get('config')).__name__} config")
    if not isinstance(snaps, Tensor) or snaps.dtype != torch.float32 or tuple(snaps.shape) != (epochs + 1, numel):
        raise _not_an_expert(path, f"snapshots {describe(snaps)} are not float32 [{epochs + 1}, {numel}], one row "
                                   f"per epoch (0..{epochs}) of the {numel} parameters its metadata states")
    if not bool(torch.isfinite(snaps).all()):
        raise _not_an_expert(path, "its snapshots hold NaN or infinite values")
    check_recipe(meta["dataset"].get("zca") if isinstance(meta.get("dataset"), dict) else None, str(path))


def load_trajectory(path: str | Path, device: str | torch.device = "cpu") -> Trajectory:
    """Load one expert file (never unpickling code); a bad file raises :class:`CorruptFileError`."""
    obj = safe_load(path, map_location=device)
    _validate(obj, Path(path))
    return Trajectory(obj["snapshots"], obj["meta"], Path(path))


# --- geometry ------------------------------------------------------------------------------------


def step_lengths(traj: Trajectory) -> Tensor:
    """``||θ_{e+1} − θ_e||`` for e = 0 .. E−1 (float64): how far each epoch moves the parameters."""
    return segment_lengths(traj, 1)


def segment_lengths(traj: Trajectory, length: int) -> Tensor:
    """``||θ_{t+M} − θ_t||`` for t = 0 .. E−M (float64), with ``M = length``."""
    if not 1 <= length <= traj.epochs:
        raise ValueError(f"segment length must be in 1..{traj.epochs} for a trajectory of {traj.epochs} epochs, "
                         f"got {length}")
    snaps = traj.snapshots.double()
    return (snaps[length:] - snaps[:-length]).norm(dim=1)


def _pca(x: Tensor, dims: int) -> tuple[Tensor, Tensor]:
    """Top ``dims`` principal directions ``[dims, P]`` of the rows of ``x`` (centred) and the share
    of the variance each explains; float64 via the small Gram matrix."""
    centred = x - x.mean(0, keepdim=True)
    evals, evecs = torch.linalg.eigh(centred @ centred.T)  # ascending
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    dims = min(dims, x.shape[0])
    directions = (evecs[:, :dims] / evals[:dims].sqrt().clamp_min(1e-300)).T @ centred
    return directions, evals[:dims] / evals.sum().clamp_min(1e-300)


def project_trajectories(trajectories: Sequence[Trajectory], dims: int = 2,
                         separate: bool = False) -> tuple[list[Tensor], Tensor]:
    """Project trajectories to ``dims`` dimensions with principal component analysis (float64).

    Returns one ``[E + 1, dims]`` tensor per trajectory and the share of the variance each
    direction explains. ``separate=False``: one projection of all snapshots (where the experts
    are relative to each other; ``explained`` is ``[dims]``). ``separate=True``: each trajectory in
    its own plane from its start (the shape of each path; ``explained`` is ``[K, dims]``). Signs
    are fixed so the last snapshots have non-negative coordinates.
    """
    if not trajectories or len({t.numel for t in trajectories}) != 1:
        raise ValueError("project_trajectories needs one or more trajectories of the same model")
    if separate:
        coords, explained = [], []
        for traj in trajectories:
            moved = traj.snapshots.double().cpu() - traj.snapshots[0].double().cpu()
            directions, share = _pca(moved, dims)
            c = moved @ directions.T
            coords.append(c * torch.where(c[-1] < 0, -1.0, 1.0))
            explained.append(share)
        return coords, torch.stack(explained)
    x = torch.cat([t.snapshots.double().cpu() for t in trajectories])
    directions, explained = _pca(x, dims)
    coords = (x - x.mean(0, keepdim=True)) @ directions.T
    coords = coords * torch.where(coords[len(trajectories[0]) - 1] < 0, -1.0, 1.0)
    return list(coords.split([len(t) for t in trajectories])), explained
