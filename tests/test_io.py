"""mttlib.io: loads never run code from a file, writes are atomic, locations follow the environment."""

from __future__ import annotations

import os
import pickle
import random

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
    with pytest.raises(io.CorruptFileError, match=r"hostile\.pt was not loaded: it holds Python objects .*run code"):
        io.safe_load(hostile)
    assert not marker.exists(), "loading must not have run the file's code"
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(io.CorruptFileError):
        io.safe_load(plain)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError):
        io.safe_load(tmp_path / "missing.pt")


def _refusal(path) -> str:
    """The message safe_load refuses ``path`` with; checked to be one line free of PyTorch's own text."""
    with pytest.raises(io.CorruptFileError) as caught:
        io.safe_load(path)
    message = str(caught.value)
    assert "\n" not in message and caught.value.__cause__ is not None  # PyTorch's error stays chained
    for torch_text in ("weights_only", "WeightsUnpickler", "Traceback", "GLOBAL", "pytorch.org"):
        assert torch_text not in message
    return message


def test_safe_load_says_whether_a_file_holds_objects_or_is_broken(tmp_path):
    marker = tmp_path / "ran"
    payload = _Payload(str(marker))
    hostile = {"protocol 2": {}, "protocol 4": {"pickle_protocol": 4},
               "old format": {"_use_new_zipfile_serialization": False}}
    for name, options in hostile.items():
        torch.save({"images": torch.zeros(2), "payload": payload}, tmp_path / f"{name}.pt", **options)
        message = _refusal(tmp_path / f"{name}.pt")
        assert "holds Python objects (io.open)" in message and "could run code" in message, name
        assert "Re-create it" in message and "Delete it" not in message
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps(payload))  # not even a torch file
    assert "holds Python objects (io.open)" in _refusal(tmp_path / "plain.pkl")
    assert not marker.exists()
    good = tmp_path / "good.pt"
    io.atomic_save({"images": torch.zeros(2, 3)}, good)
    (tmp_path / "random.pt").write_bytes(random.Random(0).randbytes(4096))
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:200])
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("random.pt", "truncated.pt", "empty.pt"):
        message = _refusal(tmp_path / name)
        assert message.startswith(f"{tmp_path / name} cannot be read: it is truncated, corrupt"), message
        assert "Delete it and re-create it" in message and "Python objects" not in message
    assert io.safe_load(good)["images"].shape == (2, 3)


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


def test_cached_reads_a_shipped_folder_first_and_never_writes_it(tmp_path):
    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    shipped.mkdir()
    io.atomic_save({"value": torch.tensor(1.0), "fingerprint": "ab12"}, shipped / "thing-ab12.pt")
    calls = []

    def make():
        calls.append(1)
        return {"value": torch.tensor(2.0)}

    assert float(io.cached(cache, "thing", "ab12", make, shipped=shipped)["value"]) == 1.0 and not calls
    assert not cache.exists()  # nothing copied out of the shipped folder
    # another fingerprint, or a broken shipped file: made and kept in the cache, the shipped folder untouched
    assert float(io.cached(cache, "thing", "cd34", make, shipped=shipped)["value"]) == 2.0
    (shipped / "thing-ef56.pt").write_bytes(b"not a tensor file")
    assert float(io.cached(cache, "thing", "ef56", make, shipped=shipped)["value"]) == 2.0
    assert sorted(p.name for p in shipped.iterdir()) == ["thing-ab12.pt", "thing-ef56.pt"]
    assert [p.name for p in cache.iterdir()] == ["thing-ef56.pt"]  # the newest fingerprint, older ones removed
