"""How much memory one distillation iteration needs per meta-gradient strategy, and the ``auto``
choice of the faster one that fits: ``unroll`` (memory grows with ``syn_steps``) when it fits in a
quarter of the device's memory and, on a CPU, is small enough to be the faster; else ``recompute``
(flat). Taught in notebook ``03_imagenet_subsets``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
from typing import Sequence

import torch
from torch import Tensor, nn

from mttlib.matching import STRATEGIES, step_gradient
from mttlib.models import FunctionalModel

__all__ = ["STRATEGIES", "step_activation_bytes", "estimate_memory", "choose_strategy", "report",
           "keep_freed_memory"]


def step_activation_bytes(model: nn.Module, batch: int, image_shape: Sequence[int]) -> int:
    """Bytes autograd keeps for one student step on ``batch`` images, measured: the storages saved by
    one ``create_graph`` step at batch sizes 1 and 2 (saved-tensor hooks), extrapolated to ``batch``."""
    fm = FunctionalModel(model)
    param = next(model.parameters())
    sizes = []
    for n in (1, 2):
        seen: dict[int, int] = {}

        def pack(t: Tensor) -> Tensor:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
            return t

        theta = fm.flatten().to(param.device).requires_grad_(True)
        x = torch.zeros(n, *image_shape, device=param.device, requires_grad=True)
        y = torch.zeros(n, dtype=torch.long, device=param.device)
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            g = step_gradient(fm, theta, x, y, create_graph=True)
            _ = theta - 0.01 * g
        sizes.append(sum(seen.values()))
    per_image = max(sizes[1] - sizes[0], 0)
    return int(sizes[0] + per_image * (batch - 1))


# Calibration against measured peaks (benchmarks/bench_distill.py: ConvNet, CIFAR-10 shape, CPU):
# an unrolled step costs about 1.2x the bytes autograd saves for it (buffers that live alongside),
# and the backward pass adds about one step more; recompute holds one step's graph plus the
# gradient buffers of its double backward, about 2.5 steps.
_UNROLL_PER_STEP, _UNROLL_EXTRA, _RECOMPUTE_STEPS = 1.2, 1.0, 2.5


def estimate_memory(model: nn.Module, batch: int, image_shape: Sequence[int], syn_steps: int, strategy: str, *,
                    num_images: int | None = None) -> int:
    """Estimated peak bytes of one iteration beyond PyTorch's baseline, from :func:`step_activation_bytes`
    calibrated on measured peaks: ``unroll`` ``(1.2 syn_steps + 1) x step``, ``recompute`` ``2.5 x step +
    (syn_steps + 2) x parameters``, both plus the images three times (values, gradient, momentum).
    ``batch`` is the images per student step; ``num_images`` the size of the set (default ``batch``)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    step = step_activation_bytes(model, batch, image_shape)
    param_bytes = 4 * sum(p.numel() for p in model.parameters())
    images = 3 * 4 * (num_images or batch) * math.prod(image_shape)
    if strategy == "unroll":
        return int((_UNROLL_PER_STEP * syn_steps + _UNROLL_EXTRA) * step + 2 * param_bytes + images)
    return int(_RECOMPUTE_STEPS * step + (syn_steps + 2) * param_bytes + images)


def _device_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a small laptop
        return 8 * 2**30


def choose_strategy(model: nn.Module, batch: int, image_shape: Sequence[int], syn_steps: int,
                    device: str | torch.device | None = None, budget: float = 0.25) -> str:
    """The faster strategy that fits: ``"unroll"`` unless the unrolled graph (:func:`estimate_memory`) would
    take more than ``budget`` of the device's memory (RAM for the CPU), then ``"recompute"``. Where both fit,
    unroll was the faster on every device measured (a CPU at widths 32 and 128, an H200; README,
    "Distillation"), so memory alone decides. Deterministic on a given machine, so a resumed run makes the
    same choice."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    need = estimate_memory(model, batch, image_shape, syn_steps, "unroll")
    return "recompute" if need > budget * _device_memory(device) else "unroll"


def report(model: nn.Module, image_shape: Sequence[int], num_images: int, batch_syn: int | None, syn_steps: int,
           strategy: str = "auto") -> str:
    """A few lines for a person: the estimated memory of one iteration per strategy, this run's marked."""
    batch, shape = min(batch_syn or num_images, num_images), tuple(image_shape)
    chosen = strategy if strategy != "auto" else choose_strategy(model, batch, shape, syn_steps)
    gib = {name: estimate_memory(model, batch, shape, syn_steps, name, num_images=num_images) / 2**30
           for name in STRATEGIES}
    return "estimated memory per iteration (measured activations of one student step, beyond PyTorch itself):" + \
        "".join(f"\n  {n:<9} {g:7.2f} GiB{'  <- this run' if n == chosen else ''}" for n, g in gib.items())


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse: every iteration frees and reallocates the same large
    buffers, which the kernel would zero-fill again (``benchmarks/bench_distill.py --keep-freed-memory``
    measures it). It changes the whole process, so only ``python -m mttlib distill`` calls it, on the
    CPU, unless ``--no-keep-freed-memory``. False where it does not apply (not Linux/glibc)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(-3, 32 * 2**20) and mallopt(-1, 2**31 - 1))  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
