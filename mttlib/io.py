"""Safe files: atomic writes, and loads that never unpickle arbitrary code.

Every artifact of the kit (expert trajectories, checkpoints, distilled sets, caches) goes
through these helpers, so an interrupted run never leaves a half-written file behind, and
loading a file from somebody else cannot run their code.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_save", "safe_load", "atomic_write_text", "atomic_write_json", "CorruptFileError"]


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
    """Load a file written by :func:`atomic_save` with ``weights_only=True``.

    Raises ``FileNotFoundError`` for a missing file and :class:`CorruptFileError`, naming the
    file and what to do, for one that is truncated, corrupt or holds arbitrary Python objects.
    """
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


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    return _atomic_write(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)
