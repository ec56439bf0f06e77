"""The nightly delta over consecutive nights, on a copy of the tiny demo library and a real S3 endpoint.

Between nights the tests change the Aleph replica (SQL on its Z-tables) and the ALEPHSEQ exports
as Aleph would: an item edited (its Z30_UPDATE_DATE moves), a loan returned (its Z36 row goes),
a bib edited in cataloguing (a new CAT line), a holdings record changed by a batch job (no CAT
line). Every night has a fixed date (02:00 in Shanghai): no test reads the clock.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from aleph2alma import pipeline, state
from aleph2alma import settings as settings_mod
from aleph2alma.aleph.db import create_engine
from aleph2alma.aleph.delta import DeltaError, record_hash
from aleph2alma.aleph.landing import LocalLanding
from aleph2alma.aleph.ztables import Z_TABLES
from aleph2alma.phases import delta as delta_phase
from aleph2alma.phases.context import PhaseContext
from aleph2alma.runs import RunRef
from aleph2alma.state import NoSuchRun
from aleph2alma.storage import ArtifactStore, RunScope

AS_OF = date(2026, 11, 1)
NIGHTS = [datetime(2026, 11, d, 18, 0, tzinfo=UTC) for d in (1, 2, 3, 4)]  # 02:00 the next day, UTC+8
DAY = {n: int(f"202611{d:02d}") for n, d in zip(range(4), (1, 2, 3, 4), strict=True)}  # Shanghai days


@pytest.fixture
def library(tiny_library: Path, tmp_path: Path) -> Path:
    """A copy of the tiny library that a test may change."""
    return Path(shutil.copytree(tiny_library, tmp_path / "library"))


@pytest.fixture
def settings():
    return replace(settings_mod.load("demo"), part_rows=400, part_bytes=32_768)


class Aleph:
    """The library under test: its replica (SQL) and its exports (ALEPHSEQ files)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.engine = create_engine(f"sqlite:///{root / 'replica.sqlite'}")
        self.landing = LocalLanding(root / "alephseq")

    # --- Z-tables ---------------------------------------------------------------------------

    def _sql(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.root / "replica.sqlite") as db:
            return db.execute(sql, args).fetchall()

    @staticmethod
    def _padded(table: str, values: dict[str, Any]) -> dict[str, Any]:
        widths = {c.name: c.width for c in Z_TABLES[table].columns if c.kind == "char"}
        return {k: v.ljust(widths[k]) if k in widths else v for k, v in values.items()}

    def keys(self, table: str) -> list[str]:
        key = Z_TABLES[table].key
        return [r[0] for r in self._sql(f"SELECT {key} FROM {table} ORDER BY {key}")]

    def item_not_on_loan(self) -> str:
        return self._sql(
            "SELECT min(z30_rec_key) FROM z30 WHERE z30_rec_key NOT IN (SELECT z36_rec_key FROM z36)"
        )[0][0]

    def update(self, table: str, key: str, **values: Any) -> None:
        values = self._padded(table, values)
        sets = ", ".join(f"{c} = ?" for c in values)
        self._sql(f"UPDATE {table} SET {sets} WHERE {Z_TABLES[table].key} = ?", (*values.values(), key))

    def insert_like(self, table: str, template: str, key: str, **values: Any) -> None:
        """A new row: ``template``'s values, with ``key`` and ``values``."""
        names = [c.name for c in Z_TABLES[table].columns]
        (row,) = self._sql(
            f"SELECT {', '.join(names)} FROM {table} WHERE {Z_TABLES[table].key} = ?", (template,)
        )
        new = dict(zip(names, row, strict=True)) | self._padded(table, {Z_TABLES[table].key: key, **values})
        self._sql(
            f"INSERT INTO {table} ({', '.join(new)}) VALUES ({', '.join('?' * len(new))})",
            tuple(new.values()),
        )

    def delete(self, table: str, key: str) -> None:
        self._sql(f"DELETE FROM {table} WHERE {Z_TABLES[table].key} = ?", (key,))

    # --- ALEPHSEQ exports --------------------------------------------------------------------

    def _lines(self, name: str) -> list[bytes]:
        return (self.root / "alephseq" / name).read_bytes().splitlines(keepends=True)

    def _write(self, name: str, lines: list[bytes]) -> None:
        (self.root / "alephseq" / name).write_bytes(b"".join(lines))

    def edit_record(self, name: str, sysno: str, tag: str, data: str, cat_day: int | None) -> None:
        """Replace the data of field ``tag`` (indicators kept); with ``cat_day``, add the CAT line a
        save writes."""
        out = []
        for line in self._lines(name):
            if line.startswith(f"{sysno} {tag}".encode()) and line[10:13] == tag.encode():
                line = line[:18] + data.encode() + b"\n"
            out.append(line)
            if cat_day and line.startswith(f"{sysno} CAT".encode()):
                out.append(f"{sysno} CAT   L $$aCATWW01$$b00$$c{cat_day}$$l{name[:5]}$$h0930\n".encode())
        self._write(name, out)

    def delete_record(self, name: str, sysno: str) -> None:
        self._write(name, [line for line in self._lines(name) if not line.startswith(sysno.encode())])

    def append_record(self, name: str, template: str, sysno: str) -> None:
        """A new record: a copy of ``template`` under a new system number."""
        lines = [line for line in self._lines(name) if line.startswith(template.encode())]
        self._write(name, self._lines(name) + [sysno.encode() + line[9:] for line in lines])

    def records(self, name: str) -> dict[str, bytes]:
        from aleph2alma.aleph.delta import seq_records

        return dict(seq_records([self.root / "alephseq" / name]))


