"""Freeze violations: records Aleph itself stamped as changed after the freeze began.

During the technical-services freeze nobody catalogues, orders or changes configuration in
Aleph; whatever Aleph stamped as changed after the freeze began is not in the cutover delivery
and must be redone in Alma (or the delivery redone). This step reads the cutover extract's raw
parts for Aleph's own change stamps:

- **Z-table update dates** (``ZTable.updated``: Z30_UPDATE_DATE, Z303_UPDATE_DATE). Aleph stamps
  a *day*, ``YYYYMMDD``, in the library's time zone (``[nightly] time_zone``). A row counts when
  its day is on or after the local day the freeze began: with day granularity **the freeze day
  itself counts**, including changes made that morning before the freeze started. That
  overcounts (a librarian can read the list); the other choice, from the next day, would miss
  the afternoon of the freeze day.
- **CAT lines** of bib and holdings records (``aleph.delta.cat_stamp``: ``$$c`` day, ``$$h`` time,
  to the minute, local time). A record counts when its newest CAT line is at or after the
  freeze's local minute. A CAT line without a time reads as 00:00 of its day.

Sources with no stamp (loans, requests, fines, orders, the other patron tables …) cannot be
judged this way; they are listed as not covered (``changes_since_baseline`` hashes them).
A change that leaves no stamp (a batch job, a global change) is not seen here either.

Per entity, the ids go to ``freeze/<entity>/`` (one Parquet file per stamped source: source,
record id, stamp) under a manifest with the counts. ``blocking``: more records than
``threshold`` were changed during the freeze.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aleph2alma.aleph.delta import cat_stamp, seq_records
from aleph2alma.aleph.extract import SEQ_ENTITIES, all_entities
from aleph2alma.aleph.ztables import Z_TABLES
from aleph2alma.cutover import CutoverInputError, Page, Section, write_report
from aleph2alma.phases.context import PhaseContext
from aleph2alma.refs import Ref
from aleph2alma.runs import RunRef
from aleph2alma.stages import RAW
from aleph2alma.storage import StoredFile, part_name

FREEZE = "freeze"
SAMPLE_IDS = 20
"""Record ids per entity shown in the HTML report (all of them are in the entity's file)."""
VIOLATIONS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("record_id", pa.string()),
        pa.field("stamp", pa.int64()),
    ]
)
"""One row per record changed during the freeze; ``stamp``: YYYYMMDD (update date) or
YYYYMMDDHHMM (CAT line)."""


class EntityViolations(Ref):
    entity: str
    records: int
    """Records changed during the freeze."""
    by_source: dict[str, int]
    manifest: str
    """``freeze/<entity>/_MANIFEST.json``: the ids, one Parquet file per stamped source."""
    samples: list[str]
    """The first record ids (at most ``SAMPLE_IDS``), for the gate's body."""


class FreezeViolations(Ref):
    cutover_extract: RunRef
    freeze_started: datetime
    time_zone: str
    from_day: int
    """The first Aleph update date that counts (YYYYMMDD, the freeze's local day)."""
    from_minute: int
    """The first CAT stamp that counts (YYYYMMDDHHMM, the freeze's local minute)."""
    threshold: int
    total: int
    blocking: bool
    """``total > threshold``."""
    entities: dict[str, EntityViolations]
    not_covered: dict[str, list[str]]
    """Entity → its sources that carry no change stamp (not judged here)."""
    report_html: str
    report_json: str


def local_start(freeze_started: datetime, time_zone: str) -> tuple[int, int]:
    """(YYYYMMDD, YYYYMMDDHHMM) of the freeze's start in the library's time zone; a start without
    an offset is read in that time zone."""
    zone = ZoneInfo(time_zone)
    local = (freeze_started if freeze_started.tzinfo else freeze_started.replace(tzinfo=zone)).astimezone(
        zone
    )
    day = local.year * 10_000 + local.month * 100 + local.day
    return day, day * 10_000 + local.hour * 100 + local.minute


def _table_violations(source: str, parts: list[Path], from_day: int) -> pa.Table:
    ztable = Z_TABLES[source]
    found = [VIOLATIONS_SCHEMA.empty_table()]
    for path in parts:
        for batch in pq.ParquetFile(path).iter_batches(columns=[ztable.key, ztable.updated]):
            stamp = pc.fill_null(pc.cast(batch.column(ztable.updated), pa.int64()), 0)
            hit = pc.greater_equal(stamp, from_day)
            ids = pc.utf8_trim_whitespace(pc.cast(batch.column(ztable.key), pa.string()))
            found.append(
                pa.table(
                    {
                        "source": pa.array([source] * int(pc.sum(hit).as_py() or 0), pa.string()),
                        "record_id": ids.filter(hit),
                        "stamp": stamp.filter(hit),
                    },
                    schema=VIOLATIONS_SCHEMA,
                )
            )
    return pa.concat_tables(found)


def _seq_violations(source: str, parts: list[Path], from_minute: int) -> pa.Table:
    ids, stamps = [], []
    for sysno, raw in seq_records(parts):
        stamp = cat_stamp(raw)
        if stamp >= from_minute:
            ids.append(sysno)
            stamps.append(stamp)
    return pa.table(
        {"source": [source] * len(ids), "record_id": ids, "stamp": stamps}, schema=VIOLATIONS_SCHEMA
    )


def _stamped(entity: str, source: str) -> bool:
    return entity in SEQ_ENTITIES or bool(source in Z_TABLES and Z_TABLES[source].updated)


