"""Bib transform (MARC 21 and CNMARC) and the input readers: one fixture per fault."""

from __future__ import annotations

import copy
import io
import json
import os
import unicodedata
from pathlib import Path

import pyarrow as pa
import pymarc
import pytest
from pymarc import Field, Indicators, Subfield

from aleph2alma.aleph.alephseq import AlephSeqRecord, read_alephseq
from aleph2alma.marc.bibs import (
    BIB_INDEX_SCHEMA,
    BibOptions,
    embed_items,
    iso2709,
    leader_faults,
    marc_bytes,
    transform_bib,
    transform_bibs,
)
from aleph2alma.marc.readers import MarcFormatError, detect_format, read_records
from aleph2alma.rejects import RejectLog
from aleph2alma.validate.issues import IssueLog, read_issues

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "marc"
SAMPLES = Path(
    os.environ.get("ALEPH2ALMA_SAMPLES", Path(__file__).resolve().parents[1] / "fixtures" / "samples")
)


def _sample(name: str) -> Path:
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"no shared sample {name} in {SAMPLES} (set ALEPH2ALMA_SAMPLES)")
    return path


MARC21 = BibOptions("BNU02", "MARC21")
CNMARC = BibOptions("BNU01", "CNMARC")


def _one(name: str, options: BibOptions = MARC21, **kwargs):
    [rec] = read_alephseq(FIXTURES / name)
    return transform_bib(rec, options, **kwargs)


def _run(paths: list[Path], options: BibOptions, **kwargs):
    """transform_bibs over files; (stats, output records, rejects, issues, index)."""
    out, rej, iss = io.BytesIO(), io.StringIO(), io.StringIO()
    index: list[dict] = []
    records = (
        rec
        for path in paths
        for rec in read_records(
            path, rejects=RejectLog(), library=options.library, force_utf8=options.flavour == "CNMARC"
        )
    )
    stats = transform_bibs(records, options, out, RejectLog(rej), IssueLog(iss), index, **kwargs)
    written = list(pymarc.MARCReader(io.BytesIO(out.getvalue()), force_utf8=True))
    rejects = [json.loads(line) for line in rej.getvalue().splitlines()]
    return stats, written, rejects, read_issues(iss.getvalue().splitlines()), index


# --- one rule per fixture -----------------------------------------------------------------

RULE_CASES = [  # fixture, options, expected issue rules, reject reason (None: delivered)
    ("clean_marc21.seq", MARC21, [], None),
    ("clean_cnmarc.seq", CNMARC, [], None),
    ("electronic.seq", MARC21, [], None),
    ("rerun_035.seq", MARC21, [], None),
    ("nfd_title.seq", MARC21, [], None),
    ("bad_leader.seq", MARC21, ["invalid_leader"], "invalid_leader"),
    ("bad_leader_value.seq", MARC21, ["invalid_leader"], "invalid_leader"),
    ("missing_title.seq", MARC21, ["missing_title"], "missing_title"),
    ("missing_title_cnmarc.seq", CNMARC, ["missing_title"], "missing_title"),
    ("bad_indicators.seq", MARC21, ["invalid_indicators"], None),
    ("gbk_title.seq", CNMARC, ["legacy_gbk"], None),
    ("invalid_utf8.seq", MARC21, ["invalid_utf8"], None),
]


@pytest.mark.parametrize(
    ("fixture", "options", "rules", "reason"), RULE_CASES, ids=[c[0] for c in RULE_CASES]
)
def test_each_rule_fires_on_its_fixture_only(
    fixture: str, options: BibOptions, rules: list[str], reason: str | None
) -> None:
    result = _one(fixture, options)
    assert [i.rule for i in result.issues] == rules
    assert all(i.record_id == f"{options.library}:000000001" and i.entity == "bibs" for i in result.issues)
    assert (result.reject.reason if result.reject else None) == reason
    assert (result.record is None) == (reason is not None)


