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
import pickletools
import re
import tempfile
import warnings
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["KIT_ROOT", "data_root", "runs_dir", "outputs_dir", "atomic_save", "safe_load", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_json", "CorruptFileError", "describe", "cached"]

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


def describe(value: Any) -> str:
    """A loaded value as an error message shows it, in one line: a tensor's dtype and shape, a number, a short
    string (escaped), or else its type."""
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
    if type(value) in (int, float, bool, type(None)) or (type(value) is str and len(value) <= 40):
        return repr(value)
    return type(value).__name__


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


def _pickled_names(blob: bytes) -> set[str]:
    """The classes and functions named by the complete pickles in ``blob``, read without importing or running
    anything (consecutive pickles, as PyTorch's old format writes, are read one after another)."""
    found, stream = set(), BytesIO(blob)
    try:
        while stream.tell() < len(blob):
            names, strings = set(), []
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    names.add(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL":  # module and name are the two strings pushed before it
                    names.add(".".join(strings[-2:]))
                elif isinstance(arg, str):
                    strings.append(arg)
            found |= names  # only a pickle read to its end counts: random bytes rarely get that far
    except Exception:  # the rest is not a pickle (tensor bytes of the old format, or junk)
        pass
    return {name for name in found if re.fullmatch(r"[A-Za-z_][\w.]*", name)}


def _python_objects(path: Path) -> list[str]:
    """What besides tensors and plain values the file would import to load (empty: nothing, or unreadable)."""
    try:
        if zipfile.is_zipfile(path):  # torch.save's format: PyTorch knows which names it accepts
            try:
                return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
            except Exception:  # a pickle protocol its scanner does not read
                with zipfile.ZipFile(path) as archive:
                    blob = next((archive.read(n) for n in archive.namelist() if n.endswith("data.pkl")), b"")
        else:
            blob = path.read_bytes()
    except Exception:
        return []
    # what torch.save itself writes for tensors is fine; anything else is somebody's Python object
    return sorted(n for n in _pickled_names(blob) if not n.startswith("torch.") and n != "collections.OrderedDict")


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a file written by :func:`atomic_save`, accepting only tensors and plain values (PyTorch's
    ``weights_only=True``), so that loading can never run code from the file.

    Anything else raises :class:`CorruptFileError` with a one-line message naming the file and what to do:
    a file holding other Python objects is refused as such, a truncated or corrupt one as that. PyTorch's
    own error stays chained to it (``--debug`` shows it) but out of the message: its advice to load without
    the check is advice a learner holding a hostile file must not get.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        with warnings.catch_warnings():  # a file pickled with another protocol draws a warning meant for PyTorch
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise  # a directory, a missing permission: the file may be fine
    except Exception as exc:  # torch raises several types for bad files
        objects = _python_objects(path)
        if objects:
            shown = ", ".join(objects[:3]) + (", ..." if len(objects) > 3 else "")
            raise CorruptFileError(
                f"{path} was not loaded: it holds Python objects ({shown}), not only tensors and plain values, "
                "and loading such a file could run code. Re-create it with the kit command that writes it; the "
                "kit reads only files of tensors and plain values.") from exc
        raise CorruptFileError(
            f"{path} cannot be read: it is truncated, corrupt, or not a file saved by PyTorch. Delete it and "
            "re-create it by re-running the command that wrote it.") from exc


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
           check: Callable[[dict], Any] = lambda content: True, shipped: str | Path | None = None) -> dict:
    """``make()`` (a dict of tensors and plain values), kept in ``folder/<name>-<fingerprint>.pt`` while it is good.

    ``fingerprint`` (a hex digest) says what the content was made from; a missing, unreadable or stale
    file (other fingerprint, ``check(content)`` false or raising) is rebuilt silently and older
    fingerprints of ``name`` deleted. A read-only folder only costs the rebuild; ``folder=None`` calls ``make()``.
    ``shipped`` names a folder that ships with the kit, searched first under the same name and never written.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[-80:] or "cache"
    for place in (shipped, folder):
        if place is None:
            continue
        try:
            content = safe_load(Path(place) / f"{stem}-{fingerprint}.pt")
            if content["fingerprint"] == fingerprint and check(content):
                return content
        except (OSError, RuntimeError, LookupError, TypeError, ValueError, AttributeError):
            pass  # RuntimeError includes CorruptFileError
    content = {**make(), "fingerprint": fingerprint}
    if folder is None:
        return content
    path = Path(folder) / f"{stem}-{fingerprint}.pt"
    try:
        for stale in path.parent.glob("*.pt"):
            if stale != path and re.fullmatch(re.escape(stem) + r"-[0-9a-f]+\.pt", stale.name):
                stale.unlink()
        atomic_save(content, path)
    except OSError:
        pass
    return content
