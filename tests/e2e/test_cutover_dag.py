"""migration_cutover end to end on tiny data, every gate answered through the REST API.

Three runs, in order, after the signed-off fix cycle:

1. with the form as the test load left it: the preflight refuses, naming the unmapped codes;
2. with the cutover form (the librarian mapped them): both freezes, both deliveries, and an
   item edited in Aleph during the technical-services freeze — caught as a freeze violation,
   which blocks go-live; the go / no-go is answered No-Go: nothing goes live;
3. the item put back: Go, and the go-live marker names this run; post-go-live then finds it.
"""

from __future__ import annotations

from typing import Any

import pytest

from aleph2alma.runs import CUTOVER_DAG, ChildStep, RunRef
from aleph2alma_dev.demo.runner import audit_result

pytestmark = pytest.mark.e2e


def test_preflight_refuses_to_freeze_and_names_each_unmapped_code(cutover_runs: Any, airflow) -> None:
    refused = cutover_runs.refused
    assert refused["state"] == "failed"
    states = {ti["task_id"]: ti["state"] for ti in airflow.task_instances(CUTOVER_DAG, refused["run_id"])}
    assert states["preflight"] == "failed"
    assert states["technical_services_freeze"] == "upstream_failed"  # nothing froze
    log = airflow.task_log(CUTOVER_DAG, refused["run_id"], "preflight")
    assert "not ready to freeze" in log
    for code in ("BNUCP", "BNUZG/LSCK", "99"):
        assert code in log, log[-3000:]


def test_a_no_go_marks_nothing_live_and_the_freeze_violation_is_named(cutover_runs: Any, airflow) -> None:
    no_go, item_edit = cutover_runs.no_go, cutover_runs.item_edit
    assert no_go["state"] == "success", no_go.get("failed_tasks")
    states = {ti["task_id"]: ti["state"] for ti in airflow.task_instances(CUTOVER_DAG, no_go["run_id"])}
    assert states["go_live"] == "skipped"
    assert (states["decision"], states["audit"]) == ("success", "success")
    assert no_go["go_no_go"]["decision"] == "no-go"
    assert cutover_runs.live_after_no_go is None  # no go-live marker
    assert no_go["changes_since_baseline"]["entities"]["items"]["changed"] == 1  # the edited item
    violations = no_go["freeze_violations"]
    assert violations["total"] == 1 and violations["blocking"] is True, violations
    assert violations["entities"]["items"]["samples"] == [item_edit.key.strip()]
    body = airflow.hitl_details(CUTOVER_DAG, no_go["run_id"], "go_no_go")["body"]
    assert "**BLOCKS GO-LIVE**" in body and "After a No-Go" in body, body


def test_go_writes_the_marker_with_the_runs_and_post_go_live_takes_this_run(
    cutover_go: dict, stack_store
) -> None:
    from aleph2alma.phases.post_go_live import final_run_of
    from aleph2alma.state import go_live

    go = cutover_go

    assert go["state"] == "success", go.get("failed_tasks")
    assert go["go_no_go"]["decision"] == "go"
    run = RunRef(CUTOVER_DAG, go["run_id"])
    marker = go_live(stack_store, "demo")
    assert marker["cutover_run"] == str(run)
    assert marker["runs"]["final_extract"] == str(run.child(ChildStep.EXTRACT))
    assert marker["runs"]["inventory_transform"] == str(run.child(ChildStep.INVENTORY_TRANSFORM))
    assert marker["approved_by"] and marker["freeze_violations"] == 0
    assert final_run_of(_context(stack_store), "") == run


def test_both_freeze_windows_are_measured(cutover_go: dict) -> None:
    go = cutover_go
    windows = go["freeze_windows"]
    for freeze in ("technical_services", "fulfillment"):
        assert windows[freeze]["seconds"] > 0, windows
        assert windows[freeze]["freeze_began"] < windows[freeze]["delivered"]


def test_inventory_and_fulfillment_go_in_their_own_packages_and_everything_is_accounted_for(
    cutover_go: dict, airflow
) -> None:
    go = cutover_go
    run_id = go["run_id"]
    inventory = {m["entity"] for m in airflow.xcom(CUTOVER_DAG, run_id, "package_inventory")["members"]}
    fulfillment = {m["entity"] for m in airflow.xcom(CUTOVER_DAG, run_id, "package_fulfillment")["members"]}
    assert {"bibs", "holdings", "items", "p2e"} <= inventory and not inventory & {"patrons", "loans"}
    assert {"patrons", "loans", "requests", "fines"} <= fulfillment and "bibs" not in fulfillment
    assert go["api_load"]["patrons"]["records_out"] > 0 and go["api_load"]["loans"]["records_out"] > 0
    assert go["reconciliation"]["all_accounted"], go["reconciliation"]


def test_the_audit_covers_both_freezes_child_runs_and_fixed_extracts(cutover_go: dict, airflow) -> None:
    go = cutover_go
    audit = audit_result(airflow, CUTOVER_DAG, go["run_id"])
    assert (audit["task_state"], audit["status"], audit["gaps"]) == ("success", "passed", 0), audit
    run = RunRef(CUTOVER_DAG, go["run_id"])
    for step in (ChildStep.INVENTORY_EXTRACT, ChildStep.EXTRACT):
        assert str(run.fixed(step)) in audit["runs"]
    for step in ChildStep:
        assert str(run.child(step)) in audit["runs"]


def _context(store):
    from aleph2alma.phases.context import PhaseContext
    from aleph2alma.settings import load
    from aleph2alma.storage import RunScope

    return PhaseContext(store, RunScope("demo", "migration_post_go_live", "probe"), load("demo"))