def test_a_cnmarc_record_in_a_marc21_library_is_cnmarc_and_reviewed() -> None:
    # issue 8, A4: the record's shape (200, 100 $a fixed data) decides, the mismatch is a REVIEW issue
    result = _one("clean_cnmarc.seq", MARC21)
    assert [(i.rule, i.record_id) for i in result.issues] == [("flavour_mismatch", "BNU02:000000001")]
    assert "CNMARC's shape" in result.issues[0].detail and "in a MARC21 library" in result.issues[0].detail
    assert result.record is not None and result.record["200"] is not None


def test_a_marc21_record_in_a_cnmarc_library_is_not_a_missing_title_reject() -> None:
    result = _one("clean_marc21.seq", CNMARC)
    assert [i.rule for i in result.issues] == ["flavour_mismatch"]
    assert result.reject is None and result.record is not None
    assert str(result.record.leader)[9] == "a"  # written as MARC 21, not given a CNMARC 100
    assert result.record.get("100") is None


def test_a_forced_flavour_judges_the_record_by_it() -> None:
    # leader position 8 '0' is UNIMARC's hierarchical level, not MARC 21; 200 is no 245
    forced = BibOptions("BNU02", "MARC21", detect_flavour=False)
    assert [i.rule for i in _one("clean_cnmarc.seq", forced).issues] == ["invalid_leader", "missing_title"]


def test_detected_flavour_without_a_configured_one_is_not_an_issue() -> None:
    quiet = BibOptions("BNU02", "MARC21", report_flavour_mismatch=False)
    result = _one("clean_cnmarc.seq", quiet)
    assert result.issues == [] and result.record is not None


@pytest.mark.parametrize(
    ("fixture", "detail"),
    [
        ("bad_leader.seq", "LDR is 14 characters, not 24"),
        ("bad_leader_value.seq", "position 6 (type of record) 'X'"),
        ("missing_title.seq", "no 245 field (MARC21)"),
        ("missing_title_cnmarc.seq", "no 200 field (CNMARC)"),
        ("bad_indicators.seq", "245: indicators '?''0', written as blank"),
        ("gbk_title.seq", "200: converted from GBK"),
        ("invalid_utf8.seq", "504 line 8: bytes fffe80"),
    ],
    ids=lambda v: v if v.endswith(".seq") else "",
)
def test_issue_details_name_the_fault(fixture: str, detail: str) -> None:
    options = CNMARC if "cnmarc" in fixture or "gbk" in fixture else MARC21
    [issue] = _one(fixture, options).issues
    assert issue.detail == detail


@pytest.mark.parametrize(
    "leader",
    [
        "00000nam^a22000007i^4500",
        "00000nam^^22^^^^^Ia^4500",
        "00000nam^^^22^^^^Ia^^^^^",
        "00000aam^a22005411i^4500",
        "00000nam^^2200229^a^4500",
        "01307ccm^a2200385Ia^4500",
        "00640njm^a2200205uu^4500",
        "00000nam^^22^^^^^K^^4500",
    ],
)
def test_sample_leaders_are_valid_marc21(leader: str) -> None:
    assert leader_faults(leader.replace("^", " "), "MARC21") == ()