def _ctx(store: ArtifactStore, settings, dag_id: str, run_id: str) -> PhaseContext:
    return PhaseContext(store, RunScope("demo", dag_id, run_id), settings, AS_OF)


def _extract(store, settings, aleph: Aleph, run_id: str) -> None:
    pipeline.extract(_ctx(store, settings, "migration_extract", run_id), aleph.engine, aleph.landing)


def _night(store, settings, aleph: Aleph, run_id: str, end: datetime, **window: str) -> pipeline.Night:
    ctx = _ctx(store, settings, "aleph_nightly_delta", run_id)
    return pipeline.nightly_delta(ctx, aleph.engine, aleph.landing, end, **window)


def _counts(night: pipeline.Night, entity: str) -> tuple[int, int, int]:
    extra = night.stages[entity].extra
    return extra["new"], extra["changed"], extra["deleted"]


# --- what a run holds, record by record (content, not hashes: the test must not trust the hashing) ---


def _raw_records(store: ArtifactStore, scope: RunScope, stage: str, tmp: Path) -> dict[tuple[str, str], Any]:
    """(source, key) → record content of every part of ``stage`` (raw extract or delta)."""
    from aleph2alma.aleph.delta import DuplicateKeys, seq_records

    found: dict[tuple[str, str], Any] = {}
    for entity in ("bibs", "holdings", "links", "items", "patrons", "loans", "requests", "fines", "orders"):
        manifest = store.stage_manifest(scope, stage, entity)
        by_source: dict[str, list[Path]] = {}
        for f in manifest.parts():
            by_source.setdefault(f.source, []).extend(store.local_copies([f], tmp / stage / f.source / f.key))
        for source, paths in by_source.items():
            if source in Z_TABLES:
                key = Z_TABLES[source].key
                for path in paths:
                    for row in pq.read_table(path).to_pylist():
                        found[(source, row[key])] = tuple(row.values())
            else:
                keys = DuplicateKeys()
                for sysno, raw in seq_records(paths):
                    found[(source, keys.key(sysno))] = raw
    return found


def _deleted(store: ArtifactStore, scope: RunScope, tmp: Path) -> set[tuple[str, str]]:
    gone: set[tuple[str, str]] = set()
    for entity in ("bibs", "holdings", "links", "items", "patrons", "loans", "requests", "fines", "orders"):
        for f in store.stage_manifest(scope, "delta", entity).files:
            if f.kind == "changes":
                (path,) = store.local_copies([f], tmp / "changes" / f.key)
                gone |= {
                    (f.source, r["key"]) for r in pq.read_table(path).to_pylist() if r["change"] == "deleted"
                }
    return gone


def _night_scope(night: pipeline.Night, run_id: str) -> RunScope:
    return RunScope("demo", "aleph_nightly_delta", run_id)


# --- the tests -------------------------------------------------------------------------------------


def _first_changes(aleph: Aleph) -> None:
    """After the full extract, before night 1 (Shanghai day 2026-11-01)."""
    items = aleph.keys("Z30")
    aleph.update("Z30", items[0], Z30_NOTE_INTERNAL="moved to stack 4", Z30_UPDATE_DATE=DAY[0])
    aleph.insert_like("Z30", items[1], "000000001999001", Z30_BARCODE="9990000001", Z30_UPDATE_DATE=DAY[0])
    aleph.delete("Z30", items[2])
    aleph.delete("Z36", aleph.keys("Z36")[0])  # a loan returned
    aleph.edit_record("BNU02.seq", "000000001", "245", "$$aPerspectives on reform /$$cM. Taylor.", DAY[0])


