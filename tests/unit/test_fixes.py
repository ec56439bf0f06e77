"""Fix rules: each rule on a small hand-made Z-table, the fixes.toml checks and messages, and the
demo's rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from aleph2alma.errors import ConfigError
from aleph2alma.fixes.apply import DROP_REASON, FixLog, apply_fixes, normalised_call_numbers, patrons_to_drop
from aleph2alma.fixes.config import (
    FixRules,
    FixRulesError,
    fix_rules_for_migration,
    load_fix_rules,
    parse_fix_rules,
)
from aleph2alma.settings import CONFIG_ROOT


def pad(value: str | None, width: int) -> str | None:
    return None if value is None else value.ljust(width)


def z30(rows: list[dict[str, Any]]) -> pa.Table:
    """Z30 rows as Aleph holds them: CHAR columns blank-padded to their width."""
    widths = {
        "Z30_REC_KEY": 15,
        "Z30_BARCODE": 30,
        "Z30_SUB_LIBRARY": 5,
        "Z30_ITEM_STATUS": 2,
        "Z30_COLLECTION": 5,
        "Z30_CALL_NO_TYPE": 1,
        "Z30_CALL_NO": 80,
        "Z30_NOTE_INTERNAL": 200,
    }
    return pa.table(
        {c: pa.array([pad(r.get(c, ""), w) for r in rows], pa.string()) for c, w in widths.items()}
    )


def item(n: int, **values: Any) -> dict[str, Any]:
    return {
        "Z30_REC_KEY": f"{n:09d}000010",
        "Z30_BARCODE": f"3000{n:06d}",
        "Z30_SUB_LIBRARY": "BNUZG",
        "Z30_ITEM_STATUS": "01",
        "Z30_COLLECTION": "ZWSK",
        "Z30_CALL_NO_TYPE": "8",
        "Z30_CALL_NO": "I247.5/123",
        **values,
    }


def rules(text: str) -> FixRules:
    import tomllib

    return parse_fix_rules(tomllib.loads(text), source="test fixes.toml")


def column(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist()


# --- remap ------------------------------------------------------------------------------------

REMAP = """
[[remap]]
table = "Z30"
column = "Z30_COLLECTION"
from = "LSCK"
to = "ZWSK"
where = { Z30_SUB_LIBRARY = "BNUZG" }
note = "temporary stack emptied"
"""


def test_remap_keeps_padding_and_logs_ids() -> None:
    table = z30(
        [
            item(1, Z30_COLLECTION="LSCK"),
            item(2),
            item(3, Z30_COLLECTION="LSCK", Z30_SUB_LIBRARY="BNUJY"),
            item(4, Z30_COLLECTION="LSCK"),
        ]
    )
    fixed, log = apply_fixes("Z30", table, rules(REMAP))
    assert column(fixed, "Z30_COLLECTION") == ["ZWSK ", "ZWSK ", "LSCK ", "ZWSK "]
    assert log.counts == {"remap#1": 2}
    entry = log.entry("remap#1")
    assert entry.id_list() == ["000000001000010", "000000004000010"]
    assert entry.note == "temporary stack emptied"
    assert entry.description == "Z30.Z30_COLLECTION LSCK → ZWSK where Z30_SUB_LIBRARY = BNUZG"
    assert fixed.column("Z30_SUB_LIBRARY").equals(table.column("Z30_SUB_LIBRARY"))  # other columns untouched


def test_remap_list_nulls_trimmed_and_dictionary_columns() -> None:
    fix = rules('[[remap]]\ntable = "Z30"\ncolumn = "Z30_ITEM_STATUS"\nfrom = ["19", "98"]\nto = "01"\n')
    statuses = pa.array(["19", "98", None, "02", "19"]).dictionary_encode()
    table = pa.table({"Z30_REC_KEY": [f"{n:015d}" for n in range(5)], "Z30_ITEM_STATUS": statuses})
    fixed, log = apply_fixes("Z30", table, fix)
    assert pa.types.is_dictionary(fixed.schema.field("Z30_ITEM_STATUS").type)  # trimmed data stays trimmed
    assert column(fixed, "Z30_ITEM_STATUS") == ["01", "01", None, "02", "01"]
    assert log.entry("remap#1").count == 3


def test_rule_for_another_table_does_nothing() -> None:
    table = z30([item(1, Z30_COLLECTION="LSCK")])
    fixed, log = apply_fixes("Z36", table, rules(REMAP))
    assert fixed is table and log.entries == []


def test_rule_column_missing_from_table() -> None:
    with pytest.raises(FixRulesError, match="remap#1: column Z30_SUB_LIBRARY is not in the table given"):
        apply_fixes("Z30", pa.table({"Z30_REC_KEY": ["1"], "Z30_COLLECTION": ["LSCK"]}), rules(REMAP))


# --- call numbers -----------------------------------------------------------------------------

CALL_NUMBERS = {
    "clc-subfields": ("clc", "$$hI247.5$$i123", "I247.5/123"),
    "clc-spaced-slash": ("clc", "I247.5 / 123", "I247.5/123"),
    "clc-full-width": ("clc", "I247.5／123　", "I247.5/123"),
    "clc-double-slash": ("clc", "K825.6//45", "K825.6/45"),
    "clc-already-clean": ("clc", "I247.5/123", "I247.5/123"),
    "clc-item-part-only": ("clc", "$$i123", "123"),
    "lc-subfields": ("lc", "$$hQA76.73.P98$$iS65  2019", "QA76.73.P98 S65 2019"),
    "lc-slash": ("lc", "PL2658.E8 / Z45 2001", "PL2658.E8/Z45 2001"),
    "strip-only": ("strip_subfield_codes", "$$h813.54$$iH49  ", "813.54 H49"),
    "strip-keeps-slash-spacing": ("strip_subfield_codes", "I247.5 / 123", "I247.5 / 123"),
}


@pytest.mark.parametrize(("style", "raw", "clean"), CALL_NUMBERS.values(), ids=CALL_NUMBERS.keys())
def test_call_number_styles(style: str, raw: str, clean: str) -> None:
    assert normalised_call_numbers(pa.array([raw.strip()]), style).to_pylist() == [clean]


def test_normalise_call_numbers_only_where_and_only_changed() -> None:
    fix = rules(
        '[[normalise_call_numbers]]\ntable = "Z30"\ncolumn = "Z30_CALL_NO"\nstyle = "clc"\n'
        'where = { Z30_CALL_NO_TYPE = "8" }\n'
    )
    table = z30(
        [
            item(1, Z30_CALL_NO="$$hI247.5$$i123"),
            item(2),
            item(3, Z30_CALL_NO_TYPE="0", Z30_CALL_NO="$$hQA76$$i.P98"),
        ]
    )
    fixed, log = apply_fixes("Z30", table, fix)
    assert column(fixed, "Z30_CALL_NO") == [
        pad("I247.5/123", 80),
        pad("I247.5/123", 80),
        pad("$$hQA76$$i.P98", 80),
    ]
    assert log.entry("normalise_call_numbers#1").id_list() == ["000000001000010"]


# --- barcodes from notes ----------------------------------------------------------------------

BARCODE = '[[barcode_from_note]]\nnote_column = "Z30_NOTE_INTERNAL"\npattern = "条码[:：]\\\\s*(\\\\d{8,})"\n'


def test_barcode_from_note_into_blank_barcodes_only() -> None:
    table = z30(
        [
            item(1, Z30_BARCODE="", Z30_NOTE_INTERNAL="2019年清点 条码：30001234 已贴"),
            item(2, Z30_NOTE_INTERNAL="条码:30009999"),  # has a barcode: untouched
            item(3, Z30_BARCODE="", Z30_NOTE_INTERNAL="条码：1234"),  # too short for the pattern
            item(4, Z30_BARCODE=None, Z30_NOTE_INTERNAL="条码: 30005678"),
        ]
    )
    fixed, log = apply_fixes("Z30", table, rules(BARCODE))
    assert column(fixed, "Z30_BARCODE") == [
        pad("30001234", 30),
        pad("3000000002", 30),
        pad("", 30),
        "30005678",
    ]
    assert column(fixed, "Z30_NOTE_INTERNAL") == [
        pad("2019年清点 已贴", 200),
        pad("条码:30009999", 200),
        pad("条码：1234", 200),
        pad("", 200),
    ]
    assert log.entry("barcode_from_note#1").id_list() == ["000000001000010", "000000004000010"]


def test_barcode_from_note_keep_note_and_named_group() -> None:
    fix = rules(
        '[[barcode_from_note]]\nnote_column = "Z30_NOTE_INTERNAL"\nkeep_note = true\n'
        'pattern = "barcode=(?P<code>[0-9]+)"\n'
    )
    table = z30([item(1, Z30_BARCODE="", Z30_NOTE_INTERNAL="barcode=40001234")])
    fixed, log = apply_fixes("Z30", table, fix)
    assert column(fixed, "Z30_BARCODE") == [pad("40001234", 30)]
    assert column(fixed, "Z30_NOTE_INTERNAL") == [pad("barcode=40001234", 200)]
    assert log.counts == {"barcode_from_note#1": 1}


# --- drop patrons -----------------------------------------------------------------------------


def patron_tables() -> dict[str, pa.Table]:
    keys = ["BNU000000001", "BNU000000002", "BNU000000003", "BNU000000004"]
    return {
        "Z303": pa.table(
            {
                "Z303_REC_KEY": keys,
                "Z303_PRIMARY_ID": ["TEST01", "2019010001", "TEST02", "2019010004"],
                "Z303_NAME": ["测试", "张三", "测试二", "李四"],
            }
        ),
        "Z304": pa.table({"Z304_REC_KEY": [f"{k}01" for k in keys]}),
        "Z305": pa.table(
            {
                "Z305_REC_KEY": [f"{k}BNU50" for k in keys] + ["BNU000000004BNUZH"],
                "Z305_BOR_STATUS": ["01", "01", "99", "99", "01"],
            }
        ),
        "Z308": pa.table({"Z308_REC_KEY": [f"01800000000{n}" for n in range(1, 5)], "Z308_ID": keys}),
    }


DROPS = {
    "primary-id-pattern": ('where_primary_id_matches = "^TEST"', ["BNU000000001", "BNU000000003"]),
    "status-on-every-z305-row": ('bor_status = ["99"]', ["BNU000000003"]),  # 4 has a 01 row too
    "both-conditions": ('where_primary_id_matches = "^TEST"\nbor_status = "99"', ["BNU000000003"]),
}


@pytest.mark.parametrize(("conditions", "dropped_ids"), DROPS.values(), ids=DROPS.keys())
def test_drop_patrons(conditions: str, dropped_ids: list[str]) -> None:
    fix = rules(f"[[drop_patrons]]\n{conditions}\n")
    t = patron_tables()
    dropped = patrons_to_drop(fix, t["Z303"], t["Z305"])
    assert dropped.ids == dropped_ids
    fixed, log = apply_fixes("Z303", t["Z303"], fix, dropped=dropped)
    assert not set(column(fixed, "Z303_REC_KEY")) & set(dropped_ids)
    assert [(r.entity, r.record_id, r.reason) for r in log.rejects] == [
        ("patrons", i, DROP_REASON) for i in dropped_ids
    ]
    assert log.entry("drop_patrons#1").id_list() == dropped_ids
    for name, key_col in (("Z304", "Z304_REC_KEY"), ("Z305", "Z305_REC_KEY"), ("Z308", "Z308_ID")):
        rest, sub_log = apply_fixes(name, t[name], fix, dropped=dropped)
        assert not {v[:12] for v in column(rest, key_col)} & set(dropped_ids), name
        assert rest.num_rows + sub_log.entry("drop_patrons#1").count == t[name].num_rows
        assert sub_log.rejects == []  # counted once, from Z303


def test_first_matching_drop_rule_is_the_reason() -> None:
    fix = rules(
        '[[drop_patrons]]\nbor_status = "99"\nnote = "status 99"\n'
        '[[drop_patrons]]\nwhere_primary_id_matches = "^TEST"\n'
    )
    t = patron_tables()
    dropped = patrons_to_drop(fix, t["Z303"], t["Z305"])
    details = {r.record_id: r.detail for r in dropped.rejects()}
    assert details == {
        "BNU000000001": "drop_patrons#2: drop patrons: primary id matches ^TEST",
        "BNU000000003": "drop_patrons#1: drop patrons: every borrower status in ['99']",
    }
    _, log = apply_fixes("Z303", t["Z303"], fix, dropped=dropped)
    assert log.counts == {"drop_patrons#1": 1, "drop_patrons#2": 1} and len(log.rejects) == 2


def test_drop_patrons_needs_the_decision() -> None:
    fix = rules('[[drop_patrons]]\nwhere_primary_id_matches = "^TEST"\n')
    with pytest.raises(FixRulesError, match=r"drop_patrons#1: dropping patrons from Z305 needs dropped="):
        apply_fixes("Z305", patron_tables()["Z305"], fix)
    with pytest.raises(FixRulesError, match="needs the Z305 table"):
        patrons_to_drop(rules('[[drop_patrons]]\nbor_status = "99"\n'), patron_tables()["Z303"])


def test_fix_logs_of_parts_merge() -> None:
    fix = rules(REMAP)
    _, first = apply_fixes("Z30", z30([item(1, Z30_COLLECTION="LSCK")]), fix)
    _, second = apply_fixes("Z30", z30([item(2), item(3, Z30_COLLECTION="LSCK")]), fix)
    merged = first.merge(second)
    assert merged.entry("remap#1").id_list() == ["000000001000010", "000000003000010"]
    assert merged.to_dict(max_ids=1)["rules"][0] | {"ids": None} == {
        "rule": "remap#1",
        "description": "Z30.Z30_COLLECTION LSCK → ZWSK where Z30_SUB_LIBRARY = BNUZG",
        "note": "temporary stack emptied",
        "count": 2,
        "ids": None,
    }
    with pytest.raises(ValueError, match="cannot merge the fix log of Z303 into that of Z30"):
        first.merge(FixLog("Z303"))


# --- the file ---------------------------------------------------------------------------------

FILE_ERRORS = {
    "unknown-section": (
        '[[remaps]]\ntable = "Z30"\n',
        r"remaps: unknown key; known keys: remap, normalise_call_numbers, drop_patrons, barcode_from_note",
    ),
    "table-not-array": (
        '[remap]\ntable = "Z30"\n',
        r"remap: expected an array, .*write \[\[remap\]\] blocks",
    ),
    "unknown-key": (
        '[[remap]]\ntable = "Z30"\ncolumn = "Z30_COLLECTION"\nfrom = "A"\nto = "B"\nfrm = "A"\n',
        r"remap\[1\]\.frm: unknown key; known keys: table, column, from, to, where, note",
    ),
    "missing-key": (
        '[[remap]]\ntable = "Z30"\ncolumn = "Z30_COLLECTION"\nfrom = "A"\n',
        r"remap\[1\]\.to: required key missing: The code they become",
    ),
    "unknown-table": (
        '[[remap]]\ntable = "Z99"\ncolumn = "X"\nfrom = "A"\nto = "B"\n',
        r'remap\[1\]\.table: "Z99" is not an Aleph table; known tables: Z103, Z30, ',
    ),
    "unknown-column": (
        '[[remap]]\ntable = "Z30"\ncolumn = "Z30_COLECTION"\nfrom = "A"\nto = "B"\n',
        r'remap\[1\]\.column: "Z30_COLECTION" is not a column of Z30; its columns: Z30_REC_KEY, ',
    ),
    "unknown-where-column": (
        REMAP.replace("Z30_SUB_LIBRARY =", "Z30_SUBLIB ="),
        r'remap\[1\]\.where: "Z30_SUBLIB" is not a column of Z30',
    ),
    "where-not-a-table": (
        REMAP.replace('where = { Z30_SUB_LIBRARY = "BNUZG" }', 'where = "BNUZG"'),
        r'remap\[1\]\.where: expected a table, got "BNUZG"; e.g. where = \{ Z30_SUB_LIBRARY = "BNUZG" \}',
    ),
    "where-value-not-text": (
        REMAP.replace('"BNUZG" }', "5 }"),
        r"remap\[1\]\.where\.Z30_SUB_LIBRARY: expected a string or a non-empty array of strings, got 5",
    ),
    "too-wide": (
        '[[remap]]\ntable = "Z30"\ncolumn = "Z30_ITEM_STATUS"\nfrom = "19"\nto = "001"\n',
        r'remap\[1\]\.to: "001" is wider than Z30_ITEM_STATUS \(CHAR 2\)',
    ),
    "from-not-text": (
        '[[remap]]\ntable = "Z30"\ncolumn = "Z30_ITEM_STATUS"\nfrom = 19\nto = "01"\n',
        r"remap\[1\]\.from: expected a string or a non-empty array of strings, got 19",
    ),
    "from-empty-list": (
        '[[remap]]\ntable = "Z30"\ncolumn = "Z30_ITEM_STATUS"\nfrom = []\nto = "01"\n',
        r"remap\[1\]\.from: expected a string or a non-empty array of strings, got \[\]",
    ),
    "unknown-style": (
        '[[normalise_call_numbers]]\ntable = "Z30"\ncolumn = "Z30_CALL_NO"\nstyle = "ddc"\n',
        r"normalise_call_numbers\[1\]\.style: \"ddc\" is not allowed; "
        r"allowed: 'clc', 'lc' or 'strip_subfield_codes'",
    ),
    "drop-without-condition": (
        '[[drop_patrons]]\nnote = "x"\n',
        r"drop_patrons\[1\]: no condition; give where_primary_id_matches, bor_status or both",
    ),
    "bad-regex": (
        '[[drop_patrons]]\nwhere_primary_id_matches = "^(TEST"\n',
        r'drop_patrons\[1\]\.where_primary_id_matches: "\^\(TEST" does not compile',
    ),
    "regex-not-re2": (
        '[[drop_patrons]]\nwhere_primary_id_matches = "^(?!TEST)"\n',
        r'drop_patrons\[1\]\.where_primary_id_matches: "\^\(\?!TEST\)" does not compile: .*'
        r"allowed: an RE2 regular expression",
    ),
    "bor-status-not-text": (
        "[[drop_patrons]]\nbor_status = 99\n",
        r"drop_patrons\[1\]\.bor_status: expected a string or a non-empty array of strings",
    ),
    "no-capture-group": (
        '[[barcode_from_note]]\nnote_column = "Z30_NOTE_INTERNAL"\npattern = "\\\\d{8}"\n',
        r"barcode_from_note\[1\]\.pattern: .* must have exactly one capture group",
    ),
    "barcode-not-z30": (
        '[[barcode_from_note]]\ntable = "Z303"\nnote_column = "X"\npattern = "(x)"\n',
        r"barcode_from_note\[1\]\.table: \"Z303\" is not allowed; allowed: 'Z30'",
    ),
    "unknown-note-column": (
        '[[barcode_from_note]]\nnote_column = "Z30_NOTE"\npattern = "(x)"\n',
        r'barcode_from_note\[1\]\.note_column: "Z30_NOTE" is not a column of Z30',
    ),
    "keep-note-not-bool": (
        BARCODE + 'keep_note = "yes"\n',
        r'barcode_from_note\[1\]\.keep_note: expected true or false, got "yes"',
    ),
    "note-not-text": (
        REMAP.replace('note = "temporary stack emptied"', "note = 3"),
        r"remap\[1\]\.note: expected a string, got 3",
    ),
}


@pytest.mark.parametrize(("text", "message"), FILE_ERRORS.values(), ids=FILE_ERRORS.keys())
def test_file_errors(text: str, message: str) -> None:
    with pytest.raises(FixRulesError, match=f"^test fixes.toml: {message}") as err:
        rules(text)
    assert isinstance(err.value, ConfigError)


KINDS_OF_ERROR = {
    "unknown-key": (
        '[[normalise_call_numbers]]\ntable = "Z30"\ncolumn = "Z30_CALL_NO"\nstyle = "clc"\nstyel = "lc"\n',
        "normalise_call_numbers[1].styel",
        "unknown key; known keys: table, column, style, where, note",
    ),
    "wrong-type": (
        '[[remap]]\ntable = "Z30"\ncolumn = "Z30_ITEM_STATUS"\nfrom = "19"\nto = 1\n',
        "remap[1].to",
        "expected a string, got 1",
    ),
    "bad-enum": (
        '[[normalise_call_numbers]]\ntable = "Z30"\ncolumn = "Z30_CALL_NO"\nstyle = "CLC"\n',
        "normalise_call_numbers[1].style",
        "\"CLC\" is not allowed; allowed: 'clc', 'lc' or 'strip_subfield_codes'",
    ),
    "missing-required-key": (
        '[[remap]]\ntable = "Z30"\ncolumn = "Z30_ITEM_STATUS"\nfrom = "19"\nto = "01"\n'
        '[[barcode_from_note]]\nnote_column = "Z30_NOTE_INTERNAL"\n',
        "barcode_from_note[1].pattern",
        "required key missing: An RE2 pattern with exactly one",
    ),
}


@pytest.mark.parametrize(("text", "key", "allowed"), KINDS_OF_ERROR.values(), ids=KINDS_OF_ERROR.keys())
def test_an_error_names_the_file_the_key_and_what_is_allowed(
    tmp_path: Path, text: str, key: str, allowed: str
) -> None:
    path = tmp_path / "demo" / "fixes.toml"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FixRulesError) as err:
        fix_rules_for_migration("demo", tmp_path)
    assert str(err.value).startswith(f"{path}: {key}: {allowed}")
    assert isinstance(err.value, ConfigError)  # the task fails at once, no retries


def test_all_problems_at_once(tmp_path: Path) -> None:
    path = tmp_path / "fixes.toml"
    path.write_text(
        '[[remap]]\ntable = "Z30"\n\n[[normalise_call_numbers]]\ntable = "Z30"\ncolumn = "Z30_CALL_NO"\n'
        'style = "x"\n',
        encoding="utf-8",
    )
    with pytest.raises(FixRulesError) as err:
        load_fix_rules(path)
    lines = str(err.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "remap[1].column",
        "remap[1].from",
        "remap[1].to",
        "normalise_call_numbers[1].style",
    ]
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "fixes.toml"
    path.write_text("[[remap]\n", encoding="utf-8")
    with pytest.raises(FixRulesError, match=f"^{path}: not valid TOML: .*line 1"):
        load_fix_rules(path)


def test_rules_are_named_by_kind_and_place() -> None:
    fix = rules(REMAP + REMAP + '[[drop_patrons]]\nbor_status = "99"\n')
    assert [r.name for r in fix.remap] == ["remap#1", "remap#2"]
    assert [r.name for r in fix.for_table("Z303")] == ["drop_patrons#1"]
    assert fix.source == "test fixes.toml" and not fix.empty


@pytest.mark.parametrize("path", [None, Path("/nonexistent/fixes.toml")], ids=["none", "absent"])
def test_no_file_no_rules(path: Path | None) -> None:
    assert load_fix_rules(path).empty


def test_demo_rules_fix_the_seeded_item_codes() -> None:
    from aleph2alma_dev.demo.codes import ITEM_STATUSES, UNMAPPED_CODES, known_codes

    demo = load_fix_rules(CONFIG_ROOT / "demo" / "fixes.toml")
    remaps = {(r.column, c): r.to for r in demo.remap for c in r.from_codes}
    for status in UNMAPPED_CODES["item_statuses"]:
        assert remaps[("Z30_ITEM_STATUS", status)] in ITEM_STATUSES
    assert "BNUZG/" + remaps[("Z30_COLLECTION", "LSCK")] in known_codes()["collections"]
    table = z30(
        [
            item(1, Z30_COLLECTION="LSCK"),
            item(2, Z30_ITEM_STATUS="19"),
            item(3, Z30_ITEM_STATUS="99"),
            item(4, Z30_SUB_LIBRARY="BNUCP", Z30_COLLECTION="CPZW"),
        ]
    )
    fixed, log = apply_fixes("Z30", table, demo)
    assert column(fixed, "Z30_ITEM_STATUS") == ["01", "01", "10", "01"]
    assert column(fixed, "Z30_COLLECTION") == [
        "ZWSK ",
        "ZWSK ",
        "ZWSK ",
        "CPZW ",
    ]  # BNUCP left open on purpose
    assert sum(log.counts.values()) == 3