@pytest.mark.parametrize(
    ("leader", "flavour"),
    [
        pytest.param("00000nam0 2200000   450 ", "CNMARC", id="cnmarc-demo"),
        pytest.param("00000nas0 2200000   4500", "CNMARC", id="cnmarc-4500"),
        pytest.param("00000nam  2200000   450 ", "CNMARC", id="cnmarc-blank-8"),
    ],
)
def test_cnmarc_leaders_are_valid(leader: str, flavour: str) -> None:
    assert leader_faults(leader, flavour) == ()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("leader", "flavour", "position"),
    [
        pytest.param("00000nam a2200000 i 450", "MARC21", "leader is 23", id="short"),
        pytest.param("000x0nam a2200000 i 4500", "MARC21", "record length", id="length-not-digits"),
        pytest.param("00000xam a2200000 i 4500", "MARC21", "position 5", id="status"),
        pytest.param("00000nzm a2200000 i 4500", "MARC21", "position 6", id="type"),
        pytest.param("00000naz a2200000 i 4500", "MARC21", "position 7", id="level"),
        pytest.param("00000nam b2200000 i 4500", "MARC21", "position 9", id="coding"),
        pytest.param("00000nam a3200000 i 4500", "MARC21", "position 10", id="indicator-count"),
        pytest.param("00000nam a2200000 i 4501", "MARC21", "position 23", id="entry-map"),
        pytest.param("00000nam a2200000# i4500", "MARC21", "position 17", id="encoding-level-punct"),
        pytest.param("00000nam a2200000 é 4500", "MARC21", "position 18", id="non-ascii"),
        pytest.param("00000nama 2200000   450 ", "CNMARC", "position 8", id="cnmarc-hierarchy"),
        pytest.param("00000ntm0 2200000   450 ", "CNMARC", "position 6", id="cnmarc-type"),
    ],
)
def test_invalid_leaders(leader: str, flavour: str, position: str) -> None:
    faults = leader_faults(leader, flavour)  # type: ignore[arg-type]
    assert len(faults) == 1 and faults[0].startswith(position)


# --- the Alma shape -----------------------------------------------------------------------


def test_marc21_output_shape() -> None:
    stats, [record], _, issues, _ = _run([FIXTURES / "clean_marc21.seq"], MARC21)
    assert issues == [] and stats.records_out == 1
    assert str(record.leader)[5:12] == "nam a22" and str(record.leader)[20:] == "4500"
    assert [f.tag for f in record.fields] == ["001", "005", "008", "020", "035", "245", "264", "504", "650"]
    assert record["001"].data == "000000001"
    assert record["035"]["a"] == "(ALEPH)BNU02000000001"


def test_with_several_bib_libraries_the_001_is_qualified() -> None:
    options = BibOptions("BNU02", "MARC21", qualified_ids=True)
    _, [record], _, _, _ = _run([FIXTURES / "clean_marc21.seq"], options)
    assert record["001"].data == "BNU02000000001"
    assert record["035"]["a"] == "(ALEPH)BNU02000000001"


def test_035_is_not_duplicated_on_rerun() -> None:
    _, [first], _, _, _ = _run([FIXTURES / "rerun_035.seq"], MARC21)
    assert [f["a"] for f in first.get_fields("035")] == ["(ALEPH)BNU02000000001"]
    rec = AlephSeqRecord("000000001", first, [], "again", 1, [])
    again = transform_bib(rec, MARC21).record
    assert again is not None and [f["a"] for f in again.get_fields("035")] == ["(ALEPH)BNU02000000001"]
    assert [f.data for f in again.get_fields("001")] == ["000000001"]


def test_text_is_nfc() -> None:
    _, [record], _, _, _ = _run([FIXTURES / "nfd_title.seq"], MARC21)
    title = record["245"]["a"]
    assert title == unicodedata.normalize("NFC", title) == "Gramática da língua portuguesa /"


def test_gbk_title_is_converted_and_written_as_utf8() -> None:
    _, [record], _, [issue], _ = _run([FIXTURES / "gbk_title.seq"], CNMARC)
    assert (issue.rule, issue.record_id, issue.detail) == (
        "legacy_gbk",
        "BNU01:000000001",
        "200: converted from GBK",
    )
    assert record["200"]["a"] == "教育学原理" and record["200"]["f"] == "王伟著"


def test_invalid_bytes_become_replacement_characters_and_the_record_is_kept() -> None:
    stats, [record], _, [issue], _ = _run([FIXTURES / "invalid_utf8.seq"], MARC21)
    assert stats.records_out == 1 and issue.rule == "invalid_utf8"
    assert "bytes fffe80" in issue.detail
    assert record["504"]["a"].startswith("\ufffd\ufffd\ufffdIncludes")


