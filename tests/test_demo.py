"""The demo runner: stops at a failing notebook naming the cell, and writes the HTML report."""

import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from mttlib import demo
from mttlib.io import atomic_write_json


def _notebook(path, sources):
    nb = new_notebook(cells=[new_code_cell(src) for src in sources])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_failed_notebook_stops_the_demo_naming_cell_and_error(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    params = "SMOKE = False\nOUT_DIR = ''\nRUNS_DIR = ''\nINTERACTIVE = True"
    _notebook(folder / "00_fine.ipynb", [params, "x = 1"])
    _notebook(folder / "01_broken.ipynb", [params, "y = 2", "raise ValueError('lr_img too high')"])
    _notebook(folder / "02_never.ipynb", [params, "z = 3"])
    with pytest.raises(SystemExit) as stop:
        demo.run_demo(tmp_path / "out", tmp_path / "runs", smoke=True, folder=folder)
    message = str(stop.value)
    assert "01_broken.ipynb" in message and "ValueError" in message and "lr_img too high" in message
    assert "cell" in message
    assert (tmp_path / "out" / "notebooks" / "00_fine.ipynb").exists()
    assert not (tmp_path / "out" / "notebooks" / "02_never.ipynb").exists()


def test_notebook_02_runs_again_at_ipc_10_beside_ipc_1(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    params = "SMOKE = False\nOUT_DIR = ''\nRUNS_DIR = ''\nINTERACTIVE = True\nIPC = 1"
    _notebook(folder / "02_trajectory_matching.ipynb", [params, "print('ipc', IPC)"])
    timings = demo.run_demo(tmp_path / "out", tmp_path / "runs", smoke=True, folder=folder)
    assert [name for name, _ in timings] == ["02_trajectory_matching.ipynb", "02_trajectory_matching-ipc10.ipynb"]
    for name, ipc in (("02_trajectory_matching.ipynb", 1), ("02_trajectory_matching-ipc10.ipynb", 10)):
        printed = nbformat.read(tmp_path / "out" / "notebooks" / name, as_version=4).cells[-1].outputs[0]["text"]
        assert printed.strip() == f"ipc {ipc}"


def test_the_demo_prints_no_warning_a_learner_must_ignore(tmp_path, capfd):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "00_quiet.ipynb", ["SMOKE = False\nOUT_DIR = ''\nRUNS_DIR = ''\nINTERACTIVE = True", "x = 1"])
    capfd.readouterr()
    demo.run_demo(tmp_path / "out", tmp_path / "runs", smoke=True, folder=folder)
    out, err = capfd.readouterr()  # file descriptors: the kernel, a child process, writes to them directly
    assert "without encryption" not in out + err  # a recent kernel's warning about a plain TCP connection
    assert "warning" not in (out + err).lower(), out + err
    assert re.fullmatch(r"\[1/1\] 00_quiet\.ipynb \.\.\. done in \d+ s\n", out), out


# notebook 02's accuracy rows as the notebook records them (the full-data row stopped early)
NOTEBOOK02_ROWS = [
    {"method": "distilled", "ipc": 1, "mean": 0.281, "std": 0.012, "runs": 3, "epochs": "300",
     "ior": 0.139, "hlr": 0.264},
    {"method": "random real", "ipc": 1, "mean": 0.142, "std": 0.02, "runs": 3, "epochs": "300"},
    {"method": "full data", "ipc": "all", "mean": 0.545, "std": 0.0, "runs": 1, "epochs": "23 of 40"},
]


def test_report_shows_figures_with_captions_and_the_accuracy_table(tmp_path):
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "02_distilled.png").write_bytes(b"\x89PNG fake")
    (out / "textures").mkdir()
    (out / "textures" / "sheet.png").write_bytes(b"\x89PNG fake")
    atomic_write_json({"02_distilled.png": "The distilled images, one row per class."}, out / "figures" / "captions.json")
    atomic_write_json({"accuracy_table": NOTEBOOK02_ROWS}, out / "results" / "02_trajectory_matching.json")
    html = demo.write_report(out, [("02_trajectory_matching.ipynb", 61.0)]).read_text()
    assert "The distilled images, one row per class." in html
    assert "figures/02_distilled.png" in html and "textures/sheet.png" in html
    assert "28.1 ± 1.2" in html and "14.2 ± 2.0" in html and "random real" in html
    assert "61 s" in html


def _table(html: str) -> list[list[str]]:
    """The report's accuracy table as rows of cell texts (header first)."""
    body = html.split("<table>", 1)[1].split("</table>", 1)[0]
    return [re.findall(r"<t[hd]>(.*?)</t[hd]>", row) for row in body.split("</tr>") if "<t" in row]


def test_report_table_has_epochs_and_the_ranking_scores(tmp_path):
    out = tmp_path / "out"
    atomic_write_json({"accuracy_table": NOTEBOOK02_ROWS}, out / "results" / "02_trajectory_matching.json")
    atomic_write_json({"accuracy_table": [  # a notebook that records no epochs or scores still shows its rows
        {"method": "distilled <tiny>", "ipc": 1, "mean": 0.2, "std": 0.0, "runs": 1},
    ]}, out / "results" / "03_imagenet_subsets.json")
    table = _table(demo.write_report(out).read_text())
    assert table[0] == ["notebook", "training set", "ipc", "epochs", "accuracy %", "networks", "IOR", "HLR"]
    assert table[1] == ["02_trajectory_matching", "distilled", "1", "300", "28.1 ± 1.2", "3", "+13.9", "+26.4"]
    assert table[2] == ["02_trajectory_matching", "random real", "1", "300", "14.2 ± 2.0", "3", "", ""]
    assert table[3] == ["02_trajectory_matching", "full data", "all", "23 of 40", "54.5 ± 0.0", "1", "", ""]
    assert table[4] == ["03_imagenet_subsets", "distilled &lt;tiny&gt;", "1", "", "20.0 ± 0.0", "1", "", ""]
