"""Steps of the cutover: preflight, the fix rules on both freezes' extracts, the two packages,
what changed since the baseline, freeze violations, the freeze windows and the go-live marker.

The cutover extracts and transforms twice, as child runs: the **inventory** at the
technical-services freeze (``ChildStep.INVENTORY_EXTRACT`` / ``INVENTORY_TRANSFORM``), and the
**final snapshot** at the fulfillment freeze (``ChildStep.EXTRACT`` / ``TRANSFORM``: what
post-go-live reads as Aleph's last state). Each extract gets the signed-off fix rules applied
into ``RunRef.fixed`` before its transform, as a fix-cycle iteration does: the cutover delivers
what the library signed off, with the same rules. The inventory package holds bibs, holdings,
items and the P2E file; the fulfillment package patrons, loans, requests and fines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from aleph2alma import state
from aleph2alma.errors import PermanentError
from aleph2alma.gate_answers import answered_at, answered_by
from aleph2alma.phases.context import PhaseContext
from aleph2alma.runs import EXTRACT_DAG, ChildStep, RunRef

if TYPE_CHECKING:
    from aleph2alma.cutover.changes import ChangesSinceBaseline
    from aleph2alma.cutover.freeze import FreezeViolations
    from aleph2alma.cutover.preflight import Preflight
    from aleph2alma.delivery.package import PackageResult
    from aleph2alma.refs import FixedExtract, Reconciliation

Package = Literal["inventory", "fulfillment"]
PACKAGES: dict[Package, tuple[str, ...]] = {
    "inventory": ("bibs", "holdings", "items", "p2e", "bibs_with_items"),
    "fulfillment": ("patrons", "loans", "requests", "fines"),
}
FROZEN = ("bibs", "holdings", "items", "orders", "vendors", "budgets")
"""What the technical-services freeze stops; patrons change in it by right (circulation goes on)."""


class PreflightFailed(PermanentError):
    """The migration is not ready to freeze: the message lists each failed check and its fix."""


class GoLiveRefused(PermanentError):
    """Go was answered, but go-live is blocked (freeze violations past the threshold, or the
    migration already live from another cutover run)."""


def _within(ctx: PhaseContext, run: RunRef) -> PhaseContext:
    """The same context writing under ``run`` (a scope of this cutover run)."""
    return dataclasses.replace(ctx, scope=ctx.scope_of(run))


def preflight_step(ctx: PhaseContext, extract_run: str, alma: Any | None) -> Preflight:
    """The preflight checks (``cutover.preflight``) on the extract named, else the latest full one,
    and on Alma's configuration through ``alma``; fails permanently, naming every failed check and
    what to do, unless all pass."""
    from aleph2alma.cutover.preflight import preflight

    result = preflight(ctx, state.extract_to_read(ctx.store, ctx.migration_id, extract_run), alma)
    if not result.passed:
        failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.passed]
        raise PreflightFailed(
            f"not ready to freeze ({len(failed)} of {len(result.checks)} checks failed): "
            + " | ".join(failed)
            + f". Report: {result.report_html}. Fix these, then clear the preflight task."
        )
    return result


def fix_extract_step(ctx: PhaseContext, extract: ChildStep) -> FixedExtract:
    """The ``extract`` child with the migration's fix rules applied, committed as ``raw/`` under
    ``ctx.run.fixed(extract)``: what the transform of that freeze reads."""
    from aleph2alma.fixes.extract import fix_extract

    return fix_extract(_within(ctx, ctx.run.fixed(extract)), ctx.run.child(extract))


def package_step(ctx: PhaseContext, transform: RunRef, package: Package) -> PackageResult:
    """One of the cutover's two packages (``package/<inventory|fulfillment>/``), from ``transform``."""
    from aleph2alma.delivery.package import build_package, package_name
    from aleph2alma.delivery.staged import transform_manifests

    manifests = transform_manifests(ctx, transform, PACKAGES[package])
    return build_package(
        ctx.store,
        ctx.scope,
        manifests,
        ctx.form_dir,
        ctx.migration_id,
        name=f"{package_name(ctx.migration_id, ctx.scope)}_{package}",
        entity=package,
    )


