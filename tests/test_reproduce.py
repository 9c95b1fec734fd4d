"""``python -m mttlib reproduce``: the paper's CIFAR-10 table end to end at smoke size, on a generated image folder of
CIFAR-10's shape; a run stopped in a stage continues where it stopped, a deleted stage result is made again alone,
the gpu size fits its minutes, and bad options are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mttlib import cli, reproduce, run
from mttlib.presets import get_preset
from mttlib.reproduce import Schedule, gpu_schedule, planned_seconds

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STAGES = ["experts"] + [f"{kind}-ipc{ipc}" for ipc in (1, 10) for kind in ("distill", "evaluate", "random-real")]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, Path]:
    """A folder of CIFAR-10's shape (32 px RGB, 10 classes, 22 train and 21 test images each: more than the smoke
    size keeps) with a class colour under noise, and a data root of its own for the caches."""
    base = tmp_path_factory.mktemp("c10")
    rng = np.random.default_rng(0)
    for split, count in (("train", 22), ("test", 21)):
        for c, name in enumerate(CLASSES):
            (base / "tree" / split / name).mkdir(parents=True)
            colour = np.array([(37 * c) % 256, (91 * c) % 256, (151 * c) % 256])
            for k in range(count):
                pixels = np.clip(colour + rng.normal(0, 60, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(base / "tree" / split / name / f"{k:04d}.png")
    return base / "tree", base / "root"


def _args(tree: tuple[Path, Path], out: Path, *more: str) -> list[str]:
    return ["reproduce", "--size", "smoke", "--data", f"folder:{tree[0]}", "--like", "cifar10", "--out", str(out),
            "--data-root", str(tree[1]), "--device", "cpu", "--no-progress", *more]


def test_smoke_run_writes_the_table_stopped_runs_continue_and_a_deleted_stage_is_redone(tree, tmp_path, monkeypatch,
                                                                                         capsys):
    out = tmp_path / "run"
    original = run.distill

    def stopped_at_ipc10(*args, **kwargs):  # Ctrl-C after the third iteration of ipc 10 (its checkpoint is written)
        if Path(args[3]).name == "distill-ipc10":
            kwargs["callback"] = lambda m: (_ for _ in ()).throw(KeyboardInterrupt) if m["iteration"] == 2 else None
        return original(*args, **kwargs)

    monkeypatch.setattr(run, "distill", stopped_at_ipc10)
    with pytest.raises(KeyboardInterrupt):
        cli.main(_args(tree, out))
    monkeypatch.undo()
    assert [s for s in STAGES if (out / f"{s}.json").exists()] == STAGES[:4]
    stopped = json.loads((out / "progress.json").read_text())["distill-ipc10"]
    assert stopped > 0 and not (out / "reproduce.json").exists()

    capsys.readouterr()
    assert cli.main(_args(tree, out)) == 0
    printed = capsys.readouterr().out
    assert all(f"{s}: done in an earlier run" in printed for s in STAGES[:4])
    resumed = json.loads((out / "distill-ipc10.json").read_text())
    assert resumed["resumed_from_iteration"] == 3 and resumed["iterations"] == 5 and resumed["seconds"] > stopped
    assert len((out / "distill-ipc10" / "metrics.jsonl").read_text().splitlines()) == 5
    assert not (out / "progress.json").exists()  # nothing unfinished is left

    report = json.loads((out / "reproduce.json").read_text())
    assert [r["ipc"] for r in report["rows"]] == [1, 10] and report["size"] == "smoke" and report["unit"] == "percent"
    for row, paper in zip(report["rows"], (46.3, 65.3)):
        assert row["paper_mean"] == paper and row["networks"] == 2 and row["epochs"] == 20
        for key in ("accuracy_mean", "accuracy_std", "random_real_mean"):
            assert 0 <= row[key] <= 100
    assert set(report["seconds"]) == {"data", *STAGES, "total"} and all(v >= 0 for v in report["seconds"].values())
    assert report["schedule"]["num_experts"] == 2 and report["schedule"]["iterations"] == 5
    assert "2 experts instead of 100" in report["schedule"]["departures"]
    assert "the first 20 training images of each class instead of all" in report["schedule"]["departures"]
    assert "| 10 |" in printed and "65.3 ± 0.7" in printed and "departs from the paper's" in printed

    before = {s: (out / f"{s}.json").stat().st_mtime_ns for s in STAGES}
    (out / "evaluate-ipc1.json").unlink()
    assert cli.main(_args(tree, out)) == 0
    printed = capsys.readouterr().out
    assert "evaluate-ipc1 ..." in printed and printed.count("done in an earlier run") == len(STAGES) - 1
    assert [s for s in STAGES if (out / f"{s}.json").stat().st_mtime_ns != before[s]] == ["evaluate-ipc1"]
    again = json.loads((out / "reproduce.json").read_text())
    assert again["rows"][0]["accuracy_mean"] == pytest.approx(report["rows"][0]["accuracy_mean"])  # same seeds

    assert cli.main(_args(tree, out, "--size", "gpu")) == 2  # another schedule in the same folder
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another schedule or data" in err[0]


@pytest.mark.parametrize("extra, message", [
    (["--ipc", "50"], "--ipc takes 1 and/or 10"),
    (["--size", "huge"], "--size must be one of"),
    (["--size", "gpu", "--minutes", "0"], "--minutes must be a positive number"),
    (["--data", "folder:DOES-NOT-EXIST"], "DOES-NOT-EXIST"),
    (["--data", "cifar10-mini"], "--like cifar10"),  # a dataset without paper rows of its own
])
def test_bad_options_are_one_line_errors(extra, message, tmp_path, capsys):
    assert cli.main(["reproduce", "--out", str(tmp_path / "o"), "--data-root", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_the_gpu_size_fits_its_minutes_and_names_its_departures():
    presets = {ipc: get_preset("cifar10", ipc, "paper") for ipc in (1, 10)}
    assert Schedule().departures(presets) == []  # the paper size is the published schedule
    previous = None
    for minutes in (5, 10, 30, 120, 600):
        s = gpu_schedule(minutes, presets)
        assert planned_seconds(s, presets) <= 60 * minutes or (s.num_experts, s.iterations) == (2, 10)
        assert s.expert_epochs == 21  # ipc 10 starts below epoch 20 and matches 2 epochs on: no later epoch is read
        if previous:
            assert s.num_experts >= previous.num_experts and s.iterations >= previous.iterations
        previous = s
    ten = gpu_schedule(10, presets)
    assert (ten.eval_runs, ten.eval_epochs) == (5, 1000) and 2 <= ten.num_experts < 100 and ten.iterations < 5000
    assert "experts trained 21 epochs instead of 50 (as many as the distillation reads)" in ten.departures(presets)
    assert (previous.num_experts, previous.iterations) == (100, 5000)  # ten hours hold the paper's counts
    assert reproduce.make_schedule("smoke", presets) == reproduce.SMOKE
