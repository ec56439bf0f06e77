"""The distributed mode (docker-compose.yaml's shape), run for real: CeleryExecutor, PostgreSQL, Redis,
two Celery workers, and what happens when a worker or the scheduler goes away mid-run.

Its own stack, scoped to this module: api-server, scheduler, dag-processor, triggerer and two
Celery workers as separate processes, a throw-away PostgreSQL database as metadata DB and result
backend, an empty Redis database as broker. Skipped, saying why, when PostgreSQL or Redis is
unreachable. Runs on the tiny demo library.

Two runs, each with one failure injected (two runs rather than four keep the module within a
few minutes on two cores): an extract, the scheduler restarted once one of its task instances
runs; then a transform of it, worker 1 killed (SIGKILL to its process group) once it runs one of
the transform's task instances. Both are driven by events, never by sleeps.

What the runs committed is compared with the same extract and transform run in this process
(``aleph2alma.pipeline``, the DAGs' steps one after another, what ``aleph2alma validate`` runs):
every file a manifest lists (raw/, alma/, index/, issues/ parts) is the same bytes whichever
process, worker or try wrote it. Manifests differ only by the run ids they name, replaced before
the comparison; reports (under reports/) carry times and are not compared.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from sqlalchemy.engine import make_url

from aleph2alma import pipeline, settings
from aleph2alma.aleph.db import create_engine
from aleph2alma.aleph.landing import LocalLanding
from aleph2alma.phases.context import PhaseContext
from aleph2alma.storage import MANIFEST_NAME, ArtifactStore, RunScope
from aleph2alma.storage_local import LocalObjectClient
from aleph2alma_dev.airflow_api import FINISHED, AirflowClient
from aleph2alma_dev.demo.runner import run_summary, stack_for
from aleph2alma_dev.devstack import PG_ADMIN_URL, REDIS_URL, EmbeddedStack, distributed_problems, free_port

pytestmark = pytest.mark.e2e

PG_URL = os.environ.get("ALEPH2ALMA_TEST_PG", PG_ADMIN_URL)
WORKLOAD_LINE = re.compile(r"Executing workload in Celery: .*")
ENTITIES = ("bibs", "holdings", "items", "patrons", "loans", "requests", "fines")
WORKERS = 2
# A killed worker's running task instances stop heartbeating; the scheduler fails them (and
# schedules their retry) after this many seconds instead of the default 300. Task runners
# heartbeat every [workers] min_heartbeat_interval (5 s), so 45 s is many missed beats.
HEARTBEAT_TIMEOUT = 45
FAILURE_ENV = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
}
# Guards against a hang only: every wait below ends on an event.
RUN_TIMEOUT = 900

T = TypeVar("T")


def _wait_for(what: str, check: Callable[[], T | None], timeout: float = RUN_TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"no {what} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def as_of(tiny_library: Path) -> str:
    return str(json.loads((tiny_library / "summary.json").read_text())["as_of"])


@pytest.fixture(scope="module")
def celery_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedStack]:
    problems = distributed_problems(PG_URL, REDIS_URL)
    if problems:
        pytest.skip("the distributed mode needs PostgreSQL and Redis: " + "; ".join(problems))
    tiny_library: Path = request.getfixturevalue("tiny_library")  # generated only when it will be used
    stack = stack_for(
        tiny_library,
        state_dir=tmp_path_factory.mktemp("celery-stack"),
        api_port=free_port(),
        executor="celery",
        pg_admin_url=PG_URL,
        redis_url=REDIS_URL,
        worker_concurrency=2,
        workers=WORKERS,
    )
    stack.extra_env.update(FAILURE_ENV)
    with stack:
        yield stack


@pytest.fixture(scope="module")
def client(celery_stack: EmbeddedStack) -> AirflowClient:
    return celery_stack.airflow_client()


@pytest.fixture(scope="module")
def store(celery_stack: EmbeddedStack) -> ArtifactStore:
    return celery_stack.artifact_store()


# --- the reference: the same extract and transform, in this process ---------------------------------

REF_EXTRACT, REF_TRANSFORM = "reference-extract", "reference-transform"
# This module's run ids (see _trigger) and the reference's.
RUN_ID = re.compile(r"demo__migration_[a-z_]+__\d{8}T\d{6}|reference-(?:extract|transform)")


@pytest.fixture(scope="module")
def reference(tiny_library: Path, as_of: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference run's manifests, normalised (see ``_manifests``), by stage path."""
    store = ArtifactStore(LocalObjectClient(tmp_path_factory.mktemp("reference")), "local")
    store.ensure_bucket()
    migration = settings.load("demo")  # what the stack's tasks load: the project's config
    day = date.fromisoformat(as_of)
    extract = PhaseContext(store, RunScope("demo", "migration_extract", REF_EXTRACT), migration, day)
    engine = create_engine(f"sqlite:///{tiny_library / 'replica.sqlite'}")
    pipeline.extract(extract, engine, LocalLanding(tiny_library / "alephseq"))
    transform = PhaseContext(store, RunScope("demo", "migration_transform", REF_TRANSFORM), migration, day)
    pipeline.transform_and_validate(transform, extract.run)
    return {
        "migration_extract": _manifests(store, "migration_extract", REF_EXTRACT),
        "migration_transform": _manifests(store, "migration_transform", REF_TRANSFORM),
    }


