"""The cutover's domain steps on two extracts of the tiny demo library: the baseline's and the cutover's.

Between the two extracts the library changes as it would during the run-up to cutover and the
freeze: a bib edited in cataloguing (a new CAT line after the freeze began), a bib deleted, a bib
added (catalogued before the freeze), an item added in a collection the form has never seen,
one item edited the day before the freeze and one on the freeze day itself. Every date is fixed
(the freeze begins 2026-11-10 15:00 in Shanghai, 07:00 UTC): no test reads the clock.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from aleph2alma import pipeline, state
from aleph2alma import settings as settings_mod
from aleph2alma.aleph.db import create_engine
from aleph2alma.aleph.landing import LocalLanding
from aleph2alma.aleph.ztables import Z_TABLES
from aleph2alma.alma.client import AlmaApiError
from aleph2alma.alma.form import form_dir
from aleph2alma.cutover import CutoverInputError
from aleph2alma.cutover.alma_codes import ALMA_CODES_CHECK
from aleph2alma.cutover.changes import changes_since_baseline
from aleph2alma.cutover.freeze import freeze_violations, local_start
from aleph2alma.cutover.preflight import BASELINE_CHECK, CODES_CHECK, VALIDATION_CHECK, preflight
from aleph2alma.phases import extraction
from aleph2alma.phases.context import PhaseContext
from aleph2alma.runs import EXTRACT_DAG, FIX_CYCLE_DAG, TRANSFORM_DAG, RunRef
from aleph2alma.storage import ArtifactStore, RunScope
from aleph2alma.validate.issues import Issue
from aleph2alma.validate.report import EntityCounts, build_report

AS_OF = date(2026, 11, 12)
FREEZE = datetime(2026, 11, 10, 7, 0, tzinfo=UTC)  # 15:00 in Shanghai
BASELINE = RunRef(EXTRACT_DAG, "baseline_extract")
CUTOVER = RunRef(EXTRACT_DAG, "cutover_extract")
NEW_ITEM = "000000001999001"


@dataclass
class Extracts:
    store: ArtifactStore
    settings: Any
    items: list[str]

    form: Path
    """The demo form completed for the tiny library (the demo leaves a few codes unmapped on purpose)."""

    def ctx(self, run_id: str, dag_id: str = "migration_cutover", form: Path | None = None) -> PhaseContext:
        scope = RunScope("demo", dag_id, run_id)
        return PhaseContext(self.store, scope, self.settings, AS_OF, form_path=form or self.form)


# --- the library between the extracts ------------------------------------------------------------


def _sql(root: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(root / "replica.sqlite") as db:
        return db.execute(sql, args).fetchall()


def _update_item(root: Path, key: str, **values: Any) -> None:
    sets = ", ".join(f"{c} = ?" for c in values)
    _sql(root, f"UPDATE z30 SET {sets} WHERE z30_rec_key = ?", (*values.values(), key))


def _insert_item(root: Path, template: str, key: str, **values: Any) -> None:
    names = [c.name for c in Z_TABLES["Z30"].columns]
    widths = {c.name: c.width for c in Z_TABLES["Z30"].columns if c.kind == "char"}
    (row,) = _sql(root, f"SELECT {', '.join(names)} FROM z30 WHERE z30_rec_key = ?", (template,))
    new = dict(zip(names, row, strict=True)) | {
        k: v.ljust(widths[k]) if k in widths else v for k, v in {"Z30_REC_KEY": key, **values}.items()
    }
    _sql(
        root, f"INSERT INTO z30 ({', '.join(new)}) VALUES ({', '.join('?' * len(new))})", tuple(new.values())
    )


def _cat(sysno: str, day: int, time: str) -> bytes:
    return f"{sysno} CAT   L $$aCATWW01$$b00$$c{day}$$lBNU01$$h{time}\n".encode()


def _change_library(root: Path, items: list[str]) -> None:
    seq = root / "alephseq"
    # bib 000000001 of BNU02 edited in cataloguing after the freeze began (16:30 on the freeze day)
    lines = (seq / "BNU02.seq").read_bytes().splitlines(keepends=True)
    out: list[bytes] = []
    for line in lines:
        if line.startswith(b"000000001 245"):
            line = line[:18] + b"$$aPerspectives on reform /$$cM. Taylor.\n"
        out.append(line)
    at = max(i for i, line in enumerate(out) if line.startswith(b"000000001 "))
    out.insert(at + 1, _cat("000000001", 20261110, "1630"))
    # a new bib 000009001 (a copy of 000000002), last catalogued at 14:00 on the freeze day: before it
    copy = [b"000009001" + line[9:] for line in out if line.startswith(b"000000002 ")]
    out += [*copy, _cat("000009001", 20261110, "1400")]
    (seq / "BNU02.seq").write_bytes(b"".join(out))
    # bib 000000005 of BNU01 deleted
    lines = (seq / "BNU01.seq").read_bytes().splitlines(keepends=True)
    (seq / "BNU01.seq").write_bytes(b"".join(line for line in lines if not line.startswith(b"000000005 ")))
    # an item added before the freeze, in a collection the form does not know
    _insert_item(
        root, items[1], NEW_ITEM, Z30_BARCODE="9990000001", Z30_COLLECTION="NEWC", Z30_UPDATE_DATE=20261105
    )
    # an item edited the day before the freeze, one edited on the freeze day (before 15:00: it still counts)
    _update_item(root, items[3], Z30_NOTE_INTERNAL="moved to stack 4", Z30_UPDATE_DATE=20261109)
    _update_item(root, items[4], Z30_NOTE_OPAC="in the reading room", Z30_UPDATE_DATE=20261110)


COMPLETED = {
    "libraries": [
        {"aleph_sub_library": "BNUCP", "alma_library_code": "BNUCP", "alma_library_name": "Changping"}
    ],
    "locations": [
        {"aleph_sub_library": s, "aleph_collection": c, "alma_location_code": c, "alma_location_name": c}
        for s, c in (("BNUCP", "CPZW"), ("BNUZG", "LSCK"))
    ],
    "item_policies": [{"aleph_item_status": s, "alma_item_policy": "NOLOAN"} for s in ("19", "99")],
    "user_groups": [
        {"aleph_bor_status": s, "aleph_bor_type": "01", "alma_user_group": "EXTERNAL"} for s in ("29", "99")
    ],
}
"""Rows that map the codes the demo form leaves unmapped in the tiny library."""


def _completed_form(dest: Path) -> Path:
    form = Path(shutil.copytree(form_dir("demo"), dest))
    for tab, rows in COMPLETED.items():
        path = form / f"{tab}.csv"
        with open(path, newline="", encoding="utf-8-sig") as fh:
            columns = next(csv.reader(fh))
        with open(path, "a", newline="", encoding="utf-8") as fh:
            csv.writer(fh, lineterminator="\n").writerows([[row.get(c, "") for c in columns] for row in rows])
    return form


def _extract(ctx: PhaseContext, engine: Any, landing: LocalLanding) -> None:
    """A full extract and its code inventory, as migration_extract commits them."""
    committed = pipeline.extract(ctx, engine, landing)
    extraction.profile_codes(ctx, committed["items"], committed["patrons"], committed["fines"])


@pytest.fixture(scope="module")
def extracts(
    s3_stack: Any, tiny_library: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Extracts]:
    """The baseline extract and the cutover extract, in one bucket the module's tests share (each
    test writes under a run of its own)."""
    root = Path(shutil.copytree(tiny_library, tmp_path_factory.mktemp("cutover") / "library"))
    client = s3_stack.s3_client()
    bucket = f"t-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    found = Extracts(
        ArtifactStore(client, bucket),
        replace(settings_mod.load("demo"), part_rows=400, part_bytes=32_768),
        [r[0] for r in _sql(root, "SELECT z30_rec_key FROM z30 ORDER BY z30_rec_key")],
        _completed_form(tmp_path_factory.mktemp("cutover-form") / "form"),
    )
    engine, landing = create_engine(f"sqlite:///{root / 'replica.sqlite'}"), LocalLanding(root / "alephseq")
    _extract(found.ctx(BASELINE.run_id, EXTRACT_DAG), engine, landing)
    _change_library(root, found.items)
    _extract(found.ctx(CUTOVER.run_id, EXTRACT_DAG), engine, landing)
    engine.dispose()
    yield found


def _rows(store: ArtifactStore, manifest_uri: str, tmp: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in store.manifest(manifest_uri).parts():
        (path,) = store.local_copies([f], tmp / f.source)
        rows += [{"source": f.source, **r} for r in pq.read_table(path).to_pylist()]
    return rows


# --- changes since the baseline ------------------------------------------------------------------


def test_changes_since_baseline_counts_and_lists_every_changed_record(
    extracts: Extracts, tmp_path: Path
) -> None:
    ctx = extracts.ctx("changes")
    found = changes_since_baseline(ctx, BASELINE, CUTOVER)

    counts = {e: (c.new, c.changed, c.deleted) for e, c in found.entities.items()}
    assert counts.pop("bibs") == (1, 1, 1)
    assert counts.pop("items") == (1, 2, 0)
    assert set(counts.values()) == {(0, 0, 0)}  # every other entity: untouched
    assert found.not_compared == {}
    assert found.entities["bibs"].by_source["BNU01"] == {
        "previous": found.entities["bibs"].by_source["BNU01"]["previous"],
        "records": found.entities["bibs"].by_source["BNU01"]["previous"] - 1,
        "new": 0,
        "changed": 0,
        "deleted": 1,
    }
    assert found.totals["new"] == 2 and found.totals["changed"] == 3 and found.totals["deleted"] == 1

    bibs = {
        (r["source"], r["key"], r["change"])
        for r in _rows(ctx.store, found.entities["bibs"].manifest, tmp_path)
    }
    assert bibs == {
        ("BNU02", "000009001", "new"),
        ("BNU02", "000000001", "changed"),
        ("BNU01", "000000005", "deleted"),
    }
    items = {
        (r["key"], r["change"]) for r in _rows(ctx.store, found.entities["items"].manifest, tmp_path / "i")
    }
    assert items == {(NEW_ITEM, "new"), (extracts.items[3], "changed"), (extracts.items[4], "changed")}

    # The one new code: the new item's collection, which the form does not map.
    assert [(c.code_type, c.code, c.records, c.tab, c.mapped) for c in found.new_codes] == [
        ("collection", ["BNUZG", "NEWC"], 1, "locations", False)
    ]
    report = json.loads(ctx.store.get_bytes(found.report_json.split("/", 3)[3]))
    assert report["totals"] == found.totals and report["new_codes"][0]["mapped"] is False
    html = ctx.store.get_bytes(found.report_html.split("/", 3)[3]).decode()
    assert "BNUZG/NEWC" in html and "UNMAPPED NEW CODES" in html


def test_no_changes_when_an_extract_is_compared_with_itself(extracts: Extracts) -> None:
    found = changes_since_baseline(extracts.ctx("same"), CUTOVER, CUTOVER)
    assert found.totals["new"] == found.totals["changed"] == found.totals["deleted"] == 0
    assert found.new_codes == []


# --- freeze violations --------------------------------------------------------------------------


def test_local_start_is_the_library_day_and_minute() -> None:
    assert local_start(FREEZE, "Asia/Shanghai") == (20261110, 202611101500)
    assert local_start(datetime(2026, 11, 9, 20, 30, tzinfo=UTC), "Asia/Shanghai") == (20261110, 202611100430)
    assert local_start(datetime(2026, 11, 10, 15, 0), "Asia/Shanghai") == (
        20261110,
        202611101500,
    )  # naive: local


def test_freeze_violations_are_found_by_alephs_own_stamps(extracts: Extracts, tmp_path: Path) -> None:
    ctx = extracts.ctx("freeze")
    found = freeze_violations(ctx, CUTOVER, FREEZE, threshold=2)

    # The item stamped on the freeze day counts (Aleph stamps days); the one the day before does not.
    # The bib catalogued at 16:30 counts; the new bib catalogued at 14:00 the same day does not.
    assert {e: v.records for e, v in found.entities.items()} == {
        "bibs": 1,
        "holdings": 0,
        "items": 1,
        "patrons": 0,
    }
    assert found.entities["items"].by_source == {"Z30": 1}
    assert found.entities["items"].samples == [extracts.items[4]]
    assert found.entities["bibs"].by_source == {"BNU01": 0, "BNU02": 1}
    assert found.total == 2 and found.blocking is False
    assert (found.from_day, found.from_minute) == (20261110, 202611101500)
    assert found.not_covered["loans"] == ["Z36"]
    assert "Z303" not in found.not_covered["patrons"]

    rows = _rows(ctx.store, found.entities["bibs"].manifest, tmp_path)
    assert rows == [{"source": "BNU02", "record_id": "000000001", "stamp": 202611101630}]
    rows = _rows(ctx.store, found.entities["items"].manifest, tmp_path / "i")
    assert rows == [{"source": "Z30", "record_id": extracts.items[4], "stamp": 20261110}]

    assert freeze_violations(extracts.ctx("freeze_strict"), CUTOVER, FREEZE, threshold=1).blocking is True
    # Before any of the changes: nothing the baseline extract holds was stamped after the freeze.
    assert freeze_violations(extracts.ctx("freeze_base"), BASELINE, FREEZE, threshold=0).total == 0


# --- preflight ----------------------------------------------------------------------------------


def _record_baseline(ctx: PhaseContext, transform_run: str, blocked: bool) -> None:
    transform = RunRef(TRANSFORM_DAG, transform_run)
    # 2 % of the items: past the demo's 1 % for unmapped_location
    issues = [Issue("unmapped_location", "items", f"{n:09d}000010") for n in range(20)] if blocked else []
    report = build_report(
        {"migration_id": "demo", "dag_id": TRANSFORM_DAG, "run_id": transform_run},
        [EntityCounts("items", 1000, 1000, 0, {})],
        issues,
        ctx.rules,
    )
    assert report.status == ("BLOCKED" if blocked else "PASS")
    key = ctx.scope_of(transform).report_prefix() + "validation/report.json"
    ctx.store.put_bytes(key, report.to_json().encode("utf-8"), content_type="application/json")
    state.record_baseline(ctx.store, "demo", 2, transform, RunRef(FIX_CYCLE_DAG, "iteration_2"))


def test_preflight_fails_without_a_baseline_then_passes_once_one_is_signed_off(extracts: Extracts) -> None:
    ctx = extracts.ctx("preflight")
    assert state.baseline(ctx.store, "demo") is None
    found = preflight(ctx, BASELINE)
    assert not found.passed
    assert [(c.name, c.passed) for c in found.checks] == [
        (BASELINE_CHECK, False),
        (CODES_CHECK, True),
        (VALIDATION_CHECK, False),
        (ALMA_CODES_CHECK, True),
    ]
    assert not found.check(ALMA_CODES_CHECK).checked  # no Alma client given: reported as not run
    assert "run migration_fix_cycle" in found.check(BASELINE_CHECK).detail

    _record_baseline(ctx, "blocked_transform", blocked=True)
    found = preflight(ctx, BASELINE)
    assert [c.passed for c in found.checks] == [True, True, False, True]
    assert "iteration 2" in found.check(BASELINE_CHECK).detail
    assert "unmapped_location (FIX): 20 of 1000 items (2.00%)" in found.check(VALIDATION_CHECK).detail

    _record_baseline(ctx, "good_transform", blocked=False)
    found = preflight(ctx, BASELINE)
    assert found.passed and found.unmapped == {}
    assert found.baseline == {
        "iteration": 2,
        "transform_run_id": "good_transform",
        "fix_cycle_run_id": "iteration_2",
    }
    report = json.loads(ctx.store.get_bytes(found.report_json.split("/", 3)[3]))
    assert report["passed"] is True and "code-table values" in report["out_of_scope"][0]

    found = preflight(ctx, BASELINE, _Alma(locations={"BNUZG": ["ZWTS"]}))
    alma = found.check(ALMA_CODES_CHECK)
    assert not found.passed and alma.checked and not alma.passed
    assert (
        "do not exist in Alma" in alma.detail and "BNUZH/" in alma.detail and "BNUZG/ZWTS" not in alma.detail
    )

    found = preflight(ctx, BASELINE, _Alma(error=AlmaApiError(0, "", "connection refused")))
    alma = found.check(ALMA_CODES_CHECK)
    assert found.passed and not alma.checked and "did not answer" in alma.detail


class _Alma:
    """Alma's configuration API as a stand-in: the demo's libraries, with the locations given."""

    def __init__(self, locations: dict[str, list[str]] | None = None, error: Exception | None = None) -> None:
        self.located = locations or {}
        self.error = error

    def libraries(self) -> list[dict]:
        if self.error:
            raise self.error
        return [{"code": lib} for lib in ("BNUZG", "BNUJY", "BNUXL", "BNUWX", "BNUZH")]

    def locations(self, library: str) -> list[dict]:
        return [{"code": loc} for loc in self.located.get(library, [])]


def test_preflight_lists_a_code_the_form_does_not_map(extracts: Extracts) -> None:
    found = preflight(extracts.ctx("preflight_cutover"), CUTOVER)
    assert not found.passed
    codes = found.check(CODES_CHECK)
    assert not codes.passed
    assert [(c.code, c.records) for c in found.unmapped["locations"]] == [(["BNUZG", "NEWC"], 1)]
    assert list(found.unmapped) == ["locations"]
    assert (
        "tab locations (columns aleph_sub_library, aleph_collection): BNUZG/NEWC (1 records)" in codes.detail
    )


def test_preflight_lists_every_unmapped_code_of_the_demo_form(extracts: Extracts) -> None:
    found = preflight(extracts.ctx("preflight_demo_form", form=form_dir("demo")), BASELINE)
    assert {tab: [(c.code, c.records) for c in codes] for tab, codes in found.unmapped.items()} == {
        "libraries": [(["BNUCP"], 1)],
        "locations": [(["BNUCP", "CPZW"], 1), (["BNUZG", "LSCK"], 1)],
        "item_policies": [(["19"], 1), (["99"], 1)],
        "user_groups": [(["29", "01"], 1), (["99", "01"], 1)],
    }
    assert (
        "tab user_groups (columns aleph_bor_status, aleph_bor_type): 29/01 (1 records)"
        in found.check(CODES_CHECK).detail
    )


def test_preflight_without_a_code_inventory_is_a_clear_error(extracts: Extracts) -> None:
    with pytest.raises(CutoverInputError, match="no committed code inventory.*run migration_extract"):
        preflight(extracts.ctx("preflight_missing"), RunRef(EXTRACT_DAG, "never_ran"))
