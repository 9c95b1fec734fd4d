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
                          text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(out.read_text())
    print(f"dry run: {s['wall_s']} s")
    assert s["dry_run"] is True and s["ok"] is True and s["device"] == "cpu"
    assert set(s["data"]) == {"distill", "imagenet", "experts", "vmap", "precision"}
    tests = s["cuda_tests"]
    assert tests["exit_code"] == 0 and tests["failed"] == tests["errors"] == 0
    assert tests["collected"] >= 1 and "tests/test_augment.py" in tests["files"]
    assert any("cuda" in case for case in tests["cases"])
    assert "tests/test_gpu_check.py" not in tests["files"]  # the check does not run itself
    distill = s["distill"]["result"]
    assert {(r["ipc"], r["strategy"]) for r in distill} == {(1, "unroll"), (1, "recompute"), (2, "unroll"),
                                                            (2, "recompute")}
    for r in distill:
        assert positive(r["s_per_iter"], r["peak_mb"], r["estimate_mb"], r["syn_steps"])
    imagenet = s["imagenet"]["result"]
    assert {r["strategy"] for r in imagenet} == {"unroll", "recompute"}
    assert all(positive(r["s_per_iter"], r["peak_mb"], r["estimate_mb"]) and r["image_size"] == 128 for r in imagenet)
    experts = s["experts"]["result"]
    assert positive(*experts["images_per_s_median"].values(), experts["ratio_mttlib_to_plain"])
    vmap = s["vmap"]["result"]
    assert positive(vmap["images_per_s_vmap"], vmap["images_per_s_loop"], vmap["speedup_vmap"])
    assert vmap["max_abs_diff_one_step"] < 1e-4  # the batched step computes what the loop computes
    precision = {r["precision"]: r for r in s["precision"]["result"]}
    assert set(precision) == {"fp32", "bf16"}  # fp16 is CUDA's only
    assert all(positive(r["s_per_iter"], r["peak_mb"]) for r in precision.values())
    assert precision["fp32"]["cosine_vs_fp32"] == 1.0 and precision["bf16"]["cosine_vs_fp32"] > 0.9
    assert all(positive(s[part]["seconds"]) for part in s["data"])


def test_a_part_runs_in_a_child_process_as_on_the_gpu(check):
    got = check.run_part("vmap", True, timeout=300)
    assert "error" not in got, got
    assert positive(got["result"]["images_per_s_vmap"], got["seconds"])


def test_a_spent_budget_skips_the_parts_and_says_so(check, tmp_path):
    out, threads = tmp_path / "y.json", torch.get_num_threads()
    try:
        assert check.main(["--dry-run", "--budget", "0", "--out", str(out)]) == 1
    finally:
        torch.set_num_threads(threads)  # a dry run uses one thread
    s = json.loads(out.read_text())
    assert s["ok"] is False and s["distill"] == {"error": "skipped: the time budget was spent"}
    assert "error" in s["cuda_tests"]  # no test report was given


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_only_the_dry_run_runs(check, tmp_path, capsys):
    assert check.main(["--out", str(tmp_path / "z.json")]) == 2
    assert "--dry-run" in capsys.readouterr().err and not (tmp_path / "z.json").exists()
