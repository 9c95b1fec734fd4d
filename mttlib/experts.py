"""Expert trajectories: networks trained on real data, with their parameters saved every epoch.

Trajectory matching needs *experts*. Each expert is a network trained from a random
initialisation on the real training set with the paper's recipe -- plain SGD (lr 0.01, no
momentum, no weight decay, constant learning rate), batches of 256 shuffled every epoch, DSA
augmentation on every batch, cross-entropy -- and its *trajectory* is the list of its parameters
at epoch 0 (the initialisation) and after every epoch. Distillation later starts a student at
``traj[t]`` and asks it to reach ``traj[t + M]``.

:func:`train_experts` trains the experts that are missing in a folder; :func:`load_experts`
loads them as :class:`Trajectory` objects; :func:`ensure_experts` does both (a notebook's
load-or-train); :func:`expert_dir` names a folder per configuration under the runs folder.

Reproducible and resumable
--------------------------
Expert ``k``'s seed is :func:`expert_seed` ``(base_seed, k)``, a pure function of the two; it seeds
the initial weights, the shuffling and the augmentation, so re-running gives the same trajectory
bit for bit on the same machine (CPU, same number of threads; on a GPU some kernels are not
deterministic, so reruns agree to float round-off). Every expert is written to its own
file atomically as soon as it is finished: a re-run skips the finished ones, and an interrupted
run loses at most the expert in progress. Under ``torchrun`` (``WORLD_SIZE`` > 1) rank ``r`` of
``K`` trains the experts ``k`` with ``k % K == r``; the folder ends up exactly as a single
process would have written it.

File format (version 1)
-----------------------
A folder of experts holds one ``config.json`` and one ``expert_NNNNN.pt`` per expert::

    config.json        {"format": "mttlib-experts", "format_version": 1,
                        "fingerprint": ExpertConfig.fingerprint(),
                        "config": ExpertConfig.to_dict(),
                        "dataset": ImageData.describe()}
    expert_00000.pt    a dict written by torch.save, readable with weights_only=True:
      snapshots        float32 tensor [E + 1, P]: row e = the flat parameters after e epochs
                       (row 0 = the initialisation), in model.parameters() order
                       (FunctionalModel(model).flatten())
      meta             plain values only (JSON-able):
        format, format_version   "mttlib-expert", 1
        index, seed              the expert's index k and expert_seed(base_seed, k)
        config, fingerprint      ExpertConfig.to_dict() and its fingerprint
        model, model_kwargs      the network's name and overrides for make_model
        dataset                  ImageData.describe() (normalisation or ZCA fingerprint, sizes)
        dsa                      {"strategy": ..., "strengths": {...}} or None
        numel, epochs            P and E
        train_acc, train_loss    per epoch, measured during the epoch (augmented batches), [E]
        test_acc, test_loss      per epoch, after the epoch, no augmentation, [E]
        init_test_acc            test accuracy of the initial parameters
        wall_time_s, device, num_threads
        versions                 {"mttlib", "torch", "python"}

Files are never unpickled: :func:`load_trajectory` reads them with ``mttlib.io.safe_load``.
Buffers (BatchNorm running statistics) are not part of a trajectory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mttlib.io import CorruptFileError, atomic_save, atomic_write_json, safe_load
from mttlib.io import runs_dir as _runs_dir
from mttlib.zca import check_recipe

if TYPE_CHECKING:
    from mttlib.data import ImageData

__all__ = [
    "FORMAT_VERSION",
    "ExpertConfig",
    "Trajectory",
    "expert_seed",
    "expert_dir",
    "expert_path",
    "list_experts",
    "read_meta",
    "load_trajectory",
    "train_experts",
    "load_experts",
    "ensure_experts",
    "sample_segment",
    "step_lengths",
    "segment_lengths",
    "project_trajectories",
    "classroom_config",
    "smoke_config",

]

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
_FILE_RE = re.compile(r"^expert_(\d{5,})\.pt$")
_EVAL_BATCH = 1024


# --------------------------------------------------------------------------- configuration


@dataclass
class ExpertConfig:
    """Everything that shapes an expert trajectory (but not how many experts there are).

    Attributes:
        dataset: dataset name for :func:`mttlib.data.load_dataset`.
        zca: whether the images are ZCA-whitened (must match the data handed to training).
        model: network name for :func:`mttlib.models.make_model`.
        model_kwargs: its overrides, e.g. ``{"width": 32}``.
        epochs: epochs per expert (E); a trajectory holds E + 1 snapshots.
        lr: SGD learning rate (the paper: 0.01).
        momentum: SGD momentum (the paper: 0).
        weight_decay: SGD weight decay (the paper: 0).
        batch_size: real images per SGD step (the paper: 256).
        lr_decay: multiply the learning rate by 0.1 after ``epochs // 2`` epochs.
        dsa: DSA augmentation on every training batch (the paper: yes).
        base_seed: expert ``k`` is seeded with ``expert_seed(base_seed, k)``.
    """

    dataset: str = "cifar10-mini"
    zca: bool = False
    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 50
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    lr_decay: bool = False
    dsa: bool = True
    base_seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"ExpertConfig.dataset must be a dataset name, got {self.dataset!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"ExpertConfig.model must be a model name, got {self.model!r}")
        if not isinstance(self.model_kwargs, dict):
            raise ValueError(f"ExpertConfig.model_kwargs must be a dict, got {self.model_kwargs!r}")
        # None means "the model's default": drop it so both spellings share a fingerprint
        self.model_kwargs = {k: self.model_kwargs[k] for k in sorted(self.model_kwargs)
                             if self.model_kwargs[k] is not None}
        for name in ("epochs", "batch_size", "base_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"ExpertConfig.{name} must be an integer, got {value!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.base_seed < 0:
            raise ValueError(f"ExpertConfig needs epochs >= 1, batch_size >= 1 and base_seed >= 0; got "
                             f"epochs={self.epochs}, batch_size={self.batch_size}, base_seed={self.base_seed}")
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"ExpertConfig.{name} must be a finite number, got {value!r}")
            setattr(self, name, float(value))
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ValueError(f"ExpertConfig needs lr > 0, momentum >= 0 and weight_decay >= 0; got "
                             f"lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}")
        self.zca, self.lr_decay, self.dsa = bool(self.zca), bool(self.lr_decay), bool(self.dsa)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExpertConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown ExpertConfig field(s) {', '.join(unknown)}; valid fields are "
                             f"{', '.join(sorted(names))}")
        return cls(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()})

    def replace(self, **changes: Any) -> ExpertConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, model_kwargs=dict(self.model_kwargs), **changes)

    def fingerprint(self) -> str:
        """A 10-character hash of every field (all of them change the trajectory)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]

    @classmethod
    def from_preset(cls, preset: Any, **changes: Any) -> ExpertConfig:
        """The experts a :class:`mttlib.presets.Preset` distils from (its dataset, model, zca and
        ``expert_train_epochs``; the paper's expert recipe otherwise); ``changes`` override fields."""
        base = dict(dataset=preset.dataset, zca=preset.zca, model=preset.model,
                    model_kwargs=dict(preset.model_kwargs), epochs=preset.expert_train_epochs)
        base.update(changes)
        return cls(**base)


