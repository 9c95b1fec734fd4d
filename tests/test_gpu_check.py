"""The GPU check script: its dry run on the CPU writes the summary a GPU run writes, with numbers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def check():
    sys.path.insert(0, str(BENCH))  # gpu_check.py imports the other benchmarks by name
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(BENCH))


def positive(*values) -> bool:
    return all(isinstance(v, (int, float)) and v > 0 for v in values)


@pytest.mark.slow
def test_the_dry_run_writes_every_key_with_positive_numbers(tmp_path):
    out = tmp_path / "x.json"
    proc = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--dry-run", "--out", str(out)], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHON": sys.executable})
    s = json.loads(out.read_text())
    print(f"dry run: {s['wall_s']} s")
    assert s["dry_run"] is True and s["device"] == "cpu"
    assert set(s["data"]) == {"ops", "distill", "experts", "precision", "determinism"}
    assert (tmp_path / "x_logs.tar.gz").exists()  # every log in one archive
    suite = s["suite"]
    assert suite["exit_code"] == 0 and suite["failed"] == suite["errors"] == 0 and suite["collected"] >= 1
    demo = s["demo"]
    assert demo["exit_code"] == 0 and any("00_setup_and_data" in line for line in demo["lines"])
    ops = {r["strategy"]: r for r in s["ops"]["result"]}
    assert ops["unroll"]["calls_per_step"] <= 450 and positive(ops["recompute"]["calls_per_step"])
    distill = s["distill"]["result"]
    assert {(r["strategy"], r["cuda_graph"]) for r in distill} == {("unroll", False), ("recompute", False)}
    notes = {r["capture_note"] for r in distill}
    assert notes == {"cuda_graph is off", "CUDA graphs need a CUDA device"}  # asked for or not: the CPU has none
    for r in distill:
        assert positive(r["s_per_iter"], r["estimate_mb"], r["syn_steps"])
    experts = s["experts"]["result"]
    assert positive(*experts["images_per_s_median"].values(), experts["ratio_mttlib_to_plain"])
    precision = {r["precision"]: r for r in s["precision"]["result"]}
    assert set(precision) == {"fp32", "bf16", "fp16"} and "bf16" in precision["fp16"]["refused"]
    assert precision["fp32"]["cosine_vs_fp32"] == 1.0 and precision["bf16"]["cosine_vs_fp32"] > 0.9
    determinism = s["determinism"]["result"]
    assert determinism["experts_max_abs_diff"] == determinism["distill_resumed_max_abs_diff"] == 0.0  # the CPU
    assert all(positive(s[part]["seconds"]) for part in s["data"])
    assert s["reproduce"]["exit_code"] == 0 and s["ok"] is True and proc.returncode == 0, proc.stderr[-3000:]


def test_a_part_runs_in_a_child_process_as_on_the_gpu(check):
    got = check.run_part("ops", True, timeout=300)
    assert "error" not in got, got
    assert positive(got["result"][0]["calls_per_step"], got["seconds"])


def test_a_spent_budget_skips_the_parts_and_says_so(check, tmp_path):
    out, threads = tmp_path / "y.json", torch.get_num_threads()
    try:
        assert check.main(["--dry-run", "--budget", "0", "--out", str(out)]) == 1
    finally:
        torch.set_num_threads(threads)  # a dry run uses one thread
    s = json.loads(out.read_text())
    assert s["ok"] is False and s["distill"] == {"error": "skipped: the time budget was spent"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_only_the_dry_run_runs(check, tmp_path, capsys):
    assert check.main(["--out", str(tmp_path / "z.json")]) == 2
    assert "--dry-run" in capsys.readouterr().err and not (tmp_path / "z.json").exists()
