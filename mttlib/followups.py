"""Beyond the paper: three follow-ups to trajectory matching, as options of the distillation loop.

Each is a field of :class:`mttlib.distill.DistillConfig` whose default is the paper's plain MTT;
bundles live in :data:`mttlib.presets.FOLLOWUPS` (``tesla``, ``datm``, ``datm-labels``,
``datm-schedule``, ``ftd-ema``).

* **TESLA's soft labels** (Cui et al., ICML 2023; ``soft_labels="fixed"``): an expert's softmax
  output on each image (expert ``label_expert`` at snapshot ``label_epoch``), fixed at the start.
* **DATM's learned soft labels** (Guo et al., ICLR 2024; ``soft_labels="learn"``): label logits
  learned with the pixels (SGD, momentum 0.9, ``lr_label``), starting from the mean logits of the
  experts that get the image right; the meta-gradient reaches them through each student step.
* **DATM's difficulty-aligned start epochs** (``min_start_epoch``, ``max_start_epoch_end``,
  ``start_epoch_rise``, ``init="real-correct"``): the window of start epochs widens during the
  run, and the set starts from real images an expert already gets right.
* **FTD's moving average of the images** (Du et al., CVPR 2023; ``ema_decay``): ``e ← d·e +
  (1-d)·x`` after every update, evaluated beside the raw images (FTD's flat experts are not here).

Soft labels make evaluation knowledge distillation in part; texture mode refuses them and
``real-correct``. Taught in notebook ``05_beyond_mtt``, which explains each one.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from mttlib.data import ImageData
from mttlib.models import FunctionalModel
from mttlib.trajectory import Trajectory

__all__ = ["SOFT_LABEL_MODES", "validate_config", "initial_label_logits", "start_epoch_upper",
           "start_epoch_bounds", "expert_logits", "average_correct_logits", "correctly_classified", "ema_update",
           "Extras"]

SOFT_LABEL_MODES = ("none", "fixed", "learn")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _count(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def validate_config(c: Any) -> None:
    """Raise ``ValueError`` naming the field when a follow-up option of a ``DistillConfig`` cannot work."""
    _check(c.soft_labels in SOFT_LABEL_MODES, f"soft_labels must be one of {SOFT_LABEL_MODES}, got {c.soft_labels!r}")
    _check(isinstance(c.lr_label, (int, float)) and math.isfinite(c.lr_label) and c.lr_label > 0,
           f"lr_label must be a positive finite number, got {c.lr_label!r}")
    for name in ("label_expert", "min_start_epoch", "start_epoch_rise"):
        _check(_count(getattr(c, name)), f"{name} must be a non-negative integer, got {getattr(c, name)!r}")
    _check(c.label_epoch is None or _count(c.label_epoch),
           f"label_epoch must be None or a non-negative integer, got {c.label_epoch!r}")
    _check(c.min_start_epoch < c.max_start_epoch, f"min_start_epoch={c.min_start_epoch} must be below "
           f"max_start_epoch={c.max_start_epoch} (start epochs come from [min_start_epoch, max_start_epoch))")
    if c.max_start_epoch_end is not None:
        _check(_count(c.max_start_epoch_end, c.max_start_epoch), f"max_start_epoch_end must be None or an "
               f"integer >= max_start_epoch={c.max_start_epoch}, got {c.max_start_epoch_end!r}")
        _check(c.start_epoch_rise >= 1, "max_start_epoch_end needs start_epoch_rise >= 1: the iterations over "
               "which the upper start epoch rises from max_start_epoch to max_start_epoch_end")
    _check(c.ema_decay is None or (isinstance(c.ema_decay, (int, float)) and 0 < c.ema_decay < 1),
           f"ema_decay must be None (no moving average) or a number in (0, 1), got {c.ema_decay!r}")


def start_epoch_upper(iteration: int, lower: int, upper: int | None, rise: int) -> int:
    """The exclusive upper end of the start epochs: ``lower`` at iteration 0, rising linearly to
    ``upper`` at iteration ``rise`` (integer arithmetic, exact); ``lower`` when ``upper`` is None."""
    if upper is None or upper == lower:
        return int(lower)
    _check(rise >= 1, f"start_epoch_rise must be at least 1 iteration, got {rise}")
    return int(lower) + (int(upper) - int(lower)) * min(max(int(iteration), 0), int(rise)) // int(rise)


def start_epoch_bounds(config: Any, iteration: int) -> tuple[int, int]:
    """``(low, high)``: start epochs of ``iteration`` are drawn uniformly from ``[low, high)``."""
    high = start_epoch_upper(iteration, config.max_start_epoch, config.max_start_epoch_end, config.start_epoch_rise)
    return int(config.min_start_epoch), high


@torch.no_grad()
def expert_logits(fm: FunctionalModel, theta: Tensor, images: Tensor, batch: int = 500) -> Tensor:
    """The logits of the network with parameters ``theta`` on ``images`` (in batches)."""
    theta = theta.to(images.device, images.dtype)
    return torch.cat([fm(theta, images[i:i + batch]) for i in range(0, images.shape[0], batch)])


def average_correct_logits(fm: FunctionalModel, experts: Sequence[Trajectory], epoch: int, images: Tensor,
                           labels: Tensor) -> Tensor:
    """DATM's initial label logits: per image, the mean logits at snapshot ``epoch`` of the experts
    that classify it as ``labels``; the mean over all experts for an image that none gets right."""
    outs = torch.stack([expert_logits(fm, traj[epoch], images).double() for traj in experts])
    ok = (outs.argmax(2) == labels.to(outs.device)).double().unsqueeze(2)
    count = ok.sum(0)
    mean_correct = (ok * outs).sum(0) / count.clamp_min(1)
    return torch.where(count > 0, mean_correct, outs.mean(0)).to(images.dtype)


def initial_label_logits(config: Any, fm: FunctionalModel, experts: Sequence[Trajectory], images: Tensor,
                         labels: Tensor) -> Tensor:
    """The starting label logits: TESLA's (``"fixed"``: one expert's) or DATM's (``"learn"``)."""
    epoch = config.max_start_epoch if config.label_epoch is None else config.label_epoch
    x = images.detach()
    if config.soft_labels == "fixed":
        logits = expert_logits(fm, experts[config.label_expert][epoch], x)
    else:
        _check(config.soft_labels == "learn", f"soft_labels={config.soft_labels!r} has no label logits")
        logits = average_correct_logits(fm, experts, epoch, x, labels)
    return logits.detach().to(x.device, x.dtype).clone()


