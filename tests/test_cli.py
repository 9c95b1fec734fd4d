"""mttlib.cli: flags generated from the configuration dataclasses, one error handler for every command."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import pytest
import torch

from mttlib import cli
from mttlib.distill import DistillConfig
from mttlib.experts import ExpertConfig
from mttlib.io import atomic_save


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


def test_missing_data_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["data", f"folder:{tmp_path / 'nothing'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
