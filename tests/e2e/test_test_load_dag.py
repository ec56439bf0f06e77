"""migration_test_load end to end: the gate answered through the REST API, as the UI does."""

from __future__ import annotations

import pytest

from aleph2alma.demo.runner import run_summary

pytestmark = pytest.mark.e2e


def test_run_succeeds_after_the_gate(test_load: dict) -> None:
    assert test_load["state"] == "success", test_load.get("failed_tasks")


def test_child_runs_succeeded(test_load: dict, airflow, stack_store) -> None:
    for dag_id, suffix in (("migration_extract", "__extract"), ("migration_transform", "__transform")):
        assert run_summary(airflow, stack_store, dag_id, test_load["run_id"] + suffix)["state"] == "success"


def test_reconciliation_accounts_for_every_record_alma_reports(test_load: dict) -> None:
    entities = test_load["reconciliation"]["entities"]
    assert all(e["source_balanced"] for e in entities.values()), entities
    # The emulator, like an items import profile, builds holdings from items: Alma reports no
    # count of the Aleph HOL records, so holdings are shown as unreported, not as accounted.
    assert entities["holdings"]["in_alma"] is None
    unaccounted = {name: e for name, e in entities.items() if name != "holdings" and not e["accounted"]}
    assert unaccounted == {}


def test_fulfillment_loaded_through_the_api(test_load: dict) -> None:
    loaded = test_load["api_load"]
    assert loaded["loans"]["records_out"] > 0
