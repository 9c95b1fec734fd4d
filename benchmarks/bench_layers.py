"""The ConvNet's written-out layers against PyTorch's own, in one process: time and operator calls.

``mttlib.layers`` gives instance norm, pooling and the classifier hand-written second derivatives, to
cut the operator calls of a student step (what a GPU pays for). This measures what that costs or
saves on the machine at hand: one meta-gradient (CIFAR-10 shape, ipc 10, 100 images per step, DSA)
with the kit's layers and with PyTorch's own (``nn.GroupNorm``, ``nn.AvgPool2d``, ``nn.Linear``: the
reference's), on the same parameters, images and plans. The two sides alternate in one process, so
a machine whose speed drifts (a shared one) slows both alike; the median of ``--rounds`` is reported.

    python benchmarks/bench_layers.py --width 32 --steps 15          # the classroom's shape
    python benchmarks/bench_layers.py --width 128 --steps 5 --rounds 4

Measured alone on a 2-core CPU (2 threads, ``unroll``), both commands above, median seconds per
meta-gradient, kit / PyTorch's own (calls per student step):

    width 32, 15 steps, 8 rounds:   1.97 / 2.11 s (0.93x); a first run 1.82 / 1.78 s (1.02x)   422 / 648 calls
    width 128, 5 steps, 4 rounds:   5.62 / 6.21 s (0.90x); a first run 5.35 / 5.99 s (0.89x)   426 / 647 calls

The image gradients of the two sides differ by 0.3-0.4 % (relative norm): float32 rounding carried
through the student's steps (the layers agree to 1e-10 in float64, ``tests/test_models.py``). The
kit's layers therefore cost nothing on this CPU against PyTorch's own and save a third of the calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from bench_ops import CallCounter
from mttlib import layers
from mttlib.augment import DSA
from mttlib.matching import ImageBatchSource, meta_gradient
from mttlib.models import FunctionalModel, make_model

OWN = {layers.InstanceNorm: nn.GroupNorm, layers.AvgPool2x2: nn.AvgPool2d, layers.Linear: nn.Linear}


def swap(model: nn.Module, side: str) -> None:
    """Give the model's layers the kit's classes or PyTorch's own (same parameters, same attributes)."""
    table = OWN if side == "pytorch" else {v: k for k, v in OWN.items()}
    for m in model.modules():
        if type(m) in table:
            m.__class__ = table[type(m)]


def measure(width: int, steps: int, rounds: int, strategy: str, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = make_model("convnet", 3, 10, 32, width=width)
    fm = FunctionalModel(model)
    g = torch.Generator().manual_seed(seed)
    start = fm.flatten()
    target = start + 0.01 * torch.randn(start.shape, generator=g)
    x, y = torch.randn(100, 3, 32, 32, generator=g), torch.arange(10).repeat_interleave(10)
    source = ImageBatchSource(len(x), 32, None, DSA())
    plans = source.plans(steps, g)
    run = lambda: meta_gradient(fm, start, target, x, y, 0.01, plans, source, strategy)  # noqa: E731
    sides = ("kit", "pytorch")
    seconds: dict[str, list[float]] = {s: [] for s in sides}
    calls, grads = {}, {}
    for side in sides:  # warm-up, calls and the gradient each side gives
        swap(model, side)
        with CallCounter() as counter:
            grads[side] = run()[1].clone()  # (loss, grad_images, grad_syn_lr)
        calls[side] = round(sum(counter.calls.values()) / steps, 1)
    for r in range(rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            swap(model, side)
            began = time.perf_counter()
            run()
            seconds[side].append(time.perf_counter() - began)
    rel = float((grads["kit"] - grads["pytorch"]).norm() / grads["pytorch"].norm())
    return {"width": width, "syn_steps": steps, "strategy": strategy, "rounds": rounds,
            "threads": torch.get_num_threads(), "calls_per_step": calls,
            "s_median": {s: round(statistics.median(v), 3) for s, v in seconds.items()},
            "s_min": {s: round(min(v), 3) for s, v in seconds.items()},
            "kit_over_pytorch": round(statistics.median(seconds["kit"]) / statistics.median(seconds["pytorch"]), 3),
            "grad_images_rel_diff": rel}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--strategy", default="unroll", choices=["unroll", "recompute"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.width, args.steps, args.rounds, args.strategy)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
