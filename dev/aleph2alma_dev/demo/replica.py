"""The demo "Aleph replica": the Z-tables of the demo library in SQLite or PostgreSQL.

Tables come from ``ztables.build_metadata`` so the replica reads exactly like Aleph's
Oracle: CHAR values blank-padded to their width, dates as YYYYMMDD integers (0 = unset).
Writing overwrites: tables are dropped and re-created. Rows go in batches: SQLite through
``executemany`` with journalling off, PostgreSQL through ``COPY``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from itertools import islice
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from aleph2alma.aleph.ztables import Z_TABLES, ZTable, build_metadata
from aleph2alma_dev.demo import rows
from aleph2alma_dev.demo.plan import Plan

INSERT_BATCH = 10_000


class ReplicaError(ValueError):
    """The replica database cannot be written as asked (bad URL, schemas SQLite cannot hold)."""


def default_url(out_dir: Path) -> str:
    return f"sqlite:///{out_dir.resolve() / 'replica.sqlite'}"


def _padder(ztable: ZTable) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """Blank-pad CHAR columns to their width, as Oracle returns them; refuse values that do not fit."""
    widths = [c.width if c.kind == "char" else 0 for c in ztable.columns]
    char_cols = [i for i, w in enumerate(widths) if w]
    chars = operator.itemgetter(*char_cols)
    total = sum(widths)

    def pad(row: tuple[Any, ...]) -> tuple[Any, ...]:
        out = tuple([v.ljust(w) if w else v for v, w in zip(row, widths, strict=True)])
        if len("".join(chars(out))) != total:  # ljust never shortens: something is too long
            too_long = [(ztable.columns[i].name, out[i]) for i in char_cols if len(out[i]) > widths[i]]
            raise ReplicaError(f"{ztable.name}: values longer than their CHAR width: {too_long}")
        return out

    return pad


def check_target(db_url: str, schemas: dict[str, str | None]) -> None:
    """Refuse, before any work, a replica that cannot be written as asked."""
    try:
        url = sa.make_url(db_url)
    except sa.exc.ArgumentError as exc:
        raise ReplicaError(f"replica URL {db_url!r} is not a SQLAlchemy URL: {exc}") from exc
    names = sorted({s for s in schemas.values() if s})
    if url.get_backend_name() == "sqlite" and names:
        raise ReplicaError(
            f"SQLite has no schemas; give a PostgreSQL URL for schemas {', '.join(names)} "
            "or leave the settings' schemas empty"
        )


def prepare(db_url: str, schemas: dict[str, str | None]) -> tuple[sa.Engine, dict[str, sa.Table]]:
    """Create (or empty) the replica: schemas if missing, every Z-table dropped and re-created."""
    check_target(db_url, schemas)
    url = sa.make_url(db_url)
    names = sorted({s for s in schemas.values() if s})
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            path = Path(url.database)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    metadata, tables = build_metadata(schemas)
    with engine.begin() as conn:
        for name in names:
            conn.execute(sa.schema.CreateSchema(name, if_not_exists=True))
        metadata.drop_all(conn)
        metadata.create_all(conn)
    return engine, tables


def _batched(values: Iterable[tuple[Any, ...]], size: int) -> Iterable[list[tuple[Any, ...]]]:
    it = iter(values)
    while batch := list(islice(it, size)):
        yield batch


def write_table(engine: sa.Engine, table: sa.Table, ztable: ZTable, values: Iterable[tuple[Any, ...]]) -> int:
    """Insert ``values`` (unpadded, in column order) into ``table``; returns the row count."""
    pad = _padder(ztable)
    columns = [c.name for c in table.columns]
    count = 0
    fast = (engine.dialect.name, engine.dialect.driver) in (("sqlite", "pysqlite"), ("postgresql", "psycopg"))
    if not fast:  # any other database: plain SQLAlchemy executemany
        with engine.begin() as conn:
            for batch in _batched(values, INSERT_BATCH):
                conn.execute(table.insert(), [dict(zip(columns, pad(r), strict=True)) for r in batch])
                count += len(batch)
        return count
    raw = engine.raw_connection()
    try:
        dbapi: Any = raw.driver_connection
        if engine.dialect.name == "sqlite":
            dbapi.execute("PRAGMA journal_mode=OFF")
            dbapi.execute("PRAGMA synchronous=OFF")
            sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            for batch in _batched(values, INSERT_BATCH):
                dbapi.executemany(sql, [pad(r) for r in batch])
                count += len(batch)
        else:
            target = f"{table.schema}.{table.name}" if table.schema else table.name
            with dbapi.cursor() as cur, cur.copy(f"COPY {target} ({', '.join(columns)}) FROM STDIN") as copy:
                for batch in _batched(values, INSERT_BATCH):
                    for r in batch:
                        copy.write_row(pad(r))
                    count += len(batch)
        raw.commit()
    finally:
        raw.close()
    return count


def write_replica(
    plan: Plan, db_url: str, schemas: dict[str, str | None], adm_library: str, libraries: tuple[str, str]
) -> dict[str, int]:
    """Write every demo Z-table; returns rows per table."""
    engine, tables = prepare(db_url, schemas)
    people = rows.patrons(plan, adm_library)
    sources: dict[str, Iterable[tuple[Any, ...]]] = {
        "Z103": rows.z103(plan, adm_library, libraries),
        "Z30": rows.z30(plan),
        **people,
        "Z36": rows.z36(plan),
        "Z37": rows.z37(plan),
        "Z31": rows.z31(plan),
        "Z68": rows.z68(plan),
        "Z70": rows.z70(plan),
        "Z76": rows.z76(plan),
    }
    try:
        return {name: write_table(engine, tables[name], Z_TABLES[name], sources[name]) for name in Z_TABLES}
    finally:
        engine.dispose()
