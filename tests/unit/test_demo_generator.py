"""The demo Aleph library: deterministic, counted, and faulty exactly where the ground truth says.

The core test re-derives every defect set from the outputs alone (ALEPHSEQ files and
replica tables) with a small independent checker and compares it with ground_truth.jsonl:
the seeded faults must be found, and nothing else may look faulty.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aleph2alma.aleph.alephseq import read_alephseq
from aleph2alma.aleph.ztables import Z_TABLES, build_metadata
from aleph2alma.rejects import RejectLog
from aleph2alma.settings import load
from aleph2alma_dev.demo import codes, generator, text
from aleph2alma_dev.demo.defects import DEFECT_RATES, INVALID_BYTES, MIN_OCCURRENCES
from aleph2alma_dev.demo.generator import SCALES, GeneratorError, generate
from aleph2alma_dev.demo.replica import ReplicaError

AS_OF = date(2026, 11, 1)
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("demo")
    return out, generate(out, scale="tiny", seed=1)


def _table_rows(
    db_url: str, schemas: dict[str, str | None] | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    _, tables = build_metadata(schemas or {"adm": None, "usr": None})
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return {
                name: [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
                for name, t in tables.items()
            }
    finally:
        engine.dispose()


def _stripped(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name, values in rows.items():
        cols = Z_TABLES[name].column_names
        out[name] = [
            {c: v.rstrip() if isinstance(v, str) else v for c, v in zip(cols, r, strict=True)} for r in values
        ]
    return out


def _content_hash(out: Path, db_url: str) -> str:
    h = hashlib.sha256()
    for path in sorted((out / "alephseq").iterdir()):
        h.update(path.name.encode() + path.read_bytes())
    h.update((out / "ground_truth.jsonl").read_bytes())
    h.update(repr(_table_rows(db_url)).encode())
    return h.hexdigest()


def _truth(out: Path) -> list[dict[str, str]]:
    return [
        json.loads(line) for line in (out / "ground_truth.jsonl").read_text(encoding="utf-8").splitlines()
    ]


def _seq_records(out: Path, name: str) -> list[Any]:
    log = RejectLog()
    records = list(read_alephseq(out / "alephseq" / name, rejects=log))
    assert log.total == 0, log.counts
    return records


# --- the checks a later validation stage makes, written independently of the generator ---


def _found_defects(out: Path, summary: dict[str, Any]) -> set[tuple[str, str, str]]:
    settings = load("demo")
    found: set[tuple[str, str, str]] = set()
    known = codes.known_codes()
    bib_sysnos: dict[str, set[str]] = {}
    for lib in settings.bib_libraries:
        title = "200" if lib.flavour == "CNMARC" else "245"
        records = _seq_records(out, lib.file)
        bib_sysnos[lib.code] = {r.sysno for r in records}
        for r in records:
            rid = f"{lib.code}:{r.sysno}"
            if not r.has_leader or len(str(r.record.leader)) != 24:
                found.add(("bibs", rid, "invalid_leader"))
            if not r.record.get_fields(title):
                found.add(("bibs", rid, "missing_title"))
            if any(
                not f.control_field and any(i not in "0123456789 " for i in f.indicators)
                for f in r.record.fields
            ):
                found.add(("bibs", rid, "invalid_indicators"))
        for line in (out / "alephseq" / lib.file).read_bytes().splitlines():
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                try:
                    line.decode("gb18030")
                    found.add(("bibs", f"{lib.code}:{line[:9].decode()}", "legacy_gbk"))
                except UnicodeDecodeError:
                    found.add(("bibs", f"{lib.code}:{line[:9].decode()}", "invalid_utf8"))

    hol_ok: dict[str, str] = {}
    for r in _seq_records(out, settings.hol_file):
        lkr = r.record.get_fields("LKR")[0]
        if lkr["b"] not in bib_sysnos[lkr["l"]]:
            found.add(("holdings", f"{settings.hol_library}:{r.sysno}", "orphan_holdings"))
        else:
            hol_ok[r.sysno] = f"{lkr['l']}:{lkr['b']}"
    holdings = {r.sysno for r in _seq_records(out, settings.hol_file)}

    t = _stripped(_table_rows(summary["db_url"]))
    adm_bib = _adm_bib(t)
    barcodes = Counter(i["Z30_BARCODE"] for i in t["Z30"] if i["Z30_BARCODE"])
    for i in t["Z30"]:
        key = i["Z30_REC_KEY"]
        if not i["Z30_BARCODE"]:
            found.add(("items", key, "missing_barcode"))
        elif barcodes[i["Z30_BARCODE"]] > 1:
            found.add(("items", key, "duplicate_barcode"))
        hol = i["Z30_HOL_DOC_NUMBER_X"]
        library, _, bib = adm_bib.get(key[:9], "").partition(":")
        if hol not in holdings if hol else bib not in bib_sysnos.get(library, set()):
            found.add(("items", key, "orphan_item"))
        if f"{i['Z30_SUB_LIBRARY']}/{i['Z30_COLLECTION']}" not in known["collections"]:
            found.add(("items", key, "unmapped_location"))
        if i["Z30_ITEM_STATUS"] not in known["item_statuses"]:
            found.add(("items", key, "unmapped_item_status"))
    items = {i["Z30_REC_KEY"] for i in t["Z30"]}
    patrons = {p["Z303_REC_KEY"] for p in t["Z303"]}
    primary = Counter(p["Z303_PRIMARY_ID"] for p in t["Z303"])
    loans_by = Counter(loan["Z36_ID"] for loan in t["Z36"] if loan["Z36_STATUS"] in "ALC")
    local = {z["Z305_REC_KEY"][:12]: z for z in t["Z305"]}
    for p in t["Z303"]:
        key = p["Z303_REC_KEY"]
        if primary[p["Z303_PRIMARY_ID"]] > 1:
            found.add(("patrons", key, "duplicate_patron_id"))
        if local[key]["Z305_BOR_STATUS"] not in known["bor_statuses"]:
            found.add(("patrons", key, "unmapped_user_group"))
        if local[key]["Z305_EXPIRY_DATE"] < int(AS_OF.strftime("%Y%m%d")) and loans_by[key]:
            found.add(("patrons", key, "expired_patron_with_loans"))
    for loan in t["Z36"]:
        if loan["Z36_REC_KEY"] not in items:
            found.add(("loans", loan["Z36_REC_KEY"], "loan_missing_item"))
        if loan["Z36_ID"] not in patrons:
            found.add(("loans", loan["Z36_REC_KEY"], "loan_missing_patron"))
    for req in t["Z37"]:
        if req["Z37_REC_KEY"][:15] not in items:
            found.add(("requests", req["Z37_REC_KEY"], "request_missing_item"))
        if req["Z37_ID"] not in patrons:
            found.add(("requests", req["Z37_REC_KEY"], "request_missing_patron"))
    for fine in t["Z31"]:
        if fine["Z31_REC_KEY"][:12] not in patrons:
            found.add(("fines", fine["Z31_REC_KEY"], "fine_missing_patron"))
    return found


def test_defects_found_are_exactly_the_ground_truth(demo: tuple[Path, dict[str, Any]]) -> None:
    out, summary = demo
    truth = {(d["entity"], d["record_id"], d["defect"]) for d in _truth(out)}
    found = _found_defects(out, summary)
    assert sorted(found - truth) == [], "faults the ground truth does not list"
    assert sorted(truth - found) == [], "seeded faults that cannot be found"


def test_every_defect_at_least_twice_and_disjoint(demo: tuple[Path, dict[str, Any]]) -> None:
    out, summary = demo
    truth = _truth(out)
    per_defect = Counter((d["entity"], d["defect"]) for d in truth)
    for entity, rates in DEFECT_RATES.items():
        for defect in rates:
            assert per_defect[(entity, defect)] >= MIN_OCCURRENCES, (entity, defect)
            assert summary["defects"][entity][defect] == per_defect[(entity, defect)]
    records = Counter((d["entity"], d["record_id"]) for d in truth)
    assert [r for r, n in records.items() if n > 1] == []
    assert summary["defect_records"] == len(truth)


def test_same_seed_same_library(demo: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, summary = demo
    again = generate(tmp_path, scale="tiny", seed=1)
    assert _content_hash(out, summary["db_url"]) == _content_hash(tmp_path, again["db_url"])
    assert {k: v for k, v in again.items() if k != "db_url"} == {
        k: v for k, v in summary.items() if k != "db_url"
    }
    other = generate(tmp_path / "seed2", scale="tiny", seed=2)
    assert _content_hash(tmp_path / "seed2", other["db_url"]) != _content_hash(out, summary["db_url"])


def test_worker_processes_write_the_same_library(
    demo: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, summary = demo
    monkeypatch.setattr(generator, "PARALLEL_FROM_BIBS", 0)  # the path the larger scales take
    again = generator.generate(tmp_path, scale="tiny", seed=1)
    assert _content_hash(out, summary["db_url"]) == _content_hash(tmp_path, again["db_url"])
    assert not (tmp_path / ".plan.npz").exists()


def test_counts_match_scale_and_summary(demo: tuple[Path, dict[str, Any]]) -> None:
    out, summary = demo
    scale = SCALES["tiny"]
    assert summary["counts"] == {f: getattr(scale, f) for f in scale.__dataclass_fields__}
    rows = _table_rows(summary["db_url"])
    assert summary["tables"] == {name: len(v) for name, v in rows.items()}
    assert summary["tables"]["Z30"] == scale.items and summary["tables"]["Z303"] == scale.patrons
    settings = load("demo")
    for lib in settings.bib_libraries:
        records = _seq_records(out, lib.file)
        assert len(records) == summary["bibs_by_library"][lib.code]
        sysnos = [r.sysno for r in records]
        assert sysnos == sorted(set(sysnos))
    assert sum(summary["bibs_by_library"].values()) == scale.bibs
    assert len(_seq_records(out, settings.hol_file)) == scale.holdings
    chinese = summary["bibs_by_library"]["BNU01"] / scale.bibs
    assert 0.6 < chinese < 0.7
    assert 3.0 < scale.items / scale.bibs < 3.5


def test_char_columns_are_blank_padded(demo: tuple[Path, dict[str, Any]]) -> None:
    _, summary = demo
    for name, values in _table_rows(summary["db_url"]).items():
        for col_no, col in enumerate(Z_TABLES[name].columns):
            for row in values:
                value = row[col_no]
                if col.kind == "char":
                    assert isinstance(value, str) and len(value) == col.width, (name, col.name, value)
                else:
                    assert isinstance(value, int), (name, col.name, value)


def _adm_bib(t: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """ADM doc number → ``library:sysno`` of its bib, from Z103's ADM → BIB rows."""
    return {
        z["Z103_REC_KEY"][5:14]: f"{z['Z103_REC_KEY_1'][:5]}:{z['Z103_REC_KEY_1'][5:14]}"
        for z in t["Z103"]
        if z["Z103_LKR_TYPE"] == "ADM"
    }


