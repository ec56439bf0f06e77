"""The post-go-live steps' own logic: which run is final, and the checks the checklist gets."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from aleph2alma import settings as migration_settings
from aleph2alma.phases.context import PhaseContext
from aleph2alma.phases.post_go_live import FinalRunError, final_run_of
from aleph2alma.postlive.checklist import offline_circulation_check as offline_check
from aleph2alma.runs import POST_GO_LIVE_DAG, TEST_LOAD_DAG, RunRef
from aleph2alma.storage import ArtifactStore, RunScope

SCOPE = RunScope("demo", POST_GO_LIVE_DAG, "manual__2026-12-01T00:00:00+00:00")


@pytest.fixture
def ctx(store: ArtifactStore) -> PhaseContext:
    return PhaseContext(store, SCOPE, migration_settings.load("demo"))


def summary(store: ArtifactStore, run_id: str, **extra: object) -> None:
    key = RunRef(TEST_LOAD_DAG, run_id).scope("demo").report_prefix() + "run_summary.json"
    store.put_bytes(key, json.dumps({"run_id": run_id, **extra}).encode())


def test_the_named_run_is_final(ctx: PhaseContext) -> None:
    assert final_run_of(ctx, "migration_test_load/r1") == RunRef(TEST_LOAD_DAG, "r1")
    assert final_run_of(ctx, "r2") == RunRef(TEST_LOAD_DAG, "r2")


def test_else_the_latest_test_load_that_reconciled(ctx: PhaseContext, store: ArtifactStore) -> None:
    summary(store, "first", reconciliation={"all_accounted": True})
    summary(store, "second", reconciliation={"all_accounted": True})
    summary(store, "third")  # stopped before its reconciliation: not a snapshot that went live
    assert final_run_of(ctx, "") == RunRef(TEST_LOAD_DAG, "second")


def test_no_reconciled_test_load_is_a_clear_error(ctx: PhaseContext, store: ArtifactStore) -> None:
    summary(store, "only", api_load={})
    with pytest.raises(FinalRunError, match="no migration_test_load run of migration 'demo' has reconciled"):
        final_run_of(ctx, "")


def test_the_offline_check_passes_only_when_every_row_is_accounted_for() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    assert offline_check(None, "lead", at).passed
    actions = {"loan": {"applied": 3, "already_applied": 1, "refused": {"401651": 1}}}
    result = {"records_in": 6, "records_out": 4, "rejected": 2, "rejected_by_reason": {}, "actions": actions}
    check = offline_check({**result, "balanced": True}, "lead", at)
    assert check.passed and check.counts == {"loan": 4, "rejected": 2} and check.verified_by == "lead"
    assert not offline_check({**result, "balanced": False}, "lead", at).passed
