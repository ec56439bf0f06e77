"""migration_post_go_live end to end on the session's test load (the final run): the desks'
offline circulation applied (and applied once only when the task runs again), the worklists, the
final reconciliation, the archive and the decommission checklist; the gate answered through the
REST API, as the UI does."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from aleph2alma.runs import POST_GO_LIVE_DAG
from aleph2alma_dev.demo.offline_circ import expected_counts
from aleph2alma_dev.demo.runner import audit_result, run_summary

pytestmark = pytest.mark.e2e
SEED = 7  # the session's tiny library (tests/conftest.py)
# The run itself is the session fixture ``post_go_live`` (tests/e2e/conftest.py): the UI test answers
# its decommission gate in the browser too.


def test_run_succeeds_and_its_audit_balances(post_go_live: dict, airflow) -> None:
    assert post_go_live["state"] == "success", post_go_live.get("failed_tasks")
    audit = audit_result(airflow, POST_GO_LIVE_DAG, post_go_live["run_id"])
    assert (audit["status"], audit["gaps"]) == ("passed", 0), audit


def test_offline_circulation_is_read_whole_and_every_row_accounted_for(
    post_go_live: dict, tiny_as_of: date
) -> None:
    offline, expected = post_go_live["offline_circulation"], expected_counts("tiny", SEED, tiny_as_of)
    assert offline["records_in"] == expected["records_in"]
    assert offline["rejected_input"] == expected["rejected_input"]
    assert offline["balanced"] and offline["records_in"] == offline["records_out"] + offline["rejected"]
    applied = sum(a["applied"] for a in offline["actions"].values())
    assert applied > 0.8 * expected["records_out"], offline  # a few Alma may refuse (its loan rules)


def test_worklists_archive_and_checklist_are_written(
    post_go_live: dict, stack_store, tiny_library: Path
) -> None:
    lists = post_go_live["worklists"]
    seeded = [
        json.loads(line)
        for line in (tiny_library / "ground_truth.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    blank = {d["record_id"] for d in seeded if d["defect"] == "missing_barcode"}
    assert lists["counts"]["items_without_barcode"] == len(blank) > 0
    archive = post_go_live["archive"]
    assert archive["objects"] > 0 and archive["storage_class"] == "STANDARD_IA"
    first = json.loads(stack_store.get_bytes(archive["manifest"].split("/", 3)[3]))
    head = stack_store.client.head_object(Bucket=stack_store.bucket, Key=first["objects"][0]["archive_key"])
    assert head.get("StorageClass") == "STANDARD_IA", head
    checklist = post_go_live["checklist"]
    assert checklist["status"] == "PASS" and not checklist["failed"], checklist
    assert stack_store.exists(checklist["report_html"].split("/", 3)[3])


def test_running_the_upload_again_applies_nothing_twice(post_go_live: dict, airflow, stack_store) -> None:
    # Last in this module: the offline circulation task runs again on the same run.
    run_id = post_go_live["run_id"]
    airflow.clear(POST_GO_LIVE_DAG, run_id, ["offline_circulation"])
    assert airflow.wait(POST_GO_LIVE_DAG, run_id, timeout=600) == "success"
    again = airflow.xcom(POST_GO_LIVE_DAG, run_id, "offline_circulation")
    first = post_go_live["offline_circulation"]
    assert again["api_calls"] == 0, again  # every outcome came from the checkpoint: no write to Alma
    assert again["resumed"] == first["records_out"] + sum(
        sum(a["refused"].values()) for a in first["actions"].values()
    )
    assert {k: again[k] for k in ("records_in", "records_out", "rejected_by_reason")} == {
        k: first[k] for k in ("records_in", "records_out", "rejected_by_reason")
    }
    assert run_summary(airflow, stack_store, POST_GO_LIVE_DAG, run_id)["state"] == "success"
