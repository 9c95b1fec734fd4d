"""The paper's CIFAR-10 table in one command, ``python -m mttlib reproduce``.

MTT reports, for CIFAR-10 whitened by ZCA and a ConvNet of width 128, 46.3 ± 0.8 % test accuracy from 1 distilled
image per class and 65.3 ± 0.7 % from 10 (random real images: 14.4 and 26.0 %; the whole training set: 84.8 %),
distilled from 100 experts of 50 epochs in 5,000 iterations and evaluated by 5 networks trained 1,000 epochs.
:func:`reproduce` walks the library's arrows end to end: :func:`mttlib.data.load_dataset` with ZCA, experts with the
paper's recipe (:func:`mttlib.experts.train_experts`), :func:`mttlib.run.distill` with the paper's presets,
:func:`mttlib.evaluate.evaluate_set` with the learned lr and :func:`mttlib.evaluate.evaluate_random_real` under the
same recipe. A :class:`Schedule` says how long each stage runs: ``paper`` (the published schedule), ``gpu`` (cut to
fit some minutes on one GPU, planned from :data:`GPU_COSTS`) or ``smoke`` (seconds on a CPU); every departure from
the paper's is printed with the table and written to ``reproduce.json``. Each stage writes its result to a JSON
file of the run folder when it ends and the experts and distillations keep their own progress, so a run stopped
anywhere continues where it stopped. Taught in notebook ``06_reproduce_the_paper``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from mttlib import __version__, evaluate, experts, run
from mttlib.data import ImageData, load_dataset
from mttlib.distill import DistillConfig
from mttlib.io import atomic_write_json, runs_dir
from mttlib.presets import Preset, get_preset
from mttlib.train import pick_device
from mttlib.trajectory import load_trajectory

__all__ = ["PAPER", "PAPER_FULL_DATA", "SIZES", "GPU_COSTS", "Options", "Schedule", "gpu_schedule",
           "epochs_read", "planned_seconds", "make_schedule", "reproduce", "format_table", "main"]

#: The paper's Table 1, CIFAR-10 with ZCA, ConvNet: ipc -> (MTT mean, MTT std, random real mean), in percent.
PAPER = {1: (46.3, 0.8, 14.4), 10: (65.3, 0.7, 26.0)}
PAPER_FULL_DATA = 84.8
SIZES = ("paper", "gpu", "smoke")
STAGE_KINDS = ("data", "experts", "distill", "evaluate", "random-real", "total")  # data: this run's loading

#: What a unit of work costs on one H200-class GPU, to plan ``--size gpu``. ASSUMPTIONS, not measured by this
#: command: the first two come from a first run of the kit (0.2.0) on one H200 (expert training at width 128 ran at
#: 35,000 images/s, a plain PyTorch loop at 50,000; an ipc 10 iteration of 30 student steps took 0.34 s with
#: ``unroll``, the slow end of the 0.1-0.34 s expected since), the last two are guesses. Replace them by measured
#: values once ``reproduce --size gpu --device cuda`` has run.
GPU_COSTS = {
    "expert_images_per_s": 35_000.0,  # expert training, width 128, DSA
    "student_step_s": 0.34 / 30,  # one student step of a distillation iteration (bound by kernel launches)
    "eval_epoch_s": 0.005,  # one epoch of an evaluation network on <= 256 images: one SGD step with DSA (guess)
    "fixed_s": 60.0,  # loading and whitening the data, testing networks, writing files (guess)
}


def _flag(default: Any, text: str) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class Options:
    """What ``python -m mttlib reproduce`` is asked for; the command's flags are these fields (:mod:`mttlib.cli`)."""

    data: str = _flag("cifar10", "cifar10 (torchvision's files under the data root; the default) or folder:PATH, an "
                      "ImageFolder tree of CIFAR-10 images (with --like cifar10)")
    like: str | None = _flag(None, "borrow this dataset's rows of the paper for --data of its shape: cifar10 for a "
                             "folder of CIFAR-10 images")
    ipc: tuple[int, ...] = _flag((1, 10), "images per class, the paper's rows (default 1 10)")
    size: str = _flag("paper", "paper (the published schedule; the default), gpu (cut to fit --minutes on one GPU) "
                      "or smoke (seconds on a CPU, for tests)")
    minutes: float = _flag(10.0, "--size gpu: minutes to fit on one H200-class GPU (default 10)")
    out: str | None = _flag(None, "the run folder; a rerun continues it (default runs/reproduce/<data>-<size>)")
    device: str = "auto"
    data_root: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.ipc = tuple(sorted({int(i) for i in ([self.ipc] if isinstance(self.ipc, int) else self.ipc)}))
        if not self.ipc or set(self.ipc) - set(PAPER):
            raise ValueError(f"--ipc takes 1 and/or 10, the paper's rows with ZCA, not {list(self.ipc)} (ipc 50 is "
                             "distilled without ZCA: python -m mttlib distill --preset paper --ipc 50)")
        if self.size not in SIZES:
            raise ValueError(f"--size must be one of {', '.join(SIZES)}, not {self.size!r}")
        if not (isinstance(self.minutes, (int, float)) and math.isfinite(self.minutes) and self.minutes > 0):
            raise ValueError(f"--minutes must be a positive number, not {self.minutes!r}")