def _manifests(store: ArtifactStore, dag_id: str, run_id: str) -> dict[str, Any]:
    """Every manifest the run committed, by stage path (``raw/bibs``), as JSON with every run id
    (its own, the extract's it read) replaced by ``<run>``. Asserts each file is listed once, and
    that a stage's prefix holds only its manifest and the files it lists (other objects of the
    run, such as transform's validate/ working files read through XCom, are under no stage's)."""
    prefix = f"demo/runs/{dag_id}/{run_id}/"
    keys = store.list_keys(prefix)
    manifests = {k: store.manifest(k) for k in keys if k.endswith("/" + MANIFEST_NAME)}
    listed = [f.key for m in manifests.values() for f in m.files]
    assert len(listed) == len(set(listed)), f"{dag_id} {run_id}: a file listed twice"
    for key in manifests:
        stage = key.removesuffix(MANIFEST_NAME)
        stray = {k for k in keys if k.startswith(stage)} - set(listed) - {key}
        assert not stray, f"{dag_id} {run_id}: objects {stage} does not list: {sorted(stray)}"
    return {
        k.removeprefix(prefix).removesuffix("/" + MANIFEST_NAME): json.loads(RUN_ID.sub("<run>", m.to_json()))
        for k, m in manifests.items()
    }


def _same_as_reference(reference: dict, store: ArtifactStore, run: dict) -> None:
    """Every stage the in-process run committed, the run committed alike. The DAGs commit more
    (extract's profile/ of the codes in use): those are checked by ``_manifests`` alone."""
    got = _manifests(store, run["dag_id"], run["run_id"])
    want = reference[run["dag_id"]]
    assert not set(want) - set(got), f"{run['dag_id']}: stages not committed: {set(want) - set(got)}"
    for stage, manifest in want.items():
        if got[stage] != manifest:
            diff = difflib.unified_diff(
                _lines(manifest), _lines(got[stage]), "in-process", "dag", lineterm=""
            )
            raise AssertionError(f"{run['dag_id']} {stage} differs:\n" + "\n".join(list(diff)[:60]))


def _lines(manifest: dict[str, Any]) -> list[str]:
    return json.dumps(manifest, indent=1, sort_keys=True).splitlines()


# --- which worker ran what --------------------------------------------------------------------------


def _workloads(stack: EmbeddedStack, i: int) -> list[str]:
    log = stack.worker_log(i)
    return WORKLOAD_LINE.findall(log.read_text(errors="replace")) if log.exists() else []


def _worker_of(stack: EmbeddedStack, ti_id: str) -> list[int]:
    """The workers whose log says they executed this task instance try (one, or none)."""
    return [i for i in range(stack.workers) if any(ti_id in line for line in _workloads(stack, i))]


def _ran_on_the_workers(stack: EmbeddedStack, client: AirflowClient, run: dict) -> dict[int, list[dict]]:
    """The run's successful task instances by the worker that ran them, each checked against the
    workers' logs (exactly one ran it) and Airflow's record (queue, hostname)."""
    ran = [ti for ti in client.task_instances(run["dag_id"], run["run_id"]) if ti["state"] == "success"]
    assert ran
    by_worker: dict[int, list[dict]] = {i: [] for i in range(stack.workers)}
    for ti in ran:
        workers = _worker_of(stack, ti["id"])
        assert len(workers) == 1, f"{ti['task_id']}[{ti['map_index']}] ({ti['id']}) run by workers {workers}"
        assert ti["queue"] == "default" and ti["hostname"], ti
        by_worker[workers[0]].append(ti)
    return by_worker


