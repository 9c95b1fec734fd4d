"""Operator calls per student step: how many times PyTorch's dispatcher runs an operator in one iteration.

On a GPU each call costs a few microseconds of launching whatever the kernel does, so at the paper's
sizes an eager iteration is bound by how many calls it makes. This counts every call (views and
in-place updates included) with a ``TorchDispatchMode`` over one whole iteration: drawing the plans,
the student's steps, the meta-gradient. The setting is the paper's CIFAR-10 ipc 10 shape: a ConvNet
of depth 3 (the count does not depend on the width), 100 images in every step, DSA; the DSA group
drawn differs per step, so the count is averaged over ``--steps`` steps (30, as the paper).

    python benchmarks/bench_ops.py                 # both strategies, one JSON line each
    python benchmarks/bench_ops.py --strategies unroll --width 128 --device cuda

Measured on the CPU with the defaults (width 8, 30 steps, seed 0): before the layers of ``mttlib.layers``
and the DSA passes, ``unroll`` 738.8 calls per step (22,165 per iteration) and ``recompute`` 887.8
(instance norm's second derivative alone was about 140 calls per layer and step); after them
``unroll`` 444.6 (13,338) and ``recompute`` 564.6 (16,937). On CUDA the pooling is one kernel where the
CPU takes five faster calls, so a GPU counts a few calls fewer (``gpu_check.sh`` reports them there); a
CUDA graph replays an iteration with no calls at all.
"""

from __future__ import annotations

import argparse
import collections
import json

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mttlib.augment import DSA
from mttlib.matching import ImageBatchSource, meta_gradient
from mttlib.models import FunctionalModel, make_model


class CallCounter(TorchDispatchMode):
    """Counts the operator calls made inside its ``with`` block, by operator name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count(strategy: str, width: int = 8, device: str = "cpu", steps: int = 30, ipc: int = 10, seed: int = 0) -> dict:
    """Operator calls per student step of one iteration (plans included) at CIFAR-10's shape and ``ipc``."""
    torch.manual_seed(seed)
    fm = FunctionalModel(make_model("convnet", 3, 10, 32, width=width).to(device))
    g = torch.Generator().manual_seed(seed)
    start = fm.flatten()
    target = start + 0.01 * torch.randn(start.shape, generator=g).to(device)
    x = torch.randn(10 * ipc, 3, 32, 32, generator=g).to(device)
    y = torch.arange(10, device=device).repeat_interleave(ipc)
    source = ImageBatchSource(len(x), 32, None, DSA())
    meta_gradient(fm, start, target, x, y, 0.01, source.plans(2, g), source, strategy)  # warm-up
    with CallCounter() as counter:
        plans = source.plans(steps, g)
        meta_gradient(fm, start, target, x, y, 0.01, plans, source, strategy)
    total = sum(counter.calls.values())
    return {"strategy": strategy, "ipc": ipc, "syn_steps": steps, "width": width, "device": device,
            "calls_per_step": round(total / steps, 1), "calls_per_iteration": total,
            "dsa_groups": dict(collections.Counter(p["dsa"].op for p in plans)),
            "top": {k: round(v / steps, 1) for k, v in counter.calls.most_common(12)}, "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", nargs="+", default=["unroll", "recompute"])
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    for strategy in args.strategies:
        print(json.dumps(count(strategy, args.width, args.device, args.steps, args.ipc)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
