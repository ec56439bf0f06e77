"""Z30 → Alma items: every field, fallbacks, rejects, dates, padding, CSV and bib grouping."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aleph2alma.aleph.ztables import Z30
from aleph2alma.alma.items import (
    ITEM_COLUMNS,
    ITEMS_BY_BIB_KEYS,
    item_barcodes,
    items_by_bib,
    part_hol_links,
    read_z30,
    transform_items,
    write_items_csv,
    write_items_parquet,
)
from aleph2alma.rejects import RejectLog
from zrows import ztable


class StubForm:
    """The migration form's lookups, as ``alma.form.MigrationForm`` answers them."""

    locations = {("BNUZG", "ZWSK"): ("MAIN", "ZWSK"), ("BNUJY", "JYZW"): ("EDU", "JYZW")}
    libraries = {"BNUZG": "MAIN", "BNUJY": "EDU"}
    policies = {"01": "LOAN", "03": "READING_ROOM"}
    process_types = {"MI": "MISSING", "BD": "BINDERY"}
    materials = {"BOOK": "BOOK", "ISSUE": "ISSUE"}
    defaults = {
        "default_library": "MAIN",
        "default_location": "UNASSIGNED",
        "default_item_policy": "DEFAULT",
        "default_material_type": "OTHER",
    }

    def location_for(self, sub_library: str, collection: str) -> tuple[str, str] | None:
        return self.locations.get((sub_library, collection))

    def item_policy_for(self, item_status: str) -> str | None:
        return self.policies.get(item_status)

    def process_type_for(self, process_status: str) -> str | None:
        return self.process_types.get(process_status)

    def material_type_for(self, material: str) -> str | None:
        return self.materials.get(material)

    def user_group_for(self, bor_status: str, bor_type: str) -> str | None:
        return None

    def library_for(self, sub_library: str) -> str | None:
        return self.libraries.get(sub_library)

    def default(self, key: str) -> str | None:
        return self.defaults.get(key)


FULL_ROW = {
    "Z30_REC_KEY": "000012345000010",
    "Z30_BARCODE": "31000123",
    "Z30_SUB_LIBRARY": "BNUZG",
    "Z30_COLLECTION": "ZWSK",
    "Z30_ITEM_STATUS": "01",
    "Z30_ITEM_PROCESS_STATUS": "MI",
    "Z30_MATERIAL": "BOOK",
    "Z30_CALL_NO_TYPE": "8",
    "Z30_CALL_NO": "TP312/123",
    "Z30_CALL_NO_2": "I247.5/12",
    "Z30_DESCRIPTION": "v.2 第二卷",
    "Z30_NOTE_OPAC": "附光盘",
    "Z30_NOTE_CIRCULATION": "check disc",
    "Z30_NOTE_INTERNAL": "gift 2019",
    "Z30_INVENTORY_NUMBER": "INV-9",
    "Z30_PRICE": "CNY45.00",
    "Z30_OPEN_DATE": 20190305,
    "Z30_UPDATE_DATE": 20240229,
    "Z30_HOL_DOC_NUMBER_X": "000000777",
    "Z30_NO_LOANS": 12,
    "Z30_ENUMERATION_A": "2",
    "Z30_ENUMERATION_B": "3",
    "Z30_CHRONOLOGICAL_I": "2019",
    "Z30_CHRONOLOGICAL_J": "05",
}
HOL_LINKS = pa.table({"sysno": ["000000777"], "bib_library": ["BNU01"], "bib_sysno": ["000004242"]})


def run(
    rows: list[dict[str, Any]],
    excluded: dict[str, str] | None = None,
    hol_links: pa.Table | None = HOL_LINKS,
    adm_links: pa.Table | None = None,
) -> tuple[list[dict[str, Any]], Any, RejectLog, io.StringIO]:
    sink = io.StringIO()
    log = RejectLog(sink)
    table, stats = transform_items(ztable(Z30, rows), StubForm(), excluded or {}, log, hol_links, adm_links)
    assert table.column_names == ITEM_COLUMNS
    assert stats.records_in == stats.records_out + stats.rejected
    return table.to_pylist(), stats, log, sink


