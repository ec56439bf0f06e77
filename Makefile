# aleph2alma — two commands matter: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test airflow airflow-distributed venv clean bench

$(STAMP): requirements.lock pyproject.toml
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	@test -x $(BIN)/python || uv venv --quiet --python 3.11 $(VENV) || uv venv --quiet $(VENV)
	uv pip install --quiet --python $(BIN)/python -r requirements.lock -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(ARGS)

airflow: $(STAMP)
	$(BIN)/python scripts/stack.py serve

# The same, distributed: CeleryExecutor + PostgreSQL (throw-away DB) + Redis, one process per component.
airflow-distributed: $(STAMP)
	$(BIN)/python scripts/stack.py serve --executor celery $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check include dags plugins tests bench scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/transform.py

clean:
	rm -rf .airflow .stack demo-output demo-data
