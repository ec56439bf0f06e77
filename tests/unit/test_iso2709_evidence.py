"""ISO 2709 input read by what it is (issue 8, items 1, 2 and 6).

The character set is decided per record from evidence (MARC 21 leader/09, loc.gov/marc/
bibliographic/bdleader.html; UNIMARC Bibliographic field 100 $a/26-29; the bytes), and a
directory that disagrees with the field terminators (MARC 21 "Record Structure",
loc.gov/marc/specifications/specrecstruc.html) is rebuilt or the record rejected.
Records are built here byte by byte, as real exports write them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pymarc
import pytest

from aleph2alma.marc.bibs import BibOptions, transform_bib, transform_bibs
from aleph2alma.marc.readers import read_records
from aleph2alma.rejects import RejectLog
from aleph2alma.validate.issues import IssueLog, read_issues

FT, RT, SF = b"\x1e", b"\x1d", b"\x1f"


def iso(leader: str, fields: list[tuple[str, bytes]], *, count=len) -> bytes:
    """One ISO 2709 record; ``count`` measures a field for its directory's lengths and offsets
    (``len``, bytes, is right; counting decoded characters is the real-world mistake)."""
    directory, data, offset = b"", b"", 0
    for tag, body in fields:
        body += FT
        directory += b"%s%04d%05d" % (tag.encode(), count(body), offset)
        data += body
        offset += count(body)
    base = 24 + len(directory) + 1
    total = base + len(data) + 1
    return f"{total:05d}{leader[5:12]}{base:05d}{leader[17:]}".encode() + directory + FT + data + RT


def df(ind: str, *subfields: tuple[str, str | bytes], encoding: str = "utf-8") -> bytes:
    out = ind.encode()
    for code, value in subfields:
        out += SF + code.encode() + (value if isinstance(value, bytes) else value.encode(encoding))
    return out


MARC21_LEADER = "00000nam  2200000 i 4500"  # leader/09 blank
CNMARC_100 = "20240115d2024    em y0chiy50      ea"  # 100 $a/26-29 = "50  "


def _read(tmp_path: Path, *records: bytes, library: str = "USP01") -> tuple[list, list[dict]]:
    path = tmp_path / "in.mrc"
    path.write_bytes(b"".join(records))
    sink = io.StringIO()
    recs = list(read_records(path, "iso2709", rejects=RejectLog(sink), library=library))
    return recs, [json.loads(line) for line in sink.getvalue().splitlines()]


def _notes(rec) -> dict[str, str]:
    return dict(rec.notes)


def test_utf8_with_blank_leader_09_is_read_as_utf8(tmp_path: Path) -> None:
    # 38 of 41 real records of one Aleph site: UTF-8 bytes, leader/09 blank.
    record = iso(
        MARC21_LEADER,
        [
            ("001", b"000012345"),
            ("245", df("10", ("a", "ECONOMIA POLÍTICA :"), ("b", "Ἱστορίαι ; История"))),
        ],
    )
    [rec], rejects = _read(tmp_path, record)
    assert rejects == []
    assert rec.record["245"]["a"] == "ECONOMIA POLÍTICA :"
    assert rec.record["245"]["b"] == "Ἱστορίαι ; История"
    assert "valid multi-byte UTF-8" in _notes(rec)["encoding_evidence"]
    assert "encoding_conflict" not in _notes(rec)


def test_the_projects_own_cnmarc_output_reads_back(tmp_path: Path) -> None:
    source = pymarc.Record(leader="00000nam0 2200000   450 ")
    source.add_field(
        pymarc.Field("001", data="000000007"),
        pymarc.Field("100", pymarc.Indicators(" ", " "), [pymarc.Subfield("a", CNMARC_100)]),
        pymarc.Field("200", pymarc.Indicators("1", " "), [pymarc.Subfield("a", "教育心理学")]),
    )
    from aleph2alma.aleph.alephseq import AlephSeqRecord

    result = transform_bib(AlephSeqRecord("000000007", source), BibOptions("BNU01", "CNMARC"))
    assert result.record is not None
    assert str(result.record.leader)[9] == " "  # CNMARC keeps leader/09; 100 says UTF-8
    [rec], rejects = _read(tmp_path, result.record.as_marc())
    assert rejects == []
    assert rec.record["200"]["a"] == "教育心理学"
    assert "100 $a/26-29 '50  ' (ISO 10646 (Unicode))" in _notes(rec)["encoding_evidence"]


def test_marc8_when_nothing_says_otherwise(tmp_path: Path) -> None:
    # MARC-8 (ANSEL): the combining acute 0xE2 comes before its base letter.
    record = iso(MARC21_LEADER, [("001", b"1"), ("245", df("10", ("a", b"Pol\xe2itica econ\xe2omica")))])
    [rec], _ = _read(tmp_path, record)
    assert rec.record["245"]["a"] == "Política económica"
    assert (
        _notes(rec)["encoding_evidence"]
        == "read as MARC-8: leader/09 blank and nothing says otherwise: MARC-8"
    )


def test_ascii_record_needs_no_evidence(tmp_path: Path) -> None:
    [rec], _ = _read(tmp_path, iso(MARC21_LEADER, [("001", b"1"), ("245", df("10", ("a", "Plain title")))]))
    assert rec.notes == []


@pytest.mark.parametrize(
    ("leader", "fields", "conflict"),
    [
        pytest.param(
            "00000nam a2200000   450 ",
            [
                ("100", df("  ", ("a", "20240115d2024    em y0chiy0103    ea"))),
                ("200", df("1 ", ("a", "心理学"))),
            ],
            "100 $a/26-29 '0103' (ISO 646 IRV (basic Latin)) declares another character set",
            id="leader-a-but-100-declares-iso646",
        ),
        pytest.param(
            MARC21_LEADER,
            [("066", df("  ", ("c", "$1"))), ("245", df("10", ("a", "Économie")))],
            "066 (character sets present, MARC-8) in a record whose bytes are UTF-8",
            id="utf8-bytes-with-066",
        ),
        pytest.param(
            "00000nam a2200000 i 4500",
            [("245", df("10", ("a", b"\x1b(BAbc")))],
            "ESC bytes (MARC-8 escape sequences) in a record that says UTF-8",
            id="leader-a-with-marc8-escape",
        ),
    ],
)
def test_contradicting_evidence_is_flagged(
    tmp_path: Path, leader: str, fields: list[tuple[str, bytes]], conflict: str
) -> None:
    [rec], _ = _read(tmp_path, iso(leader, [("001", b"000000001"), *fields]))
    assert conflict in _notes(rec)["encoding_conflict"]


def test_conflict_and_evidence_become_issues_with_the_record_id(tmp_path: Path) -> None:
    record = iso(
        MARC21_LEADER,
        [("001", b"000000042"), ("066", df("  ", ("c", "$1"))), ("245", df("10", ("a", "Économie")))],
    )
    out, iss = io.BytesIO(), io.StringIO()
    recs, _ = _read(tmp_path, record)
    transform_bibs(recs, BibOptions("USP01", "MARC21"), out, RejectLog(), IssueLog(iss))
    issues = {i.rule: i for i in read_issues(iss.getvalue().splitlines())}
    assert issues["encoding_conflict"].record_id == "USP01:000000042"
    assert issues["encoding_evidence"].record_id == "USP01:000000042"
    [written] = pymarc.MARCReader(io.BytesIO(out.getvalue()), to_unicode=True)
    assert written["245"]["a"] == "Économie"


# --- directory against terminators (item 2) -----------------------------------------------


def _chars(body: bytes) -> int:
    return len(body.decode("utf-8"))


def test_directory_counted_in_characters_is_rebuilt(tmp_path: Path) -> None:
    fields = [
        ("001", b"000000077"),
        ("100", df("1 ", ("a", "Jennings, Eric T."))),
        (
            "245",
            df(
                "10",
                ("a", "Imperial heights : Dalat and the making and undoing of French Indochina /"),
                ("c", "Eric T. Jennings."),
            ),
        ),
        ("260", df("  ", ("a", "Berkeley :"), ("b", "University of California Press,"), ("c", "c2011."))),
        ("650", df(" 0", ("a", "Đà Lạt (Vietnam)"), ("x", "História."))),
        ("651", df(" 0", ("a", "Indochine française"))),
    ]
    # The 650 has 4 multi-byte characters: entries after it point 4+ bytes short.
    broken = iso("00000nam a2200000 i 4500", fields, count=_chars)
    [rec], rejects = _read(tmp_path, broken)
    assert rejects == []
    assert rec.record["245"]["c"] == "Eric T. Jennings."
    assert rec.record["650"]["a"] == "Đà Lạt (Vietnam)"
    assert rec.record["651"]["a"] == "Indochine française"
    assert rec.record["260"].indicators == pymarc.Indicators(" ", " ")
    detail = _notes(rec)["directory_rebuilt"]
    assert "650 at" in detail and "rebuilt from the terminators" in detail
    result = transform_bib(rec, BibOptions("BNU02", "MARC21"))
    [issue] = [i for i in result.issues if i.rule == "directory_rebuilt"]
    assert issue.record_id == "BNU02:000000077"


def test_pymarc_alone_would_cut_those_fields(tmp_path: Path) -> None:
    """The defect the rebuild removes: pymarc trusts the directory."""
    fields = [
        ("001", b"1"),
        ("100", df("1 ", ("a", "Đà Lạt"))),
        ("245", df("10", ("c", "Eric T. Jennings."))),
    ]
    data = iso("00000nam a2200000 i 4500", fields, count=_chars)
    try:  # either the fields come out cut, or their bytes shifted into the indicators
        record = pymarc.Record(data, to_unicode=True)
    except UnicodeDecodeError:
        return
    assert record["245"]["c"] != "Eric T. Jennings."


def test_directory_that_cannot_be_rebuilt_is_rejected_with_its_reason(tmp_path: Path) -> None:
    good = iso(MARC21_LEADER, [("001", b"1"), ("245", df("10", ("a", "First")))])
    # Two entries, one field: a terminator is missing, nothing says where the 500 starts.
    bad = bytearray(
        iso(
            MARC21_LEADER,
            [("001", b"2"), ("245", df("10", ("a", "Second"))), ("500", df("  ", ("a", "Note")))],
        )
    )
    cut = bad.index(b"Second") + len(b"Second")
    del bad[cut]  # the 245's terminator
    bad[:5] = b"%05d" % len(bad)
    recs, rejects = _read(tmp_path, good, bytes(bad))
    assert [r.sysno for r in recs] == ["1"]
    [reject] = rejects
    assert reject["reason"] == "directory_mismatch"
    assert reject["record_id"] == f"USP01:in.mrc@{len(good)}"  # file and byte offset: no 001 to trust
    assert f"byte offset {len(good)}" in reject["detail"]
    assert "3 entries" in reject["detail"] and "2 terminated fields" in reject["detail"]


# --- pymarc's warnings (item 6) -----------------------------------------------------------


def test_pymarc_warnings_become_notes_not_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 0xFC is no character of MARC-8's ANSEL set: pymarc writes "Unable to parse …" to stderr.
    record = iso(MARC21_LEADER, [("001", b"000000005"), ("245", df("10", ("a", b"Bad \xfc byte")))])
    [rec], _ = _read(tmp_path, record)
    assert capsys.readouterr().err == ""
    assert "Unable to parse character 0xfc" in _notes(rec)["marc_warning"]


# --- smaller record defects (item 6) ------------------------------------------------------


def _delivered(rec, library: str = "USP01"):
    result = transform_bib(rec, BibOptions(library, "MARC21"))
    assert result.record is not None, result.reject
    written = pymarc.Record(result.record.as_marc(), to_unicode=True, force_utf8=True)
    return written, {i.rule: i.detail for i in result.issues}


def test_a_data_field_with_no_subfields_is_dropped_with_an_issue(tmp_path: Path) -> None:
    record = iso(MARC21_LEADER, [("001", b"9"), ("245", df("10", ("a", "Title"))), ("500", b"  ")])
    [rec], _ = _read(tmp_path, record)
    written, issues = _delivered(rec)
    assert written.get("500") is None
    assert "500: no subfields; field dropped" in issues["invalid_indicators"]


def test_esc_never_reaches_the_utf8_output(tmp_path: Path) -> None:
    record = iso("00000nam a2200000 i 4500", [("001", b"9"), ("245", df("10", ("a", b"Ti\x1b(Btle")))])
    [rec], _ = _read(tmp_path, record)
    written, issues = _delivered(rec)
    assert b"\x1b" not in written.as_marc() and written["245"]["a"] == "Ti(Btle"
    assert "245 $a: control characters U+001B removed" in issues["invalid_indicators"]


def test_066_goes_once_the_record_is_unicode(tmp_path: Path) -> None:
    record = iso(
        MARC21_LEADER,
        [("001", b"9"), ("066", df("  ", ("c", "$1"))), ("245", df("10", ("a", b"Pol\xe2itica")))],
    )
    [rec], _ = _read(tmp_path, record)
    assert rec.record.get("066") is not None
    written, _ = _delivered(rec)
    assert written.get("066") is None
    assert written["245"]["a"] == "Política" and str(written.leader)[9] == "a"


def test_marcxml_leader_after_the_fields_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "late.xml"
    path.write_text(
        '<collection xmlns="http://www.loc.gov/MARC21/slim"><record>'
        '<controlfield tag="001">42</controlfield>'
        '<datafield tag="245" ind1="0" ind2="0"><subfield code="a">T</subfield></datafield>'
        "<leader>00000nam a2200000 i 4500</leader></record></collection>",
        encoding="utf-8",
    )
    [rec] = read_records(path, rejects=RejectLog(), library="X")
    assert rec.has_leader and str(rec.record.leader) == "00000nam a2200000 i 4500"
    assert transform_bib(rec, BibOptions("X", "MARC21")).reject is None
