"""Tonight's state of one source and its diff with the baseline: the reading side of the delta.

One source is a Z-table (read from the Aleph database) or a BIB/HOL library's ALEPHSEQ export
(read from the landing location). ``table_delta`` and ``seq_delta`` read it, build its new
baseline (``aleph.delta``), compare it with the previous one and write the new and changed
records, in the raw extract's own format (Parquet rows with the extract's schema, ALEPHSEQ
lines byte for byte), so whatever reads a raw part reads a delta part. ``previous_baseline``
builds the baseline of a full extract's raw parts, for the first night.

Memory: a source's baseline (key, hash, stamp and the few columns the rules read) is held
whole, about 60-100 bytes a record (~0.5 GB for 4.8M items); rows themselves stream through a
local Parquet file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from aleph2alma.aleph.delta import (
    SEQ_KEY,
    ChangeCounts,
    SourceLayout,
    baseline_rows,
    compare,
    seq_baseline,
    wanted_keys,
    ymd,
)
from aleph2alma.aleph.extract import arrow_schema, query_batches, select_rows
from aleph2alma.aleph.ztables import Z_TABLES
from aleph2alma.settings import MigrationSettings

BY_UPDATE_DATE, BY_HASH = "update_date", "hash"
KEYS_PER_QUERY = 500
"""Keys per ``IN (…)`` list when rows are fetched by key (Oracle allows 1,000)."""


@dataclass
class SourceDelta:
    """One source's night: its new baseline, what changed, and the file of new and changed records."""

    layout: SourceLayout
    mode: str
    """``update_date``: read by Aleph's update date plus a key scan; ``hash``: every record hashed."""
    baseline: pa.Table
    changes: pa.Table
    counts: ChangeCounts
    delta_file: Path
    delta_records: int


def _finish(
    layout: SourceLayout,
    mode: str,
    previous: pa.Table,
    current: pa.Table,
    changes: pa.Table,
    delta_file: Path,
    written: int,
) -> SourceDelta:
    counts = ChangeCounts.of(changes, previous.num_rows, current.num_rows, layout.stamped)
    counts.check(f"{layout.entity} {layout.source}")
    if written != counts.new + counts.changed:
        raise RuntimeError(
            f"{layout.source}: {written} records written to the delta, "
            f"but {counts.new} new + {counts.changed} changed were found"
        )
    return SourceDelta(layout, mode, current, changes, counts, delta_file, written)


# --- Z-tables ---------------------------------------------------------------------------------


def _write_rows(batches: Iterable[pa.RecordBatch], path: Path, layout: SourceLayout) -> pa.Table:
    """Write ``batches`` to ``path`` (the extract's schema) and return their baseline rows."""
    schema = arrow_schema(Z_TABLES[layout.source])
    found = [layout.schema().empty_table()]
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        writer.write_table(schema.empty_table())
        for batch in batches:
            writer.write_batch(batch)
            found.append(baseline_rows(batch, layout))
    return pa.concat_tables(found)


def _rows_of(src: Path, key: str, wanted: pa.Array, out: Path) -> int:
    """Copy the rows of ``src`` whose ``key`` is in ``wanted`` to ``out``; returns how many."""
    parquet = pq.ParquetFile(src)
    written = 0
    with pq.ParquetWriter(out, parquet.schema_arrow, compression="zstd") as writer:
        writer.write_table(parquet.schema_arrow.empty_table())
        if len(wanted):
            for batch in parquet.iter_batches():
                chosen = batch.filter(pc.is_in(batch.column(key), value_set=wanted))
                writer.write_batch(chosen)
                written += chosen.num_rows
    return written


def _chunks(values: list[str], size: int) -> Iterator[list[str]]:
    for at in range(0, len(values), size):
        yield values[at : at + size]


