# Two commands do all the set-up on a fresh clone:
#   make demo   create .venv if needed, install the kit, run the notebooks at classroom size
#   make test   create .venv if needed, install the kit, run the whole test suite
# and `make lab` opens JupyterLab on notebooks/.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mttlib-installed

.PHONY: demo test lab venv clean-outputs

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m mttlib demo

test: $(STAMP)
	$(PY) -m pytest tests

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

clean-outputs:
	rm -rf outputs
