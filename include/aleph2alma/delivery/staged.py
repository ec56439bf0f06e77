"""What a transform staged, on its way to Alma: the ``alma/`` manifests a package is built from,
and the loads through the Alma API (Alma's refusals become rejects with its code, under the
loading run's ``load/<entity>/``)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aleph2alma.phases.context import PhaseContext
from aleph2alma.rejects import RejectLog
from aleph2alma.runs import RunRef

if TYPE_CHECKING:
    from aleph2alma.alma.client_load import Kind

PACKAGED = ("bibs", "holdings", "items", "patrons", "loans", "requests", "fines", "p2e")
OPTIONAL_PACKAGED = "bibs_with_items"  # written when migration.toml sets items_in_bib_field
API_KINDS: dict[str, Kind] = {"loans": "loans", "requests": "requests", "fines": "fees"}


def transform_manifests(
    ctx: PhaseContext, transform: RunRef, entities: Iterable[str] | None = None
) -> dict[str, str]:
    """The transform's ``alma/`` manifests to package (``entities``: only these); bibs with items
    only when the transform wrote them."""
    scope = ctx.scope_of(transform)
    wanted = set(entities) if entities is not None else None
    return {
        e: ctx.store.uri(scope.prefix("alma", e) + "_MANIFEST.json")
        for e in (*PACKAGED, OPTIONAL_PACKAGED)
        if (wanted is None or e in wanted) and (e in PACKAGED or ctx.store.stage_committed(scope, "alma", e))
    }


def _load(
    ctx: PhaseContext, entity: str, kind: Kind, records: Iterable[dict[str, Any]], client: Any
) -> dict[str, Any]:
    from aleph2alma.alma.client_load import load

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rejects.jsonl"
        with open(path, "w", encoding="utf-8") as sink:
            stats = load(client, kind, records, RejectLog(sink))
        ctx.store.put_file(ctx.scope.prefix("load", entity) + "rejects.jsonl", path, kind="rejects")
    return stats.to_dict()


def api_load(ctx: PhaseContext, transform: RunRef, client: Any) -> dict[str, Any]:
    """The transform's loans, requests and fees through the Alma API, per entity its counts."""
    scope = ctx.scope_of(transform)
    return {
        entity: _load(
            ctx,
            entity,
            kind,
            ctx.store.iter_jsonl(ctx.store.stage_manifest(scope, "alma", entity).parts()),
            client,
        )
        for entity, kind in API_KINDS.items()
    }


def _users(ctx: PhaseContext, transform: RunRef, tmp: Path, external_id: str) -> Iterator[dict[str, Any]]:
    from aleph2alma.alma.client_load import read_users_xml

    manifest = ctx.store.stage_manifest(ctx.scope_of(transform), "alma", "patrons")
    for path in ctx.store.local_copies(manifest.parts(), tmp):
        yield from read_users_xml(str(path), external_id)


def api_load_patrons(ctx: PhaseContext, transform: RunRef, client: Any, external_id: str) -> dict[str, Any]:
    """The transform's users (``users.xml``) through the Alma API: created unless the primary id
    exists; ``external_id`` for external users (the SIS integration profile's code)."""
    with tempfile.TemporaryDirectory() as tmp:
        return _load(ctx, "patrons", "users", _users(ctx, transform, Path(tmp), external_id), client)
