"""Steps after go-live: offline circulation, clean-up worklists, the final reconciliation, the
archive of what was delivered, and the decommission checklist.

The *final run* is the phase run (the cutover that went live; before it, a test load) whose extract
and transform are the last snapshot of Aleph: every step here reads it, none changes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from aleph2alma.errors import PermanentError
from aleph2alma.phases.context import PhaseContext
from aleph2alma.refs import Reconciliation
from aleph2alma.rejects import RejectLog
from aleph2alma.runs import ChildStep, RunRef
from aleph2alma.storage import parse_s3_uri

log = logging.getLogger(__name__)

CIRCULATION = "offline_circ"
APPLIED = "applied"


class FinalRunError(PermanentError):
    """No final run was named and none can be found."""


def final_run_of(ctx: PhaseContext, asked: str) -> RunRef:
    """The run the operator named; else the cutover run that went live (the go-live marker); else
    the latest test load that reconciled (its run summary holds a reconciliation)."""
    from aleph2alma.runs import CUTOVER_DAG, TEST_LOAD_DAG
    from aleph2alma.state import go_live

    if asked:
        return RunRef.parse(asked, TEST_LOAD_DAG)
    live = go_live(ctx.store, ctx.migration_id)
    if live:
        return RunRef.parse(str(live["cutover_run"]), CUTOVER_DAG)
    prefix = f"{ctx.migration_id}/reports/{TEST_LOAD_DAG}/"
    found: list[tuple[datetime, str]] = []
    for key in ctx.store.list_keys(prefix):
        if key.endswith("/run_summary.json") and "reconciliation" in json.loads(ctx.store.get_bytes(key)):
            modified = (ctx.store.head(key) or {}).get("LastModified")
            found.append((modified or datetime.min.replace(tzinfo=UTC), key[len(prefix) :].split("/")[0]))
    if not found:
        raise FinalRunError(
            f"no {TEST_LOAD_DAG} run of migration {ctx.migration_id!r} has reconciled yet; name the final "
            "run in the trigger form (<dag id>/<run id>)"
        )
    return RunRef(TEST_LOAD_DAG, max(found)[1])


def final_run_summary(ctx: PhaseContext, final: RunRef) -> dict[str, Any]:
    """What the final run recorded in its ``run_summary.json`` (its API load among it); {} if none."""
    key = ctx.scope_of(final).report_prefix() + "run_summary.json"
    if not ctx.store.exists(key):
        return {}
    summary: dict[str, Any] = json.loads(ctx.store.get_bytes(key))
    return summary


def _read_s3(ctx: PhaseContext, uri: str) -> bytes:
    bucket, key = parse_s3_uri(uri)
    body: bytes = ctx.store.client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def offline_circulation_step(ctx: PhaseContext, uris: Sequence[str], client: Any) -> dict[str, Any]:
    """The desks' offline transactions applied to Alma in time order (``alma.offline_circ``); the
    checkpoint and the rejects committed as the ``offline_circ/applied`` stage, balanced as
    read = applied or already applied + rejected (bad rows and Alma's refusals, by reason)."""
    from aleph2alma.alma.offline_circ import CHECKPOINT_NAME, Checkpoint, upload

    files, again = _distinct_files(ctx, uris)
    prefix = ctx.scope.prefix(CIRCULATION, APPLIED)
    # One checkpoint for the migration: a file uploaded again by a later run applies nothing twice.
    checkpoint = Checkpoint.for_migration(ctx.store, ctx.migration_id)
    with tempfile.TemporaryDirectory() as work:
        tmp = Path(work)
        with open(tmp / "rejects.jsonl", "w", encoding="utf-8") as sink:
            result = upload(
                client, files, ctx.settings.post_go_live.offline_circulation, checkpoint, RejectLog(sink)
            )
        result.check("offline circulation")
        checkpoint.save()  # written even when no row was valid: the stage keeps a copy
        local = tmp / CHECKPOINT_NAME
        local.write_bytes(ctx.store.get_bytes(checkpoint.key))
        stored = [
            ctx.store.put_file(
                prefix + CHECKPOINT_NAME,
                local,
                records=result.records_out,
                rejected=result.rejected,
                source="offline",
            ),
            ctx.store.put_file(
                prefix + "rejects.jsonl", tmp / "rejects.jsonl", records=result.rejected, kind="rejects"
            ),
        ]
    summary = {**result.to_dict(), "files": [name for name, _ in files], "same_file_again": again}
    ctx.store.commit(ctx.scope, CIRCULATION, APPLIED, stored, extra=summary)
    return summary


def _distinct_files(ctx: PhaseContext, uris: Sequence[str]) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The files to read, each content once: a file given twice would read its rows twice."""
    files: list[tuple[str, bytes]] = []
    seen: dict[str, str] = {}
    again: list[str] = []
    for uri in uris:
        data = _read_s3(ctx, uri)
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            log.warning("%s has the same content as %s: read once", uri, seen[digest])
            again.append(uri)
            continue
        seen[digest] = uri
        files.append((uri, data))
    return files, again


def worklists_step(ctx: PhaseContext, final: RunRef) -> dict[str, Any]:
    """The clean-up worklists from the final run's extract and transform (``postlive.worklists``)."""
    from aleph2alma.postlive.worklists import ApiLoad, build_worklists

    summary = final_run_summary(ctx, final)
    api_load = None
    if summary.get("api_load"):
        api_load = ApiLoad(run=final, loaded_on=_run_day(ctx, final))
    result = build_worklists(
        ctx,
        final.child(ChildStep.EXTRACT),
        final.child(ChildStep.TRANSFORM),
        ctx.settings.post_go_live.worklists,
        api_load,
    )
    return result.model_dump()


def _run_day(ctx: PhaseContext, final: RunRef) -> date:
    """The day the final run's API load ran: its run summary's time, else the as-of date."""
    head = ctx.store.head(ctx.scope_of(final).report_prefix() + "run_summary.json")
    modified = (head or {}).get("LastModified")
    return modified.date() if isinstance(modified, datetime) else ctx.as_of


def final_reconciliation_step(
    ctx: PhaseContext, final: RunRef, workbook_uri: str, client: Any, sample_size: int
) -> Reconciliation:
    """The final snapshot against what Alma holds: the final run's counts, Ex Libris' statistics
    workbook (``workbook_uri``, else the one the final run was reconciled with) and what its API
    load created, and a sample read back from Alma now."""
    from aleph2alma.reconcile.against_alma import reconcile_step

    summary = final_run_summary(ctx, final)
    workbook = workbook_uri or str(summary.get("statistics_workbook_uri") or "")
    return reconcile_step(ctx, workbook, client, summary.get("api_load") or {}, sample_size, final=final)


def archive_step(ctx: PhaseContext, final: RunRef, packages: Sequence[RunRef]) -> dict[str, Any]:
    """The final extract and every delivered package of ``packages`` into the archive, verified."""
    from aleph2alma.postlive.archive import archive

    label = f"final-{ctx.scope.run_id}"
    result = archive(
        ctx, label, final.child(ChildStep.EXTRACT), list(packages), ctx.settings.post_go_live.archive
    )
    return result.model_dump()


def checklist_step(
    ctx: PhaseContext,
    results: Mapping[str, Any],
    answer: Mapping[str, Any],
) -> dict[str, Any]:
    """The decommission checklist: each step's result as a check, verified by whoever answered the
    decommission gate, at the time they answered it."""
    from aleph2alma.gate_answers import answered_at, answered_by, approved
    from aleph2alma.postlive.archive import ArchiveResult
    from aleph2alma.postlive.checklist import (
        Check,
        archive_check,
        offline_circulation_check,
        reconciliation_check,
        worklists_check,
        write_checklist,
    )
    from aleph2alma.postlive.worklists import WorklistsResult

    who = answered_by(answer)
    when = answered_at(answer)
    checks = [
        reconciliation_check(Reconciliation.model_validate(results["reconciliation"]), who, when),
        worklists_check(WorklistsResult.model_validate(results["worklists"]), who, when),
        archive_check(ArchiveResult.model_validate(results["archive"]), who, when),
        offline_circulation_check(results.get("offline_circulation"), who, when),
        Check(
            name="Decommission approved",
            passed=approved(answer),
            detail=f"the gate 'Aleph can be decommissioned?' answered {answer.get('chosen_options')}",
            verified_by=who,
            verified_at=when,
        ),
    ]
    result = write_checklist(ctx.store, ctx.scope, checks, ctx.as_of.isoformat(), ctx.settings.institution)
    return result.model_dump()
