"""The measurements of ``benchmarks/gpu_check.sh`` and its JSON summary.

Each part runs in its own Python process (a hang or an out-of-memory error stays in its part, and a
part that would overrun the time left is stopped); the parent collects what each prints and writes
one JSON file, with what the shell script measured beside it (the test suite, the demo, reproduce).

- ``ops``: operator calls per student step at the paper's CIFAR-10 ipc 10 shape (100 images, DSA),
  counted with a ``TorchDispatchMode`` over whole iterations, per strategy (``bench_ops.py``).
- ``distill``: one distillation iteration at the paper's CIFAR-10 ipc 10 and ipc 50 settings (ConvNet
  width 128, 30 student steps, every image in every step, DSA): the kit per strategy with and without
  the CUDA graph, time and peak GPU memory, and the reference implementation's own inner loop on the
  same device when ``--reference DIR`` names a checkout of it (``bench_distill.py``).
- ``experts``: expert training images/s on ``cifar10-mini``, ConvNet width 128, 10 epochs: the kit
  eager, the kit with ``compile`` (on CUDA: the whole SGD step as a CUDA graph) and a plain loop.
- ``precision``: one paper-size ipc 10 meta-gradient in fp32 and bf16 (time, memory, cosine of the
  image gradient with fp32's); fp16 must be refused.
- ``determinism``: what seeds and resume guarantee here: two expert trainings from one seed, a
  distillation run twice, and a run stopped after 2 iterations and resumed, compared with one run of 4.

Data: random tensors of CIFAR-10's shape for ``ops``, ``distill`` and ``precision`` (time and memory do
not depend on the pixels); the embedded real ``cifar10-mini`` for ``experts`` and ``determinism``.
``--dry-run`` runs every part at tiny sizes on the CPU in seconds and writes the same keys.

    python benchmarks/gpu_check.py --out gpu_check.json [--reference DIR]   # usually through gpu_check.sh
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
PARTS = ("ops", "distill", "experts", "precision", "determinism")
LIMITS = {"ops": 60, "distill": 200, "experts": 120, "precision": 60, "determinism": 90}  # seconds, on the GPU
DATA = {"ops": "random tensors of CIFAR-10's shape (3x32x32, 10 classes)",
        "distill": "random tensors of CIFAR-10's shape (3x32x32, 10 classes); random-walk experts",
        "experts": "cifar10-mini, the kit's embedded real CIFAR-10 subset (5,000 train images)",
        "precision": "random tensors of CIFAR-10's shape",
        "determinism": "cifar10-mini, the kit's embedded real CIFAR-10 subset"}


def _device(dry: bool) -> torch.device:
    return torch.device("cpu") if dry else torch.device("cuda", 0)


def _peak_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# --- the parts (each runs in a child process) --------------------------------------------------


def part_ops(dry: bool, reference: str | None) -> list[dict]:
    import bench_ops

    return [bench_ops.count(strategy, width=8 if dry else 128, device=str(_device(dry)), steps=4 if dry else 30)
            for strategy in ("unroll", "recompute")]


def part_distill(dry: bool, reference: str | None) -> list[dict]:
    import bench_distill

    device = _device(dry)
    rows = []
    for ipc in ((1,) if dry else (10, 50)):
        steps, width, iters = (2, 8, 1) if dry else (30, 128, 3)
        sides = [("unroll", True), ("unroll", False), ("recompute", True), ("recompute", False)]
        for strategy, graph in sides:
            spec = dict(ipc=ipc, syn_steps=steps, strategy=strategy, width=width, iters=iters, device=str(device),
                        cuda_graph=graph)
            _reset_peak(device)
            row = bench_distill.child(spec)
            rows.append({**row, "peak_mb": _peak_mb(device), "setting": "smoke" if dry else f"paper cifar10 ipc {ipc}"})
        if reference:
            _reset_peak(device)
            row = bench_distill.reference_child(dict(ipc=ipc, syn_steps=steps, width=width, iters=iters,
                                                     device=str(device), reference=reference))
            rows.append({**row, "cuda_graph": False, "peak_mb": _peak_mb(device)})
    return rows


def part_experts(dry: bool, reference: str | None) -> dict:
    import bench_experts

    args = (["--width", "8", "--epochs", "1", "--repeats", "1", "--train-images", "512", "--device", "cpu"] if dry
            else ["--width", "128", "--epochs", "10", "--repeats", "2", "--device", "cuda", "--variants", "compile"])
    printed, argv = io.StringIO(), sys.argv
    sys.argv = [str(HERE / "bench_experts.py"), *args]  # its main() reads the command line
    try:
        with contextlib.redirect_stdout(printed):
            bench_experts.main()
    finally:
        sys.argv = argv
    out = json.loads(printed.getvalue()[printed.getvalue().index("{"):])
    keys = ("train_images", "width", "epochs", "batch_size", "repeats", "images_per_s_median",
            "ratio_mttlib_to_plain", "ratio_to_plain", "max_abs_diff_to_mttlib", "warmup_s", "same_final_parameters")
    return {k: out.get(k) for k in keys}


def part_precision(dry: bool, reference: str | None) -> list[dict]:
    from mttlib.augment import DSA
    from mttlib.matching import ImageBatchSource, meta_gradient
    from mttlib.models import FunctionalModel, make_model

    device = _device(dry)
    ipc, steps, width = (1, 2, 8) if dry else (10, 30, 128)
    torch.manual_seed(0)
    fm = FunctionalModel(make_model("convnet", 3, 10, 32, width=width).to(device))
    g = torch.Generator().manual_seed(0)
    start = fm.flatten()
    target = start + 0.01 * torch.randn(start.shape, generator=g).to(device)
    x = torch.randn(10 * ipc, 3, 32, 32, generator=g).to(device)
    y = torch.arange(10, device=device).repeat_interleave(ipc)
    source = ImageBatchSource(len(x), 32, None, DSA())
    plans = source.plans(steps, g)
    rows, ref = [], None
    for precision in ("fp32", "bf16"):
        meta_gradient(fm, start, target, x, y, 0.01, plans[:1], source, "unroll", precision=precision)  # warm-up
        _reset_peak(device)
        began = time.perf_counter()
        loss, gx, _ = meta_gradient(fm, start, target, x, y, 0.01, plans, source, "unroll", precision=precision)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ref = gx if ref is None else ref
        rows.append({"precision": precision, "strategy": "unroll", "ipc": ipc, "syn_steps": steps, "width": width,
                     "s_per_iter": round(time.perf_counter() - began, 4), "peak_mb": _peak_mb(device),
                     "loss": float(loss),
                     "cosine_vs_fp32": round(float(F.cosine_similarity(gx.flatten(), ref.flatten(), dim=0)), 5)})
    try:
        meta_gradient(fm, start, target, x, y, 0.01, plans[:1], source, "unroll", precision="fp16")
        refused = ""
    except ValueError as err:
        refused = str(err)
    rows.append({"precision": "fp16", "refused": refused})
    return rows


def part_determinism(dry: bool, reference: str | None) -> dict:
    from mttlib.data import load_dataset
    from mttlib.distill import DistillConfig
    from mttlib.experts import ExpertConfig, load_experts, train_experts
    from mttlib.run import distill

    device = _device(dry)
    data = load_dataset("cifar10-mini")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for compile_ in ((False,) if dry else (False, True)):
            config = ExpertConfig(dataset=data.name, model_kwargs={"width": 8 if dry else 32},
                                  epochs=1 if dry else 10, compile=compile_)
            finals = []
            for run in range(2):
                folder = Path(tmp) / f"experts-{compile_}-{run}"
                train_experts(data, config, 1, folder, device=device, progress=False)
                finals.append(load_experts(folder)[0].snapshots)
            out[f"experts_max_abs_diff{'_compiled' if compile_ else ''}"] = float((finals[0] - finals[1]).abs().max())
        experts = load_experts(Path(tmp) / "experts-False-0")
        cfg = DistillConfig(dataset=data.name, ipc=1, model_kwargs={"width": 8 if dry else 32}, syn_steps=5,
                            expert_epochs=1, max_start_epoch=1 if dry else 5, iterations=4, lr_img=100.0)
        whole = [distill(cfg, experts, data, None, device=device, progress=False).images for _ in range(2)]
        part = Path(tmp) / "part"
        distill(cfg.replace(iterations=2), experts, data, part, device=device, progress=False)
        resumed = distill(cfg, experts, data, part, device=device, progress=False, resume=True).images
    out["distill_twice_max_abs_diff"] = float((whole[0] - whole[1]).abs().max())
    out["distill_resumed_max_abs_diff"] = float((whole[0] - resumed).abs().max())
    out["cuda_graph"] = cfg.cuda_graph
    return out


# --- the parent --------------------------------------------------------------------------------


def run_part(name: str, dry: bool, timeout: float, reference: str | None = None, child: bool = True) -> dict:
    """Run one part in a child process (``child=False``: in this one, no time limit);
    ``{"result": ...}`` or ``{"error": ...}``, and its seconds."""
    began = time.perf_counter()
    if not child:
        try:
            return {"result": globals()[f"part_{name}"](dry, reference),
                    "seconds": round(time.perf_counter() - began, 1)}
        except Exception as err:  # noqa: BLE001 - one part's failure is a result, the others still run
            return {"error": f"{type(err).__name__}: {err}", "seconds": round(time.perf_counter() - began, 1)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name] + (["--dry-run"] if dry else []) + \
        (["--reference", reference] if reference else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.0f} s", "seconds": round(time.perf_counter() - began, 1)}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{\"result\"")]
    seconds = round(time.perf_counter() - began, 1)
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-3:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail), "seconds": seconds}
    return {**json.loads(lines[-1]), "seconds": seconds}


def test_report(xml: str | None, rc: int, seconds: float, selection: str, log: str | None) -> dict:
    """What pytest's JUnit XML says about a test run."""
    out = {"selection": selection, "exit_code": rc, "seconds": round(seconds, 1)}
    try:
        root = ET.parse(xml).getroot()
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
        cases = [c for s in suites for c in s.iter("testcase")]
        out.update(collected=counts["tests"], failed=counts["failures"], errors=counts["errors"],
                   skipped=counts["skipped"], passed=counts["tests"] - counts["failures"] - counts["errors"] -
                   counts["skipped"],
                   not_passed=[f"{c.get('classname')}::{c.get('name')}" for c in cases
                               if c.find("failure") is not None or c.find("error") is not None])
    except (OSError, ET.ParseError, TypeError, AttributeError) as err:
        out["error"] = f"no test report ({err}); see the log"
    if log and (rc not in (0, 5) or "error" in out):
        out["log_tail"] = Path(log).read_text(errors="replace").splitlines()[-15:] if Path(log).exists() else []
    return out