def _second_changes(aleph: Aleph) -> None:
    items = aleph.keys("Z30")
    aleph.update("Z30", items[0], Z30_NOTE_OPAC="in the reading room", Z30_UPDATE_DATE=DAY[1])  # again
    aleph.update("Z30", items[10], Z30_ITEM_STATUS="02", Z30_UPDATE_DATE=DAY[1])
    aleph.insert_like("Z30", items[11], "000000002999001", Z30_BARCODE="9990000002", Z30_UPDATE_DATE=DAY[1])
    aleph.delete("Z30", items[12])
    patron = aleph.keys("Z303")[3]
    aleph.update("Z303", patron, Z303_NAME="王小明", Z303_UPDATE_DATE=DAY[1])
    aleph.update("Z305", aleph.keys("Z305")[3], Z305_EXPIRY_DATE=20300831)  # Z305 has no update date
    aleph.insert_like("Z36", aleph.keys("Z36")[1], aleph.item_not_on_loan(), Z36_ID=patron.strip())
    aleph.insert_like("Z31", aleph.keys("Z31")[0], f"{patron.strip()}202611021030000001")
    aleph.delete_record("BNU01.seq", "000000005")
    aleph.append_record("BNU02.seq", "000000002", "000009001")
    aleph.edit_record("BNU60.seq", "000000002", "852", "$$bBNUXL$$cXLWW$$hLB1025$$i.K8", None)  # batch job


def _third_changes(aleph: Aleph) -> None:
    items = aleph.keys("Z30")
    # An item entered with an old update date: only the key scan can find it.
    aleph.insert_like("Z30", items[30], "000000003999001", Z30_BARCODE="9990000003", Z30_UPDATE_DATE=20200101)
    aleph.update("Z30", items[31], Z30_CALL_NO_2="copy 2", Z30_UPDATE_DATE=DAY[2])
    aleph.delete("Z37", aleph.keys("Z37")[0])
    aleph.edit_record("BNU02.seq", "000009001", "245", "$$aHandbook of special needs, 2nd ed.", DAY[2])
    aleph.delete_record("BNU60.seq", "000000007")


def test_consecutive_nights_add_up_to_a_fresh_full_extract(
    library: Path, store, settings, tmp_path: Path
) -> None:
    aleph = Aleph(library)
    _extract(store, settings, aleph, "extract_0")
    first = _raw_records(store, RunScope("demo", "migration_extract", "extract_0"), "raw", tmp_path / "x0")

    nights = []
    for n, inject in enumerate((_first_changes, _second_changes, _third_changes)):
        inject(aleph)
        nights.append(_night(store, settings, aleph, f"night_{n + 1}", NIGHTS[n]))
        assert state.watermark(store, "demo") == NIGHTS[n]

    # What each night found: exactly what was injected before it.
    assert [_counts(n, "items") for n in nights] == [(1, 1, 1), (1, 2, 1), (1, 1, 0)]
    assert [_counts(n, "loans") for n in nights] == [(0, 0, 1), (1, 0, 0), (0, 0, 0)]
    assert [_counts(n, "bibs") for n in nights] == [(0, 1, 0), (1, 0, 1), (0, 1, 0)]
    assert [_counts(n, "holdings") for n in nights] == [(0, 0, 0), (0, 1, 0), (0, 0, 1)]
    assert [_counts(n, "patrons") for n in nights] == [(0, 0, 0), (0, 2, 0), (0, 0, 0)]
    assert [_counts(n, "fines") for n in nights] == [(0, 0, 0), (1, 0, 0), (0, 0, 0)]
    assert [_counts(n, "requests") for n in nights] == [(0, 0, 0), (0, 0, 0), (0, 0, 1)]
    # Z30 and Z303 are read by update date once there is a night to start from.
    assert nights[0].stages["items"].extra["modes"] == {"Z30": "hash"}
    assert nights[1].stages["items"].extra["modes"] == {"Z30": "update_date"}
    assert nights[1].stages["patrons"].extra["modes"]["Z303"] == "update_date"
    # The batch job's holdings change has no CAT line; the catalogued bib edits have theirs.
    assert nights[1].stages["holdings"].extra["unstamped"] == 1
    assert [n.stages["bibs"].extra["unstamped"] for n in nights] == [0, 0, 0]

    # No gap, no overlap: each night starts where the one before ended.
    recorded = state.nights(store, "demo")
    assert [n.watermark for n in recorded] == NIGHTS[:3]
    assert [n.window_start for n in recorded] == [None, *NIGHTS[:2]]
    assert [n.window.start for n in nights] == [None, *NIGHTS[:2]]
    assert recorded[0].run.run_id == "night_1" and nights[0].window.baseline.run_id == "extract_0"

    # The first extract with every night's delta applied, in order, is a fresh full extract.
    applied = dict(first)
    for i, night in enumerate(nights):
        scope = _night_scope(night, f"night_{i + 1}")
        for gone in _deleted(store, scope, tmp_path / f"d{i}"):
            del applied[gone]
        applied.update(_raw_records(store, scope, "delta", tmp_path / f"n{i}"))
    _extract(store, settings, aleph, "extract_1")
    fresh = _raw_records(store, RunScope("demo", "migration_extract", "extract_1"), "raw", tmp_path / "x1")
    assert applied.keys() == fresh.keys()
    assert [k for k in fresh if applied[k] != fresh[k]] == []
    assert applied != first

    # And the last night's baseline holds the fresh extract's record hashes.
    bib_hashes = {
        sysno: bytes(h)
        for part in store.stage_manifest(_night_scope(nights[2], "night_3"), "baseline", "bibs").parts(
            "BNU02"
        )
        for sysno, h in zip(*_columns(store, part, tmp_path, "sysno"), strict=True)
    }
    assert bib_hashes == {key: record_hash(raw) for (source, key), raw in fresh.items() if source == "BNU02"}