def _entity_violations(
    ctx: PhaseContext, cutover: RunRef, entity: str, sources: list[str], from_day: int, from_minute: int
) -> EntityViolations:
    store = ctx.store
    manifest = store.stage_manifest(ctx.scope_of(cutover), RAW, entity)
    files: list[StoredFile] = []
    by_source: dict[str, int] = {}
    samples: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for source in sources:
            parts = store.local_copies(manifest.parts(source), tmp / source)
            if entity in SEQ_ENTITIES:
                found = _seq_violations(source, parts, from_minute)
            else:
                found = _table_violations(source, parts, from_day)
            found = found.sort_by([("record_id", "ascending")])
            path = tmp / f"{source}-freeze.parquet"
            pq.write_table(found, path, compression="zstd")
            files.append(
                store.put_file(
                    ctx.scope.prefix(FREEZE, entity) + part_name(source, 0, "parquet"),
                    path,
                    records=found.num_rows,
                    source=source,
                )
            )
            by_source[source] = found.num_rows
            samples += found.column("record_id").slice(0, SAMPLE_IDS - len(samples)).to_pylist()
    total = sum(by_source.values())
    uri = store.commit(
        ctx.scope,
        FREEZE,
        entity,
        files,
        extra={"records": total, "by_source": by_source, "cutover_extract": str(cutover)},
    )
    return EntityViolations(entity=entity, records=total, by_source=by_source, manifest=uri, samples=samples)


def freeze_violations(
    ctx: PhaseContext,
    cutover_extract: RunRef,
    freeze_started: datetime,
    threshold: int,
    only: Collection[str] | None = None,
) -> FreezeViolations:
    """Records of ``cutover_extract`` that Aleph stamped as changed on or after the freeze began
    (see the module docstring for what counts); ``blocking`` when there are more than ``threshold``.
    ``only``: judge only these entities (the technical-services freeze does not stop circulation, so patrons
    change in it by right); None: every entity the extract committed."""
    if threshold < 0:
        raise ValueError(
            f"threshold {threshold} must be 0 or more: the records allowed to change in the freeze"
        )
    zone = ctx.settings.nightly.time_zone
    from_day, from_minute = local_start(freeze_started, zone)
    store, scope = ctx.store, ctx.scope_of(cutover_extract)
    judged = [e for e in all_entities() if only is None or e in only]
    committed = [e for e in judged if store.stage_committed(scope, RAW, e)]
    if not committed:
        raise CutoverInputError(
            f"extract {cutover_extract} has committed no raw stage ({scope.prefix(RAW)}): give the cutover's "
            "finished migration_extract run"
        )
    entities: dict[str, EntityViolations] = {}
    not_covered: dict[str, list[str]] = {}
    for entity in committed:
        sources = sorted({f.source for f in store.stage_manifest(scope, RAW, entity).parts()})
        stamped = [s for s in sources if _stamped(entity, s)]
        if unstamped := [s for s in sources if not _stamped(entity, s)]:
            not_covered[entity] = unstamped
        if stamped:
            entities[entity] = _entity_violations(
                ctx, cutover_extract, entity, stamped, from_day, from_minute
            )
    total = sum(e.records for e in entities.values())
    blocking = total > threshold
    hit = [e for e in entities.values() if e.records]
    page = Page(
        title="Freeze violations",
        state="blocked" if blocking else ("attention" if total else "ok"),
        status="BLOCKING" if blocking else ("WITHIN THRESHOLD" if total else "NO CHANGES"),
        summary=f"{total:,} record(s) changed in Aleph since the freeze began "
        f"({freeze_started.isoformat()}); {threshold:,} allowed.",
        points=[
            f"{e.entity}: {e.records:,} ({', '.join(e.samples)}{' …' if e.records > len(e.samples) else ''})"
            for e in hit
        ],
        meta={"cutover extract": str(cutover_extract), "time zone": zone},
        sections=[
            Section(
                "entities",
                "Records changed during the freeze",
                ["entity", "source", "records"],
                [
                    {"entity": e.entity, "source": source, "records": n}
                    for e in entities.values()
                    for source, n in e.by_source.items()
                ],
                numeric=("records",),
                note=f"Update dates count from {from_day} (the freeze's local day: the whole day counts, "
                f"Aleph stamps days); CAT lines from {from_minute // 10_000} {from_minute % 10_000:04d}. "
                "Each freeze/<entity>/ manifest lists the record ids.",
            ),
            Section(
                "not-covered",
                "Sources without a change stamp (not judged here)",
                ["entity", "sources"],
                [{"entity": e, "sources": ", ".join(s)} for e, s in not_covered.items()],
                note="Their changes are in the changes-since-baseline report (record hashes).",
            ),
        ],
    )
    data = {
        "cutover_extract": str(cutover_extract),
        "freeze_started": freeze_started.isoformat(),
        "time_zone": zone,
        "from_day": from_day,
        "from_minute": from_minute,
        "threshold": threshold,
        "total": total,
        "blocking": blocking,
        "entities": {name: e.model_dump() for name, e in entities.items()},
        "not_covered": not_covered,
    }
    html, report = write_report(ctx, FREEZE, page, data)
    return FreezeViolations(
        cutover_extract=cutover_extract,
        freeze_started=freeze_started,
        time_zone=zone,
        from_day=from_day,
        from_minute=from_minute,
        threshold=threshold,
        total=total,
        blocking=blocking,
        entities=entities,
        not_covered=not_covered,
        report_html=html,
        report_json=report,
    )