def classroom_config(**changes: Any) -> ExpertConfig:
    """The experts of the classroom size, shared by the notebooks: the ``cifar10-mini`` classroom
    preset's model and epochs (train the preset's ``num_experts`` of them)."""
    from mttlib.presets import get_preset

    return ExpertConfig.from_preset(get_preset("cifar10-mini", 10, "classroom"), **changes)


def smoke_config(**changes: Any) -> ExpertConfig:
    """The experts of the smoke size (continuous integration): seconds, not meant to learn much."""
    from mttlib.presets import get_preset

    return ExpertConfig.from_preset(get_preset("cifar10-mini", 10, "smoke"), **changes)


def expert_seed(base_seed: int, index: int) -> int:
    """The seed of expert ``index``: a pure function of ``(base_seed, index)`` (63 bits)."""
    digest = hashlib.sha256(f"mttlib.experts:{int(base_seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _stream_seed(seed: int, stream: str) -> int:
    """Independent seeds for the separate random streams of one expert."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def expert_dir(runs_dir: str | Path | None, config: ExpertConfig) -> Path:
    """``runs_dir / "experts" / "<dataset>-<model>-<fingerprint>"`` (``runs_dir`` None: the kit's
    runs folder, see :func:`mttlib.io.runs_dir`)."""
    name = f"{config.dataset}-{config.model}-{config.fingerprint()}"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)  # 'folder:PATH' datasets hold slashes
    return _runs_dir(runs_dir) / "experts" / name


def expert_path(out_dir: str | Path, index: int) -> Path:
    """The file of expert ``index`` in ``out_dir``: ``expert_00003.pt``."""
    return Path(out_dir) / f"expert_{int(index):05d}.pt"


def list_experts(out_dir: str | Path) -> list[Path]:
    """The expert files in ``out_dir`` in index order (half-written temporary files excluded)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out_dir.iterdir() if (m := _FILE_RE.match(p.name))]
    return [p for _, p in sorted(found)]