def step_report(log: str | None, rc: int, seconds: float) -> dict:
    """A shell step's exit status, seconds and the lines it printed that say something (the demo's per-notebook
    lines, reproduce's table)."""
    out = {"exit_code": rc, "seconds": round(seconds, 1)}
    if log and Path(log).exists():
        lines = Path(log).read_text(errors="replace").splitlines()
        out["lines"] = [line for line in lines if line.strip()][-40:]
    return out


def machine(dry: bool) -> dict:
    info = {"dry_run": dry, "python": platform.python_version(), "torch": torch.__version__,
            "cuda_runtime": torch.version.cuda, "cpu_threads": torch.get_num_threads(),
            "load_average": round(os.getloadavg()[0], 2), "device": "cpu" if dry else "cuda:0"}
    if not dry:
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_mb=round(props.total_memory / 2**20),
                    gpu_capability=f"{props.major}.{props.minor}")
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (checks the script itself)")
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--budget", type=float, default=450.0, help="seconds all the parts may take together")
    p.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS)
    p.add_argument("--reference", default=None, metavar="DIR", help="a checkout of the reference implementation")
    p.add_argument("--step", nargs=5, action="append", default=[], metavar=("NAME", "KIND", "RC", "SECONDS", "LOG"),
                   help="a step the shell script ran: its name, 'tests' (LOG is junit XML + '.log') or 'log'")
    p.add_argument("--part", default=None, choices=PARTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.part:
        result = globals()[f"part_{args.part}"](args.dry_run, args.reference)
        print(json.dumps({"result": result}), flush=True)
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device here; `--dry-run` checks the script on the CPU", file=sys.stderr)
        return 2
    if args.dry_run:  # tiny sizes: one thread, or every operation waits for a second core on a busy machine
        torch.set_num_threads(1)
    began = time.perf_counter()
    summary = {"check": "mttlib gpu_check", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **machine(args.dry_run),
               "data": {k: DATA[k] for k in args.parts}, "reference": bool(args.reference)}
    for name, kind, rc, seconds, log in args.step:
        summary[name] = (test_report(log, int(rc), float(seconds), name, log + ".log") if kind == "tests"
                         else step_report(log, int(rc), float(seconds)))
    for name in args.parts:
        left = args.budget - (time.perf_counter() - began)
        if left < 10:
            summary[name] = {"error": "skipped: the time budget was spent"}
            continue
        # a dry run checks the code at tiny sizes: in this process, saving an interpreter start per part
        summary[name] = run_part(name, args.dry_run, min(left, LIMITS[name]), args.reference,
                                 child=not args.dry_run)
        print(f"gpu_check: {name} {'failed: ' + summary[name]['error'] if 'error' in summary[name] else 'done'} "
              f"({summary[name].get('seconds', 0)} s)", file=sys.stderr, flush=True)
    steps_ok = all(summary[name]["exit_code"] in (0,) for name, *_ in args.step)
    summary["ok"] = steps_ok and not any("error" in summary[name] for name in args.parts)
    summary["wall_s"] = round(time.perf_counter() - began + sum(float(s[3]) for s in args.step), 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out)  # written whole or not at all
    print(f"gpu_check: wrote {out} (ok={summary['ok']}, {summary['wall_s']} s)", file=sys.stderr)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
