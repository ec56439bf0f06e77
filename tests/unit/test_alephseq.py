"""ALEPHSEQ reader and writer: lossless round trip, rejects per fault, byte-range splitting."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import pymarc
import pytest
from pymarc import Field, Indicators, Subfield

from aleph2alma.aleph.alephseq import (
    AlephSeqRecord,
    check_line,
    control_field,
    count_records,
    grouped_lines,
    is_local_tag,
    iter_raw_records,
    parse_subfields,
    read_alephseq,
    record_lines,
    split_ranges,
    write_alephseq,
)
from aleph2alma.rejects import Reject, RejectLog

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alephseq"
SAMPLES = Path(
    os.environ.get("ALEPH2ALMA_SAMPLES", Path(__file__).resolve().parents[1] / "fixtures" / "samples")
)
SAMPLE_FILES = sorted(SAMPLES.glob("*.seq"))
needs_samples = pytest.mark.skipif(
    not SAMPLE_FILES, reason=f"no ALEPHSEQ samples in {SAMPLES} (set ALEPH2ALMA_SAMPLES)"
)

CLEAN_FIXTURES = ["quirks.seq", "embedded_items.seq", "invalid_utf8.seq", "gbk_title.seq"]
FAULTS = [  # fixture, reason; the bad line is line 4, in record 000000001
    ("short_line.seq", "short_line", "000000001"),
    ("bad_sysno.seq", "bad_sysno", "?"),
    ("bad_separator.seq", "bad_separator", "000000001"),
    ("bad_tag.seq", "bad_tag", "000000001"),
    ("bad_indicator.seq", "bad_indicator", "000000001"),
    ("bad_format_column.seq", "bad_format_column", "000000001"),
    ("control_field_indicators.seq", "control_field_indicators", "000000001"),
]


def _read(path: Path, **kwargs) -> tuple[list[AlephSeqRecord], list[dict]]:
    sink = io.StringIO()
    records = list(read_alephseq(path, rejects=RejectLog(sink), **kwargs))
    return records, [json.loads(line) for line in sink.getvalue().splitlines()]


def _write(records: list[AlephSeqRecord]) -> bytes:
    out = io.StringIO()
    assert write_alephseq(records, out) == len(records)
    return out.getvalue().encode("utf-8", "surrogateescape")


def _by_sysno(records: list[AlephSeqRecord], sysno: str) -> pymarc.Record:
    return next(r.record for r in records if r.sysno == sysno)


# --- round trip -------------------------------------------------------------------------


@needs_samples
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_round_trip_of_sample_is_byte_exact(path: Path) -> None:
    records, rejects = _read(path)
    assert rejects == []
    assert _write(records) == path.read_bytes()


@pytest.mark.parametrize("name", CLEAN_FIXTURES)
def test_round_trip_of_fixture_is_byte_exact(name: str) -> None:
    records, rejects = _read(FIXTURES / name)
    assert rejects == []
    assert _write(records) == (FIXTURES / name).read_bytes()


@pytest.mark.parametrize("name", [f for f, _, _ in FAULTS] + ["blank_line.seq"])
def test_round_trip_drops_only_skipped_lines(name: str) -> None:
    records, _ = _read(FIXTURES / name)
    kept = [
        line
        for line in (FIXTURES / name).read_bytes().splitlines(keepends=True)
        if line.strip() and check_line(line) is None
    ]
    assert _write(records) == b"".join(kept)


def test_crlf_is_normalised() -> None:
    lf = (FIXTURES / "quirks.seq").read_bytes()
    records = list(read_alephseq(io.BytesIO(lf.replace(b"\n", b"\r\n"))))
    assert _write(records) == lf


def test_missing_final_newline_rejects_the_last_record_as_truncated() -> None:
    """A file that does not end with a line end was cut: its last record is not delivered."""
    lf = (FIXTURES / "quirks.seq").read_bytes()
    sink = io.StringIO()
    records = list(read_alephseq(io.BytesIO(lf.rstrip(b"\n")), rejects=RejectLog(sink), source_name="q.seq"))
    whole = list(read_alephseq(io.BytesIO(lf)))
    assert [r.sysno for r in records] == [r.sysno for r in whole[:-1]]
    (reject,) = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert (reject["reason"], reject["record_id"], reject["source"]) == (
        "truncated_record",
        whole[-1].sysno,
        "q.seq",
    )


# --- samples ----------------------------------------------------------------------------


@needs_samples
@pytest.mark.parametrize(
    ("name", "count"),
    [("usp_41_bibs.seq", 41), ("usp_2_holdings.seq", 2), ("usp_2_bibs_for_holdings.seq", 2)],
)
def test_sample_record_counts(name: str, count: int) -> None:
    records, _ = _read(SAMPLES / name)
    assert len(records) == count
    with open(SAMPLES / name, "rb") as fh:
        assert sum(1 for _ in iter_raw_records(fh)) == count


@needs_samples
def test_sample_bib_fields() -> None:
    records, _ = _read(SAMPLES / "usp_41_bibs.seq")
    first = records[0]
    assert (first.sysno, first.source, first.line_no, first.items) == ("002902148", "usp_41_bibs.seq", 1, [])
    assert first.record["245"]["a"] == "Microeconomics"
    assert str(first.record.leader) == "00000nam a22003258i 4500"
    assert first.record["008"].data == "180914s2019    xxk           000 0 eng d"
    assert first.record["FMT"].control_field and first.record["FMT"].data == "BK"
    assert [f.tag for f in first.record.fields[-3:]] == ["CAT", "CAT", "001"]
    assert records[1].line_no == 24


@needs_samples
def test_sample_holdings_link_to_their_bib() -> None:
    holdings, _ = _read(SAMPLES / "usp_2_holdings.seq", entity="holdings")
    bibs, _ = _read(SAMPLES / "usp_2_bibs_for_holdings.seq")
    lkr = holdings[0].record["LKR"]
    assert (lkr["a"], lkr["b"], lkr["l"]) == ("HOL", "000001662", "FCL01")
    assert lkr["b"] in {b.sysno for b in bibs}
    assert holdings[0].record["852"]["b"] == "ACMUS"
    assert holdings[0].record["004"].data == "$$aAMH-10037792"  # control field kept verbatim


@needs_samples
def test_keep_local_false_drops_aleph_tags_but_keeps_leader() -> None:
    records = list(read_alephseq(SAMPLES / "usp_41_bibs.seq", keep_local=False))
    tags = {f.tag for r in records for f in r.record.fields}
    assert tags.isdisjoint({"FMT", "CAT", "BAS", "LKR", "OWN", "SID"})
    assert {"001", "008", "245"} <= tags
    assert str(records[0].record.leader) == "00000nam a22003258i 4500"
    holdings = list(read_alephseq(SAMPLES / "usp_2_holdings.seq", keep_local=False))
    assert holdings[0].record.get("LKR") is None


# --- faults -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "reason", "record_id"), FAULTS, ids=[r for _, r, _ in FAULTS])
def test_fault_is_rejected_and_stream_goes_on(name: str, reason: str, record_id: str) -> None:
    records, rejects = _read(FIXTURES / name, entity="bibs")
    assert len(rejects) == 1
    reject = rejects[0]
    assert (reject["reason"], reject["line_no"], reject["record_id"]) == (reason, 4, record_id)
    assert (reject["entity"], reject["source"]) == ("bibs", name)
    assert reject["raw"] == (FIXTURES / name).read_text().splitlines()[3]
    assert [r.sysno for r in records] == ["000000001", "000000002"]
    assert records[0].record["650"]["a"] == "Subject one."  # the line after the bad one is kept


def test_blank_line_is_skipped_silently() -> None:
    records, rejects = _read(FIXTURES / "blank_line.seq")
    assert rejects == []
    assert [r.sysno for r in records] == ["000000001", "000000002"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param(b"000000001 24510 L $$aTitle\n", None, id="data-field"),
        pytest.param(b"000000001 24510 L $$aTitle\r\n", None, id="crlf"),
        pytest.param(b"000000001 590   L \n", None, id="empty-data"),
        pytest.param(b"000000001 Z30-1 L $$5x", None, id="item-no-eol"),
        pytest.param(b"000000001 590   L\n", "short_line", id="17-chars"),
        pytest.param(b"\n", "short_line", id="blank"),
        pytest.param(b"00000001  24510 L $$a", "bad_sysno", id="8-digit-sysno"),
        pytest.param(b"000000001\t24510 L $$a", "bad_separator", id="tab-after-sysno"),
        pytest.param(b"000000001 24510-L $$a", "bad_separator", id="dash-before-L"),
        pytest.param(b"000000001 24510 L$$a", "bad_separator", id="no-blank-after-L"),
        pytest.param(b"000000001 2 510 L $$a", "bad_tag", id="blank-in-tag"),
        pytest.param(b"000000001 245\xc3\xa9 L $$a", "bad_indicator", id="non-ascii-indicator"),
        pytest.param(b"000000001 24510 l $$a", "bad_format_column", id="lowercase-l"),
        pytest.param(b"000000001 LDR 1 L 00000nam", "control_field_indicators", id="ldr-indicator"),
    ],
)
def test_check_line(line: bytes, reason: str | None) -> None:
    assert check_line(line) == reason


@pytest.mark.parametrize(
    ("tag", "local"),
    [
        ("FMT", True),
        ("CAT", True),
        ("LKR", True),
        ("Z30", True),
        ("SYS", True),
        ("9XX", True),
        ("LDR", False),
        ("001", False),
        ("245", False),
        ("852", False),
    ],
)
def test_is_local_tag(tag: str, local: bool) -> None:
    assert is_local_tag(tag) is local


# --- encodings --------------------------------------------------------------------------


def test_invalid_utf8_is_recorded_and_recoverable() -> None:
    records, rejects = _read(FIXTURES / "invalid_utf8.seq")
    assert rejects == []
    assert records[0].encoding_errors == [(3, "245")]
    title = records[0].record["245"]["a"]
    assert title.encode("utf-8", "surrogateescape") == b"Caf\xe9 society"
    assert records[0].record["245"]["c"] == "by someone"


def test_gbk_title_is_recorded_and_recoverable() -> None:
    records, _ = _read(FIXTURES / "gbk_title.seq")
    record = records[0]
    assert record.encoding_errors == [(4, "200")]
    field_200 = record.record["200"]
    assert field_200["a"].encode("utf-8", "surrogateescape").decode("gbk") == "中国图书馆学报"
    assert field_200["f"].encode("utf-8", "surrogateescape").decode("gbk") == "王小明"
    assert record.record["330"]["a"] == "中文摘要 (UTF-8)"


# --- embedded items and quirks ----------------------------------------------------------


def test_embedded_items_are_exposed_and_kept_in_place() -> None:
    records, _ = _read(FIXTURES / "embedded_items.seq")
    assert records[0].items == [
        {"5": "000000010000010", "b": "MAIN", "c": "STACK", "h": "123.4 ABC", "z": "Note one ; Note two"},
        {"5": "000000010000020", "b": "MAIN", "c": "REF"},
    ]
    assert [f.tag for f in records[0].record.fields] == ["FMT", "245", "Z30", "Z30", "OWN"]
    assert records[0].record["Z30"].indicators == Indicators("-", "1")
    assert records[1].items == []


def test_items_without_local_fields_are_written_after_the_record() -> None:
    records = list(read_alephseq(FIXTURES / "embedded_items.seq", keep_local=False))
    assert [f.tag for f in records[0].record.fields] == ["245"]
    assert len(records[0].items) == 2
    lines = _write(records).decode().splitlines()
    assert lines[:4] == [
        "000000010 LDR   L 00000nam^a2200000^a^4500",
        "000000010 24500 L $$aWith two items",
        "000000010 Z30-1 L $$5000000010000010$$bMAIN$$cSTACK$$h123.4 ABC$$zNote one ; Note two",
        "000000010 Z30-1 L $$5000000010000020$$bMAIN$$cREF",
    ]


def test_quirks_are_kept_in_documented_form() -> None:
    records, _ = _read(FIXTURES / "quirks.seq")
    assert [r.sysno for r in records] == ["000000020", "000000030", "000000040", "000000040", "000000050"]
    assert [r.has_leader for r in records] == [True, False, True, False, False]
    rec = records[0].record
    assert rec.get_fields("245")[0].subfields == [Subfield("", "Title with no subfield codes")]
    notes = [f.subfields for f in rec.get_fields("500")]
    assert notes == [
        [Subfield("", "before first code"), Subfield("a", "after")],
        [Subfield("a", "Dangling delimiter at the end"), Subfield("", "$$")],
        [Subfield("c", "$25.00")],
    ]
    assert rec["590"].subfields == []
    assert rec["591"]["a"] == "Trailing blanks   "
    assert rec["SYS"].subfields == [Subfield("", "000000019")]
    out_of_place = records[1].record["LDR"]
    assert out_of_place.control_field and out_of_place.data == "00000nam a2200000 a 4500"
    assert str(records[2].record.leader) == "00000nam a2200000 a 4500"
    assert records[2].record["LDR"].data == "00000cam a2200000 a 4500"  # the second LDR line
    assert records[4].record["LDR"].data == "00000nam a22"


# --- writer -----------------------------------------------------------------------------


def test_record_lines_of_a_new_record() -> None:
    record = pymarc.Record(leader="00000nam a2200000 a 4500")
    record.add_field(
        control_field("FMT", "BK"),
        Field("008", data="190101s2019    xx  "),
        Field("245", Indicators("1", "0"), [Subfield("a", "Title"), Subfield("c", "Me")]),
    )
    assert record_lines("000000123", record, [{"5": "000000123000010", "b": "MAIN"}]) == [
        "000000123 FMT   L BK",
        "000000123 LDR   L 00000nam^a2200000^a^4500",
        "000000123 008   L 190101s2019^^^^xx^^",
        "000000123 24510 L $$aTitle$$cMe",
        "000000123 Z30-1 L $$5000000123000010$$bMAIN",
    ]


def test_record_lines_refuses_fmt_built_as_a_data_field() -> None:
    record = pymarc.Record()
    record.add_field(Field("FMT", data="BK"))  # pymarc keeps no data for a non-numeric tag
    with pytest.raises(ValueError, match="control_field"):
        record_lines("000000123", record)


@pytest.mark.parametrize("sysno", ["123", "00000012X", "0000001234"])
def test_record_lines_rejects_a_bad_system_number(sysno: str) -> None:
    with pytest.raises(ValueError, match="9 digits"):
        record_lines(sysno, pymarc.Record())


# --- raw records and splitting ----------------------------------------------------------


@pytest.mark.parametrize(
    "path", [*SAMPLE_FILES, *(FIXTURES / n for n in CLEAN_FIXTURES)], ids=lambda p: p.name
)
def test_iter_raw_records_matches_reader(path: Path) -> None:
    with open(path, "rb") as fh:
        raw = list(iter_raw_records(fh))
    records = list(read_alephseq(path))
    assert [(s, n) for s, n, _ in raw] == [(r.sysno, r.line_no) for r in records]
    assert b"".join(chunk for _, _, chunk in raw) == path.read_bytes()


def _generated_file(path: Path, records: int = 300) -> Path:
    """Records of varied size, with duplicate system numbers and a few faulty lines."""
    rng = random.Random(7)
    lines: list[str] = []
    for i in range(records):
        sysno = f"{i - 1 if i % 10 == 5 else i:09d}"  # some repeat the previous system number
        lines += [f"{sysno} FMT   L BK", f"{sysno} LDR   L 00000nam^a2200000^a^4500"]
        lines += [f"{sysno} 500   L $$a{'x' * rng.randint(0, 120)}" for _ in range(rng.randint(0, 6))]
        if i % 17 == 0:
            lines += ["", f"{sysno} 5#0   L $$abad tag"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("part_bytes", [1, 97, 1000, 10**9])
def test_split_ranges_cover_the_file_at_record_boundaries(tmp_path: Path, part_bytes: int) -> None:
    path = _generated_file(tmp_path / "bibs.seq")
    data = path.read_bytes()
    with open(path, "rb") as fh:
        whole = list(iter_raw_records(fh))
    ranges = split_ranges(path, part_bytes)

    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(ranges, ranges[1:], strict=False))
    starts, offset = set(), 0
    for _, _, raw in whole:
        starts.add(offset)
        offset += len(raw)
    assert {start for start, _ in ranges} <= starts  # no record crosses a boundary
    parts = [list(iter_raw_records(io.BytesIO(data[start:end]))) for start, end in ranges]
    assert [(s, raw) for part in parts for s, _, raw in part] == [(s, raw) for s, _, raw in whole]
    if part_bytes < 1000:
        assert len(ranges) > 10


def test_split_ranges_edge_cases(tmp_path: Path) -> None:
    empty = tmp_path / "empty.seq"
    empty.write_bytes(b"")
    assert split_ranges(empty, 100) == [(0, 0)]
    with pytest.raises(ValueError, match="part_bytes"):
        split_ranges(empty, 0)


def test_raw_and_parsed_counts_agree_on_generated_file(tmp_path: Path) -> None:
    path = _generated_file(tmp_path / "bibs.seq")
    log = RejectLog()
    with open(path, "rb") as fh:
        assert sum(1 for _ in iter_raw_records(fh)) == len(list(read_alephseq(path, rejects=log))) == 300
    assert log.counts == {"bad_tag": 18}


# --- the reader's fast paths ----------------------------------------------------------------


def _scan_subfields(data: str) -> list[Subfield]:
    """The reference split at ``$$`` + code (the reader's general path, kept here as the spec)."""
    subfields: list[Subfield] = []
    pos = data.find("$$")
    if pos == -1:
        return [Subfield("", data)] if data else []
    if pos > 0:
        subfields.append(Subfield("", data[:pos]))
    while pos != -1:
        if pos + 2 == len(data):
            subfields.append(Subfield("", "$$"))
            break
        nxt = data.find("$$", pos + 3)
        subfields.append(Subfield(data[pos + 2], data[pos + 3 : len(data) if nxt == -1 else nxt]))
        pos = nxt
    return subfields


def test_parse_subfields_splits_as_the_scan() -> None:
    rng = random.Random(7)
    alphabet = ["$", "$", "$", "a", "b", " ", "中", "^", "\x1b"]
    cases = ["", "$$", "$$$", "$$$$a", "$$a$$$b", "x$$", "$$a", "abc", "$$a1$$b2$$", "pre$$ax$$$$b"]
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(12))) for _ in range(20_000)]
    for data in cases:
        got = parse_subfields(data)
        assert got == _scan_subfields(data), data
        assert all(type(sub) is Subfield for sub in got)


