"""The accounting audit on runs made by the real phase steps (tiny demo library, S3 on moto's server).

A consistent run passes; a manifest tampered with after its commit — counts that do not add up, a
stage that lost records between stages, rejects counted but not listed, a file gone — fails the
audit, which names the gap: run, stage, entity, the three numbers and the difference.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from aleph2alma import pipeline
from aleph2alma import settings as settings_mod
from aleph2alma.aleph.db import create_engine
from aleph2alma.aleph.landing import LocalLanding
from aleph2alma.audit import AuditGapError, AuditReport, Line, audit, audit_step
from aleph2alma.phases.context import PhaseContext
from aleph2alma.phases.fix_cycle import apply_fixes_step
from aleph2alma.phases.test_load import package_step
from aleph2alma.runs import ChildStep, RunRef
from aleph2alma.state import write_run_summary
from aleph2alma.storage import MANIFEST_NAME, ArtifactStore, RunScope, StoredFile

MIGRATION = "demo"
EXTRACT = RunRef("migration_extract", "e1")
TRANSFORM = RunRef("migration_transform", "t1")
FIX = RunRef("migration_fix_cycle", "f1")
TEST_LOAD = RunRef("migration_test_load", "l1")
NIGHT = RunRef("aleph_nightly_delta", "n1")


@pytest.fixture(scope="module")
def runs(tiny_library: Path, s3_stack: Any) -> dict[str, Any]:
    """An extract, its transform, a fix cycle (with its transform run), a test load's package and
    a night, made by the steps the DAGs run, once for the module."""
    store = ArtifactStore(s3_stack.s3_client(), "audit-runs")
    store.ensure_bucket()
    settings = replace(
        settings_mod.load(MIGRATION), part_rows=400, part_bytes=32_768, items_in_bib_field="949"
    )
    as_of = date.fromisoformat(json.loads((tiny_library / "summary.json").read_text())["as_of"])
    engine = create_engine(f"sqlite:///{tiny_library / 'replica.sqlite'}")
    landing = LocalLanding(tiny_library / "alephseq")

    def ctx(run: RunRef) -> PhaseContext:
        return PhaseContext(store, run.scope(MIGRATION), settings, as_of)

    pipeline.extract(ctx(EXTRACT), engine, landing)
    done = pipeline.transform_and_validate(ctx(TRANSFORM), EXTRACT)
    write_run_summary(store, TRANSFORM.scope(MIGRATION), list(done.stages.values()))
    apply_fixes_step(ctx(FIX), "")
    pipeline.transform_and_validate(ctx(FIX.child(ChildStep.TRANSFORM)), FIX)
    pipeline.transform_and_validate(ctx(TEST_LOAD.child(ChildStep.TRANSFORM)), EXTRACT)
    package_step(ctx(TEST_LOAD), TEST_LOAD.child(ChildStep.TRANSFORM))
    pipeline.nightly_delta(ctx(NIGHT), engine, landing, datetime(2026, 11, 1, 18, 0, tzinfo=UTC))
    return {"store": store}


def _audit_transform(store: ArtifactStore) -> AuditReport:
    return audit(store, MIGRATION, TRANSFORM, reads={TRANSFORM: EXTRACT})


def _audit_test_load(store: ArtifactStore) -> AuditReport:
    transform = TEST_LOAD.child(ChildStep.TRANSFORM)
    return audit(
        store, MIGRATION, TEST_LOAD, children=[transform], reads={transform: EXTRACT, TEST_LOAD: transform}
    )


def _audit_fix_cycle(store: ArtifactStore) -> AuditReport:
    transform = FIX.child(ChildStep.TRANSFORM)
    return audit(store, MIGRATION, FIX, children=[transform], reads={FIX: EXTRACT, transform: FIX})


def _key(run: RunRef, stage: str, entity: str) -> str:
    return run.scope(MIGRATION).prefix(stage, entity) + MANIFEST_NAME


@contextmanager
def tampered(store: ArtifactStore, key: str, change: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """The manifest at ``key`` changed by ``change`` (on its JSON) while the block runs."""
    original = store.get_bytes(key)
    body = json.loads(original)
    change(body)
    store.put_bytes(key, json.dumps(body).encode("utf-8"), content_type="application/json")
    try:
        yield
    finally:
        store.put_bytes(key, original, content_type="application/json")


def _checks(report: AuditReport) -> set[str]:
    return {line.check for line in report.lines}


# --- consistent runs -------------------------------------------------------------------------


def test_a_consistent_extract_passes_with_a_line_per_source(runs: dict[str, Any]) -> None:
    report = audit(runs["store"], MIGRATION, EXTRACT)
    assert report.passed, report.problems()
    assert len(report.manifests) == 11  # one per entity (the pipeline makes no code inventory)
    assert {"Z303: recorded = in the parts", "Z308: recorded = in the parts"} <= _checks(report)


def test_a_consistent_transform_passes_and_its_chains_are_checked(runs: dict[str, Any]) -> None:
    report = _audit_transform(runs["store"])
    assert report.passed, report.problems()
    chains = {(line.entity, line.records_in) for line in report.lines if "committed = read in" in line.check}
    # bibs_with_items reads the delivered bibs (fewer than the raw ones); the others read raw stages.
    assert {e for e, _ in chains} == {
        "bibs",
        "holdings",
        "items",
        "patrons",
        "loans",
        "requests",
        "fines",
    }
    assert ("patrons", 200) in chains  # Z303 rows, not the 1 000 rows of the four patron tables
    assert any(line.check == "alma/bibs delivered = read in" for line in report.lines)


def test_a_consistent_test_load_passes_with_its_child_runs_and_the_package(runs: dict[str, Any]) -> None:
    report = _audit_test_load(runs["store"])
    assert report.passed, report.problems()
    assert report.runs == [str(TEST_LOAD), str(TEST_LOAD.child(ChildStep.TRANSFORM))]
    packaged = [line for line in report.lines if line.stage == "package" and "packaged" in line.check]
    assert {line.entity for line in packaged} >= {"delivery:bibs", "delivery:items", "delivery:patrons"}


def test_a_consistent_fix_cycle_and_night_pass(runs: dict[str, Any]) -> None:
    fix = _audit_fix_cycle(runs["store"])
    assert fix.passed, fix.problems()
    assert any("kept + dropped by fix rules" in line.check for line in fix.lines)
    night = audit(runs["store"], MIGRATION, NIGHT)
    assert night.passed, night.problems()
    assert any(line.check == f"raw/loans of {EXTRACT} committed = previous" for line in night.lines)


# --- tampered manifests ----------------------------------------------------------------------


def test_counts_that_do_not_add_up_fail_the_run_naming_the_gap(runs: dict[str, Any]) -> None:
    store = runs["store"]

    def three_more_in(body: dict[str, Any]) -> None:
        body["extra"]["records_in"] += 3

    with tampered(store, _key(TRANSFORM, "alma", "items"), three_more_in):
        with pytest.raises(AuditGapError) as failed:
            audit_step(store, TRANSFORM.scope(MIGRATION), reads={TRANSFORM: EXTRACT})
        message = str(failed.value)
        assert (
            "migration_transform/t1 alma/items (rejects counted by reason): 1003 in ≠ 974 out + "
            "26 rejected, difference +3" in message
        )
        report = json.loads(store.get_bytes(TRANSFORM.scope(MIGRATION).report_prefix() + "audit.json"))
        assert report["status"] == "failed" and report["gaps"] == 4  # three rejects views and the chain
        summary = json.loads(store.get_bytes(TRANSFORM.scope(MIGRATION).report_prefix() + "run_summary.json"))
        assert summary["audit"]["status"] == "failed" and summary["stages"]
    passed = audit_step(store, TRANSFORM.scope(MIGRATION), reads={TRANSFORM: EXTRACT})
    assert passed["status"] == "passed" and passed["gaps"] == 0


def test_records_lost_between_stages_fail_the_chain_and_the_parent_run(runs: dict[str, Any]) -> None:
    store = runs["store"]

    def five_fewer_committed(body: dict[str, Any]) -> None:
        part = next(f for f in body["files"] if f["kind"] == "part" and f["source"] == "BNU01")
        part["records"] -= 5
        body["extra"]["records_by_source"]["BNU01"] -= 5

    with tampered(store, _key(EXTRACT, "raw", "bibs"), five_fewer_committed):
        assert audit(store, MIGRATION, EXTRACT).passed  # consistent in itself
        [gap] = _audit_transform(store).gaps
        assert gap.describe() == (
            "migration_transform/t1 alma/bibs (raw/bibs of migration_extract/e1 committed = read in): "
            "295 in ≠ 300 out + 0 rejected, difference -5"
        )
        assert [g.entity for g in _audit_test_load(store).gaps] == ["bibs"]  # its transform read the same


def test_rejects_counted_but_not_listed_are_a_gap(runs: dict[str, Any]) -> None:
    store = runs["store"]

    def one_more_rejected(body: dict[str, Any]) -> None:
        body["extra"]["records_in"] += 1
        body["extra"]["rejected_by_reason"]["unknown_item"] += 1

    with tampered(store, _key(TRANSFORM, "alma", "loans"), one_more_rejected):
        gaps = {(g.entity, g.check, g.difference) for g in _audit_transform(store).gaps}
    assert gaps == {
        ("loans", "rejects recorded on the parts", 1),
        ("loans", "rejects listed in rejects files", 1),
        ("loans", f"raw/loans of {EXTRACT} committed = read in", -1),
    }


def test_a_night_whose_counts_disagree_with_its_baseline_and_change_list_fails(runs: dict[str, Any]) -> None:
    store = runs["store"]

    def two_deleted(body: dict[str, Any]) -> None:
        body["extra"].update(deleted=2, records=298)  # previous + new = tonight + deleted still holds

    with tampered(store, _key(NIGHT, "delta", "loans"), two_deleted):
        gaps = {
            (g.stage, g.entity, g.check, g.records_in, g.records_out)
            for g in audit(store, MIGRATION, NIGHT).gaps
        }
    assert gaps == {
        ("delta", "loans", "new + changed + deleted = in the change list", 2, 0),
        ("delta", "loans", "baseline/loans = tonight's records", 300, 298),
    }


def test_a_file_missing_under_the_run_and_an_unreadable_manifest_fail(runs: dict[str, Any]) -> None:
    store = runs["store"]
    part = store.manifest(_key(EXTRACT, "raw", "vendors")).parts()[0]
    body = store.get_bytes(part.key)
    store.client.delete_object(Bucket=store.bucket, Key=part.key)
    junk = EXTRACT.scope(MIGRATION).prefix("raw", "junk") + MANIFEST_NAME
    store.put_bytes(junk, b"{not json", content_type="application/json")
    try:
        with pytest.raises(AuditGapError) as failed:
            audit(store, MIGRATION, EXTRACT).check()
    finally:
        store.client.put_object(Bucket=store.bucket, Key=part.key, Body=body)
        store.client.delete_object(Bucket=store.bucket, Key=junk)
    assert f"a manifest lists {part.key}, which is not in the store" in str(failed.value)
    assert f"{store.uri(junk)} is not a readable manifest" in str(failed.value)
    assert audit(store, MIGRATION, EXTRACT).passed


# --- a fix cycle that drops patrons (hand-made manifests) ------------------------------------


def _commit(
    store: ArtifactStore,
    scope: RunScope,
    stage: str,
    entity: str,
    files: list[tuple[str, str, int]],
    extra: dict[str, Any],
) -> None:
    """Commit ``files`` (kind, source, records), each a real object under the run."""
    stored = []
    for i, (kind, source, records) in enumerate(files):
        key = scope.prefix(stage, entity) + f"{kind}-{source}-{i}"
        stored.append(store.put_bytes(key, b"x" * records, kind=kind, records=records, source=source))
    store.commit(scope, stage, entity, stored, extra=extra)


@pytest.mark.parametrize(("listed", "gap"), [(2, None), (1, 1)])
def test_patrons_dropped_by_a_fix_rule_are_kept_plus_dropped(
    store: ArtifactStore, listed: int, gap: int | None
) -> None:
    extract, fix = RunRef("migration_extract", "x"), RunRef("migration_fix_cycle", "f")
    counts = {"Z303": 10, "Z304": 10}
    _commit(
        store,
        extract.scope(MIGRATION),
        "raw",
        "patrons",
        [("part", "Z303", 10), ("part", "Z304", 10)],
        {"records_by_source": counts, "malformed_lines": 0},
    )
    # Two patrons dropped: 8 Z303 rows and 8 Z304 rows kept, one reject per patron.
    _commit(
        store,
        fix.scope(MIGRATION),
        "raw",
        "patrons",
        [("part", "Z303", 8), ("part", "Z304", 8), ("rejects", "", listed)],
        {"records_by_source": counts, "malformed_lines": 0, "fixes": {"rejects": 2}},
    )
    report = audit(store, MIGRATION, fix, reads={fix: extract})
    assert len(report.lines) == 2
    if gap is None:
        assert report.passed, report.problems()
    else:
        assert {(g.entity, g.records_in, g.records_out, g.rejected, g.difference) for g in report.gaps} == {
            ("patrons", 10, 8, 1, gap)
        }


def test_the_failure_names_at_most_ten_gaps_and_counts_the_rest() -> None:
    report = AuditReport(runs=["d/r"], lines=[Line("d/r", "alma", f"e{i}", "c", i + 1, 0) for i in range(12)])
    with pytest.raises(
        AuditGapError, match=r"12 gap\(s\): .*alma/e9 .*; and 2 more \(see the audit report\)$"
    ):
        report.check()
    assert AuditReport(runs=["d/r"], lines=[Line("d/r", "alma", "e", "c", 3, 2, 1)]).check().passed


def test_a_stored_file_the_audit_does_not_know_is_not_counted() -> None:
    # Index, issues and report files carry no records of the entity: only parts and rejects count.
    from aleph2alma.audit import _alma_lines
    from aleph2alma.storage import Manifest

    files = [
        StoredFile("k/p", 1, "s", 5, 1, "A"),
        StoredFile("k/r", 1, "s", 1, 0, "A", "rejects"),
        StoredFile("k/i", 1, "s", 99, 0, "A", "index"),
    ]
    m = Manifest("m", "d", "r", "alma", "e", files, {"records_in": 6, "rejected_by_reason": {"x": 1}})
    assert all(line.balanced for line in _alma_lines("d/r", m))


def test_counts_that_are_not_numbers_are_a_problem_not_a_traceback(store: ArtifactStore) -> None:
    run = RunRef("migration_transform", "bad")
    _commit(store, run.scope(MIGRATION), "alma", "items", [("part", "Z30", 3)], {"records_in": "three"})
    report = audit(store, MIGRATION, run)
    assert not report.passed
    assert report.problems() == [
        "migration_transform/bad: a manifest's counts cannot be read: "
        "invalid literal for int() with base 10: 'three'"
    ]
