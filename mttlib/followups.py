"""Beyond the paper: three follow-ups to trajectory matching, as options of the distillation loop.

Every option is a field of :class:`mttlib.distill.DistillConfig` whose default is the plain MTT
of the paper; with all of them off a run computes exactly what it computed before they existed.
Ready-made bundles live in :data:`mttlib.presets.FOLLOWUPS` (``tesla``, ``datm``,
``datm-labels``, ``datm-schedule``, ``ftd-ema``).

**TESLA's soft labels** (Cui, Wang, Si, Hsieh, *Scaling Up Dataset Distillation to ImageNet-1K
with Constant Memory*, ICML 2023; ``soft_labels="fixed"``). With one image per class and a
thousand classes a one-hot label says very little, and an image that tries to stand for a whole
class drifts far from anything the experts ever saw. TESLA replaces each synthetic image's
one-hot label by a chosen expert's softmax output on that image (here: the expert
``label_expert`` at the snapshot ``label_epoch``), computed once at initialisation and kept
fixed. The student then trains with soft cross-entropy, and so does every network that is
evaluated on the set: part of what the network learns comes from the expert's output, which is
knowledge distillation. (TESLA's other contribution, an approximate constant-memory
meta-gradient, is not needed here: ``recompute`` gives the exact gradient with flat memory.)

**DATM's learnable soft labels** (Guo, Wang, Jiang, Zhou, Ma, You, *Towards Lossless Dataset
Distillation via Difficulty-Aligned Trajectory Matching*, ICLR 2024; ``soft_labels="learn"``).
DATM goes further: each synthetic image gets a vector of label *logits* that the distillation
learns together with the pixels (its own SGD, momentum 0.9, learning rate ``lr_label``). They
start from the average logits, at the snapshot ``label_epoch``, of the experts that classify the
starting image correctly -- so an image starts with a label the experts agree with. When no
expert classifies an image correctly, the average over all experts is taken instead (this can
happen with noise initialisation or weak experts). The meta-gradient reaches the logits the same
way it reaches the pixels: the student's step ``θ_{i+1} = θ_i - syn_lr ∇_θ L(θ_i, x, softmax(y))``
depends on them through the step gradient, so ``∂loss/∂y = -syn_lr Σ_i ∂/∂y (∇_θ L · λ_{i+1})``,
accumulated by both meta-gradient strategies.

**DATM's difficulty-aligned start epochs** (same paper; ``min_start_epoch``,
``max_start_epoch_end``, ``start_epoch_rise``, and ``init="real-correct"``). Early expert epochs
teach easy patterns, late epochs hard ones; a small synthetic set can only hold the easy ones.
DATM samples start epochs from a window ``[min_start_epoch, upper)`` whose upper end rises during
the run, from ``max_start_epoch`` to ``max_start_epoch_end`` over ``start_epoch_rise``
iterations (:func:`start_epoch_upper`), so the set first learns the easy part of the trajectory
and then the harder one. The schedule is a pure function of the iteration number, so a resumed
run draws exactly what an uninterrupted one draws. DATM also starts from real images that an
expert already classifies correctly (``init="real-correct"``: among the training images that
expert ``label_expert`` at snapshot ``label_epoch`` gets right; a class with too few of them
falls back to all of its images).

**FTD's exponential moving average of the images** (Du, Jiang, Tan, Zhou, Li, *Minimizing the
Accumulated Trajectory Error to Improve Dataset Distillation*, CVPR 2023; ``ema_decay``). The
pixels follow noisy meta-gradients (every iteration draws another expert and start epoch); FTD
keeps an exponential moving average ``e ← d·e + (1-d)·x`` of the images after every update and
evaluates the average, which smooths that noise. The average is kept beside the raw images
(``images_ema`` in checkpoints and in ``distilled.pt``) so both can be evaluated. Only this part
of FTD is implemented: its experts trained with sharpness-aware minimisation ("flat
trajectories") are out of scope; use the kit's ordinary experts.

Texture mode: the start-epoch schedule and the EMA work unchanged; soft labels and
``init="real-correct"`` are refused there (a canvas is larger than the experts' input, so an
expert's output on it is not defined).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from mttlib.data import ImageData
    from mttlib.experts import Trajectory
    from mttlib.models import FunctionalModel

__all__ = [
    "SOFT_LABEL_MODES",
    "validate_config",
    "initial_label_logits",
    "soft_cross_entropy",
    "start_epoch_upper",
    "start_epoch_bounds",
    "expert_logits",
    "average_correct_logits",
    "correctly_classified",
    "ema_update",
]

SOFT_LABEL_MODES = ("none", "fixed", "learn")


def validate_config(self) -> None:
    """Raise ``ValueError`` naming the field when a follow-up option of a
    :class:`~mttlib.distill.DistillConfig` cannot work (called by its ``validate``)."""
    if self.soft_labels not in SOFT_LABEL_MODES:
        raise ValueError(f"soft_labels must be one of {', '.join(map(repr, SOFT_LABEL_MODES))}, "
                         f"got {self.soft_labels!r}")
    if not (isinstance(self.lr_label, (int, float)) and math.isfinite(self.lr_label) and self.lr_label > 0):
        raise ValueError(f"lr_label must be a positive finite number, got {self.lr_label!r}")
    for name in ("label_expert", "min_start_epoch", "start_epoch_rise"):
        v = getattr(self, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if self.label_epoch is not None and (isinstance(self.label_epoch, bool) or not isinstance(self.label_epoch, int)
                                         or self.label_epoch < 0):
        raise ValueError(f"label_epoch must be None or a non-negative integer, got {self.label_epoch!r}")
    if self.min_start_epoch >= self.max_start_epoch:
        raise ValueError(f"min_start_epoch={self.min_start_epoch} must be below max_start_epoch="
                         f"{self.max_start_epoch} (start epochs are drawn from [min_start_epoch, max_start_epoch))")
    if self.max_start_epoch_end is not None:
        if isinstance(self.max_start_epoch_end, bool) or not isinstance(self.max_start_epoch_end, int) or \
                self.max_start_epoch_end < self.max_start_epoch:
            raise ValueError(f"max_start_epoch_end must be None or an integer >= max_start_epoch="
                             f"{self.max_start_epoch}, got {self.max_start_epoch_end!r}")
        if self.start_epoch_rise < 1:
            raise ValueError("max_start_epoch_end needs start_epoch_rise >= 1: the number of iterations over "
                             "which the upper start epoch rises from max_start_epoch to max_start_epoch_end")
    if self.ema_decay is not None and not (isinstance(self.ema_decay, (int, float)) and 0 < self.ema_decay < 1):
        raise ValueError(f"ema_decay must be None (no moving average) or a number in (0, 1), got {self.ema_decay!r}")


def initial_label_logits(config, fm: FunctionalModel, experts: Sequence[Trajectory], images: Tensor,
                         labels: Tensor) -> Tensor:
    """The starting label logits of a run with soft labels (detached, like ``images``).

    ``soft_labels="fixed"`` (TESLA): expert ``label_expert``'s logits at snapshot ``label_epoch``;
    ``"learn"`` (DATM): :func:`average_correct_logits` of all experts at that snapshot.
    """
    epoch = config.max_start_epoch if config.label_epoch is None else config.label_epoch
    x = images.detach()
    if config.soft_labels == "fixed":
        logits = expert_logits(fm, experts[config.label_expert][epoch], x)
    elif config.soft_labels == "learn":
        logits = average_correct_logits(fm, experts, epoch, x, labels)
    else:
        raise ValueError(f"soft_labels={config.soft_labels!r} has no label logits")
    return logits.detach().to(x.device, x.dtype).clone()


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of ``-Σ_c target_c log softmax(logits)_c`` (``target`` rows are
    probabilities). With one-hot targets it equals ``F.cross_entropy``."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def start_epoch_upper(iteration: int, lower: int, upper: int | None, rise: int) -> int:
    """The exclusive upper end of the start epochs at ``iteration``: ``lower`` at iteration 0,
    rising linearly to ``upper`` at iteration ``rise`` and staying there.

    ``floor(lower + (upper - lower) · min(iteration, rise) / rise)``; with ``upper=None`` (no
    schedule) it is ``lower`` throughout. Integer arithmetic only, so it is exact.
    """
    if upper is None or upper == lower:
        return int(lower)
    if rise < 1:
        raise ValueError(f"start_epoch_rise must be at least 1 iteration, got {rise}")
    done = min(max(int(iteration), 0), int(rise))
    return int(lower) + (int(upper) - int(lower)) * done // int(rise)


def start_epoch_bounds(config, iteration: int) -> tuple[int, int]:
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
    correct_sum = count = all_sum = None
    for traj in experts:
        out = expert_logits(fm, traj[epoch], images).double()
        ok = (out.argmax(1) == labels.to(out.device)).double().unsqueeze(1)
        if all_sum is None:
            correct_sum, count, all_sum = torch.zeros_like(out), torch.zeros_like(ok), torch.zeros_like(out)
        correct_sum += ok * out
        count += ok
        all_sum += out
    mean_all = all_sum / len(experts)
    mean_correct = correct_sum / count.clamp_min(1)
    return torch.where(count > 0, mean_correct, mean_all).to(images.dtype)


def correctly_classified(fm: FunctionalModel, theta: Tensor, data: ImageData, batch: int = 500,
                         device: str | torch.device = "cpu") -> Tensor:
    """Boolean ``[N]`` on the CPU: which training images of ``data`` the network ``theta``
    classifies correctly."""
    labels = data.train_labels.cpu()
    theta = theta.to(device, torch.float32)
    ok = []
    with torch.no_grad():
        for i in range(0, labels.shape[0], batch):
            x = data.preprocess(data.train_images[i:i + batch]).float().to(device)
            ok.append(fm(theta, x).argmax(1).cpu() == labels[i:i + batch])
    return torch.cat(ok)


@torch.no_grad()
def ema_update(ema: Tensor, value: Tensor, decay: float) -> Tensor:
    """``ema ← decay · ema + (1 - decay) · value`` in place; returns ``ema``."""
    return ema.mul_(decay).add_(value.detach(), alpha=1.0 - decay)
