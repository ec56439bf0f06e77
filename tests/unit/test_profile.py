"""Code inventory: counting codes in raw (blank-padded) Z30 and Z305 Parquet parts."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aleph2alma import profile
from aleph2alma.profile import CODE_TYPES, CodeInventory, ProfileError, profile_parquet

ITEM_COLUMNS = (
    "Z30_REC_KEY",
    "Z30_SUB_LIBRARY",
    "Z30_COLLECTION",
    "Z30_ITEM_STATUS",
    "Z30_ITEM_PROCESS_STATUS",
    "Z30_MATERIAL",
    "Z30_NO_LOANS",
)

# (sub-library, collection, item status, process status, material), as Aleph pads them
ITEMS: list[tuple[str | None, ...]] = [
    ("BNUZG", "ZWSK ", "01", "  ", "BOOK "),
    ("BNUZG", "ZWSK ", "01", "  ", "BOOK "),
    ("BNUZG", "     ", "03", "MI", "BOOK "),  # no collection: counted as ""
    ("BNUJY", "ZWSK ", "02", "  ", "ISSUE"),  # same collection code, other sub-library
    ("BNUJY", "JYZW", "01", "CT", "BOOK"),  # unpadded: counted with the padded ones
    ("BNUJY", None, "01", None, "DISS "),  # NULL: counted as ""
]
PATRON_LOCALS: list[tuple[str | None, str | None]] = [
    ("01", "01"),
    ("01", "01"),
    ("01", "02"),
    ("04", "  "),
    ("04", None),
]


def items_table(rows: Sequence[tuple[str | None, ...]] = ITEMS) -> pa.Table:
    columns: dict[str, list[object]] = {c: [] for c in ITEM_COLUMNS}
    for i, (sub, coll, status, process, material) in enumerate(rows):
        for column, value in zip(
            ITEM_COLUMNS, (f"{i:015d}", sub, coll, status, process, material, i), strict=True
        ):
            columns[column].append(value)
    return pa.table(
        {c: pa.array(v, type=pa.int64() if c == "Z30_NO_LOANS" else pa.string()) for c, v in columns.items()}
    )


def patron_locals_table(rows: Sequence[tuple[str | None, str | None]] = PATRON_LOCALS) -> pa.Table:
    return pa.table(
        {
            "Z305_REC_KEY": [f"{i:012d}BNUZG" for i in range(len(rows))],
            "Z305_BOR_STATUS": pa.array([s for s, _ in rows], type=pa.string()),
            "Z305_BOR_TYPE": pa.array([t for _, t in rows], type=pa.string()),
            "Z305_EXPIRY_DATE": pa.array([20271231] * len(rows), type=pa.int64()),
        }
    )


def sample_inventory() -> CodeInventory:
    inventory = CodeInventory()
    inventory.add_items(items_table())
    inventory.add_patron_locals(patron_locals_table())
    return inventory


COUNTS = [
    ("sub_library", {("BNUZG",): 3, ("BNUJY",): 3}),
    (
        "collection",
        {
            ("BNUZG", "ZWSK"): 2,
            ("BNUZG", ""): 1,
            ("BNUJY", "ZWSK"): 1,
            ("BNUJY", "JYZW"): 1,
            ("BNUJY", ""): 1,
        },
    ),
    ("item_status", {("01",): 4, ("02",): 1, ("03",): 1}),
    ("item_process_status", {("",): 4, ("MI",): 1, ("CT",): 1}),
    ("material", {("BOOK",): 4, ("ISSUE",): 1, ("DISS",): 1}),
    ("bor_status", {("01",): 3, ("04",): 2}),
    ("bor_type", {("01",): 2, ("02",): 1, ("",): 2}),
    ("user_group", {("01", "01"): 2, ("01", "02"): 1, ("04", ""): 2}),
]


@pytest.mark.parametrize(("code_type", "expected"), COUNTS, ids=[code_type for code_type, _ in COUNTS])
def test_counts_trim_padding_and_keep_empty_codes(
    code_type: str, expected: dict[tuple[str, ...], int]
) -> None:
    assert sample_inventory().counts[code_type] == Counter(expected)


def test_every_code_type_is_present_even_when_nothing_was_counted() -> None:
    inventory = CodeInventory()
    inventory.add_items(items_table([]))
    assert set(inventory.counts) == set(CODE_TYPES)
    assert all(not c for c in inventory.counts.values())


def test_dictionary_encoded_columns_count_like_plain_ones() -> None:
    table = items_table()
    encoded = table.set_column(1, "Z30_SUB_LIBRARY", table.column("Z30_SUB_LIBRARY").dictionary_encode())
    inventory = CodeInventory()
    inventory.add_items(encoded)
    assert inventory.counts == sample_inventory().counts | {k: Counter() for k in profile.PATRON_LOCAL_CODES}


@pytest.mark.parametrize(
    ("method", "table", "message"),
    [
        (
            "add_items",
            pa.table({"Z30_SUB_LIBRARY": ["BNUZG"]}),
            "Z30 items table has no column Z30_COLLECTION",
        ),
        ("add_patron_locals", pa.table({"Z305_BOR_TYPE": ["01"]}), "no column Z305_BOR_STATUS"),
    ],
    ids=["items", "patron-locals"],
)
def test_missing_column_is_named(method: str, table: pa.Table, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        getattr(CodeInventory(), method)(table)


def test_merge_adds_counts() -> None:
    first, second = sample_inventory(), CodeInventory()
    second.add_items(items_table(ITEMS[:2]))
    first.merge(second)
    assert first.counts["collection"][("BNUZG", "ZWSK")] == 4
    assert first.counts["user_group"][("01", "01")] == 2
    assert first.total("sub_library") == len(ITEMS) + 2


def test_json_round_trip() -> None:
    inventory = sample_inventory()
    text = inventory.to_json()
    assert json.loads(text)["format"] == "aleph2alma.code_inventory"
    assert CodeInventory.from_json(text) == inventory


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ('{"format": "other"}', "not a code inventory"),
        ('{"format": "aleph2alma.code_inventory", "version": 9}', "version 9 is not supported"),
        (
            '{"format": "aleph2alma.code_inventory", "version": 1, "counts": {"collection": '
            '[{"code": ["BNUZG"], "count": 1}]}}',
            "collection: bad entry",
        ),
        (
            '{"format": "aleph2alma.code_inventory", "version": 1, "counts": {"vendor": []}}',
            "unknown code type",
        ),
    ],
    ids=["not-json", "wrong-format", "wrong-version", "wrong-arity", "unknown-code-type"],
)
def test_from_json_rejects_malformed(text: str, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        CodeInventory.from_json(text)


def test_rows_sort_by_code_type_then_count_then_code() -> None:
    rows = sample_inventory().rows()
    assert [r["code_type"] for r in rows] == sorted(r["code_type"] for r in rows)
    collection = [(r["code"], r["code_2"], r["count"]) for r in rows if r["code_type"] == "collection"]
    assert collection == [
        ("BNUZG", "ZWSK", 2),
        ("BNUJY", "", 1),
        ("BNUJY", "JYZW", 1),
        ("BNUJY", "ZWSK", 1),
        ("BNUZG", "", 1),
    ]
    assert {"code_type": "material", "code": "BOOK", "code_2": "", "count": 4} in rows


def test_csv_has_one_line_per_code() -> None:
    out = io.StringIO()
    sample_inventory().to_csv(out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "code_type,code,code_2,count"
    assert "collection,BNUZG,,1" in lines
    assert len(lines) == 1 + len(sample_inventory().rows())


def _write(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


def test_profile_parquet_streams_parts_from_paths_and_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(profile, "BATCH_ROWS", 2)  # several batches per part
    part_0 = _write(tmp_path / "z30-0.parquet", items_table(ITEMS[:3]))
    part_1 = _write(tmp_path / "z30-1.parquet", items_table(ITEMS[3:]))
    patrons = _write(tmp_path / "z305-0.parquet", patron_locals_table())
    with open(part_1, "rb") as stream:
        inventory = profile_parquet([str(part_0), stream], [patrons])
    assert inventory == sample_inventory()


def test_profile_parquet_names_the_part_missing_a_column(tmp_path: Path) -> None:
    part = _write(tmp_path / "z30-0.parquet", items_table().drop_columns(["Z30_MATERIAL"]))
    with pytest.raises(ProfileError, match=r"z30-0.parquet: no column Z30_MATERIAL"):
        profile_parquet([str(part)], [])


def fines_table(types: list[str | None] | None = None) -> pa.Table:
    """Z31 rows as extracted: CHAR(4) cash types, blank-padded; any status (closed fines count too)."""
    types = ["0003", "0003", "0041", "0042", "0099", None] if types is None else types
    return pa.table(
        {
            "Z31_REC_KEY": [f"{i:012d}20240315143010001" for i in range(len(types))],
            "Z31_STATUS": ["O", "C", "O", "O", "O", "O"][: len(types)],
            "Z31_TYPE": pa.array([t.ljust(4) if t else t for t in types], type=pa.string()),
        }
    )


def test_fine_types_are_counted_from_z31_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile, "BATCH_ROWS", 2)
    part = _write(tmp_path / "z31-0.parquet", fines_table())
    inventory = profile_parquet([], [], [str(part)])
    assert inventory.counts["fine_type"] == Counter(
        {("0003",): 2, ("0041",): 1, ("0042",): 1, ("0099",): 1, ("",): 1}
    )
    assert {"code_type": "fine_type", "code": "0003", "code_2": "", "count": 2} in inventory.rows()
    assert CodeInventory.from_json(inventory.to_json()) == inventory


def test_a_z31_part_without_its_type_column_is_named(tmp_path: Path) -> None:
    part = _write(tmp_path / "z31-0.parquet", fines_table().drop_columns(["Z31_TYPE"]))
    with pytest.raises(ProfileError, match=r"z31-0.parquet: no column Z31_TYPE"):
        profile_parquet([], [], [str(part)])
