"""What actually happened, recorded by the runs as it happens: nothing is typed twice.

- A key node is recorded when its gate is answered (the answer's time, who answered, the
  outcome), when a gate opens (the work before it is done), or by the step that decides it
  (go-live). One object per node and run: ``<migration>/state/plan/key_nodes/<node>/<dag>/<run>.json``.
- A phase run is recorded when it ends (its last task, the audit, writes it):
  ``<migration>/state/plan/runs/<dag>/<run>.json`` with its start and end.

The control room and the status report read them back; a retry rewrites the same object.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from aleph2alma.plan.catalog import KeyNode, node_spec
from aleph2alma.storage import ArtifactStore, RunScope

REACHED = frozenset({"approved", "go", "reached"})
"""Outcomes that reach a key node (a Reject or a No-Go is recorded, but reaches nothing)."""


@dataclass(frozen=True)
class NodeActual:
    node: str
    at: datetime
    outcome: str
    dag_id: str
    run_id: str
    task_id: str
    by_id: str = ""
    by_name: str = ""

    @property
    def reached(self) -> bool:
        return self.outcome in REACHED

    def to_json(self) -> bytes:
        body = {**asdict(self), "at": self.at.isoformat()}
        return json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> NodeActual:
        data = json.loads(raw)
        return cls(**{**data, "at": datetime.fromisoformat(data["at"])})


@dataclass(frozen=True)
class RunEnded:
    dag_id: str
    run_id: str
    started_at: datetime
    ended_at: datetime
    state: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        body = {
            **asdict(self),
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat(),
        }
        return json.dumps(body, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> RunEnded:
        data = json.loads(raw)
        return cls(
            **{
                **data,
                "started_at": datetime.fromisoformat(data["started_at"]),
                "ended_at": datetime.fromisoformat(data["ended_at"]),
            }
        )


def _prefix(migration_id: str, what: str) -> str:
    return f"{migration_id}/state/plan/{what}/"


def record_node(store: ArtifactStore, migration_id: str, actual: NodeActual) -> str:
    """Record ``actual`` (the node must be a catalogued key node); its URI."""
    node_spec(actual.node)  # StopIteration would hide the cause: check first
    scope = RunScope(migration_id, actual.dag_id, actual.run_id)  # checks the id segments
    key = f"{_prefix(migration_id, 'key_nodes')}{actual.node}/{scope.dag_id}/{scope.run_id}.json"
    store.put_bytes(key, actual.to_json(), content_type="application/json")
    return store.uri(key)


def record_run_end(store: ArtifactStore, migration_id: str, ended: RunEnded) -> str:
    scope = RunScope(migration_id, ended.dag_id, ended.run_id)
    key = f"{_prefix(migration_id, 'runs')}{scope.dag_id}/{scope.run_id}.json"
    store.put_bytes(key, ended.to_json(), content_type="application/json")
    return store.uri(key)


def node_actuals(store: ArtifactStore, migration_id: str) -> list[NodeActual]:
    """Every recorded key-node event, oldest first."""
    keys = store.list_keys(_prefix(migration_id, "key_nodes"))
    found = [NodeActual.from_json(store.get_bytes(k)) for k in keys if k.endswith(".json")]
    return sorted(found, key=lambda a: a.at)


def runs_ended(store: ArtifactStore, migration_id: str) -> list[RunEnded]:
    """Every recorded phase run, by start."""
    keys = store.list_keys(_prefix(migration_id, "runs"))
    found = [RunEnded.from_json(store.get_bytes(k)) for k in keys if k.endswith(".json")]
    return sorted(found, key=lambda r: r.started_at)


def reached_at(actuals: list[NodeActual], node: KeyNode | str) -> NodeActual | None:
    """When ``node`` was reached: the first time, or the latest for a node reached again and again."""
    hits = [a for a in actuals if a.node == node and a.reached]
    if not hits:
        return None
    return hits[-1] if node_spec(node).latest else hits[0]
