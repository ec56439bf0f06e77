"""Every DAG alerts: wired once in dagkit, so no DAG or task is left out."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS_DIR))


def test_every_dag_alerts_on_failure(dagbag) -> None:
    from aleph2alma.alerts import Kind
    from aleph2alma.notify import AlertNotifier

    assert dagbag.dags
    for dag in dagbag.dags.values():
        kinds = [c.kind for c in dag.on_failure_callback or [] if isinstance(c, AlertNotifier)]
        assert kinds == [Kind.DAG_FAILED], dag.dag_id


def test_every_task_keeps_its_error_and_alerts_on_retries(dagbag) -> None:
    from aleph2alma.alerts import Kind
    from aleph2alma.notify import AlertNotifier, record_error

    for dag in dagbag.dags.values():
        for t in dag.tasks:
            assert record_error in (t.on_failure_callback or []), f"{dag.dag_id}.{t.task_id}"
            retry = [c.kind for c in t.on_retry_callback or [] if isinstance(c, AlertNotifier)]
            assert retry == [Kind.TASK_RETRY], f"{dag.dag_id}.{t.task_id}"


def test_every_approval_gate_reminds_and_never_decides_by_itself(dagbag) -> None:
    from airflow.providers.standard.operators.hitl import HITLOperator

    from aleph2alma.gates import ApprovalGate

    gates = [t for dag in dagbag.dags.values() for t in dag.tasks if isinstance(t, HITLOperator)]
    assert gates, "no approval gate found"
    for gate in gates:
        assert isinstance(gate, ApprovalGate), f"{gate.dag_id}.{gate.task_id}: {type(gate).__name__}"
        assert gate.defaults is None, gate.task_id