def _columns(store: ArtifactStore, part: Any, tmp: Path, key: str) -> tuple[list[Any], list[Any]]:
    (path,) = store.local_copies([part], tmp / "baseline" / part.key)
    table = pq.read_table(path, columns=[key, "row_hash"])
    return table[key].to_pylist(), table["row_hash"].to_pylist()


class FailingLanding(LocalLanding):
    """The landing location, except that fetching the HOL export fails (an SFTP drop, say)."""

    def fetch(self, name: str, dest: Path) -> Path:
        if name == "BNU60.seq":
            raise ConnectionError("sftp: connection reset while reading BNU60.seq")
        return super().fetch(name, dest)


def _fail_fetching_the_hol_export(aleph: Aleph, monkeypatch: pytest.MonkeyPatch) -> Aleph:
    aleph.landing = FailingLanding(aleph.root / "alephseq")
    return aleph


def _fail_writing_the_report(aleph: Aleph, monkeypatch: pytest.MonkeyPatch) -> Aleph:
    def boom(*args: Any, **kwargs: Any) -> str:
        raise ConnectionError("S3: connection reset while writing report.html")

    monkeypatch.setattr(delta_phase, "summarise", boom)
    return aleph


@pytest.mark.parametrize(
    ("failure", "committed"),
    [(_fail_fetching_the_hol_export, set()), (_fail_writing_the_report, {"bibs", "holdings", "items"})],
    ids=["while comparing the HOL export", "after every delta is committed"],
)
def test_a_failed_night_leaves_the_watermark_and_the_next_covers_both_windows(
    library: Path, store, settings, monkeypatch: pytest.MonkeyPatch, failure: Any, committed: set[str]
) -> None:
    aleph = Aleph(library)
    _extract(store, settings, aleph, "extract_0")
    _night(store, settings, aleph, "night_1", NIGHTS[0])

    _second_changes(aleph)  # the changes of the night that fails
    with monkeypatch.context() as patched:
        failing = failure(Aleph(library), patched)
        ctx = _ctx(store, settings, "aleph_nightly_delta", "night_2")
        with pytest.raises(ConnectionError, match="connection reset"):
            pipeline.nightly_delta(ctx, failing.engine, failing.landing, NIGHTS[1])
    assert state.watermark(store, "demo") == NIGHTS[0]
    assert store.list_keys(ctx.scope.prefix("delta", "bibs")), "the night got halfway"
    assert {
        e for e in ("bibs", "holdings", "items") if store.stage_committed(ctx.scope, "delta", e)
    } == committed

    _third_changes(aleph)
    night = _night(store, settings, aleph, "night_3", NIGHTS[2])
    assert night.window.start == NIGHTS[0] and night.window.baseline.run_id == "night_1"
    assert state.watermark(store, "demo") == NIGHTS[2]
    # Both nights' changes, each once (item 0's second edit is one change against night 1).
    assert _counts(night, "items") == (2, 3, 1)
    assert _counts(night, "bibs") == (1, 0, 1)  # the new bib (edited twice) and the deleted one
    assert _counts(night, "holdings") == (0, 1, 1)
    assert _counts(night, "loans") == (1, 0, 0)
    assert _counts(night, "requests") == (0, 0, 1)
    assert [n.run.run_id for n in state.nights(store, "demo")] == ["night_1", "night_3"]


