"""migration_transform, run by a real Airflow on the tiny library's extract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aleph2alma_dev.demo.runner import audit_result, run_dag

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def transform_run(extract_run, airflow, stack_store, tiny_library: Path) -> dict:
    assert extract_run["state"] == "success"
    as_of = json.loads((tiny_library / "summary.json").read_text())["as_of"]
    return run_dag(
        airflow, stack_store, "migration_transform", {"migration_id": "demo", "as_of": as_of}, timeout=900
    )


def test_run_succeeds_and_reads_the_latest_extract(transform_run: dict, extract_run: dict) -> None:
    assert transform_run["state"] == "success", transform_run.get("failed_tasks")
    assert transform_run["validation"]["status"] == "PASS"


def test_the_accounting_audit_ran_last_and_passed(transform_run: dict, airflow) -> None:
    audit = audit_result(airflow, "migration_transform", transform_run["run_id"])
    assert (audit["task_state"], audit["status"], audit["gaps"]) == ("success", "passed", 0), audit
    assert audit["manifests"] > 10 and transform_run["audit"]["status"] == "passed"
    # The extract's raw/ stages were read for the chains raw → alma: its manifests are counted too.
    assert audit["runs"] == [f"migration_transform/{transform_run['run_id']}"]


def test_alma_files_committed_for_every_entity(transform_run: dict, tiny_library: Path) -> None:
    counts = json.loads((tiny_library / "summary.json").read_text())["counts"]
    alma = {s["entity"]: s for s in transform_run["stages"] if s["stage"] == "alma"}
    for entity in ("bibs", "holdings", "items", "patrons", "loans", "requests", "fines"):
        assert alma[entity]["records_in"] == counts[entity]
        assert alma[entity]["records"] + alma[entity]["rejected"] == counts[entity]
    assert "p2e" in alma


def test_validation_report_counts_seeded_defects(transform_run: dict, tiny_library: Path) -> None:
    seeded = json.loads((tiny_library / "summary.json").read_text())["defects"]
    expected = {rule: n for by_rule in seeded.values() for rule, n in by_rule.items() if n}
    assert transform_run["validation"]["by_rule"] == expected


def test_command_line_validation_counts_what_the_dag_counts(
    transform_run: dict, tiny_library: Path, tmp_path: Path
) -> None:
    """`aleph2alma validate` runs the DAG's steps in one process: same entities, same rule hits."""
    from aleph2alma.cli import main

    as_of = json.loads((tiny_library / "summary.json").read_text())["as_of"]
    main(["validate", "--library-dir", str(tiny_library), "--as-of", as_of, "--out", str(tmp_path)])
    local = json.loads((tmp_path / "report.json").read_text())
    dag = transform_run["validation"]
    assert {rule: r["count"] for rule, r in local["rules"].items() if r["count"]} == dag["by_rule"]
    assert local["entities"] == dag["entities"]
