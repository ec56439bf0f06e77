"""
### Alert probe (tests only)

Two DAGs for the alerting end-to-end test (``tests/e2e/test_alerts_e2e.py``), loaded only by that
test's stack, whose DAG folder holds the project's DAGs and this file. Wired like the migration
DAGs (``dagkit.DEFAULT_ARGS``, ``dag_failure_alert()``):

- ``alert_probe``: one approval gate, nothing before it, so it opens at once and its reminder
  can be watched;
- ``alert_probe_nightly``: one empty task under the nightly deadline (``nightly_deadline``), so
  a run triggered for a past night has missed its deadline when it is created.
"""

from __future__ import annotations

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import dag

from aleph2alma.dagkit import DEFAULT_ARGS, dag_failure_alert
from aleph2alma.gates import ApprovalGate
from aleph2alma.notify import nightly_deadline


@dag(
    dag_id="alert_probe",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    on_failure_callback=dag_failure_alert(),
    doc_md=__doc__,
    tags=["aleph2alma"],
)
def alert_probe() -> None:
    ApprovalGate(task_id="sign_off", subject="Probe: approve?", body="Nothing depends on this answer.")


alert_probe()


@dag(
    dag_id="alert_probe_nightly",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    on_failure_callback=dag_failure_alert(),
    deadline=nightly_deadline("Asia/Shanghai"),
    doc_md=__doc__,
    tags=["aleph2alma"],
)
def alert_probe_nightly() -> None:
    EmptyOperator(task_id="delta")


alert_probe_nightly()
