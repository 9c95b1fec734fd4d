"""Where the kit finds data and writes runs and outputs.

Each location comes from an explicit argument first, then an environment variable, then a
default inside the kit's checkout:

=================  ===================  ==========================
what               environment          default
=================  ===================  ==========================
dataset root       ``MTT_DATA_ROOT``    ``<kit>/data``
runs (experts,     ``MTT_RUNS``         ``<kit>/runs``
distilled sets)
outputs (figures,  ``MTT_OUTPUTS``      ``<kit>/outputs``
executed notebooks)
=================  ===================  ==========================
"""

from __future__ import annotations

import os
from pathlib import Path

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