def test_clean_records_link_and_use_known_codes(demo: tuple[Path, dict[str, Any]]) -> None:
    out, summary = demo
    settings = load("demo")
    known = codes.known_codes()
    t = _stripped(_table_rows(summary["db_url"]))
    bad = {(d["entity"], d["record_id"]) for d in _truth(out)}
    hol_bib = {
        r.sysno: f"{r.record['LKR']['l']}:{r.record['LKR']['b']}"
        for r in _seq_records(out, settings.hol_file)
        if ("holdings", f"{settings.hol_library}:{r.sysno}") not in bad
    }
    adm_bib = _adm_bib(t)
    with_items, adm_only = set(), 0
    for i in t["Z30"]:
        assert (
            i["Z30_MATERIAL"] in known["materials"]
            and i["Z30_ITEM_PROCESS_STATUS"] in known["process_statuses"]
        )
        assert i["Z30_CALL_NO_TYPE"] in known["call_no_types"] and i["Z30_CALL_NO"]
        if ("items", i["Z30_REC_KEY"]) in bad:
            continue
        hol = i["Z30_HOL_DOC_NUMBER_X"]
        if not hol:  # no HOL record: the item reaches its bib through its ADM record (Z103)
            adm_only += 1
            continue
        assert hol_bib[hol] == adm_bib[i["Z30_REC_KEY"][:9]], i  # item → HOL → bib agrees with ADM → bib
        with_items.add(hol)
    assert set(hol_bib) == with_items, "every clean holdings record has items"
    assert adm_only >= 2, "some clean items have no HOL link, only their ADM record's Z103 link"
    items = {i["Z30_REC_KEY"]: i for i in t["Z30"]}
    clean_items = {k for k in items if ("items", k) not in bad}
    patrons = {p["Z303_REC_KEY"] for p in t["Z303"]}
    for loan in t["Z36"]:
        if ("loans", loan["Z36_REC_KEY"]) not in bad:
            assert loan["Z36_REC_KEY"] in clean_items and loan["Z36_ID"] in patrons
            assert loan["Z36_SUB_LIBRARY"] in known["sub_libraries"] and loan["Z36_STATUS"] in "ALC"
    assert len({loan["Z36_REC_KEY"] for loan in t["Z36"]}) == len(t["Z36"])
    expiry = {z["Z305_REC_KEY"][:12]: z["Z305_EXPIRY_DATE"] for z in t["Z305"]}
    borrowers = {loan["Z36_ID"] for loan in t["Z36"]}
    for p in patrons & borrowers:
        if ("patrons", p) not in bad:
            assert expiry[p] >= int(AS_OF.strftime("%Y%m%d")), p
    for z in t["Z305"]:
        assert z["Z305_BOR_TYPE"] in known["bor_types"]
    for fine in t["Z31"]:
        assert fine["Z31_TYPE"] in known["fine_types"] and fine["Z31_SUB_LIBRARY"] in known["sub_libraries"]
        assert fine["Z31_REC_KEY_ITEM"] == "" or fine["Z31_REC_KEY_ITEM"] in clean_items
    vendors = {v["Z70_REC_KEY"] for v in t["Z70"]}
    assert {o["Z68_VENDOR_CODE"] for o in t["Z68"]} <= vendors
    assert {o["Z68_REC_KEY"][:9] for o in t["Z68"]} <= set(adm_bib)
    keys = [k for p in t["Z308"] for k in [p["Z308_REC_KEY"]]]
    assert {k[:2] for k in keys} == {"01", "02"} and Counter(p["Z308_ID"] for p in t["Z308"]).most_common(1)[
        0
    ][1] == 2


