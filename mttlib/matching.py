"""The heart of MTT: the matching loss, the student's steps and the meta-gradient.

One iteration (the loop around it is :mod:`mttlib.distill`): start a student at an expert's
parameters ``θ*_t``; take ``syn_steps`` SGD steps on augmented batches of the synthetic images with
the learnable step size ``syn_lr``, ``θ_{i+1} = θ_i - syn_lr · ∇_θ CE(f(θ_i, x_i), y_i)``; measure
``||θ_N - θ*_{t+M}||² / ||θ*_t - θ*_{t+M}||²``; differentiate it through every step into the pixels
and ``syn_lr`` (:func:`meta_gradient`). ``"unroll"`` (the paper) keeps the graph of every step,
memory linear in ``syn_steps``. ``"recompute"`` keeps only the parameters after each step and walks
back one step's graph at a time, carrying the adjoint ``λ_i = λ_{i+1} - syn_lr · H_i λ_{i+1}`` with
Hessian-vector products: the same gradient to round-off, memory flat in ``syn_steps``. Every step's
augmentation is drawn up front (a *plan*) and replayed. ``precision="bf16"`` (or ``"fp16"`` on CUDA) runs
the network's forward under autocast; parameters, pixels, ``syn_lr`` and the matching loss stay
float32. Taught in notebook ``02_trajectory_matching``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mttlib.augment import DSA, DSAParams, apply_passes
from mttlib.train import autocast, check_precision

if TYPE_CHECKING:
    from mttlib.models import FunctionalModel

__all__ = ["STRATEGIES", "BatchSource", "ImageBatchSource", "matching_loss", "step_gradient", "meta_gradient",
           "student_trajectory", "check_meta_precision"]

STRATEGIES = ("unroll", "recompute")


# --- synthetic batches -------------------------------------------------------------------------


class BatchSource(Protocol):
    """Where the student's batches come from (normal mode here, texture mode in ``texture``):
    ``plans(num_steps, generator)`` draws an iteration's randomness up front, a dict per step;
    ``batch(synthetic, labels, plan)`` is deterministic, so replaying a plan rebuilds the batch."""

    def plans(self, num_steps: int, generator: torch.Generator | None = None) -> list[dict[str, Any]]: ...

    def batch(self, synthetic: Tensor, labels: Tensor, plan: dict[str, Any]) -> tuple[Tensor, Tensor]: ...


class ImageBatchSource:
    """Normal mode: consecutive chunks of ``batch_syn`` images of a fresh random permutation (a new one
    when it is used up), then DSA; ``batch_syn=None`` gives every image to every step."""

    def __init__(self, num_images: int, image_size: int | tuple[int, int], batch_syn: int | None = None,
                 dsa: DSA | None = None) -> None:
        if num_images < 1:
            raise ValueError(f"need at least one synthetic image, got num_images={num_images}")
        if batch_syn is not None and batch_syn < 1:
            raise ValueError(f"batch_syn must be positive or None (all images), got {batch_syn}")
        self.num_images = int(num_images)
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.batch_syn = self.num_images if batch_syn is None else min(int(batch_syn), self.num_images)
        self.dsa = dsa

    def __repr__(self) -> str:
        return (f"ImageBatchSource(num_images={self.num_images}, image_size={self.image_size}, "
                f"batch_syn={self.batch_syn}, dsa={self.dsa!r})")

    def plans(self, num_steps: int, generator: torch.Generator | None = None) -> list[dict[str, Any]]:
        """One plan per student step: ``index`` (int64 ``[B]``), ``dsa`` (:class:`DSAParams`) and its ``passes``."""
        out: list[dict[str, Any]] = []
        chunks: list[Tensor] = []
        for _ in range(num_steps):
            if not chunks:
                chunks = list(torch.randperm(self.num_images, generator=generator).split(self.batch_syn))
            index = chunks.pop(0)
            dsa = (self.dsa.sample(len(index), self.image_size, generator) if self.dsa is not None
                   else DSAParams("none"))
            plan = {"index": index, "dsa": dsa}
            if self.dsa is not None:  # made once, so a replay (recompute) does not make them again
                plan["passes"] = self.dsa.passes(dsa, self.image_size).to("cpu", torch.get_default_dtype())
            out.append(plan)
        return out

    def batch(self, synthetic: Tensor, labels: Tensor, plan: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The step's batch ``(x, y)``: the plan's images, augmented; differentiable in ``synthetic``."""
        if synthetic.shape[0] != self.num_images:
            raise ValueError(f"this source was made for {self.num_images} images, got {synthetic.shape[0]}")
        index = plan["index"].to(synthetic.device)
        x = synthetic.index_select(0, index)
        if "passes" in plan:
            x = apply_passes(x, plan["passes"])
        elif self.dsa is not None:
            x = self.dsa.apply(x, plan["dsa"])
        return x, labels.index_select(0, index)


