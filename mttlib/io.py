"""Where the kit's files live, and safe files: atomic writes, loads that never unpickle code.

Every artifact (trajectories, checkpoints, distilled sets, caches) goes through these helpers, so
an interrupted run leaves no half-written file and loading somebody else's file cannot run their
code; :func:`cached` keeps slow work (decoded images, a fitted ZCA) in a fingerprinted file. Each
location is an explicit argument, else an environment variable, else a folder of the kit: the data
root (``MTT_DATA_ROOT``, ``<kit>/data``), runs of experts and distillations (``MTT_RUNS``,
``<kit>/runs``), figures and executed notebooks (``MTT_OUTPUTS``, ``<kit>/outputs``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["KIT_ROOT", "data_root", "runs_dir", "outputs_dir", "atomic_save", "safe_load", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_json", "CorruptFileError", "cached"]

KIT_ROOT = Path(__file__).resolve().parent.parent


def _pick(explicit: str | Path | None, env: str, default: Path) -> Path:
    if explicit not in (None, ""):
        return Path(explicit).expanduser()
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    return default


def data_root(root: str | Path | None = None) -> Path:
    """The folder that holds datasets (``root``, else ``$MTT_DATA_ROOT``, else ``<kit>/data``)."""
    return _pick(root, "MTT_DATA_ROOT", KIT_ROOT / "data")


def runs_dir(path: str | Path | None = None) -> Path:
    """The folder for experts and distillation runs (``path``, ``$MTT_RUNS``, ``<kit>/runs``)."""
    return _pick(path, "MTT_RUNS", KIT_ROOT / "runs")


def outputs_dir(path: str | Path | None = None) -> Path:
    """The folder for figures and executed notebooks (``path``, ``$MTT_OUTPUTS``, ``<kit>/outputs``)."""
    return _pick(path, "MTT_OUTPUTS", KIT_ROOT / "outputs")


_UMASK = os.umask(0)
os.umask(_UMASK)


class CorruptFileError(RuntimeError):
    """A file exists but cannot be read back (truncated, corrupt, or not made by the kit)."""


def _atomic_write(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file private; give it the usual mode
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically."""
    return _atomic_write(Path(path), lambda handle: torch.save(obj, handle))


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a file written by :func:`atomic_save` with ``weights_only=True``; a truncated or corrupt file, or
    one holding arbitrary Python objects, raises :class:`CorruptFileError` naming the file and what to do."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        raise CorruptFileError(
            f"Cannot read {path}: it is truncated, corrupt, or holds objects other than "
            f"tensors and plain Python values ({type(exc).__name__}: {exc}). "
            "Delete it and re-create it (a re-run of the command that wrote it does this)."
        ) from exc


def atomic_write_bytes(data: bytes, path: str | Path) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file, then a rename)."""
    return _atomic_write(Path(path), lambda handle: handle.write(data))


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    return _atomic_write(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def cached(folder: str | Path | None, name: str, fingerprint: str, make: Callable[[], dict],
           check: Callable[[dict], Any] = lambda content: True) -> dict:
    """``make()`` (a dict of tensors and plain values), kept in ``folder/<name>-<fingerprint>.pt`` while it is good.

    ``fingerprint`` (a hex digest) says what the content was made from; a missing, unreadable or stale
    file (other fingerprint, ``check(content)`` false or raising) is rebuilt silently and older
    fingerprints of ``name`` deleted. A read-only folder only costs the rebuild; ``folder=None`` calls ``make()``.
    """
    if folder is None:
        return make()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[-80:] or "cache"
    path = Path(folder) / f"{stem}-{fingerprint}.pt"
    try:
        content = safe_load(path)
        if content["fingerprint"] == fingerprint and check(content):
            return content
    except (FileNotFoundError, RuntimeError, LookupError, TypeError, ValueError, AttributeError):
        pass  # RuntimeError includes CorruptFileError
    content = {**make(), "fingerprint": fingerprint}
    try:
        for stale in path.parent.glob("*.pt"):
            if stale != path and re.fullmatch(re.escape(stem) + r"-[0-9a-f]+\.pt", stale.name):
                stale.unlink()
        atomic_save(content, path)
    except OSError:
        pass
    return content
