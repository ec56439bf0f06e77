"""A migration's plan: ``include/config/<migration>/plan.yaml``, validated on load.

The plan gives the dates (each phase's window, each key node's day), the roles and the Airflow
users who hold them, the role that answers each approval gate, and the role that owns each
entity's data (its worklists). A bad plan fails with one line per problem naming the key
(``plan.yaml: gates.migration_cutover.go_no_go: unknown role 'lead'; roles: …``). A migration
without a plan still runs: its gates fall back to the alerts Variable's assignees and the
control room shows no timeline.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aleph2alma import config
from aleph2alma.alerts import Assignee, check_timezone
from aleph2alma.errors import ConfigError
from aleph2alma.plan.catalog import GATES, KEY_NODES, PHASES, ROLE_TITLES, KeyNode, Phase, Text, gate_spec
from aleph2alma.validate.rules import RULES

PLAN_FILE = "plan.yaml"
OPTIONAL_NODES = frozenset({KeyNode.ALEPH_DECOMMISSIONED})
"""Key nodes a plan may leave undated: the others are the project's milestones."""


class PlanError(ConfigError):
    """``plan.yaml`` is missing a key, has an unknown one or a value that cannot be."""


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start: date = Field(description="First planned day (YYYY-MM-DD)")
    end: date = Field(description="Last planned day (YYYY-MM-DD), not before start")

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class LabelText(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    en: str
    zh: str = ""

    def text(self) -> Text:
        return Text(self.en, self.zh or self.en)


class Role(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    title: LabelText | None = Field(default=None, description="en/zh title; the usual roles have one")
    users: list[Assignee] = Field(
        min_length=1, description="Airflow users holding the role (id, name, email)"
    )


class Plan(BaseModel):
    """The keys of ``plan.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    migration: str = Field(description="The migration id: the folder the plan is in")
    title: LabelText | None = None
    timezone: str = Field(default="Asia/Shanghai", description="IANA zone of the planned days")
    phases: dict[Phase, Window] = Field(description="Each phase's planned window")
    key_nodes: dict[KeyNode, date] = Field(description="Each key node's planned day")
    roles: dict[str, Role] = Field(min_length=1, description="Role id → title and Airflow users")
    gates: dict[str, str] = Field(description="Gate (<dag id>.<task id>) → the role that answers it")
    escalation_roles: list[str] = Field(
        default_factory=list,
        description="Roles whose users are assigned to every gate too (no gate waits on one absent owner)",
    )
    data_owners: dict[str, str] = Field(
        default_factory=dict, description="Entity → the role owning its data and worklists"
    )

    # -- reading -------------------------------------------------------------------------------

    def role_title(self, role: str) -> Text:
        given = self.roles[role].title if role in self.roles else None
        return given.text() if given else ROLE_TITLES.get(role, Text(role, role))

    def gate_role(self, dag_id: str, task_id: str) -> str | None:
        return self.gates.get(f"{dag_id}.{task_id}")

    def gate_assignees(self, dag_id: str, task_id: str) -> list[Assignee]:
        """The users a gate is assigned to: its role's, then the escalation roles' (once each)."""
        role = self.gate_role(dag_id, task_id)
        if role is None:
            return []
        out: dict[str, Assignee] = {}
        for name in (role, *self.escalation_roles):
            for user in self.roles[name].users:
                out.setdefault(user.id, user)
        return list(out.values())

    def roles_of(self, user_id: str) -> list[str]:
        return [name for name, role in self.roles.items() if any(u.id == user_id for u in role.users)]

    def title_text(self) -> Text:
        return self.title.text() if self.title else Text(self.migration, self.migration)


def check(plan: Plan, migration_id: str, source: str) -> None:
    """What the model alone cannot see: the plan is this migration's, and every name it uses exists."""
    problems = []
    if plan.migration != migration_id:
        problems.append(f"migration: {plan.migration!r} is not this folder's migration {migration_id!r}")
    try:
        check_timezone(plan.timezone)
    except ValueError as exc:
        problems.append(f"timezone: {exc}")
    for spec in PHASES:
        if spec.phase not in plan.phases:
            problems.append(f"phases.{spec.phase}: required key missing: the phase's start and end")
    for node in KEY_NODES:
        if node.node not in plan.key_nodes and node.node not in OPTIONAL_NODES:
            problems.append(f"key_nodes.{node.node}: required key missing: the key node's planned day")
    roles = ", ".join(sorted(plan.roles))
    for gate, role in plan.gates.items():
        dag_id, _, task_id = gate.partition(".")
        if gate_spec(dag_id, task_id) is None:
            known = ", ".join(g.gate_id for g in GATES)
            problems.append(f"gates.{gate}: not an approval gate; the gates: {known}")
        if role not in plan.roles:
            problems.append(f"gates.{gate}: unknown role {role!r}; roles: {roles}")
    for gate_def in GATES:
        if gate_def.gate_id not in plan.gates:
            problems.append(f"gates.{gate_def.gate_id}: required key missing: the role that answers it")
    for role in plan.escalation_roles:
        if role not in plan.roles:
            problems.append(f"escalation_roles: unknown role {role!r}; roles: {roles}")
    entities = sorted({r.entity for r in RULES.values()})
    for entity, role in plan.data_owners.items():
        if entity not in entities:
            problems.append(
                f"data_owners.{entity}: not an entity with worklists; entities: {', '.join(entities)}"
            )
        if role not in plan.roles:
            problems.append(f"data_owners.{entity}: unknown role {role!r}; roles: {roles}")
    if problems:
        raise PlanError("\n".join(f"{source}: {p}" for p in problems))


def parse_plan(text: str, migration_id: str, source: str = PLAN_FILE) -> Plan:
    """``plan.yaml``'s text as a checked plan; PlanError naming every bad key."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        raise PlanError(f"{source}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise PlanError(f"{source}: a mapping of keys expected (migration, phases, key_nodes, roles, gates)")
    plan = config.validate(Plan, data, source, PlanError)
    check(plan, migration_id, source)
    return plan


def plan_path(migration_id: str, root: Path | None = None) -> Path:
    from aleph2alma.settings import CONFIG_ROOT

    return (root or CONFIG_ROOT) / migration_id / PLAN_FILE


def zone_name(plan: Plan | None) -> str:
    """The IANA zone of the plan's calendar days; UTC without a plan."""
    return plan.timezone if plan else "UTC"


def plan_of_run(params: Any) -> Plan | None:
    """The plan of the migration a run works on (its ``migration_id`` param); None without one."""
    migration_id = str((params or {}).get("migration_id") or "")
    return load_plan(migration_id) if migration_id else None


def load_plan(migration_id: str, root: Path | None = None) -> Plan | None:
    """The migration's checked plan; None when it has no ``plan.yaml``."""
    path = plan_path(migration_id, root)
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    return parse_plan(text, migration_id, str(path))
