"""An extract with the fix rules applied: what a fix-cycle iteration and the cutover transform read.

The rules of ``include/config/<migration>/fixes.toml`` are applied to the raw Z-tables they touch
(the others are referenced, not copied) and the result is committed as the ``raw/`` stage of the
context's scope, per entity balanced as: the extract's records = kept + the patrons a rule
dropped (listed in ``rejects/dropped_by_fix_rule.jsonl``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from aleph2alma.accounting import Tally
from aleph2alma.aleph.extract import all_entities
from aleph2alma.fixes.apply import FixLog
from aleph2alma.fixes.config import fix_rules_for_migration
from aleph2alma.phases.context import PhaseContext
from aleph2alma.refs import FixedExtract
from aleph2alma.rejects import RejectLog
from aleph2alma.runs import RunRef
from aleph2alma.stages import RAW
from aleph2alma.storage import StoredFile


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


def fix_extract(ctx: PhaseContext, extract: RunRef) -> FixedExtract:
    """``extract`` with the migration's fix rules applied, committed under ``ctx.scope`` as ``raw/``
    (untouched parts are referenced, not copied); the fix rules' log and drops in the manifests."""
    rules = fix_rules_for_migration(ctx.migration_id, ctx.config_root)
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