# --- the meta-gradient -------------------------------------------------------------------------


def matching_loss(theta: Tensor, start: Tensor, target: Tensor) -> Tensor:
    """``||θ - θ*_{t+M}||² / ||θ*_t - θ*_{t+M}||²``: 1 for a student that did not move."""
    return (theta - target).square().sum() / (start - target).square().sum()


def check_meta_precision(precision: str) -> None:
    """Refuse ``"fp16"`` for the meta-gradient: float16's narrow range loses the small second-order terms
    (an H200 measured a cosine of 0.758 with float32's image gradient at CIFAR-10 ipc 10; bfloat16 0.9995)."""
    if precision == "fp16":
        raise ValueError("precision='fp16' is not offered for distillation: float16 loses the meta-gradient's "
                         "small second-order terms (its image gradient pointed elsewhere than float32's). Use "
                         "precision='bf16' (as fast on recent GPUs, with float32's range) or 'fp32'")


def step_gradient(fm: FunctionalModel, theta: Tensor, x: Tensor, y: Tensor, create_graph: bool,
                  precision: str = "fp32") -> Tensor:
    """The gradient of one student step's cross-entropy in ``theta`` (labels may be logits: soft);
    the forward runs in ``precision``, the loss and the gradient (``theta``'s dtype) outside autocast."""
    target = F.softmax(y, dim=1) if y.is_floating_point() else y  # soft labels: y are label logits
    with autocast(precision, theta.device):
        logits = fm(theta, x)
    loss = F.cross_entropy(logits if precision == "fp32" else logits.float(), target)
    return torch.autograd.grad(loss, theta, create_graph=create_graph)[0]


