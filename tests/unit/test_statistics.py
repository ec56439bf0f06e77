"""The Ex Libris statistics workbook: round trip, tolerant reading, errors that name sheet and row."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from aleph2alma.alma.statistics import (
    AREA_FOR_ENTITY,
    AREAS,
    SUB_AREAS,
    AreaStatistics,
    StatisticsAliases,
    StatisticsWorkbookError,
    area_of_sheet,
    read_statistics_workbook,
    write_statistics_workbook,
)

Rows = list[list[Any]]


def workbook(path: Path, sheets: dict[str, Rows]) -> Path:
    """An .xlsx with one sheet per entry, rows as given (None = empty cell)."""
    wb = Workbook()
    wb.remove(wb.active)
    for title, rows in sheets.items():
        ws = wb.create_sheet(title)
        for row in rows:
            ws.append(row)
    wb.save(path)
    return path


# --- round trip -----------------------------------------------------------------------------

ROUND_TRIPS = {
    "patron-with-rejects": {
        "patron": AreaStatistics(
            "patron",
            1234,
            1200,
            34,
            [("BNU000000001", "Duplicate primary identifier"), ("BNU000000002", "User group not mapped")],
        )
    },
    "counts-only": {"loan": AreaStatistics("loan", 50, 50, 0)},
    "some-counts-unknown": {
        "request": AreaStatistics("request", None, 7, None, [("000000017000010" + "0001", "no item")])
    },
    "inventory-with-sub-areas": {
        "bib_inventory": AreaStatistics(
            "bib_inventory",
            300,
            297,
            3,
            [("000000007", "no title"), ("000000009", "bad leader"), ("000000011", "bad leader")],
        ),
        "bib_inventory.holdings": AreaStatistics("bib_inventory.holdings", 320, 320, 0),
        "bib_inventory.items": AreaStatistics(
            "bib_inventory.items",
            1000,
            998,
            2,
            [("000000050000010", "duplicate barcode"), ("000000051000010", "duplicate barcode")],
        ),
        "bib_inventory.portfolios": AreaStatistics("bib_inventory.portfolios", 12, 12, 0),
    },
    "every-area": {area: AreaStatistics(area, 10, 9, 1, [(f"{area}-1", "rejected")]) for area in AREAS},
}


@pytest.mark.parametrize("stats", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_round_trip(tmp_path: Path, stats: dict[str, AreaStatistics]) -> None:
    path = tmp_path / "stats.xlsx"
    write_statistics_workbook(stats, path)
    back = read_statistics_workbook(path)
    assert dict(back) == stats
    assert back.unknown_sheets == [] and back.source == str(path)


def test_ids_keep_leading_zeros_and_chinese_reasons(tmp_path: Path) -> None:
    stats = {"patron": AreaStatistics("patron", 1, 0, 1, [("000123", "证件号重复 duplicate id")])}
    write_statistics_workbook(stats, tmp_path / "s.xlsx")
    assert read_statistics_workbook(tmp_path / "s.xlsx")["patron"].rejected_records == [
        ("000123", "证件号重复 duplicate id")
    ]


def test_holdings_have_a_tab_of_their_own(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    stats = {
        "bib_inventory": AreaStatistics("bib_inventory", 3, 3, 0),
        "bib_inventory.holdings": AreaStatistics(
            "bib_inventory.holdings", 4, 3, 1, [("000000102", "No bibliographic record with 001 000000009")]
        ),
        "patron": AreaStatistics("patron", 1, 1, 0),
    }
    path = tmp_path / "s.xlsx"
    write_statistics_workbook(stats, path)
    assert load_workbook(path, read_only=True).sheetnames == ["bib_inventory", "holdings", "patron"]
    assert dict(read_statistics_workbook(path)) == stats


@pytest.mark.parametrize("sheet", ["Holdings", "MFHD", "Holdings records"])
def test_holdings_tab_read_by_name(tmp_path: Path, sheet: str) -> None:
    path = workbook(
        tmp_path / "s.xlsx",
        {
            sheet: [
                ["Total records in file", 320],
                ["Holdings loaded", 319],
                ["Rejected", 1],
                ["Aleph ID", "Reason"],
                ["000004711", "no bib"],
            ]
        },
    )
    assert read_statistics_workbook(path)["bib_inventory.holdings"] == AreaStatistics(
        "bib_inventory.holdings", 320, 319, 1, [("000004711", "no bib")]
    )


@pytest.mark.parametrize("key", ["holds", "bib_inventory.bibs", "patron.items"])
def test_write_unknown_area(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match=f"unknown statistics area '{key}'"):
        write_statistics_workbook({key: AreaStatistics(key)}, tmp_path / "s.xlsx")


def test_area_for_entity_names_real_keys() -> None:
    keys = {*AREAS, *(f"{a}.{s}" for a, subs in SUB_AREAS.items() for s in subs)}
    assert set(AREA_FOR_ENTITY.values()) <= keys
    assert AREA_FOR_ENTITY["bibs"] == "bib_inventory" and AREA_FOR_ENTITY["patrons"] == "patron"


# --- tolerant reading ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sheet", "area"),
    [
        ("patron", "patron"),
        ("Patrons", "patron"),
        ("USERS", "patron"),
        ("Bib Inventory", "bib_inventory"),
        ("bib-inventory", "bib_inventory"),
        ("fund_tx", "fund_tx"),
        ("Fund TX", "fund_tx"),
        ("P_ORDER", "p_order"),
        ("Summary", None),
        ("Sheet1", None),
    ],
    ids=lambda v: str(v),
)
def test_sheet_names(sheet: str, area: str | None) -> None:
    assert area_of_sheet(sheet) == area


def test_layout_variations(tmp_path: Path) -> None:
    """Titles, blank rows, shifted columns, other label words, numbers as text, an unknown sheet."""
    path = workbook(
        tmp_path / "Testload_Migration_Stats.xlsx",
        {
            "Summary": [["BNU test load"], ["whatever", 3]],
            "Patrons": [
                ["Migration statistics — patrons"],
                [],
                [None, "Counts of records"],
                [None, "TOTAL RECORDS IN FILE:", None, "1,234"],
                [],
                [None, "Successfully loaded", 1200.0],
                [None, "Loaded %", 0.97],  # a share, not a count: not read
                [None, "Number of rejected records", 34],
                [],
                [],
                [None, "Note", "Record ID", "Rejection Reason"],
                [None, "", "BNU000000001", "Duplicate primary identifier"],
                [],
                [None, "x", "BNU000000002", None],
                [None, None, 42, "id typed as a number"],
            ],
            "loan": [
                ["Loaded", 5],
                ["Barcode", "Aleph ID", "Error message", "Patron"],
                ["30001234", "000000017000010", "item not found", "BNU000000007"],
            ],
        },
    )
    stats = read_statistics_workbook(path)
    assert stats.unknown_sheets == ["Summary"]
    assert stats["patron"] == AreaStatistics(
        "patron",
        1234,
        1200,
        34,
        [
            ("BNU000000001", "Duplicate primary identifier"),
            ("BNU000000002", ""),
            ("42", "id typed as a number"),
        ],
    )
    # "Aleph ID" is preferred over "Barcode" as the id column
    assert stats["loan"] == AreaStatistics("loan", None, 5, None, [("000000017000010", "item not found")])
    assert stats["loan"].rejected_count == 1


def test_inventory_sub_areas_by_label_heading_and_type(tmp_path: Path) -> None:
    path = workbook(
        tmp_path / "s.xlsx",
        {
            "bib_inventory": [
                ["Bibs in file", 300],
                ["Bib records loaded", 297],
                ["Rejected", 3],
                ["Total items in file", 1000],
                ["Items loaded", 998],
                [],
                ["Holdings"],
                ["Total records in file", 320],
                ["Loaded", 319],
                ["Rejected", 1],
                ["Aleph ID", "Reason"],
                ["000004711", "no bib"],
                [],
                ["Rejected items"],
                ["Aleph ID", "Reason"],
                ["000000050000010", "duplicate barcode"],
                [],
                ["Bibs"],
                ["Aleph ID", "Type", "Reason"],
                ["000000007", "", "no title"],
                ["000000051000010", "Item", "duplicate barcode"],
                ["000004712", "holding", "no bib"],
            ]
        },
    )
    stats = read_statistics_workbook(path)
    assert stats["bib_inventory"] == AreaStatistics("bib_inventory", 300, 297, 3, [("000000007", "no title")])
    assert stats["bib_inventory.holdings"] == AreaStatistics(
        "bib_inventory.holdings", 320, 319, 1, [("000004711", "no bib"), ("000004712", "no bib")]
    )
    assert stats["bib_inventory.items"] == AreaStatistics(
        "bib_inventory.items",
        1000,
        998,
        None,
        [("000000050000010", "duplicate barcode"), ("000000051000010", "duplicate barcode")],
    )


def test_configurable_aliases(tmp_path: Path) -> None:
    path = workbook(
        tmp_path / "s.xlsx",
        {"读者": [["记录总数", 10], ["已加载", 9], ["已拒绝", 1], ["证号", "原因"], ["2019001", "重复"]]},
    )
    assert read_statistics_workbook(path).unknown_sheets == ["读者"]
    base = StatisticsAliases()
    aliases = replace(
        base,
        areas={**base.areas, "patron": (*base.areas["patron"], "读者")},
        counts={"total": ("记录总数",), "loaded": ("已加载",), "rejected": ("已拒绝",)},
        id_headers=("证号",),
        reason_headers=("原因",),
    )
    assert read_statistics_workbook(path, aliases)["patron"] == AreaStatistics(
        "patron", 10, 9, 1, [("2019001", "重复")]
    )


def test_empty_known_sheet_is_an_area_with_nothing(tmp_path: Path) -> None:
    path = workbook(tmp_path / "s.xlsx", {"course": [], "loan": [["Loaded", 3]]})
    stats = read_statistics_workbook(path)
    assert stats["course"] == AreaStatistics("course") and stats["loan"].loaded == 3


# --- errors -------------------------------------------------------------------------------------

ERRORS: dict[str, tuple[dict[str, Rows], str]] = {
    "count-not-a-number": (
        {"patron": [["Area", "patron"], [], ["Loaded", "about 1200"]]},
        r"sheet 'patron', row 3: 'Loaded' is 'about 1200', not a whole number",
    ),
    "negative-count": ({"loan": [["Rejected", -2]]}, r"sheet 'loan', row 1: 'Rejected' is '-2'"),
    "count-given-twice": (
        {"loan": [["Loaded", 5], ["Loans loaded", 6]]},
        r"sheet 'loan', row 2: loan loaded given twice: 5 \(row 1\) and 6",
    ),
    "reject-without-id": (
        {"patron": [["Loaded", 1], ["Primary ID", "Reason"], ["", "duplicate"]]},
        r"sheet 'patron', row 3: rejected record with no id \(reason 'duplicate'\)",
    ),
    "nothing-recognised": (
        {"request": [["Anzahl", 5], ["Kennung", "Grund"]]},
        r"sheet 'request': neither counts .* nor a rejected-records table",
    ),
    "two-sheets-one-area": (
        {"patron": [["Loaded", 1]], "Users": [["Loaded", 1]]},
        r"sheets 'patron' and 'Users' are both area 'patron'",
    ),
    "holdings-on-two-tabs": (
        {"bib_inventory": [["Loaded", 3], ["Holdings loaded", 2]], "Holdings": [["Loaded", 2]]},
        r"sheets 'bib_inventory' and 'Holdings' both count 'bib_inventory.holdings'",
    ),
}


@pytest.mark.parametrize(("sheets", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_malformed_workbook(tmp_path: Path, sheets: dict[str, Rows], message: str) -> None:
    path = workbook(tmp_path / "bad.xlsx", sheets)
    with pytest.raises(StatisticsWorkbookError, match=message):
        read_statistics_workbook(path)


def test_not_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "stats.xlsx"
    path.write_text("Total records in file;1234\n", encoding="utf-8")
    with pytest.raises(StatisticsWorkbookError, match="stats.xlsx: not a readable .xlsx/.xlsm workbook"):
        read_statistics_workbook(path)
