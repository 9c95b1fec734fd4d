"""The distillation loop of MTT: configuration, starting images, the expert sampler, one iteration
at a time. Each iteration draws an expert and a start epoch (:class:`ExpertSampler`), takes the
meta-gradient (:func:`mttlib.matching.meta_gradient`; ``strategy="auto"`` picks by memory,
:mod:`mttlib.memory`) and updates the pixels and the step size ``syn_lr`` by SGD with momentum
0.5. :class:`Distiller` writes no files (:func:`mttlib.run.distill` does); the follow-ups are
options, all off by default (:mod:`mttlib.followups`). Taught in notebook ``02_trajectory_matching``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from mttlib import followups, param
from mttlib.augment import DSA
from mttlib.data import ImageData
from mttlib.io import CorruptFileError
from mttlib.matching import STRATEGIES, BatchSource, ImageBatchSource, check_meta_precision, meta_gradient
from mttlib.memory import choose_strategy
from mttlib.models import FunctionalModel, make_model
from mttlib.presets import Preset
from mttlib.graphs import StaticMetaGradient, can_capture
from mttlib.sampling import Draw, ExpertSampler, run_seeds
from mttlib.train import check_precision, pick_device
from mttlib.trajectory import Trajectory

__all__ = ["INITS", "DistillConfig", "class_major_labels", "init_synthetic", "ExpertSampler", "Draw", "Distiller",
           "DistillationDiverged", "run_seeds"]

INITS = ("real", "noise", "real-correct")
CHECKPOINT_FORMAT = "mttlib.distill.checkpoint/1"


@dataclass
class DistillConfig:
    """Everything that defines a distillation run (:mod:`mttlib.presets` has the paper's values).

    N ``syn_steps`` on ``batch_syn`` images (None: all) cover M ``expert_epochs``; start epochs
    come from ``[0, max_start_epoch)``; ``lr_img``/``lr_lr`` train the pixels and ``syn_lr`` (which
    starts at ``lr_teacher``); ``precision`` is the student's forward (``"fp32"`` or ``"bf16"``;
    :func:`mttlib.train.autocast`; float16 is refused, :func:`mttlib.matching.check_meta_precision`). The fields after ``preset`` are the follow-ups.
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
    precision: str = "fp32"
    checkpoint_every: int = 100
    snapshot_every: int = 100
    preset: str = ""
    soft_labels: str = "none"
    lr_label: float = 2.0
    label_epoch: int | None = None
    label_expert: int = 0
    min_start_epoch: int = 0
    max_start_epoch_end: int | None = None
    start_epoch_rise: int = 0
    ema_decay: float | None = None
    param: str = "pixels"  # how the images are learned: pixels or a basis (mttlib.param)
    cuda_graph: bool = False  # on CUDA, replay each iteration's meta-gradient as a CUDA graph (mttlib.graphs)

    # fields that may change when a run is resumed (they do not change what was computed so far)
    TUNABLE = ("iterations", "lr_img", "lr_lr", "lr_label", "strategy", "checkpoint_every", "snapshot_every",
               "preset", "cuda_graph")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value cannot work."""
        for name in ("ipc", "syn_steps", "expert_epochs", "max_start_epoch", "iterations", "checkpoint_every",
                     "snapshot_every") + (("batch_syn",) if self.batch_syn is not None else ()):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("lr_img", "lr_lr", "lr_teacher"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        if self.init not in INITS or self.strategy not in STRATEGIES + ("auto",):
            raise ValueError(f"init must be one of {INITS} and strategy 'auto' or one of {STRATEGIES}; got "
                             f"init={self.init!r}, strategy={self.strategy!r}")
        check_precision(self.precision)
        check_meta_precision(self.precision)
        followups.validate_config(self)
        param.validate(self.param)

    def epochs_needed(self) -> int:
        """Epochs every expert trajectory must have: the latest start epoch plus ``expert_epochs``."""
        return (self.max_start_epoch_end or self.max_start_epoch) - 1 + self.expert_epochs

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise a ``ValueError``)."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown DistillConfig field(s) {unknown}")
        return cls(**d)

    @classmethod
    def from_preset(cls, preset: Preset, **overrides: Any) -> DistillConfig:
        """The run configuration of a :class:`mttlib.presets.Preset`, with ``overrides`` applied."""
        names = ("dataset", "ipc", "model", "zca", "syn_steps", "expert_epochs", "max_start_epoch", "batch_syn",
                 "lr_img", "lr_lr", "lr_teacher", "iterations", "init", "checkpoint_every")
        d = {n: getattr(preset, n) for n in names}
        d.update(model_kwargs=dict(preset.model_kwargs), snapshot_every=preset.checkpoint_every, preset=preset.name)
        return cls.from_dict({**d, **{k: v for k, v in overrides.items() if v is not None}})

    def replace(self, **changes: Any) -> DistillConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def class_major_labels(num_classes: int, ipc: int, device: str | torch.device | None = None) -> Tensor:
    """``[0]*ipc + [1]*ipc + ...``: the labels of a synthetic set, class by class."""
    return torch.arange(num_classes, device=device).repeat_interleave(ipc)


def init_synthetic(data: ImageData, ipc: int, init: str = "real", generator: torch.Generator | None = None,
                   device: str | torch.device | None = None, eligible: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Starting synthetic images and labels ``(images, labels)``, class-major.

    ``"real"`` picks ``ipc`` distinct random training images per class (preprocessed); ``"noise"``
    draws a standard normal in the same space. ``eligible`` (boolean ``[N]``) restricts the real
    picks to some images (``real-correct``: those an expert gets right); a class with fewer than
    ``ipc`` of them picks from all its images.
    """
    labels = class_major_labels(data.num_classes, ipc)
    if init == "noise":
        images = torch.randn((len(labels), data.channels, data.image_size, data.image_size), generator=generator)
        return images.to(device), labels.to(device)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    picks = []
    for c in range(data.num_classes):
        pool = (data.train_labels.cpu() == c).nonzero().flatten()
        if eligible is not None and int(eligible[pool].sum()) >= ipc:
            pool = pool[eligible[pool]]
        elif eligible is not None:
            warnings.warn(f"class {c}: fewer than ipc={ipc} eligible (correctly classified) training images; it "
                          "starts from any of its images", RuntimeWarning, stacklevel=2)
        if len(pool) < ipc:
            raise ValueError(f"class {data.classes[c]!r} has only {len(pool)} training images but ipc={ipc}; "
                             "use a smaller ipc or init='noise'")
        picks.append(pool[torch.randperm(len(pool), generator=generator)[:ipc]])
    images = data.preprocess(data.train_images[torch.cat(picks)]).float().cpu()
    return images.to(device), labels.to(device)


