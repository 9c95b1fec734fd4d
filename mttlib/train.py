"""The kit's one SGD training loop, and what goes with it: accuracy, seeds and the device.

Experts, the evaluation of distilled sets and of textures all train networks this way; what
differs (learning rate, momentum, augmentation, what to record after an epoch) is passed in. Seeds
come from :func:`derive_seed`, devices from :func:`pick_device`, mixed precision from :func:`autocast`.
Taught in notebook ``01_expert_trajectories``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mttlib.augment import DSA, Passes, apply_passes

__all__ = ["PRECISIONS", "pick_device", "derive_seed", "seeded", "check_precision", "autocast", "accuracy", "History",
           "can_compile", "train", "GraphedStep", "GRAPH_MIN_STEPS"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """The device to run on: ``"auto"`` (or None) takes CUDA, else MPS, else the CPU.

    The MPS branch only selects the device; the kit is not tested on Apple hardware.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():  # untested: no Apple hardware in the kit's CI
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" name one device
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def derive_seed(*parts: object) -> int:
    """The kit's one seed scheme: a 63-bit hash of named parts (``derive_seed("mttlib.experts",
    base_seed, index)``), so neighbouring seeds share nothing and a seed is the same everywhere."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's global generators seeded by ``seed``, restoring them afterwards
    (initial weights are drawn in such a block, so the caller's random state is left alone)."""
    fork = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        yield


def check_precision(precision: str, device: str | torch.device | None = None) -> None:
    """Raise a ``ValueError`` for a precision other than ``"fp32"``, ``"bf16"`` or ``"fp16"``, and for
    ``"fp16"`` on a device other than CUDA (``device=None`` checks the name only)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device is not None and torch.device(device).type != "cuda":
        raise ValueError(f"precision='fp16' needs a CUDA device (autocast on {torch.device(device).type} runs "
                         "bfloat16 only): use precision='bf16' or 'fp32'")


def autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """Where a network's forward runs in ``precision``: ``torch.autocast`` for ``"bf16"``/``"fp16"``,
    nothing for ``"fp32"``. Only the operations inside change precision; tensors made outside,
    parameters and gradients included, stay float32."""
    check_precision(precision, device)
    if PRECISIONS[precision] is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=PRECISIONS[precision])


def can_compile(device: str | torch.device | None = "auto") -> bool:
    """Whether ``train(..., compile=True)`` is worth asking for here: on the CPU where a C++ compiler builds its
    kernels (``$CXX``, ``g++``, ``c++`` or ``clang++``; not Windows). False on CUDA, where ``torch.compile`` cost
    more than it saved at classroom sizes and the CUDA-graph step that ``compile=True`` selects there is opt-in
    until it has been measured on a GPU; False on other devices."""
    device = pick_device(device)
    if device.type != "cpu" or sys.platform == "win32":
        return False
    return any(shutil.which(c) for c in filter(None, (os.environ.get("CXX"), "g++", "c++", "clang++")))


@torch.no_grad()
def accuracy(net: nn.Module, x: Tensor, y: Tensor, batch: int = 1024) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``net`` on ``(x, y)`` in eval mode, no augmentation."""
    was_training = net.training
    net.eval()
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    loss = torch.zeros((), dtype=torch.float32, device=x.device)
    for i in range(0, x.shape[0], batch):
        logits = net(x[i:i + batch])
        correct += (logits.argmax(1) == y[i:i + batch]).sum()
        loss += F.cross_entropy(logits.float(), y[i:i + batch], reduction="sum")
    net.train(was_training)
    n = max(1, x.shape[0])
    return correct.item() / n, loss.item() / n


@dataclass
class History:
    """What one training run saw, one value per epoch (``diverged``: stopped on a non-finite loss)."""

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    diverged: bool = False


