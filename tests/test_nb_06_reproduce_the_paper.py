"""Notebook 06 at smoke size: ``python -m mttlib reproduce --size smoke`` on the embedded data at ipc 1 writes its
table beside the paper's numbers with every departure named, a deleted stage is the only one run again, and the
recorded GPU table is shown as still to be measured unless a measured one has been recorded.

At smoke size nothing is expected to learn: accuracies are only checked to be percentages."""

from nbharness import run_notebook


def test_notebook_06_reproduce_the_paper(tmp_path):
    r = run_notebook("06_reproduce_the_paper", out_dir=tmp_path)
    assert r["exit_status"] == 0 and r["size"] == "smoke" and r["ipcs"] == [1]
    (row,) = r["rows"]
    assert row["ipc"] == 1 and (row["paper_mean"], row["paper_std"], row["paper_random_real_mean"]) == (46.3, 0.8, 14.4)
    for key in ("accuracy_mean", "accuracy_std", "random_real_mean", "random_real_std"):
        assert 0 <= row[key] <= 100
    assert set(r["stage_seconds"]) == {"data", "experts", "distill-ipc1", "evaluate-ipc1", "random-real-ipc1", "total"}
    assert "2 experts instead of 100" in r["departures"] and "ConvNet width 16 instead of 128" in r["departures"]
    assert r["paper_departures"] == []  # the paper size is the published schedule
    assert r["gpu_plan"]["expert_epochs"] == 21 and r["gpu_plan"]["eval_epochs"] == 1000
    assert r["stages_redone"] == ["random-real-ipc1.json"]
    assert [g["ipc"] for g in r["gpu_rows"]] == [1, 10] and [g["paper_mean"] for g in r["gpu_rows"]] == [46.3, 65.3]
    if not r["gpu_measured"]:  # the placeholder holds no invented numbers
        assert r["gpu_status"] == "still to be measured"
        assert all(g[k] is None for g in r["gpu_rows"] for k in ("accuracy_mean", "random_real_mean"))
    else:
        assert all(0 <= g[k] <= 100 for g in r["gpu_rows"] for k in ("accuracy_mean", "random_real_mean"))
    assert (tmp_path / "results" / "06_reproduce_the_paper.json").exists()
    assert r["seconds"] < 240