def test_every_field_of_a_full_item() -> None:
    (item,), stats, _, _ = run([FULL_ROW])
    assert item == {
        "aleph_item_key": "000012345000010",
        "barcode": "31000123",
        "library": "MAIN",
        "location": "ZWSK",
        "item_policy": "LOAN",
        "material_type": "BOOK",
        "process_type": "MISSING",
        "call_number_type": "8",
        "call_number": "TP312/123",
        "alternative_call_number": "I247.5/12",
        "description": "v.2 第二卷",
        "enumeration_a": "2",
        "enumeration_b": "3",
        "chronology_i": "2019",
        "chronology_j": "05",
        "public_note": "附光盘",
        "fulfillment_note": "check disc",
        "internal_note_1": "gift 2019",
        "inventory_number": "INV-9",
        "inventory_price": "CNY45.00",
        "creation_date": "2019-03-05",
        "modification_date": "2024-02-29",
        "holding_id": "000000777",
        "bib_library": "BNU01",
        "bib_sysno": "000004242",
        "no_loans": 12,
    }
    assert stats.fallbacks == {"location": 0, "item_policy": 0, "material_type": 0, "process_type": 0}


FALLBACKS = [
    (
        "unmapped collection: the sub-library's library, default location",
        {"Z30_COLLECTION": "LSCK"},
        {"library": "MAIN", "location": "UNASSIGNED"},
        "location",
    ),
    (
        "unmapped sub-library: default library and location",
        {"Z30_SUB_LIBRARY": "BNUCP", "Z30_COLLECTION": "CPZW"},
        {"library": "MAIN", "location": "UNASSIGNED"},
        "location",
    ),
    (
        "unmapped pair in a mapped branch",
        {"Z30_SUB_LIBRARY": "BNUJY", "Z30_COLLECTION": "XXXX"},
        {"library": "EDU", "location": "UNASSIGNED"},
        "location",
    ),
    ("unmapped item status", {"Z30_ITEM_STATUS": "99"}, {"item_policy": "DEFAULT"}, "item_policy"),
    ("unmapped material", {"Z30_MATERIAL": "CDROM"}, {"material_type": "OTHER"}, "material_type"),
    (
        "unmapped process status: no process type",
        {"Z30_ITEM_PROCESS_STATUS": "ZZ"},
        {"process_type": ""},
        "process_type",
    ),
]


@pytest.mark.parametrize(
    ("change", "expected", "counter"), [c[1:] for c in FALLBACKS], ids=[c[0] for c in FALLBACKS]
)
def test_unmapped_codes_take_the_form_defaults(
    change: dict[str, str], expected: dict[str, str], counter: str
) -> None:
    (item,), stats, _, _ = run([FULL_ROW | change])
    assert {k: item[k] for k in expected} == expected
    assert stats.fallbacks[counter] == 1
    assert sum(stats.fallbacks.values()) == 1


def test_blank_process_status_is_in_place_not_a_fallback() -> None:
    (item,), stats, _, _ = run([FULL_ROW | {"Z30_ITEM_PROCESS_STATUS": ""}])
    assert item["process_type"] == ""
    assert stats.fallbacks["process_type"] == 0


def test_excluded_and_keyless_records_are_rejected_with_their_reason() -> None:
    rows = [FULL_ROW | {"Z30_REC_KEY": f"{n:09d}000010", "Z30_BARCODE": f"B{n}"} for n in range(6)]
    rows.append(FULL_ROW | {"Z30_REC_KEY": ""})
    excluded = {
        "000000001000010": "orphan_item",
        "000000004000010": "duplicate_barcode",
        "nope": "not in part",
    }
    items, stats, log, sink = run(rows, excluded)
    assert [i["aleph_item_key"] for i in items] == [
        "000000000000010",
        "000000002000010",
        "000000003000010",
        "000000005000010",
    ]
    assert (stats.records_in, stats.records_out, stats.rejected) == (7, 4, 3)
    assert stats.rejected_by_reason == {"orphan_item": 1, "duplicate_barcode": 1, "missing_item_key": 1}
    assert log.total == 3
    logged = [json.loads(line) for line in sink.getvalue().splitlines()]
    by_id = {r.get("record_id", ""): r for r in logged}
    assert by_id["000000001000010"]["reason"] == "orphan_item"
    assert by_id["000000001000010"]["entity"] == "items"
    assert json.loads(by_id["000000004000010"]["raw"])["Z30_BARCODE"] == "B4"  # stripped raw values
    assert (by_id[""]["reason"], by_id[""]["detail"]) == ("missing_item_key", "row 6 of the part")


