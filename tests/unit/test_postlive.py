"""After go-live: clean-up worklists on the tiny demo library (with planted records), the archive
on moto's S3 (storage class, checksums, retries, tampering, Object Lock), the decommission checklist."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sqlite3
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from aleph2alma import pipeline
from aleph2alma import settings as settings_mod
from aleph2alma.aleph.db import create_engine
from aleph2alma.aleph.landing import LocalLanding
from aleph2alma.phases.context import PhaseContext
from aleph2alma.postlive.archive import (
    ARCHIVE_MANIFEST,
    ArchiveConflict,
    ArchiveIntegrityError,
    ArchiveSettings,
    archive,
)
from aleph2alma.postlive.checklist import Check, Checklist, ChecklistError, archive_check, write_checklist
from aleph2alma.postlive.worklists import (
    WORKLISTS,
    ApiLoad,
    WorklistSettings,
    build_worklists,
)
from aleph2alma.refs import Reconciliation
from aleph2alma.runs import RunRef
from aleph2alma.storage import ArtifactStore, RunScope

EXTRACT = RunScope("demo", "migration_extract", "final_extract")
TRANSFORM = RunScope("demo", "migration_transform", "final_transform")
POSTLIVE = RunScope("demo", "migration_post_go_live", "post_1")
LOAD_RUN = RunRef("migration_cutover", "cutover_1")

PLANTED_NAME_PATRON = "BNU000000002"  # Z303_NAME set to a test name
PLANTED_ID_PATRON = "BNU000000003"  # Z303_PRIMARY_ID set to TEST0001
PLANTED_ORDERED_ITEM = "000000001000020"  # Z30_ITEM_PROCESS_STATUS set to OR
PLANTED_NO_DUE_DATE = "000000001000040"  # Z36_DUE_DATE set to 0
PLANTED_SUPPRESSED_BIB = "000000001"  # BNU01: STA $$aSUPPRESSED added
REFUSED_LOAN = "000000001000010"  # the API load refused it (a rejects file planted below)


def _plant(library: Path) -> None:
    db = sqlite3.connect(library / "replica.sqlite")
    with db:
        db.execute("UPDATE z303 SET z303_name = '测试读者' WHERE z303_rec_key = ?", (PLANTED_NAME_PATRON,))
        db.execute(
            "UPDATE z303 SET z303_primary_id = 'TEST0001' WHERE z303_rec_key = ?", (PLANTED_ID_PATRON,)
        )
        db.execute(
            "UPDATE z30 SET z30_item_process_status = 'OR' WHERE z30_rec_key = ?", (PLANTED_ORDERED_ITEM,)
        )
        db.execute("UPDATE z36 SET z36_due_date = 0 WHERE z36_rec_key = ?", (PLANTED_NO_DUE_DATE,))
    db.close()
    seq = library / "alephseq" / "BNU01.seq"
    lines = seq.read_bytes().split(b"\n")
    lines.insert(2, f"{PLANTED_SUPPRESSED_BIB} STA   L $$aSUPPRESSED".encode())  # after FMT and LDR
    seq.write_bytes(b"\n".join(lines))


@pytest.fixture(scope="module")
def migrated(tiny_library: Path, s3_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny library with planted records, extracted and transformed once for this module."""
    library = tmp_path_factory.mktemp("postlive") / "library"
    shutil.copytree(tiny_library, library)
    _plant(library)
    store = ArtifactStore(s3_stack.s3_client(), f"postlive-{uuid.uuid4().hex[:8]}")
    store.ensure_bucket()
    settings = replace(settings_mod.load("demo"), part_rows=400, part_bytes=32_768)
    as_of = date.fromisoformat(json.loads((library / "summary.json").read_text())["as_of"])
    extract_ctx = PhaseContext(store, EXTRACT, settings, as_of)
    pipeline.extract(
        extract_ctx,
        create_engine(f"sqlite:///{library / 'replica.sqlite'}"),
        LocalLanding(library / "alephseq"),
    )
    transform_ctx = PhaseContext(store, TRANSFORM, settings, as_of)
    pipeline.transform_and_validate(transform_ctx, extract_ctx.run)
    truth = [json.loads(line) for line in (library / "ground_truth.jsonl").read_text().splitlines() if line]
    refused = {
        "entity": "loans",
        "record_id": REFUSED_LOAN,
        "reason": "alma_401651",
        "detail": "Item is lost.",
    }
    store.put_bytes(
        LOAD_RUN.scope("demo").prefix("load", "loans") + "rejects.jsonl",
        (json.dumps(refused) + "\n").encode(),
    )
    ctx = PhaseContext(store, POSTLIVE, settings, as_of)
    result = build_worklists(
        ctx,
        extract_ctx.run,
        transform_ctx.run,
        WorklistSettings(),
        api_load=ApiLoad(run=LOAD_RUN, loaded_on=as_of),
    )
    return {"store": store, "ctx": ctx, "result": result, "truth": truth, "as_of": as_of}