def test_bad_indicators_are_written_as_blank() -> None:
    _, [record], _, _, _ = _run([FIXTURES / "bad_indicators.seq"], MARC21)
    assert record["245"].indicators == Indicators(" ", "0")


@pytest.mark.parametrize(
    ("field_100", "expected"),
    [
        pytest.param(
            "20240101d2024    em y0chiy0120    ea", "20240101d2024    em y0chiy50      ea", id="legacy-0120"
        ),
        pytest.param("20240101d2024", "20240101d2024" + " " * 13 + "50  ", id="short-100"),
        pytest.param(None, " " * 26 + "50  " + " " * 6, id="no-100"),
    ],
)
def test_cnmarc_100_declares_unicode(field_100: str | None, expected: str) -> None:
    [rec] = read_alephseq(FIXTURES / "clean_cnmarc.seq")
    rec.record.remove_fields("100")
    if field_100 is not None:
        rec.record.add_field(Field("100", Indicators(" ", " "), [Subfield("a", field_100)]))
    record = transform_bib(rec, CNMARC).record
    assert record is not None
    [f100] = record.get_fields("100")
    assert f100["a"] == expected and f100["a"][26:30] == "50  "


def test_cnmarc_is_written_in_utf8_with_its_leader_position_9_kept() -> None:
    raw = io.BytesIO()
    transform_bibs(read_alephseq(FIXTURES / "clean_cnmarc.seq"), CNMARC, raw, RejectLog(), IssueLog())
    data = raw.getvalue()
    assert data[9:10] == b" " and data[20:24] == b"450 "
    assert "教育学原理".encode() in data


def test_local_tags_are_dropped_unless_kept() -> None:
    assert {f.tag for f in _one("clean_marc21.seq").record.fields} & {"FMT", "CAT", "OWN"} == set()
    kept = _one("clean_marc21.seq", BibOptions("BNU02", "MARC21", keep_local_tags=("OWN",))).record
    assert [f.tag for f in kept.fields if not f.tag.isdigit()] == ["OWN"]
    assert _one("clean_marc21.seq", BibOptions("BNU02", "MARC21", keep_local_tags=("OWN",))).issues == []


def test_items_are_embedded_in_the_items_field() -> None:
    items = {
        "000000001": [
            {
                "barcode": "B001",
                "library": "MAIN",
                "location": "STACKS",
                "item_policy": "01",
                "call_number": "LB1060 .Z4",
                "description": "v.1",
                "public_note": "",
                "material_type": "BOOK",
                "unknown_key": "ignored",
            },
            {
                "barcode": "B002",
                "library": "MAIN",
                "location": "STACKS",
                "internal_note": "gift",
                "fulfillment_note": "ask",
                "process_type": "ACQ",
            },
        ]
    }
    options = BibOptions("BNU02", "MARC21", items_field="949")
    _, [record], _, _, _ = _run(
        [FIXTURES / "clean_marc21.seq"], options, items_for=lambda s: items.get(s, [])
    )
    first, second = record.get_fields("949")
    assert [(s.code, s.value) for s in first.subfields] == [
        ("b", "B001"),
        ("l", "MAIN"),
        ("k", "STACKS"),
        ("p", "01"),
        ("h", "LB1060 .Z4"),
        ("z", "v.1"),
        ("t", "BOOK"),
    ]
    assert [s.code for s in second.subfields] == ["b", "l", "k", "f", "x", "s"]


def test_items_field_must_be_a_data_field_tag() -> None:
    with pytest.raises(ValueError, match="items_field"):
        BibOptions("BNU02", "MARC21", items_field="9490")
    with pytest.raises(ValueError, match="flavour"):
        BibOptions("BNU02", "UNIMARC")  # type: ignore[arg-type]


def _delivered(name: str) -> pymarc.Record:
    out = io.BytesIO()
    transform_bibs(read_alephseq(FIXTURES / name), MARC21, out, RejectLog(), IssueLog())
    return next(pymarc.MARCReader(io.BytesIO(out.getvalue()), to_unicode=True, force_utf8=True))