def test_many_scattered_rejects_still_balance() -> None:
    rows = [FULL_ROW | {"Z30_REC_KEY": f"{n:09d}000010"} for n in range(3000)]
    excluded = {f"{n:09d}000010": "orphan_item" for n in range(0, 3000, 2)}
    items, stats, _, _ = run(rows, excluded)
    assert len(items) == 1500 and stats.rejected == 1500
    assert items[0]["aleph_item_key"] == "000000001000010"


DATES = [
    ("plain", 20190305, "2019-03-05"),
    ("unset is 0", 0, ""),
    ("Oracle NULL", None, ""),
    ("leap day", 20240229, "2024-02-29"),
    ("no 29 February in 2023", 20230229, ""),
    ("no 31 April", 20230431, ""),
    ("month 13", 20231301, ""),
    ("too short", 190305, ""),
]


@pytest.mark.parametrize(("raw", "iso"), [d[1:] for d in DATES], ids=[d[0] for d in DATES])
def test_dates_become_iso_or_empty(raw: int | None, iso: str) -> None:
    (item,), _, _, _ = run([FULL_ROW | {"Z30_OPEN_DATE": raw}])
    assert item["creation_date"] == iso


def test_blank_padding_and_nulls_are_stripped() -> None:
    (item,), _, _, _ = run(
        [FULL_ROW | {"Z30_BARCODE": "  31000123", "Z30_NOTE_OPAC": None, "Z30_DESCRIPTION": "第二卷\u3000"}]
    )
    assert item["barcode"] == "31000123"
    assert item["public_note"] == ""
    assert item["description"] == "第二卷\u3000"  # only ASCII blanks are padding


def test_call_number_subfields_are_joined() -> None:
    (item,), _, _, _ = run([FULL_ROW | {"Z30_CALL_NO": "$$hTP312$$iC123", "Z30_CALL_NO_2": "$$hQA76 $$i.A1"}])
    assert (item["call_number"], item["alternative_call_number"]) == ("TP312 C123", "QA76 .A1")


def test_bib_link_pads_sysnos_and_withholds_items_of_undelivered_holdings() -> None:
    others = [f"{n:09d}" for n in range(1000, 1010)]  # a map much larger than the part: narrowed first
    links = pa.table(
        {"sysno": ["000000777", *others], "bib_library": ["BNU01 "] * 11, "bib_sysno": ["4242"] * 11}
    )
    rows = [
        FULL_ROW | {"Z30_HOL_DOC_NUMBER_X": "777"},
        FULL_ROW | {"Z30_REC_KEY": "000000002000010", "Z30_HOL_DOC_NUMBER_X": "000000999"},
        FULL_ROW | {"Z30_REC_KEY": "000000003000010", "Z30_HOL_DOC_NUMBER_X": ""},
    ]
    (linked, no_holdings), stats, _, sink = run(rows, hol_links=links)
    assert (linked["bib_library"], linked["bib_sysno"]) == ("BNU01", "000004242")
    assert (no_holdings["holding_id"], no_holdings["bib_sysno"], stats.unlinked_to_bib) == ("", "", 1)
    [reject] = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert (reject["record_id"], reject["reason"]) == ("000000002000010", "holdings_not_delivered")
    assert stats.rejected_by_reason == {"holdings_not_delivered": 1}