def test_electronic_bibs_have_856_and_no_holdings(demo: tuple[Path, dict[str, Any]]) -> None:
    out, summary = demo
    settings = load("demo")
    linked = {f"{r.record['LKR']['l']}:{r.record['LKR']['b']}" for r in _seq_records(out, settings.hol_file)}
    electronic: Counter[str] = Counter()
    for lib in settings.bib_libraries:
        for r in _seq_records(out, lib.file):
            has_856 = bool(r.record.get_fields("856"))
            assert has_856 != (f"{lib.code}:{r.sysno}" in linked), r.sysno
            electronic[lib.code] += has_856
    assert dict(electronic) == summary["electronic_bibs"] and min(electronic.values()) >= 2


def test_encoding_defects_are_what_they_claim(demo: tuple[Path, dict[str, Any]]) -> None:
    out, _ = demo
    lines = {}
    for lib in ("BNU01", "BNU02"):
        for line in (out / "alephseq" / f"{lib}.seq").read_bytes().splitlines():
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                lines[f"{lib}:{line[:9].decode()}"] = line
    for d in _truth(out):
        if d["defect"] == "legacy_gbk":
            line = lines[d["record_id"]]
            assert line[10:13] == b"200" and line.decode("gbk")
        elif d["defect"] == "invalid_utf8":
            line = lines[d["record_id"]]
            assert INVALID_BYTES in line
            with pytest.raises(UnicodeDecodeError):
                line.decode("gb18030")