def test_items_are_embedded_in_delivered_bibs() -> None:
    record = _delivered("clean_marc21.seq")
    sysno = record["001"].data
    items = {
        sysno: [{"barcode": "B001", "library": "MAIN", "location": "STACKS"}, {"barcode": "", "library": ""}]
    }
    other = _delivered("electronic.seq")
    other["001"].data = "000000999"
    out = io.BytesIO()
    stats = embed_items([record, other], "BNU02", "949", lambda s: items.get(s, []), out)
    first, second = pymarc.MARCReader(io.BytesIO(out.getvalue()), to_unicode=True, force_utf8=True)
    assert (stats.records, stats.items_embedded, stats.not_embedded) == (2, 1, [])
    assert [[(s.code, s.value) for s in f.subfields] for f in first.get_fields("949")] == [
        [("b", "B001"), ("l", "MAIN"), ("k", "STACKS")]
    ]
    assert second.get_fields("949") == []


def test_items_are_embedded_by_the_qualified_001() -> None:
    _, [record], _, _, _ = _run(
        [FIXTURES / "clean_marc21.seq"], BibOptions("BNU02", "MARC21", qualified_ids=True)
    )
    items = {"000000001": [{"barcode": "B001"}]}
    stats = embed_items(
        [record], "BNU02", "949", lambda s: items.get(s, []), io.BytesIO(), qualified_ids=True
    )
    assert stats.items_embedded == 1


def test_a_bib_too_long_with_its_items_is_written_without_them() -> None:
    record = _delivered("clean_marc21.seq")
    sysno = record["001"].data
    many = [
        {"barcode": f"B{i:06d}", "library": "MAIN", "location": "STACKS", "public_note": "x" * 200}
        for i in range(500)
    ]
    out = io.BytesIO()
    stats = embed_items([record], "BNU02", "949", lambda s: many if s == sysno else [], out)
    [written] = pymarc.MARCReader(io.BytesIO(out.getvalue()), to_unicode=True, force_utf8=True)
    assert (stats.records, stats.items_embedded, stats.not_embedded) == (1, 0, [f"BNU02:{sysno}"])
    assert (stats.records_in, stats.records_out, stats.rejected) == (1, 1, 0)
    assert written.get_fields("949") == [] and written["245"] is not None


def test_has_856_needs_a_url() -> None:
    assert _one("electronic.seq").has_856
    assert not _one("clean_marc21.seq").has_856


def test_every_record_ends_in_out_or_rejects_and_in_the_index() -> None:
    paths = sorted(FIXTURES.glob("*.seq"))
    paths = [
        p for p in paths if not p.name.startswith("hol_") and "cnmarc" not in p.name and "gbk" not in p.name
    ]
    stats, written, rejects, issues, index = _run(paths, MARC21)
    assert stats.records_in == len(paths) == len(index)
    assert stats.records_in == stats.records_out + stats.rejected
    assert stats.records_out == len(written) and stats.rejected == len(rejects)
    assert sorted(r["reason"] for r in rejects) == ["invalid_leader", "invalid_leader", "missing_title"]
    assert stats.rejected_by_reason == {"invalid_leader": 2, "missing_title": 1}
    assert stats.to_dict()["rejected"] == 3 and stats.balanced
    assert sum(row["rejected"] for row in index) == stats.rejected
    assert pa.Table.from_pylist(index, schema=BIB_INDEX_SCHEMA).num_rows == len(paths)
    assert sum(stats.issues.values()) == len(issues)


def test_a_record_too_long_for_iso2709_is_rejected() -> None:
    [rec] = read_alephseq(FIXTURES / "clean_marc21.seq")
    rec.record.add_field(Field("505", Indicators("0", " "), [Subfield("a", "x" * 10_000)]))
    rejects = io.StringIO()
    stats = transform_bibs([rec], MARC21, io.BytesIO(), RejectLog(rejects), IssueLog())
    assert (stats.records_out, stats.rejected_by_reason) == (0, {"record_too_long": 1})
    assert json.loads(rejects.getvalue())["reason"] == "record_too_long"