def _csv(store: ArtifactStore, name: str) -> list[dict[str, str]]:
    key = POSTLIVE.prefix("worklists", "cleanup") + f"{name}.csv"
    return list(csv.DictReader(store.get_bytes(key).decode("utf-8-sig").splitlines()))


def _by(rows: list[dict[str, str]], column: str) -> dict[str, dict[str, str]]:
    return {r[column]: r for r in rows}


def test_planted_test_patrons_are_listed_by_id_never_by_name(migrated: dict[str, Any]) -> None:
    rows = _by(_csv(migrated["store"], "test_patrons"), "patron_id")
    assert rows[PLANTED_NAME_PATRON]["reason"] == "test_name"
    assert rows[PLANTED_ID_PATRON]["reason"] == "test_id"
    assert rows[PLANTED_ID_PATRON]["primary_id"] == "TEST0001"
    assert "测试读者" not in json.dumps(list(rows.values()), ensure_ascii=False)
    assert set(rows) == {PLANTED_NAME_PATRON, PLANTED_ID_PATRON}  # no real reader is caught


def test_test_patrons_by_user_group_are_configurable(migrated: dict[str, Any], tmp_path: Path) -> None:
    from aleph2alma.postlive.worklists import _Reader, test_patrons

    reader = _Reader(migrated["store"], EXTRACT, TRANSFORM, tmp_path)
    unmapped = {t["record_id"] for t in migrated["truth"] if t["defect"] == "unmapped_user_group"}
    rows = test_patrons(
        reader, WorklistSettings(test_patron_bor_statuses=("29", "99"), test_patron_name_patterns=())
    )
    by_group = {r["patron_id"] for r in rows if "test_user_group" in r["reason"]}
    assert by_group and by_group <= {p[:12] for p in unmapped} | {PLANTED_NAME_PATRON}


def test_items_without_barcode_are_the_seeded_ones(migrated: dict[str, Any]) -> None:
    rows = _by(_csv(migrated["store"], "items_without_barcode"), "item_key")
    seeded = {t["record_id"] for t in migrated["truth"] if t["defect"] == "missing_barcode"}
    assert seeded and set(rows) == seeded
    assert all(r["barcode"] == "" and r["reason"] == "missing_barcode" for r in rows.values())
    assert any(r["bib_035"].startswith("(ALEPH)BNU0") for r in rows.values())


def test_planted_ordered_item_is_in_process_with_its_barcode(migrated: dict[str, Any]) -> None:
    rows = _by(_csv(migrated["store"], "items_in_process"), "item_key")
    planted = rows[PLANTED_ORDERED_ITEM]
    assert (planted["barcode"], planted["process_status"], planted["reason"]) == (
        "1000000952",
        "OR",
        "process_status_OR",
    )
    assert planted["alma"] == "delivered" and planted["bib_035"] == "(ALEPH)BNU01000000001"
    assert {r["process_status"] for r in rows.values()} == {"OR"}  # CT, BD, MI … are not acquisition


