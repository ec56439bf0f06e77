"""What a gate takes from the plan (who answers it, the key node it closes and its planned day)
and what it gives back (the key node's actual: when, by whom, with what outcome)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aleph2alma.gate_answers import answered_at, approved
from aleph2alma.plan.actuals import NodeActual, record_node
from aleph2alma.plan.catalog import GateSpec, KeyNode, node_spec
from aleph2alma.plan.model import Plan
from aleph2alma.storage import ArtifactStore


def gate_brief(plan: Plan, gate: GateSpec) -> str:
    """Markdown for the gate's body: the key node it closes, its planned day, who answers."""
    node = node_spec(gate.closes)
    planned = plan.key_nodes.get(gate.closes)
    role = plan.gate_role(gate.dag_id, gate.task_id) or ""
    owners = ", ".join(u.name or u.id for u in plan.roles[role].users) if role in plan.roles else ""
    lines = [
        "---",
        f"**Key node / 关键节点:** {node.label.en} / {node.label.zh}"
        + (f" — planned / 计划 **{planned.isoformat()}**" if planned else ""),
        f"**Answered by / 审批角色:** {plan.role_title(role).en} / {plan.role_title(role).zh}"
        + (f" ({owners})" if owners else ""),
    ]
    if plan.escalation_roles:
        titles = ", ".join(plan.role_title(r).en for r in plan.escalation_roles)
        lines.append(f"*Also assigned, as escalation: {titles}.*")
    return "\n\n".join(lines)


def record_opened(
    store: ArtifactStore, migration_id: str, gate: GateSpec, run_id: str, opened_at: datetime
) -> list[str]:
    """The key nodes the gate's opening reaches (the work before it is done)."""
    return [
        record_node(
            store,
            migration_id,
            NodeActual(str(node), opened_at, "reached", gate.dag_id, run_id, gate.task_id),
        )
        for node in gate.reached_on_open
    ]


def record_answered(
    store: ArtifactStore, migration_id: str, gate: GateSpec, run_id: str, answer: Mapping[str, Any]
) -> str | None:
    """The key node the gate closes, as answered; None when a later step records it (go-live)."""
    if not gate.recorded_by_gate:
        return None
    return record_node(
        store, migration_id, answer_actual(gate.closes, gate.dag_id, run_id, gate.task_id, answer)
    )


def answer_actual(
    node: KeyNode, dag_id: str, run_id: str, task_id: str, answer: Mapping[str, Any], outcome: str = ""
) -> NodeActual:
    """A key node's actual from a gate's answer (``outcome``: approved/rejected unless given)."""
    user = answer.get("responded_by_user") or {}
    user = user if isinstance(user, Mapping) else {"id": str(user)}
    return NodeActual(
        str(node),
        answered_at(answer),
        outcome or ("approved" if approved(answer) else "rejected"),
        dag_id,
        run_id,
        task_id,
        by_id=str(user.get("id") or ""),
        by_name=str(user.get("name") or ""),
    )
