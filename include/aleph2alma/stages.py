"""Reading and writing a run's stages: the one way phase steps find and read committed parts.

A stage is ``<stage>/<entity>/`` under a run (``raw``, ``alma``, ``index``, ``issues``,
``profile``): parts written by mapped tasks, then a manifest written last. Steps read
another run's stage only through its committed manifest (``ArtifactStore.stage_manifest``),
and every part through ``ArtifactStore.read_table`` / ``local_copies`` / ``iter_jsonl``,
which check each file's sha256. Writing a transformed part and committing an entity happens
here too: a commit takes the parts its run planned and refuses (``MissingPartError``) when one
has no result, then checks in = out + rejected, and only then writes the manifest; a part a
killed try wrote outside the plan is never listed, so never counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from aleph2alma.accounting import Tally
from aleph2alma.errors import PermanentError
from aleph2alma.refs import Committed, PartRef, PartResult
from aleph2alma.runs import RunRef
from aleph2alma.storage import ArtifactStore, part_name

if TYPE_CHECKING:
    from aleph2alma.phases.context import PhaseContext

RAW = "raw"
ALMA = "alma"
INDEX = "index"
ISSUES = "issues"
PROFILE = "profile"


class MissingPartError(PermanentError):
    """A planned part has no result (its task died, was skipped or returned nothing):
    committing without it would lose its records. Re-run the part, then the commit."""


def planned_results(
    entity: str,
    results: Iterable[PartResult | None],
    planned: Iterable[tuple[str, int]] | None = None,
) -> list[PartResult]:
    """``entity``'s results, one per planned ``(source, index)``, in plan order.

    ``MissingPartError`` names every planned part without a result (``None`` results count as
    missing), and any result twice for one part or outside the plan. Without ``planned``, the
    results themselves are the plan (a commit of one task's own results)."""
    given = list(results)
    mine = [r for r in given if r is not None and r.entity == entity]
    if planned is None:
        if any(r is None for r in given):
            raise MissingPartError(f"{entity}: a part task returned no result; refusing to commit")
        planned = [(r.source, r.index) for r in mine]
    plan = list(dict.fromkeys(planned))
    by_part: dict[tuple[str, int], PartResult] = {}
    problems = []
    for r in mine:
        part = (r.source, r.index)
        if part in by_part:
            problems.append(f"part {r.source} #{r.index} has two results")
        by_part[part] = r
    missing = [p for p in plan if p not in by_part]
    if missing:
        problems.append(
            "planned part(s) " + ", ".join(f"{s} #{i}" for s, i in missing) + " have no result "
            "(the task did not finish)"
        )
    stray = sorted(set(by_part) - set(plan))
    if stray:
        problems.append("part(s) " + ", ".join(f"{s} #{i}" for s, i in stray) + " were not planned")
    if problems:
        raise MissingPartError(f"{entity}: refusing to commit: " + "; ".join(problems))
    return [by_part[p] for p in plan]


def part_tally(results: Sequence[PartResult], what: str) -> Tally:
    """In, out (the ``part`` files' records) and rejected of ``results``, checked balanced."""
    return Tally.total(
        Tally.of(r.records_in, sum(f.records for f in r.files if f.kind == "part"), r.rejected_by_reason)
        for r in results
    ).check(what)


def raw_table(
    ctx: PhaseContext, extract: RunRef, entity: str, source: str, tmp: Path, columns: list[str] | None = None
) -> pa.Table:
    manifest = ctx.store.stage_manifest(ctx.scope_of(extract), "raw", entity)
    return ctx.store.read_table(manifest.parts(source), tmp / f"{entity}-{source}", columns=columns)


def index_table(
    store: ArtifactStore,
    stage: Committed,
    tmp: Path,
    schema: pa.Schema,
    columns: list[str] | None = None,
    read_dictionary: list[str] | None = None,
    filters: Any = None,
) -> pa.Table:
    """The concatenated index parts of a committed stage as ``schema``: only ``columns`` of it
    when given, the ``read_dictionary`` columns dictionary-encoded."""
    files = [f for f in store.manifest(stage.manifest).files if f.kind == "index"]
    return store.read_table(
        files,
        tmp / f"index-{stage.entity}",
        schema=index_schema(schema, columns, read_dictionary),
        columns=columns,
        read_dictionary=read_dictionary,
        filters=filters,
    )


def index_schema(
    schema: pa.Schema, columns: list[str] | None = None, read_dictionary: list[str] | None = None
) -> pa.Schema:
    """``schema`` narrowed to ``columns`` (when given), with the ``read_dictionary`` columns as
    dictionaries."""
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    for name in read_dictionary or []:
        at = schema.get_field_index(name)
        schema = schema.set(at, schema.field(at).with_type(pa.dictionary(pa.int32(), schema.field(at).type)))
    return schema


def rejected_sysnos(store: ArtifactStore, stage: Committed, reason: str) -> list[str]:
    """System numbers of the records a committed ``alma/`` stage rejected for ``reason``."""
    rows = store.iter_jsonl(f for f in store.manifest(stage.manifest).files if f.kind == "rejects")
    return [row["record_id"].rpartition(":")[2] for row in rows if row["reason"] == reason]


@dataclass
class PartOutput:
    """Local files of one transformed part, uploaded together."""

    tmp: Path
    entity: str
    source: str
    index: int

    def path(self, kind: str, ext: str) -> Path:
        return self.tmp / f"{kind}.{ext}"

    def upload(
        self, ctx: PhaseContext, ext: str, tally: Tally, extra: Mapping[str, Any] | None = None
    ) -> PartResult:
        tally.check(f"{self.entity} part {self.source} {self.index}")
        store, scope = ctx.store, ctx.scope
        name = part_name(self.source, self.index, ext)
        files = [
            store.put_file(
                scope.prefix(ALMA, self.entity) + name,
                self.path("out", ext),
                records=tally.records_out,
                rejected=tally.rejected,
                source=self.source,
            )
        ]
        for kind, key in (
            (
                "rejects",
                scope.prefix(ALMA, self.entity) + "rejects/" + part_name(self.source, self.index, "jsonl"),
            ),
            ("issues", scope.prefix(ISSUES, self.entity) + part_name(self.source, self.index, "jsonl")),
            ("index", scope.prefix(INDEX, self.entity) + part_name(self.source, self.index, "parquet")),
        ):
            local = self.path(kind, "parquet" if kind == "index" else "jsonl")
            if local.exists() and local.stat().st_size:
                files.append(
                    store.put_file(
                        key,
                        local,
                        source=self.source,
                        kind=kind,
                        records=0 if kind == "index" else _lines(local),
                    )
                )
        return PartResult(
            entity=self.entity,
            source=self.source,
            index=self.index,
            files=files,
            records_in=tally.records_in,
            rejected_by_reason=dict(tally.rejected_by_reason),
            extra=dict(extra or {}),
        )


def _lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def commit_alma(
    ctx: PhaseContext,
    entity: str,
    results: Iterable[PartResult | None],
    extra: Mapping[str, Any] | None = None,
    planned: Iterable[PartRef] | None = None,
) -> Committed:
    """The entity's ``alma/`` manifest: files, in/out/rejected and rejects by reason.

    With ``planned`` (the parts the run's plan task listed), every one must have its result;
    in = out + rejected is checked before the manifest is written."""
    mine = planned_results(
        entity, results, None if planned is None else [(p.source, p.index) for p in planned]
    )
    tally = part_tally(mine, entity)
    files = [f for r in mine for f in r.files]
    uri = ctx.store.commit(
        ctx.scope,
        ALMA,
        entity,
        files,
        extra={
            "records_in": tally.records_in,
            "rejected_by_reason": dict(sorted(tally.rejected_by_reason.items())),
            **(extra or {}),
        },
    )
    return Committed(
        entity=entity,
        stage=ALMA,
        manifest=uri,
        records=tally.records_out,
        records_in=tally.records_in,
        rejected=tally.rejected,
        extra=dict(extra or {}),
    )