def test_suppressed_bib_is_listed_and_the_summary_says_suppression_is_not_delivered(
    migrated: dict[str, Any],
) -> None:
    rows = _csv(migrated["store"], "suppressed_records")
    assert [(r["entity"], r["library"], r["sysno"], r["bib_035"]) for r in rows] == [
        ("bibs", "BNU01", PLANTED_SUPPRESSED_BIB, "(ALEPH)BNU01000000001")
    ]
    summary = json.loads(
        migrated["store"].get_bytes(POSTLIVE.prefix("worklists", "cleanup") + "summary.json")
    )
    assert any("STA" in n and "unsuppressed" in n for n in summary["notes"])


def test_loans_missing_due_date_refused_past_due_and_lost_are_listed(migrated: dict[str, Any]) -> None:
    rows = _by(_csv(migrated["store"], "loans"), "item_key")
    assert rows[PLANTED_NO_DUE_DATE]["reason"] == "missing_due_date"
    assert rows[PLANTED_NO_DUE_DATE]["alma"] == "not delivered: missing_due_date"
    assert rows[REFUSED_LOAN]["reason"] == "alma_401651"
    past = [r for r in rows.values() if "due_date_in_past" in r["reason"]]
    assert past and all(r["due_date"] < migrated["as_of"].isoformat() for r in past)
    lost = [r for r in rows.values() if "process_status_not_set" in r["reason"]]
    assert lost and {r["aleph_status"] for r in lost} <= {"L", "C"}
    assert all(r["patron_id"].startswith("BNU") for r in past)


def test_workbook_has_a_summary_and_one_tab_per_worklist_and_the_result_counts_them(
    migrated: dict[str, Any], tmp_path: Path
) -> None:
    store, result = migrated["store"], migrated["result"]
    path = store.download(POSTLIVE.prefix("worklists", "cleanup") + "worklists.xlsx", tmp_path / "w.xlsx")
    book = load_workbook(path, read_only=True)
    assert book.sheetnames == ["summary", *(w.name for w in WORKLISTS)]
    for w in WORKLISTS:
        rows = list(book[w.name].iter_rows(values_only=True))
        assert rows[0] == w.header and len(rows) == result.counts[w.name] + 1
        assert len(_csv(store, w.name)) == result.counts[w.name]
    manifest = store.manifest(result.manifest)
    assert manifest.stage == "worklists" and manifest.extra["counts"] == result.counts
    assert manifest.records == sum(result.counts.values())


def test_bad_worklist_settings_name_the_key() -> None:
    with pytest.raises(ValueError, match="not a regular expression"):
        WorklistSettings(test_patron_id_patterns=("(unclosed",))
    with pytest.raises(ValueError, match="unexpected keyword|Unexpected keyword"):
        WorklistSettings(test_groups=("99",))  # type: ignore[call-arg]


# --- archive ---------------------------------------------------------------------------------

A_EXTRACT = RunRef("migration_extract", "final")
A_DELIVERY = RunRef("migration_cutover", "cutover_1")
A_RUN = RunScope("demo", "migration_post_go_live", "post_1")
AS_OF = date(2026, 9, 1)


def _commit(store: ArtifactStore, run: RunRef, stage: str, entity: str, files: dict[str, bytes]) -> list[str]:
    scope = run.scope("demo")
    stored = [
        store.put_bytes(scope.prefix(stage, entity) + name, data, kind="part") for name, data in files.items()
    ]
    store.commit(scope, stage, entity, stored)
    return [s.key for s in stored]


@pytest.fixture
def committed(store: ArtifactStore) -> dict[str, list[str]]:
    return {
        "items": _commit(store, A_EXTRACT, "raw", "items", {"z30-part-00000.parquet": b"z30" * 100}),
        "bibs": _commit(store, A_EXTRACT, "raw", "bibs", {"bnu01-part-00000.seq": b"000000001 FMT   L BK\n"}),
        "package": _commit(store, A_DELIVERY, "package", "delivery", {"demo.zip": b"PK" + b"\0" * 500}),
    }


