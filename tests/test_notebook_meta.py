"""The contract every notebook keeps: registered, a parameters cell with SMOKE, clean in git."""

import ast
import json
from pathlib import Path

import pytest

from nbharness import NOTEBOOKS

TESTS = Path(__file__).resolve().parent
NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))


def _load(path):
    return json.loads(path.read_text())


def test_there_are_notebooks():
    assert NOTEBOOK_FILES, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_name_is_numbered_snake_case(path):
    prefix, _, rest = path.stem.partition("_")
    assert prefix.isdigit() and len(prefix) == 2, f"{path.name}: name it NN_snake_case.ipynb"
    assert rest and rest == rest.lower() and " " not in rest, f"{path.name}: name it NN_snake_case.ipynb"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_registered_with_a_test(path):
    test_file = TESTS / f"test_nb_{path.stem}.py"
    assert test_file.exists(), f"{path.name} has no test: add {test_file.name} that runs it with run_notebook"
    assert "run_notebook" in test_file.read_text(), f"{test_file.name} does not execute the notebook"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_parameters_cell_with_smoke_flag(path):
    nb = _load(path)
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    source = "".join(tagged[0]["source"])
    tree = ast.parse(source)
    names = {node.target.id: node for node in tree.body if isinstance(node, ast.AnnAssign)}
    assert "SMOKE" in names, f"{path.name}: the parameters cell needs 'SMOKE: bool = False'"
    assert all(isinstance(node, (ast.AnnAssign, ast.Expr)) for node in tree.body), (
        f"{path.name}: the parameters cell holds only 'NAME: type = value  # help' lines"
    )
    for line in source.splitlines():
        if "#" in line:
            assert "=" not in line.split("#", 1)[1], f"{path.name}: no '=' in a parameter's comment ({line!r})"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_committed_clean(path):
    nb = _load(path)
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, (
                f"{path.name} is committed with outputs: clear them (Edit > Clear Outputs of All Cells) "
                "and save before committing"
            )


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_first_cell_states_goals_and_run_times(path):
    first = _load(path)["cells"][0]
    text = "".join(first["source"]).lower()
    assert first["cell_type"] == "markdown" and text.startswith("#"), f"{path.name}: start with a title cell"
    for word in ("smoke", "classroom"):
        assert word in text, f"{path.name}: the title cell should state the run time at {word} size"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_no_pip_installs_or_path_hacks(path):
    for cell in _load(path)["cells"]:
        src = "".join(cell["source"])
        assert "pip install" not in src or cell["cell_type"] == "markdown", f"{path.name}: no pip cells"
        assert "sys.path" not in src, f"{path.name}: no sys.path edits; the kit is pip-installed"
