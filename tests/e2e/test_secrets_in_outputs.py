"""Credentials never appear in an output, end to end.

The session's stack runs with marked credentials (``marked_secrets`` in conftest.py:
``A2A-SECRET-<NAME>-<random>``): the Alma API key (the emulator accepts no other, so the API load
used it), the S3 secret key, the Airflow admin's password, and the passwords of two connections
every task can read but the test load does not use (the Aleph database, an SFTP server). After the
session's test load (extract, transform, package, delivery, the API load, reconciliation), no
object in the artifact bucket (the parts, the reports, the delivered package), no file of the
stack (Airflow's metadata database with every XCom, the task and component logs, the Alma
emulator's database) and not the demo summary holds one of them, except the one file the admin's
password is meant to be in. The controls: the same search finds that password there, and finds
every secret once it is written into an XCom of a copy of the metadata database.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from aleph2alma_dev.demo.runner import print_table
from artifact_scan import find

pytestmark = pytest.mark.e2e


def stack_outputs(stack_store, state_dir: Path) -> list[tuple[str, bytes]]:
    """Every object of the artifact bucket and every file under the stack's state dir."""
    objects = [
        (f"s3://{stack_store.bucket}/{k}", stack_store.get_bytes(k)) for k in stack_store.list_keys("")
    ]
    files = [(str(p), p.read_bytes()) for p in sorted(state_dir.rglob("*")) if p.is_file()]
    return [*objects, *files]


def demo_summary(run: dict) -> bytes:
    """What ``aleph2alma-dev demo`` writes (summary.json) and prints (the table) for a run."""
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        print_table([run])
    return (json.dumps({"runs": [run]}, indent=2, ensure_ascii=False) + table.getvalue()).encode()


def test_no_secret_in_any_output_of_the_test_load(
    test_load: dict, stack_store, airflow_stack, marked_secrets: dict[str, str]
) -> None:
    assert test_load["state"] == "success", test_load.get("failed_tasks")
    # The emulator admits only the marked key: calls it counted came with it (and a wrong key is refused).
    stats = httpx.get(f"{airflow_stack.alma_url}/_emulator/stats", timeout=10).json()
    assert stats["calls"] > 0, stats
    wrong = httpx.get(
        f"{airflow_stack.alma_url}/almaws/v1/users/x",
        headers={"Authorization": "apikey demo-api-key"},
        timeout=10,
    )
    assert wrong.status_code == 400 and "UNAUTHORIZED" in wrong.text

    outputs = [
        *stack_outputs(stack_store, airflow_stack.state_dir),
        ("demo summary", demo_summary(test_load)),
    ]
    names = [name for name, _ in outputs]
    assert any("/reports/" in n for n in names) and any("/delivery/" in n for n in names), names[:20]
    assert any(n.endswith("airflow.db") for n in names) and any("/logs/" in n for n in names), names[-20:]
    assert any(n.endswith("alma-emulator.sqlite") for n in names), names[-20:]

    found = find(marked_secrets.values(), outputs)

    password_file = str(airflow_stack.password_file)
    assert found.pop(password_file, set()) == {marked_secrets["admin_password"]}  # control
    leaks = {leaf: sorted(hits) for leaf, hits in found.items()}
    assert leaks == {}, f"credentials found in {len(leaks)} outputs: {leaks}"


def test_the_search_finds_a_secret_leaked_into_an_xcom(
    test_load: dict, airflow_stack, marked_secrets: dict[str, str], tmp_path: Path
) -> None:
    """Control: a secret pushed as an XCom value is found among the metadata database's files.

    The copy keeps the live database's journal mode (WAL): a committed write sits in
    ``airflow.db-wal`` until a checkpoint, as in the running stack; both files are searched, as the
    test above searches every file of the state dir.
    """
    copy = tmp_path / "metadata" / "airflow.db"
    copy.parent.mkdir()
    with (
        contextlib.closing(sqlite3.connect(airflow_stack.airflow_home / "airflow.db")) as live,
        contextlib.closing(sqlite3.connect(copy)) as db,
    ):
        live.backup(db)
        leaked = json.dumps({"connection": dict(marked_secrets)})
        with db:
            updated = db.execute(
                "update xcom set value = ? where rowid = (select min(rowid) from xcom)", [leaked]
            )
        assert updated.rowcount == 1
        files = [(str(p), p.read_bytes()) for p in sorted(copy.parent.iterdir())]
        found = find(marked_secrets.values(), files)
    assert set().union(*found.values()) == set(marked_secrets.values()), found
