"""The measurements of ``benchmarks/gpu_check.sh`` and its JSON summary.

Each part runs in its own Python process (a hang or an out-of-memory error stays in its part, and
a part that would overrun the time left is stopped); the parent collects what each prints and
writes one JSON file. The parts reuse the other benchmarks' functions with arguments:

- ``distill``: one distillation iteration at the paper's CIFAR-10 ipc 10 and ipc 50 settings
  (ConvNet width 128, 30 student steps, every image in every step, DSA) per strategy
  (``bench_distill.child``), with its time and peak GPU memory (``torch.cuda.max_memory_allocated``).
- ``imagenet``: the same for an ImageNet subset at ipc 10 (``bench_imagenet_iteration.child``).
- ``experts``: expert training images/s, the kit against a plain loop (``bench_experts.py``).
- ``vmap``: K experts trained side by side, one ``torch.func.vmap``-batched step for all of them
  against a loop over K networks (random CIFAR-shaped batches, no augmentation on either side).
- ``precision``: one paper-size CIFAR-10 ipc 10 meta-gradient (``unroll``) in fp32, bf16 and fp16:
  time, peak memory, cosine of the image gradient with fp32's.

Data: the distillation and ImageNet parts use random tensors of the right shape (time and memory
do not depend on the pixels, and the GPU machine may have no dataset); experts train on the
embedded real ``cifar10-mini``. ``--dry-run`` runs every part at tiny sizes on the CPU in seconds
and writes the same keys (``peak_mb`` is then the process's peak resident memory).

    python benchmarks/gpu_check.py --out gpu_check.json            # usually through gpu_check.sh
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
PARTS = ("distill", "imagenet", "experts", "vmap", "precision")
LIMITS = {"distill": 150, "imagenet": 150, "experts": 120, "vmap": 90, "precision": 90}  # seconds, on the GPU
DATA = {"distill": "random tensors of CIFAR-10's shape (3x32x32, 10 classes); random-walk experts",
        "imagenet": "random tensors of an ImageNet subset's shape (3x128x128, 10 classes); random-walk expert",
        "experts": "cifar10-mini, the kit's embedded real CIFAR-10 subset (5,000 train images)",
        "vmap": "random CIFAR-shaped batches", "precision": "random tensors of CIFAR-10's shape"}


def _device(dry: bool) -> torch.device:
    return torch.device("cpu") if dry else torch.device("cuda", 0)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the parts (each runs in a child process) --------------------------------------------------


def part_distill(dry: bool) -> list[dict]:
    import bench_distill
    from mttlib.presets import get_preset

    device = _device(dry)
    rows = []
    for ipc in ((1, 2) if dry else (10, 50)):
        steps = 2 if dry else get_preset("cifar10", ipc).syn_steps
        for strategy in ("unroll", "recompute"):
            spec = dict(ipc=ipc, syn_steps=steps, strategy=strategy, width=8 if dry else 128, iters=1 if dry else 2,
                        device=str(device))
            _reset_peak(device)
            row = bench_distill.child(spec)
            rows.append({**row, "peak_mb": _peak_mb(device), "setting": "smoke" if dry else f"paper cifar10 ipc {ipc}"})
    return rows


def part_imagenet(dry: bool) -> list[dict]:
    import bench_imagenet_iteration as bench

    device = _device(dry)
    rows = []
    for strategy in ("recompute", "unroll"):
        spec = dict(strategy=strategy, ipc=1 if dry else 10, syn_steps=1 if dry else 20, batch_syn=2 if dry else 20,
                    width=4 if dry else 128, iters=1, device=str(device))
        spec["estimate_mb"] = bench._estimate_mb(spec)
        _reset_peak(device)
        row = bench.child(spec)
        rows.append({**row, "peak_mb": _peak_mb(device)})
    return rows


def part_experts(dry: bool) -> dict:
    import bench_experts

    args = (["--width", "8", "--epochs", "1", "--repeats", "1", "--train-images", "512", "--device", "cpu"] if dry
            else ["--width", "128", "--epochs", "1", "--repeats", "2", "--device", "cuda"])
    printed, argv = io.StringIO(), sys.argv
    sys.argv = [str(HERE / "bench_experts.py"), *args]  # its main() reads the command line
    try:
        with contextlib.redirect_stdout(printed):
            bench_experts.main()
    finally:
        sys.argv = argv
    out = json.loads(printed.getvalue()[printed.getvalue().index("{"):])
    keys = ("train_images", "width", "epochs", "batch_size", "repeats", "images_per_s_median",
            "ratio_mttlib_to_plain", "same_final_parameters")
    return {k: out[k] for k in keys}


def part_vmap(dry: bool) -> dict:
    from torch.func import functional_call, grad, stack_module_state, vmap

    from mttlib.models import make_model

    device = _device(dry)
    num, width, batch, steps, repeats = (2, 8, 16, 2, 1) if dry else (10, 128, 256, 20, 3)
    torch.manual_seed(0)
    nets = [make_model("convnet", 3, 10, 32, width=width).to(device) for _ in range(num)]
    x = torch.randn(num, batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (num, batch), device=device)
    base = copy.deepcopy(nets[0]).to("meta")

    def loss(p, b, xb, yb):
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    step = vmap(grad(loss))

    def run_vmap(n: int) -> dict:
        params, buffers = stack_module_state(nets)
        params = {k: v.detach() for k, v in params.items()}  # plain tensors: the update builds no graph
        for _ in range(n):
            g = step(params, buffers, x, y)
            params = {k: v - 0.01 * g[k] for k, v in params.items()}
        return params

    def run_loop(n: int) -> list:
        copies = [copy.deepcopy(net) for net in nets]
        opts = [torch.optim.SGD(net.parameters(), lr=0.01) for net in copies]
        for _ in range(n):
            for i, (net, opt) in enumerate(zip(copies, opts)):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(x[i]), y[i]).backward()
                opt.step()
        return copies

    # both sides compute the same thing: one step from the same start
    after_vmap, after_loop = run_vmap(1), run_loop(1)
    diff = max(float((after_vmap[k][i] - dict(net.named_parameters())[k]).detach().abs().max())
               for i, net in enumerate(after_loop) for k in after_vmap)
    seconds: dict[str, list[float]] = {"vmap": [], "loop": []}
    for r in range(repeats):
        for side in (("vmap", "loop") if r % 2 == 0 else ("loop", "vmap")):
            _sync(device)
            began = time.perf_counter()
            (run_vmap if side == "vmap" else run_loop)(steps)
            _sync(device)
            seconds[side].append(time.perf_counter() - began)
    rate = {side: num * batch * steps / statistics.median(v) for side, v in seconds.items()}
    return {"num_experts": num, "width": width, "batch": batch, "steps": steps, "repeats": repeats,
            "images_per_s_vmap": round(rate["vmap"], 1), "images_per_s_loop": round(rate["loop"], 1),
            "speedup_vmap": round(rate["vmap"] / rate["loop"], 2), "max_abs_diff_one_step": diff}


def part_precision(dry: bool) -> list[dict]:
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
    for precision in ("fp32", "bf16"):  # fp16 is refused for distillation (mttlib.matching.check_meta_precision)
        meta_gradient(fm, start, target, x, y, 0.01, plans[:1], source, "unroll", precision=precision)  # warm-up
        times = []
        _reset_peak(device)
        for _ in range(1 if dry else 2):
            _sync(device)
            began = time.perf_counter()
            loss, gx, _ = meta_gradient(fm, start, target, x, y, 0.01, plans, source, "unroll", precision=precision)
            _sync(device)
            times.append(time.perf_counter() - began)
        ref = gx if ref is None else ref
        rows.append({"precision": precision, "strategy": "unroll", "ipc": ipc, "syn_steps": steps, "width": width,
                     "s_per_iter": round(min(times), 4), "peak_mb": _peak_mb(device), "loss": float(loss),
                     "cosine_vs_fp32": round(float(F.cosine_similarity(gx.flatten(), ref.flatten(), dim=0)), 5)})
    return rows


# --- the parent --------------------------------------------------------------------------------


def run_part(name: str, dry: bool, timeout: float, child: bool = True) -> dict:
    """Run one part in a child process (``child=False``: in this one, no time limit);
    ``{"result": ...}`` or ``{"error": ...}``, and its seconds."""
    began = time.perf_counter()
    if not child:
        try:
            return {"result": globals()[f"part_{name}"](dry), "seconds": round(time.perf_counter() - began, 1)}
        except Exception as err:  # noqa: BLE001 - one part's failure is a result, the others still run
            return {"error": f"{type(err).__name__}: {err}", "seconds": round(time.perf_counter() - began, 1)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name] + (["--dry-run"] if dry else [])
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


def cuda_tests(xml: str | None, rc: int, seconds: float, files: str, log: str | None) -> dict:
    """What pytest's JUnit XML says about the CUDA tests."""
    out = {"selection": "-k cuda", "files": files.split(), "exit_code": rc, "seconds": round(seconds, 1)}
    try:
        root = ET.parse(xml).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        out.update(collected=counts["tests"], failed=counts["failures"], errors=counts["errors"],
                   skipped=counts["skipped"], passed=counts["tests"] - counts["failures"] - counts["errors"] -
                   counts["skipped"], cases=[f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")])
    except (OSError, ET.ParseError, TypeError, AttributeError) as err:
        out["error"] = f"no test report ({err}); see the log"
    if log and (rc not in (0, 5) or "error" in out):
        out["log_tail"] = Path(log).read_text(errors="replace").splitlines()[-15:] if Path(log).exists() else []
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
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--tests-xml", default=None)
    p.add_argument("--tests-log", default=None)
    p.add_argument("--tests-rc", type=int, default=-1)
    p.add_argument("--tests-seconds", type=float, default=0.0)
    p.add_argument("--tests-files", default="")
    p.add_argument("--part", default=None, choices=PARTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.part:
        result = globals()[f"part_{args.part}"](args.dry_run)
        print(json.dumps({"result": result}), flush=True)
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device here; `--dry-run` checks the script on the CPU", file=sys.stderr)
        return 2
    if args.dry_run:  # tiny sizes: one thread, or every operation waits for a second core on a busy machine
        torch.set_num_threads(1)
    began = time.perf_counter()
    summary = {"check": "mttlib gpu_check", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **machine(args.dry_run),
               "data": DATA,
               "cuda_tests": cuda_tests(args.tests_xml, args.tests_rc, args.tests_seconds, args.tests_files,
                                        args.tests_log)}
    for name in args.parts:
        left = args.budget - (time.perf_counter() - began)
        if left < 10:
            summary[name] = {"error": "skipped: the time budget was spent"}
            continue
        # a dry run checks the code at tiny sizes: in this process, saving an interpreter start per part
        summary[name] = run_part(name, args.dry_run, min(left, LIMITS[name]), child=not args.dry_run)
        print(f"gpu_check: {name} {'failed: ' + summary[name]['error'] if 'error' in summary[name] else 'done'} "
              f"({summary[name].get('seconds', 0)} s)", file=sys.stderr, flush=True)
    tests_ok = summary["cuda_tests"]["exit_code"] in ((0, 5) if args.dry_run else (0,))
    summary["ok"] = tests_ok and not any("error" in summary[name] for name in args.parts)
    summary["wall_s"] = round(time.perf_counter() - began + args.tests_seconds, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out)  # written whole or not at all
    print(f"gpu_check: wrote {out} (ok={summary['ok']}, {summary['wall_s']} s)", file=sys.stderr)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