@dataclass(frozen=True)
class Schedule:
    """How long each stage runs; the defaults are the paper's. ``syn_steps`` and ``max_start_epoch`` cap the
    preset's values (None: the preset's); ``*_per_class`` keep the first N images of each class (None: all)."""

    size: str = "paper"
    num_experts: int = 100
    expert_epochs: int = 50
    iterations: int = 5000
    eval_runs: int = 5
    eval_epochs: int = 1000
    width: int = 128
    syn_steps: int | None = None
    max_start_epoch: int | None = None
    train_per_class: int | None = None
    test_per_class: int | None = None

    def departures(self, presets: dict[int, Preset]) -> list[str]:
        """Every way this schedule departs from the paper's, one line each (empty: none)."""
        out = []
        if self.num_experts != 100:
            out.append(f"{self.num_experts} experts instead of 100")
        if self.expert_epochs != 50:
            read = self.expert_epochs == epochs_read(presets, self.max_start_epoch)
            out.append(f"experts trained {self.expert_epochs} epochs instead of 50"
                       + (" (as many as the distillation reads)" if read else ""))
        if self.iterations != 5000:
            out.append(f"{self.iterations:,} distillation iterations instead of 5,000")
        if (self.eval_runs, self.eval_epochs) != (5, 1000):
            out.append(f"evaluation by {self.eval_runs} networks x {self.eval_epochs:,} epochs instead of 5 x 1,000")
        if self.width != 128:
            out.append(f"ConvNet width {self.width} instead of 128")
        for name in ("syn_steps", "max_start_epoch"):
            cap = getattr(self, name)
            theirs = [f"{getattr(p, name)} at ipc {ipc}" for ipc, p in presets.items()
                      if cap is not None and cap < getattr(p, name)]
            if theirs:
                out.append(f"{name} {cap} instead of {', '.join(theirs)}")
        for split, n in (("training", self.train_per_class), ("test", self.test_per_class)):
            if n is not None:
                out.append(f"the first {n} {split} images of each class instead of all")
        return out


def epochs_read(presets: dict[int, Preset], max_start_epoch: int | None = None) -> int:
    """The last expert epoch a distillation with these presets reads: its latest start epoch plus M."""
    return max(min(p.max_start_epoch, max_start_epoch or p.max_start_epoch) - 1 + p.expert_epochs
               for p in presets.values())


def planned_seconds(schedule: Schedule, presets: dict[int, Preset], train_size: int = 50_000,
                    costs: dict[str, float] = GPU_COSTS) -> float:
    """What the paper's data at ``schedule`` should take on one GPU by ``costs`` (an estimate: :data:`GPU_COSTS`
    are assumptions). Each ipc evaluates two sets: the distilled one and random real images."""
    return (costs["fixed_s"] + schedule.num_experts * schedule.expert_epochs * train_size / costs["expert_images_per_s"]
            + schedule.iterations * sum(p.syn_steps for p in presets.values()) * costs["student_step_s"]
            + 2 * len(presets) * schedule.eval_runs * schedule.eval_epochs * costs["eval_epoch_s"])


