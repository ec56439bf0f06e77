"""Validation report (JSON + HTML) and worklists (TSV)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pytest

from aleph2alma.validate.issues import Issue
from aleph2alma.validate.report import EntityCounts, ValidationReport, build_report, write_worklists
from aleph2alma.validate.rules import RULES, Threshold, apply_overrides

RUN = {
    "migration_id": "demo",
    "dag_id": "migration_test_load",
    "run_id": "manual__2026-03-01",
    "as_of": date(2026, 3, 1),
}
ENTITIES = [
    EntityCounts("bibs", 300, 297, 3, {"missing_title": 2, "invalid_leader": 1}),
    EntityCounts("items", 1000, 998, 2, {"orphan_item": 2}),
    EntityCounts("patrons", 200, 200, 0),
]


def issues() -> Iterator[Issue]:
    """A stream (a generator: consumed once, as from an IssueLog file)."""
    yield Issue("missing_title", "bibs", "BNU01:000000007", "no 200 field")
    yield Issue("missing_title", "bibs", "BNU02:000000002", "no 245 field")
    yield Issue("invalid_leader", "bibs", "BNU01:000000010", "LDR of 23 characters")
    yield Issue("legacy_gbk", "bibs", "BNU01:000000011", "200 converted from GBK: 北京师范大学")
    for n in range(12):
        yield Issue("missing_barcode", "items", f"0000000{n:02d}000010", "Z30_BARCODE is blank")
    yield Issue(
        "orphan_item", "items", "000000050000010", "Z30_HOL_DOC_NUMBER_X 000000999: no such holdings record"
    )
    yield Issue(
        "orphan_item", "items", "000000051000010", "Z30_HOL_DOC_NUMBER_X 000000998: no such holdings record"
    )
    yield Issue(
        "unmapped_location",
        "items",
        "000000052000010",
        "sub-library BNUCP collection CPZW is not in the locations tab",
    )
    yield Issue(
        "expired_patron_with_loans",
        "patrons",
        "BNU000000003",
        "registration expired 2025-01-01; 1 active loan(s)",
    )


def report(samples: int = 10) -> ValidationReport:
    return build_report(RUN, ENTITIES, issues(), RULES, samples=samples)


def test_json_fields() -> None:
    data = json.loads(report(samples=3).to_json())
    assert data["schema"] == "aleph2alma.validation-report/1"
    assert data["run"] == {
        "migration_id": "demo",
        "dag_id": "migration_test_load",
        "run_id": "manual__2026-03-01",
        "as_of": "2026-03-01",
    }
    assert data["status"] == "BLOCKED"
    assert data["blocking_rules"] == ["missing_barcode", "unmapped_location"]
    assert data["entities"][0] == {
        "entity": "bibs",
        "records_in": 300,
        "records_out": 297,
        "rejected": 3,
        "rejected_by_reason": {"invalid_leader": 1, "missing_title": 2},
        "balanced": True,
    }
    assert set(data["rules"]) == set(RULES)
    mb = data["rules"]["missing_barcode"]
    assert (mb["severity"], mb["count"], mb["percent"], mb["blocking"], mb["breached"]) == (
        "FIX",
        12,
        1.2,
        True,
        True,
    )
    assert mb["threshold"] == {"max_count": None, "max_percent": 0.5}
    assert [s["record_id"] for s in mb["samples"]] == [
        "000000000000010",
        "000000001000010",
        "000000002000010",
    ]
    orphan = data["rules"]["orphan_item"]
    assert (orphan["count"], orphan["percent"], orphan["blocking"]) == (2, 0.2, False)
    expired = data["rules"]["expired_patron_with_loans"]
    assert (expired["severity"], expired["count"], expired["percent"], expired["blocking"]) == (
        "REVIEW",
        1,
        0.5,
        False,
    )
    assert data["rules"]["invalid_utf8"]["count"] == 0
    assert data["issues_by_severity"] == {"FIX": 18, "REVIEW": 1, "INFO": 1}
    assert data["rules"]["legacy_gbk"]["samples"][0]["detail"] == "200 converted from GBK: 北京师范大学"


def test_rule_over_two_entities() -> None:
    stream = [
        Issue("invalid_utf8", "bibs", "BNU01:000000001", "500"),
        Issue("invalid_utf8", "holdings", "BNU60:000000001", "852"),
    ]
    entities = [EntityCounts("bibs", 300, 300, 0), EntityCounts("holdings", 100, 100, 0)]
    rule = json.loads(build_report(RUN, entities, stream, RULES).to_json())["rules"]["invalid_utf8"]
    assert (rule["count"], rule["by_entity"], rule["percent"]) == (2, {"bibs": 1, "holdings": 1}, 0.5)


def test_pass_when_thresholds_allow() -> None:
    rules = apply_overrides(
        {"rules": {"missing_barcode": {"max_count": 20}, "unmapped_location": {"max_count": 1}}}
    )
    result = build_report(RUN, ENTITIES, issues(), rules)
    assert result.status == "PASS"
    assert json.loads(result.to_json())["blocking_rules"] == []


def test_review_over_threshold_does_not_block() -> None:
    rules = apply_overrides(
        {
            "rules": {
                "missing_barcode": {"max_count": 20},
                "unmapped_location": {"max_count": 1},
                "expired_patron_with_loans": {"max_count": 0},
            }
        }
    )
    result = build_report(RUN, ENTITIES, issues(), rules)
    assert result.status == "PASS"
    assert [(b.rule, b.blocking) for b in result.breaches] == [("expired_patron_with_loans", False)]
    assert "Over threshold but not blocking" in result.to_html()


def test_given_breaches_are_used() -> None:
    assert build_report(RUN, ENTITIES, issues(), RULES, breaches=[]).status == "PASS"


def test_unknown_rule_in_stream() -> None:
    with pytest.raises(ValueError, match="'made_up'"):
        build_report(RUN, ENTITIES, [Issue("made_up", "items", "1")], RULES)


class _Checker(HTMLParser):
    """Collects text and checks that non-void elements nest properly."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "rect"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []
        self.ids: set[str] = set()
        self.svgs = 0
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(v for k, v in attrs if k == "id" and v)
        self.svgs += tag == "svg"
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.svgs += tag == "svg"

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Checker:
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    return checker


