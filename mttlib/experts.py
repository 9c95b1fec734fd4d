"""Experts: networks trained on real data with the paper's recipe (plain SGD, lr 0.01, batches of
256, DSA), saving their parameters every epoch (:class:`mttlib.trajectory.Trajectory`).

:func:`train_experts` trains what a folder lacks, :func:`load_experts` loads a folder,
:func:`ensure_experts` does both and :func:`expert_dir` names one folder per configuration. Expert
``k`` is seeded by :func:`expert_seed` ``(base_seed, k)`` (a re-run is bit for bit the same on the
CPU) and written atomically when done, so a killed run loses at most the expert in progress; under
``torchrun`` rank ``r`` of ``K`` trains the experts with ``k % K == r``. Taught in notebook
``01_expert_trajectories``.
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
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from mttlib import __version__
from mttlib.augment import DSA
from mttlib.data import EMBEDDED_DATASET, ImageData
from mttlib.io import CorruptFileError, atomic_save, atomic_write_json, runs_dir
from mttlib.models import FunctionalModel, make_model
from mttlib.presets import get_preset
from mttlib.train import accuracy, check_precision, derive_seed, pick_device, seeded, train
from mttlib.trajectory import FORMAT_VERSION, Trajectory, load_trajectory
from mttlib.zca import check_recipe

__all__ = ["ExpertConfig", "expert_seed", "expert_dir", "expert_path", "list_experts", "train_experts",
           "load_experts", "ensure_experts", "classroom_config", "smoke_config"]

CONFIG_FILE = "config.json"
_FILE_RE = re.compile(r"^expert_(\d{5,})\.pt$")


@dataclass
class ExpertConfig:
    """Everything that shapes an expert trajectory (not how many experts there are).

    ``dataset``/``zca`` name the data (:func:`mttlib.data.load_dataset`); ``model`` and
    ``model_kwargs`` the network (:func:`mttlib.models.make_model`); ``epochs`` E (a trajectory
    holds E + 1 snapshots); ``lr``, ``momentum``, ``weight_decay``, ``batch_size`` the SGD recipe
    (the paper: 0.01, 0, 0, 256); ``lr_decay`` multiplies the rate by 0.1 after ``epochs // 2``
    epochs; ``dsa`` augments every batch; expert ``k`` is seeded by ``expert_seed(base_seed, k)``;
    ``precision`` ``"bf16"`` runs the forward under autocast (:func:`mttlib.train.autocast`), ``compile``
    through ``torch.compile`` (:func:`mttlib.train.train`).
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
    precision: str = "fp32"
    compile: bool = False  # how to run, not what: never part of the record

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if not (self.dataset and self.model and isinstance(self.model_kwargs, dict)):
            raise ValueError(f"ExpertConfig needs a dataset and a model name and model_kwargs as a dict, got "
                             f"{self.dataset!r}, {self.model!r}, {self.model_kwargs!r}")
        # None means "the model's default": drop it so both spellings share a fingerprint
        self.model_kwargs = {k: v for k, v in sorted(self.model_kwargs.items()) if v is not None}
        for name, low in (("epochs", 1), ("batch_size", 1), ("base_seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ExpertConfig.{name} must be an integer >= {low}, got {value!r}")
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (name == "lr" and value == 0):
                raise ValueError(f"ExpertConfig.{name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, "
                                 f"got {value!r}")
            setattr(self, name, float(value))
        for name in ("zca", "lr_decay", "dsa", "compile"):
            setattr(self, name, bool(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field; ``precision`` only when it is not ``"fp32"``, so float32
        experts keep the record, fingerprint and folder they had before the field existed."""
        d = dataclasses.asdict(self)
        del d["compile"]
        if d["precision"] == "fp32":
            del d["precision"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExpertConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown ExpertConfig field(s) {', '.join(unknown)}")
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
        ``expert_train_epochs``; the paper's recipe otherwise); ``changes`` override fields."""
        base = dict(dataset=preset.dataset, zca=preset.zca, model=preset.model,
                    model_kwargs=dict(preset.model_kwargs), epochs=preset.expert_train_epochs)
        return cls(**{**base, **changes})


def classroom_config(dataset: str = EMBEDDED_DATASET, data: ImageData | None = None, **changes: Any) -> ExpertConfig:
    """The experts of the classroom size that the notebooks share: the classroom preset's of ``dataset``, or of
    ``data`` (a loaded dataset, needed for ``folder:PATH``) when given."""
    return ExpertConfig.from_preset(get_preset(data.name if data else dataset, 10, "classroom", data=data), **changes)


def smoke_config(dataset: str = EMBEDDED_DATASET, data: ImageData | None = None, **changes: Any) -> ExpertConfig:
    """The experts of the smoke size (continuous integration): seconds, not meant to learn much."""
    return ExpertConfig.from_preset(get_preset(data.name if data else dataset, 10, "smoke", data=data), **changes)


def expert_seed(base_seed: int, index: int) -> int:
    """The seed of expert ``index``: a pure function of ``(base_seed, index)``."""
    return derive_seed("mttlib.experts", int(base_seed), int(index))


def expert_dir(runs: str | Path | None, config: ExpertConfig) -> Path:
    """``<runs>/experts/<dataset>-<model>-<fingerprint>`` (``runs`` None: the kit's runs folder)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{config.dataset}-{config.model}-{config.fingerprint()}")
    return runs_dir(runs) / "experts" / name


def expert_path(out_dir: str | Path, index: int) -> Path:
    """The file of expert ``index`` in ``out_dir``: ``expert_00003.pt``."""
    return Path(out_dir) / f"expert_{int(index):05d}.pt"


def list_experts(out_dir: str | Path) -> list[Path]:
    """The expert files in ``out_dir`` in index order (half-written temporary files excluded)."""
    out_dir = Path(out_dir)
    found = [(int(m.group(1)), p) for p in out_dir.iterdir() if (m := _FILE_RE.match(p.name))] \
        if out_dir.is_dir() else []
    return [p for _, p in sorted(found)]


# --- folder consistency --------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:  # as it reads back from JSON (tuples become lists)
    return json.loads(json.dumps(obj))


def _diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    """``key (a vs b); ...`` for every key whose values differ ('' when none)."""
    return "; ".join(f"{k} ({a.get(k, '<missing>')!r} vs {b.get(k, '<missing>')!r})"
                     for k in sorted(set(a) | set(b)) if a.get(k, "<missing>") != b.get(k, "<missing>"))


def _zca_of(dataset: Any) -> dict[str, Any] | None:
    return dataset.get("zca") if isinstance(dataset, dict) else None


def _folder_record(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / CONFIG_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        ExpertConfig.from_dict(record["config"])
    except Exception as exc:
        raise CorruptFileError(f"{path} cannot be read as an experts folder configuration ({exc}). Delete it "
                               "and re-run the expert training: it is written again.") from exc
    return record


def _check_folder(out_dir: Path, config: ExpertConfig, dataset: dict[str, Any] | None) -> None:
    """Raise unless ``out_dir``'s config.json (if any) agrees with ``config`` (and the data)."""
    record = _folder_record(out_dir)
    if record is None:
        return
    check_recipe(_zca_of(record.get("dataset")), f"the experts folder {out_dir}")
    differ = _diff(config.to_dict(), record["config"])
    if differ:
        raise ValueError(f"{out_dir} holds experts of another configuration; these settings differ (requested "
                         f"vs {CONFIG_FILE}): {differ}. Use a folder of its own for this configuration "
                         "(expert_dir(runs, config) names one per configuration), or request the folder's.")
    differ = _diff(_jsonable(dataset), record["dataset"]) if dataset and record.get("dataset") else ""
    if differ:
        raise ValueError(f"{out_dir} holds experts trained on different data (the data given vs {CONFIG_FILE}): "
                         f"{differ}. Load the dataset the same way (same name, zca, data root), or train these "
                         "experts into another folder.")


# --- training ------------------------------------------------------------------------------------


class _Ranks:
    """Rank and world size; starts torch.distributed when torchrun asks for several processes."""

    def __init__(self, device: str | torch.device | None) -> None:
        self.created = False
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = pick_device(device)
        if world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        if world > 1 and dist.is_available() and not dist.is_initialized():
            # ranks wait for each other only at the end; an uneven share may take long
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo", timeout=timedelta(hours=48))
            self.created = True
        active = dist.is_available() and dist.is_initialized()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if active else (0, 1)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.created:
            dist.destroy_process_group()


def _train_one(index: int, config: ExpertConfig, data: ImageData, device: torch.device, dataset: dict[str, Any],
               bar: tqdm | None) -> dict[str, Any]:
    """Train expert ``index``; return the dict that is saved as its file."""
    x, y = data.train_tensors(device)
    x_test, y_test = data.test_tensors(device)
    seed = expert_seed(config.base_seed, index)
    dsa = DSA(data.dsa_strategy) if config.dsa else None
    start = time.perf_counter()
    with seeded(seed, device):  # the global generator feeds the initial weights only
        model = make_model(config.model, data.channels, data.num_classes, data.image_size,
                           **config.model_kwargs).to(device)
        flat = FunctionalModel(model)
        snapshots = torch.empty(config.epochs + 1, flat.numel, dtype=torch.float32)
        snapshots[0] = flat.flatten().float().cpu()
        init_test_acc, _ = accuracy(model, x_test, y_test)
        tests: list[tuple[float, float]] = []

        def after_epoch(epoch: int, net: nn.Module, _: Any) -> None:
            snapshots[epoch + 1] = flat.flatten().float().cpu()
            tests.append(accuracy(net, x_test, y_test))
            if bar is not None:
                bar.set_description(f"expert {index} epoch {min(epoch + 2, config.epochs)}/{config.epochs}")
                bar.set_postfix({"test acc": f"{tests[-1][0]:.3f}"})

        if bar is not None:
            bar.set_description(f"expert {index} epoch 1/{config.epochs}")
        history = train(model, x, y.to(device), epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
                        momentum=config.momentum, weight_decay=config.weight_decay, lr_decay=config.lr_decay,
                        dsa=dsa, shuffle=torch.Generator().manual_seed(derive_seed(seed, "shuffle")),
                        augment=torch.Generator().manual_seed(derive_seed(seed, "dsa")),
                        on_epoch_end=after_epoch, on_batch=None if bar is None else bar.update,
                        precision=config.precision, compile=config.compile)
    if history.diverged:
        raise FloatingPointError(f"expert {index} diverged in epoch {len(history.train_loss)} (training loss "
                                 f"{history.train_loss[-1]}): lower the learning rate (now {config.lr}) or check "
                                 "the data's normalisation.")
    meta = {"format": "mttlib-expert", "format_version": FORMAT_VERSION, "index": index, "seed": seed,
            "config": config.to_dict(), "fingerprint": config.fingerprint(), "model": config.model,
            "model_kwargs": dict(config.model_kwargs), "dataset": dataset,
            "dsa": None if dsa is None else {"strategy": dsa.strategy, "strengths": dict(dsa.config)},
            "numel": flat.numel, "epochs": config.epochs, "train_acc": history.train_acc,
            "train_loss": history.train_loss, "test_acc": [a for a, _ in tests], "test_loss": [l for _, l in tests],
            "init_test_acc": init_test_acc, "wall_time_s": time.perf_counter() - start, "device": str(device),
            "num_threads": torch.get_num_threads(),
            "versions": {"mttlib": __version__, "torch": str(torch.__version__), "python": platform.python_version()}}
    return {"snapshots": snapshots, "meta": _jsonable(meta)}  # plain values: loads with weights_only=True


def train_experts(data: ImageData, config: ExpertConfig, num_experts: int, out_dir: str | Path | None = None, *,
                  device: str | torch.device | None = "auto", progress: bool = True) -> list[Path]:
    """Train the experts ``0 .. num_experts - 1`` that ``out_dir`` does not hold yet; return all their paths.

    ``data`` must be loaded as ``config`` says (same name and zca); ``out_dir`` None means
    ``expert_dir(None, config)``; ``device="auto"`` picks CUDA, then MPS, then the CPU.
    Under torchrun, rank ``r`` of ``K`` trains the experts with ``k % K == r``.
    """
    if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
        raise ValueError(f"num_experts must be a positive integer, got {num_experts!r}")
    if data.name.lower() != config.dataset.lower() or (data.zca is not None) != config.zca:
        raise ValueError(f"the config asks for dataset {config.dataset!r} with zca={config.zca} but the data given "
                         f"is {data.name!r} {'with' if data.zca is not None else 'without'} ZCA: load it with "
                         f"load_dataset({config.dataset!r}, zca={config.zca}), or change the ExpertConfig.")
    out_dir = Path(out_dir) if out_dir not in (None, "") else expert_dir(None, config)
    dataset = _jsonable(data.describe())
    ranks = _Ranks(device)
    try:
        _check_folder(out_dir, config, dataset)
        atomic_write_json({"format": "mttlib-experts", "format_version": FORMAT_VERSION,
                           "fingerprint": config.fingerprint(), "config": config.to_dict(), "dataset": dataset},
                          out_dir / CONFIG_FILE)
        todo = [k for k in range(num_experts) if k % ranks.world == ranks.rank and not expert_path(out_dir, k).exists()]
        total = len(todo) * config.epochs * len(data.train_images)
        bar = tqdm(total=total, unit="img", unit_scale=True, dynamic_ncols=True, file=sys.stderr) \
            if progress and todo and ranks.rank == 0 else None
        try:
            for k in todo:
                path = expert_path(out_dir, k)
                for stale in out_dir.glob(f".{path.name}.*.tmp"):  # left by a killed run; this rank owns k
                    stale.unlink(missing_ok=True)
                atomic_save(_train_one(k, config, data, ranks.device, dataset, bar), path)
        finally:
            if bar is not None:
                bar.close()
        ranks.barrier()
    finally:
        ranks.close()
    return [expert_path(out_dir, k) for k in range(num_experts)]


def load_experts(out_dir: str | Path, config: ExpertConfig | None = None, *, num_experts: int | None = None,
                 device: str | torch.device = "cpu") -> list[Trajectory]:
    """Load the experts in ``out_dir`` (or only ``0 .. num_experts - 1``) as trajectories, in index order.

    With ``config`` the folder's configuration must equal it. Raises ``FileNotFoundError`` (no or
    too few experts), ``ValueError`` (mixed configurations or data, named) or
    :class:`CorruptFileError` (a truncated or corrupt file, named, with what to do).
    """
    out_dir = Path(out_dir)
    record = _folder_record(out_dir) if out_dir.is_dir() else None
    if config is not None:
        _check_folder(out_dir, config, None)
    paths = list_experts(out_dir)
    hint = f"Train them with ensure_experts or `python -m mttlib experts --out {out_dir} ...` (finished ones are kept)."
    if num_experts is not None:
        missing = [expert_path(out_dir, k).name for k in range(num_experts) if expert_path(out_dir, k) not in paths]
        if missing:
            raise FileNotFoundError(f"{out_dir} lacks {len(missing)} of the {num_experts} experts requested "
                                    f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}). {hint}")
        paths = paths[:num_experts]
    if not paths:
        raise FileNotFoundError(f"no expert files (expert_NNNNN.pt) in {out_dir}. {hint}")
    trajectories = [load_trajectory(p, device) for p in paths]
    name, reference = (CONFIG_FILE, record["config"]) if record else (paths[0].name, trajectories[0].meta["config"])
    if config is not None:
        name, reference = "the requested configuration", config.to_dict()
    ref_data = record.get("dataset") if record else trajectories[0].meta.get("dataset")
    for traj in trajectories:
        differ = _diff(traj.meta["config"], reference) or (ref_data and _diff(traj.meta.get("dataset") or {}, ref_data))
        if differ:
            raise ValueError(f"{out_dir} mixes experts of different configurations or data: {traj.path.name} "
                             f"differs from {name} in {differ}. Keep one configuration (and one dataset) per "
                             "folder: move the odd experts out, or delete them and re-run the training.")
        if traj.meta.get("index") != int(_FILE_RE.match(traj.path.name).group(1)):
            raise ValueError(f"{traj.path} holds expert {traj.meta.get('index')}: expert files must keep the "
                             "names they were written with.")
    return trajectories


def ensure_experts(data: ImageData, config: ExpertConfig, num_experts: int, out_dir: str | Path | None = None,
                   device: str | torch.device | None = "auto", progress: bool = True) -> list[Trajectory]:
    """Train the experts that are missing, then load experts ``0 .. num_experts - 1`` (on the CPU)."""
    out_dir = Path(out_dir) if out_dir not in (None, "") else expert_dir(None, config)
    train_experts(data, config, num_experts, out_dir, device=device, progress=progress)
    return load_experts(out_dir, config, num_experts=num_experts)