def gpu_schedule(minutes: float, presets: dict[int, Preset], train_size: int = 50_000,
                 costs: dict[str, float] = GPU_COSTS) -> Schedule:
    """The ``gpu`` size: the paper's schedule cut to fit ``minutes`` on one GPU by ``costs``. Experts train only
    as many epochs as the distillation reads; the evaluation keeps the paper's 5 x 1,000 while that takes at most a
    quarter of the time; of the rest a third goes to experts (2 to 100), the remainder to iterations (10 to 5,000)."""
    def cost(experts: int = 0, iterations: int = 0, eval_epochs: int = 0) -> float:  # one cost model: the plan's
        changes = dict(num_experts=experts, expert_epochs=epochs, iterations=iterations, eval_epochs=eval_epochs)
        return planned_seconds(Schedule(**changes), presets, train_size, costs) - costs["fixed_s"]

    epochs, budget = epochs_read(presets), 60.0 * minutes - costs["fixed_s"]
    expert, iteration = cost(experts=1), cost(iterations=1)
    eval_epochs = min(1000, max(10, int(budget / 4 / cost(eval_epochs=1)) // 10 * 10))
    rest = budget - cost(eval_epochs=eval_epochs)
    clamp = lambda value, low, high: min(high, max(low, int(value)))  # noqa: E731
    num = clamp(rest / 3 / expert, 2, 100)
    iterations = clamp((rest - num * expert) / iteration, 10, 5000)
    num = clamp((rest - iterations * iteration) / expert, num, 100)  # what 5,000 iterations leave over
    return Schedule("gpu", num_experts=num, expert_epochs=epochs, iterations=iterations, eval_epochs=eval_epochs)


#: The smoke size: seconds on a CPU, for the tests; it shows that every stage runs, not what MTT reaches.
SMOKE = Schedule("smoke", num_experts=2, expert_epochs=3, iterations=5, eval_runs=2, eval_epochs=20, width=16,
                 syn_steps=5, max_start_epoch=2, train_per_class=20, test_per_class=20)


def make_schedule(size: str, presets: dict[int, Preset], minutes: float = 10.0, train_size: int = 50_000) -> Schedule:
    """The schedule of ``size``: ``paper``, ``gpu`` (:func:`gpu_schedule`) or ``smoke``."""
    return Schedule() if size == "paper" else SMOKE if size == "smoke" else gpu_schedule(minutes, presets, train_size)


# --- the stages ----------------------------------------------------------------------------------


def _stage(out: Path, name: str, work: Callable[[], dict], log: Callable[[str], None]) -> dict:
    """Stage ``name``'s result: read from ``out/<name>.json`` when an earlier run finished it, else made by
    ``work()`` and written there. Its ``seconds`` add up the runs that worked on it, a stopped one included
    (``out/progress.json`` keeps their time until the stage ends)."""
    path, ledger = out / f"{name}.json", out / "progress.json"
    if path.exists():
        log(f"{name}: done in an earlier run ({path})")
        return json.loads(path.read_text())
    log(f"{name} ...")
    began = time.perf_counter()
    try:
        result = work()
    finally:
        spent = json.loads(ledger.read_text()) if ledger.exists() else {}
        spent[name] = spent.get(name, 0.0) + time.perf_counter() - began
        atomic_write_json(spent, ledger)
    result["seconds"] = spent.pop(name)
    atomic_write_json(result, path)
    if spent:
        atomic_write_json(spent, ledger)
    else:
        ledger.unlink()
    log(f"{name}: {result['seconds']:.1f} s")
    return result


def _first_per_class(images: torch.Tensor, labels: torch.Tensor, n: int | None) -> dict[str, torch.Tensor]:
    keep = torch.cat([(labels == c).nonzero().flatten()[:n] for c in labels.unique()]).sort().values \
        if n is not None else torch.arange(len(labels))
    return {"images": images[keep], "labels": labels[keep]}


def _subset(data: ImageData, schedule: Schedule) -> ImageData:
    """The data with the first ``*_per_class`` images of each class (the ZCA stays the whole training split's)."""
    train = _first_per_class(data.train_images, data.train_labels, schedule.train_per_class)
    test = _first_per_class(data.test_images, data.test_labels, schedule.test_per_class)
    return dataclasses.replace(data, train_images=train["images"], train_labels=train["labels"],
                               test_images=test["images"], test_labels=test["labels"])


def _check_plan(out: Path, plan: dict[str, Any]) -> None:
    """Write ``out/plan.json``, or check that an earlier run in ``out`` had the same schedule and data."""
    plan, path = json.loads(json.dumps(plan)), out / "plan.json"
    old = json.loads(path.read_text()) if path.exists() else plan
    differ = sorted(k for part in plan for k in plan[part] if plan[part][k] != old.get(part, {}).get(k))
    if differ:
        raise ValueError(f"{out} holds a reproduce run with another schedule or data ({', '.join(differ)} differ): "
                         "continue it with the options it was started with, or pass another --out")
    atomic_write_json(plan, path)


def _distill_config(preset: Preset, schedule: Schedule, model_kwargs: dict) -> DistillConfig:
    every = max(1, min(preset.checkpoint_every, schedule.iterations // 10))
    return DistillConfig.from_preset(
        preset, iterations=schedule.iterations, model_kwargs=model_kwargs, checkpoint_every=every, snapshot_every=every,
        syn_steps=min(preset.syn_steps, schedule.syn_steps or preset.syn_steps),
        max_start_epoch=min(preset.max_start_epoch, schedule.max_start_epoch or preset.max_start_epoch))


def _row(ipc: int, distilled: dict, mtt: dict, real: dict) -> dict[str, Any]:
    """One row of the table in percent, beside the paper's."""
    mean, std, random_real = PAPER[ipc]
    return {"ipc": ipc, "accuracy_mean": 100 * mtt["mean"], "accuracy_std": 100 * mtt["std"],
            "random_real_mean": 100 * real["mean"], "random_real_std": 100 * real["std"], "paper_mean": mean,
            "paper_std": std, "paper_random_real_mean": random_real, "syn_lr": distilled["syn_lr"],
            "networks": len(mtt["accuracies"]), "epochs": mtt["config"]["epochs"]}


def _setup(options: Options) -> tuple[ImageData, dict[int, Preset], Schedule, Path]:
    """The data (whitened, cut to the schedule), the paper's presets per ipc, the schedule and the run folder."""
    data = load_dataset(options.data, options.data_root, zca=True)
    presets = {ipc: get_preset(data.name, ipc, "paper", data=data, like=options.like) for ipc in options.ipc}
    if {p.like or p.dataset for p in presets.values()} != {"cifar10"}:
        raise ValueError(f"reproduce makes the paper's CIFAR-10 table; {data.name} is another dataset. Give --data "
                         "cifar10, or CIFAR-10 images as folder:PATH with --like cifar10")
    schedule = make_schedule(options.size, presets, options.minutes, len(data.train_labels))
    data = _subset(data, schedule)
    out = Path(options.out) if options.out else runs_dir(None) / "reproduce" / re.sub(
        r"[^A-Za-z0-9._-]+", "_", f"{data.name}-{options.size}")
    _check_plan(out, {"schedule": dataclasses.asdict(schedule), "data": data.describe()})
    return data, presets, schedule, out


def reproduce(options: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) the paper's CIFAR-10 table in ``options.out``; return what it writes to ``reproduce.json``:
    ``rows`` (per ipc: ``accuracy_mean``/``_std``, ``random_real_mean``/``_std``, ``paper_mean``, ... in percent),
    ``seconds`` per stage and the ``schedule`` with its ``departures``. Taught in notebook
    ``06_reproduce_the_paper``."""
    began = time.perf_counter()
    data, presets, schedule, out = _setup(options)
    device, width = pick_device(options.device), {"width": schedule.width} if schedule.width != 128 else {}
    seconds, planned = {"data": time.perf_counter() - began}, planned_seconds(schedule, presets, len(data.train_labels))
    log(f"reproducing MTT's CIFAR-10 table on {data.name} ({len(data.train_labels):,} training images, ZCA), "
        f"size {options.size}, on {device}, in {out}")
    if options.size != "smoke":
        log(f"planned: about {planned / 60:.0f} minutes on one H200-class GPU by mttlib.reproduce.GPU_COSTS (assumed "
            "costs, not measured)" + ("; on a CPU it takes days (see the README)" if device.type == "cpu" else ""))
    # the paper's ZCA rows (ipc 1 and 10) share one expert recipe: one folder of experts serves both
    config = experts.ExpertConfig.from_preset(presets[options.ipc[0]], dataset=data.name,
                                              epochs=schedule.expert_epochs, model_kwargs=width)
    folder = out / "experts"

    def train_experts() -> dict:
        paths = experts.train_experts(data, config, schedule.num_experts, folder, device=device,
                                      progress=options.progress)
        final = [load_trajectory(p).meta["test_acc"][-1] for p in paths]
        return {"num_experts": len(paths), "epochs": config.epochs, "final_test_acc_mean": sum(final) / len(final),
                "config": config.to_dict(), "folder": str(folder)}

    seconds["experts"] = _stage(out, "experts", train_experts, log)["seconds"]
    trajectories = functools.cache(lambda: experts.load_experts(folder, config, num_experts=schedule.num_experts))
    recipe = dict(epochs=schedule.eval_epochs, num_runs=schedule.eval_runs, model=config.model,
                  model_kwargs=width or None, device=device, progress=options.progress)
    rows = []
    for ipc in options.ipc:  # each stage's function runs (if at all) within its own pass of the loop
        run_dir = out / f"distill-ipc{ipc}"

        def distill() -> dict:
            result = run.distill(_distill_config(presets[ipc], schedule, width), trajectories(), data, run_dir,
                                 device=device, resume=True, progress=options.progress)
            record, last = json.loads((run_dir / "config.json").read_text()), result.metrics[-1]
            return {"syn_lr": result.syn_lr, "iterations": len(result.metrics), "final_loss": last["loss"],
                    "resumed_from_iteration": record.get("resumed_from_iteration"), "folder": str(run_dir),
                    "iteration_seconds": sum(m["seconds"] for m in result.metrics), "config": result.config.to_dict()}

        def evaluate_distilled() -> dict:
            blob = run.load_distilled(run_dir)
            return evaluate.evaluate_set(blob["images"], blob["labels"], data, lr=blob["syn_lr"], **recipe).to_dict()

        stages = {f"{kind}-ipc{ipc}": _stage(out, f"{kind}-ipc{ipc}", work, log) for kind, work in (
            ("distill", distill), ("evaluate", evaluate_distilled),
            ("random-real", lambda: evaluate.evaluate_random_real(data, ipc, lr=0.01, **recipe).to_dict()))}
        seconds.update({name: stage["seconds"] for name, stage in stages.items()})
        rows.append(_row(ipc, *stages.values()))
    report = {"what": "MTT on CIFAR-10 with ZCA, ConvNet (Cazenavette et al., CVPR 2022, Table 1)", "unit": "percent",
              "size": options.size, "data": data.name, "like": options.like, "device": str(device), "rows": rows,
              "paper_full_data_mean": PAPER_FULL_DATA, "seconds": {**seconds, "total": sum(seconds.values())},
              "schedule": {**dataclasses.asdict(schedule), "departures": schedule.departures(presets),
                           "planned_gpu_seconds": planned, "costs_assumed": GPU_COSTS,
                           **({"minutes": options.minutes} if options.size == "gpu" else {})},
              "presets": {str(ipc): p.name for ipc, p in presets.items()},
              "versions": {"mttlib": __version__, "torch": torch.__version__, "python": platform.python_version()}}
    atomic_write_json(report, out / "reproduce.json")
    log(format_table(report) + f"\n\nwritten to {out / 'reproduce.json'}")
    return report


def format_table(report: dict[str, Any]) -> str:
    """``reproduce.json`` as a Markdown table beside the paper's numbers, then the departures and the seconds per
    stage; a row whose numbers are None (a recorded table not measured yet) says so."""
    def pct(mean: float | None, std: float | None = None) -> str:
        return "still to be measured" if mean is None else f"{mean:.1f}" + (f" ± {std:.1f}" if std is not None else "")

    lines = [f"{report['what']}, size {report['size']}, on {report['data']}, {report['device']}; test accuracy in %",
             "", "| ipc | MTT, this run | MTT, paper | random real, this run | random real, paper |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['ipc']} | {pct(r['accuracy_mean'], r['accuracy_std'])} | {pct(r['paper_mean'], r['paper_std'])} "
              f"| {pct(r['random_real_mean'], r['random_real_std'])} | {pct(r['paper_random_real_mean'])} |"
              for r in report["rows"]]
    lines.append(f"| all (full data) | not run | {report['paper_full_data_mean']:.1f} | | |")
    if report["data"] != "cifar10":
        lines.append(f"\n{report['data']} is not CIFAR-10's original files: a JPEG copy carries compression "
                     "artifacts, so expect accuracies slightly below those on the original files.")
    if report.get("schedule") is not None:
        departures = report["schedule"]["departures"]
        lines.append(f"\nSchedule {report['size']}: " + ("the paper's." if not departures else "departs from the "
                     "paper's in\n" + "\n".join(f"- {d}" for d in departures)))
    if report.get("seconds"):  # in the pipeline's order (a JSON file keeps the keys sorted)
        kind_ipc = [(stage, *stage.partition("-ipc")[::2]) for stage in report["seconds"]]
        order = sorted(kind_ipc, key=lambda s: (s[0] == "total", int(s[2] or 0), STAGE_KINDS.index(s[1])))
        lines.append("\nSeconds per stage: " + ", ".join(f"{s} {report['seconds'][s]:.1f}" for s, _, _ in order))
    return "\n".join(lines)


def main(options: Options) -> int:
    """``python -m mttlib reproduce``: :func:`reproduce`, printing as it goes; exit status 0."""
    reproduce(options)
    return 0
