"""Every phase DAG ends with the accounting audit (``aleph2alma.audit``), and it never runs after a failure.

The audit is the only leaf: every other task runs before it, so it sees every manifest the run
commits. One exception, on purpose: the nightly delta's ``advance_watermark`` commits the night
(its state record is no manifest), and it runs after the audit, so that a night with a gap never
becomes the next night's baseline.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
PHASE_DAGS = [
    "migration_extract",
    "migration_transform",
    "migration_test_load",
    "migration_fix_cycle",
    "migration_post_go_live",
    "migration_cutover",
    "aleph_nightly_delta",
]
AFTER_THE_AUDIT = {"aleph_nightly_delta": {"advance_watermark"}}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS_DIR))


def test_every_dag_in_dags_is_a_phase_dag_checked_here(dagbag) -> None:
    assert sorted(dagbag.dags) == sorted(PHASE_DAGS)


@pytest.mark.parametrize("dag_id", PHASE_DAGS)
def test_the_audit_follows_every_task(dagbag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    audit = dag.get_task("audit")
    after = AFTER_THE_AUDIT.get(dag_id, set())
    assert audit.get_flat_relative_ids(upstream=False) == after
    assert {t.task_id for t in dag.leaves} == (after or {"audit"})
    assert set(dag.task_ids) == audit.get_flat_relative_ids(upstream=True) | {"audit"} | after


@pytest.mark.parametrize("dag_id", PHASE_DAGS)
def test_the_audit_never_runs_after_a_failure_and_is_never_retried_for_a_gap(dagbag, dag_id: str) -> None:
    from aleph2alma.audit import AuditGapError
    from aleph2alma.errors import PermanentError

    audit = dagbag.dags[dag_id].get_task("audit")
    # none_failed: runs when what came before succeeded or was skipped (a bibs_with_items not
    # asked for, a rejected sign-off), never when something failed.
    # The nightly audit follows summarise only, which is never skipped: the default rule.
    assert audit.trigger_rule == ("all_success" if dag_id == "aleph_nightly_delta" else "none_failed")
    assert issubclass(AuditGapError, PermanentError)  # DEFAULT_ARGS' retry policy: fail at once


def test_a_rejected_sign_off_skips_the_baseline_but_not_the_audit(dagbag) -> None:
    dag = dagbag.dags["migration_fix_cycle"]
    sign_off = dag.get_task("sign_off")
    assert sign_off.ignore_downstream_trigger_rules is False  # skips its direct downstream only
    assert sign_off.downstream_task_ids == {"record_baseline"}
    assert dag.get_task("audit").trigger_rule == "none_failed"
