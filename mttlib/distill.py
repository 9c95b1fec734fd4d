"""The distillation loop of MTT: configuration, initialisation, the expert sampler, the loop,
and the run folder that survives being killed.

Each iteration draws an expert and a start epoch (:class:`ExpertSampler`), takes the matching
loss's meta-gradient (:func:`mttlib.matching.meta_gradient`) and updates the pixels and the
learnable step size ``syn_lr`` by SGD with momentum 0.5. ``strategy="auto"`` (the default) takes
``unroll`` when its estimated memory fits in a quarter of the device's memory, else ``recompute``
(:mod:`mttlib.memory`); both give the same gradients.

:func:`distill` writes a run folder: ``config.json``, ``checkpoint.pt`` (everything needed to
continue bit for bit), ``distilled.pt``, ``metrics.jsonl`` and ``snapshots/`` for an animation
(:func:`mttlib.viz.distillation_gif`).

Follow-ups beyond the paper -- TESLA's and DATM's soft labels, DATM's difficulty-aligned start
epochs and FTD's moving average of the images -- are options of :class:`DistillConfig`, all off
by default; :mod:`mttlib.followups` explains them. Taught in notebook ``02_trajectory_matching``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mttlib import followups
from mttlib.augment import DSA
from mttlib.io import CorruptFileError, atomic_save, atomic_write_json, atomic_write_text, safe_load
from mttlib.matching import STRATEGIES, BatchSource, ImageBatchSource, meta_gradient
from mttlib.memory import choose_strategy
from mttlib.models import FunctionalModel, make_model
from mttlib.zca import RECIPE as ZCA_RECIPE

if TYPE_CHECKING:  # type hints only: the loop needs nothing from these modules at import time
    from mttlib.data import ImageData
    from mttlib.experts import Trajectory
    from mttlib.presets import Preset

__all__ = ["INITS", "DistillConfig", "class_major_labels", "init_synthetic", "ExpertSampler", "Draw", "Distiller",
           "DistillResult", "DistillationDiverged", "distill", "load_distilled", "load_snapshots"]

INITS = ("real", "noise", "real-correct")
CHECKPOINT_FORMAT = "mttlib.distill.checkpoint/1"
DISTILLED_FORMAT = "mttlib.distill.distilled/1"


# --- configuration -----------------------------------------------------------------------------


@dataclass
class DistillConfig:
    """Everything that defines a distillation run (see :mod:`mttlib.presets` for the values).

    ``batch_syn=None`` uses every synthetic image in every student step. ``dsa_strategy=None``
    takes the dataset's (no flips for digits). ``strategy="auto"`` picks ``unroll`` (faster) when
    its estimated memory fits in a quarter of the device's memory, else ``recompute`` (see
    :func:`choose_strategy`); both give the same gradients. ``checkpoint_every`` and ``snapshot_every`` are in
    iterations; the last iteration always writes both.

    Follow-ups (:mod:`mttlib.followups`; the defaults are the paper's plain MTT):
    ``soft_labels`` ``"none"``, ``"fixed"`` (TESLA: the expert ``label_expert``'s softmax at snapshot
    ``label_epoch``, default ``max_start_epoch``) or ``"learn"`` (DATM: learned logits, SGD with
    momentum 0.9 at ``lr_label``); ``min_start_epoch``, ``max_start_epoch_end`` and
    ``start_epoch_rise`` (DATM: start epochs from ``[min_start_epoch, upper)``, ``upper`` rising
    from ``max_start_epoch`` to ``max_start_epoch_end`` over ``start_epoch_rise`` iterations);
    ``init="real-correct"`` (DATM: real images that expert ``label_expert`` at ``label_epoch``
    classifies correctly); ``ema_decay`` (FTD: a moving average of the images, ``None`` for none).
    """

    dataset: str
    ipc: int
    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    zca: bool = False
    syn_steps: int = 20
    expert_epochs: int = 2
    max_start_epoch: int = 20
    batch_syn: int | None = None
    lr_img: float = 1000.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    iterations: int = 5000
    init: str = "real"
    strategy: str = "auto"
    dsa: bool = True
    dsa_strategy: str | None = None
    seed: int = 0
    checkpoint_every: int = 100
    snapshot_every: int = 100
    preset: str = ""
    # follow-ups beyond the paper (mttlib.followups); the defaults are plain MTT
    soft_labels: str = "none"
    lr_label: float = 2.0
    label_epoch: int | None = None
    label_expert: int = 0
    min_start_epoch: int = 0
    max_start_epoch_end: int | None = None
    start_epoch_rise: int = 0
    ema_decay: float | None = None

    # fields that may change when a run is resumed (they do not change what was computed so far)
    TUNABLE = ("iterations", "lr_img", "lr_lr", "lr_label", "strategy", "checkpoint_every", "snapshot_every",
               "preset")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value cannot work."""
        def positive(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

        for name in ("ipc", "syn_steps", "expert_epochs", "max_start_epoch", "iterations",
                     "checkpoint_every", "snapshot_every"):
            positive(name)
        if self.batch_syn is not None:
            positive("batch_syn")
        for name in ("lr_img", "lr_lr", "lr_teacher"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}, got {self.init!r}")
        if self.strategy not in STRATEGIES + ("auto",):
            raise ValueError(f"strategy must be 'auto' or one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        followups.validate_config(self)

    def epochs_needed(self) -> int:
        """Epochs every expert trajectory must have: the latest start epoch plus ``expert_epochs``."""
        return (self.max_start_epoch_end or self.max_start_epoch) - 1 + self.expert_epochs

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise a ``ValueError``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown DistillConfig field(s) {unknown}; valid fields: {sorted(names)}")
        return cls(**d)

    @classmethod
    def from_preset(cls, preset: Preset, **overrides: Any) -> DistillConfig:
        """The run configuration of a :class:`mttlib.presets.Preset`, with ``overrides`` applied."""
        d = dict(dataset=preset.dataset, ipc=preset.ipc, model=preset.model,
                 model_kwargs=dict(preset.model_kwargs), zca=preset.zca, syn_steps=preset.syn_steps,
                 expert_epochs=preset.expert_epochs, max_start_epoch=preset.max_start_epoch,
                 batch_syn=preset.batch_syn, lr_img=preset.lr_img, lr_lr=preset.lr_lr,
                 lr_teacher=preset.lr_teacher, iterations=preset.iterations, init=preset.init,
                 checkpoint_every=preset.checkpoint_every, snapshot_every=preset.checkpoint_every,
                 preset=preset.name)
        d.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> DistillConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# --- initialisation ----------------------------------------------------------------------------


def class_major_labels(num_classes: int, ipc: int, device: str | torch.device | None = None) -> Tensor:
    """``[0]*ipc + [1]*ipc + ...``: the labels of a synthetic set, class by class."""
    return torch.arange(num_classes, device=device).repeat_interleave(ipc)


def init_synthetic(data: ImageData, ipc: int, init: str = "real", generator: torch.Generator | None = None,
                   device: str | torch.device | None = None, eligible: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Starting synthetic images and labels ``(images, labels)``, class-major.

    ``init="real"`` picks ``ipc`` distinct random training images of each class (preprocessed:
    normalised, or ZCA-whitened when the data has ZCA); ``init="noise"`` draws a standard normal
    in that same preprocessed space. ``eligible`` (boolean ``[N]`` over the training images)
    restricts the real picks to those images; a class with fewer than ``ipc`` eligible images
    picks from all of its images (``init="real-correct"`` passes the images an expert classifies
    correctly).
    """
    labels = class_major_labels(data.num_classes, ipc)
    shape = (data.num_classes * ipc, data.channels, data.image_size, data.image_size)
    if init == "noise":
        images = torch.randn(shape, generator=generator)
    elif init in ("real", "real-correct"):
        picks = []
        train_labels = data.train_labels.cpu()
        for c in range(data.num_classes):
            pool = (train_labels == c).nonzero().flatten()
            if eligible is not None:
                if int(eligible[pool].sum()) >= ipc:
                    pool = pool[eligible[pool]]
                else:
                    warnings.warn(f"class {c}: fewer than ipc={ipc} eligible (correctly classified) training "
                                  f"images; it starts from any of its images", RuntimeWarning, stacklevel=2)
            if len(pool) < ipc:
                name = data.classes[c] if c < len(data.classes) else c
                raise ValueError(f"class {name!r} has only {len(pool)} training images but ipc={ipc}; "
                                 f"use a smaller ipc or init='noise'")
            picks.append(pool[torch.randperm(len(pool), generator=generator)[:ipc]])
        images = data.preprocess(data.train_images[torch.cat(picks)]).float().cpu()
    else:
        raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}, got {init!r}")
    return images.to(device), labels.to(device)


# --- the loop ----------------------------------------------------------------------------------


class DistillationDiverged(RuntimeError):
    """The run produced a non-finite loss or gradient, or a step size ``syn_lr <= 0``."""


class ExpertSampler:
    """Draws ``(expert, start epoch)`` uniformly, from its own seeded generator (checkpointed)."""

    def __init__(self, num_experts: int, max_start_epoch: int, seed: int) -> None:
        if num_experts < 1 or max_start_epoch < 1:
            raise ValueError(f"need at least one expert and max_start_epoch >= 1, got {num_experts} and "
                             f"{max_start_epoch}")
        self.num_experts, self.max_start_epoch = int(num_experts), int(max_start_epoch)
        self.generator = torch.Generator().manual_seed(int(seed))

    def sample(self, low: int = 0, high: int | None = None) -> tuple[int, int]:
        """The next ``(expert index, start epoch)``, the start epoch from ``[low, high)`` (default
        ``[0, max_start_epoch)``; a start-epoch schedule passes its current window)."""
        high = self.max_start_epoch if high is None else int(high)
        if not 0 <= low < high:
            raise ValueError(f"need 0 <= low < high for the start epochs, got [{low}, {high})")
        expert = int(torch.randint(self.num_experts, (1,), generator=self.generator))
        start = int(low) + int(torch.randint(high - int(low), (1,), generator=self.generator))
        return expert, start

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same sequence of draws."""
        return {"num_experts": self.num_experts, "max_start_epoch": self.max_start_epoch,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the counts must match)."""
        if (state["num_experts"], state["max_start_epoch"]) != (self.num_experts, self.max_start_epoch):
            raise ValueError(f"the checkpoint sampled from {state['num_experts']} experts with max_start_epoch "
                             f"{state['max_start_epoch']}, this run has {self.num_experts} and "
                             f"{self.max_start_epoch}; resume with the same experts")
        self.generator.set_state(state["generator"])


def _seeds(seed: int) -> tuple[int, int, int]:
    """Independent seeds for initialisation, the loop's plans and the expert sampler."""
    g = torch.Generator().manual_seed(int(seed))
    return tuple(int(s) for s in torch.randint(2**62, (3,), generator=g))  # type: ignore[return-value]


@dataclass
class Draw:
    """The randomness of one iteration: which expert, which start epoch, the student's plans."""

    expert: int
    start_epoch: int
    plans: list[dict[str, Any]]
    start_upper: int  # the start epoch was drawn below this bound (it rises with DATM's schedule)


class Distiller:
    """The distillation state and one iteration at a time (:meth:`step`); no files.

    ``source`` and ``init`` let other modes reuse the loop: texture mode passes its own batch
    source and starting canvases ``(images, labels)``; by default the synthetic set is
    ``config.ipc`` images per class from :func:`init_synthetic` and batches come from
    :class:`ImageBatchSource` with the dataset's DSA.
    """

    def __init__(self, config: DistillConfig, experts: Sequence[Trajectory], data: ImageData, *,
                 device: str | torch.device | None = None, source: BatchSource | None = None,
                 init: tuple[Tensor, Tensor] | None = None, dtype: torch.dtype = torch.float32) -> None:
        config.validate()
        self.config = config
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        if not experts:
            raise ValueError("no expert trajectories given: train them first (mttlib.experts.ensure_experts "
                             "or `python -m mttlib experts`)")
        self.experts = list(experts)
        shortest = min(t.epochs for t in self.experts)
        need = config.epochs_needed()
        if need > shortest:
            name = "max_start_epoch" if config.max_start_epoch_end is None else "max_start_epoch_end"
            highest = config.max_start_epoch_end or config.max_start_epoch
            raise ValueError(f"{name}={highest} with expert_epochs={config.expert_epochs} "
                             f"needs trajectories of at least {need} epochs, but the shortest expert has "
                             f"{shortest}: lower {name} or expert_epochs, or train longer experts")
        meta_cfg = self.experts[0].meta.get("config", {}) if isinstance(self.experts[0].meta, dict) else {}
        if "zca" in meta_cfg and bool(meta_cfg["zca"]) != bool(config.zca):
            raise ValueError(f"the experts were trained with zca={meta_cfg['zca']} but this run has "
                             f"zca={config.zca}: the synthetic images must live in the experts' space. "
                             f"Use experts trained with zca={config.zca} or set zca={meta_cfg['zca']}")
        if bool(config.zca) != (getattr(data, "zca", None) is not None):
            raise ValueError(f"config.zca={config.zca} but the data {'has' if data.zca is not None else 'has no'} "
                             f"ZCA: load it with load_dataset(name, zca={config.zca})")
        model = make_model(config.model, data.channels, data.num_classes, data.image_size, **config.model_kwargs)
        model = model.to(self.device)
        for traj in self.experts:
            traj.check_model(model)
        self.fm = FunctionalModel(model)

        init_seed, loop_seed, sampler_seed = _seeds(config.seed)
        label_epoch = config.max_start_epoch if config.label_epoch is None else config.label_epoch
        uses_expert = config.soft_labels != "none" or config.init == "real-correct"
        if uses_expert and (config.label_expert >= len(self.experts) or label_epoch > shortest):
            raise ValueError(f"label_expert={config.label_expert} / label_epoch={label_epoch} name no snapshot: "
                             f"there are {len(self.experts)} experts of at least {shortest} epochs")
        if init is None:
            eligible = None
            if config.init == "real-correct":
                eligible = followups.correctly_classified(self.fm, self.experts[config.label_expert][label_epoch], data,
                                                device=self.device)
            images, labels = init_synthetic(data, config.ipc, config.init,
                                            torch.Generator().manual_seed(init_seed), eligible=eligible)
        else:
            if config.soft_labels != "none" or config.init == "real-correct":
                raise ValueError(f"soft_labels={config.soft_labels!r} and init={config.init!r}: soft labels and "
                                 f"the real-correct init need ordinary synthetic images (experts' outputs on "
                                 f"them); they are not available with given starting images (texture mode)")
            images, labels = init
        self.images = images.detach().to(self.device, dtype).clone().requires_grad_(True)
        self.labels = labels.detach().to(self.device, torch.long).clone()
        self.label_logits: Tensor | None = None  # soft labels (followups): TESLA's fixed or DATM's learned
        self.opt_label: torch.optim.Optimizer | None = None
        if config.soft_labels != "none":
            if tuple(self.images.shape[-2:]) != (data.image_size, data.image_size):
                raise ValueError("soft labels need synthetic images of the experts' input size")
            self.label_logits = followups.initial_label_logits(config, self.fm, self.experts, self.images, self.labels)
            if config.soft_labels == "learn":
                self.label_logits.requires_grad_(True)
                self.opt_label = torch.optim.SGD([self.label_logits], lr=config.lr_label, momentum=0.9)
        self.images_ema = self.images.detach().clone() if config.ema_decay is not None else None
        if source is None:
            dsa = (DSA(config.dsa_strategy or data.dsa_strategy) if config.dsa else None)
            source = ImageBatchSource(self.images.shape[0], tuple(self.images.shape[-2:]), config.batch_syn, dsa)
        self.source = source
        self.strategy = config.strategy
        if self.strategy == "auto":
            batch = min(config.batch_syn or self.images.shape[0], self.images.shape[0])
            self.strategy = choose_strategy(model, batch, (data.channels, data.image_size, data.image_size),
                                            config.syn_steps, self.device)
        self.syn_lr = torch.tensor(float(config.lr_teacher), device=self.device, dtype=dtype, requires_grad=True)
        self.opt_img = torch.optim.SGD([self.images], lr=config.lr_img, momentum=0.5)
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=config.lr_lr, momentum=0.5)
        self.generator = torch.Generator().manual_seed(loop_seed)
        self.sampler = ExpertSampler(len(self.experts), config.max_start_epoch, sampler_seed)
        self.iteration = 0
        self.metrics: list[dict[str, Any]] = []
        self.last_jump = 0.0  # relative size of the last pixel update, for diagnosing divergence

    def _likely_cause(self) -> str:
        lr_img, lr_lr = f"lr_img={self.config.lr_img:g}", f"lr_lr={self.config.lr_lr:g}"
        if self.last_jump > 0.5:
            jump = f"{100 * self.last_jump:.0f}%" if math.isfinite(self.last_jump) else "more than float32 holds"
            return (f"Most likely {lr_img} is too high for this preset (try 10x lower): the last update "
                    f"changed the pixels by {jump} of their norm. If lowering it does not "
                    f"help, lower {lr_lr} (the step size's learning rate).")
        return (f"Most likely {lr_lr} (the step size's learning rate) is too high (try 10x lower), or "
                f"{lr_img} is too high for this preset.")

    def draw(self) -> Draw:
        """The randomness of the next iteration (advances the sampler and the loop generator)."""
        low, high = followups.start_epoch_bounds(self.config, self.iteration)
        expert, start = self.sampler.sample(low, high)
        return Draw(expert, start, self.source.plans(self.config.syn_steps, self.generator), high)

    def segment(self, draw: Draw) -> tuple[Tensor, Tensor]:
        """``(start, target)`` parameters of a draw, on the run's device and dtype."""
        traj = self.experts[draw.expert]
        start = traj[draw.start_epoch].to(self.device, self.dtype)
        target = traj[draw.start_epoch + self.config.expert_epochs].to(self.device, self.dtype)
        return start, target

    def step(self) -> dict[str, Any]:
        """One iteration: draw, meta-gradient, SGD update of pixels and ``syn_lr``; returns its metrics.

        Raises :class:`DistillationDiverged` (and leaves the state as it was before the update
        when the loss or a gradient is not finite).
        """
        began = time.perf_counter()
        draw = self.draw()
        start, target = self.segment(draw)
        labels = self.labels if self.label_logits is None else self.label_logits
        loss, grad_images, grad_lr, *grad_labels = meta_gradient(self.fm, start, target, self.images, labels,
                                                                 self.syn_lr, draw.plans, self.source, self.strategy)
        lr_used = float(self.syn_lr.detach())
        if not (torch.isfinite(loss) and all(torch.isfinite(g).all() for g in (grad_lr, grad_images, *grad_labels))):
            what = "loss" if not torch.isfinite(loss) else "gradient"
            raise DistillationDiverged(
                f"the matching {what} is not finite at iteration {self.iteration} (loss {float(loss):.4g}, "
                f"syn_lr {lr_used:.4g}). {self._likely_cause()}")
        before = self.images.detach().clone()
        self.images.grad = grad_images
        self.syn_lr.grad = grad_lr.reshape(())
        self.opt_img.step()
        self.opt_lr.step()
        self.images.grad = self.syn_lr.grad = None
        if self.opt_label is not None:  # DATM: the label logits learn too
            self.label_logits.grad = grad_labels[0]
            self.opt_label.step()
            self.label_logits.grad = None
        if self.images_ema is not None:  # FTD: moving average of the images
            followups.ema_update(self.images_ema, self.images, self.config.ema_decay)
        with torch.no_grad():
            self.last_jump = float((self.images - before).norm() / before.norm().clamp_min(1e-12))
        if self.opt_label is not None and not torch.isfinite(self.label_logits).all():
            raise DistillationDiverged(
                f"the soft-label logits became non-finite at iteration {self.iteration}: lr_label="
                f"{self.config.lr_label:g} is too high (try 10x lower).")
        if not torch.isfinite(self.images).all():
            raise DistillationDiverged(
                f"the synthetic pixels became non-finite at iteration {self.iteration}: lr_img="
                f"{self.config.lr_img:g} is too high for this preset (try 10x lower).")
        if not float(self.syn_lr.detach()) > 0:
            raise DistillationDiverged(
                f"the learned step size syn_lr became {float(self.syn_lr.detach()):.4g} (<= 0) at iteration "
                f"{self.iteration}: a student cannot train with it. {self._likely_cause()}")
        record = {"iteration": self.iteration, "loss": float(loss), "syn_lr": lr_used,
                  "start_epoch": draw.start_epoch, "expert": draw.expert,
                  "seconds": time.perf_counter() - began}
        if self.config.max_start_epoch_end is not None:
            record["start_upper"] = draw.start_upper
        self.iteration += 1
        self.metrics.append(record)
        return record

    # --- state ---

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit for bit (tensors on the CPU, plain values)."""
        cuda = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda = torch.cuda.get_rng_state_all()
        return {
            "format": CHECKPOINT_FORMAT,
            "iteration": self.iteration,
            "images": self.images.detach().cpu().clone(),
            "labels": self.labels.cpu().clone(),
            "syn_lr": self.syn_lr.detach().cpu().clone(),
            "opt_img": _to_cpu(self.opt_img.state_dict()),
            "opt_lr": _to_cpu(self.opt_lr.state_dict()),
            "rng": {"cpu": torch.get_rng_state(), "cuda": cuda, "loop": self.generator.get_state()},
            "sampler": self.sampler.state_dict(),
            "metrics": [dict(m) for m in self.metrics],
            "config": self.config.to_dict(),
            **self._followup_state(),
        }

    def _followup_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}  # nothing when the follow-ups are off: the checkpoint stays as it was
        if self.label_logits is not None:
            out["label_logits"] = self.label_logits.detach().cpu().clone()
        if self.opt_label is not None:
            out["opt_label"] = _to_cpu(self.opt_label.state_dict())
        if self.images_ema is not None:
            out["images_ema"] = self.images_ema.detach().cpu().clone()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; the learning rates of ``self.config`` win."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CorruptFileError(f"not a distillation checkpoint (format {state.get('format')!r}, expected "
                                   f"{CHECKPOINT_FORMAT!r})")
        if tuple(state["images"].shape) != tuple(self.images.shape):
            raise ValueError(f"the checkpoint holds images of shape {tuple(state['images'].shape)}, this run "
                             f"makes {tuple(self.images.shape)}; resume with the same dataset, ipc and mode")
        with torch.no_grad():
            self.images.copy_(state["images"].to(self.device, self.dtype))
            self.syn_lr.copy_(state["syn_lr"].to(self.device, self.dtype))
        self.labels = state["labels"].to(self.device)
        self.opt_img.load_state_dict(state["opt_img"])
        self.opt_lr.load_state_dict(state["opt_lr"])
        for key, have in (("label_logits", self.label_logits), ("opt_label", self.opt_label),
                          ("images_ema", self.images_ema)):
            if (have is None) != (key not in state):
                raise ValueError(f"the checkpoint {'lacks' if have is not None else 'holds'} {key}: it was made "
                                 f"with other follow-up options (soft_labels, ema_decay); resume with the same")
        with torch.no_grad():
            if self.label_logits is not None:
                self.label_logits.copy_(state["label_logits"].to(self.device, self.dtype))
            if self.images_ema is not None:
                self.images_ema.copy_(state["images_ema"].to(self.device, self.dtype))
        if self.opt_label is not None:
            self.opt_label.load_state_dict(state["opt_label"])
        for opt, lr in ((self.opt_img, self.config.lr_img), (self.opt_lr, self.config.lr_lr),
                        (self.opt_label, self.config.lr_label)):
            for group in (opt.param_groups if opt is not None else []):
                group["lr"] = lr
        torch.set_rng_state(state["rng"]["cpu"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.generator.set_state(state["rng"]["loop"])
        self.sampler.load_state_dict(state["sampler"])
        self.iteration = int(state["iteration"])
        self.metrics = [dict(m) for m in state["metrics"]]


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


# --- the run folder ----------------------------------------------------------------------------


@dataclass
class DistillResult:
    """What a run produced: the synthetic set, its learned step size, metrics and the folder."""

    images: Tensor
    labels: Tensor
    syn_lr: float
    metrics: list[dict[str, Any]]
    config: DistillConfig
    out_dir: Path | None = None
    soft_labels: Tensor | None = None  # [N, classes] probabilities, when the run used soft labels
    label_logits: Tensor | None = None  # their logits (soft_labels = softmax(label_logits))
    images_ema: Tensor | None = None  # the moving average of the images, when ema_decay was set


def _versions() -> dict[str, str]:
    import mttlib

    return {"mttlib": mttlib.__version__, "torch": torch.__version__, "python": platform.python_version()}


def _distilled(distiller: Distiller) -> dict[str, Any]:
    out = {"format": DISTILLED_FORMAT, "images": distiller.images.detach().cpu().clone(),
           "labels": distiller.labels.cpu().clone(), "syn_lr": float(distiller.syn_lr.detach()),
           "iteration": distiller.iteration, "config": distiller.config.to_dict()}
    if distiller.config.zca:  # which whitening the images live in (evaluation refuses another)
        out["zca_recipe"] = ZCA_RECIPE
    out.update(_followup_outputs(distiller))
    return out


def _followup_outputs(distiller: Distiller) -> dict[str, Tensor]:
    """``soft_labels`` (probabilities), ``label_logits`` and ``images_ema``, where the run has them."""
    out = {}
    if distiller.label_logits is not None:
        out["label_logits"] = distiller.label_logits.detach().cpu().clone()
        out["soft_labels"] = F.softmax(out["label_logits"].float(), dim=1)
    if distiller.images_ema is not None:
        out["images_ema"] = distiller.images_ema.detach().cpu().clone()
    return out


def _snapshot(distiller: Distiller, out: Path) -> None:
    # half precision halves the files of an animation; it is for display, not for resuming
    atomic_save({"iteration": distiller.iteration, "images": distiller.images.detach().cpu().half(),
                 "labels": distiller.labels.cpu(), "syn_lr": float(distiller.syn_lr.detach())},
                out / "snapshots" / f"iter_{distiller.iteration:06d}.pt")


def _check_resumable(saved: dict[str, Any], config: DistillConfig, path: Path) -> None:
    now = config.to_dict()
    # a field the saved run did not have yet had its default (runs made before the follow-ups)
    defaults = {f.name: f.default for f in dataclasses.fields(DistillConfig) if f.default is not dataclasses.MISSING}
    differ = [f"{k}: {saved.get(k, defaults.get(k))!r} -> {now[k]!r}" for k in now
              if k not in DistillConfig.TUNABLE and saved.get(k, defaults.get(k)) != now[k]]
    if differ:
        raise ValueError(f"cannot resume {path}: the run was made with a different configuration "
                         f"({'; '.join(differ)}). Resume with the same settings (only "
                         f"{', '.join(DistillConfig.TUNABLE)} may change), or start a new run in another folder.")


def distill(config: DistillConfig, experts: Sequence[Trajectory], data: ImageData, out_dir: str | Path | None, *,
            device: str | torch.device | None = None, resume: bool = False, progress: bool = True,
            source: BatchSource | None = None, init: tuple[Tensor, Tensor] | None = None,
            callback: Callable[[dict[str, Any]], None] | None = None, extra_config: dict | None = None,
            ) -> DistillResult:
    """Run (or continue) a distillation, writing the run folder ``out_dir``.

    The folder gets ``config.json`` (config, data, experts, versions), ``metrics.jsonl`` (one
    line per iteration), ``checkpoint.pt`` and ``distilled.pt`` every ``config.checkpoint_every``
    iterations and at the end, and ``snapshots/iter_NNNNNN.pt`` every ``config.snapshot_every``.
    All files are written atomically. ``resume=True`` continues from ``checkpoint.pt`` and ends
    with the same result as an uninterrupted run (bit for bit on the CPU); without it an existing
    checkpoint is an error, so no run is overwritten by accident. ``out_dir=None`` writes nothing.

    A non-finite loss or ``syn_lr <= 0`` raises :class:`DistillationDiverged`; the last
    checkpoint (all good states) is kept. ``callback(metrics)`` is called after every iteration
    (and after its files are written). ``source``/``init``: see :class:`Distiller`.
    """
    out = Path(out_dir) if out_dir is not None else None
    distiller = Distiller(config, experts, data, device=device, source=source, init=init)
    ckpt = out / "checkpoint.pt" if out is not None else None
    if out is not None:
        if ckpt.exists() and not resume:
            raise FileExistsError(f"{out} already holds a distillation run (checkpoint.pt). Pass resume=True "
                                  f"(--resume) to continue it, or choose another output folder.")
        resumed = False
        if resume and ckpt.exists():
            state = safe_load(ckpt)
            _check_resumable(state["config"], config, ckpt)
            distiller.load_state_dict(state)
            resumed = True
        record = {"config": config.to_dict(), "data": data.describe() if hasattr(data, "describe") else None,
                  "experts": {"count": len(experts), "epochs": [t.epochs for t in experts],
                              "config": experts[0].meta.get("config") if isinstance(experts[0].meta, dict) else None},
                  "seeds": dict(zip(("init", "loop", "sampler"), _seeds(config.seed)), seed=config.seed),
                  "device": str(distiller.device), "strategy": distiller.strategy, "versions": _versions(),
                  "batch_source": repr(distiller.source), **(extra_config or {})}
        if resumed:
            record["resumed_from_iteration"] = distiller.iteration
        atomic_write_json(record, out / "config.json")
        # metrics.jsonl holds exactly the iterations of the state we continue from
        atomic_write_text("".join(json.dumps(m) + "\n" for m in distiller.metrics), out / "metrics.jsonl")
        if distiller.iteration == 0:
            _snapshot(distiller, out)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, initial=distiller.iteration, desc="distill", unit="it",
                   dynamic_ncols=True)
    try:
        while distiller.iteration < config.iterations:
            try:
                m = distiller.step()
            except DistillationDiverged as err:
                where = (f" The last good checkpoint ({ckpt}, iteration {_ckpt_iteration(ckpt)}) is kept: lower the "
                         f"learning rate and continue it with resume=True (--resume)." if ckpt is not None and
                         ckpt.exists() else "")
                raise DistillationDiverged(f"{err}{where}") from None
            it = distiller.iteration
            if out is not None:
                with open(out / "metrics.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(m) + "\n")
                if it % config.snapshot_every == 0 or it == config.iterations:
                    _snapshot(distiller, out)
                if it % config.checkpoint_every == 0 or it == config.iterations:
                    atomic_save(distiller.state_dict(), ckpt)
                    atomic_save(_distilled(distiller), out / "distilled.pt")
            if bar is not None:
                bar.set_postfix(loss=f"{m['loss']:.4f}", syn_lr=f"{float(distiller.syn_lr.detach()):.4g}",
                                s_it=f"{m['seconds']:.2f}", refresh=False)
                bar.update(1)
            if callback is not None:
                callback(m)
    finally:
        if bar is not None:
            bar.close()
    return DistillResult(images=distiller.images.detach().clone(), labels=distiller.labels.clone(),
                         syn_lr=float(distiller.syn_lr.detach()), metrics=list(distiller.metrics), config=config,
                         out_dir=out, **_followup_outputs(distiller))


def _ckpt_iteration(path: Path) -> int | str:
    try:
        return int(safe_load(path)["iteration"])
    except Exception:  # the message is informative either way
        return "?"


def load_distilled(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read ``distilled.pt`` (a path, or a run folder): ``images``, ``labels``, ``syn_lr``, ``config``."""
    path = Path(path)
    if path.is_dir():
        path = path / "distilled.pt"
    d = safe_load(path, map_location=device)
    if not isinstance(d, dict) or not {"images", "labels", "syn_lr"} <= set(d):
        raise CorruptFileError(f"{path} is not a distilled set (needs images, labels, syn_lr); distilled sets are "
                               f"written by mttlib.distill.distill or `python -m mttlib distill`")
    return d


def load_snapshots(run_dir: str | Path) -> list[tuple[int, Tensor]]:
    """The run's image snapshots ``[(iteration, images float32), ...]`` in iteration order."""
    folder = Path(run_dir)
    folder = folder / "snapshots" if (folder / "snapshots").is_dir() else folder
    files = sorted(folder.glob("iter_*.pt"))
    if not files:
        raise FileNotFoundError(f"no snapshots (iter_NNNNNN.pt) in {folder}; a distillation run writes them "
                                f"every snapshot_every iterations")
    out = []
    for f in files:
        d = safe_load(f)
        out.append((int(d["iteration"]), d["images"].float()))
    return out