def test_a_retried_night_keeps_its_window(library: Path, store, settings) -> None:
    aleph = Aleph(library)
    _extract(store, settings, aleph, "extract_0")
    _night(store, settings, aleph, "night_1", NIGHTS[0])
    ctx = _ctx(store, settings, "aleph_nightly_delta", "night_2")
    first = delta_phase.resolve_window(ctx, "", "", NIGHTS[1])
    _night(store, settings, aleph, "night_3", NIGHTS[2])  # a later night commits meanwhile
    assert delta_phase.resolve_window(ctx, "", "", NIGHTS[3]) == first
    assert first.start == NIGHTS[0] and first.end == NIGHTS[1]


def test_a_manual_window_re_reads_from_an_earlier_night_without_moving_the_watermark(
    library: Path, store, settings
) -> None:
    aleph = Aleph(library)
    _extract(store, settings, aleph, "extract_0")
    _first_changes(aleph)
    _night(store, settings, aleph, "night_1", NIGHTS[0])
    _second_changes(aleph)
    _night(store, settings, aleph, "night_2", NIGHTS[1])
    _third_changes(aleph)
    _night(store, settings, aleph, "night_3", NIGHTS[2])

    # "Everything since night 1", up to night 2's watermark: read from night 1's baseline.
    rerun = _night(
        store,
        settings,
        aleph,
        "manual",
        NIGHTS[3],
        window_from="2026-11-02T02:00",
        window_to="2026-11-03T02:00",
    )
    assert rerun.window.start == NIGHTS[0] and rerun.window.end == NIGHTS[1]
    assert rerun.window.baseline.run_id == "night_1"
    assert _counts(rerun, "items") == (2, 3, 1)  # nights 2 and 3 together
    assert rerun.night is None and state.watermark(store, "demo") == NIGHTS[2]
    summary = json.loads(store.get_bytes(rerun.summary.split("/", 3)[3]))
    assert summary["window"]["baseline"] == "aleph_nightly_delta/night_1"


def test_windows_that_cannot_be_read_are_refused(library: Path, store, settings) -> None:
    aleph = Aleph(library)
    with pytest.raises(NoSuchRun, match="run migration_extract first"):
        _night(store, settings, aleph, "night_0", NIGHTS[0])
    _extract(store, settings, aleph, "extract_0")
    with pytest.raises(DeltaError, match="after this run's date"):
        _night(store, settings, aleph, "ahead", NIGHTS[0], window_to="2026-11-03T02:00")
    with pytest.raises(DeltaError, match="not a date or date-time"):
        _night(store, settings, aleph, "typo", NIGHTS[0], window_from="yesterday")
    _night(store, settings, aleph, "night_1", NIGHTS[1])
    with pytest.raises(DeltaError, match="empty window"):
        _night(store, settings, aleph, "back", NIGHTS[2], window_to="2026-11-02T02:00")


def test_an_unstamped_item_change_needs_a_night_that_hashes_every_row(library: Path, store, settings) -> None:
    aleph = Aleph(library)
    _extract(store, settings, aleph, "extract_0")
    _night(store, settings, aleph, "night_1", NIGHTS[0])
    item = aleph.keys("Z30")[5]
    aleph.update("Z30", item, Z30_SUB_LIBRARY="BNUXX")  # a global change that leaves the update date
    stamped = _night(store, settings, aleph, "by_date", NIGHTS[1])
    assert _counts(stamped, "items") == (0, 0, 0)  # the documented limit of by_update_date
    hashing = replace(settings, nightly=replace(settings.nightly, by_update_date=False))
    night = _night(store, hashing, aleph, "by_hash", NIGHTS[1], window_from="2026-11-02T02:00")
    assert _counts(night, "items") == (0, 1, 0)
    assert night.stages["items"].extra["unstamped"] == 1
    assert night.stages["items"].extra["modes"] == {"Z30": "hash"}