def train(net: nn.Module, x: Tensor, y: Tensor, *, epochs: int, lr: float, batch_size: int = 256,
          momentum: float = 0.0, weight_decay: float = 0.0, lr_decay: bool = False, dsa: DSA | None = None,
          shuffle: torch.Generator, augment: torch.Generator | None = None,
          train_transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
          on_epoch_end: Callable[[int, nn.Module, torch.optim.Optimizer], None] | None = None,
          on_batch: Callable[[int], None] | None = None, precision: str = "fp32", compile: bool = False) -> History:
    """Train ``net`` in place with SGD on ``(x, y)`` (class indices or probabilities).

    Each epoch shuffles with ``shuffle``; each batch goes through ``train_transform(batch, augment)``
    and ``dsa`` (``augment=None`` shares ``shuffle``). ``lr_decay``: a fresh optimiser at ``lr * 0.1``
    from epoch ``epochs // 2``, as the paper's code. A non-finite loss stops training (``diverged``).
    ``precision``: the forward under :func:`autocast` (``"fp16"`` with loss scaling), the rest float32.
    ``compile``: make the steps cheaper, the same training up to float rounding. On the CPU the forward
    and backward go through ``torch.compile`` (fused kernels after a first, slow call; needs a C++
    compiler). On CUDA, float32 runs of at least ``GRAPH_MIN_STEPS`` steps replay each whole step
    (gather, DSA, forward, backward, SGD) as a CUDA graph (:class:`GraphedStep`); shorter runs, which
    would not repay the set-up, and other precisions run eagerly.
    """
    augment = shuffle if augment is None else augment
    device = x.device
    n = x.shape[0]
    soft = y.dim() == 2
    decay_epoch = epochs // 2 if lr_decay and epochs >= 2 else None
    check_precision(precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # fp16 gradients underflow unscaled

    def sgd(rate: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(net.parameters(), lr=rate, momentum=momentum, weight_decay=weight_decay)

    optimizer = sgd(lr)
    steps = epochs * math.ceil(n / batch_size)
    graphed = compile and device.type == "cuda" and precision == "fp32" and train_transform is None \
        and steps >= GRAPH_MIN_STEPS and n >= batch_size
    if graphed:
        step = GraphedStep(net, x, y, batch_size, lr, momentum, weight_decay, dsa)
        return _train_graphed(step, epochs, lr, decay_epoch, shuffle, augment, optimizer, on_epoch_end, on_batch)
    forward = torch.compile(net) if compile and device.type == "cpu" else net  # shares net's parameters
    history = History()
    net.train()
    for epoch in range(epochs):
        if epoch == decay_epoch:
            optimizer = sgd(lr * 0.1)
        history.lr.append(float(optimizer.param_groups[0]["lr"]))
        order = torch.randperm(n, generator=shuffle).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for begin in range(0, n, batch_size):
            idx = order[begin:begin + batch_size]
            xb, yb = x[idx], y[idx]
            if train_transform is not None:
                xb = train_transform(xb, augment)
            if dsa is not None:
                xb = dsa(xb, augment)
            with autocast(precision, device):
                logits = forward(xb)
            loss = F.cross_entropy(logits if precision == "fp32" else logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():
                loss_sum += loss.detach() * idx.shape[0]
                correct += (logits.argmax(1) == (yb.argmax(1) if soft else yb)).sum()
            if on_batch is not None:
                on_batch(idx.shape[0])
        history.train_loss.append(loss_sum.item() / n)  # one synchronisation per epoch
        history.train_acc.append(correct.item() / n)
        if not math.isfinite(history.train_loss[-1]):
            history.diverged = True
            break
        if on_epoch_end is not None:
            on_epoch_end(epoch, net, optimizer)
    return history


GRAPH_MIN_STEPS = 200  # a CUDA graph costs a few eager steps to set up: shorter runs stay eager


class GraphedStep:
    """One SGD step on a batch of ``batch`` images of ``(x, y)``, replayed as a CUDA graph.

    The step reads the batch's indices and DSA passes from static buffers and updates the parameters
    in place with SGD written out (weight decay, momentum ``buf = m buf + g`` as ``torch.optim.SGD``,
    ``p -= lr buf``); the learning rate is a tensor, so a drop needs no new graph. A batch of another
    size (an epoch's last) runs the same function eagerly. Also usable on the CPU (no graph)."""

    def __init__(self, net: nn.Module, x: Tensor, y: Tensor, batch: int, lr: float, momentum: float,
                 weight_decay: float, dsa: DSA | None) -> None:
        self.net, self.x, self.y, self.batch, self.dsa = net, x, y, batch, dsa
        self.momentum, self.weight_decay = momentum, weight_decay
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.bufs = [torch.zeros_like(p) for p in self.params] if momentum else []
        device = x.device
        self.lr = torch.tensor(float(lr), device=device, dtype=self.params[0].dtype)
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.index = torch.zeros(batch, dtype=torch.long, device=device)
        size = tuple(x.shape[-2:])
        self.passes = None if dsa is None else Passes().every(batch, size).to(device, x.dtype)
        self.graph: Any = None

    def _step(self, index: Tensor, passes: Passes | None) -> None:
        xb, yb = self.x.index_select(0, index), self.y.index_select(0, index)
        if passes is not None:
            xb = apply_passes(xb, passes)
        logits = self.net(xb)
        loss = F.cross_entropy(logits, yb)
        grads = list(torch.autograd.grad(loss, self.params))
        with torch.no_grad():
            if self.weight_decay:
                torch._foreach_add_(grads, self.params, alpha=self.weight_decay)
            if self.momentum:
                torch._foreach_mul_(self.bufs, self.momentum)
                torch._foreach_add_(self.bufs, grads)
                grads = self.bufs
            torch._foreach_sub_(self.params, torch._foreach_mul(grads, self.lr))
            self.loss_sum += loss.detach() * index.shape[0]
            self.correct += (logits.argmax(1) == (yb.argmax(1) if yb.dim() == 2 else yb)).sum()

    def __call__(self, index: Tensor, generator: torch.Generator) -> None:
        """One step on the images ``index`` (on the device), DSA drawn from ``generator``."""
        size, n = tuple(self.x.shape[-2:]), index.shape[0]
        passes = None if self.dsa is None else self.dsa.passes(self.dsa.sample(n, size, generator), size)
        if n != self.batch or self.x.device.type != "cuda":
            return self._step(index, None if passes is None else passes.to(self.x.device, self.x.dtype))
        self.index.copy_(index, non_blocking=True)
        if passes is not None:
            for static, value in zip(self.passes.tensors(), passes.every(n, size).tensors()):
                static.copy_(value, non_blocking=True)
        if self.graph is None:
            self._record()
        self.graph.replay()

    def _record(self) -> None:
        # warm-up steps on a side stream set CUDA's libraries up; what they change is put back after
        kept = [t.detach().clone() for t in (*self.net.state_dict().values(), *self.bufs, self.loss_sum, self.correct)]
        stream = torch.cuda.Stream(self.x.device)
        stream.wait_stream(torch.cuda.current_stream(self.x.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step(self.index, self.passes)
        torch.cuda.current_stream(self.x.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step(self.index, self.passes)
        with torch.no_grad():
            for t, k in zip((*self.net.state_dict().values(), *self.bufs, self.loss_sum, self.correct), kept):
                t.copy_(k)


def _train_graphed(step: GraphedStep, epochs: int, lr: float, decay_epoch: int | None, shuffle: torch.Generator,
                   augment: torch.Generator, optimizer: torch.optim.Optimizer, on_epoch_end: Callable | None,
                   on_batch: Callable | None) -> History:
    """:func:`train`'s loop around a :class:`GraphedStep` (same shuffles, same DSA draws)."""
    history, n, rate = History(), step.x.shape[0], lr
    step.net.train()
    for epoch in range(epochs):
        if epoch == decay_epoch:  # a fresh optimiser, as the eager loop: lr x 0.1, momentum from zero
            rate = lr * 0.1
            step.lr.fill_(rate)
            if step.bufs:
                torch._foreach_zero_(step.bufs)
            optimizer.param_groups[0]["lr"] = rate
        history.lr.append(rate)
        order = torch.randperm(n, generator=shuffle).to(step.x.device)
        step.loss_sum.zero_()
        step.correct.zero_()
        for begin in range(0, n, step.batch):
            idx = order[begin:begin + step.batch]
            step(idx, augment)
            if on_batch is not None:
                on_batch(idx.shape[0])
        history.train_loss.append(step.loss_sum.item() / n)  # one synchronisation per epoch
        history.train_acc.append(step.correct.item() / n)
        if not math.isfinite(history.train_loss[-1]):
            history.diverged = True
            break
        if on_epoch_end is not None:
            on_epoch_end(epoch, step.net, optimizer)
    return history
