"""Notebook 05 at smoke size: every follow-up switched on, the label gradient of both strategies
compared, the short check table with its soft-label rows labelled, its epochs, and DD-Ranking's IOR
and HLR on the hard-label rows, and the recorded comparison (measured at classroom size by
benchmarks/bench_ablation.py) with each soft-label row beside its hard-label row.

At smoke size nothing is expected to learn: the accuracies are only checked to be fractions; what
is checked is that each variant ran, that every soft-label result sits beside the hard-label
result of the same images, and the numbers the notebook computed along the way.
"""

import pytest

from mttlib.followups import start_epoch_upper
from nbharness import run_notebook


def test_notebook_05_beyond_mtt(tmp_path):
    r = run_notebook("05_beyond_mtt", out_dir=tmp_path)
    assert r["variants"] == ["mtt", "datm-labels", "tesla", "datm-schedule", "ftd-ema"]
    assert r["tesla_rows_sum_err"] < 1e-5
    assert r["label_grad_rel_diff"] < 1e-4
    assert r["ema_closed_form_diff"] < 1e-6
    low, high, rise = r["schedule_config"]
    assert r["schedule"] == [start_epoch_upper(i, low, high, rise) for i in range(r["iterations"])]
    assert 0 <= r["correct_fraction"] <= 1
    table = r["comparison_table"]
    assert {row["variant"] for row in table} == set(r["variants"])
    for row in table:
        assert 0 <= row["mean"] <= 1 and 0 <= row["std"] <= 1 and row["runs"] >= 1
        assert row["labels"] in ("hard", "soft") and row["epochs"] == "4"  # the smoke recipe's length
        if row["labels"] == "hard":  # IOR and HLR against the two baselines; none for soft labels
            assert row["ior"] == pytest.approx(row["mean"] - r["random_real_mean"])
            assert row["hlr"] == pytest.approx(r["full_mean"] - row["mean"])
        else:
            assert row["ior"] is None and row["hlr"] is None
        if row["labels"] == "soft":  # a soft-label number always comes with the hard one of the same images
            assert any(o["variant"] == row["variant"] and o["images"] == row["images"] and o["labels"] == "hard"
                       for o in table)
    soft = {row["variant"] for row in table if row["labels"] == "soft"}
    assert soft == {"datm-labels", "tesla"}
    assert [row["images"] for row in table if row["variant"] == "ftd-ema"] == ["raw", "ema"]
    # the report's table: every hard-label row, then the two baselines, each with its epochs
    report = r["accuracy_table"]
    assert len(report) == sum(row["labels"] == "hard" for row in table) + 2
    assert [row["method"] for row in report[-2:]] == ["random real", "full data"]
    assert report[-1]["mean"] == r["full_mean"] and report[-1]["epochs"] == "2" and r["full_epochs_trained"] == [2]
    assert all("epochs" in row for row in report)
    # the ten-iteration run is a check: ftd-ema's raw images are mtt's, bit for bit
    assert r["ema_raw_equals_mtt"] is True
    # the recorded comparison: every soft-label number beside the hard one of the same images, and the
    # baselines a row must beat (random real images; the real start with soft labels: knowledge distillation)
    measured = r["measured_table"]
    for row in measured:
        assert 0 < row["mean"] < 100 and row["labels"] in ("hard", "soft")
        if row["labels"] == "soft":
            assert any(o["variant"] == row["variant"] and o["images"] == row["images"] and o["labels"] == "hard"
                       for o in measured)
    assert {(o["variant"], o["labels"]) for o in measured} >= {("random real", "hard"), ("real start", "soft"),
                                                                ("mtt", "hard"), ("tesla", "soft"), ("datm-labels", "soft"),
                                                                ("datm-schedule", "hard"), ("ftd-ema", "hard")}
    mtt = next(o for o in measured if o["variant"] == "mtt")
    assert next(o for o in measured if o["variant"] == "ftd-ema" and o["images"] == "raw")["mean"] == mtt["mean"]
    assert (tmp_path / "figures" / "05_comparison.png").exists()
    assert (tmp_path / "figures" / "05_soft_labels.png").exists()
    assert r["seconds"] < 240
