"""mttlib.cli: flags generated from the configuration dataclasses, one error handler for every command."""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from mttlib import cli, run, texture
from mttlib.distill import DistillConfig
from mttlib.experts import ExpertConfig
from mttlib.io import CorruptFileError, atomic_save


def _dests(parser: argparse.ArgumentParser, command: str) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {a.dest for a in sub._actions}


def test_every_config_field_has_a_flag():
    parser = cli.build_parser()
    distill_fields = {f.name for f in dataclasses.fields(DistillConfig)} - {"dataset", "ipc", "preset"}
    assert distill_fields <= _dests(parser, "distill")
    assert {f.name for f in dataclasses.fields(ExpertConfig)} - {"dataset"} <= _dests(parser, "experts")


def test_a_new_field_is_a_new_flag_with_its_type():
    @dataclass
    class Toy:
        steps: int = 3
        rate: float | None = None
        flag: bool = True
        kwargs: dict = field(default_factory=dict)

    parser = argparse.ArgumentParser()
    cli.add_config_flags(parser, Toy)
    args = parser.parse_args(["--steps", "5", "--rate", "0.5", "--no-flag", "--kwargs", '{"width": 16}'])
    assert cli.config_values(args, Toy) == {"steps": 5, "rate": 0.5, "flag": False, "kwargs": {"width": 16}}
    assert cli.config_values(parser.parse_args([]), Toy) == {}  # unset flags keep the preset's values
    with pytest.raises(SystemExit):
        parser.parse_args(["--steps", "many"])


