"""The packaging stays consistent: environment.yml installs pyproject.toml's single list."""

import re
import tomllib
from pathlib import Path

import yaml

KIT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((KIT / "pyproject.toml").read_text())
ENV = yaml.safe_load((KIT / "environment.yml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_pyproject_lists_the_kit_packages():
    names = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    for needed in ("torch", "torchvision", "jupyterlab", "matplotlib", "ipywidgets", "papermill", "tqdm"):
        assert needed in names, f"pyproject.toml must depend on {needed}"
    dev = {_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    assert "pytest" in dev


def test_torch_range_admits_the_supported_release():
    torch_req = next(r for r in PYPROJECT["project"]["dependencies"] if _name(r) == "torch")
    assert "<=2.14.1" in torch_req or "<2.15" in torch_req, "do not admit a torch newer than 2.14.1"


def test_environment_yml_is_python311_pip_and_this_package():
    deps = ENV["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert any(re.fullmatch(r"python\s*=+\s*3\.11(\.\*)?", d) for d in conda), "environment.yml: python=3.11"
    assert "pip" in conda
    assert len(pip_sections) == 1
    pip = pip_sections[0]
    assert any(p.replace(" ", "").startswith(("-e.", ".")) for p in pip), "environment.yml must pip-install the kit"
    # Every other package lives in pyproject.toml only: nothing listed twice that could drift.
    extra = [d for d in conda if _name(d) not in ("python", "pip")]
    extra += [p for p in pip if not p.replace(" ", "").startswith(("-e.", "."))]
    assert not extra, f"list these in pyproject.toml instead: {extra}"


def test_requires_python_admits_environment_python():
    spec = PYPROJECT["project"]["requires-python"]
    assert spec.startswith(">=3.") and int(spec.split(".")[1]) <= 11
