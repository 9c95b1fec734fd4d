"""``python -m mttlib demo``: every notebook in order at classroom size with papermill, as a
teacher would on day one, sharing one runs folder; a failed notebook stops the demo naming the cell.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

from mttlib.io import KIT_ROOT, atomic_write_text, outputs_dir, runs_dir

NOTEBOOKS = KIT_ROOT / "notebooks"


def notebook_files(only: list[str] | None = None, folder: Path = NOTEBOOKS) -> list[Path]:
    """The kit's notebooks in course order, optionally only those whose name starts with ``only``."""
    files = sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if only:
        files = [f for f in files if any(f.stem.startswith(o) for o in only)]
    return files


# notebooks run a second time with other parameters: notebook 02 shows ipc 10 beside ipc 1
REPEATS: dict[str, list[tuple[str, dict]]] = {
    "02_trajectory_matching": [("02_trajectory_matching-ipc10.ipynb", {"IPC": 10})]}


def _kernel_options() -> dict:
    """Options for papermill that encrypt the link to each notebook's kernel (CurveZMQ) where the installed
    Jupyter supports it. Without them a recent kernel warns, at every start, that its local connection is
    plain TCP: a warning about nothing the learner did, and one the learner could not act on."""
    import zmq
    from jupyter_client import KernelManager
    from traitlets.config import Config

    if "transport_encryption" not in KernelManager.class_traits() or not zmq.has("curve"):
        return {}  # an older jupyter_client (whose kernels do not warn), or libzmq without CurveZMQ
    # "auto": encrypt when the kernel declares it can, as ipykernel's own kernel does
    return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}


def run_demo(out: Path, runs: Path, smoke: bool = False, only: list[str] | None = None,
             cell_timeout: int = 1800, folder: Path = NOTEBOOKS) -> list[tuple[str, float]]:
    """Execute the notebooks into ``out/notebooks``; return (name, seconds) per notebook."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    files = notebook_files(only, folder)
    if not files:
        raise FileNotFoundError(f"no notebooks found in {folder} (is this a full checkout of the kit?)")
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    timings, kernel_options = [], _kernel_options()
    jobs = [(path, name, extra) for path in files for name, extra in [(path.name, {}), *REPEATS.get(path.stem, [])]]
    for i, (path, name, extra) in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {name} ...", end="", flush=True)
        start = time.perf_counter()
        params = {"SMOKE": smoke, "OUT_DIR": str(out), "RUNS_DIR": str(runs), "INTERACTIVE": False, **extra}
        try:
            pm.execute_notebook(str(path), str(out / "notebooks" / name), parameters=params,
                                kernel_name="python3", cwd=str(folder), progress_bar=False,
                                execution_timeout=cell_timeout, start_timeout=240, **kernel_options)
        except PapermillExecutionError as err:
            print(" FAILED")
            raise SystemExit(
                f"{name} failed in cell {err.cell_index} (execution count {err.exec_count}): "
                f"{err.ename}: {err.evalue}\nThe partly executed notebook is {out / 'notebooks' / name}."
            ) from None
        seconds = time.perf_counter() - start
        timings.append((name, seconds))
        print(f" done in {seconds:.0f} s")
    return timings


def main(out: str | Path | None = None, runs: str | Path | None = None, smoke: bool = False,
         only: list[str] | None = None) -> int:
    """``python -m mttlib demo``: the notebooks into ``out`` (default outputs/) sharing the runs folder ``runs``
    (default runs/), then the report; prints where everything is and returns the exit status 0."""
    out, start = outputs_dir(out).resolve(), time.perf_counter()
    timings = run_demo(out, runs_dir(runs).resolve(), smoke=smoke, only=only)
    print(f"\n{len(timings)} notebooks in {time.perf_counter() - start:.0f} s.\nReport:             "
          f"{write_report(out, timings)}\nExecuted notebooks: {out / 'notebooks'}\nFigures:            "
          f"{out / 'figures'}")
    return 0


def _accuracy_rows(results_dir: Path) -> list[dict]:
    """Rows of the accuracy table that notebooks recorded under the key ``accuracy_table``
    (``mttlib.evaluate.EvalResult.table_row``, with ``ior``/``hlr`` from ``mttlib.ranking`` on distilled rows)."""
    rows = []
    for path in sorted(results_dir.glob("*.json")):
        for row in json.loads(path.read_text()).get("accuracy_table", []):
            rows.append({"notebook": path.stem, **row})
    return rows


def write_report(out: Path, timings: list[tuple[str, float]] | None = None) -> Path:
    """Write ``out/index.html``: every figure, GIF and PNG with its caption, and the accuracy table."""
    figures = out / "figures"
    captions = json.loads((figures / "captions.json").read_text()) if (figures / "captions.json").exists() else {}
    parts = ["<!doctype html><meta charset='utf-8'><title>MTT teaching kit: demo report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
             "img{max-width:100%;border:1px solid #ddd}figure{margin:1.5em 0}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
             "</style>",
             "<h1>MTT teaching kit: demo report</h1>"]
    if timings:
        parts.append("<p>" + " · ".join(f"{html.escape(n)}: {s:.0f} s" for n, s in timings) + "</p>")
    rows = _accuracy_rows(out / "results")
    if rows:
        head = ("notebook", "training set", "ipc", "epochs", "accuracy %", "networks", "IOR", "HLR")
        parts.append("<h2>Test accuracy: distilled vs random real vs full data</h2><table><tr>"
                     + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
        for r in rows:
            cells = (r["notebook"], r["method"], r.get("ipc", ""), r.get("epochs", ""),
                     f"{100 * r['mean']:.1f} ± {100 * r.get('std', 0):.1f}", r.get("runs", ""),
                     *(f"{100 * r[k]:+.1f}" if r.get(k) is not None else "" for k in ("ior", "hlr")))
            parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
        parts.append("</table><p>epochs: how long each network trained (\"17 of 40\": stopped when its test "
                     "accuracy stopped rising). IOR and HLR (DD-Ranking, Li et al. 2025), in percentage points: "
                     "IOR = distilled − random real images of the same size under the same recipe (higher is "
                     "better); HLR = full data − distilled, what the distilled images leave unrecovered with "
                     "hard labels (lower is better).</p>")
    pictures = sorted(p for p in out.rglob("*") if p.suffix.lower() in (".png", ".gif")
                      and "test-artifacts" not in p.parts and not p.name.startswith("."))
    section = None
    for pic in pictures:
        rel = pic.relative_to(out)
        prefix = pic.name[:2] if pic.name[:2].isdigit() else rel.parts[0]
        if prefix != section:
            section = prefix
            parts.append(f"<h2>{html.escape(prefix if not prefix.isdigit() else 'Notebook ' + prefix)}</h2>")
        caption = captions.get(pic.name, str(rel))
        parts.append(f"<figure><img src='{html.escape(rel.as_posix())}' alt='{html.escape(caption)}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    notebooks = sorted((out / "notebooks").glob("*.ipynb"))
    if notebooks:
        parts.append("<h2>Executed notebooks</h2><ul>" + "".join(
            f"<li><a href='notebooks/{html.escape(n.name)}'>{n.name}</a></li>" for n in notebooks) + "</ul>")
    return atomic_write_text("\n".join(parts) + "\n", out / "index.html")
