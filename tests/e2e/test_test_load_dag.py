"""migration_test_load end to end: the gate answered through the REST API, as the UI does."""

from __future__ import annotations

import pytest

from aleph2alma.runs import PHASE_CHILDREN, TEST_LOAD_DAG, ChildStep, RunRef
from aleph2alma_dev.demo.runner import audit_result, run_summary

pytestmark = pytest.mark.e2e


def test_run_succeeds_after_the_gate(test_load: dict) -> None:
    assert test_load["state"] == "success", test_load.get("failed_tasks")


def test_child_runs_succeeded(test_load: dict, airflow, stack_store) -> None:
    for step in PHASE_CHILDREN:
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
    assert audit["runs"] == [str(run), *(str(run.child(step)) for step in PHASE_CHILDREN)]
    assert test_load["audit"]["status"] == "passed"


def test_the_delivered_package_is_what_the_generic_specification_asks_for(
    test_load: dict, airflow, stack_store, tmp_path
) -> None:
    """Opened as Ex Libris opens it (issue 8, B7/B8/B10): MARC and CSV with the Field Mapping form, no
    JSON lines; lost and claimed-returned loans delivered as open loans; no purge date before expiry."""
    import csv
    import io
    import xml.etree.ElementTree as ET
    import zipfile

    from aleph2alma.delivery.field_mapping import FIELD_MAPPING_MEMBER, LOANS

    package = airflow.xcom("migration_test_load", test_load["run_id"], "package")
    archive = zipfile.ZipFile(io.BytesIO(stack_store.get_bytes(package["key"])))
    names = archive.namelist()
    assert not [n for n in names if n.endswith(".jsonl")], names
    assert {"items.csv", "loans.csv", "requests.csv", "fines.csv", "users.xml", FIELD_MAPPING_MEMBER} <= set(
        names
    )
    loans = list(csv.DictReader(io.StringIO(archive.read("loans.csv").decode("utf-8"))))
    assert list(loans[0]) == LOANS.header
    statuses = {row["process_status"] for row in loans}
    assert {"NORMAL", "LOST", "CLAIMED_RETURN"} <= statuses, statuses
    users = ET.fromstring(archive.read("users.xml"))
    dated = [(u.findtext("expiry_date"), u.findtext("purge_date")) for u in users.iter("user")]
    early = [(e, p) for e, p in dated if e and p and p < e]
    assert dated and not early, early[:5]


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