def _celery_results(stack: EmbeddedStack) -> dict[str, int]:
    """Celery's result backend (the stack's PostgreSQL database): task results by status."""
    url = make_url(stack.result_backend.removeprefix("db+")).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM celery_taskmeta GROUP BY status").fetchall())


# --- the runs, each with a failure injected mid-run ---------------------------------------------------


@dataclass
class Run:
    summary: dict  # run_summary: state, stages, manifests, validation
    # What was running when the failure was injected, as Airflow reported it then.
    running_at_failure: list[dict] = field(default_factory=list)
    scheduler_pids: tuple[int, int] = (0, 0)  # before and after a restart


def _trigger(client: AirflowClient, dag_id: str, conf: dict) -> str:
    client.wait_for_dag(dag_id)
    run_id = f"demo__{dag_id}__{time.strftime('%Y%m%dT%H%M%S')}"
    client.trigger(dag_id, run_id, conf)
    return run_id


def _running(client: AirflowClient, dag_id: str, run_id: str, on_worker: Callable[[str], bool]) -> Any:
    """A check for ``_wait_for``: the run's task instances running on the worker(s) ``on_worker``
    accepts (by TI id), once none it received still waits to start (a message a killed worker took
    but had not started would otherwise wait out [scheduler] task_queued_timeout, 600 s)."""

    def check() -> list[dict] | None:
        state = client.run_state(dag_id, run_id)
        assert state not in FINISHED, f"{dag_id} {run_id} ended {state} before the failure was injected"
        received = [ti for ti in client.task_instances(dag_id, run_id) if on_worker(ti["id"])]
        if any(ti["state"] == "queued" for ti in received):
            return None
        return [ti for ti in received if ti["state"] == "running"] or None

    return check


@pytest.fixture(scope="module")
def extract(celery_stack: EmbeddedStack, client: AirflowClient, store: ArtifactStore) -> Run:
    """An extract on both workers, the scheduler restarted (SIGTERM, then a new one) once one of
    its task instances runs."""
    dag_id = "migration_extract"
    run_id = _trigger(client, dag_id, {"migration_id": "demo"})
    running = _wait_for("running task instance", _running(client, dag_id, run_id, lambda _: True))
    before = celery_stack.component_pid("scheduler")
    celery_stack.restart_scheduler()
    assert client.run_state(dag_id, run_id) not in FINISHED, "the run ended before the new scheduler was up"
    client.wait(dag_id, run_id, timeout=RUN_TIMEOUT)
    pids = (before, celery_stack.component_pid("scheduler"))
    return Run(run_summary(client, store, dag_id, run_id), running, pids)


@pytest.fixture(scope="module")
def transform(
    extract: Run, celery_stack: EmbeddedStack, client: AirflowClient, store: ArtifactStore, as_of: str
) -> Run:
    """A transform of that extract, worker 1 killed (SIGKILL to its process group) once it runs one
    of the transform's task instances."""
    assert extract.summary["state"] == "success", extract.summary.get("failed_tasks")
    dag_id = "migration_transform"
    run_id = _trigger(client, dag_id, {"migration_id": "demo", "as_of": as_of})
    on_worker_1 = _running(client, dag_id, run_id, lambda ti_id: _worker_of(celery_stack, ti_id) == [1])
    victims = _wait_for("task instance running on worker 1", on_worker_1)
    celery_stack.kill_worker(1)
    client.wait(dag_id, run_id, timeout=RUN_TIMEOUT)
    return Run(run_summary(client, store, dag_id, run_id), victims)


def test_stack_is_distributed(celery_stack: EmbeddedStack) -> None:
    env = celery_stack.env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
    assert "/aleph2alma_af_" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    for i in range(WORKERS):
        log = celery_stack.worker_log(i).read_text(errors="replace")
        assert "concurrency: 2 (prefork)" in log and f"{celery_stack.worker_node(i)}@" in log
    assert len({celery_stack.worker_log(i) for i in range(WORKERS)}) == WORKERS


