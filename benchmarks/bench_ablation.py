"""Ablation of the follow-ups to trajectory matching: MTT alone, then one option added at a time.

On the embedded ``cifar10-mini`` at classroom size, with the *same* experts for every variant
(the classroom expert preset, trained once into ``--runs`` or reused from there), the script
distils one set per variant and ipc and evaluates every set with one recipe (the experts'
network, the same number of networks, epochs and seeds, DSA, SGD momentum 0.9, weight decay
5e-4, the set's learned ``syn_lr``, lr x0.1 at half-time). The variants
(``mttlib.presets.FOLLOWUPS``):

* ``mtt`` -- the paper's method, nothing added;
* ``datm-labels`` -- DATM's learned soft labels;
* ``tesla`` -- TESLA's fixed soft labels (an expert's softmax);
* ``datm-schedule`` -- DATM's rising window of start epochs, from real images an expert
  classifies correctly;
* ``ftd-ema`` -- FTD's moving average of the images.

Every set is evaluated with its hard labels. A set with soft labels is evaluated with them as
well, and that line says ``"labels": "soft"``: those networks learn partly from an expert's
outputs (knowledge distillation), so the number is not comparable with the hard-label ones. A set
with a moving average is evaluated twice, the raw images and the average (``"images": "ema"``).

Output: one JSON object per evaluation on stdout (variant, ipc, images, labels, accuracy mean,
std and runs in percent, number of networks, seconds of distillation and evaluation,
iterations), the same rows in ``<outputs>/results/ablation.json`` (``ablation_smoke.json`` with
``--smoke``), which notebook 05 shows, and a summary table on stderr::

    python benchmarks/bench_ablation.py --runs runs            # classroom size, ipc 1 and 10
    python benchmarks/bench_ablation.py --runs runs-smoke --smoke  # a minute or two: checks that it runs

Distilled sets are kept under ``<runs>/ablation/``; a second invocation with the same folder
resumes or reuses them (its ``distill_s`` is then the time of this invocation, and
``distill_compute_s`` the per-iteration seconds recorded by the run). After the variants of an ipc
come two baselines under the same recipe (lr 0.01): random real images, and the real images the
variants start from, with hard labels and with TESLA's soft labels (knowledge distillation alone:
what a soft-label row must beat). ``--no-baselines`` skips them. ``--iterations``,
``--eval-runs``, ``--eval-epochs`` and ``--variants`` shrink a run.

Measured with ``--runs runs --ipc 1 --threads 1`` on a 2-core CPU shared with other jobs (load
1-3): 325 s for the variants (about 40 s of distillation and 15 s of evaluation each); run again
with the baselines, reusing the distilled sets, 134 s (the evaluations agree with the first run's
to 0.2 points). Accuracy %, mean ± std of 3 networks of 300 epochs, 100 iterations per variant::

    variant        images  labels  accuracy %
    random real    random  hard    16.4 ± 0.4
    real start     start   hard    12.5 ± 0.8
    real start     start   soft    18.8 ± 0.6   knowledge distillation alone
    mtt            raw     hard    30.3 ± 0.5
    tesla          raw     hard    11.6 ± 0.5   images made for soft labels
    tesla          raw     soft    20.0 ± 1.2
    datm-labels    raw     hard    14.0 ± 0.1   images made for soft labels
    datm-labels    raw     soft    28.2 ± 0.3
    datm-schedule  raw     hard    30.3 ± 0.3   starts from other real images
    ftd-ema        raw     hard    30.3 ± 0.5   the same images as mtt
    ftd-ema        ema     hard    29.6 ± 0.6

At this size none of the follow-ups beats plain MTT: TESLA's labels come from a 10-epoch expert at
epoch 4 whose probabilities are nearly flat (0.12 on the image's own class on average); the
classroom experts have no long, hard late segments for DATM's schedule to postpone; over 100
iterations FTD's average lags behind images that still improve. Notebook 05 shows this table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from mttlib.data import ImageData, load_dataset
from mttlib.distill import DistillConfig
from mttlib.run import DistillResult, distill
from mttlib.distill import Distiller
from mttlib.evaluate import EvalResult, evaluate_random_real, evaluate_set, evaluate_soft_and_hard
from mttlib.experts import ensure_experts, expert_dir
from mttlib.experts import classroom_config, smoke_config
from mttlib.io import atomic_write_json
from mttlib.io import outputs_dir, runs_dir
from mttlib.presets import FOLLOWUPS, followup_overrides, get_preset

DATASET = "cifar10-mini"
VARIANTS = ("mtt", "datm-labels", "tesla", "datm-schedule", "ftd-ema")


def variant_config(variant: str, ipc: int, size: str, iterations: int = 0) -> DistillConfig:
    """The distillation config of a variant: the preset of ``size`` plus the variant's bundle."""
    preset = get_preset(DATASET, ipc, size)
    if iterations:
        preset = preset.replace(iterations=iterations)  # bundles that scale with the run see the new length
    return DistillConfig.from_preset(preset, **followup_overrides(variant, preset))


