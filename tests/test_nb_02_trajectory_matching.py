"""Notebook 02 at smoke size: one hand-written distillation iteration, checked against the library,
then a short run, the three-way accuracy table with its epochs, and DD-Ranking's IOR and HLR.

The hand-written iteration is an independent computation (a plain loop of
``autograd.grad(create_graph=True)`` steps) of what ``mttlib.matching.meta_gradient`` returns, so a
wrong adjoint, a dropped Hessian term, a replayed augmentation that differs or a wrong loss
normalisation shows up as a difference far above float32 round-off. At smoke size nothing is
expected to learn: the accuracies are only checked to be fractions, and the scores to be their
differences.
"""

from pathlib import Path

import pytest

from nbharness import run_notebook


def test_notebook_02_trajectory_matching(tmp_path):
    r = run_notebook("02_trajectory_matching", out_dir=tmp_path)
    assert r["didactic_loss_diff"] < 1e-5
    assert r["didactic_grad_diff"] < 5e-3
    assert r["strategies_rel_diff"] < 1e-4
    assert set(r["memory_mb"]) == {"unroll", "recompute"} and all(v > 0 for v in r["memory_mb"].values())
    assert r["iterations"] == 4 and r["syn_steps"] == 3
    assert 0 < r["final_loss"] < 10 and r["final_syn_lr"] > 0
    table = r["accuracy_table"]
    assert [row["method"] for row in table] == ["distilled", "random real", "full data"]
    assert [row["ipc"] for row in table] == [1, 1, "all"]
    for row in table:
        assert 0 <= row["mean"] <= 1 and 0 <= row["std"] <= 1 and row["runs"] >= 1
    assert table[0]["mean"] == r["distilled_mean"] and table[1]["mean"] == r["random_mean"]
    assert table[2]["mean"] == r["full_mean"]
    # how long each row trained: the small sets the smoke recipe's 20 epochs, the full data to its limit of 2
    assert [row["epochs"] for row in table] == ["20", "20", "2"]
    assert r["full_max_epochs"] == 2 and r["full_epochs_trained"] == [2] and len(r["full_test_curve"]) == 2
    # DD-Ranking's scores sit on the distilled row and are the differences of the table's accuracies
    assert r["ior"] == pytest.approx(r["distilled_mean"] - r["random_mean"])
    assert r["hlr"] == pytest.approx(r["full_mean"] - r["distilled_mean"])
    assert (table[0]["ior"], table[0]["hlr"]) == (r["ior"], r["hlr"]) and "ior" not in table[1]
    gif = Path(r["gif"])
    assert gif.exists() and gif.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    assert (tmp_path / "figures" / "02_distilled_images.png").exists()
    assert r["seconds"] < 240
