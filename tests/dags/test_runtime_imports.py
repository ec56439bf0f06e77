"""The runtime set is enough: the DAGs and the product package load with requirements.lock alone.

``.venv-runtime`` (``make .venv-runtime``; ``make test`` builds it) holds exactly requirements.lock,
what the Docker image installs, and imports ``aleph2alma`` from ``include/`` as the image does
(PYTHONPATH). Each check runs there in a fresh interpreter with a throw-away AIRFLOW_HOME: every DAG
file loads through Airflow's DagBag with no import error and yields the DAGs the dev venv sees, every
module of ``aleph2alma`` imports, and the dev-only packages (moto, aleph2alma_dev, test tools) are absent,
so nothing the DAGs need can quietly come from requirements-dev.lock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_PYTHON = ROOT / ".venv-runtime" / "bin" / "python"
DAGS_DIR = ROOT / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
# Flask is runtime since the FAB auth manager (production compose) came in; moto's server is not.
DEV_ONLY = ("moto", "aleph2alma_dev", "pytest", "hypothesis", "playwright")

# Run in the interpreter under test; prints one JSON document.
PROBE = """
import importlib, json, pkgutil, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(sys.argv[1])
dags = {dag_id: dag.fileloc for dag_id, dag in bag.dags.items()}
errors = {str(path): str(err)[-2000:] for path, err in bag.import_errors.items()}

modules, failed = [], {}
import aleph2alma
for info in pkgutil.walk_packages(aleph2alma.__path__, "aleph2alma.") if sys.argv[2] == "modules" else ():
    modules.append(info.name)
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        failed[info.name] = f"{type(exc).__name__}: {exc}"

absent = {}
for name in sys.argv[3:]:
    try:
        importlib.import_module(name)
        absent[name] = False
    except ModuleNotFoundError:
        absent[name] = True
print(json.dumps({"dags": dags, "import_errors": errors, "modules": modules, "module_errors": failed,
                  "absent": absent}))
"""


def _probe(python: Path | str, tmp: Path, *, modules: bool = True) -> dict[str, Any]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIRFLOW") and k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }
    env.update(
        {
            "PYTHONPATH": str(ROOT / "include"),  # as the Docker image (ENV PYTHONPATH)
            "AIRFLOW_HOME": str(tmp / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp / 'airflow.db'}",
        }
    )
    (tmp / "airflow").mkdir(parents=True, exist_ok=True)
    args = [str(python), "-c", PROBE, str(DAGS_DIR), "modules" if modules else "-", *DEV_ONLY]
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp, timeout=300, check=False)
    assert done.returncode == 0, f"{python} could not load the DAGs:\n{done.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not RUNTIME_PYTHON.exists():
        pytest.fail(
            f"{RUNTIME_PYTHON} does not exist: run `make .venv-runtime` (the runtime set, "
            "requirements.lock only; `make test` builds it)",
            pytrace=False,
        )
    return _probe(RUNTIME_PYTHON, tmp_path_factory.mktemp("runtime"))


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _probe(sys.executable, tmp_path_factory.mktemp("dev"), modules=False)


def test_every_dag_loads_without_the_dev_set(runtime: dict[str, Any]) -> None:
    assert runtime["import_errors"] == {}
    files_with_dags = {Path(fileloc).name for fileloc in runtime["dags"].values()}
    assert [p.name for p in DAG_FILES if p.name not in files_with_dags] == [], "DAG files that define no DAG"


def test_the_runtime_set_sees_the_same_dags_as_the_dev_set(
    runtime: dict[str, Any], dev: dict[str, Any]
) -> None:
    assert dev["import_errors"] == {}
    assert sorted(runtime["dags"]) == sorted(dev["dags"])


def test_every_product_module_imports_without_the_dev_set(runtime: dict[str, Any]) -> None:
    assert runtime["modules"], "no module of aleph2alma found on PYTHONPATH=include"
    assert runtime["module_errors"] == {}


@pytest.mark.parametrize("name", DEV_ONLY)
def test_dev_only_packages_are_absent_from_the_runtime_set(runtime: dict[str, Any], name: str) -> None:
    assert runtime["absent"][name], f"`import {name}` works in .venv-runtime: is it in requirements.lock?"


def _pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_the_runtime_lock_pins_what_the_dev_lock_pins() -> None:
    """requirements.lock ⊂ requirements-dev.lock, same versions: the tests run what the image runs."""
    runtime, dev = _pins(ROOT / "requirements.lock"), _pins(ROOT / "requirements-dev.lock")
    assert runtime and set(runtime) <= set(dev), (
        f"only in requirements.lock: {sorted(set(runtime) - set(dev))}"
    )
    assert {n: (v, dev[n]) for n, v in runtime.items() if dev[n] != v} == {}
    assert not {"moto", "pytest", "hypothesis", "playwright", "pip-audit"} & set(runtime)