# --------------------------------------------------------------------------- trajectories


@dataclass
class Trajectory:
    """One expert's parameters over training: ``traj[e]`` is the flat vector after ``e`` epochs.

    ``snapshots`` is float32 ``[E + 1, P]`` (row 0: the initialisation); ``meta`` is the file's
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
            raise IndexError(f"epoch {epoch} is outside this trajectory: it holds epochs 0..{self.epochs} "
                             f"({self.epochs} epochs of training plus the initialisation)")
        return self.snapshots[epoch]

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"Trajectory(index={self.index}, epochs={self.epochs}, numel={self.numel:,}{where})"

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
    def config(self) -> ExpertConfig:
        """The :class:`ExpertConfig` this expert was trained with."""
        return ExpertConfig.from_dict(self.meta["config"])

    @property
    def train_acc(self) -> list[float]:
        """Training accuracy of each epoch (augmented batches, measured during the epoch)."""
        return list(self.meta["train_acc"])

    @property
    def test_acc(self) -> list[float]:
        """Test accuracy after each epoch (no augmentation)."""
        return list(self.meta["test_acc"])

    def to(self, device: str | torch.device) -> Trajectory:
        """A copy with the snapshots on ``device``."""
        return Trajectory(self.snapshots.to(device), self.meta, self.path)

    def segment(self, start: int, length: int) -> tuple[Tensor, Tensor]:
        """``(traj[start], traj[start + length])``: where a student starts and what it must reach."""
        if length < 1 or start < 0 or start + length > self.epochs:
            raise IndexError(f"segment {start} -> {start + length} is outside this trajectory of "
                             f"{self.epochs} epochs: need 0 <= start and start + length <= {self.epochs}")
        return self.snapshots[start], self.snapshots[start + length]

    def check_model(self, model: nn.Module) -> None:
        """Raise ``ValueError`` unless ``model`` (or a ``FunctionalModel``) has this trajectory's size."""
        module = getattr(model, "module", model)
        if not isinstance(module, nn.Module):
            raise TypeError(f"check_model expects an nn.Module or a FunctionalModel, got {type(model).__name__}")
        numel = sum(p.numel() for p in module.parameters())
        if numel != self.numel:
            cfg = self.meta.get("config", {})
            raise ValueError(
                f"this trajectory has {self.numel:,} parameters per snapshot but the "
                f"{type(module).__name__} has {numel:,}: it was trained with model "
                f"{cfg.get('model')!r}, model_kwargs {cfg.get('model_kwargs')} on dataset "
                f"{cfg.get('dataset')!r}. Build the student with the same model, overrides and "
                f"dataset (channels, classes, image size), e.g. "
                f"make_model({cfg.get('model')!r}, channels, num_classes, image_size, **model_kwargs)."
            )

    @classmethod
    def load(cls, path: str | Path) -> Trajectory:
        """Same as :func:`load_trajectory`."""
        return load_trajectory(path)