def test_invalid_value_is_one_line_and_exit_2(capsys):
    assert cli.main(["distill", "--preset", "smoke", "--lr-img", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: lr_img must be a positive")
    with pytest.raises(ValueError, match="lr_img"):  # --debug shows the traceback instead
        cli.main(["--debug", "distill", "--preset", "smoke", "--lr-img", "-1"])


def test_truncated_expert_file_is_one_line_and_exit_2(tmp_path, capsys):
    atomic_save({"snapshots": torch.zeros(3, 4), "meta": {"format": "mttlib-expert"}}, tmp_path / "expert_00000.pt")
    data = (tmp_path / "expert_00000.pt").read_bytes()
    (tmp_path / "expert_00000.pt").write_bytes(data[: len(data) // 2])
    assert cli.main(["distill", "--preset", "smoke", "--experts", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expert_00000.pt" in err[0] and "Delete it" in err[0]
    assert not (tmp_path / "o").exists()


class _Payload:
    """Unpickling this would run code: it creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


BAD_FILES = {"hostile.pt": "holds Python objects (io.open)", "random.pt": "cannot be read: it is truncated"}


def _write_bad_files(folder: Path) -> Path:
    """A file whose loading would run code and one of random bytes in ``folder``; returns the code's marker."""
    marker = folder / "ran"
    torch.save({"images": torch.zeros(2, 3, 4, 4), "payload": _Payload(str(marker))}, folder / "hostile.pt")
    (folder / "random.pt").write_bytes(random.Random(0).randbytes(2048))
    return marker


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "weights_only" not in lines[0] and "Unpickler" not in lines[0], lines[0]
    return lines[0]


def test_a_hostile_or_random_set_file_is_one_line_and_exit_2(tmp_path):
    marker = _write_bad_files(tmp_path)
    for name, says in BAD_FILES.items():  # in a fresh process, as a learner runs it: all of stderr is one line
        done = subprocess.run([sys.executable, "-m", "mttlib", "evaluate", "--set", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 2 and says in _one_error_line(done.stderr) and done.stdout == ""
    with pytest.raises(CorruptFileError) as caught:  # --debug shows the traceback, PyTorch's error chained
        cli.main(["--debug", "evaluate", "--set", str(tmp_path / "hostile.pt")])
    assert caught.value.__cause__ is not None
    assert not marker.exists()


def test_hostile_or_random_textures_and_experts_are_one_line_and_exit_2(tmp_path, capsys):
    marker = _write_bad_files(tmp_path)
    (tmp_path / "experts").mkdir()
    for name, says in BAD_FILES.items():
        assert cli.main(["texture", "export", str(tmp_path / name)]) == 2
        assert says in _one_error_line(capsys.readouterr().err)
        shutil.copy(tmp_path / name, tmp_path / "experts" / "expert_00000.pt")
        assert cli.main(["distill", "--preset", "smoke", "--experts", str(tmp_path / "experts"),
                         "--out", str(tmp_path / "o")]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert says in line and "expert_00000.pt" in line
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_a_set_of_the_wrong_shape_is_one_line_and_exit_2(tmp_path, capsys):
    atomic_save({"images": torch.zeros(7, 5), "labels": torch.arange(3), "syn_lr": 0.01}, tmp_path / "odd.pt")
    assert cli.main(["evaluate", "--set", str(tmp_path / "odd.pt")]) == 2
    assert "images must be a float tensor [N, C, H, W], it holds float32 [7, 5]" in \
        _one_error_line(capsys.readouterr().err)


def test_missing_data_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["data", f"folder:{tmp_path / 'nothing'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


# --- presets for any dataset: a folder of images, derived presets and borrowed paper rows ----------


def _image_folder(root, classes=3, side=28, gray=True, train=12, test=4):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 128, (side, side) if gray else (side, side, 3), generator=g) + 10 * c
                Image.fromarray(pixels.to(torch.uint8).numpy()).save(root / split / f"class{c}" / f"{i:03d}.png")
    return f"folder:{root}"


def test_smoke_size_end_to_end_on_a_grayscale_folder(tmp_path):
    dataset = _image_folder(tmp_path / "gray")
    common = ["--dataset", dataset, "--data-root", str(tmp_path), "--runs", str(tmp_path / "runs"), "--preset",
              "smoke", "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for command in (["experts"], ["distill", "--out", str(tmp_path / "run")]):
        done = subprocess.run([sys.executable, "-m", "mttlib", *command, *common], capture_output=True, text=True,
                              env=env, timeout=300)
        assert done.returncode == 0, done.stderr
    blob = run.load_distilled(tmp_path / "run")
    assert tuple(blob["images"].shape) == (3, 1, 28, 28) and blob["labels"].tolist() == [0, 1, 2]
    config = blob["config"]
    assert config["preset"] == f"{dataset}/ipc1/smoke" and config["dataset"] == dataset
    assert config["model"] == "convnet" and config["model_kwargs"] == {"width": 8}  # depth 3 at 28 px
    # texture mode finds the same experts through the derived preset
    assert cli.main(["texture", "distill", *common, "--out", str(tmp_path / "tex"), "--iterations", "1"]) == 0
    tex = texture.load_textures(tmp_path / "tex")
    assert tuple(tex["images"].shape) == (3, 1, 56, 56) and tex["config"]["preset"] == f"{dataset}/ipc1/smoke"


def test_borrowing_a_paper_row_is_recorded_and_refused_for_other_shapes(tmp_path, capsys):
    dataset = _image_folder(tmp_path / "c10", classes=10, side=32, gray=False, train=2, test=1)
    small = ["--dataset", dataset, "--data-root", str(tmp_path), "--preset", "paper", "--like", "cifar10", "--no-zca",
             "--no-progress", "--device", "cpu"]
    assert cli.main(["experts", *small, "--epochs", "1", "--num-experts", "1", "--width", "8",
                     "--out", str(tmp_path / "e")]) == 0
    assert cli.main(["distill", *small, "--iterations", "1", "--syn-steps", "2", "--expert-epochs", "1",
                     "--max-start-epoch", "1", "--model-kwargs", '{"width": 8}', "--experts", str(tmp_path / "e"),
                     "--out", str(tmp_path / "run")]) == 0
    assert f"(cifar10/ipc1/paper (borrowed for {dataset}))" in capsys.readouterr().out
    config = run.load_distilled(tmp_path / "run")["config"]
    assert config["preset"] == f"cifar10/ipc1/paper (borrowed for {dataset})" and config["dataset"] == dataset
    assert (config["lr_img"], config["lr_lr"]) == (100.0, 1e-7)  # the paper's CIFAR-10 ipc 1 row
    for command in (["distill", "--dataset", dataset, "--preset", "paper", "--like", "cifar100"],
                    ["texture", "distill", "--dataset", dataset, "--preset", "classroom", "--like", "mnist"],
                    ["experts", "--dataset", dataset, "--like", "cifar10"]):
        assert cli.main([*command, "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "cannot borrow cifar100/ipc1/paper" in err[0] and "in 100 classes" in err[0] and "1x28x28" in err[1]
    assert "--like needs --preset" in err[2]
    assert cli.main(["distill", "--dataset", dataset, "--preset", "paper", "--data-root", str(tmp_path)]) == 2
    assert "--like cifar10" in capsys.readouterr().err  # without --like: no paper row, and how to borrow one
