"""Steps of the first test load: package, deliver, load through the API, reconcile.

The Ex Libris load itself happens outside: the operator answers the gate "test
environment loaded" (with the statistics workbook, when Ex Libris sent one) once Alma's
test environment holds the delivery.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aleph2alma.phases.context import PhaseContext
from aleph2alma.rejects import RejectLog
from aleph2alma.runs import RunRef

if TYPE_CHECKING:
    from aleph2alma.alma.client_load import Kind
    from aleph2alma.delivery.package import PackageResult
    from aleph2alma.delivery.transfer import Delivered

PACKAGED = ("bibs", "holdings", "items", "patrons", "loans", "requests", "fines", "p2e")
OPTIONAL_PACKAGED = "bibs_with_items"  # written when migration.toml sets items_in_bib_field
API_KINDS: dict[str, Kind] = {"loans": "loans", "requests": "requests", "fines": "fees"}


def transform_manifests(ctx: PhaseContext, transform: RunRef) -> dict[str, str]:
    """The transform's ``alma/`` manifests to package; bibs with items only when the transform wrote them."""
    scope = ctx.scope_of(transform)
    return {
        e: ctx.store.uri(scope.prefix("alma", e) + "_MANIFEST.json")
        for e in (*PACKAGED, OPTIONAL_PACKAGED)
        if e in PACKAGED or ctx.store.stage_committed(scope, "alma", e)
    }


def package_step(ctx: PhaseContext, transform: RunRef) -> PackageResult:
    from aleph2alma.delivery.package import build_package

    return build_package(
        ctx.store, ctx.scope, transform_manifests(ctx, transform), ctx.form_dir, ctx.migration_id
    )


def default_targets(ctx: PhaseContext, targets: list[str]) -> list[str]:
    """The operator's delivery targets, else the artifact bucket's ``<migration id>/delivery/``."""
    return list(targets) or [f"s3://{ctx.store.bucket}/{ctx.migration_id}/delivery/"]


def deliver_step(
    ctx: PhaseContext,
    package: PackageResult,
    targets: list[str],
    *,
    sftp_client: Callable[[str], Any],
    s3_client: Callable[[], Any],
) -> list[Delivered]:
    from aleph2alma.delivery.transfer import deliver

    return deliver(
        ctx.store, package, default_targets(ctx, targets), sftp_client=sftp_client, s3_client=s3_client
    )


def autoextract_step(ctx: PhaseContext, step: str, shell: Callable[[str], Any]) -> dict[str, Any]:
    """One step of Ex Libris' AutoExtract over SSH (``shell``: connection id → ``RemoteShell``);
    what it produced is staged under ``autoextract/<step>/``. Only for delivery mode autoextract."""
    from aleph2alma.delivery.autoextract import run_step

    auto = ctx.settings.delivery.autoextract
    remote = shell(auto.ssh_conn_id)
    try:
        return run_step(ctx.store, ctx.scope, auto, step, remote).to_dict()
    finally:
        remote.close()


def api_load_step(ctx: PhaseContext, transform: RunRef, client: Any) -> dict[str, Any]:
    """Loans, requests and fees through the Alma API; Alma's refusals become rejects with its code."""
    from aleph2alma.alma.client_load import load

    results: dict[str, Any] = {}
    for entity, kind in API_KINDS.items():
        manifest = ctx.store.stage_manifest(ctx.scope_of(transform), "alma", entity)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "rejects.jsonl"
            with open(path, "w", encoding="utf-8") as sink:
                stats = load(client, kind, ctx.store.iter_jsonl(manifest.parts()), RejectLog(sink))
            ctx.store.put_file(ctx.scope.prefix("load", entity) + "rejects.jsonl", path, kind="rejects")
        results[entity] = stats.to_dict()
    return results


# --- reconciliation -----------------------------------------------------------------------
