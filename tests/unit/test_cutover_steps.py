"""The cutover DAG's own steps: which run delivers what, the freeze windows, what blocks go-live,
the go-live marker and the go / no-go decision, the cutover thresholds, the audit of two packages.

The gate answers are what ``ApprovalOperator`` returns (``chosen_options``, ``responded_by_user``,
``responded_at``); every time is fixed: no test reads the clock.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aleph2alma import settings as settings_mod
from aleph2alma import state
from aleph2alma.audit import audit
from aleph2alma.cutover.freeze import FreezeViolations
from aleph2alma.phases.context import PhaseContext
from aleph2alma.phases.cutover import (
    GoLiveRefused,
    blockers,
    delivered_elsewhere,
    freeze_window,
    go_live_step,
    record_decision,
)
from aleph2alma.reconcile.against_alma import transforms_of
from aleph2alma.refs import Reconciliation
from aleph2alma.runs import CUTOVER_DAG, EXTRACT_DAG, TEST_LOAD_DAG, TRANSFORM_DAG, ChildStep, RunRef
from aleph2alma.settings import AutoExtractSettings, AutoExtractStep
from aleph2alma.storage import ArtifactStore, RunScope
from aleph2alma.validate.rules import RulesConfigError, rules_for_migration

FREEZE_BEGAN = datetime(2026, 11, 10, 7, 0, tzinfo=UTC)
GO = {
    "chosen_options": ["Approve"],
    "responded_by_user": {"id": "7", "name": "wang.li"},
    "responded_at": "2026-11-14T02:30:00+00:00",
}
NO_GO = {**GO, "chosen_options": ["Reject"]}


def _ctx(
    store: ArtifactStore, run_id: str = "cutover_1", threshold: int = 0, mode: str = "generic"
) -> PhaseContext:
    loaded = settings_mod.load("demo")
    delivery = loaded.delivery
    if mode == "autoextract":
        step = AutoExtractStep(name="extract", command="./extract.sh", expected_outputs=("*.mrc",))
        auto = AutoExtractSettings(workdir="/exlibris/aleph", output_dir="/exlibris/out", steps=(step,))
        delivery = replace(delivery, mode=mode, autoextract=auto)
    settings = replace(
        loaded, cutover=replace(loaded.cutover, freeze_violation_threshold=threshold), delivery=delivery
    )
    return PhaseContext(store, RunScope("demo", CUTOVER_DAG, run_id), settings)


def _violations(total: int, threshold: int = 0) -> FreezeViolations:
    return FreezeViolations(
        cutover_extract=RunRef(EXTRACT_DAG, "cutover_1__extract"),
        freeze_started=FREEZE_BEGAN,
        time_zone="Asia/Shanghai",
        from_day=20261110,
        from_minute=202611101500,
        threshold=threshold,
        total=total,
        blocking=total > threshold,
        entities={},
        not_covered={},
        report_html="s3://b/demo/reports/migration_cutover/cutover_1/cutover/freeze/report.html",
        report_json="s3://b/demo/reports/migration_cutover/cutover_1/cutover/freeze/report.json",
    )


RECONCILED = Reconciliation(report_html="s3://b/rec.html", all_accounted=True, totals={}, entities={})
WINDOWS = {"technical_services": {"seconds": 1200.0}, "fulfillment": {"seconds": 300.0}}


# --- runs --------------------------------------------------------------------------------------


def test_the_cutovers_child_runs_and_fixed_extracts_are_named_after_it() -> None:
    run = RunRef(CUTOVER_DAG, "manual__2026-11-10")
    assert run.child(ChildStep.INVENTORY_EXTRACT) == RunRef(
        EXTRACT_DAG, "manual__2026-11-10__inventory_extract"
    )
    assert run.child(ChildStep.INVENTORY_TRANSFORM) == RunRef(
        TRANSFORM_DAG, "manual__2026-11-10__inventory_transform"
    )
    assert run.fixed(ChildStep.EXTRACT) == RunRef(CUTOVER_DAG, "manual__2026-11-10__extract_fixed")
    assert (
        RunRef.fixed_template(CUTOVER_DAG, ChildStep.EXTRACT)
        == "migration_cutover/{{ run_id }}__extract_fixed"
    )


def test_a_cutover_reconciles_the_inventory_it_delivered_at_the_first_freeze() -> None:
    cutover = RunRef(CUTOVER_DAG, "c1")
    transforms = transforms_of(cutover)
    assert {transforms[e] for e in ("bibs", "holdings", "items")} == {
        cutover.child(ChildStep.INVENTORY_TRANSFORM)
    }
    assert {transforms[e] for e in ("patrons", "loans", "requests", "fines")} == {
        cutover.child(ChildStep.TRANSFORM)
    }
    test_load = RunRef(TEST_LOAD_DAG, "t1")
    assert set(transforms_of(test_load).values()) == {test_load.child(ChildStep.TRANSFORM)}


# --- delivery and the freeze windows -------------------------------------------------------------


@pytest.mark.parametrize(
    ("package", "mode", "fulfillment_by", "elsewhere"),
    [
        ("inventory", "generic", "api", ""),
        ("inventory", "autoextract", "files", "AutoExtract"),
        ("fulfillment", "autoextract", "files", ""),
        ("fulfillment", "generic", "api", "Alma API"),
    ],
)
def test_our_delivery_runs_unless_autoextract_or_the_api_delivers(
    store: ArtifactStore, package: str, mode: str, fulfillment_by: str, elsewhere: str
) -> None:
    why = delivered_elsewhere(_ctx(store, mode=mode), package, fulfillment_by)  # type: ignore[arg-type]
    assert (elsewhere in why) if elsewhere else why == ""


def test_a_freeze_window_runs_from_the_gates_approval_to_the_delivery() -> None:
    began = {**GO, "responded_at": "2026-11-10T07:00:00Z"}
    window = freeze_window(began, "2026-11-10T07:21:30.500000+00:00")
    assert window["seconds"] == 1290.5
    assert window["approved_by"] == "wang.li"
    assert window["freeze_began"] == "2026-11-10T07:00:00+00:00"


# --- go-live -----------------------------------------------------------------------------------


def test_go_writes_the_marker_with_who_when_and_which_runs(store: ArtifactStore) -> None:
    ctx = _ctx(store)
    marker = go_live_step(ctx, GO, _violations(0), RECONCILED, WINDOWS)
    recorded = state.go_live(store, "demo")
    assert recorded is not None and recorded["cutover_run"] == "migration_cutover/cutover_1"
    assert (recorded["approved_by"], recorded["went_live_at"]) == ("wang.li", "2026-11-14T02:30:00+00:00")
    assert recorded["runs"] == {
        "inventory_extract": "migration_extract/cutover_1__inventory_extract",
        "inventory_transform": "migration_transform/cutover_1__inventory_transform",
        "final_extract": "migration_extract/cutover_1__extract",
        "final_transform": "migration_transform/cutover_1__transform",
    }
    assert recorded["freeze_windows"] == WINDOWS and marker["uri"].endswith("demo/state/go_live.json")
    go_live_step(ctx, GO, _violations(0), RECONCILED, WINDOWS)  # a retry rewrites the same marker


def test_violations_past_the_threshold_refuse_go_until_the_threshold_is_raised(store: ArtifactStore) -> None:
    found = _violations(3)
    with pytest.raises(
        GoLiveRefused, match=r"3 bib, holdings, item or acquisitions records.*0 allowed.*clear go_live"
    ):
        go_live_step(_ctx(store), GO, found, RECONCILED, WINDOWS)
    assert state.go_live(store, "demo") is None
    assert blockers(_ctx(store, threshold=3), found) == []  # read when the task runs again
    go_live_step(_ctx(store, threshold=3), GO, found, RECONCILED, WINDOWS)
    assert state.go_live(store, "demo") is not None


def test_a_live_migration_is_not_marked_live_again_by_another_cutover(store: ArtifactStore) -> None:
    go_live_step(_ctx(store, "cutover_1"), GO, _violations(0), RECONCILED, WINDOWS)
    with pytest.raises(GoLiveRefused, match="already live since 2026-11-14T02:30:00.*cutover_1"):
        go_live_step(_ctx(store, "cutover_2"), GO, _violations(0), RECONCILED, WINDOWS)
    assert state.go_live(store, "demo")["cutover_run"] == "migration_cutover/cutover_1"


def test_the_decision_goes_into_the_run_summary_go_or_no_go(store: ArtifactStore) -> None:
    ctx = _ctx(store)
    key = ctx.scope.report_prefix() + "run_summary.json"
    store.put_bytes(key, json.dumps({"freeze_windows": WINDOWS}).encode(), content_type="application/json")
    assert record_decision(ctx, NO_GO, None)["decision"] == "no-go"
    summary = json.loads(store.get_bytes(key))
    assert summary["go_no_go"]["decision"] == "no-go" and summary["freeze_windows"] == WINDOWS
    decided = record_decision(ctx, GO, {"cutover_run": "migration_cutover/cutover_1"})
    assert (decided["decision"], decided["answered_by"]) == ("go", "wang.li")
    assert (
        json.loads(store.get_bytes(key))["go_no_go"]["go_live"]["cutover_run"]
        == "migration_cutover/cutover_1"
    )


# --- the cutover's thresholds --------------------------------------------------------------------


def _rules_dir(tmp_path: Path, rules: str, cutover: str | None) -> Path:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "rules.toml").write_text(rules)
    if cutover is not None:
        (tmp_path / "m" / "rules.cutover.toml").write_text(cutover)
    return tmp_path


def test_cutover_thresholds_go_on_top_of_the_test_loads(tmp_path: Path) -> None:
    root = _rules_dir(
        tmp_path,
        "[rules.unmapped_location]\nmax_percent = 1.0\n[rules.invalid_utf8]\nmax_count = 100\n",
        "[rules.unmapped_location]\nmax_count = 0\n",
    )
    test_load, cutover = rules_for_migration("m", root), rules_for_migration("m", root, "cutover")
    assert test_load["unmapped_location"].threshold.max_percent == 1.0
    assert cutover["unmapped_location"].threshold.max_count == 0
    assert cutover["unmapped_location"].threshold.max_percent is None  # the section replaces the threshold
    assert cutover["invalid_utf8"] == test_load["invalid_utf8"]  # not named: as rules.toml sets it


def test_without_a_cutover_file_the_cutover_uses_the_test_loads_thresholds(tmp_path: Path) -> None:
    root = _rules_dir(tmp_path, "[rules.unmapped_location]\nmax_percent = 1.0\n", None)
    assert rules_for_migration("m", root, "cutover") == rules_for_migration("m", root)
    with pytest.raises(RulesConfigError, match="unknown threshold set 'go_live'"):
        rules_for_migration("m", root, "go_live")


def test_a_bad_cutover_file_names_itself(tmp_path: Path) -> None:
    root = _rules_dir(tmp_path, "", "[rules.no_such_rule]\nmax_count = 1\n")
    with pytest.raises(RulesConfigError, match=r"rules\.cutover\.toml.*no_such_rule"):
        rules_for_migration("m", root, "cutover")


# --- the audit of a run with two packages ------------------------------------------------------


def _alma_stage(store: ArtifactStore, run: RunRef, entity: str, records: int) -> str:
    scope = run.scope("demo")
    part = store.put_bytes(
        scope.prefix("alma", entity) + "part-00000.jsonl", b"x\n" * records, records=records, kind="part"
    )
    return store.commit(scope, "alma", entity, [part], extra={"records_in": records})


def _package(store: ArtifactStore, run: RunRef, entity: str, counts: dict[str, tuple[str, int]]) -> None:
    scope = run.scope("demo")
    zipped = store.put_bytes(scope.prefix("package", entity) + "p.zip", b"zip", kind="part")
    store.commit(
        scope,
        "package",
        entity,
        [zipped],
        extra={
            "sources": {name: uri for name, (uri, _) in counts.items()},
            "counts": {
                name: {"records": n, "records_in": n, "rejected": 0} for name, (_, n) in counts.items()
            },
        },
    )


def _package_lines(found: Any) -> dict[str, tuple[int, int]]:
    return {
        line.entity: (line.records_in, line.records_out)
        for line in found.lines
        if line.stage == "package" and "delivered = packaged" in line.check
    }


def test_each_package_is_checked_against_the_transform_it_names(store: ArtifactStore) -> None:
    cutover = RunRef(CUTOVER_DAG, "c1")
    inventory, final = cutover.child(ChildStep.INVENTORY_TRANSFORM), cutover.child(ChildStep.TRANSFORM)
    items_then = _alma_stage(store, inventory, "items", 5)
    _alma_stage(store, final, "items", 6)  # an item added during the freeze: not in the inventory
    patrons = _alma_stage(store, final, "patrons", 4)
    _package(store, cutover, "inventory", {"items": (items_then, 5)})
    _package(store, cutover, "fulfillment", {"patrons": (patrons, 4)})
    found = audit(store, "demo", cutover)
    assert _package_lines(found) == {"inventory:items": (5, 5), "fulfillment:patrons": (4, 4)}
    assert found.passed, found.problems()

    _package(store, cutover, "fulfillment", {"patrons": (patrons, 3)})
    assert not audit(store, "demo", cutover).passed
