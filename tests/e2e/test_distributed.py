"""The distributed mode (docker-compose.yaml's shape), run for real: CeleryExecutor, PostgreSQL, Redis.

Its own stack, scoped to this module: api-server, scheduler, dag-processor, triggerer and a
Celery worker as separate processes, a throw-away PostgreSQL database as metadata DB and
result backend, an empty Redis database as broker. It is started lazily by this module's
first test and stopped at its teardown; the module sorts before the other e2e modules,
whose session stack (airflow standalone) starts only when they run, so the two stacks
never run side by side on a 2-core machine. Skipped, saying why, when PostgreSQL or Redis
is unreachable.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from aleph2alma.storage import ArtifactStore
from aleph2alma_dev.airflow_api import AirflowClient
from aleph2alma_dev.demo.runner import run_dag, stack_for
from aleph2alma_dev.devstack import PG_ADMIN_URL, REDIS_URL, EmbeddedStack, distributed_problems, free_port

pytestmark = pytest.mark.e2e

PG_URL = os.environ.get("ALEPH2ALMA_TEST_PG", PG_ADMIN_URL)
WORKLOAD_LINE = re.compile(r"Executing workload in Celery: .*")


@pytest.fixture(scope="module")
def celery_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedStack]:
    problems = distributed_problems(PG_URL, REDIS_URL)
    if problems:
        pytest.skip("the distributed mode needs PostgreSQL and Redis: " + "; ".join(problems))
    tiny_library: Path = request.getfixturevalue("tiny_library")  # generated only when it will be used
    with stack_for(
        tiny_library,
        state_dir=tmp_path_factory.mktemp("celery-stack"),
        api_port=free_port(),
        executor="celery",
        pg_admin_url=PG_URL,
        redis_url=REDIS_URL,
        worker_concurrency=2,
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def client(celery_stack: EmbeddedStack) -> AirflowClient:
    return celery_stack.airflow_client()


@pytest.fixture(scope="module")
def store(celery_stack: EmbeddedStack) -> ArtifactStore:
    return celery_stack.artifact_store()


@pytest.fixture(scope="module")
def extract(client: AirflowClient, store: ArtifactStore) -> dict:
    return run_dag(client, store, "migration_extract", {"migration_id": "demo"}, timeout=600)


@pytest.fixture(scope="module")
def transform(extract: dict, client: AirflowClient, store: ArtifactStore, tiny_library: Path) -> dict:
    assert extract["state"] == "success", extract.get("failed_tasks")
    as_of = json.loads((tiny_library / "summary.json").read_text())["as_of"]
    return run_dag(
        client, store, "migration_transform", {"migration_id": "demo", "as_of": as_of}, timeout=600
    )


def _ran_on_the_worker(stack: EmbeddedStack, client: AirflowClient, run: dict) -> list[dict]:
    """The run's task instances that ran, each checked against the Celery worker's log and result backend."""
    ran = [ti for ti in client.task_instances(run["dag_id"], run["run_id"]) if ti["state"] == "success"]
    assert ran
    workloads = WORKLOAD_LINE.findall((stack.state_dir / "celery-worker.log").read_text(errors="replace"))
    for ti in ran:
        assert any(ti["id"] in line for line in workloads), (
            f"{ti['task_id']} ({ti['id']}) not run by the worker"
        )
        assert ti["queue"] == "default" and ti["hostname"], ti
    return ran


def _celery_results(stack: EmbeddedStack) -> dict[str, int]:
    """Celery's result backend (the stack's PostgreSQL database): task results by status."""
    url = make_url(stack.result_backend.removeprefix("db+")).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM celery_taskmeta GROUP BY status").fetchall())


def test_stack_is_distributed(celery_stack: EmbeddedStack, client: AirflowClient) -> None:
    env = celery_stack.env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
    assert "/aleph2alma_af_" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    log = (celery_stack.state_dir / "celery-worker.log").read_text(errors="replace")
    assert "concurrency: 2 (prefork)" in log and f"{celery_stack.worker_name}@" in log


def test_extract_runs_on_the_celery_worker(
    celery_stack: EmbeddedStack,
    client: AirflowClient,
    extract: dict,
    store: ArtifactStore,
    tiny_library: Path,
) -> None:
    assert extract["state"] == "success", extract.get("failed_tasks")
    counts = json.loads((tiny_library / "summary.json").read_text())["counts"]
    raw = {s["entity"]: s for s in extract["stages"] if s["stage"] == "raw"}
    for entity in ("bibs", "holdings", "items", "patrons", "loans", "requests", "fines"):
        assert raw[entity]["records"] == counts[entity] > 0, entity
        assert store.manifest(raw[entity]["manifest"]).run_id == extract["run_id"]
    ran = _ran_on_the_worker(celery_stack, client, extract)
    # One Celery task per task instance; the last may still read STARTED: Airflow hears of the
    # task's end from the worker's task runner before Celery records the result.
    results = _celery_results(celery_stack)
    assert sum(results.values()) >= len(ran) and not results.get("FAILURE"), results


def test_transform_runs_on_the_celery_worker(
    celery_stack: EmbeddedStack, client: AirflowClient, transform: dict, extract: dict, tiny_library: Path
) -> None:
    assert transform["state"] == "success", transform.get("failed_tasks")
    assert transform["validation"]["status"] == "PASS"
    counts = json.loads((tiny_library / "summary.json").read_text())["counts"]
    alma = {s["entity"]: s for s in transform["stages"] if s["stage"] == "alma"}
    for entity in ("bibs", "holdings", "items", "patrons", "loans", "requests", "fines"):
        assert (
            alma[entity]["records"] > 0
            and alma[entity]["records"] + alma[entity]["rejected"] == counts[entity]
        )
    ran = _ran_on_the_worker(celery_stack, client, extract) + _ran_on_the_worker(
        celery_stack, client, transform
    )
    results = _celery_results(celery_stack)
    assert sum(results.values()) >= len(ran) and not results.get("FAILURE"), results