# --- shared samples: no false positives ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "library"),
    [
        ("usp_41_bibs.seq", "USP01"),
        ("usp_2_bibs_for_holdings.seq", "FCL01"),
        ("pymarc_test.dat", "PYM01"),
        ("pymarc_utf8.xml", "PYM01"),
    ],
)
def test_samples_give_no_issues(name: str, library: str) -> None:
    options = BibOptions(library, "MARC21")
    stats, written, rejects, issues, _ = _run([_sample(name)], options)
    assert issues == [] and rejects == []
    assert stats.records_in == stats.records_out == len(written) > 0
    for record in written:
        assert record["035"] is not None and record["001"] is not None
        assert str(record.leader)[9] == "a"


# --- readers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        pytest.param(FIXTURES / "clean_marc21.seq", "alephseq", id="alephseq"),
        pytest.param(FIXTURES / "broken.mrc", "iso2709", id="iso2709"),
        pytest.param(Path("pymarc_test.dat"), "iso2709", id="sample-iso2709"),
        pytest.param(Path("pymarc_utf8.xml"), "marcxml", id="sample-marcxml"),
    ],
)
def test_detect_format(path: Path, fmt: str) -> None:
    assert detect_format(path if path.is_absolute() else _sample(path.name)) == fmt


@pytest.mark.parametrize(
    "content",
    [(FIXTURES / "not_marc.txt").read_bytes(), b"", b"\x00\x01garbage"],
    ids=["csv-fixture", "empty", "binary"],
)
def test_not_marc_is_a_format_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "input.dat"
    path.write_bytes(content)
    with pytest.raises(MarcFormatError, match=r"input.dat: not ALEPHSEQ, ISO 2709 or MARCXML \(starts with"):
        detect_format(path)


def test_broken_iso2709_records_become_rejects_and_reading_goes_on() -> None:
    sink = io.StringIO()
    records = list(read_records(FIXTURES / "broken.mrc", rejects=RejectLog(sink), library="BNU02"))
    assert [r.sysno for r in records] == ["000000001", "000000003"]
    assert records[1].record["245"]["a"] == "Third récord"
    rejects = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [(r["record_id"], r["reason"]) for r in rejects] == [
        ("BNU02:broken.mrc@77", "record_directory_invalid"),
        ("BNU02:broken.mrc@236", "end_of_record_not_found"),
    ]
    assert "byte offset 77" in rejects[0]["detail"]


def test_iso2709_bytes_that_are_not_utf8_reach_the_repair(tmp_path: Path) -> None:
    record = pymarc.Record(force_utf8=True, leader="00000nam a2200000 i 4500")
    record.add_field(
        Field("001", data="000000009"), Field("245", Indicators("0", "0"), [Subfield("a", "WXYZ")])
    )
    data = record.as_marc().replace(b"WXYZ", "教育".encode("gbk"))  # the same length: directory stays right
    path = tmp_path / "gbk.mrc"
    path.write_bytes(data)
    [rec] = read_records(path, rejects=RejectLog())
    assert rec.encoding_errors == [(1, "245")]
    result = transform_bib(rec, MARC21)
    assert [i.rule for i in result.issues] == ["legacy_gbk"]
    assert result.record is not None and result.record["245"]["a"] == "教育"


def test_marcxml_leader_of_wrong_length_is_reported_by_the_transform(tmp_path: Path) -> None:
    path = tmp_path / "short.xml"
    path.write_text(
        '<collection xmlns="http://www.loc.gov/MARC21/slim"><record><leader>00000nam a22</leader>'
        '<controlfield tag="001">42</controlfield>'
        '<datafield tag="245" ind1="0" ind2="0"><subfield code="a">T</subfield></datafield>'
        "</record><record><leader>00000nam a2200000 i 4500</leader>",
        encoding="utf-8",
    )
    sink = io.StringIO()
    [rec] = read_records(path, rejects=RejectLog(sink), library="X")
    assert rec.sysno == "42" and not rec.has_leader
    assert transform_bib(rec, BibOptions("X", "MARC21")).reject.reason == "invalid_leader"  # type: ignore[union-attr]
    assert json.loads(sink.getvalue())["reason"] == "xml_syntax_error"


