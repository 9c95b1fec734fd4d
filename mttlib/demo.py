"""``python -m mttlib demo``: run every notebook in order, as a teacher would on day one.

Each ``notebooks/NN_*.ipynb`` is executed with papermill (kernel ``python3``) at classroom
size on the embedded dataset; executed notebooks and figures go to the outputs folder
(``outputs/`` by default, git-ignored). Experts are shared between notebooks through one runs
folder, so later notebooks reuse what earlier ones trained. A failed notebook stops the demo
and names the cell and the error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mttlib.paths import KIT_ROOT, outputs_dir, runs_dir

NOTEBOOKS = KIT_ROOT / "notebooks"


def notebook_files(only: list[str] | None = None) -> list[Path]:
    """The kit's notebooks in course order, optionally only those whose name starts with ``only``."""
    files = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        files = [f for f in files if any(f.stem.startswith(o) for o in only)]
    return files


def run_demo(out: Path, runs: Path, smoke: bool = False, only: list[str] | None = None,
             cell_timeout: int = 1800) -> list[tuple[str, float]]:
    """Execute the notebooks into ``out/notebooks``; return (name, seconds) per notebook."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    files = notebook_files(only)
    if not files:
        raise FileNotFoundError(f"no notebooks found in {NOTEBOOKS} (is this a full checkout of the kit?)")
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    timings = []
    for i, path in enumerate(files, 1):
        print(f"[{i}/{len(files)}] {path.name} ...", end="", flush=True)
        start = time.perf_counter()
        params = {"SMOKE": smoke, "OUT_DIR": str(out), "RUNS_DIR": str(runs), "INTERACTIVE": False}
        try:
            pm.execute_notebook(str(path), str(out / "notebooks" / path.name), parameters=params,
                                kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False,
                                execution_timeout=cell_timeout)
        except PapermillExecutionError as err:
            print(" FAILED")
            raise SystemExit(
                f"{path.name} failed in cell {err.cell_index} (execution count {err.exec_count}): "
                f"{err.ename}: {err.evalue}\nThe partly executed notebook is {out / 'notebooks' / path.name}."
            ) from None
        seconds = time.perf_counter() - start
        timings.append((path.name, seconds))
        print(f" done in {seconds:.0f} s")
    return timings


def cli(argv: list[str]) -> int:
    """Command line of ``python -m mttlib demo``."""
    parser = argparse.ArgumentParser(prog="python -m mttlib demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="outputs folder (default outputs/ or $MTT_OUTPUTS)")
    parser.add_argument("--runs", default=None, help="experts and runs folder (default runs/ or $MTT_RUNS)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds per notebook")
    parser.add_argument("--only", nargs="*", help="run only notebooks whose name starts with these, e.g. 00 01")
    args = parser.parse_args(argv)
    out, runs = outputs_dir(args.out).resolve(), runs_dir(args.runs).resolve()
    start = time.perf_counter()
    timings = run_demo(out, runs, smoke=args.smoke, only=args.only)
    print(f"\n{len(timings)} notebooks in {time.perf_counter() - start:.0f} s.")
    print(f"Executed notebooks: {out / 'notebooks'}")
    print(f"Figures:            {out / 'figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