def table_delta(
    engine: sa.Engine,
    settings: MigrationSettings,
    layout: SourceLayout,
    previous: pa.Table,
    tmp: Path,
    *,
    since: date | None,
) -> SourceDelta:
    """Tonight's rows of one Z-table against ``previous`` (its baseline).

    By update date when the table has that column, ``[nightly] by_update_date`` is on, there is
    a window start (``since``: the first local day to read) and the previous baseline keeps
    every column this one does; otherwise every row is read and hashed.
    """
    ztable = Z_TABLES[layout.source]
    table, everything = select_rows(ztable, settings)
    key = table.c[ztable.key.lower()]
    schema, chunk = arrow_schema(ztable), settings.db_chunk_rows
    rows = tmp / f"{layout.source}-rows.parquet"
    out = tmp / f"{layout.source}-delta.parquet"
    stamped_read = (
        since is not None
        and bool(ztable.updated)
        and settings.nightly.by_update_date
        and layout.fits(previous)
    )
    if not stamped_read:
        current = _write_rows(query_batches(engine, everything, schema, chunk), rows, layout)
        changes = compare(previous, current, layout.key)
        written = _rows_of(rows, layout.key, wanted_keys(changes), out)
        return _finish(layout, BY_HASH, previous, current, changes, out, written)

    assert since is not None
    key_schema = pa.schema([schema.field(ztable.key)])
    scanned = [b.column(0) for b in query_batches(engine, sa.select(key).order_by(key), key_schema, chunk)]
    keys = pa.chunked_array(scanned, pa.string()).combine_chunks()
    before = previous.column(layout.key).combine_chunks()
    stamped_since = everything.where(table.c[ztable.updated.lower()] >= ymd(since))
    read: list[pa.Array] = [pa.array([], pa.string())]

    def candidates() -> Iterator[pa.RecordBatch]:
        for batch in query_batches(engine, stamped_since, schema, chunk):
            read.append(batch.column(ztable.key))
            yield batch
        # Rows inserted since the baseline but stamped before `since` (or not at all): by key.
        known = pc.or_kleene(
            pc.is_in(keys, value_set=before), pc.is_in(keys, value_set=pa.concat_arrays(read))
        )
        for part in _chunks(keys.filter(pc.invert(known)).to_pylist(), KEYS_PER_QUERY):
            yield from query_batches(engine, everything.where(key.in_(part)), schema, chunk)

    fresh = _write_rows(candidates(), rows, layout)
    kept = pc.and_kleene(
        pc.is_in(before, value_set=keys),
        pc.invert(pc.is_in(before, value_set=fresh.column(layout.key).combine_chunks())),
    )
    carried = previous.select(layout.schema().names).cast(layout.schema()).filter(kept)
    current = pa.concat_tables([carried, fresh]).sort_by(layout.key)
    changes = compare(previous, current, layout.key)
    written = _rows_of(rows, layout.key, wanted_keys(changes), out)
    return _finish(layout, BY_UPDATE_DATE, previous, current, changes, out, written)


# --- ALEPHSEQ exports ---------------------------------------------------------------------------


def seq_delta(export: Path, layout: SourceLayout, previous: pa.Table, tmp: Path) -> SourceDelta:
    """Tonight's export of one BIB/HOL library against ``previous``: every record hashed (the export
    is read whole anyway); its CAT lines tell recorded changes from unrecorded ones."""
    sizes: list[int] = []
    current = seq_baseline([export], layout, sizes)
    changes = compare(previous, current, SEQ_KEY)
    wanted = np.flatnonzero(pc.is_in(current.column(SEQ_KEY), value_set=wanted_keys(changes)).to_numpy())
    starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    out = tmp / f"{layout.source}-delta.seq"
    with open(export, "rb") as src, open(out, "wb") as fh:
        for at in wanted.tolist():  # the records again, by seeking: no second parse of the export
            src.seek(int(starts[at]))
            fh.write(src.read(sizes[at]))
    return _finish(layout, BY_HASH, previous, current, changes, out, len(wanted))


# --- the first night: a full extract's raw parts as the baseline --------------------------------


def previous_baseline(layout: SourceLayout, raw_parts: list[Path]) -> pa.Table:
    """The baseline of a full extract's raw parts of one source (in the manifest's order)."""
    if layout.kind == "alephseq":
        return seq_baseline(raw_parts, layout)
    found = [layout.schema().empty_table()]
    for path in raw_parts:
        for batch in pq.ParquetFile(path).iter_batches():
            found.append(baseline_rows(batch, layout))
    return pa.concat_tables(found)
