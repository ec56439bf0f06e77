"""A migration's state between runs: the latest good extract, the signed-off baseline, and
the nightly delta's committed nights (its watermark).

Kept as small JSON objects under ``<migration_id>/state/``. A phase reads them to decide
what to work on when the operator did not say; it never guesses from run-id strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aleph2alma.errors import PermanentError
from aleph2alma.runs import EXTRACT_DAG, FIX_CYCLE_DAG, TRANSFORM_DAG, RunRef
from aleph2alma.storage import ArtifactStore, RunScope


class NoSuchRun(PermanentError):
    """The run a step should read from is not recorded: an earlier phase must run first."""


def _latest_key(migration_id: str, dag_id: str) -> str:
    return f"{migration_id}/state/latest/{dag_id}.json"


def _baseline_key(migration_id: str) -> str:
    return f"{migration_id}/state/baseline/{FIX_CYCLE_DAG}.json"


def record_latest(store: ArtifactStore, scope: RunScope) -> str:
    """Point ``state/latest/<dag id>.json`` at this run: later phases read the latest good one."""
    key = _latest_key(scope.migration_id, scope.dag_id)
    body = {"run_id": scope.run_id, "dag_id": scope.dag_id}
    store.put_bytes(key, json.dumps(body, sort_keys=True).encode("utf-8"), content_type="application/json")
    return store.uri(key)


def extract_to_read(store: ArtifactStore, migration_id: str, given: str = "") -> RunRef:
    """The extract the operator named (``<run id>`` or ``<dag id>/<run id>``), else the latest full one."""
    if given:
        return RunRef.parse(given, EXTRACT_DAG)
    key = _latest_key(migration_id, EXTRACT_DAG)
    if not store.exists(key):
        raise NoSuchRun(
            f"no successful migration_extract run recorded for {migration_id!r}; "
            "run migration_extract first or give the extract run"
        )
    return RunRef(EXTRACT_DAG, str(json.loads(store.get_bytes(key))["run_id"]))


def baseline(store: ArtifactStore, migration_id: str) -> dict[str, Any] | None:
    """The signed-off fix-cycle iteration, if there is one."""
    key = _baseline_key(migration_id)
    return json.loads(store.get_bytes(key)) if store.exists(key) else None


def baseline_transform(store: ArtifactStore, migration_id: str) -> RunRef | None:
    recorded = baseline(store, migration_id)
    return RunRef(TRANSFORM_DAG, recorded["transform_run_id"]) if recorded else None


def record_baseline(
    store: ArtifactStore,
    migration_id: str,
    iteration: int,
    transform: RunRef,
    fix_cycle: RunRef,
    extract: RunRef | None = None,
) -> str:
    """A signed-off iteration becomes the baseline for the next iteration and for cutover;
    ``extract``: the extract the iteration fixed (the cutover compares its own with it)."""
    key = _baseline_key(migration_id)
    body = {
        "iteration": iteration,
        "transform_run_id": transform.run_id,
        "fix_cycle_run_id": fix_cycle.run_id,
        **({"extract": str(extract)} if extract else {}),
    }
    store.put_bytes(key, json.dumps(body, sort_keys=True).encode("utf-8"), content_type="application/json")
    return store.uri(key)


def _go_live_key(migration_id: str) -> str:
    return f"{migration_id}/state/go_live.json"


def go_live(store: ArtifactStore, migration_id: str) -> dict[str, Any] | None:
    """The go-live marker (who said Go, when, which cutover run and which of its runs), if live."""
    key = _go_live_key(migration_id)
    return json.loads(store.get_bytes(key)) if store.exists(key) else None


def record_go_live(store: ArtifactStore, migration_id: str, marker: dict[str, Any]) -> str:
    """Write the go-live marker; its URI."""
    key = _go_live_key(migration_id)
    body = json.dumps(marker, indent=2, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    store.put_bytes(key, body, content_type="application/json")
    return store.uri(key)


def write_run_summary(
    store: ArtifactStore, scope: RunScope, stages: list[Any], extra: dict[str, Any] | None = None
) -> str:
    """Per stage and entity: counts and manifest URIs, for operators and the demo summary."""
    entries = sorted((s.summary() for s in stages if s is not None), key=lambda s: (s["stage"], s["entity"]))
    body = {
        "migration_id": scope.migration_id,
        "dag_id": scope.dag_id,
        "run_id": scope.run_id,
        "stages": entries,
        **(extra or {}),
    }
    return _put_run_summary(store, scope, body)


def amend_run_summary(store: ArtifactStore, scope: RunScope, extra: dict[str, Any]) -> bool:
    """Add ``extra`` to the run summary the run wrote (a later step's result); False if it wrote none."""
    key = _run_summary_key(scope)
    if not store.exists(key):
        return False
    _put_run_summary(store, scope, {**json.loads(store.get_bytes(key)), **extra})
    return True


def _run_summary_key(scope: RunScope) -> str:
    return scope.report_prefix() + "run_summary.json"


def _put_run_summary(store: ArtifactStore, scope: RunScope, body: dict[str, Any]) -> str:
    key = _run_summary_key(scope)
    store.put_bytes(
        key,
        json.dumps(body, indent=2, sort_keys=True, default=str).encode("utf-8"),
        content_type="application/json",
    )
    return store.uri(key)


# --- the nightly delta's watermark --------------------------------------------------------
#
# Each committed night is one small object, ``state/delta/nights/<watermark>.json``, written by
# the night's last task once everything else is committed: that one PUT is the commit. The
# watermark is the newest of them; a failed night writes none, so the next night starts where
# the last good one ended. Each names the run whose ``baseline/`` stage holds the record hashes
# as they were that night, so "what changed since <date>" (e.g. since sign-off) is a diff
# against the night at or before that date.

_WATERMARK_FORMAT = "%Y%m%dT%H%M%S.%fZ"


@dataclass(frozen=True)
class Night:
    """A committed night of the nightly delta."""

    watermark: datetime
    """UTC; changes up to here are in this night's baseline (and in the deltas up to it)."""
    run: RunRef
    window_start: datetime | None
    """The previous watermark; None when the night was compared with a full extract."""
    baselines: dict[str, str]
    """Entity → the ``baseline/<entity>/_MANIFEST.json`` URI: every record's hash that night."""
    summary: str = ""

    def to_json(self) -> str:
        body = {
            "watermark": self.watermark.isoformat(),
            "dag_id": self.run.dag_id,
            "run_id": self.run.run_id,
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "baselines": self.baselines,
            "summary": self.summary,
        }
        return json.dumps(body, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Night:
        data = json.loads(text)
        start = data.get("window_start")
        return cls(
            watermark=datetime.fromisoformat(data["watermark"]),
            run=RunRef(data["dag_id"], data["run_id"]),
            window_start=datetime.fromisoformat(start) if start else None,
            baselines=dict(data["baselines"]),
            summary=data.get("summary", ""),
        )


def _nights_prefix(migration_id: str) -> str:
    return f"{migration_id}/state/delta/nights/"


def _night_key(migration_id: str, watermark: datetime) -> str:
    if watermark.tzinfo is None:
        raise ValueError(f"a watermark must carry its time zone: {watermark.isoformat()}")
    utc = watermark.astimezone(UTC)
    return f"{_nights_prefix(migration_id)}{utc.strftime(_WATERMARK_FORMAT)}.json"


def record_night(store: ArtifactStore, migration_id: str, night: Night) -> str:
    """Commit a night: from now on its watermark is the one the next night starts from."""
    key = _night_key(migration_id, night.watermark)
    store.put_bytes(key, night.to_json().encode("utf-8"), content_type="application/json")
    return store.uri(key)


def _night_keys(store: ArtifactStore, migration_id: str) -> list[tuple[datetime, str]]:
    """(watermark, key) of every committed night, oldest first."""
    prefix = _nights_prefix(migration_id)
    found = []
    for key in store.list_keys(prefix):
        name = key[len(prefix) :].removesuffix(".json")
        try:
            when = datetime.strptime(name, _WATERMARK_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            continue  # not a night record (someone's copy, a README): never a watermark
        found.append((when, key))
    return sorted(found)


def nights(store: ArtifactStore, migration_id: str) -> list[Night]:
    """Every committed night, oldest first."""
    return [Night.from_json(store.get_bytes(key)) for _, key in _night_keys(store, migration_id)]


def night_at_or_before(
    store: ArtifactStore, migration_id: str, when: datetime | None = None, *, exclude_run: str = ""
) -> Night | None:
    """The newest committed night whose watermark is not after ``when`` (None: the newest of all),
    leaving out the nights of run ``exclude_run``; None when there is none."""
    for watermark, key in reversed(_night_keys(store, migration_id)):
        if when is not None and watermark > when:
            continue
        night = Night.from_json(store.get_bytes(key))
        if night.run.run_id != exclude_run:
            return night
    return None


def watermark(store: ArtifactStore, migration_id: str) -> datetime | None:
    """The nightly delta's current watermark: the newest committed night's, None before the first."""
    keys = _night_keys(store, migration_id)
    return keys[-1][0] if keys else None