def correctly_classified(fm: FunctionalModel, theta: Tensor, data: ImageData, batch: int = 500,
                         device: str | torch.device | None = None) -> Tensor:
    """Boolean ``[N]`` (CPU): which training images of ``data`` the network ``theta`` gets right (on
    ``device``, by default where the network is)."""
    device = next(fm.module.parameters()).device if device is None else device
    labels = data.train_labels.cpu()
    ok = [expert_logits(fm, theta, data.preprocess(data.train_images[i:i + batch], device)).argmax(1).cpu()
          == labels[i:i + batch] for i in range(0, labels.shape[0], batch)]
    return torch.cat(ok)


@torch.no_grad()
def ema_update(ema: Tensor, value: Tensor, decay: float) -> Tensor:
    """``ema ← decay · ema + (1 - decay) · value`` in place; returns ``ema``."""
    return ema.mul_(decay).add_(value.detach(), alpha=1.0 - decay)


class Extras:
    """The follow-ups' part of a run's state: label logits (and their optimiser) and the image average.

    With every follow-up off it holds nothing, and checkpoints and outputs stay as plain MTT's.
    """

    KEYS = ("label_logits", "opt_label", "images_ema")

    def __init__(self, config: Any, fm: FunctionalModel, experts: Sequence[Trajectory], images: Tensor,
                 labels: Tensor) -> None:
        self.config = config
        self.label_logits: Tensor | None = None
        self.opt_label: torch.optim.Optimizer | None = None
        if config.soft_labels != "none":
            self.label_logits = initial_label_logits(config, fm, experts, images, labels)
            if config.soft_labels == "learn":
                self.opt_label = torch.optim.SGD([self.label_logits.requires_grad_(True)], lr=config.lr_label,
                                                 momentum=0.9)
        self.images_ema = images.detach().clone() if config.ema_decay is not None else None

    def update(self, grad_labels: list[Tensor], images: Tensor) -> None:
        """After the pixel update: DATM's label step, FTD's average."""
        if self.opt_label is not None:
            self.label_logits.grad = grad_labels[0]
            self.opt_label.step()
            self.label_logits.grad = None
            if not torch.isfinite(self.label_logits).all():
                raise FloatingPointError(f"the soft-label logits became non-finite: lr_label={self.config.lr_label:g}"
                                         " is too high (try 10x lower).")
        if self.images_ema is not None:
            ema_update(self.images_ema, images, self.config.ema_decay)

    def state_dict(self) -> dict[str, Any]:
        """The tensors and optimiser state that exist (CPU copies)."""
        out: dict[str, Any] = {}
        for key in self.KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value.state_dict() if key == "opt_label" else value.detach().cpu().clone()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint made with the same follow-up options."""
        for key in self.KEYS:
            _check((getattr(self, key) is None) == (key not in state), f"the checkpoint "
                   f"{'holds' if key in state else 'lacks'} {key}: it was made with other follow-up options "
                   "(soft_labels, ema_decay); resume with the same")
        with torch.no_grad():
            for key in ("label_logits", "images_ema"):
                if getattr(self, key) is not None:
                    getattr(self, key).copy_(state[key])
        if self.opt_label is not None:
            self.opt_label.load_state_dict(state["opt_label"])
            for group in self.opt_label.param_groups:
                group["lr"] = self.config.lr_label

    def outputs(self) -> dict[str, Tensor]:
        """``soft_labels`` (probabilities), ``label_logits`` and ``images_ema``, where the run has them."""
        out = {k: v for k, v in self.state_dict().items() if k != "opt_label"}
        if "label_logits" in out:
            out["soft_labels"] = torch.softmax(out["label_logits"].float(), dim=1)
        return out
