"""mttlib.io: loads never run code from a file, writes are atomic, locations follow the environment."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from mttlib import io


class _Payload:
    """An object whose unpickling would run code: it creates a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_safe_load_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.pt"
    torch.save({"images": torch.zeros(1), "payload": _Payload(str(marker))}, hostile, pickle_protocol=2)
    with pytest.raises(io.CorruptFileError, match="(?s)hostile.pt.*Delete it"):
        io.safe_load(hostile)
    assert not marker.exists(), "loading must not have run the file's code"
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(io.CorruptFileError):
        io.safe_load(plain)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError):
        io.safe_load(tmp_path / "missing.pt")


def test_atomic_writes_leave_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "out.pt"
    io.atomic_save({"x": torch.arange(3)}, path)
    assert torch.equal(io.safe_load(path)["x"], torch.arange(3))
    io.atomic_write_bytes(b"old", tmp_path / "b.bin")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        io.atomic_write_bytes(b"new", tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == b"old"  # the old file survives a failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "sub"]  # no temporary file left


def test_locations_follow_argument_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MTT_RUNS", str(tmp_path / "env"))
    assert io.runs_dir() == tmp_path / "env"
    assert io.runs_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("MTT_RUNS")
    assert io.runs_dir() == io.KIT_ROOT / "runs"
