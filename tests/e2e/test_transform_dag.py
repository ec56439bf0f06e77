"""migration_transform, run by a real Airflow on the tiny library's extract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aleph2alma.demo.runner import run_dag

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def transform_run(extract_run, airflow, stack_store, tiny_library: Path) -> dict:
    assert extract_run["state"] == "success"
    as_of = json.loads((tiny_library / "summary.json").read_text())["as_of"]
    return run_dag(airflow, stack_store, "migration_transform", {"migration_id": "demo", "as_of": as_of},
                   timeout=900)


def test_run_succeeds_and_reads_the_latest_extract(transform_run: dict, extract_run: dict) -> None:
    assert transform_run["state"] == "success", transform_run.get("failed_tasks")
    assert transform_run["validation"]["status"] == "PASS"


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