def test_extract_on_two_workers_commits_what_one_process_does(
    reference: dict,
    celery_stack: EmbeddedStack,
    client: AirflowClient,
    extract: Run,
    store: ArtifactStore,
    tiny_library: Path,
) -> None:
    run = extract.summary
    assert run["state"] == "success", run.get("failed_tasks")
    counts = json.loads((tiny_library / "summary.json").read_text())["counts"]
    raw = {s["entity"]: s for s in run["stages"] if s["stage"] == "raw"}
    for entity in ENTITIES:
        assert raw[entity]["records"] == counts[entity] > 0, entity
        assert store.manifest(raw[entity]["manifest"]).run_id == run["run_id"]
    _same_as_reference(reference, store, run)
    ran = _ran_on_the_workers(celery_stack, client, run)
    assert all(_mapped(ran).values()), f"mapped task instances by worker: {_mapped(ran)}"
    # One Celery task per task instance; the last may still read STARTED: Airflow hears of the
    # task's end from the worker's task runner before Celery records the result.
    results = _celery_results(celery_stack)
    assert sum(results.values()) >= sum(map(len, ran.values())) and not results.get("FAILURE"), results


def test_a_scheduler_restarted_mid_run_lets_the_run_finish(extract: Run, client: AirflowClient) -> None:
    """The new scheduler adopted what the old one had sent to Celery: the task instances running
    at the restart ended success, on their first try (none was reset and run again)."""
    before, after = extract.scheduler_pids
    assert before != after and extract.running_at_failure
    assert extract.summary["state"] == "success"
    final = _final(client, extract.summary)
    for ti in extract.running_at_failure:
        now = final[(ti["task_id"], ti["map_index"])]
        assert (now["state"], now["id"]) == ("success", ti["id"]), (ti, now)


def test_transform_with_a_worker_killed_commits_what_one_process_does(
    reference: dict, transform: Run, store: ArtifactStore, tiny_library: Path
) -> None:
    run = transform.summary
    assert run["state"] == "success", run.get("failed_tasks")
    assert run["validation"]["status"] == "PASS"
    counts = json.loads((tiny_library / "summary.json").read_text())["counts"]
    alma = {s["entity"]: s for s in run["stages"] if s["stage"] == "alma"}
    for entity in ENTITIES:
        assert 0 < alma[entity]["records"] == alma[entity]["records_in"] - alma[entity]["rejected"]
        assert alma[entity]["records_in"] == counts[entity]
    # Exactly the planned parts, once each, and nothing half-written beside them.
    _same_as_reference(reference, store, run)


def test_a_killed_worker_s_task_instances_are_retried_on_the_other(
    celery_stack: EmbeddedStack, client: AirflowClient, transform: Run
) -> None:
    """Worker 1's running task instances stopped heartbeating; the scheduler failed them after the
    heartbeat timeout and their next try ran on worker 0. One that ended before the kill reached
    it keeps its try; at least one was caught running."""
    with pytest.raises(ProcessLookupError):
        os.killpg(celery_stack.worker_pid(1), 0)
    final = _final(client, transform.summary)
    retried = 0
    for victim in transform.running_at_failure:
        now = final[(victim["task_id"], victim["map_index"])]
        what = f"{victim['task_id']}[{victim['map_index']}]"
        assert now["state"] == "success", (what, now)
        if now["id"] != victim["id"]:
            assert now["try_number"] > victim["try_number"], (what, now)
            assert _worker_of(celery_stack, now["id"]) == [0], f"{what}'s retry did not run on worker 0"
            retried += 1
    assert retried, f"each of {[v['task_id'] for v in transform.running_at_failure]} ended before the kill"


def _final(client: AirflowClient, run: dict) -> dict[tuple[str, int], dict]:
    return {
        (ti["task_id"], ti["map_index"]): ti for ti in client.task_instances(run["dag_id"], run["run_id"])
    }


def _mapped(ran: dict[int, list[dict]]) -> dict[int, list[str]]:
    """The mapped task instances (``task[i]``) each worker ran."""
    return {
        w: [f"{ti['task_id']}[{ti['map_index']}]" for ti in tis if ti["map_index"] >= 0]
        for w, tis in ran.items()
    }
