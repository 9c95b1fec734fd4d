"""Time and memory of one distillation iteration at the paper's ImageNet-subset settings.

The setting is the paper's for an ImageNet subset at ipc 10: ten classes of 3x128x128 images,
a ConvNetD5 of width 128 (instance norm, ReLU, average pooling), ``syn_steps`` = 20 student
steps of ``batch_syn`` = 20 of the 100 synthetic images each, DSA on. The expert is a random
walk of the right size: what an iteration costs does not depend on what the trajectory holds.

Every configuration runs in its own Python process, so its peak resident memory (from
``resource.getrusage`` in that process) belongs to it alone. Before a configuration runs, its
memory is estimated with :func:`mttlib.memory.estimate_memory`; one that would not fit into
the memory the machine has free (``MemAvailable`` of ``/proc/meminfo``, with a safety margin)
is skipped and reported as such rather than started, since ``unroll`` at these settings needs
about 20 GB.

One JSON object per line on stdout::

    python benchmarks/bench_imagenet_iteration.py                         # recompute and unroll, 20 steps
    python benchmarks/bench_imagenet_iteration.py --strategies unroll --steps 4 8   # how unroll grows

Fields: ``strategy``, ``ipc``, ``syn_steps``, ``batch_syn``, ``width``, ``image_size``,
``s_per_iter`` (mean over the timed iterations), ``cpu_s_per_iter`` (process CPU time: with
other jobs on the machine it says what the iteration would take alone), ``peak_rss_mb`` (whole
process), ``baseline_rss_mb`` (after set-up and warm-up, before the first timed iteration),
``estimate_mb``, ``threads``, ``load_before``/``load_after`` (1-minute load average), ``torch``;
or ``skipped`` with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

from _child import run_in_child  # benchmarks/ is on sys.path when a script runs

CLASSES, IMAGE_SIZE, MODEL = 10, 128, "convnetd5"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _available_mb() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _estimate_mb(spec: dict) -> float:
    from mttlib.memory import estimate_memory
    from mttlib.models import make_model

    model = make_model(MODEL, 3, CLASSES, IMAGE_SIZE, width=spec["width"])
    n = CLASSES * spec["ipc"]
    batch = min(spec["batch_syn"] or n, n)
    return estimate_memory(model, batch, (3, IMAGE_SIZE, IMAGE_SIZE), spec["syn_steps"], spec["strategy"],
                           num_images=n) / 2**20


def child(spec: dict) -> dict:
    """Set up one configuration in this process, warm up, time ``spec['iters']`` iterations."""
    import torch

    from mttlib import distill as D, matching
    from mttlib.augment import OPS
    from mttlib.data import ImageData
    from mttlib.trajectory import Trajectory
    from mttlib.models import FunctionalModel, make_model

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n_real = CLASSES * spec["ipc"]
    data = ImageData(name="random-imagenet-subset-shape",
                     train_images=torch.randint(0, 256, (n_real, 3, IMAGE_SIZE, IMAGE_SIZE), generator=g,
                                                dtype=torch.uint8),
                     train_labels=torch.arange(CLASSES).repeat_interleave(spec["ipc"]),
                     test_images=torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8),
                     test_labels=torch.zeros(1, dtype=torch.long), classes=[str(c) for c in range(CLASSES)],
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    model = make_model(MODEL, 3, CLASSES, IMAGE_SIZE, width=spec["width"])
    start = FunctionalModel(model).flatten()
    walk = torch.cumsum(0.01 * torch.randn(3, start.numel(), generator=g), 0)
    expert = Trajectory(torch.cat([start[None], start[None] + walk]), {"config": {"zca": False}})
    config = D.DistillConfig(dataset=data.name, ipc=spec["ipc"], model=MODEL, model_kwargs={"width": spec["width"]},
                             syn_steps=spec["syn_steps"], batch_syn=spec["batch_syn"], expert_epochs=2,
                             max_start_epoch=1, lr_img=1000.0, lr_lr=1e-6, lr_teacher=0.01, init="real",
                             iterations=spec["iters"], strategy=spec["strategy"])
    distiller = D.Distiller(config, [expert], data, device=spec.get("device"))
    # warm-up: one one-step meta-gradient per DSA operation on two images, so that setting up
    # each operation's kernels is not charged to the timed iteration
    x, y = distiller.images.detach()[:2], distiller.labels[:2]
    source = matching.ImageBatchSource(2, (IMAGE_SIZE, IMAGE_SIZE), None, distiller.source.dsa)
    theta = expert[0].to(x.device)
    seen: set[str] = set()
    while seen != set(OPS):
        plans = source.plans(1, g)
        seen.add(plans[0]["dsa"].op)
        matching.meta_gradient(distiller.fm, theta, theta + 0.01, x, y, 0.01, plans, source, spec["strategy"])
    baseline = _rss_mb()
    load_before = os.getloadavg()[0]
    walls, cpus = [], []
    for _ in range(spec["iters"]):
        began, began_cpu = time.perf_counter(), time.process_time()
        distiller.step()
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - began_cpu)
    peak = _rss_mb()
    return {"strategy": spec["strategy"], "ipc": spec["ipc"], "syn_steps": spec["syn_steps"],
            "batch_syn": spec["batch_syn"], "width": spec["width"], "image_size": IMAGE_SIZE, "model": MODEL,
            "s_per_iter": round(sum(walls) / len(walls), 2), "cpu_s_per_iter": round(sum(cpus) / len(cpus), 2),
            "iters": len(walls), "peak_rss_mb": round(peak, 1), "baseline_rss_mb": round(baseline, 1),
            "estimate_mb": round(spec["estimate_mb"], 1), "threads": torch.get_num_threads(),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    """Run each configuration in a child process and print one JSON line per configuration."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", nargs="+", default=["recompute", "unroll"], choices=["recompute", "unroll"])
    p.add_argument("--steps", type=int, nargs="+", default=[20], help="syn_steps values (paper: 20)")
    p.add_argument("--ipc", type=int, default=10, help="images per class (paper table: 1 and 10)")
    p.add_argument("--batch-syn", type=int, default=20, help="synthetic images per student step (paper: 20; 0 = all)")
    p.add_argument("--width", type=int, default=128, help="ConvNetD5 width (paper: 128)")
    p.add_argument("--iters", type=int, default=1, help="timed iterations per configuration")
    p.add_argument("--margin", type=float, default=0.8,
                   help="run a configuration only if its estimate is below this fraction of the free memory")
    p.add_argument("--device", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    failed = 0
    for steps in args.steps:
        for strategy in args.strategies:
            spec = dict(strategy=strategy, ipc=args.ipc, syn_steps=steps, batch_syn=args.batch_syn or None,
                        width=args.width, iters=args.iters, device=args.device)
            spec["estimate_mb"] = _estimate_mb(spec)
            free = _available_mb()
            if args.device in (None, "cpu") and free is not None and spec["estimate_mb"] > args.margin * free:
                print(json.dumps({**spec, "skipped": f"estimated {spec['estimate_mb']:.0f} MB, but only {free:.0f} MB "
                                  f"are free (runs below {args.margin:.0%} of that)"}), flush=True)
                continue
            failed += not run_in_child(os.path.abspath(__file__), spec)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