def _ctx(store: ArtifactStore) -> PhaseContext:
    return PhaseContext(store, A_RUN, settings_mod.load("demo"), AS_OF)


def test_archive_copies_every_committed_file_with_storage_class_tags_and_verified_sha256(
    store: ArtifactStore, committed: dict[str, list[str]]
) -> None:
    result = archive(
        _ctx(store), "final", A_EXTRACT, [A_DELIVERY], ArchiveSettings(storage_class="GLACIER_IR")
    )
    assert (result.objects, result.copied, result.already_archived) == (6, 6, 0)  # 3 parts + 3 manifests
    assert result.retain_until == date(2036, 8, 29) and result.retention == "tag"
    body = json.loads(store.get_bytes(f"demo/archive/final/{ARCHIVE_MANIFEST}"))
    assert {o["source_key"] for o in body["objects"]} >= {k for keys in committed.values() for k in keys}
    for entry in body["objects"]:
        head = store.client.head_object(Bucket=store.bucket, Key=entry["archive_key"])
        assert head["StorageClass"] == "GLACIER_IR"
        assert hashlib.sha256(store.get_bytes(entry["archive_key"])).hexdigest() == entry["sha256"]
        assert entry["verified_by"] == "checksum"
        tags = store.client.get_object_tagging(Bucket=store.bucket, Key=entry["archive_key"])["TagSet"]
        assert {t["Key"]: t["Value"] for t in tags} == {
            "aleph2alma-stage": "archive",
            "retain-until": "2036-08-29",
        }
    assert body["objects"][0]["archive_key"].startswith("demo/archive/final/runs/")


def test_a_second_run_copies_nothing(store: ArtifactStore, committed: dict[str, list[str]]) -> None:
    first = archive(_ctx(store), "final", A_EXTRACT, [A_DELIVERY], ArchiveSettings())
    again = archive(_ctx(store), "final", A_EXTRACT, [A_DELIVERY], ArchiveSettings())
    assert (again.objects, again.copied, again.already_archived) == (first.objects, 0, first.objects)


def test_without_a_server_checksum_the_copy_is_read_back(
    store: ArtifactStore, committed: dict[str, list[str]]
) -> None:
    archive(_ctx(store), "final", A_EXTRACT, [A_DELIVERY], ArchiveSettings(), single_copy_limit=0)
    body = json.loads(store.get_bytes(f"demo/archive/final/{ARCHIVE_MANIFEST}"))
    assert {o["verified_by"] for o in body["objects"]} == {"read"}


def test_a_tampered_source_is_refused_and_nothing_of_it_stays(
    store: ArtifactStore, committed: dict[str, list[str]]
) -> None:
    [part] = committed["items"]
    store.client.put_object(Bucket=store.bucket, Key=part, Body=b"Z30" * 100)  # same size, other bytes
    with pytest.raises(ArchiveIntegrityError, match=r"z30-part-00000.parquet does not match its manifest"):
        archive(_ctx(store), "final", A_EXTRACT, [A_DELIVERY], ArchiveSettings())
    assert store.head(f"demo/archive/final/{part.removeprefix('demo/')}") is None
    assert not store.exists(f"demo/archive/final/{ARCHIVE_MANIFEST}")


def test_a_source_of_another_size_is_refused_before_any_copy(
    store: ArtifactStore, committed: dict[str, list[str]]
) -> None:
    [part] = committed["bibs"]
    store.client.put_object(Bucket=store.bucket, Key=part, Body=b"shorter")
    with pytest.raises(ArchiveIntegrityError, match="its manifest says 21"):
        archive(_ctx(store), "final", A_EXTRACT, [A_DELIVERY], ArchiveSettings())


