"""The control room's view of a migration: the plan against what happened, and where the data stands.

Built from S3 (the plan's actuals, run summaries, validation reports, fix-cycle diffs, the
nightly delta's committed nights) and, on the control-room page, from Airflow's API (the
latest runs whatever their state, the gates waiting for an answer): ``AirflowView``. The
status report a phase run writes has no Airflow view: it shows what S3 holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from aleph2alma import state
from aleph2alma.alerts import check_timezone
from aleph2alma.plan.actuals import NodeActual, RunEnded, node_actuals, reached_at, runs_ended
from aleph2alma.plan.catalog import KEY_NODES, PHASES, PhaseSpec, Text, gate_spec
from aleph2alma.plan.model import Plan, Window, zone_name
from aleph2alma.runs import (
    CUTOVER_DAG,
    FIX_CYCLE_DAG,
    NIGHTLY_DELTA_DAG,
    TEST_LOAD_DAG,
    ChildStep,
    RunRef,
)
from aleph2alma.storage import ArtifactStore, RunScope

TREND_SEVERITIES = ("FIX", "REVIEW")
LocalDay = Callable[[datetime | None], date | None]
"""A UTC time → the plan's calendar day (its time zone)."""
NIGHTS_SHOWN = 30


@dataclass(frozen=True)
class RunInfo:
    dag_id: str
    run_id: str
    state: str
    started_at: datetime | None
    ended_at: datetime | None = None


@dataclass(frozen=True)
class OpenGate:
    dag_id: str
    run_id: str
    task_id: str
    subject: str
    assigned: tuple[str, ...]
    since: datetime | None
    label: Text | None = None
    role: str = ""


class AirflowView(Protocol):
    """What the page reads from Airflow's API, as the signed-in user may see it."""

    def latest_runs(self, dag_id: str, limit: int) -> list[RunInfo]: ...

    def open_gates(self) -> list[OpenGate]: ...


@dataclass(frozen=True)
class PhaseRow:
    key: str
    label: Text
    planned: Window | None
    actual_start: date | None
    actual_end: date | None
    latest: RunInfo | None
    runs: int
    slip_days: int | None
    """Days the phase ends (or, still open past its planned end, has run) after its plan; negative: early."""

    @property
    def status(self) -> str:
        if self.actual_end:
            return "done"
        return "in_progress" if self.actual_start else "not_started"


@dataclass(frozen=True)
class NodeRow:
    key: str
    label: Text
    phase: str
    planned: date | None
    actual: date | None
    by: str
    outcome: str
    slip_days: int | None

    @property
    def status(self) -> str:
        if self.actual:
            return "late" if (self.slip_days or 0) > 0 else "done"
        return "overdue" if (self.slip_days or 0) > 0 else "open"


@dataclass(frozen=True)
class EntityCount:
    entity: str
    source: int
    delivered: int
    rejected: int
    in_alma: int | None


@dataclass(frozen=True)
class FixTrend:
    iterations: list[str]
    """Labels, oldest first: ``1``, ``2`` … (the fix cycle's iteration)."""
    rules: dict[str, tuple[str, list[int]]]
    """Rule id → (severity, its issue count per iteration)."""


@dataclass(frozen=True)
class Night:
    run_id: str
    watermark: datetime
    volumes: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.volumes.values())


@dataclass(frozen=True)
class RoleEffort:
    role: str
    title: Text
    gates_answered: int
    issues_fixed: int


@dataclass
class ControlRoom:
    migration_id: str
    title: Text
    today: date
    timezone: str
    has_plan: bool
    phases: list[PhaseRow]
    nodes: list[NodeRow]
    counts: list[EntityCount]
    counts_run: str
    fix_trend: FixTrend
    nights: list[Night]
    night_failures: list[RunInfo]
    effort: list[RoleEffort]
    open_gates: list[OpenGate] = field(default_factory=list)
    live: bool = False
    """Built with Airflow's API (the page), not from S3 alone (the report)."""

    @property
    def slipped(self) -> list[NodeRow]:
        return [n for n in self.nodes if n.status in ("late", "overdue")]


