"""migration_extract, run end to end by a real Airflow against the embedded S3 on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aleph2alma_dev.demo.runner import audit_result

pytestmark = pytest.mark.e2e


def test_run_succeeds(extract_run: dict) -> None:
    assert extract_run["state"] == "success", extract_run.get("failed_tasks")


def test_every_entity_committed_with_source_counts(extract_run: dict, tiny_library: Path) -> None:
    counts = json.loads((tiny_library / "summary.json").read_text())["counts"]
    raw = {s["entity"]: s for s in extract_run["stages"] if s["stage"] == "raw"}
    for entity in ("bibs", "holdings", "items", "patrons", "loans", "requests", "fines"):
        assert raw[entity]["records"] == counts[entity], entity
        assert raw[entity]["manifest"].endswith(f"/raw/{entity}/_MANIFEST.json")


def test_manifests_are_committed_in_s3(extract_run: dict, stack_store) -> None:
    for stage in extract_run["stages"]:
        manifest = stack_store.manifest(stage["manifest"])
        assert manifest.run_id == extract_run["run_id"]
        for f in manifest.files:
            assert (
                stack_store.client.head_object(Bucket=stack_store.bucket, Key=f.key)["ContentLength"]
                == f.bytes
            )


def test_code_inventory_written(extract_run: dict) -> None:
    profile = [s for s in extract_run["stages"] if s["stage"] == "profile"]
    assert profile and profile[0]["records"] > 0


def test_the_accounting_audit_ran_last_and_passed(extract_run: dict, airflow) -> None:
    audit = audit_result(airflow, "migration_extract", extract_run["run_id"])
    assert (audit["task_state"], audit["status"], audit["gaps"]) == ("success", "passed", 0), audit
    assert audit["manifests"] == 12  # every entity's raw/ stage and the code inventory
    assert extract_run["audit"]["status"] == "passed"  # its line in run_summary.json
    assert extract_run["audit"]["report"].endswith(f"/{extract_run['run_id']}/audit.json")