def test_fields_read_are_the_fields_pymarc_builds() -> None:
    """The reader sets pymarc's Field attributes directly (``Field.__init__`` is slow): the
    result must be what ``Field(...)`` and ``control_field(...)`` build."""
    text = (
        "000000001 FMT   L BK\n"
        "000000001 LDR   L 00000nam^^2200000^a^4500\n"
        "000000001 001   L 000000001\n"
        "000000001 008   L 850101s1985^^^^xx\n"
        "000000001 24510 L $$aTitle$$bsub\n"
        "000000001 500   L raw text$$anote\n"
        "000000001 650 0 L $$a中文$$x\n"
        "000000001 CAT   L $$aCAT$$b00\n"
        "000000001 Z30-1 L $$bBARCODE\n"
    ).encode()
    [rec] = read_alephseq(io.BytesIO(text))
    expected = [
        control_field("FMT", "BK"),
        Field("001", data="000000001"),
        Field("008", data="850101s1985    xx"),
        Field("245", Indicators("1", "0"), [Subfield("a", "Title"), Subfield("b", "sub")]),
        Field("500", Indicators(" ", " "), [Subfield("", "raw text"), Subfield("a", "note")]),
        Field("650", Indicators(" ", "0"), [Subfield("a", "中文"), Subfield("x", "")]),
        Field("CAT", Indicators(" ", " "), [Subfield("a", "CAT"), Subfield("b", "00")]),
        Field("Z30", Indicators("-", "1"), [Subfield("b", "BARCODE")]),
    ]
    slots = ("tag", "data", "_indicators", "subfields", "control_field")
    assert [[getattr(f, s) for s in slots] for f in rec.record.fields] == [
        [getattr(f, s) for s in slots] for f in expected
    ]
    assert all(type(f) is Field for f in rec.record.fields)
    assert all(type(f.indicators) is Indicators for f in rec.record.fields if not f.control_field)
    assert str(rec.record.leader) == "00000nam  2200000 a 4500"
    assert rec.items == [{"b": "BARCODE"}]