def _not_an_expert(path: Path, what: str) -> CorruptFileError:
    return CorruptFileError(f"{path} is not a complete expert trajectory file ({what}). Delete it and "
                            "re-run the expert training: finished experts are kept, this one is retrained.")


def _validate(obj: Any, path: Path, check_snapshots: bool = True) -> None:
    if not isinstance(obj, dict) or "meta" not in obj or "snapshots" not in obj:
        raise _not_an_expert(path, "it has no 'snapshots' and 'meta' entries")
    meta = obj["meta"]
    if not isinstance(meta, dict) or meta.get("format") != "mttlib-expert":
        raise _not_an_expert(path, "its 'meta' is not an expert's metadata")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} has expert format version {version!r}, but this mttlib reads versions "
                         f"up to {FORMAT_VERSION}: update the kit, or re-train the experts with this one.")
    snaps = obj["snapshots"]
    epochs, numel = meta.get("epochs"), meta.get("numel")
    if (not isinstance(snaps, Tensor) or snaps.dtype != torch.float32 or snaps.dim() != 2
            or tuple(snaps.shape) != (epochs + 1, numel)):
        shape = tuple(snaps.shape) if isinstance(snaps, Tensor) else type(snaps).__name__
        raise _not_an_expert(path, f"snapshots {shape} do not match the {epochs} epochs and {numel} "
                                   "parameters its metadata states")
    if check_snapshots and not bool(torch.isfinite(snaps).all()):
        raise _not_an_expert(path, "its snapshots hold NaN or infinite values")


def load_trajectory(path: str | Path, device: str | torch.device = "cpu") -> Trajectory:
    """Load one expert file (``weights_only``); a bad file raises :class:`CorruptFileError`."""
    path = Path(path)
    obj = safe_load(path, map_location=device)
    _validate(obj, path)
    check_recipe(_zca_of(obj["meta"].get("dataset")), str(path))
    return Trajectory(obj["snapshots"], obj["meta"], path)


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of one expert file without reading its snapshots into memory (memory-mapped)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises several types for bad files
        raise _not_an_expert(path, f"it cannot be read: {type(exc).__name__}: {exc}") from exc
    _validate(obj, path, check_snapshots=False)
    return obj["meta"]


# --------------------------------------------------------------------------- folder consistency


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(obj))


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """``key (a vs b)`` for every key whose values differ."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if va != vb:
            out.append(f"{key} ({va!r} vs {vb!r})")
    return out


def _zca_of(dataset: Any) -> dict[str, Any] | None:
    """The ZCA part of a stored ``ImageData.describe()`` (None without one)."""
    return dataset.get("zca") if isinstance(dataset, dict) else None


def _folder_record(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / CONFIG_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        ExpertConfig.from_dict(record["config"])
    except Exception as exc:
        raise CorruptFileError(f"{path} cannot be read as an experts folder configuration ({exc}). "
                               "Delete it and re-run the expert training: it is written again.") from exc
    return record


def _check_folder(out_dir: Path, config: ExpertConfig, dataset: dict[str, Any] | None) -> None:
    """Raise unless ``out_dir``'s config.json (if any) agrees with ``config`` (and the data)."""
    record = _folder_record(out_dir)
    if record is None:
        return
    check_recipe(_zca_of(record.get("dataset")), f"the experts folder {out_dir}")
    differ = _diff(config.to_dict(), record["config"])
    if differ:
        raise ValueError(
            f"{out_dir} holds experts of another configuration; these settings differ (requested vs "
            f"{CONFIG_FILE}): {'; '.join(differ)}. Use a folder of its own for this configuration "
            f"(expert_dir(runs_dir, config) names one per configuration), or request the folder's."
        )
    if dataset is not None and record.get("dataset") is not None:
        differ = _diff(_jsonable(dataset), record["dataset"])
        if differ:
            raise ValueError(
                f"{out_dir} holds experts trained on different data (the data given vs {CONFIG_FILE}): "
                f"{'; '.join(differ)}. Load the dataset the same way (same name, zca, data root), or "
                f"train these experts into another folder."
            )


