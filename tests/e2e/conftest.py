"""One embedded stack (S3 endpoint + airflow standalone) for all end-to-end DAG runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from aleph2alma.airflow_api import AirflowClient
from aleph2alma.demo.runner import exlibris_gate, run_dag, stack_for
from aleph2alma.devstack import EmbeddedStack, free_port
from aleph2alma.storage import ArtifactStore

# The first test of a module also waits for the session's DAG runs its fixtures start
# (test load: extract + transform + gate + API load), so the suite's 600 s is too short.
E2E_TEST_TIMEOUT = 1800


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.timeout(E2E_TEST_TIMEOUT))


@pytest.fixture(scope="session")
def airflow_stack(tiny_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    with stack_for(tiny_library, state_dir=tmp_path_factory.mktemp("stack"), api_port=free_port()) as stack:
        yield stack


@pytest.fixture(scope="session")
def airflow(airflow_stack: EmbeddedStack) -> AirflowClient:
    return airflow_stack.airflow_client()


@pytest.fixture(scope="session")
def stack_store(airflow_stack: EmbeddedStack) -> ArtifactStore:
    return airflow_stack.artifact_store()


@pytest.fixture(scope="session")
def extract_run(airflow: AirflowClient, stack_store: ArtifactStore) -> dict:
    return run_dag(airflow, stack_store, "migration_extract", {"migration_id": "demo"}, timeout=900)


@pytest.fixture(scope="session")
def test_load(airflow, stack_store, airflow_stack, tiny_library: Path) -> dict:
    airflow.ensure_pool("alma_api", 25, "Alma API calls per second")
    as_of = json.loads((tiny_library / "summary.json").read_text())["as_of"]
    conf = {"migration_id": "demo", "as_of": as_of, "api_load": True, "sample_size": 5}
    return run_dag(airflow, stack_store, "migration_test_load", conf, timeout=1500,
                   on_gate=exlibris_gate(airflow, stack_store, airflow_stack))