def _row(variant: str, config: DistillConfig, result: DistillResult, images: str, ev: EvalResult,
         distill_s: float, eval_s: float) -> dict[str, Any]:
    row = {"variant": variant, "ipc": config.ipc, "images": images, "labels": ev.labels,
           "mean_pct": round(100 * ev.mean, 2), "std_pct": round(100 * ev.std, 2), "n_runs": len(ev.accuracies),
           "runs_pct": [round(100 * a, 2) for a in ev.accuracies], "distill_s": round(distill_s, 1),
           "distill_compute_s": round(sum(m["seconds"] for m in result.metrics), 1), "eval_s": round(eval_s, 1),
           "iterations": len(result.metrics), "syn_steps": config.syn_steps, "syn_lr": result.syn_lr,
           "eval_epochs": ev.config["epochs"]}
    if ev.labels == "soft":
        row["label_note"] = ev.config.get("label_note")
    return row


def run_variant(variant: str, config: DistillConfig, data: ImageData, trajs, runs: Path, size: str,
                recipe: dict[str, Any], progress: bool) -> list[dict[str, Any]]:
    """Distil (or resume) one variant and evaluate its sets; one row per evaluation."""
    folder = runs / "ablation" / f"{DATASET}-ipc{config.ipc}-{size}-{variant}"
    t0 = time.perf_counter()
    result = distill(config, trajs, data, folder, resume=True, progress=progress, device=recipe["device"])
    distill_s = time.perf_counter() - t0
    sets = [("raw", result.images)] + ([("ema", result.images_ema)] if result.images_ema is not None else [])
    rows = []
    for name, images in sets:
        t1 = time.perf_counter()
        if result.soft_labels is not None:
            both = evaluate_soft_and_hard(images, result.soft_labels, result.labels, data, lr=result.syn_lr, **recipe)
            evals = [both["hard"], both["soft"]]
        else:
            evals = [evaluate_set(images, result.labels, data, lr=result.syn_lr, **recipe)]
        eval_s = (time.perf_counter() - t1) / len(evals)
        rows += [_row(variant, config, result, name, ev, distill_s, eval_s) for ev in evals]
    return rows


