"""Cross-record checks: each fires on exactly its bad rows, on small hand-made tables."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aleph2alma.aleph.links import ADM_LINKS_SCHEMA, adm_bib_links, adms_without_holdings
from aleph2alma.aleph.ztables import Z_TABLES
from aleph2alma.validate import attachment, columns
from aleph2alma.validate.checks import (
    CHECKS,
    NEEDED_COLUMNS,
    CheckContext,
    TableInputs,
    check_tables,
    read_parts,
    rejected_ids,
)
from aleph2alma.validate.columns import KeySet
from aleph2alma.validate.issues import Issue
from aleph2alma.validate.rules import RULES

AS_OF = date(2026, 3, 1)

Rows = dict[str, list[dict[str, Any]]]


class StubForm:
    """Stand-in for ``alma.form.MigrationForm``: exact rows plus ``*`` fallbacks."""

    locations = {("BNUZG", "ZWSK"), ("BNUZG", "WWSK"), ("BNUJY", "*")}
    policies = {"01", "02", "08"}
    groups = {("01", "01"), ("02", "01"), ("04", "*")}

    def location_for(self, sub: str, coll: str) -> tuple[str, str] | None:
        if (sub, coll) in self.locations or (sub, "*") in self.locations:
            return ("MAIN", coll)
        return None

    def item_policy_for(self, status: str) -> str | None:
        return f"P{status}" if status in self.policies else None

    def user_group_for(self, bor_status: str, bor_type: str) -> str | None:
        if (bor_status, bor_type) in self.groups or (bor_status, "*") in self.groups:
            return f"G{bor_status}"
        return None


def item(
    key: str,
    barcode: str | None,
    sub: str = "BNUZG",
    coll: str = "ZWSK",
    status: str = "01",
    hol: str | None = "000000001",
) -> dict[str, Any]:
    return {
        "Z30_REC_KEY": key,
        "Z30_BARCODE": barcode,
        "Z30_SUB_LIBRARY": sub,
        "Z30_COLLECTION": coll,
        "Z30_ITEM_STATUS": status,
        "Z30_HOL_DOC_NUMBER_X": hol,
    }


def patron(key: str, primary: str | None) -> dict[str, Any]:
    return {"Z303_REC_KEY": key, "Z303_PRIMARY_ID": primary}


def local(
    key: str, status: str = "01", btype: str = "01", expiry: int = 20300101, sub: str = "BNU50"
) -> dict[str, Any]:
    return {
        "Z305_REC_KEY": key + sub,
        "Z305_BOR_TYPE": btype,
        "Z305_BOR_STATUS": status,
        "Z305_EXPIRY_DATE": expiry,
    }


def loan(item_key: str, patron_key: str, status: str = "A") -> dict[str, Any]:
    return {"Z36_REC_KEY": item_key, "Z36_ID": patron_key, "Z36_STATUS": status}


def request(key: str, patron_key: str) -> dict[str, Any]:
    return {"Z37_REC_KEY": key, "Z37_ID": patron_key}


def fine(key: str) -> dict[str, Any]:
    return {"Z31_REC_KEY": key}


def holding(sysno: str, bib_library: str, bib_sysno: str) -> dict[str, Any]:
    return {
        "library": "BNU60",
        "sysno": sysno,
        "bib_library": bib_library,
        "bib_sysno": bib_sysno,
        "sub_library": "BNUZG",
        "collection": "ZWSK",
        "call_number": "I247.5/1",
    }


def bib(library: str, sysno: str, rejected: bool = False) -> dict[str, Any]:
    return {"library": library, "sysno": sysno, "has_856": False, "rejected": rejected}


def adm_link(adm: str, bib_library: str, bib_sysno: str) -> dict[str, Any]:
    return {"adm": adm, "bib_library": bib_library, "bib_sysno": bib_sysno}


BASE: Rows = {
    "bib_index": [
        bib("BNU01", "000000001"),
        bib("BNU01", "000000002", rejected=True),
        bib("BNU02", "000000001"),
    ],
    # holdings 3 links to a rejected bib: not an orphan
    "holdings_index": [
        holding("000000001", "BNU01", "000000001"),
        holding("000000002", "BNU02", "000000001"),
        holding("000000003", "BNU01", "000000002"),
    ],
    "z30": [
        item("000000001000010", "1000000001"),
        item("000000001000020", "1000000002"),
        item("000000002000010", "2000000001", sub="BNUJY", coll="JYWW", status="08", hol="000000002"),
    ],
    "z303": [
        patron("BNU000000001", "2020010001"),
        patron("BNU000000002", "2020010002"),
        patron("BNU000000003", "2020010003"),
    ],
    "z305": [
        local("BNU000000001"),
        local("BNU000000002", "04", "03"),
        local("BNU000000003", expiry=20250101),
    ],
    "z36": [loan("000000001000010", "BNU000000001"), loan("000000002000010", "BNU000000002")],
    "z37": [request("0000000010000200001", "BNU000000002")],
    "z31": [fine("BNU000000003202501011030000001")],
    "adm_links": [],
}
"""A clean little library: patron 3 has lapsed but has no loans."""

WIDTHS = {c.name: c.width for t in Z_TABLES.values() for c in t.columns if c.kind == "char"}


def _table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as the extract gives them: CHAR values blank-padded, dates int64."""
    if name == "adm_links":
        return pa.Table.from_pylist(rows, schema=ADM_LINKS_SCHEMA)
    if name in ("bib_index", "holdings_index"):
        return pa.Table.from_pylist(rows)
    columns = NEEDED_COLUMNS[name.upper()]
    data: dict[str, list[Any]] = {c: [] for c in columns}
    for row in rows:
        for c in columns:
            value = row[c]
            data[c].append(value.ljust(WIDTHS[c]) if isinstance(value, str) and c in WIDTHS else value)
    types = {c: pa.int64() if c.endswith("_DATE") else pa.string() for c in columns}
    return pa.table({c: pa.array(v, types[c]) for c, v in data.items()})