class DistillationDiverged(RuntimeError):
    """The run produced a non-finite loss, gradient or image, or a step size ``syn_lr <= 0``."""


class Distiller:
    """The distillation state and one iteration at a time (:meth:`step`); no files.

    ``source`` and ``init`` let texture mode reuse the loop with its own batch source and starting
    canvases; by default the set is ``config.ipc`` images per class from :func:`init_synthetic`
    and batches come from :class:`mttlib.matching.ImageBatchSource` with the dataset's DSA.
    """

    def __init__(self, config: DistillConfig, experts: Sequence[Trajectory], data: ImageData, *,
                 device: str | torch.device | None = "auto", source: BatchSource | None = None,
                 init: tuple[Tensor, Tensor] | None = None, dtype: torch.dtype = torch.float32) -> None:
        config.validate()
        self.config, self.dtype, self.experts = config, dtype, list(experts)
        self.device = pick_device(device)
        check_precision(config.precision, self.device)
        if not self.experts:
            raise ValueError("no expert trajectories given: train them first (mttlib.experts.ensure_experts or "
                             "`python -m mttlib experts`)")
        shortest = min(t.epochs for t in self.experts)
        if config.epochs_needed() > shortest:
            name = "max_start_epoch" if config.max_start_epoch_end is None else "max_start_epoch_end"
            raise ValueError(f"{name}={getattr(config, name)} with expert_epochs={config.expert_epochs} needs "
                             f"trajectories of at least {config.epochs_needed()} epochs, but the shortest expert has "
                             f"{shortest}: lower {name} or expert_epochs, or train longer experts")
        expert_zca = self.experts[0].meta.get("config", {}).get("zca", config.zca)
        if bool(expert_zca) != config.zca or config.zca != (data.zca is not None):
            raise ValueError(f"zca must agree: the config has zca={config.zca}, the experts were trained with "
                             f"zca={expert_zca} and the data is {'' if data.zca is not None else 'not '}whitened; "
                             f"load the data with load_dataset(name, zca=...) and use experts of the same space")
        model = make_model(config.model, data.channels, data.num_classes, data.image_size,
                           **config.model_kwargs).to(self.device)
        for traj in self.experts:
            traj.check_model(model)
        self.fm = FunctionalModel(model)
        seeds = run_seeds(config.seed)
        label_epoch = config.max_start_epoch if config.label_epoch is None else config.label_epoch
        if config.soft_labels != "none" or config.init == "real-correct":
            if init is not None:
                raise ValueError(f"soft_labels={config.soft_labels!r} and init={config.init!r}: soft labels and the "
                                 "real-correct init need ordinary synthetic images (experts' outputs on them), not "
                                 "given starting images (texture mode)")
            if config.label_expert >= len(self.experts) or label_epoch > shortest:
                raise ValueError(f"label_expert={config.label_expert} / label_epoch={label_epoch} name no snapshot: "
                                 f"there are {len(self.experts)} experts of at least {shortest} epochs")
        if init is None:
            eligible = followups.correctly_classified(self.fm, self.experts[config.label_expert][label_epoch], data,
                                                      device=self.device) if config.init == "real-correct" else None
            init = init_synthetic(data, config.ipc, config.init, torch.Generator().manual_seed(seeds["init"]),
                                  eligible=eligible)
        self.images = init[0].detach().to(self.device, dtype).clone().requires_grad_(True)
        self.labels = init[1].detach().to(self.device, torch.long).clone()
        self.extras = followups.Extras(config, self.fm, self.experts, self.images, self.labels)
        if source is None:
            dsa = DSA(config.dsa_strategy or data.dsa_strategy) if config.dsa else None
            source = ImageBatchSource(self.images.shape[0], tuple(self.images.shape[-2:]), config.batch_syn, dsa)
        self.source, self.strategy = source, config.strategy
        self.basis = param.make_param(config.param, tuple(self.images.shape[1:]), data)
        if self.strategy == "auto":
            batch = min(config.batch_syn or self.images.shape[0], self.images.shape[0])
            self.strategy = choose_strategy(model, batch, (data.channels, data.image_size, data.image_size),
                                            config.syn_steps, self.device)
        self.syn_lr = torch.tensor(float(config.lr_teacher), device=self.device, dtype=dtype, requires_grad=True)
        self.opt_img = torch.optim.SGD([self.images], lr=config.lr_img, momentum=0.5)
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=config.lr_lr, momentum=0.5)
        self.generator = torch.Generator().manual_seed(seeds["loop"])
        self.sampler = ExpertSampler(len(self.experts), config.max_start_epoch, seeds["sampler"])
        self.iteration, self.metrics = 0, []
        self.capture: StaticMetaGradient | bool | None = None  # the CUDA graph, False without one, None: not decided
        self.capture_note = ""
        self.last_jump = 0.0  # relative size of the last pixel update, for diagnosing divergence

    @property
    def label_logits(self) -> Tensor | None:
        """The soft-label logits (TESLA's fixed or DATM's learned), or None."""
        return self.extras.label_logits

    @property
    def images_ema(self) -> Tensor | None:
        """FTD's moving average of the images, or None."""
        return self.extras.images_ema

    def _likely_cause(self) -> str:
        lr_img, lr_lr = f"lr_img={self.config.lr_img:g}", f"lr_lr={self.config.lr_lr:g}"
        if self.last_jump > 0.5:
            jump = f"{100 * self.last_jump:.0f}%" if math.isfinite(self.last_jump) else "more than float32 holds"
            return (f"Most likely {lr_img} is too high for this preset (try 10x lower): the last update changed the "
                    f"pixels by {jump} of their norm. If lowering it does not help, lower {lr_lr}.")
        return f"Most likely {lr_lr} (the step size's learning rate) is too high (try 10x lower), or {lr_img} is."

    def draw(self) -> Draw:
        """The randomness of the next iteration (advances the sampler and the loop generator)."""
        low, high = followups.start_epoch_bounds(self.config, self.iteration)
        expert, start = self.sampler.sample(low, high)
        return Draw(expert, start, self.source.plans(self.config.syn_steps, self.generator), high)

    def segment(self, draw: Draw) -> tuple[Tensor, Tensor]:
        """``(start, target)``: the expert's parameters at the start epoch and ``expert_epochs`` later."""
        traj = self.experts[draw.expert]
        return (traj[draw.start_epoch].to(self.device, self.dtype),
                traj[draw.start_epoch + self.config.expert_epochs].to(self.device, self.dtype))

    def step(self) -> dict[str, Any]:
        """One iteration: draw, meta-gradient, SGD update of pixels and ``syn_lr``; returns its metrics.

        Raises :class:`DistillationDiverged`, before any update when the loss or a gradient is
        not finite, naming the likely cause.
        """
        began, draw = time.perf_counter(), self.draw()
        start, target = self.segment(draw)
        labels = self.labels if self.label_logits is None else self.label_logits
        if self.capture is None:  # decided at the first step, after a checkpoint may have been loaded
            self.capture_note = can_capture(self.device, self.source, labels, self.config.precision) \
                if self.config.cuda_graph else "cuda_graph is off"
            self.capture = False if self.capture_note else StaticMetaGradient(
                self.fm, self.source, self.images, self.labels, self.syn_lr, self.config.syn_steps, self.strategy)
        if self.capture:
            loss, grad_images, grad_lr, *grad_labels = self.capture(start, target, draw.plans)
        else:
            loss, grad_images, grad_lr, *grad_labels = meta_gradient(
                self.fm, start, target, self.images, labels, self.syn_lr, draw.plans, self.source, self.strategy,
                self.config.precision)
        lr_used, where = float(self.syn_lr.detach()), f"at iteration {self.iteration}"
        if not all(torch.isfinite(g).all() for g in (loss, grad_lr, grad_images, *grad_labels)):
            what = "loss" if not torch.isfinite(loss) else "gradient"
            raise DistillationDiverged(f"the matching {what} is not finite {where} (loss {float(loss):.4g}, syn_lr "
                                       f"{lr_used:.4g}). {self._likely_cause()}")
        before = self.images.detach().clone()
        # SGD on the basis's coefficients, written as a step on the pixels (mttlib.param)
        self.images.grad, self.syn_lr.grad = self.basis.precondition(grad_images), grad_lr.reshape(())
        self.opt_img.step()
        self.opt_lr.step()
        self.images.grad = self.syn_lr.grad = None
        try:
            self.extras.update(grad_labels, self.images)
        except FloatingPointError as err:
            raise DistillationDiverged(f"{err} ({where})") from None
        with torch.no_grad():
            self.last_jump = float((self.images - before).norm() / before.norm().clamp_min(1e-12))
        if not torch.isfinite(self.images).all():
            raise DistillationDiverged(f"the synthetic pixels became non-finite {where}: lr_img="
                                       f"{self.config.lr_img:g} is too high for this preset (try 10x lower).")
        if not float(self.syn_lr.detach()) > 0:
            raise DistillationDiverged(f"the learned step size syn_lr became {float(self.syn_lr.detach()):.4g} "
                                       f"(<= 0) {where}: a student cannot train with it. {self._likely_cause()}")
        record = {"iteration": self.iteration, "loss": float(loss), "syn_lr": lr_used,
                  "start_epoch": draw.start_epoch, "expert": draw.expert, "seconds": time.perf_counter() - began}
        if self.config.max_start_epoch_end is not None:
            record["start_upper"] = draw.start_upper
        self.iteration += 1
        self.metrics.append(record)
        return record

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit for bit (tensors on the CPU, plain values)."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return {"format": CHECKPOINT_FORMAT, "iteration": self.iteration, "images": self.images.detach().cpu().clone(),
                "labels": self.labels.cpu().clone(), "syn_lr": self.syn_lr.detach().cpu().clone(),
                "opt_img": self.opt_img.state_dict(), "opt_lr": self.opt_lr.state_dict(),
                "rng": {"cpu": torch.get_rng_state(), "cuda": cuda, "loop": self.generator.get_state()},
                "sampler": self.sampler.state_dict(), "metrics": [dict(m) for m in self.metrics],
                "config": self.config.to_dict(), **self.extras.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; the learning rates of ``self.config`` win."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CorruptFileError(f"not a distillation checkpoint (format {state.get('format')!r})")
        if tuple(state["images"].shape) != tuple(self.images.shape):
            raise ValueError(f"the checkpoint holds images of shape {tuple(state['images'].shape)}, this run makes "
                             f"{tuple(self.images.shape)}; resume with the same dataset, ipc and mode")
        with torch.no_grad():
            self.images.copy_(state["images"])
            self.syn_lr.copy_(state["syn_lr"])
        self.labels = state["labels"].to(self.device)
        self.extras.load_state_dict(state)
        for opt, lr in ((self.opt_img, self.config.lr_img), (self.opt_lr, self.config.lr_lr)):
            opt.load_state_dict(state["opt_" + ("img" if opt is self.opt_img else "lr")])
            for group in opt.param_groups:
                group["lr"] = lr
        torch.set_rng_state(state["rng"]["cpu"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.generator.set_state(state["rng"]["loop"])
        self.sampler.load_state_dict(state["sampler"])
        self.iteration, self.metrics = int(state["iteration"]), [dict(m) for m in state["metrics"]]
