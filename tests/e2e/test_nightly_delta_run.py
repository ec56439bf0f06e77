"""aleph_nightly_delta, run end to end by a real Airflow after a full extract, with one night's changes.

The session's library is shared with the other end-to-end tests: the changes made here (an item
edited, a loan returned) are put back once the run is over.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from aleph2alma import state
from aleph2alma.runs import EXTRACT_DAG, NIGHTLY_DELTA_DAG
from aleph2alma_dev.demo.runner import audit_result, run_dag

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def night(extract_run: dict, airflow: Any, stack_store: Any, tiny_library: Path) -> Iterator[dict]:
    db = tiny_library / "replica.sqlite"
    with sqlite3.connect(db) as conn:
        item, note, day = conn.execute(
            "SELECT z30_rec_key, z30_note_internal, z30_update_date FROM z30 ORDER BY z30_rec_key LIMIT 1"
        ).fetchone()
        loan = conn.execute("SELECT * FROM z36 ORDER BY z36_rec_key LIMIT 1").fetchone()
        conn.execute(
            "UPDATE z30 SET z30_note_internal = ?, z30_update_date = 20261102 WHERE z30_rec_key = ?",
            ("moved to the Zhuhai campus".ljust(200), item),
        )
        conn.execute("DELETE FROM z36 WHERE z36_rec_key = ?", (loan[0],))
    try:
        yield run_dag(airflow, stack_store, NIGHTLY_DELTA_DAG, {"migration_id": "demo"}, timeout=600)
    finally:
        with sqlite3.connect(db) as conn:
            conn.execute(
                "UPDATE z30 SET z30_note_internal = ?, z30_update_date = ? WHERE z30_rec_key = ?",
                (note, day, item),
            )
            conn.execute(f"INSERT INTO z36 VALUES ({', '.join('?' * len(loan))})", loan)


def test_the_night_succeeds(night: dict) -> None:
    assert night["state"] == "success", night.get("failed_tasks")


def test_it_finds_the_nights_changes_and_nothing_else(night: dict) -> None:
    delta = night["delta"]
    assert (delta["items"]["changed"], delta["loans"]["deleted"]) == (1, 1)
    touched = {
        e: c["new"] + c["changed"] + c["deleted"] for e, c in delta.items() if e not in ("items", "loans")
    }
    assert set(touched.values()) == {0}, touched
    assert night["window"]["start"] is None and night["window"]["baseline"].startswith(f"{EXTRACT_DAG}/")


def test_the_watermark_is_the_nights_end_and_the_delta_is_staged(night: dict, stack_store: Any) -> None:
    end = datetime.fromisoformat(night["window"]["end"])
    assert state.watermark(stack_store, "demo") == end
    (recorded,) = [n for n in state.nights(stack_store, "demo") if n.run.run_id == night["run_id"]]
    assert recorded.summary.endswith(f"/{night['run_id']}/run_summary.json")
    items = stack_store.manifest(next(s["manifest"] for s in night["stages"] if s["entity"] == "items"))
    assert items.records == 1 and items.run_id == night["run_id"]
    report = json.loads(stack_store.get_bytes(night["report_json"].split("/", 3)[3]))
    assert report["totals"]["changed"] == 1 and report["totals"]["deleted"] == 1


def test_the_accounting_audit_passed_before_the_watermark_moved(night: dict, airflow: Any) -> None:
    audit = audit_result(airflow, NIGHTLY_DELTA_DAG, night["run_id"])
    assert (audit["task_state"], audit["status"], audit["gaps"]) == ("success", "passed", 0), audit
    assert night["audit"]["status"] == "passed"