def build(
    store: ArtifactStore,
    migration_id: str,
    plan: Plan | None,
    today: date,
    airflow: AirflowView | None = None,
) -> ControlRoom:
    zone = zone_name(plan)
    tz = check_timezone(zone)

    def local(when: datetime | None) -> date | None:
        return when.astimezone(tz).date() if when else None

    actuals = node_actuals(store, migration_id)
    ended = runs_ended(store, migration_id)
    latest_live = {p.dag_id: airflow.latest_runs(p.dag_id, 5) for p in PHASES} if airflow else {}
    phases = [
        _phase_row(p, plan, actuals, ended, latest_live.get(p.dag_id, []), today, local) for p in PHASES
    ]
    nodes = [_node_row(n.node, n.label, str(n.phase), plan, actuals, today, local) for n in KEY_NODES]
    counts_run, counts = _latest_counts(store, migration_id, ended)
    gates = airflow.open_gates() if airflow else []
    return ControlRoom(
        migration_id=migration_id,
        title=plan.title_text() if plan else Text(migration_id, migration_id),
        today=today,
        timezone=zone,
        has_plan=plan is not None,
        phases=phases,
        nodes=[n for n in nodes if plan is None or n.planned or n.actual],
        counts=counts,
        counts_run=counts_run,
        fix_trend=_fix_trend(store, migration_id, ended),
        nights=_nights(store, migration_id),
        night_failures=[
            r
            for r in (airflow.latest_runs(NIGHTLY_DELTA_DAG, NIGHTS_SHOWN) if airflow else [])
            if r.state == "failed"
        ],
        effort=_effort(store, migration_id, plan, actuals, ended) if plan else [],
        open_gates=[_owned(g, plan) for g in gates],
        live=airflow is not None,
    )


def _phase_row(
    spec: PhaseSpec,
    plan: Plan | None,
    actuals: list[NodeActual],
    ended: list[RunEnded],
    live: list[RunInfo],
    today: date,
    local: LocalDay,
) -> PhaseRow:
    mine = [r for r in ended if r.dag_id == spec.dag_id]
    starts = [r.started_at for r in mine] + [r.started_at for r in live if r.started_at]
    closed = reached_at(actuals, spec.closed_by)
    actual_start = local(min(starts)) if starts else None
    actual_end = local(closed.at) if closed else None
    planned = plan.phases.get(spec.phase) if plan else None
    slip = None
    if planned and actual_end:
        slip = (actual_end - planned.end).days
    elif planned and today > planned.end:
        slip = (today - planned.end).days
    latest = live[0] if live else (_as_info(mine[-1]) if mine else None)
    return PhaseRow(str(spec.phase), spec.label, planned, actual_start, actual_end, latest, len(mine), slip)


def _as_info(run: RunEnded) -> RunInfo:
    return RunInfo(run.dag_id, run.run_id, run.state, run.started_at, run.ended_at)


def _node_row(
    node: str, label: Text, phase: str, plan: Plan | None, actuals: list[NodeActual], today: date, local: Any
) -> NodeRow:
    planned = plan.key_nodes.get(node) if plan else None  # type: ignore[call-overload]
    hit = reached_at(actuals, node)
    actual = local(hit.at) if hit else None
    slip = None
    if planned and actual:
        slip = (actual - planned).days
    elif planned and today > planned:
        slip = (today - planned).days
    by = (hit.by_name or hit.by_id) if hit else ""
    return NodeRow(node, label, phase, planned, actual, by, hit.outcome if hit else "", slip)


def _summary(store: ArtifactStore, scope: RunScope) -> dict[str, Any] | None:
    key = scope.report_prefix() + "run_summary.json"
    return json.loads(store.get_bytes(key)) if store.exists(key) else None


def _latest_counts(
    store: ArtifactStore, migration_id: str, ended: list[RunEnded]
) -> tuple[str, list[EntityCount]]:
    """Source → delivered → rejected → in Alma per entity, from the latest reconciled test load or cutover."""
    for run in sorted(
        (r for r in ended if r.dag_id in (TEST_LOAD_DAG, CUTOVER_DAG)), key=lambda r: r.ended_at, reverse=True
    ):
        summary = _summary(store, RunScope(migration_id, run.dag_id, run.run_id)) or {}
        entities = (summary.get("reconciliation") or {}).get("entities") or {}
        if entities and all("source" in e for e in entities.values()):
            counts = [
                EntityCount(name, int(e["source"]), int(e["delivered"]), int(e["rejected"]), e.get("in_alma"))
                for name, e in sorted(entities.items())
            ]
            return f"{run.dag_id}/{run.run_id}", counts
    return "", []


