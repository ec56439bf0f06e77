"""One embedded stack (S3 endpoint + airflow standalone) for all end-to-end DAG runs."""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from aleph2alma.alma.rate import ALMA_POOL, ALMA_POOL_DESCRIPTION, ALMA_POOL_SLOTS
from aleph2alma.runs import POST_GO_LIVE_DAG, TEST_LOAD_DAG, ChildStep, RunRef
from aleph2alma.settings import CONFIG_ROOT
from aleph2alma.storage import ArtifactStore
from aleph2alma_dev.airflow_api import AirflowClient
from aleph2alma_dev.demo.offline_circ import offline_circulation
from aleph2alma_dev.demo.runner import exlibris_gate, run_dag, stack_for
from aleph2alma_dev.devstack import EmbeddedStack, free_port

# The first test of a module also waits for the session's DAG runs its fixtures start
# (test load: extract + transform + gate + API load), so the suite's 600 s is too short.
E2E_TEST_TIMEOUT = 1800


# Modules that start stacks of their own (Celery workers, PostgreSQL, Redis): they run before any
# test asks for the session's stack, so that two stacks never share the 2 cores.
OWN_STACK_MODULES = ("test_distributed.py", "test_stack_cleanup.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.timeout(E2E_TEST_TIMEOUT))

    def rank(item: pytest.Item) -> int:  # the rest first, then the own-stack modules, then the session's
        if here not in Path(item.path).parents:
            return 0
        return 1 if item.path.name in OWN_STACK_MODULES else 2

    items.sort(key=rank)  # stable: each module's order and the modules' order otherwise kept


@pytest.fixture(scope="session")
def marked_secrets() -> dict[str, str]:
    """The session stack's credentials: distinctive, so any output holding one is found by a plain
    search (tests/e2e/test_secrets_in_outputs.py)."""
    names = ("alma_api_key", "s3_secret_key", "sftp_password", "aleph_db_password", "admin_password")
    return {name: f"A2A-SECRET-{name.upper().replace('_', '-')}-{secrets.token_hex(8)}" for name in names}


@pytest.fixture(scope="session")
def config_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stack's configuration: a copy of the project's, which a test may edit as a librarian
    edits theirs (the cutover's form), restoring it afterwards."""
    root = tmp_path_factory.mktemp("config") / "config"
    shutil.copytree(CONFIG_ROOT, root)
    return root


@pytest.fixture(scope="session")
def airflow_stack(
    tiny_library: Path,
    tmp_path_factory: pytest.TempPathFactory,
    marked_secrets: dict[str, str],
    config_root: Path,
) -> Iterator[EmbeddedStack]:
    stack = stack_for(
        tiny_library,
        state_dir=tmp_path_factory.mktemp("stack"),
        api_port=free_port(),
        s3_secret_key=marked_secrets["s3_secret_key"],
        alma_api_key=marked_secrets["alma_api_key"],
        initial_admin_password=marked_secrets["admin_password"],
    )
    stack.extra_env["ALEPH2ALMA_CONFIG_ROOT"] = str(config_root)
    # Connections every task sees but the test load does not use: nothing may print them either.
    aleph_db = json.loads(stack.extra_env["AIRFLOW_CONN_ALEPH_DB"])
    stack.extra_env["AIRFLOW_CONN_ALEPH_DB"] = json.dumps(
        {**aleph_db, "login": "aleph_ro", "password": marked_secrets["aleph_db_password"]}
    )
    stack.extra_env["AIRFLOW_CONN_MFT"] = json.dumps(
        {
            "conn_type": "sftp",
            "host": "127.0.0.1",
            "login": "aleph2alma",
            "password": marked_secrets["sftp_password"],
            "extra": {"no_host_key_check": False},
        }
    )
    with stack:
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
    airflow.ensure_pool(ALMA_POOL, ALMA_POOL_SLOTS, ALMA_POOL_DESCRIPTION)
    as_of = json.loads((tiny_library / "summary.json").read_text())["as_of"]
    conf = {"migration_id": "demo", "as_of": as_of, "api_load": True, "sample_size": 5}
    return run_dag(
        airflow,
        stack_store,
        "migration_test_load",
        conf,
        timeout=1500,
        on_gate=exlibris_gate(airflow, stack_store, airflow_stack),
    )


@pytest.fixture(scope="session")
def fix_cycle(test_load: dict, airflow, stack_store, airflow_stack, tiny_library: Path) -> dict:
    """Iteration 1 on the test load's extract, signed off: the baseline the cutover delivers."""
    as_of = json.loads((tiny_library / "summary.json").read_text())["as_of"]
    test_load_run = RunRef(TEST_LOAD_DAG, test_load["run_id"])
    conf = {
        "migration_id": "demo",
        "iteration": 1,
        "as_of": as_of,
        "extract_run_id": test_load_run.child(ChildStep.EXTRACT).run_id,
        "previous_transform_run_id": test_load_run.child(ChildStep.TRANSFORM).run_id,
    }
    return run_dag(
        airflow,
        stack_store,
        "migration_fix_cycle",
        conf,
        timeout=1200,
        on_gate=exlibris_gate(airflow, stack_store, airflow_stack),
    )


TINY_SEED = 7  # tests/conftest.py's tiny_library


@pytest.fixture(scope="session")
def tiny_as_of(tiny_library: Path) -> date:
    return date.fromisoformat(json.loads((tiny_library / "summary.json").read_text())["as_of"])


@pytest.fixture(scope="session")
def offline_file(stack_store, tiny_as_of: date) -> str:
    key = "demo/offline-circulation/desks.csv"
    stack_store.put_bytes(
        key, offline_circulation("tiny", TINY_SEED, tiny_as_of).data, content_type="text/csv"
    )
    return stack_store.uri(key)


@pytest.fixture(scope="session")
def post_go_live(
    airflow, stack_store, airflow_stack, test_load: dict, offline_file: str, tiny_as_of: date
) -> dict:
    conf = {
        "migration_id": "demo",
        "final_run": f"migration_test_load/{test_load['run_id']}",
        "offline_circulation_files": [offline_file],
        "as_of": tiny_as_of.isoformat(),
        "sample_size": 3,
    }
    on_gate = exlibris_gate(airflow, stack_store, airflow_stack)
    return run_dag(airflow, stack_store, POST_GO_LIVE_DAG, conf, timeout=900, on_gate=on_gate)


class ItemEdit:
    """A librarian changes an item in Aleph during the technical-services freeze (Aleph stamps
    Z30_UPDATE_DATE with today's date, in the library's time zone); ``undo`` puts it back."""

    def __init__(self, replica: Path) -> None:
        self.replica = replica
        self.key = ""
        self.before = ""

    def __call__(self) -> None:
        from aleph2alma.settings import load

        zone = ZoneInfo(load("demo").nightly.time_zone)
        with sqlite3.connect(self.replica) as db:
            self.key, self.before = db.execute(
                "SELECT Z30_REC_KEY, Z30_UPDATE_DATE FROM z30 ORDER BY Z30_REC_KEY LIMIT 1"
            ).fetchone()
            today = datetime.now(zone).strftime("%Y%m%d")
            db.execute("UPDATE z30 SET Z30_UPDATE_DATE = ? WHERE Z30_REC_KEY = ?", (today, self.key))

    def undo(self) -> None:
        if self.key:
            with sqlite3.connect(self.replica) as db:
                db.execute(
                    "UPDATE z30 SET Z30_UPDATE_DATE = ? WHERE Z30_REC_KEY = ?", (self.before, self.key)
                )


@dataclass
class CutoverRuns:
    refused: dict
    no_go: dict
    go: dict
    item_edit: ItemEdit
    live_after_no_go: dict | None


@pytest.fixture(scope="session")
def cutover_runs(
    fix_cycle: dict,
    post_go_live: dict,
    airflow,
    stack_store,
    airflow_stack,
    tiny_library: Path,
    tiny_as_of: date,
    config_root: Path,
) -> CutoverRuns:
    """migration_cutover three times after the signed-off fix cycle (tests/e2e/test_cutover_dag.py):
    with the test load's form (the preflight refuses); with the cutover form, an item edited during
    the freeze and No-Go; with the item put back and Go. The form and the item are put back after.

    After the post-go-live run on the test load: the emulator is one Alma for both loads, and the
    cutover's inventory, imported again over the test load's, changes the items the desks' offline
    file was made for (a real cutover loads a fresh production environment)."""
    from aleph2alma.alma.form import write_form
    from aleph2alma.runs import CUTOVER_DAG
    from aleph2alma.state import go_live
    from aleph2alma_dev.demo.form import cutover_form, demo_form

    assert fix_cycle["state"] == "success", fix_cycle.get("failed_tasks")
    conf = {
        "migration_id": "demo",
        "as_of": tiny_as_of.isoformat(),
        "sample_size": 3,
        "fulfillment_by": "api",
    }
    form_dir, item_edit = config_root / "demo" / "form", ItemEdit(tiny_library / "replica.sqlite")

    def cutover(timeout: float, **answers: Any) -> dict:
        on_gate = exlibris_gate(airflow, stack_store, airflow_stack, **answers)
        return run_dag(airflow, stack_store, CUTOVER_DAG, conf, timeout=timeout, on_gate=on_gate)

    refused = cutover(300)
    write_form(cutover_form(), form_dir)  # the librarian maps what the preflight named
    try:
        try:
            no_go = cutover(1500, go=False, before={"fulfillment_freeze": item_edit})
        finally:
            item_edit.undo()
        live_after_no_go = go_live(stack_store, "demo")
        go = cutover(1500)
    finally:
        write_form(demo_form(), form_dir)
    return CutoverRuns(refused, no_go, go, item_edit, live_after_no_go)


@pytest.fixture(scope="session")
def cutover_go(cutover_runs: CutoverRuns) -> dict:
    """The cutover run answered Go."""
    return cutover_runs.go