def test_vocabularies_are_gbk_encodable_and_isbns_valid() -> None:
    chinese = [
        *text.CHINESE_SERIALS,
        *text.ZH_PREFIXES,
        *text.ZH_SUFFIXES,
        *text.ZH_SUBTITLES,
        text.ZH_SURNAMES,
        text.ZH_GIVEN,
        *text.ZH_ROLES,
        *(c.heading for c in text.CLC_CLASSES),
        *(t for c in text.CLC_CLASSES for t in c.topics),
        *text.ZH_DEGREES,
    ]
    for value in chinese:
        value.encode("gbk")
    isbn = text.isbn13("9787", 12345)
    assert len(isbn) == 13 and sum((1 if i % 2 == 0 else 3) * int(d) for i, d in enumerate(isbn)) % 10 == 0


def test_known_and_unmapped_codes_are_disjoint() -> None:
    known = codes.known_codes()
    for tab, values in codes.UNMAPPED_CODES.items():
        assert not set(values) & set(known[tab]), tab
    assert set(codes.sub_library_collections()) == set(known["sub_libraries"])


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match="known scales: tiny, small, bnu"):
        generate(tmp_path, scale="huge")
    settings = load("demo")
    from dataclasses import replace

    with pytest.raises(ReplicaError, match="SQLite has no schemas"):
        generate(tmp_path, settings=replace(settings, schemas={"adm": "bnu50", "usr": "bnu00"}))