def _fix_runs(ended: list[RunEnded]) -> list[RunEnded]:
    return [r for r in ended if r.dag_id == FIX_CYCLE_DAG]


def _fix_trend(store: ArtifactStore, migration_id: str, ended: list[RunEnded]) -> FixTrend:
    """Per FIX / REVIEW rule, its issues in each iteration's transform, from iteration 0: the last
    test load before the first iteration (where the fix cycles start from)."""
    labels: list[str] = []
    per_rule: dict[str, tuple[str, dict[int, int]]] = {}
    for label, run in _iterations(ended):
        transform = RunRef(run.dag_id, run.run_id).child(ChildStep.TRANSFORM).scope(migration_id)
        key = transform.report_prefix() + "validation/report.json"
        if not store.exists(key):
            continue
        labels.append(label)
        for rule, found in (json.loads(store.get_bytes(key)).get("rules") or {}).items():
            severity = str(found.get("severity") or "")
            if severity in TREND_SEVERITIES:
                per_rule.setdefault(rule, (severity, {}))[1][len(labels) - 1] = int(found.get("count") or 0)
    rules = {
        rule: (severity, [counts.get(i, 0) for i in range(len(labels))])
        for rule, (severity, counts) in sorted(per_rule.items())
        if any(counts.values())
    }
    return FixTrend(labels, rules)


def _iterations(ended: list[RunEnded]) -> list[tuple[str, RunEnded]]:
    fixes = _fix_runs(ended)
    if not fixes:
        return []
    before = [r for r in ended if r.dag_id == TEST_LOAD_DAG and r.ended_at <= fixes[0].started_at]
    start = [("0", before[-1])] if before else []
    return start + [(str(r.params.get("iteration") or i + 1), r) for i, r in enumerate(fixes)]


def _nights(store: ArtifactStore, migration_id: str) -> list[Night]:
    out = []
    for night in state.nights(store, migration_id)[-NIGHTS_SHOWN:]:
        summary = _summary(store, night.run.scope(migration_id)) or {}
        volumes = {
            entity: sum(int(counts.get(k) or 0) for k in ("new", "changed", "deleted"))
            for entity, counts in (summary.get("delta") or {}).items()
        }
        out.append(Night(night.run.run_id, night.watermark, volumes))
    return out


def _effort(
    store: ArtifactStore, migration_id: str, plan: Plan, actuals: list[NodeActual], ended: list[RunEnded]
) -> list[RoleEffort]:
    answered: dict[str, int] = {}
    for a in actuals:
        if a.by_id:
            for role in plan.roles_of(a.by_id):
                answered[role] = answered.get(role, 0) + 1
    fixed: dict[str, int] = {}
    for run in _fix_runs(ended):
        key = RunScope(migration_id, FIX_CYCLE_DAG, run.run_id).report_prefix() + "iteration_diff/diff.json"
        if not store.exists(key):
            continue
        for rule in (json.loads(store.get_bytes(key)).get("rules") or {}).values():
            owner = plan.data_owners.get(str(rule.get("entity") or ""))
            if owner:
                fixed[owner] = fixed.get(owner, 0) + int(rule.get("fixed") or 0)
    return [
        RoleEffort(role, plan.role_title(role), answered.get(role, 0), fixed.get(role, 0))
        for role in plan.roles
    ]


def _owned(gate: OpenGate, plan: Plan | None) -> OpenGate:
    spec = gate_spec(gate.dag_id, gate.task_id)
    role = (plan.gate_role(gate.dag_id, gate.task_id) or "") if plan else ""
    return OpenGate(
        gate.dag_id,
        gate.run_id,
        gate.task_id,
        gate.subject,
        gate.assigned,
        gate.since,
        spec.label if spec else None,
        role,
    )