def test_reader_groups_and_rejects_lines_as_grouped_lines() -> None:
    """read_alephseq's fused line loop: the same records and the same malformed lines, in the
    same order, as grouped_lines (CRLF, blank, malformed, over-long, invalid UTF-8 lines, an
    FMT that restarts a system number, a control field with indicators)."""
    lines = [
        b"000000001 FMT   L BK\r\n",
        b"000000001 24510 L $$aOne\r\n",
        b"\n",
        b"garbage line\n",
        b"000000001 00110 L 1\n",  # control field with indicators: malformed
        b"000000001 500   L $$a\xff\xfeinvalid\n",
        b"000000001 FMT   L BK\n",  # a new record, same system number
        b"000000001 245   L $$aTwo\n",
        b"x" * 300 + b"\n",
        b"000000002 245   L $$aThree\n",
        b"00000000X 245   L $$abad sysno\n",
        b"000000002 650 7 L $$aFour\n",
    ]
    data = b"".join(lines)
    seen: list[tuple[int, str]] = []
    groups = [
        (sysno, [line.line_no for line in group])
        for sysno, group in grouped_lines(
            io.BytesIO(data), lambda line, _sysno: seen.append((line.line_no, line.reason or ""))
        )
    ]
    rejects: list[Reject] = []
    records = list(read_alephseq(io.BytesIO(data), malformed=rejects.append))
    assert [(r.sysno, r.line_no) for r in records] == [(sysno, nos[0]) for sysno, nos in groups]
    assert [(r.line_no, r.reason) for r in rejects] == [(no, why) for no, why in seen if why != "blank"]
    assert [len(r.record.fields) for r in records] == [3, 2, 2]  # FMT 245 500 / FMT 245 / 245 650
    assert records[0].record.fields[1].subfields == [Subfield("a", "One")]  # CRLF gone
    assert records[0].encoding_errors == [(6, "500")]
    assert records[1].encoding_errors == records[2].encoding_errors == []
    grouped: list[tuple[int, int, str]] = []
    counted: list[tuple[int, int, str]] = []
    for _ in grouped_lines(
        io.BytesIO(data), lambda line, sysno: grouped.append((line.line_no, line.offset, sysno)), offset=1000
    ):
        pass
    assert (
        count_records(
            io.BytesIO(data),
            lambda line, sysno: counted.append((line.line_no, line.offset, sysno)),
            offset=1000,
        )
        == 3
    )
    assert counted == grouped  # blank lines too, at the same byte offsets, after the same record
