"""Migration form: generation from the code inventory, merging, lookups, files, structure errors."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import Workbook, load_workbook

from aleph2alma.alma.form import FormError, MigrationForm, generate_form, load_form, write_form
from aleph2alma.alma.form_spec import TABS
from aleph2alma.errors import ConfigError
from aleph2alma.profile import CodeInventory


def inventory_of(**counts: dict[tuple[str, ...], int]) -> CodeInventory:
    return CodeInventory({code_type: Counter(c) for code_type, c in counts.items()})


INVENTORY = inventory_of(
    sub_library={("BNUZG",): 90, ("BNUJY",): 10},
    collection={("BNUZG", "ZWSK"): 60, ("BNUZG", "WWQK"): 25, ("BNUZG", ""): 5, ("BNUJY", "JYZW"): 10},
    item_status={("01",): 80, ("03",): 20},
    item_process_status={("",): 95, ("MI",): 5},
    material={("BOOK",): 100},
    user_group={("01", "01"): 7, ("04", "02"): 3},
)


def form_of(**rows: list[dict[str, str]]) -> MigrationForm:
    """A form from a few rows per tab; columns left out are blank."""
    return MigrationForm(
        {
            name: pd.DataFrame(rows.get(name, []), columns=list(spec.required), dtype="str")
            for name, spec in TABS.items()
        }
    )


FILLED = form_of(
    libraries=[
        {"aleph_sub_library": "BNUZG", "alma_library_code": "MAIN", "alma_library_name": "总馆"},
        {"aleph_sub_library": "BNUJY", "alma_library_code": "EDU"},
    ],
    locations=[
        {"aleph_sub_library": "BNUZG", "aleph_collection": "ZWSK", "alma_location_code": "ZWSK"},
        {
            "aleph_sub_library": "BNUZG",
            "aleph_collection": "ESER",
            "alma_library_code": "MAIN",
            "alma_location_code": "ONLINE",
            "electronic": "Y",
        },
        {"aleph_sub_library": "BNUZG", "aleph_collection": "WWQK"},  # listed, not mapped yet
        {"aleph_sub_library": "BNUZG", "aleph_collection": "*", "alma_location_code": "GEN"},
        {
            "aleph_sub_library": "*",
            "aleph_collection": "*",
            "alma_library_code": "MAIN",
            "alma_location_code": "UNKNOWN",
        },
    ],
    item_policies=[
        {"aleph_item_status": "01", "alma_item_policy": "LOAN"},
        {"aleph_item_status": "*", "alma_item_policy": "NOLOAN"},
    ],
    process_types=[
        {"aleph_item_process_status": "", "alma_process_type": "-"},
        {"aleph_item_process_status": "MI", "alma_process_type": "MISSING"},
    ],
    material_types=[{"aleph_material": "BOOK", "alma_material_type": "BOOK"}],
    user_groups=[
        {"aleph_bor_status": "01", "aleph_bor_type": "*", "alma_user_group": "UG"},
        {"aleph_bor_status": "*", "aleph_bor_type": "02", "alma_user_group": "ANY02"},
        {"aleph_bor_status": "04", "aleph_bor_type": "02", "alma_user_group": "STAFF"},
    ],
    defaults=[{"key": "currency", "value": "CNY"}, {"key": "institution_code", "value": "86BNU_INST"}],
)


def tab_keys(form: MigrationForm, tab: str) -> list[tuple[str, ...]]:
    frame = form.tabs[tab]
    return list(zip(*(frame[c] for c in TABS[tab].keys), strict=True))


def column(form: MigrationForm, tab: str, key: tuple[str, ...], name: str) -> str:
    return str(form.tabs[tab].iloc[tab_keys(form, tab).index(key)][name])


# --- generation ---------------------------------------------------------------------------

GENERATED = [
    ("libraries", [("BNUJY",), ("BNUZG",)]),
    ("locations", [("BNUJY", "JYZW"), ("BNUZG", ""), ("BNUZG", "WWQK"), ("BNUZG", "ZWSK")]),
    ("item_policies", [("01",), ("03",)]),
    ("process_types", [("",), ("MI",)]),
    ("material_types", [("BOOK",)]),
    ("user_groups", [("01", "01"), ("04", "02")]),
]


@pytest.mark.parametrize(("tab", "expected"), GENERATED, ids=[tab for tab, _ in GENERATED])
def test_generate_lists_every_code_in_code_order(tab: str, expected: list[tuple[str, ...]]) -> None:
    form = generate_form(INVENTORY)
    assert tab_keys(form, tab) == expected
    assert form.tabs[tab][TABS[tab].mapped_by].isin(["", "-"]).all()
    assert set(form.tabs[tab]["in_data"]) == {"Y"}


def test_generate_counts_and_prefills() -> None:
    form = generate_form(INVENTORY)
    assert column(form, "locations", ("BNUZG", "ZWSK"), "count") == "60"
    assert set(form.tabs["locations"]["electronic"]) == {"N"}
    assert column(form, "process_types", ("",), "alma_process_type") == "-"  # blank status: item in place
    assert list(form.tabs["defaults"]["key"])[:2] == ["institution_code", "default_library"]
    assert (form.tabs["defaults"]["description"] != "").all()
    assert all(frame.dtypes.eq("str").all() for frame in form.tabs.values())


def test_merge_keeps_filled_values_star_rows_and_gone_codes() -> None:
    form = generate_form(INVENTORY, existing=FILLED)
    assert tab_keys(form, "locations") == [
        ("BNUZG", "ZWSK"),
        ("BNUZG", "ESER"),
        ("BNUZG", "WWQK"),
        ("BNUZG", "*"),
        ("*", "*"),
        ("BNUJY", "JYZW"),
        ("BNUZG", ""),
    ]
    assert column(form, "libraries", ("BNUZG",), "alma_library_name") == "总馆"
    assert column(form, "locations", ("BNUZG", "ESER"), "electronic") == "Y"
    assert (
        column(form, "locations", ("BNUZG", "ESER"), "in_data") == "N"
    )  # no longer in the data: kept, marked
    assert column(form, "locations", ("BNUZG", "ESER"), "count") == "0"
    assert column(form, "locations", ("BNUZG", "ZWSK"), "count") == "60"  # counts refreshed
    # a * row counts the records that fall back to it: WWQK (unmapped) and "" fall to (BNUZG, *)
    assert column(form, "locations", ("BNUZG", "*"), "count") == "30"
    assert column(form, "locations", ("*", "*"), "count") == "10"  # (BNUJY, JYZW): new row, still blank
    assert column(form, "item_policies", ("*",), "count") == "20"
    assert form.default("currency") == "CNY"
    assert len(form.tabs["defaults"]) == len(FILLED.tabs["defaults"]) + 8


def test_merge_keeps_a_librarians_extra_columns() -> None:
    tabs = dict(FILLED.tabs)
    tabs["item_policies"] = tabs["item_policies"].assign(note=["checked by 张三", ""])
    form = generate_form(INVENTORY, existing=MigrationForm(tabs))
    assert list(form.tabs["item_policies"].columns) == [
        "aleph_item_status",
        "alma_item_policy",
        "count",
        "in_data",
        "note",
    ]
    assert list(form.tabs["item_policies"]["note"]) == ["checked by 张三", "", ""]


def test_regenerating_a_generated_form_changes_nothing() -> None:
    once = generate_form(INVENTORY, existing=FILLED)
    assert generate_form(INVENTORY, existing=once) == once


# --- lookups ------------------------------------------------------------------------------

LOOKUPS: list[tuple[str, Callable[[MigrationForm], object], object]] = [
    ("library", lambda f: f.library_for("BNUZG"), "MAIN"),
    ("library-padded", lambda f: f.library_for("BNUJY "), "EDU"),
    ("library-unmapped", lambda f: f.library_for("BNUXL"), None),
    (
        "location-exact-library-from-libraries-tab",
        lambda f: f.location_for("BNUZG", "ZWSK "),
        ("MAIN", "ZWSK"),
    ),
    ("location-blank-row-falls-back", lambda f: f.location_for("BNUZG", "WWQK"), ("MAIN", "GEN")),
    ("location-empty-collection", lambda f: f.location_for("BNUZG", None), ("MAIN", "GEN")),
    ("location-sub-star", lambda f: f.location_for("BNUXL", "XLZW"), ("MAIN", "UNKNOWN")),
    ("electronic", lambda f: f.is_electronic("BNUZG", "ESER"), True),
    ("not-electronic", lambda f: f.is_electronic("BNUZG", "ZWSK"), False),
    ("electronic-unmapped", lambda f: f.is_electronic("BNUXL", "XLZW"), False),
    ("item-policy", lambda f: f.item_policy_for("01"), "LOAN"),
    ("item-policy-star", lambda f: f.item_policy_for("10"), "NOLOAN"),
    ("process-none", lambda f: f.process_type_for("  "), ""),
    ("process", lambda f: f.process_type_for("MI"), "MISSING"),
    ("process-unmapped", lambda f: f.process_type_for("BD"), None),
    ("material-unmapped", lambda f: f.material_type_for("ISSUE"), None),
    ("user-group-exact", lambda f: f.user_group_for("04", "02"), "STAFF"),
    ("user-group-first-column-wins", lambda f: f.user_group_for("01", "02"), "UG"),
    ("user-group-second-column", lambda f: f.user_group_for("03", "02"), "ANY02"),
    ("user-group-unmapped", lambda f: f.user_group_for("03", "01"), None),
    ("default", lambda f: f.default("institution_code"), "86BNU_INST"),
    ("default-blank", lambda f: f.default("default_library"), None),
]


@pytest.mark.parametrize(("lookup", "expected"), [c[1:] for c in LOOKUPS], ids=[c[0] for c in LOOKUPS])
def test_lookup(lookup: Callable[[MigrationForm], object], expected: object) -> None:
    assert lookup(FILLED) == expected
    assert lookup(FILLED) == expected  # second call: from the cache


def test_location_row_needs_a_library_from_somewhere() -> None:
    form = form_of(
        locations=[{"aleph_sub_library": "BNUXL", "aleph_collection": "XLZW", "alma_location_code": "PSY"}]
    )
    assert form.location_for("BNUXL", "XLZW") is None  # BNUXL has no library
    assert form.unmapped(INVENTORY)["locations"][0] == ("BNUZG", "ZWSK")


def test_unknown_default_key_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="known: institution_code"):
        FILLED.default("defualt_library")


def test_vectorised_lookups_agree_with_scalar_ones() -> None:
    items = pd.DataFrame(
        {
            "sub": ["BNUZG", "BNUZG ", "BNUZG", "BNUXL", None, "BNUJY"],
            "coll": ["ZWSK ", "ESER", "WWQK", "XLZW", "", "JYZW"],
            "status": ["01", "10", "01", None, "03", "01"],
        },
        index=[10, 11, 12, 13, 14, 15],
    )
    located = FILLED.map_locations(items, "sub", "coll")
    assert list(located.index) == list(items.index)
    for (_, row), (_, out) in zip(items.iterrows(), located.iterrows(), strict=True):
        expected = FILLED.location_for(row["sub"], row["coll"])
        got = None if pd.isna(out["alma_location"]) else (out["alma_library"], out["alma_location"])
        assert got == expected
        assert out["electronic"] == FILLED.is_electronic(row["sub"], row["coll"])
    policies = FILLED.map_item_policies(items["status"])
    assert [None if pd.isna(p) else p for p in policies] == [
        FILLED.item_policy_for(s) for s in items["status"]
    ]
    assert list(FILLED.map_libraries(items["sub"]).fillna("?")) == ["MAIN", "MAIN", "MAIN", "?", "?", "EDU"]


def test_map_user_groups() -> None:
    patrons = pd.DataFrame({"st": ["01", "04", "03"], "ty": ["09", "02", "01"]})
    assert list(FILLED.map_user_groups(patrons, "st", "ty").fillna("?")) == ["UG", "STAFF", "?"]


def test_unmapped_lists_codes_after_fallbacks_most_frequent_first() -> None:
    assert FILLED.unmapped(INVENTORY) == {}  # every code is mapped or caught by a * row
    sparse = form_of(libraries=[{"aleph_sub_library": "BNUZG", "alma_library_code": "MAIN"}])
    unmapped = sparse.unmapped(INVENTORY)
    assert unmapped["libraries"] == [("BNUJY",)]
    assert unmapped["locations"] == [("BNUZG", "ZWSK"), ("BNUZG", "WWQK"), ("BNUJY", "JYZW"), ("BNUZG", "")]
    assert sparse.unmapped_counts(INVENTORY)["item_policies"] == [(("01",), 80), (("03",), 20)]


# --- files --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["form", "form.xlsx"], ids=["csv", "xlsx"])
@pytest.mark.parametrize(
    "build", [lambda: generate_form(INVENTORY, existing=FILLED), form_of], ids=["merged", "empty"]
)
def test_write_then_load_round_trips(tmp_path: Path, name: str, build: Callable[[], MigrationForm]) -> None:
    form = build()
    write_form(form, tmp_path / name)
    assert load_form(tmp_path / name) == form


def test_flags_are_read_case_insensitively() -> None:
    form = form_of(
        locations=[
            {
                "aleph_sub_library": "BNUZG",
                "aleph_collection": "ESER",
                "alma_library_code": "MAIN",
                "alma_location_code": "ONLINE",
                "electronic": "y",
            }
        ]
    )
    assert form.tabs["locations"]["electronic"].tolist() == ["Y"]
    assert form.is_electronic("BNUZG", "ESER")


def test_csv_is_utf8_with_bom_and_has_a_readme(tmp_path: Path) -> None:
    write_form(FILLED, tmp_path)
    assert (tmp_path / "libraries.csv").read_bytes().startswith(b"\xef\xbb\xbfaleph_sub_library,")
    assert "总馆" in (tmp_path / "libraries.csv").read_text(encoding="utf-8-sig")
    assert "fallback row" in (tmp_path / "README.txt").read_text(encoding="utf-8")


def test_xlsx_header_is_bold_frozen_and_filtered(tmp_path: Path) -> None:
    write_form(FILLED, tmp_path / "form.xlsx")
    workbook = load_workbook(tmp_path / "form.xlsx")
    assert workbook.sheetnames == ["README", *TABS]
    sheet = workbook["locations"]
    assert sheet["A1"].font.bold
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == "A1:H6"
    assert sheet["A2"].number_format == "@"


def test_a_directory_holding_one_workbook_loads_it(tmp_path: Path) -> None:
    write_form(FILLED, tmp_path / "BNU form v3.xlsx")
    assert load_form(tmp_path) == FILLED


def test_blank_rows_are_skipped_and_row_numbers_stay_the_spreadsheets(tmp_path: Path) -> None:
    write_form(FILLED, tmp_path)
    with open(tmp_path / "item_policies.csv", "a", encoding="utf-8", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows([["", "", "", ""], ["01", "DUP", "", ""]])
    with pytest.raises(FormError, match=r"item_policies.csv, row 5, .*'01' duplicates row 2"):
        load_form(tmp_path)


def _break_csv(tab: str, edit: Callable[[list[list[str]]], None]) -> Callable[[Path], Path]:
    def breaker(root: Path) -> Path:
        write_form(FILLED, root)
        path = root / f"{tab}.csv"
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
        edit(rows)
        with open(path, "w", encoding="utf-8-sig", newline="") as fh:
            csv.writer(fh).writerows(rows)
        return root

    return breaker


def _set(row: int, col: int, value: str) -> Callable[[list[list[str]]], None]:
    def edit(rows: list[list[str]]) -> None:
        rows[row - 1][col] = value

    return edit


def _missing_tab(root: Path) -> Path:
    write_form(FILLED, root)
    (root / "user_groups.csv").unlink()
    return root


def _gbk_csv(root: Path) -> Path:
    write_form(FILLED, root)
    (root / "libraries.csv").write_bytes(
        "aleph_sub_library,alma_library_code,alma_library_name\nBNUZG,MAIN,总馆\n".encode("gbk")
    )
    return root


def _xlsx(edit: Callable[[Workbook], None]) -> Callable[[Path], Path]:
    def breaker(root: Path) -> Path:
        path = root / "form.xlsx"
        write_form(FILLED, path)
        workbook = load_workbook(path)
        edit(workbook)
        workbook.save(path)
        return path

    return breaker


def _numeric_status(workbook: Workbook) -> None:
    workbook["item_policies"]["A2"] = 1  # what Excel makes of a typed 01


def _drop_sheet(workbook: Workbook) -> None:
    del workbook["defaults"]


STRUCTURE_ERRORS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("missing-tab", _missing_tab, r"tab 'user_groups' missing; required tabs: libraries, locations"),
    (
        "missing-sheet",
        _xlsx(_drop_sheet),
        r"form.xlsx \(sheet names are the tab names\): tab 'defaults' missing",
    ),
    (
        "missing-column",
        _break_csv("locations", _set(1, 3, "alma_location")),
        r"locations.csv: column 'alma_location_code' missing; required columns: aleph_sub_library",
    ),
    (
        "duplicate-header",
        _break_csv("libraries", _set(1, 2, "alma_library_code")),
        r"libraries.csv, row 1, column 3: header 'alma_library_code' appears twice",
    ),
    (
        "duplicate-key",
        _break_csv("item_policies", _set(3, 0, "01")),
        r"item_policies.csv, row 3, column 'aleph_item_status': '01' duplicates row 2",
    ),
    (
        "duplicate-star-row",
        _break_csv("locations", _set(6, 0, "BNUZG")),
        r"locations.csv, row 6, column 'aleph_sub_library' \+ 'aleph_collection': "
        r"'BNUZG' \+ '\*' duplicates row 5",
    ),
    (
        "bad-flag",
        _break_csv("locations", _set(3, 5, "Yes")),
        r"locations.csv, row 3, column 'electronic': 'Yes' is not valid; accepted: Y, N or blank",
    ),
    (
        "star-in-alma-column",
        _break_csv("item_policies", _set(2, 1, "*")),
        r"item_policies.csv, row 2, column 'alma_item_policy': '\*' is not valid; accepted: an Alma code",
    ),
    (
        "partial-star",
        _break_csv("item_policies", _set(2, 0, "0*")),
        r"row 2, column 'aleph_item_status': '0\*' is not valid; accepted: an Aleph code, or \* alone",
    ),
    (
        "code-too-long",
        _break_csv("libraries", _set(2, 0, "BNUZGX")),
        r"libraries.csv, row 2, column 'aleph_sub_library': 'BNUZGX' is not valid; accepted: .* at most 5",
    ),
    (
        "dash-outside-process-types",
        _break_csv("material_types", _set(2, 1, "-")),
        r"material_types.csv, row 2, column 'alma_material_type': '-' is not valid",
    ),
    (
        "unknown-default-key",
        _break_csv("defaults", _set(2, 0, "curency")),
        r"defaults.csv, row 2, column 'key': 'curency' is not valid; accepted: institution_code, ",
    ),
    (
        "bad-default-value",
        _break_csv("defaults", _set(2, 1, "RMB ¥")),
        r"defaults.csv, row 2, column 'value': 'RMB ¥' is not valid; accepted: an ISO 4217 code",
    ),
    ("not-utf8", _gbk_csv, r"libraries.csv: not UTF-8 .*CSV UTF-8"),
    (
        "number-for-code",
        _xlsx(_numeric_status),
        r"form.xlsx, sheet 'item_policies', row 2, column 'aleph_item_status': the number 1 is not valid",
    ),
]


@pytest.mark.parametrize(
    ("breaker", "message"), [c[1:] for c in STRUCTURE_ERRORS], ids=[c[0] for c in STRUCTURE_ERRORS]
)
def test_structure_errors_name_file_row_column_and_value(
    tmp_path: Path, breaker: Callable[[Path], Path], message: str
) -> None:
    path = breaker(tmp_path / "form")
    with pytest.raises(FormError, match=message) as err:
        load_form(path)
    assert isinstance(err.value, ConfigError)  # fails the task at once: retrying reads the same form


def test_in_memory_forms_are_checked_too() -> None:
    tabs = dict(FILLED.tabs)
    del tabs["locations"]
    with pytest.raises(FormError, match="tab 'locations' missing"):
        MigrationForm(tabs)
