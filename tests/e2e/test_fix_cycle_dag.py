"""migration_fix_cycle end to end: fix rules applied, diff against the test load, sign-off through the API."""

from __future__ import annotations

import pytest

from aleph2alma.runs import ChildStep, RunRef
from aleph2alma_dev.demo.runner import audit_result

pytestmark = pytest.mark.e2e


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
