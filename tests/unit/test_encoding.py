"""Encoding repair: what counts as GBK, what is lost, and how it is reported."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pymarc import Field, Indicators, Subfield

from aleph2alma.aleph.alephseq import read_alephseq
from aleph2alma.marc.encoding import decide, has_undecoded, invalid_utf8_bytes, repair_fields, repair_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "marc"
GBK_TITLE = "北京师范大学学报（社会科学版）"


def _escaped(raw: bytes) -> str:
    """Text as the ALEPHSEQ reader holds a line that is not UTF-8."""
    return raw.decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    ("raw", "text", "outcome"),
    [
        pytest.param("教育学原理".encode(), "教育学原理", "utf8", id="utf8-chinese"),
        pytest.param(b"plain ascii", "plain ascii", "utf8", id="ascii"),
        pytest.param(GBK_TITLE.encode("gbk"), GBK_TITLE, "gbk", id="gbk-title"),
        pytest.param("课程·教材·教法".encode("gbk"), "课程·教材·教法", "gbk", id="gbk-middle-dot"),
        pytest.param("中国".encode("gb2312"), "中国", "gbk", id="gb2312"),
        pytest.param(b"\xff\xfe\x80", "\ufffd\ufffd\ufffd", "invalid", id="ff-fe-80-is-not-gbk"),
        pytest.param(b"\x80", "\ufffd", "invalid", id="lone-0x80"),
        pytest.param(
            "本书为教育部".encode() + b"\x80", "本书为教育部\ufffd", "invalid", id="utf8-with-stray-byte"
        ),
        pytest.param(b"\xa1\xa1", None, "gbk", id="gbk-ideographic-space"),
        pytest.param(b"\xaa\xa1", "\ufffd\ufffd", "invalid", id="gbk-user-defined-area"),
    ],
)
def test_repair_text(raw: bytes, text: str | None, outcome: str) -> None:
    got_text, got_outcome = repair_text(raw)
    assert got_outcome == outcome
    if text is not None:
        assert got_text == text


def test_utf8_with_stray_bytes_is_never_taken_for_gbk() -> None:
    # UTF-8 Chinese is very often also a valid GBK byte sequence: the guard rules must catch it.
    titles = ["教育学原理", "中国现代文学", "心理学报", "北京师范大学出版社", "课程与教学论", "学前教育研究"]
    for title in titles:
        for stray in (b"\x80", b"\xa1", b"\xb7", b"\xd6", b"\xe9"):
            for cut in range(0, len(title.encode()) + 1, 3):
                raw = title.encode()[:cut] + stray + title.encode()[cut:]
                assert repair_text(raw)[1] == "invalid", raw


def test_invalid_utf8_bytes_lists_only_the_bad_ones() -> None:
    assert invalid_utf8_bytes("中".encode() + b"\xff\xfe\x80" + b"ok") == b"\xff\xfe\x80"
    assert has_undecoded(_escaped(b"ok\xff"))
    assert not has_undecoded("中文")


def test_repair_fields_converts_gbk_and_reports_one_issue() -> None:
    title = Field(
        "200",
        Indicators("1", " "),
        [
            Subfield("a", _escaped("教育学原理".encode("gbk"))),
            Subfield("f", _escaped("王伟著".encode("gbk"))),
        ],
    )
    clean = Field("210", Indicators(" ", " "), [Subfield("a", "北京")])
    issues = repair_fields([title, clean], [(7, "200")], entity="bibs", record_id="BNU01:000000001")
    assert [(i.rule, i.record_id, i.detail) for i in issues] == [
        ("legacy_gbk", "BNU01:000000001", "200: converted from GBK")
    ]
    assert title.subfields == [Subfield("a", "教育学原理"), Subfield("f", "王伟著")]
    assert clean.subfields == [Subfield("a", "北京")]


def test_repair_fields_reports_invalid_bytes_with_hex_and_line() -> None:
    note = Field("504", Indicators(" ", " "), [Subfield("a", _escaped(b"\xff\xfe\x80Includes index."))])
    control = Field("008", data=_escaped(b"240101s2024\xff"))
    issues = repair_fields(
        [control, note], [(4, "008"), (9, "504")], entity="bibs", record_id="BNU02:000000001"
    )
    assert len(issues) == 1
    assert issues[0].rule == "invalid_utf8"
    assert issues[0].detail == "008 line 4: bytes ff; 504 line 9: bytes fffe80"
    assert note.subfields[0].value == "\ufffd\ufffd\ufffdIncludes index."
    assert control.data == "240101s2024\ufffd"


def test_gbk_fixture_through_the_alephseq_reader() -> None:
    [rec] = read_alephseq(FIXTURES / "gbk_title.seq")
    assert rec.encoding_errors == [(7, "200")]
    issues = repair_fields(rec.record.fields, rec.encoding_errors, entity="bibs", record_id="BNU01:000000001")
    assert [i.rule for i in issues] == ["legacy_gbk"]
    assert rec.record["200"]["a"] == "教育学原理"
    assert rec.record["200"]["f"] == "王伟著"


# --- GBK or Latin-1 (issue 8, item 3) -----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "prefer", "text", "outcome", "ambiguous"),
    [
        pytest.param("execução".encode("latin-1"), "gbk", "execução", "latin1", False, id="execucao-not-gbk"),
        pytest.param("São Paulo".encode("latin-1"), "gbk", "São Paulo", "latin1", False, id="sao-paulo"),
        pytest.param(
            "Müller, Jürgen".encode("cp1252"), "gbk", "Müller, Jürgen", "latin1", False, id="umlauts"
        ),
        pytest.param(
            "Introduction à la littérature".encode("latin-1"),
            "gbk",
            "Introduction à la littérature",
            "latin1",
            False,
            id="french-a-alone",
        ),
        pytest.param(
            "don’t — “quoted”".encode("cp1252"), "gbk", "don’t — “quoted”", "latin1", False, id="cp1252"
        ),
        pytest.param("Preço: 25 €".encode("cp1252"), "gbk", "Preço: 25 €", "latin1", False, id="euro"),
        pytest.param("中文".encode("gbk"), "latin1", "中文", "gbk", False, id="gbk-reads-as-OEDI-alone"),
        pytest.param(GBK_TITLE.encode("gbk"), "latin1", GBK_TITLE, "gbk", False, id="gbk-title-in-marc21"),
        pytest.param(
            "Windows操作系统".encode("gbk"), "latin1", "Windows操作系统", "gbk", False, id="gbk-mixed"
        ),
        pytest.param("ção".encode("latin-1"), "gbk", "玢o", "gbk", True, id="ambiguous-cnmarc-prefers-gbk"),
        pytest.param(
            "ção".encode("latin-1"), "latin1", "ção", "latin1", True, id="ambiguous-marc21-prefers-latin"
        ),
        pytest.param(
            b"\xff\xfe\x80Includes index.", "latin1", None, "invalid", False, id="euro-glued-to-word"
        ),
        pytest.param(b"240101s2024\xff", "latin1", None, "invalid", False, id="letter-glued-to-digits"),
    ],
)
def test_decide_gbk_or_latin1_by_plausibility(
    raw: bytes, prefer: Literal["gbk", "latin1"], text: str | None, outcome: str, ambiguous: bool
) -> None:
    decision = decide(raw, prefer)
    assert (decision.outcome, decision.ambiguous) == (outcome, ambiguous)
    if text is not None:
        assert decision.text == text


def test_latin1_alephseq_line_is_converted_not_made_chinese(tmp_path: Path) -> None:
    # The issue's case: Latin-1 text in an ALEPHSEQ line was "converted from GBK" into 'execu玢o'.
    seq = tmp_path / "latin1.seq"
    seq.write_bytes(
        b"000000042 FMT   L BK\n"
        b"000000042 LDR   L ^^^^^nam^^2200000^a^4500\n"
        b"000000042 24510 L $$aLei de execu\xe7\xe3o penal$$cS\xe3o Paulo.\n"
        b"000000042 650 4 L $$a\xe7\xe3o\n"
    )
    [rec] = read_alephseq(seq)
    issues = repair_fields(
        rec.record.fields, rec.encoding_errors, entity="bibs", record_id="USP01:000000042", prefer="latin1"
    )
    assert rec.record["245"]["a"] == "Lei de execução penal"
    assert rec.record["245"]["c"] == "São Paulo."
    assert rec.record["650"]["a"] == "ção"
    by_rule = {i.rule: i for i in issues}
    assert set(by_rule) == {"legacy_latin1", "encoding_ambiguous"}
    assert (
        by_rule["legacy_latin1"].detail
        == "245: converted from Latin-1/CP1252; 650: converted from Latin-1/CP1252"
    )
    ambiguous = by_rule["encoding_ambiguous"]
    assert ambiguous.record_id == "USP01:000000042"
    assert ambiguous.detail.startswith("650 line 4: read as Latin-1/CP1252 'ção', not GBK '玢o'")
