"""The plan's actuals, recorded by the session's own DAG runs, against Airflow's record of them.

The test load and the cutover (answered Go) ran on the session stack with the demo's plan.yaml:
each gate was assigned to its role's users, named its key node, and recorded its answer; each
phase run recorded its end and wrote a status report. The times must be the runs' own.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from aleph2alma.plan.actuals import node_actuals, runs_ended
from aleph2alma.plan.model import load_plan
from aleph2alma.storage import ArtifactStore, RunScope
from aleph2alma_dev.airflow_api import AirflowClient

pytestmark = pytest.mark.e2e


def when(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def actual(store: ArtifactStore, node: str, run_id: str) -> Any:
    return next(a for a in node_actuals(store, "demo") if a.node == node and a.run_id == run_id)


def test_a_gate_answer_is_recorded_at_its_time_by_its_user(
    test_load: dict, airflow: AirflowClient, stack_store: ArtifactStore
) -> None:
    dag_id, run_id = "migration_test_load", test_load["run_id"]
    hitl = airflow.hitl_details(dag_id, run_id, "test_environment_loaded")
    received = actual(stack_store, "test_environment_received", run_id)
    assert received.at == when(hitl["responded_at"])
    assert received.by_id == hitl["responded_by_user"]["id"] and received.outcome == "approved"
    gate = next(
        t for t in airflow.task_instances(dag_id, run_id) if t["task_id"] == "test_environment_loaded"
    )
    delivered = actual(stack_store, "test_load_delivered", run_id)
    # Recorded as the gate opens: after its try started, before it asked for an answer (the order
    # of events in one try, not a time margin).
    assert when(gate["start_date"]) <= delivered.at <= when(hitl["created_at"])


def test_the_gate_is_assigned_and_briefed_as_the_plan_says(test_load: dict, airflow: AirflowClient) -> None:
    plan = load_plan("demo")
    assert plan is not None
    hitl = airflow.hitl_details("migration_test_load", test_load["run_id"], "test_environment_loaded")
    expected = [u.id for u in plan.gate_assignees("migration_test_load", "test_environment_loaded")]
    assert [u["id"] for u in hitl["assigned_users"]] == expected == ["li.na", "admin"]
    assert "Test environment received / 测试环境交付" in hitl["body"]
    assert plan.key_nodes["test_environment_received"].isoformat() in hitl["body"]


def test_a_phase_run_records_its_own_start_and_leaves_a_status_report(
    test_load: dict, airflow: AirflowClient, stack_store: ArtifactStore
) -> None:
    dag_id, run_id = "migration_test_load", test_load["run_id"]
    run = airflow.dag_run(dag_id, run_id)
    recorded = next(r for r in runs_ended(stack_store, "demo") if r.run_id == run_id)
    assert recorded.started_at == when(run["start_date"])
    assert when(run["start_date"]) <= recorded.ended_at <= when(run["end_date"])
    prefix = RunScope("demo", dag_id, run_id).report_prefix() + "status/"
    html = stack_store.get_bytes(prefix + "status.en.html").decode("utf-8")
    assert f"{dag_id}/{run_id}" in html and "Test environment received" in html
    assert stack_store.get_bytes(prefix + "status.en.png").startswith(b"\x89PNG")
    assert "测试环境交付" in stack_store.get_bytes(prefix + "status.zh.html").decode("utf-8")


def test_go_live_is_recorded_by_the_decision_at_the_go_answer(
    cutover_go: dict, airflow: AirflowClient, stack_store: ArtifactStore
) -> None:
    run_id = cutover_go["run_id"]
    hitl = airflow.hitl_details("migration_cutover", run_id, "go_no_go")
    went_live = actual(stack_store, "go_live", run_id)
    assert (went_live.at, went_live.outcome) == (when(hitl["responded_at"]), "go")
    marker = json.loads(stack_store.get_bytes("demo/state/go_live.json"))
    assert when(marker["went_live_at"]) == went_live.at