def test_items_with_no_hol_link_reach_their_bib_through_their_adm_record() -> None:
    others = [f"{n:09d}" for n in range(1000, 1010)]  # more links than the part asks for: narrowed first
    adm_links = pa.table(
        {
            "adm": ["000012345", "000000003", "000000005", *others],
            "bib_library": ["BNU02", "BNU02", "BNU01", *["BNU01"] * 10],
            "bib_sysno": ["000000001", "555", "000000666", *others],
            "bib_rejected": [False, False, True, *[False] * 10],
        }
    )
    rows = [
        FULL_ROW | {"Z30_HOL_DOC_NUMBER_X": "777"},  # the HOL link wins over the ADM record's
        FULL_ROW | {"Z30_REC_KEY": "000000003000010", "Z30_HOL_DOC_NUMBER_X": ""},
        FULL_ROW | {"Z30_REC_KEY": "000000004000010", "Z30_HOL_DOC_NUMBER_X": ""},  # neither link
        FULL_ROW | {"Z30_REC_KEY": "000000005000010", "Z30_HOL_DOC_NUMBER_X": ""},  # bib was rejected
    ]
    links = pa.table({"sysno": ["000000777"], "bib_library": ["BNU01"], "bib_sysno": ["4242"]})
    (by_hol, by_adm, neither), stats, _, sink = run(rows, hol_links=links, adm_links=adm_links)
    assert (by_hol["holding_id"], by_hol["bib_library"], by_hol["bib_sysno"]) == (
        "000000777",
        "BNU01",
        "000004242",
    )
    assert (by_adm["holding_id"], by_adm["bib_library"], by_adm["bib_sysno"]) == ("", "BNU02", "000000555")
    assert (neither["bib_library"], neither["bib_sysno"]) == ("", "")
    assert (stats.linked_through_adm, stats.unlinked_to_bib) == (1, 1)
    [reject] = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert (reject["record_id"], reject["reason"]) == ("000000005000010", "bib_not_delivered")


def test_a_parts_own_hol_links_give_the_items_the_whole_index_gives() -> None:
    whole = pa.table(
        {
            "sysno": ["000000777", "000000778", *(f"{n:09d}" for n in range(1000, 1010))],
            "bib_library": ["BNU01", "BNU02", *["BNU01"] * 10],
            "bib_sysno": ["4242", "000000005", *(f"{n:09d}" for n in range(1000, 1010))],
        }
    )
    rows = [
        FULL_ROW | {"Z30_HOL_DOC_NUMBER_X": "777      "},  # unpadded and blank-padded, as Oracle gives it
        FULL_ROW | {"Z30_REC_KEY": "000000002000010", "Z30_HOL_DOC_NUMBER_X": "000000778"},
        FULL_ROW | {"Z30_REC_KEY": "000000003000010", "Z30_HOL_DOC_NUMBER_X": "000000999"},  # not delivered
        FULL_ROW | {"Z30_REC_KEY": "000000004000010", "Z30_HOL_DOC_NUMBER_X": ""},
    ]
    own = part_hol_links(whole, ztable(Z30, rows).column("Z30_HOL_DOC_NUMBER_X"))
    assert own["sysno"].to_pylist() == ["000000777", "000000778"]
    with_own, with_whole = run(rows, hol_links=own), run(rows, hol_links=whole)
    assert with_own[0] == with_whole[0] and with_own[1] == with_whole[1]
    assert with_own[3].getvalue() == with_whole[3].getvalue()


def test_without_hol_links_bib_fields_are_empty() -> None:
    (item,), stats, _, _ = run([FULL_ROW], hol_links=None)
    assert (item["bib_library"], item["bib_sysno"], stats.unlinked_to_bib) == ("", "", 0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(12, 12), (1500, 999), (None, 0), (-3, 0)],
    ids=["as is", "capped at 999", "null is 0", "negative is 0"],
)
def test_no_loans(raw: int | None, expected: int) -> None:
    (item,), _, _, _ = run([FULL_ROW | {"Z30_NO_LOANS": raw}])
    assert item["no_loans"] == expected


def test_chunked_input_and_empty_part() -> None:
    table = ztable(Z30, [FULL_ROW, FULL_ROW | {"Z30_REC_KEY": "000000002000010"}])
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1)])
    out, stats = transform_items(chunked, StubForm(), {}, RejectLog(), HOL_LINKS)
    assert out.num_rows == 2 and stats.balanced
    empty, stats = transform_items(ztable(Z30, []), StubForm(), {}, RejectLog())
    assert empty.num_rows == 0 and stats.balanced