def inputs_from(rows: Rows) -> TableInputs:
    return TableInputs(**{name: _table(name, r) for name, r in rows.items()})


def found(rows: Rows, as_of: date = AS_OF) -> set[tuple[str, str]]:
    return {(i.rule, i.record_id) for i in check_tables(inputs_from(rows), StubForm(), as_of)}


def add(table: str, *rows: dict[str, Any]) -> Callable[[Rows], None]:
    """A change that adds rows to a table."""

    def change(r: Rows) -> None:
        r[table].extend(rows)

    return change


def put(table: str, index: int, row: dict[str, Any]) -> Callable[[Rows], None]:
    """A change that replaces one row of a table."""

    def change(r: Rows) -> None:
        r[table][index] = row

    return change


def both(*changes: Callable[[Rows], None]) -> Callable[[Rows], None]:
    def change(rows: Rows) -> None:
        for c in changes:
            c(rows)

    return change


def changed(change: Callable[[Rows], None]) -> Rows:
    rows = copy.deepcopy(BASE)
    change(rows)
    return rows


def test_clean_library_has_no_issues() -> None:
    assert found(BASE) == set()


def test_every_table_rule_has_a_check_and_every_check_a_rule() -> None:
    assert set(CHECKS) <= set(RULES)
    bib_rules = {r.id for r in RULES.values() if r.entity == "bibs"}
    assert set(CHECKS) | bib_rules | set(attachment.RULES) == set(RULES)