def test_html_blocked_banner_counts_and_charts() -> None:
    html = report().to_html()
    assert html.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in html
    page = _parse(html)
    text = " ".join("".join(page.text).split())
    assert "BLOCKED" in text and "missing_barcode: 12 of 1,000 items (1.20%), allowed ≤ 0.5%" in text
    assert {"status", "entities", "rules", "rule-missing_barcode", "rule-legacy_gbk"} <= page.ids
    assert "rule-invalid_utf8" not in page.ids  # not hit: only in the compact list
    assert page.svgs == 2
    assert "北京师范大学" in html  # Chinese passes through unescaped
    assert (
        "000000050000010" in text and "… 2 more in the worklist missing_barcode.tsv" in text
    )  # 10 samples of 12
    assert RULES["orphan_item"].description in text
    for severity, colour in (("FIX", "#c62828"), ("REVIEW", "#ef8f00"), ("INFO", "#1565c0")):
        assert f'fill="{colour}"' in html, severity
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained


def test_html_pass_and_escaping() -> None:
    nasty = [Issue("missing_barcode", "items", "<script>x</script>", 'a "quoted" & <b>bold</b>')]
    html = build_report(
        RUN,
        [EntityCounts("items", 1000, 1000, 0)],
        nasty,
        apply_overrides({"rules": {"missing_barcode": {"max_count": 5}}}),
    ).to_html()
    page = _parse(html)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "PASS" in " ".join(page.text)


def test_html_unbalanced_entity_is_flagged() -> None:
    html = build_report(RUN, [EntityCounts("items", 10, 8, 1)], [], RULES).to_html()
    assert "off by 1" in html


def test_worklists(tmp_path: Path) -> None:
    stream = [
        Issue("duplicate_barcode", "items", "000000003000010", "barcode 7 shared by 2 items"),
        Issue("duplicate_barcode", "items", "000000001000010", "barcode 7 shared by 2 items"),
        Issue("legacy_gbk", "bibs", "BNU01:000000011", "200\tconverted\nfrom GBK: 北京"),
        Issue("orphan_item", "items", "000000002000010", "no HOL"),
    ]
    paths = write_worklists(iter(stream), RULES, tmp_path)
    assert set(paths) == {"duplicate_barcode", "legacy_gbk", "orphan_item"}
    assert paths["duplicate_barcode"] == tmp_path / "duplicate_barcode.tsv"
    assert paths["duplicate_barcode"].read_text(encoding="utf-8").splitlines() == [
        "record_id\tentity\tseverity\tdetail",
        "000000001000010\titems\tFIX\tbarcode 7 shared by 2 items",
        "000000003000010\titems\tFIX\tbarcode 7 shared by 2 items",
    ]
    assert (
        paths["legacy_gbk"].read_text(encoding="utf-8").splitlines()[1]
        == "BNU01:000000011\tbibs\tINFO\t200 converted from GBK: 北京"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "duplicate_barcode.tsv",
        "legacy_gbk.tsv",
        "orphan_item.tsv",
    ]


def test_worklists_spill_and_merge(tmp_path: Path) -> None:
    ids = [f"{(n * 7919) % 1000:09d}000010" for n in range(1000)]
    stream = (
        Issue("missing_barcode" if n % 3 else "orphan_item", "items", rid, "d") for n, rid in enumerate(ids)
    )
    paths = write_worklists(stream, RULES, tmp_path, buffer_rows=64)
    rows = [
        line.split("\t")[0] for line in paths["missing_barcode"].read_text(encoding="utf-8").splitlines()[1:]
    ]
    orphans = [
        line.split("\t")[0] for line in paths["orphan_item"].read_text(encoding="utf-8").splitlines()[1:]
    ]
    assert rows == sorted(rows) and orphans == sorted(orphans)
    assert sorted(rows + orphans) == sorted(ids)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # runs cleaned up


def test_worklist_unknown_rule(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'made_up'"):
        write_worklists([Issue("made_up", "items", "1")], RULES, tmp_path)


def test_threshold_text() -> None:
    assert Threshold(max_count=0).describe() == "≤ 0"
    assert Threshold(max_count=3, max_percent=0.5).describe() == "≤ 3 and ≤ 0.5%"
