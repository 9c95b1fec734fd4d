"""Mixed precision against float32: how far the meta-gradient turns, and what it saves in time.

The setting is the classroom one: cifar10-mini, a ConvNet of width 32, ipc 1, 12 student steps,
expert_epochs 2, start epochs below 4, DSA, the classroom experts (trained into the kit's runs
folder when missing, as the notebooks do). Each iteration draws an expert, a start epoch and the
student's plans once; the meta-gradient is then taken in float32 and in each lower precision on
the very same inputs (the order alternates from one iteration to the next, so a machine that gets
busier or quieter affects both alike), and the float32 one updates the images, as a float32 run
would. ``cosine``: between the float32 and the lower-precision gradient wrt the images.
``iteration``: the time of the meta-gradient, which is nearly all of an iteration. Expert
epochs (``mttlib.train.train``, one epoch on the 5,000 images, batch 256, DSA) alternate too.

    python benchmarks/bench_precision.py                          # 20 iterations, 2 expert epochs each
    python benchmarks/bench_precision.py --device cuda --precisions bf16 fp16

Prints one JSON object per line: ``expert_epoch`` (seconds and images/s per precision),
``iteration`` (seconds per precision) and ``cosine`` (min, median, mean per lower precision, and
the relative differences of the loss and of the ``syn_lr`` gradient), each with the load average.

Measured on the kit's 2-core machine (AVX-512 BF16), torch 2.14, while other jobs kept its load
average between 4 and 13, so the timings are indicative only:

- ``python benchmarks/bench_precision.py`` (2 threads, load 9-13): cosine fp32/bf16 over 20
  iterations (strategy ``unroll``) min 0.9984, median 0.9990, mean 0.9990; the loss differs by at
  most 0.16 %, the ``syn_lr`` gradient by 0.16 % (median). Its timings (expert epoch 52 s vs
  83 s) measured threads waiting for a busy machine's cores, not arithmetic.
- ``--threads 1 --iters 8`` (load 7): expert epoch fp32 17.0 s vs bf16 13.0 s (1.3x); iteration
  fp32 0.68 s vs bf16 0.62 s (1.1x); cosine min 0.9984, median 0.9989.
- ``--threads 1 --iters 8 --epoch-repeats 0 --strategy recompute`` (load 4): iteration 0.58 s
  vs 0.55 s (1.05x); cosine min 0.9982, median 0.9990, mean 0.9989.

On this CPU bfloat16 saves little time; the point of the option is a GPU's tensor cores.

What it costs in accuracy at classroom size, measured alone on the idle machine with the command line
(width-32 ConvNet, cifar10-mini, 3 networks of 300 epochs per row; the float32 experts are the classroom ones):

    experts (3 x 10 epochs), final test accuracy   fp32 36.4 %        bf16 36.3 %
      python -m mttlib experts --dataset cifar10-mini --ipc 10 --preset classroom --precision bf16 --out DIR
    distillation ipc 1, evaluated in float32        fp32 30.1 ± 1.1 %  bf16 30.2 ± 0.9 %
      python -m mttlib distill --dataset cifar10-mini --ipc 1 --preset classroom --experts DIR --strategy unroll
          --precision bf16 --out RUN, then python -m mttlib evaluate --set RUN/distilled.pt --model-kwargs
          '{"width": 32}' --runs 3 --epochs 300
    evaluation of the float32 set (--precision)     fp32 30.1 ± 1.1 %  bf16 30.0 ± 1.0 %
    evaluation of random real ipc 10                fp32 29.3 ± 0.9 %  bf16 29.4 ± 1.2 %

Every difference is within 0.5 points, which is well inside the spread between networks. bfloat16 stays an option
rather than the default, because at this width it is not faster on this CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

from mttlib.augment import DSA
from mttlib.data import load_dataset
from mttlib.distill import DistillConfig, Distiller
from mttlib.experts import classroom_config, ensure_experts
from mttlib.matching import meta_gradient
from mttlib.models import make_model
from mttlib.presets import get_preset
from mttlib.train import pick_device, train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _bf16_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return []
    return sorted(f for f in set(flags) if "bf16" in f or f.startswith("amx"))


def expert_epochs(data, precisions: list[str], repeats: int, width: int, device: torch.device) -> dict:
    """One epoch of ``train`` per precision and repeat, alternating; seconds and images/s."""
    x, y = data.train_tensors(device)
    seconds: dict[str, list[float]] = {p: [] for p in precisions}
    for r in range(repeats):
        for p in (precisions if r % 2 == 0 else precisions[::-1]):
            torch.manual_seed(0)
            net = make_model("convnet", data.channels, data.num_classes, data.image_size, width=width).to(device)
            _sync(device)
            began = time.perf_counter()
            train(net, x, y, epochs=1, lr=0.01, dsa=DSA(data.dsa_strategy), shuffle=torch.Generator().manual_seed(r),
                  precision=p)
            _sync(device)
            seconds[p].append(time.perf_counter() - began)
    med = {p: statistics.median(v) for p, v in seconds.items()}
    return {"what": "expert_epoch", "images": len(x), "width": width, "repeats": repeats,
            "seconds_median": {p: round(v, 2) for p, v in med.items()},
            "seconds_runs": {p: [round(s, 2) for s in v] for p, v in seconds.items()},
            "images_per_s": {p: round(len(x) / v, 1) for p, v in med.items()},
            "speedup_vs_fp32": {p: round(med["fp32"] / v, 2) for p, v in med.items()}}


def iterations(data, experts, precisions: list[str], iters: int, strategy: str, device: torch.device) -> list[dict]:
    """``iters`` classroom iterations of a float32 run, each meta-gradient also taken in the other precisions."""
    preset = get_preset(data.name, 1, "classroom")
    config = DistillConfig.from_preset(preset, iterations=iters, strategy=strategy)
    run = Distiller(config, experts, data, device=device)
    seconds: dict[str, list[float]] = {p: [] for p in precisions}
    cos: dict[str, list[float]] = {p: [] for p in precisions[1:]}
    loss_rel: dict[str, list[float]] = {p: [] for p in precisions[1:]}
    lr_rel: dict[str, list[float]] = {p: [] for p in precisions[1:]}
    for i in range(iters):
        draw = run.draw()
        start, target = run.segment(draw)
        out = {}
        for p in (precisions if i % 2 == 0 else precisions[::-1]):
            _sync(device)
            began = time.perf_counter()
            out[p] = meta_gradient(run.fm, start, target, run.images, run.labels, run.syn_lr, draw.plans, run.source,
                                   run.strategy, precision=p)
            _sync(device)
            seconds[p].append(time.perf_counter() - began)
        loss, gx, glr = out["fp32"]
        for p in precisions[1:]:
            cos[p].append(float(F.cosine_similarity(out[p][1].flatten(), gx.flatten(), dim=0)))
            loss_rel[p].append(abs(float(out[p][0] - loss)) / abs(float(loss)))
            lr_rel[p].append(abs(float(out[p][2] - glr)) / abs(float(glr)))
        run.images.grad, run.syn_lr.grad = gx, glr.reshape(())  # the float32 run goes on, as Distiller.step
        run.opt_img.step()
        run.opt_lr.step()
        run.images.grad = run.syn_lr.grad = None
        run.iteration += 1
    med = {p: statistics.median(v) for p, v in seconds.items()}
    rows = [{"what": "iteration", "strategy": run.strategy, "ipc": config.ipc, "syn_steps": config.syn_steps,
             "iters": iters, "seconds_median": {p: round(v, 3) for p, v in med.items()},
             "seconds_min": {p: round(min(v), 3) for p, v in seconds.items()},
             "speedup_vs_fp32": {p: round(med["fp32"] / v, 2) for p, v in med.items()}}]
    for p in precisions[1:]:
        rows.append({"what": "cosine", "precision": p, "strategy": run.strategy, "iters": iters,
                     "min": round(min(cos[p]), 4), "median": round(statistics.median(cos[p]), 4),
                     "mean": round(statistics.mean(cos[p]), 4), "values": [round(c, 4) for c in cos[p]],
                     "loss_rel_diff_max": round(max(loss_rel[p]), 5),
                     "syn_lr_grad_rel_diff_median": round(statistics.median(lr_rel[p]), 4)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--precisions", nargs="+", default=["bf16"], choices=["bf16", "fp16"],
                   help="compared with fp32 (fp16: CUDA only)")
    p.add_argument("--iters", type=int, default=20, help="distillation iterations (cosines)")
    p.add_argument("--epoch-repeats", type=int, default=2, help="expert epochs per precision (0: skip)")
    p.add_argument("--strategy", default="auto", choices=["auto", "unroll", "recompute"])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default PyTorch's; 1 times a busy machine more steadily)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    precisions = ["fp32"] + args.precisions
    common = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "cpu_bf16_flags": _bf16_flags()}
    data = load_dataset("cifar10-mini")
    load = _load()
    if args.epoch_repeats:
        row = expert_epochs(data, precisions, args.epoch_repeats, 32, device)
        print(json.dumps({**row, **common, "load_before": load, "load_after": _load()}), flush=True)
    experts = ensure_experts(data, classroom_config(), 2, device=device, progress=False)
    load = _load()
    for row in iterations(data, experts, precisions, args.iters, args.strategy, device):
        print(json.dumps({**row, **common, "load_before": load, "load_after": _load()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