def test_the_rules_judge_the_delta_and_what_it_did_to_the_library(library: Path, store, settings) -> None:
    aleph = Aleph(library)
    _extract(store, settings, aleph, "extract_0")
    _night(store, settings, aleph, "night_1", NIGHTS[0])
    items = aleph.keys("Z30")
    (barcode,) = aleph._sql("SELECT z30_barcode FROM z30 WHERE z30_rec_key = ?", (items[40],))[0]
    aleph.insert_like(
        "Z30", items[41], "000000004999001", Z30_BARCODE=barcode.strip(), Z30_UPDATE_DATE=DAY[1]
    )
    (hol,) = aleph._sql("SELECT z30_hol_doc_number_x FROM z30 WHERE z30_rec_key = ?", (items[50],))[0]
    orphans = aleph._sql("SELECT count(*) FROM z30 WHERE z30_hol_doc_number_x = ?", (hol,))[0][0]
    aleph.delete_record("BNU60.seq", hol.strip())  # its items lose their holdings record
    aleph.edit_record("BNU02.seq", "000000003", "245", "", DAY[1])  # a save that lost the title
    aleph._write("BNU02.seq", [x for x in aleph._lines("BNU02.seq") if not x.startswith(b"000000003 245")])

    night = _night(store, settings, aleph, "night_2", NIGHTS[1])
    v = night.validation
    assert v.in_delta["duplicate_barcode"] == 1  # the new item (the old one did not change)
    assert v.new["duplicate_barcode"] == 2  # both items now share a barcode
    assert v.new["orphan_item"] == orphans and "orphan_item" not in v.in_delta
    assert v.in_delta["missing_title"] == 1  # the bib rule, as the transform applies it
    assert v.totals["duplicate_barcode"] >= 2
    report = json.loads(store.get_bytes(night.summary.split("/", 3)[3]))
    hits = {r["rule"]: r for r in report["rule_hits"]}
    assert hits["orphan_item"]["new"] == orphans and hits["missing_title"]["new"] is None
    assert report["delta"]["items"]["new"] == 1
    html = store.get_bytes(report["report_html"].split("/", 3)[3]).decode()
    assert "ATTENTION" in html and "duplicate_barcode" in html


def test_the_night_summary_counts_and_the_manifests(library: Path, store, settings) -> None:
    aleph = Aleph(library)
    _extract(store, settings, aleph, "extract_0")
    _first_changes(aleph)
    night = _night(store, settings, aleph, "night_1", NIGHTS[0])
    summary = json.loads(store.get_bytes(night.summary.split("/", 3)[3]))
    assert summary["window"] == night.window.describe()
    assert summary["delta"]["items"] | {"modes": None} == {
        "previous": night.stages["items"].extra["previous"],
        "records": night.stages["items"].extra["previous"],  # one in, one out
        "new": 1,
        "changed": 1,
        "deleted": 1,
        "unstamped": 0,
        "modes": None,
    }
    manifest = store.manifest(night.stages["items"].manifest)
    assert manifest.records == 2 and manifest.extra["deleted"] == 1
    assert {f.kind for f in manifest.files} == {"part", "changes"}
    baseline = store.manifest(night.stages["items"].extra["baseline_manifest"])
    assert baseline.records == summary["delta"]["items"]["records"]
    record = state.nights(store, "demo")[0]
    assert record.baselines["items"] == night.stages["items"].extra["baseline_manifest"]
    assert record.summary == night.summary


def test_night_records_are_found_by_watermark(store) -> None:
    def night(day: int, run: str) -> state.Night:
        return state.Night(
            datetime(2026, 11, day, 18, tzinfo=UTC), RunRef("aleph_nightly_delta", run), None, {}
        )

    for day, run in ((3, "c"), (1, "a"), (2, "b")):
        state.record_night(store, "demo", night(day, run))
    store.put_bytes("demo/state/delta/nights/README.txt", b"not a night")
    assert [n.run.run_id for n in state.nights(store, "demo")] == ["a", "b", "c"]
    assert state.watermark(store, "demo") == datetime(2026, 11, 3, 18, tzinfo=UTC)
    assert state.night_at_or_before(store, "demo", datetime(2026, 11, 2, 20, tzinfo=UTC)).run.run_id == "b"
    assert state.night_at_or_before(store, "demo", exclude_run="c").run.run_id == "b"
    assert state.night_at_or_before(store, "demo", datetime(2026, 10, 1, tzinfo=UTC)) is None
    assert state.watermark(store, "other") is None
    with pytest.raises(ValueError, match="must carry its time zone"):
        state.record_night(store, "demo", replace(night(4, "d"), watermark=datetime(2026, 11, 4)))
