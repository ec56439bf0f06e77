"""migration_fix_cycle end to end: fix rules applied, diff against the test load, sign-off through the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aleph2alma.runs import TEST_LOAD_DAG, ChildStep, RunRef
from aleph2alma_dev.demo.runner import audit_result, exlibris_gate, run_dag

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fix_cycle(test_load: dict, airflow, stack_store, airflow_stack, tiny_library: Path) -> dict:
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


def test_iteration_signed_off(fix_cycle: dict) -> None:
    assert fix_cycle["state"] == "success", fix_cycle.get("failed_tasks")


def test_fix_rules_fix_issues_and_the_rest_stays_open(fix_cycle: dict) -> None:
    totals = fix_cycle["diff"]["totals"]
    assert totals["fixed"] > 0, totals
    assert totals["new"] == 0, totals
    assert totals["still_open"] > 0, totals


def test_signed_off_iteration_is_the_baseline(fix_cycle: dict, stack_store) -> None:
    from aleph2alma.state import baseline

    assert baseline(stack_store, "demo")["fix_cycle_run_id"] == fix_cycle["run_id"]


def test_the_accounting_audit_ran_last_and_passed(fix_cycle: dict, airflow) -> None:
    audit = audit_result(airflow, "migration_fix_cycle", fix_cycle["run_id"])
    assert (audit["task_state"], audit["status"], audit["gaps"]) == ("success", "passed", 0), audit
    run = RunRef("migration_fix_cycle", fix_cycle["run_id"])
    assert audit["runs"] == [str(run), str(run.child(ChildStep.TRANSFORM))]
    assert fix_cycle["audit"]["status"] == "passed"
