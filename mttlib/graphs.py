"""A distillation iteration's meta-gradient as one CUDA graph, replayed every iteration.

On a GPU one iteration is tens of thousands of small kernels, and launching them one by one from
Python costs more than running them. A CUDA graph records the launches of one meta-gradient once
and replays them with a single call. A graph replays exactly what it recorded, so everything that
changes between iterations lives in *static buffers* that the graph reads: the expert segment
(start and target parameters), and per student step the images' order and the DSA draws, with
every DSA pass present (identity where a step did not draw it, :meth:`mttlib.augment.DSA.passes`).
Before each replay :class:`StaticMetaGradient` copies the new values into those buffers; the
pixels, ``syn_lr`` and the labels are read where the optimiser updates them in place.

The same code runs on the CPU, where "replay" simply calls the function on the static buffers:
that keeps the static path tested everywhere (``tests/test_graphs.py``), and on CUDA it is what
gets recorded. :func:`can_capture` says when capture applies: CUDA, normal (not texture) batches,
float32, hard labels. Taught in notebook ``02_trajectory_matching``.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from torch import Tensor

from mttlib.augment import Passes
from mttlib.matching import ImageBatchSource, meta_gradient
from mttlib.models import FunctionalModel

__all__ = ["can_capture", "StaticMetaGradient"]


def can_capture(device: torch.device, source: Any, labels: Tensor, precision: str) -> str:
    """Why a run cannot use a CUDA graph (``""``: it can)."""
    if device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    if not isinstance(source, ImageBatchSource):
        return "CUDA graphs cover normal batches only (texture crops run eagerly)"
    if labels.is_floating_point():
        return "CUDA graphs cover hard labels only (soft labels run eagerly)"
    if precision != "fp32":
        return "CUDA graphs cover float32 only (autocast runs eagerly)"
    return ""


class StaticMetaGradient:
    """:func:`mttlib.matching.meta_gradient` on static buffers, recorded as a CUDA graph on CUDA.

    ``synthetic``, ``labels`` and ``syn_lr`` are the run's own tensors, updated in place between calls;
    ``num_steps`` plans of the same batch sizes come with every call. ``warmup`` eager runs precede
    the recording (CUDA needs them to set up its libraries). Calling returns ``(loss, grad_images,
    grad_syn_lr)``, copies that stay valid after the next call.
    """

    def __init__(self, fm: FunctionalModel, source: ImageBatchSource, synthetic: Tensor, labels: Tensor,
                 syn_lr: Tensor, num_steps: int, strategy: str, warmup: int = 3) -> None:
        if source.dsa is not None and not source.dsa.ops:
            source = ImageBatchSource(source.num_images, source.image_size, source.batch_syn, None)
        self.fm, self.source, self.strategy, self.warmup = fm, source, strategy, warmup
        self.synthetic, self.labels, self.syn_lr, self.num_steps = synthetic, labels, syn_lr, num_steps
        device = synthetic.device
        self.start = torch.zeros(fm.numel, device=device, dtype=synthetic.dtype)
        self.target = torch.zeros_like(self.start)
        self.plans: list[dict[str, Any]] | None = None  # static, made from the first call's plans
        self.graph: Any = None  # the CUDA graph; False when recording failed
        self.failed = ""
        self.outputs: tuple[Tensor, ...] = ()

    def _host(self, plans: Sequence[dict[str, Any]]) -> list[list[Tensor]]:
        """Per step, the CPU tensors the static buffers hold: the index, then every DSA pass."""
        size, dsa, out = self.source.image_size, self.source.dsa, []
        for plan in plans:
            passes = [] if dsa is None else (plan.get("passes") or dsa.passes(plan["dsa"], size)).every(
                len(plan["index"]), size).tensors()
            out.append([plan["index"], *passes])
        return out

    def _bind(self, host: list[list[Tensor]]) -> None:
        device, dtype = self.synthetic.device, self.synthetic.dtype
        self.plans = []
        for tensors in host:
            index, *passes = (t.to(device, t.dtype if i == 0 else dtype).clone() for i, t in enumerate(tensors))
            plan: dict[str, Any] = {"index": index}
            if passes:
                plan["passes"] = Passes((passes[0], passes[1], passes[2]), passes[3], passes[4])
            self.plans.append(plan)

    def _copy_in(self, start: Tensor, target: Tensor, host: list[list[Tensor]]) -> None:
        self.start.copy_(start, non_blocking=True)
        self.target.copy_(target, non_blocking=True)
        for plan, tensors in zip(self.plans, host):
            static = [plan["index"], *(plan["passes"].tensors() if "passes" in plan else [])]
            if [tuple(s.shape) for s in static] != [tuple(t.shape) for t in tensors]:
                raise ValueError("a captured meta-gradient needs plans of the same shapes every iteration "
                                 f"({[tuple(s.shape) for s in static]}, got {[tuple(t.shape) for t in tensors]})")
            for s, t in zip(static, tensors):
                s.copy_(t, non_blocking=True)

    def _run(self) -> tuple[Tensor, ...]:
        return meta_gradient(self.fm, self.start, self.target, self.synthetic, self.labels, self.syn_lr, self.plans,
                             self.source, self.strategy)

    def _record(self) -> None:
        stream = torch.cuda.Stream(self.synthetic.device)
        stream.wait_stream(torch.cuda.current_stream(self.synthetic.device))
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self._run()
        torch.cuda.current_stream(self.synthetic.device).wait_stream(stream)
        torch.cuda.empty_cache()  # the warm-up's buffers go back before the graph takes its own
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = self._run()

    def __call__(self, start: Tensor, target: Tensor, plans: Sequence[dict[str, Any]]) -> tuple[Tensor, ...]:
        if len(plans) != self.num_steps:
            raise ValueError(f"this meta-gradient was set up for {self.num_steps} steps, got {len(plans)}")
        host = self._host(plans)
        if self.plans is None:
            self._bind(host)
        self._copy_in(start, target, host)
        if self.synthetic.device.type != "cuda":
            return self._run()
        if self.graph is None:
            try:
                self._record()
            except RuntimeError as err:  # a graph that cannot be recorded: this run continues eagerly
                self.failed = f"{type(err).__name__}: {str(err).splitlines()[0]}"
                warnings.warn(f"recording the CUDA graph failed ({self.failed}); the run continues without it "
                              "(cuda_graph=False skips the attempt)", RuntimeWarning, stacklevel=3)
                self.graph = False
        if self.graph is False:
            return self._run()
        self.graph.replay()
        return tuple(t.clone() for t in self.outputs)