def meta_gradient(fm: FunctionalModel, start: Tensor, target: Tensor, synthetic: Tensor, labels: Tensor,
                  syn_lr: Tensor | float, plans: Sequence[dict[str, Any]], source: BatchSource,
                  strategy: str = "recompute", precision: str = "fp32") -> tuple[Tensor, Tensor, Tensor]:
    """The matching loss of one iteration and its gradients ``(loss, grad_images, grad_syn_lr)``.

    ``labels`` are class indices (int64 ``[N]``), or float label *logits* ``[N, num_classes]``
    (soft labels, :mod:`mttlib.followups`): the student then trains with soft cross-entropy
    against ``softmax(labels)`` and a fourth result, ``grad_labels``, is returned.

    The student starts at ``start`` and takes ``len(plans)`` SGD steps with step size ``syn_lr``
    on ``source.batch(synthetic, labels, plan)``; the loss compares where it ends with
    ``target``. ``strategy`` is ``"unroll"`` (the paper's full graph, memory linear in the number
    of steps) or ``"recompute"`` (exact, memory flat in the number of steps). All three results
    are detached; ``grad_images`` has the shape of ``synthetic`` and ``grad_syn_lr`` is 0-d.
    ``precision`` is the student's forward (:func:`mttlib.train.autocast`); results stay float32.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if len(plans) == 0:
        raise ValueError("need at least one student step (plans is empty)")
    if start.shape != target.shape or start.dim() != 1 or start.numel() != fm.numel:
        raise ValueError(f"start and target must be flat parameter vectors of {fm.numel:,} entries, got "
                         f"shapes {tuple(start.shape)} and {tuple(target.shape)}")
    check_meta_precision(precision)
    check_precision(precision, start.device)
    lr = torch.as_tensor(syn_lr, dtype=synthetic.dtype, device=synthetic.device).detach()
    start, target = start.detach(), target.detach()
    if labels.is_floating_point():
        labels = labels.detach().to(synthetic.dtype).requires_grad_(True)
    with torch.enable_grad():
        run = _unroll if strategy == "unroll" else _recompute
        return run(fm, start, target, synthetic.detach(), labels, lr, plans, source, precision)


def _unroll(fm, start, target, synthetic, labels, lr, plans, source, precision):
    x = synthetic.requires_grad_(True)
    lr = lr.clone().requires_grad_(True)
    theta = start.clone().requires_grad_(True)
    for plan in plans:
        xb, yb = source.batch(x, labels, plan)
        theta = theta - lr * step_gradient(fm, theta, xb, yb, True, precision)
    loss = matching_loss(theta, start, target)
    if labels.requires_grad:
        grad_x, grad_lr, grad_y = torch.autograd.grad(loss, [x, lr, labels])
        return loss.detach(), grad_x, grad_lr, grad_y
    grad_x, grad_lr = torch.autograd.grad(loss, [x, lr])
    return loss.detach(), grad_x, grad_lr


def student_trajectory(fm: FunctionalModel, start: Tensor, synthetic: Tensor, labels: Tensor,
                       syn_lr: Tensor | float, plans: Sequence[dict[str, Any]], source: BatchSource,
                       precision: str = "fp32") -> list[Tensor]:
    """The student's parameters ``[θ_0 = start, θ_1, ..., θ_N]`` after each SGD step (detached): the
    forward half of :func:`meta_gradient`, one step per plan."""
    lr = torch.as_tensor(syn_lr, dtype=synthetic.dtype, device=synthetic.device).detach()
    synthetic, labels = synthetic.detach(), labels.detach()
    thetas = [start.detach()]
    with torch.enable_grad():
        for plan in plans:
            xb, yb = source.batch(synthetic, labels, plan)
            theta = thetas[-1].detach().requires_grad_(True)
            thetas.append((theta - lr * step_gradient(fm, theta, xb, yb, False, precision)).detach())
    return thetas


def _recompute(fm, start, target, synthetic, labels, lr, plans, source, precision):
    # forward: plain SGD steps, keeping only the parameters after each step
    thetas = student_trajectory(fm, start, synthetic, labels, lr, plans, source, precision)
    theta = thetas[-1]
    diff = theta - target
    denom = (start - target).square().sum()
    loss = diff.square().sum() / denom
    # backward: the adjoint λ_i = ∂loss/∂θ_i, one step's graph at a time
    lam = diff * (2.0 / denom)
    x = synthetic.requires_grad_(True)
    grad_x = torch.zeros_like(synthetic)
    grad_lr = torch.zeros((), dtype=synthetic.dtype, device=synthetic.device)
    soft = labels.requires_grad  # learnable label logits: accumulate their gradient like the pixels'
    grad_y = torch.zeros_like(labels) if soft else None
    for i in range(len(plans) - 1, -1, -1):
        theta = thetas[i].requires_grad_(True)
        xb, yb = source.batch(x, labels, plans[i])
        g = step_gradient(fm, theta, xb, yb, True, precision)
        gl = torch.dot(g, lam)
        if soft:
            h_theta, h_x, h_y = torch.autograd.grad(gl, [theta, x, labels])
            grad_y.addcmul_(h_y, lr, value=-1)  # ∂/∂y = -lr ∂g_i/∂y, like the pixels
        else:
            h_theta, h_x = torch.autograd.grad(gl, [theta, x])
        # θ_{i+1} = θ_i - lr g_i(θ_i, x):  ∂/∂lr = -g_i,  ∂/∂x = -lr ∂g_i/∂x,  ∂/∂θ_i = I - lr H_i
        grad_lr -= gl.detach()
        grad_x.addcmul_(h_x, lr, value=-1)  # a tensor lr: no wait for the device (CUDA graphs)
        lam = lam - lr * h_theta
        thetas[i] = None  # free as we go
    if soft:
        return loss.detach(), grad_x, grad_lr, grad_y
    return loss.detach(), grad_x, grad_lr
