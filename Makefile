# aleph2alma — two commands matter: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The runtime set alone (requirements.lock, what the Docker image installs), without the project
# installed: tests/dags/test_runtime_imports.py loads the DAGs there with PYTHONPATH=include, as the
# image does, to prove they need nothing from the dev set (moto, Flask, aleph2alma_dev).
RUNTIME_VENV := .venv-runtime
RUNTIME_STAMP := $(RUNTIME_VENV)/.installed
LOCK_COMPILE := uv pip compile --quiet --python-version 3.11 --no-header

.PHONY: demo test distributed-test airflow airflow-distributed venv clean bench lock browser audit $(RUNTIME_VENV)

# The dev venv: runtime + dev set (requirements-dev.lock) and the project (aleph2alma, aleph2alma_dev) editable.
$(STAMP): requirements-dev.lock pyproject.toml
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	@test -x $(BIN)/python || uv venv --quiet --python 3.11 $(VENV) || uv venv --quiet $(VENV)
	uv pip install --quiet --python $(BIN)/python -r requirements-dev.lock -e .
	@touch $(STAMP)

$(RUNTIME_STAMP): requirements.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	@test -x $(RUNTIME_VENV)/bin/python || uv venv --quiet --python 3.11 $(RUNTIME_VENV) || uv venv --quiet $(RUNTIME_VENV)
	uv pip sync --quiet --python $(RUNTIME_VENV)/bin/python requirements.lock
	@touch $(RUNTIME_STAMP)

venv: $(STAMP)

$(RUNTIME_VENV): $(RUNTIME_STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(ARGS)

# ARGS="--host 0.0.0.0" to reach the UI from another machine (it listens on 127.0.0.1 by default).
airflow: $(STAMP)
	$(BIN)/python scripts/stack.py serve $(ARGS)

# The same, distributed: CeleryExecutor + PostgreSQL (throw-away DB) + Redis, one process per component.
airflow-distributed: $(STAMP)
	$(BIN)/python scripts/stack.py serve --executor celery $(ARGS)

# The browser test (tests/e2e/test_ui_browser.py) drives Debian's chromium through Playwright: nothing
# is downloaded at run time. Installed here when missing, with apt-get (as root, else sudo -n).
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  command -v apt-get >/dev/null 2>&1 || { echo "no $(CHROMIUM) and no apt-get: install Chromium, set CHROMIUM=<its path>" >&2; exit 1; }; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  echo "Installing Debian's chromium for the browser test ..."; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@# A Chinese font, so the control room's Chinese page (and its screenshot) shows characters, not boxes.
	@if command -v fc-list >/dev/null 2>&1 && [ -z "$$(fc-list :lang=zh)" ] && command -v apt-get >/dev/null 2>&1; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  echo "Installing a Chinese font (fonts-wqy-microhei) for the browser test ..."; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null; \
	fi

test: $(STAMP) $(RUNTIME_STAMP) browser
	$(BIN)/ruff check include dev dags plugins tests bench scripts
	$(BIN)/ruff format --check include dev dags plugins tests bench scripts
	$(BIN)/mypy
	$(BIN)/python scripts/audit_requirements.py
	$(BIN)/python -m pytest

# The distributed mode alone (also part of `make test`): two Celery workers, one killed mid-run, the
# scheduler restarted mid-run, and the clean-up of what a killed stack leaves in PostgreSQL and Redis.
distributed-test: $(STAMP)
	$(BIN)/python -m pytest tests/e2e/test_distributed.py tests/e2e/test_stack_cleanup.py $(ARGS)

# Known vulnerabilities in the pinned requirements (pip-audit; accepted ones: supply-chain-accepted.toml).
audit: $(STAMP)
	$(BIN)/python scripts/audit_requirements.py

bench: $(STAMP)
	$(BIN)/python bench/transform.py

# Re-resolve both lock files after editing requirements*.txt. uv keeps the versions already pinned in
# the output file (UPGRADE="--upgrade-package NAME" moves one); the runtime lock starts from the dev
# lock's pins, so both name the same version of every package they share.
lock:
	$(LOCK_COMPILE) $(UPGRADE) requirements.txt requirements-dev.txt -o requirements-dev.lock
	cp requirements-dev.lock requirements.lock
	$(LOCK_COMPILE) requirements.txt -o requirements.lock
	sed -i '1i # Full resolved tree for development: runtime (requirements.txt) + demo, tests, linters (requirements-dev.txt).\n# `make venv` installs it into .venv. Regenerate both lock files with `make lock` (uv pip compile, pins kept).' requirements-dev.lock
	sed -i '1i # Runtime resolved tree (requirements.txt only): what the Docker image and .venv-runtime install.\n# No moto, emulator or test tools: those are in requirements-dev.lock. Regenerate both with `make lock`\n# (uv pip compile from the dev lock'"'"'s pins, so shared packages have the same version).' requirements.lock

clean:
	rm -rf .airflow .stack demo-output demo-data