def test_an_archived_object_is_never_overwritten_by_another(
    store: ArtifactStore, committed: dict[str, list[str]]
) -> None:
    [part] = committed["package"]
    store.client.put_object(
        Bucket=store.bucket, Key=f"demo/archive/final/{part.removeprefix('demo/')}", Body=b"x"
    )
    with pytest.raises(ArchiveConflict, match="never overwritten"):
        archive(_ctx(store), "final", A_EXTRACT, [A_DELIVERY], ArchiveSettings())


def test_object_lock_retention_when_the_bucket_has_object_lock(s3_stack: Any) -> None:
    client = s3_stack.s3_client()
    bucket = f"lock-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    store = ArtifactStore(client, bucket)
    [part] = _commit(store, A_EXTRACT, "raw", "items", {"z30-part-00000.parquet": b"z30"})
    result = archive(_ctx(store), "final", A_EXTRACT, [], ArchiveSettings(object_lock_mode="COMPLIANCE"))
    assert result.retention == "object-lock COMPLIANCE"
    head = client.head_object(Bucket=bucket, Key=f"demo/archive/final/{part.removeprefix('demo/')}")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"].date() == result.retain_until


def test_archive_settings_refuse_classes_that_need_a_restore() -> None:
    with pytest.raises(ValueError, match="GLACIER_IR"):
        ArchiveSettings(storage_class="DEEP_ARCHIVE")  # type: ignore[arg-type]


# --- checklist -------------------------------------------------------------------------------

AT = datetime(2026, 9, 2, 10, 30, tzinfo=UTC)


def _check(name: str, passed: bool, detail: str = "ok") -> Check:
    return Check(name=name, passed=passed, detail=detail, verified_by="li.wei", verified_at=AT)


def test_checklist_passes_only_when_every_check_passed(store: ArtifactStore) -> None:
    checks = [
        _check("go-live marker present", True, "state/go_live.json written 2026-08-31"),
        _check("offline circulation applied", False, "3 of 120 transactions failed"),
    ]
    result = write_checklist(store, A_RUN, checks, AS_OF.isoformat(), institution="BNU")
    assert (result.status, result.passed, result.failed) == ("FAIL", 1, ["offline circulation applied"])
    html = store.get_bytes(A_RUN.report_prefix() + "decommission/checklist.html").decode()
    assert "FAIL" in html and "3 of 120 transactions failed" in html and "li.wei" in html
    assert "2026-09-02T10:30:00+00:00" in html
    body = json.loads(store.get_bytes(A_RUN.report_prefix() + "decommission/checklist.json"))
    assert body["status"] == "FAIL" and [c["passed"] for c in body["checks"]] == [True, False]
    passing = Checklist({"migration_id": "demo"}, [checks[0]])
    assert passing.status == "PASS" and "all 1 checks passed" in passing.to_html()


def test_checklist_escapes_library_text_and_needs_a_check() -> None:
    html = Checklist({"migration_id": "demo"}, [_check("<b>x</b>", True, "<script>")]).to_html()
    assert "<script>" not in html and "&lt;script&gt;" in html
    with pytest.raises(ChecklistError):
        Checklist({"migration_id": "demo"}, [])


def test_checks_from_step_results() -> None:
    from aleph2alma.postlive.archive import ArchiveResult
    from aleph2alma.postlive.checklist import reconciliation_check

    rec = Reconciliation(
        report_html="s3://b/r.html",
        all_accounted=False,
        totals={"source": 10},
        entities={"items": {"accounted": False}, "bibs": {"accounted": True}},
    )
    check = reconciliation_check(rec, "li.wei", AT)
    assert not check.passed and "items" in check.detail and check.counts == {"source": 10}
    result = ArchiveResult(
        label="final",
        manifest="s3://b/m.json",
        objects=6,
        bytes=100,
        copied=0,
        already_archived=6,
        storage_class="STANDARD_IA",
        retain_until=date(2036, 8, 29),
        retention="tag",
    )
    assert archive_check(result, "li.wei", AT).passed
    assert not archive_check(result, "li.wei", AT, expected_objects=7).passed