# --- the ISO 2709 writer: pymarc's bytes ------------------------------------------------------


def _records_to_write() -> list[pymarc.Record]:
    records = []
    for name in ("clean_marc21.seq", "clean_cnmarc.seq", "gbk_title.seq", "nfd_title.seq", "electronic.seq"):
        for rec in read_alephseq(FIXTURES / name):
            result = transform_bib(rec, CNMARC if "cnmarc" in name else MARC21)
            if result.record is not None:
                records.append(result.record)
    odd = pymarc.Record(leader="00000cam  2200000 a 4500")
    odd.add_field(
        Field("001", data="x1"),
        Field("005", data=None),  # pymarc writes "None"
        Field("245", Indicators("1", "0"), [Subfield("a", "Ünïcödé 中文 ")]),
        Field("500", Indicators(" ", " "), []),  # indicators only
        Field("CAT", Indicators(" ", " "), [Subfield("a", "local")]),
    )
    records.append(odd)
    cnmarc = pymarc.Record(leader="00000nam0 2200000   450 ", to_unicode=False, force_utf8=True)
    cnmarc.add_field(Field("200", Indicators("1", " "), [Subfield("a", "现代")]))
    records.append(cnmarc)
    return records


def test_iso2709_writes_the_bytes_pymarc_writes_and_reads_back() -> None:
    """``iso2709`` stands in for ``Record.as_marc()``: the same bytes, which pymarc reads back
    to the same leader and fields."""
    for record in _records_to_write():
        expected = copy.deepcopy(record).as_marc()
        data = iso2709(record)
        assert data == expected
        assert data[-1:] == b"\x1d" and int(data[:5]) == len(data)
        [back] = pymarc.MARCReader(data, to_unicode=True, force_utf8=True)
        assert back is not None
        assert str(back.leader) == data[:24].decode()
        assert [f.tag for f in back.fields] == [f.tag for f in record.fields]
        for read, written in zip(back.fields, record.fields, strict=True):
            if written.control_field:
                assert read.data == f"{written.data}"
            else:
                assert (read.indicators, read.subfields) == (written.indicators, written.subfields)


def test_iso2709_leaves_to_pymarc_what_it_does_not_cover() -> None:
    """Not UTF-8, a tag pymarc rewrites, a value that is not text: pymarc's own bytes; text
    that does not encode: pymarc's own error, as the same ``unwritable_record`` reject."""
    latin = pymarc.Record(leader="00000cam  2200000   4500", to_unicode=False)
    latin.add_field(Field("245", Indicators("0", "0"), [Subfield("a", "café")]))
    short_tag = pymarc.Record(leader="00000cam  2200000 a 4500")
    short_tag.add_field(Field("AB", Indicators(" ", " "), [Subfield("a", "x")]))
    not_text = pymarc.Record(leader="00000cam  2200000 a 4500")
    not_text.add_field(Field("500", Indicators(" ", " "), [Subfield("a", None)]))  # type: ignore[arg-type]
    for record in (latin, short_tag, not_text):
        assert iso2709(record) == copy.deepcopy(record).as_marc()
    surrogate = pymarc.Record(leader="00000cam  2200000 a 4500")
    surrogate.add_field(Field("245", Indicators("0", "0"), [Subfield("a", "bad \udcff byte")]))
    with pytest.raises(UnicodeEncodeError) as pymarc_error:
        copy.deepcopy(surrogate).as_marc()
    assert marc_bytes(surrogate) == (
        b"",
        "unwritable_record",
        f"UnicodeEncodeError: {pymarc_error.value}",
    )
