"""migration_test_load end to end: the gate answered through the REST API, as the UI does."""

from __future__ import annotations

import pytest

from aleph2alma.runs import TEST_LOAD_DAG, ChildStep, RunRef
from aleph2alma_dev.demo.runner import audit_result, run_summary

pytestmark = pytest.mark.e2e


def test_run_succeeds_after_the_gate(test_load: dict) -> None:
    assert test_load["state"] == "success", test_load.get("failed_tasks")


def test_child_runs_succeeded(test_load: dict, airflow, stack_store) -> None:
    for step in ChildStep:
        child = RunRef(TEST_LOAD_DAG, test_load["run_id"]).child(step)
        assert run_summary(airflow, stack_store, child.dag_id, child.run_id)["state"] == "success"


def test_reconciliation_accounts_for_every_record_alma_reports(test_load: dict) -> None:
    entities = test_load["reconciliation"]["entities"]
    assert all(e["source_balanced"] for e in entities.values()), entities
    # The emulator loads the MARC holdings file: the workbook's holdings tab counts them.
    assert entities["holdings"]["in_alma"] is not None and entities["holdings"]["in_alma_from"] == "workbook"
    unaccounted = {name: e for name, e in entities.items() if not e["accounted"]}
    assert unaccounted == {}


def test_fulfillment_loaded_through_the_api(test_load: dict) -> None:
    loaded = test_load["api_load"]
    assert loaded["loans"]["records_out"] > 0


def test_package_holds_the_bibs_with_their_items(test_load: dict, airflow) -> None:
    package = airflow.xcom("migration_test_load", test_load["run_id"], "package")
    members = {m["name"]: m for m in package["members"]}
    assert {"bibs_with_items_BNU01.mrc", "bibs_with_items_BNU02.mrc"} <= set(members), sorted(members)
    assert members["bibs_with_items_BNU01.mrc"]["records"] == members["bibs_BNU01.mrc"]["records"] > 0


def test_the_accounting_audit_covers_the_child_runs_and_passed(test_load: dict, airflow) -> None:
    audit = audit_result(airflow, TEST_LOAD_DAG, test_load["run_id"])
    assert (audit["task_state"], audit["status"], audit["gaps"]) == ("success", "passed", 0), audit
    run = RunRef(TEST_LOAD_DAG, test_load["run_id"])
    assert audit["runs"] == [str(run), *(str(run.child(step)) for step in ChildStep)]
    assert test_load["audit"]["status"] == "passed"


def test_clearing_a_phase_step_runs_its_child_again(test_load: dict, airflow) -> None:
    # Last in this module: it re-runs the test load's transform (same keys, same outputs).
    child = RunRef(TEST_LOAD_DAG, test_load["run_id"]).child(ChildStep.TRANSFORM).run_id
    before = {ti["task_id"]: ti["try_number"] for ti in airflow.task_instances("migration_transform", child)}
    airflow.clear("migration_test_load", test_load["run_id"], ["transform_and_validate"])
    assert airflow.wait("migration_test_load", test_load["run_id"], timeout=900) == "success"
    after = {ti["task_id"]: ti["try_number"] for ti in airflow.task_instances("migration_transform", child)}
    assert airflow.run_state("migration_transform", child) == "success"
    gate = "validation.delivery_gate"
    assert after[gate] == before[gate] + 1, (before, after)
    # The child's audit ran again on outputs that did not change, and passed again.
    assert after["audit"] == before["audit"] + 1, (before, after)
    assert audit_result(airflow, "migration_transform", child)["status"] == "passed"