def _write_folder_record(out_dir: Path, config: ExpertConfig, dataset: dict[str, Any]) -> None:
    atomic_write_json({"format": "mttlib-experts", "format_version": FORMAT_VERSION,
                       "fingerprint": config.fingerprint(), "config": config.to_dict(),
                       "dataset": _jsonable(dataset)}, out_dir / CONFIG_FILE)


# --------------------------------------------------------------------------- training


def _resolve_device(device: str | torch.device | None, distributed: bool) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) if distributed else torch.cuda.current_device())
    return device


class _Distributed:
    """Rank and world size; initialises torch.distributed when torchrun asks for several processes."""

    def __init__(self, device: str | torch.device | None) -> None:
        import torch.distributed as dist

        self.dist, self.created = dist, False
        wanted = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if wanted and dist.is_available() and not dist.is_initialized():
            cuda = (device is None and torch.cuda.is_available()) or (
                device is not None and torch.device(device).type == "cuda")
            if cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            # ranks wait for each other only at the end; an uneven share may take long
            dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=48))
            self.created = True
        self.active = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1

    def barrier(self) -> None:
        if self.active and self.world > 1:
            self.dist.barrier()

    def close(self) -> None:
        if self.created:
            self.dist.destroy_process_group()


def _check_data(data: ImageData, config: ExpertConfig) -> None:
    name = str(getattr(data, "name", "")).lower()
    if name and name != config.dataset.lower():
        raise ValueError(f"the config asks for dataset {config.dataset!r} but the data given is {data.name!r}: "
                         f"load it with load_dataset({config.dataset!r}, zca={config.zca}), or set "
                         f"ExpertConfig(dataset={data.name!r}).")
    has_zca = getattr(data, "zca", None) is not None
    if has_zca != config.zca:
        raise ValueError(f"the config has zca={config.zca} but the data given is "
                         f"{'ZCA-whitened' if has_zca else 'not ZCA-whitened'}: load it with "
                         f"load_dataset({config.dataset!r}, zca={config.zca}), or set ExpertConfig(zca={has_zca}).")