def baseline_extract(ctx: PhaseContext) -> RunRef:
    """The extract the signed-off fix-cycle iteration was built from."""
    from aleph2alma.cutover import CutoverInputError

    recorded = state.baseline(ctx.store, ctx.migration_id)
    if not recorded:
        raise CutoverInputError(
            "no fix-cycle iteration is signed off: run migration_fix_cycle and approve its sign_off gate"
        )
    if not recorded.get("extract"):
        raise CutoverInputError(
            f"the baseline (iteration {recorded.get('iteration')}) was recorded without its extract: sign "
            "off a fix-cycle iteration again (its sign-off now records the extract it fixed)"
        )
    return RunRef.parse(str(recorded["extract"]), EXTRACT_DAG)


def changes_step(ctx: PhaseContext) -> ChangesSinceBaseline:
    """Records new, changed and deleted, and codes new, between the baseline's extract and the final
    snapshot (``cutover.changes``)."""
    from aleph2alma.cutover.changes import changes_since_baseline

    return changes_since_baseline(ctx, baseline_extract(ctx), ctx.run.child(ChildStep.EXTRACT))


def freeze_violations_step(ctx: PhaseContext, freeze_answer: Mapping[str, Any]) -> FreezeViolations:
    """Bibs, holdings, items and acquisitions records of the final snapshot that Aleph stamped as
    changed since the technical-services freeze began: when its gate was approved."""
    from aleph2alma.cutover.freeze import freeze_violations

    return freeze_violations(
        ctx,
        ctx.run.child(ChildStep.EXTRACT),
        answered_at(freeze_answer),
        ctx.settings.cutover.freeze_violation_threshold,
        only=FROZEN,
    )


def freeze_window(began: Mapping[str, Any], delivered_at: str) -> dict[str, Any]:
    """From a freeze gate's approval to its delivery: the time the library was frozen waiting for us."""
    start = answered_at(began)
    end = datetime.fromisoformat(delivered_at)
    return {
        "freeze_began": start.isoformat(),
        "delivered": end.isoformat(),
        "seconds": round((end - start).total_seconds(), 1),
        "approved_by": answered_by(began),
    }


def delivered_by(ctx: PhaseContext, package: Package, fulfillment_by: str) -> str:
    """What delivers this package: ``generic`` (our delivery), ``autoextract`` (the inventory, in
    that mode), ``api`` (the fulfillment, loaded through the Alma API)."""
    if package == "inventory":
        return ctx.settings.delivery.mode
    return "api" if fulfillment_by == "api" else "generic"


def delivered_elsewhere(ctx: PhaseContext, package: Package, fulfillment_by: str) -> str:
    """Why our delivery task does not deliver this package ("" when it does)."""
    return {
        "generic": "",
        "autoextract": "delivery mode is autoextract: Ex Libris' AutoExtract delivers (autoextract group)",
        "api": "Fulfillment by api: loaded through the Alma API (api_load)",
    }[delivered_by(ctx, package, fulfillment_by)]


def delivered_now(ctx: PhaseContext, package: Package, fulfillment_by: str) -> dict[str, str]:
    """The end of a freeze window: what delivered the package, and when (UTC)."""
    return {
        "package": package,
        "by": delivered_by(ctx, package, fulfillment_by),
        "at": datetime.now(UTC).isoformat(),
    }


def blockers(ctx: PhaseContext, violations: FreezeViolations) -> list[str]:
    """Why go-live may not happen, with what to do; [] when nothing blocks. The threshold is read
    now: raising ``[cutover] freeze_violation_threshold`` and clearing ``go_live`` lets it through."""
    threshold = ctx.settings.cutover.freeze_violation_threshold
    if violations.total <= threshold:
        return []
    return [
        f"{violations.total:,} bib, holdings, item or acquisitions records were changed in Aleph after "
        f"the technical-services freeze began ({violations.freeze_started.isoformat()}); {threshold:,} "
        f"allowed by [cutover] freeze_violation_threshold. Report: {violations.report_html}. Redo them in "
        "Alma (or run the cutover again), then raise the threshold in migration.toml and clear go_live"
    ]


