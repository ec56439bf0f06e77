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

from aleph2alma.aleph.alephseq import check_line, iter_raw_records, split_ranges
from aleph2alma.aleph.landing import Landing
from aleph2alma.aleph.ztables import Z_TABLES, ZTable, table_entities
from aleph2alma.rejects import Reject, RejectLog
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
        raise ExtractError(f"unknown entit{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                           f"known: {', '.join(all_entities())}")


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
        specs += [PartSpec(entity, library, i, "alephseq", name, start, end) for i, (start, end) in enumerate(ranges)]
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
            keys = conn.execution_options(yield_per=settings.db_chunk_rows).execute(sa.select(key).order_by(key))
            bounds = [k for i, (k,) in enumerate(keys) if i and i % settings.part_rows == 0]
    edges: list[str | None] = [None, *bounds, None]
    return [PartSpec(ztable.entity, ztable.name, i, "table", lo_key=edges[i], hi_key=edges[i + 1])
            for i in range(len(edges) - 1)]


def plan(settings: MigrationSettings, entities: list[str], *, engine: sa.Engine | None,
         landing: Landing | None) -> list[PartSpec]:
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
    return pa.schema([pa.field(c.name, pa.string() if c.kind == "char" else pa.int64()) for c in ztable.columns])


def _row_batches(engine: sa.Engine, settings: MigrationSettings, ztable: ZTable, spec: PartSpec,
                 schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    table = _sa_table(ztable, settings)
    key = table.c[ztable.key.lower()]
    query = sa.select(*(table.c[c.name.lower()] for c in ztable.columns)).order_by(key)
    if spec.lo_key is not None:
        query = query.where(key >= spec.lo_key)
    if spec.hi_key is not None:
        query = query.where(key < spec.hi_key)
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=settings.db_chunk_rows).execute(query)
        for chunk in result.partitions():
            columns = list(zip(*chunk, strict=True))
            yield pa.RecordBatch.from_arrays(
                [pa.array(col, type=field.type) for col, field in zip(columns, schema, strict=True)], schema=schema
            )


def extract_table_part(engine: sa.Engine, settings: MigrationSettings, spec: PartSpec, out: Path) -> PartResult:
    """Copy one key range of a Z-table to a Parquet file."""
    ztable = Z_TABLES[spec.source]
    schema = arrow_schema(ztable)
    rows = 0
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for batch in _row_batches(engine, settings, ztable, spec, schema):
            writer.write_batch(batch)
            rows += batch.num_rows
        if rows == 0:
            writer.write_table(schema.empty_table())
    return PartResult(rows)


def extract_alephseq_part(landing: Landing, spec: PartSpec, out: Path, rejects_out: Path) -> PartResult:
    """Copy one byte range of an ALEPHSEQ export; count its records, report malformed lines."""
    with open(out, "wb") as fh:
        for block in landing.read_range(spec.file, spec.start, spec.end):
            fh.write(block)
    if out.stat().st_size != spec.end - spec.start:
        raise ExtractError(f"{spec.file}: expected {spec.end - spec.start} bytes at offset {spec.start}, "
                           f"got {out.stat().st_size}; was the export replaced during extraction?")
    records = 0
    with open(out, "rb") as fh, open(rejects_out, "w", encoding="utf-8") as rej:
        log = RejectLog(rej)
        offset = spec.start
        for sysno, _line_no, raw in iter_raw_records(fh):
            records += 1
            for line in raw.splitlines(keepends=True):
                reason = check_line(line) if line.strip() else None
                if reason:
                    log.add(Reject(spec.entity, f"{spec.source}:{sysno}", reason,
                                   detail=f"byte offset {offset}", source=spec.file,
                                   raw=line.decode("utf-8", "replace").rstrip("\r\n")))
                offset += len(line)
    return PartResult(records, log.total)
