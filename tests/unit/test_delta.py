"""aleph.delta: record hashes, CAT stamps, baselines, the diff and the window's instants."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from aleph2alma.accounting import UnbalancedError
from aleph2alma.aleph.delta import (
    HASH,
    STAMP,
    ChangeCounts,
    DeltaError,
    DuplicateKeys,
    baseline_rows,
    cat_stamp,
    compare,
    first_day,
    layout_of,
    parse_instant,
    record_hash,
    row_hashes,
    seq_baseline,
    seq_records,
)
from aleph2alma.aleph.ztables import Z30, Z304
from zrows import ztable


def _hashes(**columns: list) -> list[bytes]:
    return row_hashes(pa.table(columns), list(columns)).to_pylist()


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"a": ["x"], "b": [None]}, {"a": ["x"], "b": [""]}),  # null is not blank
        ({"a": ["ab:"], "b": ["c"]}, {"a": ["ab"], "b": [":c"]}),  # no value runs into the next
        ({"a": ["1"], "b": ["23"]}, {"a": ["12"], "b": ["3"]}),
        ({"a": ["x "], "b": ["y"]}, {"a": ["x"], "b": ["y"]}),  # CHAR padding is part of the value
    ],
    ids=["null-vs-blank", "separator-in-value", "boundary", "padding"],
)
def test_row_hashes_tell_apart_what_differs(left: dict, right: dict) -> None:
    assert _hashes(**left) != _hashes(**right)


def test_row_hashes_are_stable_and_type_aware() -> None:
    assert _hashes(a=["x", "y"]) == _hashes(a=["x", "y"])
    ints = row_hashes(pa.table({"d": pa.array([20261101, 0], pa.int64())}), ["d"]).to_pylist()
    assert ints == _hashes(d=["20261101", "0"])  # a date is hashed as its digits
    assert len(set(_hashes(a=["x", "y", None]))) == 3 and all(len(h) == 16 for h in _hashes(a=["x"]))


CAT_RECORD = (
    b"000000001 FMT   L BK\n"
    b"000000001 24510 L $$aTitle\n"
    b"000000001 CAT   L $$aBATCH$$b00$$c20250612$$lBNU02$$h1498\n"
    b"000000001 CAT   L $$aCATWW01$$b00$$c20261102$$lBNU02$$h0930\n"
    b"000000001 CAT   L $$aCATWW01$$b00$$c20240101$$lBNU02\n"
)


def test_the_newest_cat_line_is_the_records_stamp() -> None:
    assert cat_stamp(CAT_RECORD) == 202611020930
    assert cat_stamp(b"000000001 CAT   L $$aX$$c20240101\n") == 202401010000  # no $$h: the day
    assert cat_stamp(b"000000001 24510 L $$aTitle\n") == 0
    assert cat_stamp(b"00000001 CAT   L $$c20261102\n") == 0  # malformed line: not a CAT line


def test_a_system_number_met_again_gets_its_own_key() -> None:
    export = CAT_RECORD + b"000000002 FMT   L BK\n" + CAT_RECORD + b"000000001 FMT   L BK\n"
    layout = layout_of("bibs", "BNU02", "alephseq")
    baseline = seq_baseline([io.BytesIO(export)], layout)
    assert baseline["sysno"].to_pylist() == ["000000001", "000000002", "000000001#2", "000000001#3"]
    assert baseline[HASH].to_pylist()[0] == record_hash(CAT_RECORD)
    assert baseline[HASH].to_pylist()[2] == record_hash(CAT_RECORD)
    assert baseline[STAMP].to_pylist() == [202611020930, 0, 202611020930, 0]
    keys = DuplicateKeys({"000000001"})
    assert [keys.key(s) for s, _ in seq_records([io.BytesIO(export)])] == baseline["sysno"].to_pylist()


def test_a_baseline_keeps_what_the_rules_read_and_hashes_every_extracted_column() -> None:
    layout = layout_of("items", "Z30", "table")
    assert layout.stamped and layout.key == "Z30_REC_KEY"
    assert "Z30_BARCODE" in layout.kept and "Z30_NOTE_INTERNAL" not in layout.kept
    assert not layout_of("patrons", "Z304", "table").stamped
    assert layout_of("patrons", "Z304", "table").schema().names == [Z304.key, HASH, STAMP]
    rows = ztable(
        Z30, [{"Z30_REC_KEY": "000000001000010", "Z30_UPDATE_DATE": 20261102}, {"Z30_REC_KEY": "2"}]
    )
    base = baseline_rows(rows, layout)
    assert base[STAMP].to_pylist() == [20261102, 0]
    note = rows.set_column(
        rows.schema.get_field_index("Z30_NOTE_INTERNAL"), "Z30_NOTE_INTERNAL", pa.array(["a", "b"])
    )
    assert baseline_rows(note, layout)[HASH] != base[HASH]  # a column no rule reads still counts


def _baseline(rows: list[tuple[str, bytes, int]]) -> pa.Table:
    keys, hashes, stamps = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table(
        {
            "sysno": pa.array(keys, pa.string()),
            HASH: pa.array(hashes, pa.binary()),
            STAMP: pa.array(stamps, pa.int64()),
        }
    )


def test_compare_finds_new_changed_and_deleted_and_whether_aleph_recorded_it() -> None:
    before = _baseline([("1", b"a", 5), ("2", b"b", 5), ("3", b"c", 5), ("4", b"d", 5)])
    after = _baseline([("2", b"b", 5), ("3", b"x", 9), ("4", b"y", 5), ("5", b"e", 9), ("6", b"f", 0)])
    changes = compare(before, after, "sysno")
    assert [(r["key"], r["change"], r["stamped"]) for r in changes.to_pylist()] == [
        ("1", "deleted", False),
        ("3", "changed", True),  # a newer stamp: Aleph recorded the change
        ("4", "changed", False),  # same stamp, other content: a change nothing recorded
        ("5", "new", True),
        ("6", "new", False),
    ]
    counts = ChangeCounts.of(changes, before.num_rows, after.num_rows, stamped_source=True)
    assert (counts.new, counts.changed, counts.deleted, counts.unstamped) == (2, 2, 1, 1)
    assert ChangeCounts.of(changes, 4, 5, stamped_source=False).unstamped is None
    assert compare(after, after, "sysno").num_rows == 0


def test_counts_that_do_not_add_up_are_a_bug_not_data() -> None:
    with pytest.raises(UnbalancedError, match=r"Z30: 10 records before - 1 deleted \+ 2 new ≠ 12 now"):
        ChangeCounts(10, 12, 2, 0, 1, None).check("items Z30")


def test_a_window_instant_without_an_offset_is_the_librarys_local_time() -> None:
    assert parse_instant("2026-11-02T02:00", "Asia/Shanghai", "from") == datetime(2026, 11, 1, 18, tzinfo=UTC)
    assert parse_instant("2026-11-02", "Asia/Shanghai", "from") == datetime(2026, 11, 1, 16, tzinfo=UTC)
    assert parse_instant("2026-11-01T18:00Z", "Asia/Shanghai", "to") == datetime(2026, 11, 1, 18, tzinfo=UTC)
    assert parse_instant("  ", "UTC", "to") is None
    with pytest.raises(DeltaError, match=r"^to '02/11/2026' is not a date or date-time; allowed: e.g."):
        parse_instant("02/11/2026", "UTC", "to")


def test_the_first_day_read_is_the_local_day_of_the_start_minus_the_lookback() -> None:
    start = datetime(2026, 11, 1, 18, tzinfo=UTC)  # 02:00 on 2 November in Shanghai
    assert first_day(start, "Asia/Shanghai", 0) == date(2026, 11, 2)
    assert first_day(start, "Asia/Shanghai", 1) == date(2026, 11, 1)
    assert first_day(start, "UTC", 0) == date(2026, 11, 1)


def test_cat_stamp_reads_a_real_aleph_export() -> None:
    """The CAT line layout ($$c day, $$h time, one line per save) as a real Aleph site exports it:
    tests/fixtures/samples/usp_41_bibs.seq (Universidade de São Paulo's public ALEPHSEQ sample)."""
    from aleph2alma.aleph.delta import cat_stamp

    sample = Path(__file__).resolve().parents[1] / "fixtures" / "samples" / "usp_41_bibs.seq"
    lines = [line for line in sample.read_bytes().splitlines(keepends=True) if line.startswith(b"002902148 ")]
    assert cat_stamp(b"".join(lines)) == 201810181632  # the newer of its two saves
