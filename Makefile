# `make run` and `make test` work on a fresh machine with only Python 3.11+: they create
# .venv first. `make run` installs the runtime requirements only; test, lint and bench
# add the development set (pytest, schemathesis, playwright, ruff, ...). `make install`
# builds what `make run` needs and starts nothing: what deploy/ringsum.service runs.
# `make wheel` builds dist/ringsum-<version>-py3-none-any.whl: `pip install` it anywhere for
# a `ringsum` command (`pip install .` in the checkout does the same).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install wheel run test lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(PY)
	$(PIP) -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PIP) -r requirements-dev.txt
	touch $@

# Bytecode compiled now: a service whose code directory is read-only (ProtectSystem=strict)
# cannot write the caches itself, and would compile ringsum at every start.
install: $(VENV)/.runtime
	$(PY) -m compileall -q ringsum

# Built as `pip install .` builds it: in an isolated environment with a recent setuptools.
wheel: | $(PY)
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir dist .

run: $(VENV)/.runtime
	$(PY) app.py $(ARGS)

# Bytecode caches on even where the environment turns them off (PYTHONDONTWRITEBYTECODE):
# the suite starts over a hundred Python processes (servers, pytest workers, checkpoint
# folds), and each would compile ringsum, and pytest would rewrite its plugins, again.
test: $(VENV)/.dev
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.dev
	$(PY) -m benchmarks $(ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache --no-logo  # the layers: .importlinter, docs/code.md

format: $(VENV)/.dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis build dist