def go_live_step(
    ctx: PhaseContext,
    answer: Mapping[str, Any],
    violations: FreezeViolations,
    reconciliation: Reconciliation,
    windows: Mapping[str, Any],
) -> dict[str, Any]:
    """Go was answered: write the go-live marker (``state/go_live.json``: who, when, which runs),
    unless something blocks it. A retry of the same run rewrites the same marker; another cutover
    run cannot mark a live migration live again."""
    refused = blockers(ctx, violations)
    if refused:
        raise GoLiveRefused("go-live refused: " + " | ".join(refused))
    earlier = state.go_live(ctx.store, ctx.migration_id)
    if earlier and earlier.get("cutover_run") != str(ctx.run):
        raise GoLiveRefused(
            f"migration {ctx.migration_id!r} is already live since {earlier.get('went_live_at')} "
            f"(cutover run {earlier.get('cutover_run')}); a migration goes live once"
        )
    run = ctx.run
    marker = {
        "migration_id": ctx.migration_id,
        "cutover_run": str(run),
        "went_live_at": answered_at(answer).isoformat(),
        "approved_by": answered_by(answer),
        "runs": {
            "inventory_extract": str(run.child(ChildStep.INVENTORY_EXTRACT)),
            "inventory_transform": str(run.child(ChildStep.INVENTORY_TRANSFORM)),
            "final_extract": str(run.child(ChildStep.EXTRACT)),
            "final_transform": str(run.child(ChildStep.TRANSFORM)),
        },
        "baseline": state.baseline(ctx.store, ctx.migration_id),
        "reconciliation": {
            "all_accounted": reconciliation.all_accounted,
            "report_html": reconciliation.report_html,
        },
        "freeze_violations": violations.total,
        "freeze_windows": dict(windows),
    }
    marker["uri"] = state.record_go_live(ctx.store, ctx.migration_id, marker)
    return marker


def record_decision(
    ctx: PhaseContext, answer: Mapping[str, Any] | None, marker: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The go / no-go decision added to the run summary: Go with its marker, or No-Go."""
    from aleph2alma.gate_answers import approved

    answer = answer or {}
    decided = {
        "decision": "go" if approved(answer) and marker else "no-go",
        "answered_by": answered_by(answer),
        "answered_at": answered_at(answer).isoformat(),
        "go_live": dict(marker) if marker else None,
    }
    if not state.amend_run_summary(ctx.store, ctx.scope, {"go_no_go": decided}):
        state.write_run_summary(ctx.store, ctx.scope, [], extra={"go_no_go": decided})
    if answer:
        _record_go_live_node(ctx, answer, str(decided["decision"]))
    return decided


def _record_go_live_node(ctx: PhaseContext, answer: Mapping[str, Any], decision: str) -> None:
    """The plan's go-live key node: reached on Go with its marker written; a No-Go is recorded too."""
    from aleph2alma.plan.actuals import record_node
    from aleph2alma.plan.catalog import KeyNode
    from aleph2alma.plan.gate_owners import answer_actual

    actual = answer_actual(KeyNode.GO_LIVE, ctx.scope.dag_id, ctx.scope.run_id, "go_no_go", answer, decision)
    record_node(ctx.store, ctx.migration_id, actual)


def fulfillment_api_load_step(ctx: PhaseContext, transform: RunRef, client: Any) -> dict[str, Any]:
    """The final snapshot's patrons (``POST /users`` unless the primary id exists), then their
    loans, requests and fees, through the Alma API; Alma's refusals become rejects with its code
    under ``load/<entity>/``."""
    from aleph2alma.delivery.staged import api_load, api_load_patrons

    patrons = api_load_patrons(ctx, transform, client, ctx.settings.cutover.external_id)
    return {"patrons": patrons, **api_load(ctx, transform, client)}