def test_a_part_read_dictionary_encoded_gives_the_same_items(tmp_path: Path) -> None:
    rows = [
        FULL_ROW,
        FULL_ROW
        | {
            "Z30_REC_KEY": "000000002000010",
            "Z30_SUB_LIBRARY": None,
            "Z30_COLLECTION": " ZWSK",
            "Z30_MATERIAL": "CDROM",
            "Z30_ITEM_PROCESS_STATUS": None,
            "Z30_NOTE_OPAC": None,
            "Z30_OPEN_DATE": None,
            "Z30_UPDATE_DATE": 20230229,
        },
        FULL_ROW
        | {"Z30_REC_KEY": "000000003000010", "Z30_ITEM_STATUS": "99", "Z30_CALL_NO_2": "$$hQA76 $$i.A1"},
        FULL_ROW | {"Z30_REC_KEY": "", "Z30_NOTE_INTERNAL": "keyless"},
    ]
    table = ztable(Z30, rows)
    # two row groups, and a code padded two ways ("01" and " 01") in the second: it strips to one code
    table = pa.concat_tables(
        [table, ztable(Z30, [FULL_ROW | {"Z30_REC_KEY": "000000005000010", "Z30_ITEM_STATUS": " 01"}])]
    )
    pq.write_table(table, tmp_path / "z30.parquet", row_group_size=2)
    read = read_z30(tmp_path / "z30.parquet")
    assert pa.types.is_dictionary(read.schema.field("Z30_COLLECTION").type)
    plain_log, dict_log = io.StringIO(), io.StringIO()
    plain, plain_stats = transform_items(table, StubForm(), {}, RejectLog(plain_log), HOL_LINKS)
    items, stats = transform_items(read, StubForm(), {}, RejectLog(dict_log), HOL_LINKS)
    assert items.equals(plain) and items.schema == plain.schema
    assert stats == plain_stats and dict_log.getvalue() == plain_log.getvalue()
    assert items.column("item_policy").to_pylist() == ["LOAN", "LOAN", "DEFAULT", "LOAN"]
    write_items_parquet(items, tmp_path / "items.parquet")
    assert pq.read_table(tmp_path / "items.parquet").equals(items)


def test_missing_input_column_is_named() -> None:
    with pytest.raises(ValueError, match="Z30_NOTE_OPAC"):
        transform_items(ztable(Z30, [FULL_ROW]).drop_columns(["Z30_NOTE_OPAC"]), StubForm(), {}, RejectLog())


def test_csv_is_utf8_with_a_header() -> None:
    items, _ = transform_items(
        ztable(Z30, [FULL_ROW | {"Z30_NOTE_OPAC": 'a "quoted", note'}]),
        StubForm(),
        {},
        RejectLog(),
        HOL_LINKS,
    )
    buf = io.BytesIO()
    write_items_csv(items, buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue().decode("utf-8"))))
    assert list(rows[0]) == ITEM_COLUMNS
    assert rows[0]["description"] == "v.2 第二卷"
    assert rows[0]["public_note"] == 'a "quoted", note'
    buf = io.BytesIO()
    write_items_csv(items, buf, header=False)
    assert not buf.getvalue().startswith(b"aleph_item_key") and b"aleph_item_key" not in buf.getvalue()


def test_items_by_bib_groups_linked_items() -> None:
    rows = [
        FULL_ROW,
        FULL_ROW | {"Z30_REC_KEY": "000012345000020", "Z30_BARCODE": "31000124"},
        FULL_ROW | {"Z30_REC_KEY": "000099999000010", "Z30_HOL_DOC_NUMBER_X": "000000001"},
    ]
    table, _ = transform_items(ztable(Z30, rows), StubForm(), {}, RejectLog(), HOL_LINKS)
    grouped = items_by_bib(table)
    assert list(grouped) == [("BNU01", "000004242")]
    first, second = grouped[("BNU01", "000004242")]
    assert tuple(first) == ITEMS_BY_BIB_KEYS
    assert first["internal_note"] == "gift 2019" and second["barcode"] == "31000124"


def test_item_barcodes_maps_keys_of_transformed_items() -> None:
    table, _ = transform_items(ztable(Z30, [FULL_ROW]), StubForm(), {}, RejectLog())
    assert item_barcodes(table) == {"000012345000010": "31000123"}