CASES: list[tuple[str, Callable[[Rows], None], set[tuple[str, str]]]] = [
    (
        "duplicate_barcode: every member of a group of three",
        add("z30", item("000000001000030", "1000000001"), item("000000001000040", "1000000001")),
        {("duplicate_barcode", k) for k in ("000000001000010", "000000001000030", "000000001000040")},
    ),
    (
        "duplicate_barcode: two groups",
        add("z30", item("000000001000030", "1000000001"), item("000000001000040", "2000000001")),
        {
            ("duplicate_barcode", k)
            for k in ("000000001000010", "000000001000030", "000000002000010", "000000001000040")
        },
    ),
    (
        "duplicate_barcode: leading zeros make a different barcode",
        add("z30", item("000000001000030", "01000000001")),
        set(),
    ),
    (
        "duplicate_barcode: letters in barcodes",
        add(
            "z30",
            item("000000001000030", "B-0001"),
            item("000000001000040", "B-0001"),
            item("000000001000050", "B-01"),
        ),
        {("duplicate_barcode", "000000001000030"), ("duplicate_barcode", "000000001000040")},
    ),
    (
        "missing_barcode: blank and null, never duplicates of each other",
        add("z30", item("000000001000030", ""), item("000000001000040", None)),
        {("missing_barcode", "000000001000030"), ("missing_barcode", "000000001000040")},
    ),
    (
        "orphan_item: HOL record that does not exist, and a blank link",
        add("z30", item("000000001000030", "X1", hol="000000099"), item("000000001000040", "X2", hol="")),
        {("orphan_item", "000000001000030"), ("orphan_item", "000000001000040")},
    ),
    (
        "orphan_item: no HOL link, but the ADM record links (Z103) to a bib, even a rejected one",
        both(
            add("z30", item("000000003000010", "X1", hol=""), item("000000004000010", "X2", hol="")),
            add(
                "adm_links", adm_link("000000003", "BNU02", "1"), adm_link("000000004", "BNU01", "000000002")
            ),
        ),
        set(),
    ),
    (
        "orphan_item: no HOL link, and the ADM record links to no bib, or to one that does not exist",
        both(
            add("z30", item("000000003000010", "X1", hol=""), item("000000004000010", "X2", hol="")),
            add("adm_links", adm_link("000000004", "BNU02", "000000002")),
        ),
        {("orphan_item", "000000003000010"), ("orphan_item", "000000004000010")},
    ),
    (
        "orphan_item: a HOL link to no HOL record is not saved by the ADM record's link",
        both(
            add("z30", item("000000003000010", "X1", hol="000000099")),
            add("adm_links", adm_link("000000003", "BNU01", "000000001")),
        ),
        {("orphan_item", "000000003000010")},
    ),
    (
        "unmapped_location: unknown pair; the * fallback of BNUJY maps any collection",
        add(
            "z30",
            item("000000001000030", "X1", sub="BNUCP", coll="CPZW"),
            item("000000001000040", "X2", sub="BNUZG", coll="LSCK"),
            item("000000001000050", "X3", sub="BNUJY", coll="NEW1"),
        ),
        {("unmapped_location", "000000001000030"), ("unmapped_location", "000000001000040")},
    ),
    (
        "unmapped_item_status",
        add("z30", item("000000001000030", "X1", status="99"), item("000000001000040", "X2", status="19")),
        {("unmapped_item_status", "000000001000030"), ("unmapped_item_status", "000000001000040")},
    ),
    (
        "item with two problems gets both",
        add("z30", item("000000001000030", "", status="99")),
        {("missing_barcode", "000000001000030"), ("unmapped_item_status", "000000001000030")},
    ),
    (
        "duplicate_patron_id: all of the group; blank ids are not duplicates",
        add(
            "z303",
            patron("BNU000000004", "2020010001"),
            patron("BNU000000005", ""),
            patron("BNU000000006", None),
            patron("BNU000000007", ""),
        ),
        {("duplicate_patron_id", "BNU000000001"), ("duplicate_patron_id", "BNU000000004")},
    ),
    (
        "unmapped_user_group: one issue per patron; (04, *) fallback maps any type",
        add(
            "z305",
            local("BNU000000001", "99", "01", sub="BNUZG"),
            local("BNU000000001", "29", "01", sub="BNUJY"),
            local("BNU000000002", "04", "77", sub="BNUZG"),
            local("BNU000000003", "01", "02", sub="BNUZG"),
        ),
        {("unmapped_user_group", "BNU000000001"), ("unmapped_user_group", "BNU000000003")},
    ),
    (
        "expired_patron_with_loans: lapsed the day before as_of, one active loan",
        put("z305", 0, local("BNU000000001", expiry=20260228)),
        {("expired_patron_with_loans", "BNU000000001")},
    ),
    (
        "expired_patron_with_loans: expiring on as_of is not expired",
        put("z305", 0, local("BNU000000001", expiry=20260301)),
        set(),
    ),
    (
        "expired_patron_with_loans: one registration still valid",
        both(
            put("z305", 0, local("BNU000000001", expiry=20200101)),
            add("z305", local("BNU000000001", expiry=20270101, sub="BNUZH")),
        ),
        set(),
    ),
    (
        "expired_patron_with_loans: unset expiry (0) never lapses",
        put("z305", 0, local("BNU000000001", expiry=0)),
        set(),
    ),
    (
        "expired_patron_with_loans: a lost / claimed-returned loan is still an open loan",
        add(
            "z36", loan("000000001000020", "BNU000000003", "L"), loan("000000001000020", "BNU000000003", "C")
        ),
        {("expired_patron_with_loans", "BNU000000003")},
    ),
    (
        "expired_patron_with_loans: every lapsed registration, two loans",
        both(
            add("z305", local("BNU000000003", expiry=20240101, sub="BNUZH")),
            add("z36", loan("000000001000020", "BNU000000003")),
        ),
        {("expired_patron_with_loans", "BNU000000003")},
    ),
    (
        "loan_missing_item and loan_missing_patron, both on one loan too",
        add(
            "z36",
            loan("000000099000010", "BNU000000001"),
            loan("000000001000020", "BNU000000099"),
            loan("000000098000010", "BNU000000098"),
        ),
        {
            ("loan_missing_item", "000000099000010"),
            ("loan_missing_patron", "000000001000020"),
            ("loan_missing_item", "000000098000010"),
            ("loan_missing_patron", "000000098000010"),
        },
    ),
    (
        "loan_missing_item: a non-numeric key against numeric item keys",
        add("z36", loan("ILL000000000001", "BNU000000001")),
        {("loan_missing_item", "ILL000000000001")},
    ),
    (
        "request_missing_item (item part of the key) and request_missing_patron",
        add(
            "z37",
            request("0000000990000100001", "BNU000000001"),
            request("0000000010000100002", "BNU000000099"),
        ),
        {("request_missing_item", "0000000990000100001"), ("request_missing_patron", "0000000010000100002")},
    ),
    (
        "fine_missing_patron (patron part of the key)",
        add("z31", fine("BNU000000099202501011030000001"), fine("BNU000000001202501011030000002")),
        {("fine_missing_patron", "BNU000000099202501011030000001")},
    ),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_check_fires_exactly_on_bad_rows(
    change: Callable[[Rows], None], expected: set[tuple[str, str]]
) -> None:
    assert found(changed(change)) == expected


def test_issues_carry_entity_and_detail() -> None:
    rows = changed(add("z30", item("000000001000030", "1000000001")))
    issues = list(check_tables(inputs_from(rows), StubForm(), AS_OF))
    assert issues == [
        Issue("duplicate_barcode", "items", "000000001000010", "barcode 1000000001 shared by 2 items"),
        Issue("duplicate_barcode", "items", "000000001000030", "barcode 1000000001 shared by 2 items"),
    ]


def test_details_name_the_codes() -> None:
    rows = changed(
        both(
            add("z30", item("000000001000030", "X", sub="BNUCP", coll="CPZW")),
            add("z305", local("BNU000000002", "99", "01", sub="BNUZG")),
            put("z305", 0, local("BNU000000001", expiry=20260228)),
        )
    )
    details = {i.rule: i.detail for i in check_tables(inputs_from(rows), StubForm(), AS_OF)}
    assert details == {
        "unmapped_location": "sub-library BNUCP collection CPZW is not in the locations tab",
        "unmapped_user_group": "BNUZG: bor_status 99 bor_type 01 not in the user-group tab",
        "expired_patron_with_loans": "registration expired 2026-02-28; 1 open loan(s)",
    }


def test_integer_sysnos_in_the_indexes() -> None:
    rows = changed(add("z30", item("000000001000030", "X1", hol="000000099")))
    inputs = inputs_from(rows)
    for name in ("bib_index", "holdings_index"):
        table = getattr(inputs, name)
        for col in ("sysno", "bib_sysno"):
            if col in table.column_names:
                table = table.set_column(
                    table.column_names.index(col),
                    col,
                    pa.array([int(v) if v else None for v in table[col].to_pylist()], pa.int64()),
                )
        setattr(inputs, name, table)
    issues = {(i.rule, i.record_id) for i in check_tables(inputs, StubForm(), AS_OF)}
    assert issues == {("orphan_item", "000000001000030")}


def test_parts_read_back_dictionary_encoded_and_chunked(tmp_path: Path) -> None:
    rows = changed(
        add(
            "z30",
            item("000000001000030", "X1", sub="BNUCP", coll="CPZW"),
            item("000000001000040", "1000000001", status="99"),
        )
    )
    inputs = inputs_from(rows)
    paths = []
    for i, (start, length) in enumerate(((0, 2), (2, 3))):
        path = tmp_path / f"part-{i:05d}.parquet"
        pq.write_table(inputs.z30.slice(start, length), path)
        paths.append(path)
    z30 = read_parts(paths, "Z30")
    assert pa.types.is_dictionary(z30.schema.field("Z30_SUB_LIBRARY").type)
    assert z30.column("Z30_REC_KEY").num_chunks == 2
    inputs.z30 = z30
    issues = {(i.rule, i.record_id) for i in check_tables(inputs, StubForm(), AS_OF)}
    assert issues == {
        ("unmapped_location", "000000001000030"),
        ("unmapped_item_status", "000000001000040"),
        ("duplicate_barcode", "000000001000010"),
        ("duplicate_barcode", "000000001000040"),
    }


def test_missing_column_is_named() -> None:
    inputs = inputs_from(BASE)
    inputs.z30 = inputs.z30.drop_columns(["Z30_BARCODE"])
    with pytest.raises(KeyError, match="Z30_BARCODE"):
        list(CHECKS["missing_barcode"](CheckContext(inputs, StubForm(), AS_OF)))


def test_totals_per_entity() -> None:
    assert inputs_from(BASE).totals() == {
        "bibs": 3,
        "holdings": 3,
        "items": 3,
        "patrons": 3,
        "loans": 2,
        "requests": 1,
        "fines": 1,
    }


def test_rejected_ids_first_rejecting_rule_wins() -> None:
    issues = [
        Issue("missing_barcode", "items", "A"),  # does not reject
        Issue("loan_missing_patron", "loans", "L1"),
        Issue("loan_missing_item", "loans", "L1"),
        Issue("orphan_item", "items", "B"),
        Issue("invalid_leader", "bibs", "BNU01:000000001"),
    ]
    assert rejected_ids(issues, RULES) == {
        "loans": {"L1": "loan_missing_patron"},
        "items": {"B": "orphan_item"},
        "bibs": {"BNU01:000000001": "invalid_leader"},
    }


def test_rejected_ids_unknown_rule() -> None:
    with pytest.raises(ValueError, match="no_such_rule"):
        rejected_ids([Issue("no_such_rule", "items", "A")], RULES)


# --- the generated demo library against its ground truth -----------------------------------


class KnownCodesForm:
    """A form filled from ``demo.codes.known_codes()``: exactly the defect-only codes are unmapped."""

    def __init__(self) -> None:
        from aleph2alma_dev.demo import codes

        known = codes.known_codes()
        self.locations = {tuple(c.split("/")) for c in known["collections"]}
        self.statuses = set(known["item_statuses"])
        self.groups = {(s, t) for s in known["bor_statuses"] for t in known["bor_types"]}

    def location_for(self, sub: str, coll: str) -> tuple[str, str] | None:
        return (sub, coll) if (sub, coll) in self.locations else None

    def item_policy_for(self, status: str) -> str | None:
        return status if status in self.statuses else None

    def user_group_for(self, bor_status: str, bor_type: str) -> str | None:
        return bor_status if (bor_status, bor_type) in self.groups else None


def _indexes(seq_dir: Path, summary: dict[str, Any]) -> tuple[pa.Table, pa.Table]:
    """Minimal bib and holdings indexes read from the generated ALEPHSEQ files."""
    from aleph2alma.aleph.alephseq import read_alephseq

    bibs: list[dict[str, Any]] = []
    holdings: list[dict[str, Any]] = []
    from aleph2alma import settings

    hol_library = settings.load("demo").hol_library
    for library, rel in summary["files"].items():
        if not rel.endswith(".seq"):
            continue
        for rec in read_alephseq(seq_dir.parent / rel):
            if library != hol_library:
                bibs.append(bib(library, rec.sysno))
                continue
            lkr = next(iter(rec.record.get_fields("LKR")), None)
            loc = next(iter(rec.record.get_fields("852")), None)
            holdings.append(
                {
                    "library": library,
                    "sysno": rec.sysno,
                    "bib_library": lkr.get("l", "") if lkr else "",
                    "bib_sysno": lkr.get("b", "") if lkr else "",
                    "sub_library": loc.get("b", "") if loc else "",
                    "collection": loc.get("c", "") if loc else "",
                    "call_number": loc.get("h", "") if loc else "",
                }
            )
    return pa.Table.from_pylist(bibs), pa.Table.from_pylist(holdings)


def _replica_inputs(library: Path) -> tuple[TableInputs, date, set[tuple[str, str, str]]]:
    import json

    import pandas as pd
    import sqlalchemy as sa

    summary = json.loads((library / "summary.json").read_text(encoding="utf-8"))
    engine = sa.create_engine(f"sqlite:///{library / 'replica.sqlite'}")
    tables = {}
    with engine.connect() as conn:
        for name, columns in NEEDED_COLUMNS.items():
            df = pd.read_sql_query(
                f"SELECT {', '.join(c.lower() for c in columns)} FROM {name.lower()}", conn
            )
            df.columns = [c.upper() for c in df.columns]
            tables[name.lower()] = pa.Table.from_pandas(df, preserve_index=False)
    engine.dispose()
    adms = KeySet.of(adms_without_holdings(tables["z30"]))
    tables["adm_links"] = adm_bib_links(tables.pop("z103"), "BNU50", adms)
    bib_index, holdings_index = _indexes(library / "alephseq", summary)
    truth = set()
    for line in (library / "ground_truth.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        truth.add((row["entity"], row["record_id"], row["defect"]))
    return (
        TableInputs(bib_index=bib_index, holdings_index=holdings_index, **tables),
        date.fromisoformat(summary["as_of"]),
        truth,
    )


def test_generated_library_matches_ground_truth(tiny_library: Path) -> None:
    inputs, as_of, truth = _replica_inputs(tiny_library)
    found = {(i.entity, i.record_id, i.rule) for i in check_tables(inputs, KnownCodesForm(), as_of)}
    expected = {t for t in truth if t[2] in CHECKS}
    assert {t[2] for t in expected} == set(CHECKS)  # every table rule is seeded
    assert found - expected == set(), "flagged but not seeded"
    assert expected - found == set(), "seeded but not flagged"


def test_demo_thresholds_let_the_tiny_library_through(tiny_library: Path) -> None:
    """The demo's rules.toml is meant to pass a first test load of the seeded demo library."""
    from aleph2alma.validate.rules import evaluate, rules_for_migration

    inputs, as_of, _ = _replica_inputs(tiny_library)
    rules = rules_for_migration("demo")
    counts: dict[str, int] = {}
    for issue in check_tables(inputs, KnownCodesForm(), as_of, rules):
        counts[issue.rule] = counts.get(issue.rule, 0) + 1
    assert [b.describe() for b in evaluate(counts, inputs.totals(), rules) if b.blocking] == []
    assert [
        b.rule for b in evaluate(counts, inputs.totals(), RULES) if b.blocking
    ]  # the defaults would block


def test_keys_are_imaged_slice_by_slice_as_they_would_be_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = pa.chunked_array(
        [["000000001", "", "12", "0012"], ["A-1", "99999999999999999999", "7", "000000001"]]
    )
    whole = columns.int_image(keys)
    monkeypatch.setattr(columns, "INT_IMAGE_ROWS", 3)  # slices across the chunk boundary
    assert columns.int_image(keys).tolist() == whole.tolist()
    assert whole[1] == -1 and whole[4] == whole[5] == -2 and whole[2] != whole[3] and whole[0] == whole[7]
