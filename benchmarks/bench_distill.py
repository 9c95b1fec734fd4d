"""Time and memory of one distillation iteration, per meta-gradient strategy.

Every configuration runs in its own Python process, so its peak resident memory (from
``resource.getrusage`` in that process) belongs to it alone. The setting is CIFAR-10's shape
(3x32x32, 10 classes), a ConvNet of width 128 and depth 3, DSA on, every synthetic image in every
student step (``batch_syn`` = all, as the paper's CIFAR-10 runs). Experts are random walks of the
right size: the cost of an iteration does not depend on what the trajectory holds.

One JSON object per line on stdout::

    python benchmarks/bench_distill.py                      # ipc 1 and 10, 10/20/40 steps, both strategies, + ipc 50
    python benchmarks/bench_distill.py --ipc 10 --steps 20 --strategies recompute --iters 1
    python benchmarks/bench_distill.py --ipc 10 --steps 10 20 --no-ipc50 --reference ../mtt-distillation

``--reference DIR`` (a checkout of github.com/GeorgeCazenavette/mtt-distillation) adds the strategy
``reference``: the reference's own inner loop, modules and augmentation on the same shapes, in its own
process, so the three sides are measured side by side in one run. Measured that way, alone on the kit's idle
2-core machine (torch 2.14, 2 threads, ``--ipc 10 --steps 10 20 --no-ipc50 --reference DIR``), seconds per
iteration and peak resident MB, before and after the ConvNet pooled by pair sums (``mttlib.zoo.AvgPool2x2``):

    steps          reference       unroll          recompute
    10, before     15.7 s  4,113   16.9 s  4,241   19.0 s  1,349
    10, after      14.6 s  4,097   14.3 s  4,529   15.5 s  1,455
    20, before     34.0 s  7,205   37.5 s  7,425   36.8 s  1,403
    20, after      29.7 s  7,247   31.5 s  8,013   30.4 s  1,466

The timings move by about 10 % between runs on this machine (the reference's did too), so compare within a row.

Fields: ``strategy``, ``ipc``, ``syn_steps``, ``width``, ``s_per_iter`` (median over the timed
iterations), ``s_min``, ``cpu_s_per_iter`` (process CPU time, all threads), ``peak_rss_mb`` (whole
process), ``baseline_rss_mb`` (after set-up,
before the first iteration), ``estimate_mb`` (:func:`mttlib.memory.estimate_memory`),
``threads``, ``load_before``/``load_after`` (1-minute load average: other processes on the
machine slow the timings down), ``torch``. On a shared machine the timings swing with the load:
OpenMP threads that wait for each other lose much more than their share when another process
holds a core, so compare ``s_min`` and ``cpu_s_per_iter`` too (or pass ``--threads 1``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

from _child import run_in_child  # benchmarks/ is on sys.path when a script runs


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _measure(step, iters: int) -> dict:
    """Time ``iters`` calls of ``step`` (wall and process CPU seconds; on CUDA each call waits for the GPU to
    finish) and read this process's memory and the machine's load around them: the fields every side reports."""
    import torch

    def sync() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    baseline, load_before = _rss_mb(), os.getloadavg()[0]
    times, cpu = [], []
    for _ in range(iters):
        sync()
        began, began_cpu = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    return {"s_per_iter": round(statistics.median(times), 3), "s_min": round(min(times), 3),
            "cpu_s_per_iter": round(statistics.median(cpu), 3), "iters": len(times), "peak_rss_mb": round(_rss_mb(), 1),
            "baseline_rss_mb": round(baseline, 1), "threads": torch.get_num_threads(),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "torch": torch.__version__}


def _warm_up(distiller) -> None:
    """One tiny meta-gradient per DSA operation: PyTorch sets up kernels the first time they run
    (seconds in all), which must not be charged to the first timed iteration."""
    import torch

    from mttlib import matching
    from mttlib.augment import OPS

    x, y = distiller.images.detach()[:2], distiller.labels[:2]
    start = distiller.experts[0][0].to(x.device)
    source = matching.ImageBatchSource(2, tuple(x.shape[-2:]), None, distiller.source.dsa)
    g = torch.Generator().manual_seed(0)
    seen: set[str] = set()
    while seen != set(OPS):
        plans = source.plans(1, g)
        seen.add(plans[0]["dsa"].op)
        for strategy in matching.STRATEGIES:
            matching.meta_gradient(distiller.fm, start, start + 0.01, x, y, 0.01, plans, source, strategy)


def child(spec: dict) -> dict:
    """Run ``spec['iters']`` iterations of one configuration in this process and measure them."""
    import torch

    from mttlib import distill as D, memory
    from mttlib.data import ImageData
    from mttlib.trajectory import Trajectory
    from mttlib.models import FunctionalModel, make_model

    if spec.get("keep_freed_memory"):
        from mttlib.memory import keep_freed_memory

        keep_freed_memory()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    classes, size, width = 10, 32, spec["width"]
    n_real = classes * 2
    g = torch.Generator().manual_seed(0)
    data = ImageData(name="random-cifar-shape",
                     train_images=torch.randint(0, 256, (n_real, 3, size, size), generator=g, dtype=torch.uint8),
                     train_labels=torch.arange(classes).repeat(2), test_images=torch.zeros(1, 3, size, size,
                                                                                             dtype=torch.uint8),
                     test_labels=torch.zeros(1, dtype=torch.long), classes=[str(c) for c in range(classes)],
                     mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    model = make_model("convnet", 3, classes, size, width=width)
    start = FunctionalModel(model).flatten()
    walk = torch.cumsum(0.01 * torch.randn(4, start.numel(), generator=g), 0)
    expert = Trajectory(torch.cat([start[None], start[None] + walk]), {"config": {"zca": False}})
    config = D.DistillConfig(dataset=data.name, ipc=spec["ipc"], model="convnet", model_kwargs={"width": width},
                             syn_steps=spec["syn_steps"], expert_epochs=2, max_start_epoch=2, init="noise",
                             lr_img=100.0, lr_lr=1e-7, lr_teacher=0.01, iterations=spec["iters"] + 1,
                             strategy=spec["strategy"], cuda_graph=bool(spec.get("cuda_graph", True)))
    distiller = D.Distiller(config, [expert], data, device=spec.get("device"))
    _warm_up(distiller)
    began = time.perf_counter()
    distiller.step()  # the first iteration records the CUDA graph where there is one
    first_s = time.perf_counter() - began
    measured = _measure(distiller.step, spec["iters"])
    measured.update(first_iteration_s=round(first_s, 3), cuda_graph=bool(distiller.capture),
                    capture_note=distiller.capture_note)
    n = classes * spec["ipc"]
    estimate = memory.estimate_memory(model, n, (3, size, size), spec["syn_steps"], spec["strategy"], num_images=n)
    return {"strategy": spec["strategy"], "ipc": spec["ipc"], "syn_steps": spec["syn_steps"], "width": width,
            **measured, "estimate_mb": round(estimate / 2**20, 1),
            "keep_freed_memory": bool(spec.get("keep_freed_memory"))}


def _import_reference(folder: str):
    """The reference implementation's ConvNet, ReparamModule, DiffAugment and ParamDiffAug from a checkout of
    github.com/GeorgeCazenavette/mtt-distillation. Its ``utils`` imports kornia and scipy at the top for code an
    iteration never runs (ZCA, rotation on the CPU data path); where they are missing, empty stand-ins let the import
    succeed, and an iteration that touched them would fail loudly."""
    import importlib
    import types

    for name in ("kornia", "scipy", "scipy.ndimage", "scipy.ndimage.interpolation"):
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
    sys.modules["scipy.ndimage.interpolation"].__dict__.setdefault("rotate", None)
    sys.path.insert(0, os.path.abspath(folder))
    networks, reparam, utils = (importlib.import_module(m) for m in ("networks", "reparam_module", "utils"))
    return networks.ConvNet, reparam.ReparamModule, utils.DiffAugment, utils.ParamDiffAug


def reference_child(spec: dict) -> dict:
    """One configuration through the reference's inner loop, as its ``distill.py`` runs it: a ``ReparamModule``
    student, a list of flat parameter vectors, ``DiffAugment`` with its own random draws, the normalised matching
    loss, ``backward`` and SGD with momentum 0.5 on the pixels and ``syn_lr``. Same shapes as :func:`child`."""
    import torch
    import torch.nn.functional as F

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    ConvNet, ReparamModule, DiffAugment, ParamDiffAug = _import_reference(spec["reference"])
    torch.manual_seed(0)
    classes, size, width, n = 10, 32, spec["width"], 10 * spec["ipc"]
    device = torch.device(spec.get("device") or "cpu")
    net = ConvNet(channel=3, num_classes=classes, net_width=width, net_depth=3, net_act="relu",
                  net_norm="instancenorm", net_pooling="avgpooling", im_size=(size, size)).to(device)
    start = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    student_net = ReparamModule(net)  # takes the parameters out of net
    target = start + 0.01 * torch.randn_like(start)
    num_params = start.numel()
    images = torch.randn(n, 3, size, size, device=device).requires_grad_(True)
    labels = torch.arange(classes, device=device).repeat_interleave(spec["ipc"])
    syn_lr = torch.tensor(0.01, device=device).requires_grad_(True)
    opt_img = torch.optim.SGD([images], lr=100.0, momentum=0.5)
    opt_lr = torch.optim.SGD([syn_lr], lr=1e-7, momentum=0.5)
    param = ParamDiffAug()
    strategy = "color_crop_cutout_flip_scale_rotate"

    def iteration() -> None:
        params = [start.clone().requires_grad_(True)]
        for _ in range(spec["syn_steps"]):  # batch_syn = every image, as the kit's side
            x = DiffAugment(images, strategy, param=param)
            ce = F.cross_entropy(student_net(x, flat_param=params[-1]), labels)
            grad = torch.autograd.grad(ce, params[-1], create_graph=True)[0]
            params.append(params[-1] - syn_lr * grad)
        loss = F.mse_loss(params[-1], target, reduction="sum") / num_params
        loss = loss / (F.mse_loss(start, target, reduction="sum") / num_params)
        opt_img.zero_grad()
        opt_lr.zero_grad()
        loss.backward()
        opt_img.step()
        opt_lr.step()

    iteration()  # warm-up, as the kit's side
    return {"strategy": "reference", "ipc": spec["ipc"], "syn_steps": spec["syn_steps"], "width": width,
            **_measure(iteration, spec["iters"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40])
    p.add_argument("--strategies", nargs="+", default=["unroll", "recompute"])
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--iters", type=int, default=None,
                   help="timed iterations per configuration (default 3 at ipc 1, 2 above)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="as `python -m mttlib distill` does on the CPU: glibc keeps freed memory (fewer page faults)")
    p.add_argument("--no-ipc50", action="store_true", help="skip CIFAR-10 ipc 50, 30 steps, recompute, 1 iteration")
    p.add_argument("--device", default=None)
    p.add_argument("--reference", default=None, metavar="DIR",
                   help="a checkout of the reference implementation: its inner loop runs as the strategy 'reference'")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(reference_child(spec) if spec["strategy"] == "reference" else child(spec)), flush=True)
        return 0
    strategies = args.strategies + (["reference"] if args.reference and "reference" not in args.strategies else [])
    if "reference" in strategies and not args.reference:
        p.error("the strategy 'reference' needs --reference DIR (a checkout of the reference implementation)")
    specs = [dict(ipc=ipc, syn_steps=steps, strategy=strategy, width=args.width,
                  iters=args.iters or (3 if ipc == 1 else 2), device=args.device, threads=args.threads,
                  keep_freed_memory=args.keep_freed_memory, reference=args.reference)
             for ipc in args.ipc for steps in args.steps for strategy in strategies]
    if not args.no_ipc50:
        specs.append(dict(ipc=50, syn_steps=30, strategy="recompute", width=args.width, iters=1, device=args.device,
                          threads=args.threads, keep_freed_memory=args.keep_freed_memory))
    failed = 0
    for spec in specs:
        failed += not run_in_child(os.path.abspath(__file__), spec)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
