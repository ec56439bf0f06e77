"""migration_cutover's shape: nothing is extracted before its freeze is approved, each transform
reads its fixed extract with the cutover thresholds, a No-Go skips go_live only, and the gates'
pages show what the operator decides on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aleph2alma.runs import CUTOVER_DAG, ChildStep, RunRef

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS_DIR)).dags[CUTOVER_DAG]


def _upstream(dag: Any, task_id: str) -> set[str]:
    return set(dag.get_task(task_id).upstream_task_ids)


def test_each_extract_waits_for_its_freeze_and_each_window_ends_with_its_delivery(dag: Any) -> None:
    assert _upstream(dag, "technical_services_freeze") == {"preflight"}
    assert _upstream(dag, "inventory_extract") == {"technical_services_freeze"}
    assert _upstream(dag, "cutover_environment_accepted") == {"inventory_delivered"}
    assert _upstream(dag, "inventory_delivered") == {"deliver_inventory", "autoextract.transfer"}
    assert _upstream(dag, "fulfillment_freeze") == {"cutover_environment_accepted"}
    assert _upstream(dag, "extract") == {"fulfillment_freeze"}
    assert _upstream(dag, "fulfillment_delivered") == {"deliver_fulfillment", "api_load"}
    for delivered in ("inventory_delivered", "fulfillment_delivered"):
        assert dag.get_task(delivered).trigger_rule == "none_failed"  # one way delivered, the other skipped
    assert {"technical_services_freeze", "extract"} <= _upstream(dag, "freeze_violations")


@pytest.mark.parametrize(
    ("transform", "extract"),
    [("inventory_transform", ChildStep.INVENTORY_EXTRACT), ("transform", ChildStep.EXTRACT)],
)
def test_each_transform_reads_its_fixed_extract_with_the_cutover_thresholds(
    dag: Any, transform: str, extract: ChildStep
) -> None:
    task = dag.get_task(transform)
    assert task.conf["extract_run_id"] == RunRef.fixed_template(CUTOVER_DAG, extract)
    assert (task.conf["thresholds"], task.conf["scrub_emails"]) == ("cutover", False)
    fix = "fix_inventory" if extract is ChildStep.INVENTORY_EXTRACT else "fix_extract"
    assert _upstream(dag, transform) == {fix}


def test_a_no_go_skips_go_live_only_and_the_decision_and_audit_still_run(dag: Any) -> None:
    gate = dag.get_task("go_no_go")
    assert gate.ignore_downstream_trigger_rules is False
    assert gate.downstream_task_ids == {"go_live"}
    assert dag.get_task("decision").trigger_rule == "none_failed"
    assert _upstream(dag, "audit") == {"decision"}


class _TI:
    def __init__(self, blocking: bool = False) -> None:
        self.blocking = blocking

    def xcom_pull(self, task_ids: str) -> Any:
        return {
            "preflight": {
                "extract": {"dag_id": "migration_extract", "run_id": "e1"},
                "checks": [{}, {}, {}],
                "report_html": "s3://b/pre.html",
            },
            "package_inventory": {
                "uri": "s3://b/inv.zip",
                "bytes": 123456,
                "sha256": "ab" * 32,
                "members": [{"name": "bibs_BNU01.mrc", "records": 1500}],
            },
            "inventory_delivered": {"by": "generic", "at": "2026-11-10T08:00:00+00:00"},
            "reconcile": {
                "all_accounted": True,
                "report_html": "s3://b/rec.html",
                "entities": {"items": {"accounted": True, "in_alma": 1000, "in_alma_from": "workbook"}},
            },
            "changes_since_baseline": {
                "totals": {"new": 3, "changed": 5, "deleted": 1},
                "new_codes": [{"mapped": True}, {"mapped": False}],
                "report_html": "s3://b/changes.html",
            },
            "freeze_violations": {
                "total": 2 if self.blocking else 0,
                "threshold": 0,
                "blocking": self.blocking,
                "report_html": "s3://b/freeze.html",
            },
            "freeze_windows": {"technical_services": {"seconds": 1290.5}, "fulfillment": {"seconds": 300.0}},
        }[task_ids]


def _body(dag: Any, gate: str, ti: _TI, **params: Any) -> str:
    return dag.get_template_env().from_string(dag.get_task(gate).body).render(ti=ti, params=params)


@pytest.mark.parametrize(
    ("gate", "expected"),
    [
        (
            "technical_services_freeze",
            ["The time you approve is the freeze's start", "`migration_extract/e1`"],
        ),
        (
            "cutover_environment_accepted",
            ["`s3://b/inv.zip` — 123,456 bytes", "| `bibs_BNU01.mrc` | 1,500 |"],
        ),
        (
            "go_no_go",
            ["every record accounted for", "3 new, 5 changed,\n1 deleted", "1 not mapped", "1290.5 s"],
        ),
    ],
)
def test_gate_pages_show_what_the_operator_decides_on(dag: Any, gate: str, expected: list[str]) -> None:
    body = _body(dag, gate, _TI(), fulfillment_by="api")
    for text in expected:
        assert text in body, body


def test_the_go_no_go_page_says_when_go_would_be_refused_and_what_follows_a_no_go(dag: Any) -> None:
    assert "BLOCKS GO-LIVE" not in _body(dag, "go_no_go", _TI())
    blocked = _body(dag, "go_no_go", _TI(blocking=True))
    assert "**BLOCKS GO-LIVE**: an Approve will be refused" in blocked
    assert "After a No-Go" in blocked


@pytest.mark.parametrize(
    ("by", "said"), [("api", "loaded through the Alma API"), ("files", "for\nEx Libris")]
)
def test_the_fulfillment_freeze_page_says_how_the_snapshot_goes_to_alma(dag: Any, by: str, said: str) -> None:
    assert said in _body(dag, "fulfillment_freeze", _TI(), fulfillment_by=by)