@pytest.mark.postgres
def test_replica_in_postgresql_schemas(tmp_path: Path) -> None:
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is unreachable: {exc}")
    name = f"a2a_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        from dataclasses import replace

        schemas: dict[str, str | None] = {"adm": "bnu50", "usr": "bnu00"}
        settings = replace(load("demo"), schemas=schemas)
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        summary = generate(tmp_path, settings=settings, db_url=url)
        rows = _table_rows(url, schemas)
        assert summary["tables"] == {n: len(v) for n, v in rows.items()}
        sqlite = generate(tmp_path / "sqlite")
        assert rows == _table_rows(sqlite["db_url"]), "PostgreSQL and SQLite replicas hold the same rows"
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            in_schema = defaultdict(set)
            for schema, table in conn.execute(
                sa.text(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema LIKE 'bnu%'"
                )
            ):
                in_schema[schema].add(table)
        engine.dispose()
        assert in_schema["bnu00"] == {"z303", "z304", "z308"}
        assert "z30" in in_schema["bnu50"] and "z305" in in_schema["bnu50"]
        generate(tmp_path, settings=settings, db_url=url)  # a second run overwrites
        assert _table_rows(url, schemas) == rows
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_lost_and_claimed_returned_loans_at_a_real_sites_rate(demo: tuple[Path, dict[str, Any]]) -> None:
    _, summary = demo
    loans = _stripped(_table_rows(summary["db_url"]))["Z36"]
    status = Counter(loan["Z36_STATUS"] for loan in loans)
    assert set(status) == {"A", "L", "C"}
    assert 0.06 <= (status["L"] + status["C"]) / len(loans) <= 0.16  # one real site: 11 %
    assert status["L"] > status["C"] > 0
    today = int(AS_OF.strftime("%Y%m%d"))
    assert all(loan["Z36_DUE_DATE"] < today for loan in loans if loan["Z36_STATUS"] != "A")


def test_no_demo_user_is_purged_before_it_expires(demo: tuple[Path, dict[str, Any]]) -> None:
    """The demo library's patrons through the committed demo form: purge_date ≥ expiry_date, and
    only patrons without a Z305 expiry get one."""
    import io
    import xml.etree.ElementTree as ET

    from aleph2alma.alma.form import form_dir, load_form
    from aleph2alma.alma.users import UserOptions, write_users_xml
    from zrows import ztable

    _, summary = demo
    t = _stripped(_table_rows(summary["db_url"]))
    out = io.BytesIO()
    write_users_xml(
        *(ztable(Z_TABLES[name], t[name]) for name in ("Z303", "Z304", "Z305", "Z308")),
        load_form(form_dir("demo")),
        out,
        {},
        RejectLog(io.StringIO()),
        UserOptions(as_of=AS_OF),
    )
    users = list(ET.fromstring(out.getvalue()))
    dated = {z["Z305_REC_KEY"][:12] for z in t["Z305"] if z["Z305_EXPIRY_DATE"]}
    undated = {p["Z303_PRIMARY_ID"] for p in t["Z303"] if p["Z303_REC_KEY"] not in dated}
    purged = [u for u in users if u.find("purge_date") is not None]
    assert len(users) > 100
    assert all(u.findtext("purge_date", "") >= u.findtext("expiry_date", "") for u in purged)
    assert {u.findtext("primary_id") for u in purged} <= undated