def baseline_rows(ipc: int, size: str, data: ImageData, trajs, recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """What the variants start from, under the same recipe (lr 0.01, as for real images): random real images
    (hard labels), and the real images every variant starts from with TESLA's soft labels (an expert's softmax:
    knowledge distillation without any distillation of the images) beside their hard labels."""
    start = Distiller(variant_config("tesla", ipc, size), trajs, data, device=recipe["device"])
    t0 = time.perf_counter()
    evals = [evaluate_random_real(data, ipc, lr=0.01, **recipe)]
    both = evaluate_soft_and_hard(start.images.detach(), start.label_logits.softmax(1), start.labels, data, lr=0.01,
                                  **recipe)
    evals += [both["hard"], both["soft"]]
    rows = []
    for ev, variant, images in zip(evals, ("random real", "real start", "real start"), ("random", "start", "start")):
        rows.append({"variant": variant, "ipc": ipc, "images": images, "labels": ev.labels,
                     "mean_pct": round(100 * ev.mean, 2), "std_pct": round(100 * ev.std, 2),
                     "n_runs": len(ev.accuracies), "runs_pct": [round(100 * a, 2) for a in ev.accuracies],
                     "distill_s": 0.0, "distill_compute_s": 0.0, "eval_s": round((time.perf_counter() - t0) / 3, 1),
                     "iterations": 0, "syn_steps": 0, "syn_lr": 0.01, "eval_epochs": ev.config["epochs"]})
    return rows


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width text table."""
    head = f"{'variant':<14} {'ipc':>3} {'images':<6} {'labels':<6} {'accuracy %':>14} {'runs':>4} " \
           f"{'distill s':>9} {'eval s':>7} {'iters':>5}"
    lines = [head, "-" * len(head)]
    for r in rows:
        acc = f"{r['mean_pct']:.1f} ± {r['std_pct']:.1f}"
        lines.append(f"{r['variant']:<14} {r['ipc']:>3} {r['images']:<6} {r['labels']:<6} {acc:>14} "
                     f"{r['n_runs']:>4} {r['distill_s']:>9.1f} {r['eval_s']:>7.1f} {r['iterations']:>5}")
    if any(r["labels"] == "soft" for r in rows):
        lines.append("soft: trained with soft labels -- includes knowledge distillation from the experts, "
                     "not comparable with hard-label accuracy")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run every variant at every ipc, print the rows and the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=None, help="runs folder: experts and distilled sets (default runs/ or $MTT_RUNS)")
    p.add_argument("--outputs", default=None, help="outputs folder for results/ablation.json (default outputs/ "
                                                   "or $MTT_OUTPUTS)")
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=("mtt",) + tuple(FOLLOWUPS),
                   help=f"which variants (default: {' '.join(VARIANTS)})")
    p.add_argument("--iterations", type=int, default=0, help="distillation iterations (0: the preset's)")
    p.add_argument("--eval-runs", type=int, default=0, help="evaluation networks per set (0: 3, smoke 1)")
    p.add_argument("--eval-epochs", type=int, default=0, help="epochs per evaluation network (0: 300, smoke 4)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the evaluation networks")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (smoke experts and presets): checks the script")
    p.add_argument("--no-baselines", action="store_true", help="skip the random real and real-start rows")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--progress", action="store_true", help="progress bars on stderr")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = "smoke" if args.smoke else "classroom"
    runs = runs_dir(args.runs)
    out_file = outputs_dir(args.outputs) / "results" / ("ablation_smoke.json" if args.smoke else "ablation.json")
    expert_cfg = smoke_config() if args.smoke else classroom_config()
    num_experts = get_preset(DATASET, 10, size).num_experts
    recipe = dict(num_runs=args.eval_runs or (1 if args.smoke else 3),
                  epochs=args.eval_epochs or (4 if args.smoke else 300), seed=args.seed, device=args.device,
                  progress=args.progress)
    began = time.perf_counter()
    data = load_dataset(DATASET)
    t0 = time.perf_counter()
    trajs = ensure_experts(data, expert_cfg, num_experts, expert_dir(runs, expert_cfg), device=args.device,
                           progress=args.progress)
    experts_s = time.perf_counter() - t0
    settings = {"dataset": DATASET, "size": size, "experts": {"count": len(trajs), "epochs": trajs[0].epochs,
                                                              "folder": str(expert_dir(runs, expert_cfg))},
                "eval": {"runs": recipe["num_runs"], "epochs": recipe["epochs"], "seed": args.seed},
                "iterations_override": args.iterations or None, "device": args.device,
                "threads": torch.get_num_threads(), "torch": torch.__version__,
                "python": platform.python_version(), "experts_s": round(experts_s, 1)}
    rows: list[dict[str, Any]] = []
    for ipc in args.ipc:
        for variant in args.variants:
            config = variant_config(variant, ipc, size, args.iterations)
            model = dict(model=config.model, model_kwargs=config.model_kwargs)
            for row in run_variant(variant, config, data, trajs, runs, size, {**recipe, **model}, args.progress):
                rows.append(row)
                print(json.dumps(row), flush=True)
                atomic_write_json({"settings": settings, "rows": rows}, out_file)
        base = variant_config("mtt", ipc, size)
        model = dict(model=base.model, model_kwargs=base.model_kwargs)
        for row in [] if args.no_baselines else baseline_rows(ipc, size, data, trajs, {**recipe, **model}):
            rows.append(row)
            print(json.dumps(row), flush=True)
            atomic_write_json({"settings": settings, "rows": rows}, out_file)
    settings["wall_s"] = round(time.perf_counter() - began, 1)
    settings["load_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    atomic_write_json({"settings": settings, "rows": rows}, out_file)
    print(summary_table(rows), file=sys.stderr)
    print(f"rows written to {out_file}; total {settings['wall_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
