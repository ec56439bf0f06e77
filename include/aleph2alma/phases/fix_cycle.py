"""Steps of a fix-cycle iteration: apply the fix rules, diff against the previous iteration,
keep the baseline.

An iteration reads a committed extract, applies ``include/config/<migration>/fixes.toml``
to the raw Z-tables it touches (the others are referenced, not copied), and commits the
result as its own ``raw/`` stage; ``migration_transform`` then runs on it with the current
migration form. The diff compares the issues of the new transform with the previous
iteration's, rule by rule: fixed, new, still open.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from aleph2alma.accounting import Tally
from aleph2alma.aleph.extract import all_entities
from aleph2alma.phases.context import PhaseContext
from aleph2alma.refs import FixedExtract, IterationDiff
from aleph2alma.rejects import RejectLog
from aleph2alma.runs import TRANSFORM_DAG, ChildStep, RunRef
from aleph2alma.stages import ALMA, ISSUES, RAW
from aleph2alma.state import baseline_transform, extract_to_read
from aleph2alma.storage import StoredFile
from aleph2alma.validate.issues import Issue, read_issues


def _fixed_part(
    ctx: PhaseContext, part: StoredFile, rules: Any, dropped: Any, tmp: Path
) -> tuple[StoredFile, Any]:
    from aleph2alma.fixes.apply import apply_fixes

    [local] = ctx.store.local_copies([part], tmp)
    table, log = apply_fixes(part.source, pq.read_table(local), rules, dropped=dropped)
    out = tmp / "out.parquet"
    pq.write_table(table, out, compression="zstd")
    key = ctx.scope.prefix(RAW, part.key.split("/raw/", 1)[1].rsplit("/", 1)[0]) + Path(part.key).name
    return ctx.store.put_file(key, out, records=table.num_rows, source=part.source), log


FOLLOW_THEIR_PATRON = ("Z304", "Z305", "Z308")
"""Patron tables whose rows go with their dropped Z303 patron, counted once as its reject."""


def _fixed_balance(entity: str, before: list[StoredFile], after: list[StoredFile]) -> None:
    """Per source, the extract's records = the fixed records + the patrons a rule dropped
    (``UnbalancedError`` before the manifest is written)."""
    dropped = sum(
        f.records for f in after if f.kind == "rejects" and f.key.endswith("/dropped_by_fix_rule.jsonl")
    )
    for source in sorted({f.source for f in before} - set(FOLLOW_THEIR_PATRON)):
        Tally.of(
            sum(f.records for f in before if f.source == source),
            sum(f.records for f in after if f.kind == "part" and f.source == source),
            {"dropped_by_fix_rule": dropped if source == "Z303" else 0},
        ).check(f"fixed raw {entity} {source}")


def _dropped_patrons(ctx: PhaseContext, extract: RunRef, rules: Any, tmp: Path) -> Any:
    from aleph2alma.fixes.apply import patrons_to_drop

    if not rules.drop_patrons:
        return None
    manifest = ctx.store.stage_manifest(ctx.scope_of(extract), RAW, "patrons")
    z303, z305 = (ctx.store.read_table(manifest.parts(t), tmp / t) for t in ("Z303", "Z305"))
    return patrons_to_drop(rules, z303, z305)


def apply_fixes_step(ctx: PhaseContext, extract_run: str) -> FixedExtract:
    """The extract with the fix rules applied, committed under this run as ``raw/``."""
    from aleph2alma.fixes.apply import FixLog
    from aleph2alma.fixes.config import fix_rules_for_migration

    rules = fix_rules_for_migration(ctx.migration_id, ctx.config_root)
    extract = extract_to_read(ctx.store, ctx.migration_id, extract_run)
    applied: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        dropped = _dropped_patrons(ctx, extract, rules, tmp)
        for entity in all_entities():
            manifest = ctx.store.stage_manifest(ctx.scope_of(extract), RAW, entity)
            files, log = [], None
            for part in manifest.files:
                if part.kind == "part" and part.key.endswith(".parquet") and rules.for_table(part.source):
                    fixed, part_log = _fixed_part(ctx, part, rules, dropped, tmp)
                    files.append(fixed)
                    log = part_log if log is None else log.merge(part_log)
                else:
                    files.append(part)  # untouched: the manifest points at the extract's object
            extra = dict(manifest.extra)
            if isinstance(log, FixLog):
                extra["fixes"] = log.to_dict()
                applied[entity] = log.counts
                if log.rejects:
                    rejects_path = tmp / f"{entity}-dropped.jsonl"
                    with open(rejects_path, "w", encoding="utf-8") as fh:
                        RejectLog(fh).extend(log.rejects)
                    files.append(
                        ctx.store.put_file(
                            ctx.scope.prefix(RAW, entity) + "rejects/dropped_by_fix_rule.jsonl",
                            rejects_path,
                            records=len(log.rejects),
                            kind="rejects",
                        )
                    )
            _fixed_balance(entity, manifest.parts(), files)
            ctx.store.commit(ctx.scope, RAW, entity, files, extra=extra)
    return FixedExtract(extract=ctx.run, source_extract=extract, fixes=applied)


def _issues_of(ctx: PhaseContext, transform: RunRef) -> Iterator[Issue]:
    scope = ctx.scope_of(transform)
    for stage, entity in ((ALMA, "bibs"), (ALMA, "holdings"), (ISSUES, "tables")):
        for f in ctx.store.stage_manifest(scope, stage, entity).files:
            if f.kind == "issues":
                yield from read_issues(ctx.store.iter_lines(f.key, f.sha256))


def diff_step(ctx: PhaseContext, previous_transform_run: str) -> IterationDiff:
    """Issues fixed, new and still open per rule, this iteration's transform against the previous
    iteration's (the one the operator named, else the signed-off baseline)."""
    from aleph2alma.fixes.diff import diff_iterations

    current = ctx.run.child(ChildStep.TRANSFORM)
    previous = (
        RunRef.parse(previous_transform_run, TRANSFORM_DAG)
        if previous_transform_run
        else baseline_transform(ctx.store, ctx.migration_id)
    )
    before = _issues_of(ctx, previous) if previous else iter(())
    result = diff_iterations(
        before,
        _issues_of(ctx, current),
        ctx.rules,
        labels=(previous.run_id if previous else "(none)", current.run_id),
    )
    prefix = ctx.scope.report_prefix() + "iteration_diff/"
    html = ctx.store.put_bytes(
        prefix + "diff.html", result.to_html().encode("utf-8"), content_type="text/html"
    )
    ctx.store.put_bytes(
        prefix + "diff.json", result.to_json().encode("utf-8"), content_type="application/json"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for path in result.write_worklists(Path(tmp)).values():
            ctx.store.put_file(prefix + f"worklists/{Path(path).name}", path, kind="report")
    return IterationDiff(previous=previous, report_html=ctx.store.uri(html.key), totals=result.totals)
