"""Encoding repair: what counts as GBK, what is lost, and how it is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymarc import Field, Indicators, Subfield

from aleph2alma.aleph.alephseq import read_alephseq
from aleph2alma.marc.encoding import has_undecoded, invalid_utf8_bytes, repair_fields, repair_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "marc"
GBK_TITLE = "北京师范大学学报（社会科学版）"


def _escaped(raw: bytes) -> str:
    """Text as the ALEPHSEQ reader holds a line that is not UTF-8."""
    return raw.decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(("raw", "text", "outcome"), [
    pytest.param("教育学原理".encode(), "教育学原理", "utf8", id="utf8-chinese"),
    pytest.param(b"plain ascii", "plain ascii", "utf8", id="ascii"),
    pytest.param(GBK_TITLE.encode("gbk"), GBK_TITLE, "gbk", id="gbk-title"),
    pytest.param("课程·教材·教法".encode("gbk"), "课程·教材·教法", "gbk", id="gbk-middle-dot"),
    pytest.param("中国".encode("gb2312"), "中国", "gbk", id="gb2312"),
    pytest.param(b"\xff\xfe\x80", "\ufffd\ufffd\ufffd", "invalid", id="ff-fe-80-is-not-gbk"),
    pytest.param(b"\x80", "\ufffd", "invalid", id="lone-0x80"),
    pytest.param("本书为教育部".encode() + b"\x80", "本书为教育部\ufffd", "invalid", id="utf8-with-stray-byte"),
    pytest.param(b"\xa1\xa1", None, "gbk", id="gbk-ideographic-space"),
    pytest.param(b"\xaa\xa1", "\ufffd\ufffd", "invalid", id="gbk-user-defined-area"),
])
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
    title = Field("200", Indicators("1", " "), [Subfield("a", _escaped("教育学原理".encode("gbk"))),
                                                 Subfield("f", _escaped("王伟著".encode("gbk")))])
    clean = Field("210", Indicators(" ", " "), [Subfield("a", "北京")])
    issues = repair_fields([title, clean], [(7, "200")], entity="bibs", record_id="BNU01:000000001")
    assert [(i.rule, i.record_id, i.detail) for i in issues] == [
        ("legacy_gbk", "BNU01:000000001", "200: converted from GBK")]
    assert title.subfields == [Subfield("a", "教育学原理"), Subfield("f", "王伟著")]
    assert clean.subfields == [Subfield("a", "北京")]


def test_repair_fields_reports_invalid_bytes_with_hex_and_line() -> None:
    note = Field("504", Indicators(" ", " "), [Subfield("a", _escaped(b"\xff\xfe\x80Includes index."))])
    control = Field("008", data=_escaped(b"240101s2024\xff"))
    issues = repair_fields([control, note], [(4, "008"), (9, "504")], entity="bibs", record_id="BNU02:000000001")
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
