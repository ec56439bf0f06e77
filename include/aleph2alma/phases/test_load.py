"""Steps of the first test load: package, deliver, load through the API, reconcile.

The Ex Libris load itself happens outside: the operator answers the gate "test
environment loaded" (with the statistics workbook, when Ex Libris sent one) once Alma's
test environment holds the delivery.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aleph2alma.phases.context import PhaseContext
from aleph2alma.runs import RunRef

if TYPE_CHECKING:
    from aleph2alma.delivery.package import PackageResult
    from aleph2alma.delivery.transfer import Delivered


def package_step(ctx: PhaseContext, transform: RunRef) -> PackageResult:
    from aleph2alma.delivery.package import build_package
    from aleph2alma.delivery.staged import transform_manifests

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
    from aleph2alma.delivery.staged import api_load

    return api_load(ctx, transform, client)


# --- reconciliation -----------------------------------------------------------------------
