"""Run a notebook with papermill at smoke size and read back the numbers it recorded.

Every notebook ends with ``mttlib.viz.record_results({...})``; :func:`run_notebook` executes
the notebook (kernel ``python3``, a per-cell timeout) and returns that dict, so a test can
assert on what the notebook actually computed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nbformat
import papermill as pm

from mttlib import demo
from mttlib.viz import RESULTS_MARKER

KIT = Path(__file__).resolve().parent.parent
NOTEBOOKS = KIT / "notebooks"
CELL_TIMEOUT_S = 300
KERNEL_START_TIMEOUT_S = 240  # a busy machine can take more than papermill's default 60 s

# One runs folder for the whole test session, so a notebook can reuse the experts an earlier
# one trained (each notebook still trains them itself when they are missing).
_SESSION_RUNS = Path(tempfile.mkdtemp(prefix="mtt-nb-runs-"))


def notebook_path(name: str) -> Path:
    return NOTEBOOKS / f"{name}.ipynb"


def recorded_results(nb) -> dict:
    """The dict a notebook recorded with ``record_results`` (the last one, if several)."""
    found = None
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("metadata", {}).get("application/json", {}).get(RESULTS_MARKER):
                found = dict(out["data"]["application/json"])
    if found is None:
        raise AssertionError("the notebook recorded no results (its last cell should call record_results)")
    return found


def run_notebook(name: str, out_dir: Path | None = None, **params) -> dict:
    """Execute ``notebooks/<name>.ipynb`` with ``SMOKE=True`` (and ``params``); return its results."""
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix=f"mtt-nb-{name}-"))
    params.setdefault("SMOKE", True)
    params.setdefault("INTERACTIVE", False)
    params.setdefault("OUT_DIR", str(out_dir))
    params.setdefault("RUNS_DIR", str(_SESSION_RUNS))
    executed = out_dir / f"{name}.ipynb"
    env_backup = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        pm.execute_notebook(
            str(notebook_path(name)), str(executed), parameters=params, kernel_name="python3",
            cwd=str(NOTEBOOKS), execution_timeout=CELL_TIMEOUT_S, progress_bar=False,
            start_timeout=KERNEL_START_TIMEOUT_S, **demo._kernel_options(),  # as make demo: no TCP warning
        )
    finally:
        if env_backup is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_backup
    return recorded_results(nbformat.read(executed, as_version=4))