@torch.no_grad()
def _evaluate(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``(x, y)``, in eval mode, no augmentation."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], _EVAL_BATCH):
        logits = model(x[i:i + _EVAL_BATCH])
        target = y[i:i + _EVAL_BATCH]
        correct += (logits.argmax(1) == target).sum()
        loss += F.cross_entropy(logits, target, reduction="sum").double()
    model.train(was_training)
    n = max(1, x.shape[0])
    return correct.item() / n, loss.item() / n


def _train_one(index: int, config: ExpertConfig, tensors: tuple[Tensor, Tensor, Tensor, Tensor],
               shape: tuple[int, int, int], dsa: Any, device: torch.device, dataset: dict[str, Any],
               bar: Any) -> dict[str, Any]:
    """Train expert ``index``; return the dict that is saved as its file."""
    from mttlib import __version__
    from mttlib.models import FunctionalModel, make_model

    x_train, y_train, x_test, y_test = tensors
    channels, num_classes, image_size = shape
    seed = expert_seed(config.base_seed, index)
    start = time.perf_counter()
    fork = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        # the global generator only feeds the initial weights (and dropout, if a model has it)
        torch.manual_seed(seed)
        model = make_model(config.model, channels, num_classes, image_size, **config.model_kwargs).to(device)
        model.train()
        flat = FunctionalModel(model)
        shuffle_gen = torch.Generator().manual_seed(_stream_seed(seed, "shuffle"))
        dsa_gen = torch.Generator().manual_seed(_stream_seed(seed, "dsa"))
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        snapshots = torch.empty(config.epochs + 1, flat.numel, dtype=torch.float32)
        snapshots[0] = flat.flatten().float().cpu()
        init_test_acc, _ = _evaluate(model, x_test, y_test)
        history: dict[str, list[float]] = {"train_acc": [], "train_loss": [], "test_acc": [], "test_loss": []}
        n = x_train.shape[0]
        for epoch in range(config.epochs):
            if config.lr_decay and epoch == config.epochs // 2 and epoch > 0:
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * 0.1
            if bar is not None:
                bar.set_description(f"expert {index} epoch {epoch + 1}/{config.epochs}")
            order = torch.randperm(n, generator=shuffle_gen).to(device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            for i in range(0, n, config.batch_size):
                idx = order[i:i + config.batch_size]
                xb, yb = x_train[idx], y_train[idx]
                if dsa is not None:
                    xb = dsa.apply(xb, dsa.sample(xb.shape[0], (xb.shape[2], xb.shape[3]), generator=dsa_gen))
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    correct += (logits.argmax(1) == yb).sum()
                    loss_sum += loss.detach().double() * yb.shape[0]
                if bar is not None:
                    bar.update(yb.shape[0])
            train_loss = loss_sum.item() / n
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"expert {index} diverged in epoch {epoch + 1} (training loss {train_loss}): lower the "
                    f"learning rate (now {config.lr}) or check the data's normalisation.")
            snapshots[epoch + 1] = flat.flatten().float().cpu()
            test_acc, test_loss = _evaluate(model, x_test, y_test)
            history["train_acc"].append(correct.item() / n)
            history["train_loss"].append(train_loss)
            history["test_acc"].append(test_acc)
            history["test_loss"].append(test_loss)
            if bar is not None:
                bar.set_postfix({"train acc": f"{correct.item() / n:.3f}", "test acc": f"{test_acc:.3f}"})
    meta = {
        "format": "mttlib-expert",
        "format_version": FORMAT_VERSION,
        "index": index,
        "seed": seed,
        "config": config.to_dict(),
        "fingerprint": config.fingerprint(),
        "model": config.model,
        "model_kwargs": dict(config.model_kwargs),
        "dataset": _jsonable(dataset),
        "dsa": None if dsa is None else {"strategy": dsa.strategy, "strengths": dict(dsa.config)},
        "numel": flat.numel,
        "epochs": config.epochs,
        **history,
        "init_test_acc": init_test_acc,
        "wall_time_s": time.perf_counter() - start,
        "device": str(device),
        "num_threads": torch.get_num_threads(),
        "versions": {"mttlib": __version__, "torch": str(torch.__version__), "python": platform.python_version()},
    }
    # plain JSON types only, so the file loads with weights_only=True
    return {"snapshots": snapshots, "meta": _jsonable(meta)}


def train_experts(data: ImageData, config: ExpertConfig, num_experts: int, out_dir: str | Path | None = None, *,
                  device: str | torch.device | None = None, progress: bool = True) -> list[Path]:
    """Train the experts ``0 .. num_experts - 1`` that ``out_dir`` does not hold yet.

    Args:
        data: an :class:`mttlib.data.ImageData` loaded as ``config`` says (same name and zca).
        config: the recipe (see :class:`ExpertConfig`).
        num_experts: how many experts the folder should hold when this returns.
        out_dir: the experts folder (None: ``expert_dir(runs_dir(), config)``).
        device: where to train (None: CUDA if available, else CPU).
        progress: show a tqdm bar (images/s and ETA); under torchrun only rank 0 shows one.

    Returns:
        The paths of all ``num_experts`` expert files, in index order.

    Finished experts are skipped; each new expert is written atomically as soon as it is done.
    Under torchrun (``WORLD_SIZE`` > 1) rank ``r`` of ``K`` trains the experts with ``k % K == r``
    and all ranks wait for each other before returning.
    """
    if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
        raise ValueError(f"num_experts must be a positive integer, got {num_experts!r}")
    _check_data(data, config)
    out_dir = Path(out_dir) if out_dir not in (None, "") else expert_dir(None, config)
    dataset = data.describe()
    ranks = _Distributed(device)
    try:
        device = _resolve_device(device, ranks.world > 1)
        _check_folder(out_dir, config, dataset)
        _write_folder_record(out_dir, config, dataset)
        todo = [k for k in range(num_experts) if k % ranks.world == ranks.rank and not expert_path(out_dir, k).exists()]
        if todo:
            _train_missing(data, config, todo, out_dir, dataset, device, progress and ranks.rank == 0)
        ranks.barrier()
    finally:
        ranks.close()
    paths = [expert_path(out_dir, k) for k in range(num_experts)]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise RuntimeError(f"expert training finished but {out_dir} lacks {', '.join(missing)}; "
                           "run the same command again to train them.")
    return paths


def _train_missing(data: ImageData, config: ExpertConfig, todo: list[int], out_dir: Path, dataset: dict[str, Any],
                   device: torch.device, progress: bool) -> None:
    from tqdm import tqdm

    from mttlib.augment import DSA

    x_train, y_train = data.train_tensors(device)
    x_test, y_test = data.test_tensors(device)
    tensors = (x_train, y_train.to(device), x_test, y_test.to(device))
    shape = (data.channels, data.num_classes, data.image_size)
    dsa = DSA(data.dsa_strategy) if config.dsa else None
    total = len(todo) * config.epochs * x_train.shape[0]
    bar = tqdm(total=total, unit="img", unit_scale=True, dynamic_ncols=True, file=sys.stderr) if progress else None
    try:
        for k in todo:
            path = expert_path(out_dir, k)
            for stale in out_dir.glob(f".{path.name}.*.tmp"):  # left by a killed run; this rank owns k
                stale.unlink(missing_ok=True)
            atomic_save(_train_one(k, config, tensors, shape, dsa, device, dataset, bar), path)
    finally:
        if bar is not None:
            bar.close()


# --------------------------------------------------------------------------- loading


def load_experts(out_dir: str | Path, config: ExpertConfig | None = None, *, num_experts: int | None = None,
                 device: str | torch.device = "cpu") -> list[Trajectory]:
    """Load the experts in ``out_dir`` as trajectories, in index order.

    Args:
        out_dir: the experts folder.
        config: if given, the folder's configuration must equal it.
        num_experts: load only experts ``0 .. num_experts - 1`` (all must be there); None: all.
        device: where the snapshots go.

    Raises:
        FileNotFoundError: no experts (or fewer than ``num_experts``).
        ValueError: the folder's experts were trained with differing configurations (or not
            with ``config``); the message names the differing settings.
        CorruptFileError: a truncated or corrupt file (named, with what to do).
    """
    out_dir = Path(out_dir)
    record = _folder_record(out_dir) if out_dir.is_dir() else None
    if config is not None and record is not None:
        _check_folder(out_dir, config, None)
    paths = list_experts(out_dir)
    if num_experts is not None:
        wanted = {expert_path(out_dir, k) for k in range(num_experts)}
        missing = sorted(p.name for p in wanted - set(paths))
        if missing:
            raise FileNotFoundError(
                f"{out_dir} lacks {len(missing)} of the {num_experts} experts requested ({', '.join(missing[:5])}"
                f"{', ...' if len(missing) > 5 else ''}). Train them with train_experts / ensure_experts or "
                f"`python -m mttlib experts --num-experts {num_experts} --out {out_dir}` (finished ones are kept).")
        paths = [p for p in paths if p in wanted]
    if not paths:
        raise FileNotFoundError(f"no expert files (expert_NNNNN.pt) in {out_dir}. Train them with train_experts / "
                                f"ensure_experts or `python -m mttlib experts --out {out_dir} ...`.")
    trajectories = [load_trajectory(p, device) for p in paths]
    reference_name = CONFIG_FILE if record else paths[0].name
    reference = record["config"] if record else trajectories[0].meta["config"]
    if config is not None:
        reference_name, reference = "the requested configuration", config.to_dict()
    ref_data = record.get("dataset") if record else trajectories[0].meta.get("dataset")
    for traj in trajectories:
        name = traj.path.name
        differ = _diff(traj.meta["config"], reference)
        if differ:
            raise ValueError(f"{out_dir} mixes experts of different configurations: {name} differs from "
                             f"{reference_name} in {'; '.join(differ)}. Keep one configuration per folder "
                             "(move the odd experts out, or delete them and re-run the training).")
        if ref_data is not None:
            differ = _diff(traj.meta.get("dataset") or {}, ref_data)
            if differ:
                raise ValueError(f"{out_dir} mixes experts trained on different data: {name} differs from "
                                 f"{reference_name} in {'; '.join(differ)}. Keep one dataset (and one ZCA) "
                                 "per folder.")
        index = int(_FILE_RE.match(name).group(1))
        if traj.meta.get("index") != index:
            raise ValueError(f"{traj.path} holds expert {traj.meta.get('index')} but is named as expert {index}: "
                             "expert files must keep the names they were written with.")
    return trajectories


def ensure_experts(data: ImageData, config: ExpertConfig, num_experts: int, out_dir: str | Path | None = None,
                   device: str | torch.device | None = None, progress: bool = True) -> list[Trajectory]:
    """Train the experts that are missing, then load experts ``0 .. num_experts - 1`` (on the CPU)."""
    out_dir = Path(out_dir) if out_dir not in (None, "") else expert_dir(None, config)
    train_experts(data, config, num_experts, out_dir, device=device, progress=progress)
    return load_experts(out_dir, config, num_experts=num_experts)


# --------------------------------------------------------------------------- sampling and geometry


def sample_segment(trajectories: Sequence[Trajectory], max_start_epoch: int, expert_epochs: int,
                   generator: torch.Generator | None = None) -> tuple[int, int]:
    """Draw ``(expert, start)``: a random expert and a start epoch in ``[0, max_start_epoch)``.

    The student starts at ``trajectories[expert][start]`` and targets
    ``trajectories[expert][start + expert_epochs]``; the draw uses ``generator`` (CPU).
    """
    if not trajectories:
        raise ValueError("sample_segment needs at least one trajectory")
    if max_start_epoch < 1 or expert_epochs < 1:
        raise ValueError(f"need max_start_epoch >= 1 and expert_epochs >= 1, got {max_start_epoch} and {expert_epochs}")
    shortest = min(t.epochs for t in trajectories)
    if max_start_epoch - 1 + expert_epochs > shortest:
        raise ValueError(f"max_start_epoch={max_start_epoch} with expert_epochs={expert_epochs} needs trajectories "
                         f"of at least {max_start_epoch - 1 + expert_epochs} epochs, but the experts have {shortest}: "
                         f"lower max_start_epoch or expert_epochs, or train longer experts.")
    expert = int(torch.randint(len(trajectories), (1,), generator=generator))
    start = int(torch.randint(max_start_epoch, (1,), generator=generator))
    return expert, start


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
    """Top ``dims`` principal directions ``[dims, P]`` of the rows of ``x`` (centred on their mean) and
    the fraction of the variance each explains; float64 via the small Gram matrix."""
    centred = x - x.mean(0, keepdim=True)
    evals, evecs = torch.linalg.eigh(centred @ centred.T)  # ascending
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    dims = min(dims, x.shape[0])
    directions = (evecs[:, :dims] / evals[:dims].sqrt().clamp_min(1e-300)).T @ centred
    return directions, evals[:dims] / evals.sum().clamp_min(1e-300)


def project_trajectories(trajectories: Sequence[Trajectory], dims: int = 2,
                         separate: bool = False) -> tuple[list[Tensor], Tensor]:
    """Project trajectories to ``dims`` dimensions with principal component analysis (float64).

    Returns one ``[E + 1, dims]`` tensor of coordinates per trajectory and the fraction of the
    variance each direction explains.

    * ``separate=False``: one projection for all, onto the top directions of all snapshots
      (centred on their mean); it shows where the experts are relative to each other. Signs are
      fixed so the last snapshot of the first trajectory has non-negative coordinates.
      ``explained`` is ``[dims]``.
    * ``separate=True``: each trajectory in its own plane, the top directions of its own
      snapshots, drawn from its start (row 0 is the origin); it shows the shape of each path.
      Signs are fixed so every last snapshot has non-negative coordinates. ``explained`` is
      ``[num_trajectories, dims]``.
    """
    if not trajectories:
        raise ValueError("project_trajectories needs at least one trajectory")
    if len({t.numel for t in trajectories}) != 1:
        raise ValueError("all trajectories must come from the same model to be projected together")
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
