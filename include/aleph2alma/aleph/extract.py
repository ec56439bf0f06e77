"""Full extraction: plan an entity into parts, then copy each part out of Aleph.

Two kinds of source:

- Z-tables (items, patrons, loans, …) are read from the Aleph database in key ranges and
  written as Parquet, one file per part, values exactly as Aleph holds them (blank-padded).
- BIB and HOL records come from ALEPHSEQ exports and are copied byte for byte in ranges
  that end on record boundaries; each part is counted and its malformed lines reported.

Planning is cheap and deterministic, so a retried part writes the same key with the same
content. Parts are independent, which is what lets Airflow map them over workers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from aleph2alma.aleph.alephseq import AlephSeqError, LineRejects, RawLine, count_records, split_ranges
from aleph2alma.aleph.landing import Landing
from aleph2alma.aleph.ztables import Z_TABLES, ZTable, table_entities
from aleph2alma.rejects import RejectLog
from aleph2alma.settings import MigrationSettings

SEQ_ENTITIES = ("bibs", "holdings")


def all_entities() -> list[str]:
    return [*SEQ_ENTITIES, *table_entities()]


class ExtractError(RuntimeError):
    """A part could not be extracted (the source changed under us, or is unreadable)."""


@dataclass(frozen=True)
class PartSpec:
    """One unit of extraction work; small enough to travel through XCom."""

    entity: str
    source: str  # BIB/HOL library code (ALEPHSEQ) or Z-table name
    index: int
    kind: str  # "alephseq" | "table"
    file: str = ""
    start: int = 0
    end: int = 0
    lo_key: str | None = None
    hi_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartSpec:
        return cls(**data)

    @property
    def ext(self) -> str:
        return "seq" if self.kind == "alephseq" else "parquet"


@dataclass(frozen=True)
class PartResult:
    records: int
    malformed_lines: int = 0  # ALEPHSEQ lines reported as rejects; the raw copy keeps them


def _check_entities(entities: list[str]) -> None:
    unknown = sorted(set(entities) - set(all_entities()))
    if unknown:
        raise ExtractError(
            f"unknown entit{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
            f"known: {', '.join(all_entities())}"
        )


def seq_sources(settings: MigrationSettings, entity: str) -> list[tuple[str, str]]:
    """(library code, export file) pairs behind an ALEPHSEQ entity."""
    if entity == "bibs":
        return [(lib.code, lib.file or f"{lib.code}.seq") for lib in settings.bib_libraries]
    return [(settings.hol_library, settings.hol_file)]


# --- planning ---------------------------------------------------------------------------


def plan_alephseq(settings: MigrationSettings, landing: Landing, entity: str) -> list[PartSpec]:
    specs: list[PartSpec] = []
    for library, name in seq_sources(settings, entity):
        with tempfile.TemporaryDirectory() as tmp:
            local = landing.fetch(name, Path(tmp) / name)
            ranges = split_ranges(local, settings.part_bytes)
        specs += [
            PartSpec(entity, library, i, "alephseq", name, start, end)
            for i, (start, end) in enumerate(ranges)
        ]
    return specs


def _sa_table(ztable: ZTable, settings: MigrationSettings) -> sa.Table:
    return ztable.sa_table(sa.MetaData(), settings.schemas.get(ztable.library))


def plan_table(engine: sa.Engine, settings: MigrationSettings, ztable: ZTable) -> list[PartSpec]:
    """Split a Z-table into key ranges of about ``part_rows`` rows (keyset, not OFFSET)."""
    table = _sa_table(ztable, settings)
    key = table.c[ztable.key.lower()]
    bounds: list[str] = []
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        if total > settings.part_rows:
            keys = conn.execution_options(yield_per=settings.db_chunk_rows).execute(
                sa.select(key).order_by(key)
            )
            bounds = [k for i, (k,) in enumerate(keys) if i and i % settings.part_rows == 0]
    edges: list[str | None] = [None, *bounds, None]
    return [
        PartSpec(ztable.entity, ztable.name, i, "table", lo_key=edges[i], hi_key=edges[i + 1])
        for i in range(len(edges) - 1)
    ]


def plan(
    settings: MigrationSettings, entities: list[str], *, engine: sa.Engine | None, landing: Landing | None
) -> list[PartSpec]:
    """Every part of every requested entity, in a stable order."""
    _check_entities(entities)
    specs: list[PartSpec] = []
    for entity in entities:
        if entity in SEQ_ENTITIES:
            if landing is None:
                raise ExtractError(f"{entity} come from ALEPHSEQ exports: give the landing location")
            specs += plan_alephseq(settings, landing, entity)
        else:
            if engine is None:
                raise ExtractError(f"{entity} come from Z-tables: the aleph_db connection is needed")
            for ztable in (t for t in Z_TABLES.values() if t.entity == entity):
                specs += plan_table(engine, settings, ztable)
    return specs


# --- extraction -------------------------------------------------------------------------


def arrow_schema(ztable: ZTable) -> pa.Schema:
    """The raw Parquet schema: the extracted columns only (no PIN or password column)."""
    return pa.schema(
        [pa.field(c.name, pa.string() if c.kind == "char" else pa.int64()) for c in ztable.extracted]
    )


def query_batches(
    engine: sa.Engine, query: sa.Select[Any], schema: pa.Schema, chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    """The rows of ``query`` (its columns in ``schema``'s order) as record batches of ``chunk_rows``.

    A value that is not of its column's type (bytes that are not UTF-8 in a CHAR column, text
    or a number past 64 bits in a NUMBER column: impossible in Aleph's Oracle, possible in a
    damaged replica) is an :class:`ExtractError` naming the column, the row's first column
    (the key) and the value, never a bare Arrow traceback.
    """
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=chunk_rows).execute(query)
        for chunk in result.partitions():
            columns = list(zip(*chunk, strict=True))
            yield pa.RecordBatch.from_arrays(
                [_arrow(col, field, columns[0]) for col, field in zip(columns, schema, strict=True)],
                schema=schema,
            )


_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeError)


def _arrow(values: tuple[Any, ...], field: pa.Field, keys: tuple[Any, ...]) -> pa.Array:
    try:
        return pa.array(values, type=field.type)
    except _CONVERSION_ERRORS as exc:
        for key, value in zip(keys, values, strict=True):
            try:
                pa.array([value], type=field.type)
            except _CONVERSION_ERRORS:
                shown = repr(value)[:80]
                raise ExtractError(
                    f"column {field.name.upper()}, row {str(key)[:40]!r}: {shown} is not {field.type} "
                    f"({type(exc).__name__}); the database holds a value Aleph's schema does not allow"
                ) from exc
        raise ExtractError(f"column {field.name.upper()}: {exc}") from exc


def select_rows(ztable: ZTable, settings: MigrationSettings) -> tuple[sa.Table, sa.Select[Any]]:
    """The Z-table as SQLAlchemy sees it, and a SELECT of its extracted columns in key order
    (secret columns, PINs and passwords, are never named)."""
    table = _sa_table(ztable, settings)
    query = sa.select(*(table.c[c.name.lower()] for c in ztable.extracted)).order_by(
        table.c[ztable.key.lower()]
    )
    return table, query


def _row_batches(
    engine: sa.Engine, settings: MigrationSettings, ztable: ZTable, spec: PartSpec, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    table, query = select_rows(ztable, settings)
    key = table.c[ztable.key.lower()]
    if spec.lo_key is not None:
        query = query.where(key >= spec.lo_key)
    if spec.hi_key is not None:
        query = query.where(key < spec.hi_key)
    yield from query_batches(engine, query, schema, settings.db_chunk_rows)


def extract_table_part(
    engine: sa.Engine, settings: MigrationSettings, spec: PartSpec, out: Path
) -> PartResult:
    """Copy one key range of a Z-table to a Parquet file."""
    ztable = Z_TABLES[spec.source]
    schema = arrow_schema(ztable)
    rows = 0
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        try:
            for batch in _row_batches(engine, settings, ztable, spec, schema):
                writer.write_batch(batch)
                rows += batch.num_rows
        except ExtractError as exc:
            raise ExtractError(f"{spec.source} part {spec.index}: {exc}") from exc
        if rows == 0:
            writer.write_table(schema.empty_table())
    return PartResult(rows)


def extract_alephseq_part(landing: Landing, spec: PartSpec, out: Path, rejects_out: Path) -> PartResult:
    """Copy one byte range of an ALEPHSEQ export; count its records, report malformed lines.

    Lines are read in bounded memory (``alephseq.count_records``): an over-long line is one
    ``line_too_long`` reject with an excerpt, and past ``alephseq.MAX_LINE_REJECTS`` malformed
    lines the rest are counted in one reject, so the rejects file stays small whatever the
    input. ``malformed_lines`` is the number of rejects written. A record counts when it has
    a valid line: a file of garbage has no record.
    """
    with open(out, "wb") as copy:
        for block in landing.read_range(spec.file, spec.start, spec.end):
            copy.write(block)
    if out.stat().st_size != spec.end - spec.start:
        raise ExtractError(
            f"{spec.file}: expected {spec.end - spec.start} bytes at offset {spec.start}, "
            f"got {out.stat().st_size}; was the export replaced during extraction?"
        )
    with open(out, "rb") as fh, open(rejects_out, "w", encoding="utf-8") as rej:
        bad = LineRejects(RejectLog(rej).add, spec.entity, spec.file)

        def on_invalid(line: RawLine, sysno: str) -> None:
            if line.reason != "blank":
                bad.reject(line, f"{spec.source}:{sysno or '?'}", detail=f"byte offset {line.offset:,}")

        try:
            records = count_records(fh, on_invalid, offset=spec.start)
        except AlephSeqError as exc:
            raise ExtractError(f"{spec.file}: {exc}") from exc
        bad.close()
    return PartResult(records, bad.written)
