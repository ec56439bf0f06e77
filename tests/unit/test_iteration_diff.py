"""Iteration diff of the fix cycle: per rule fixed / new / still open, as JSON, HTML and worklists."""

from __future__ import annotations

import json
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from aleph2alma.fixes import IterationDiff, diff_iterations
from aleph2alma.validate.issues import Issue
from aleph2alma.validate.rules import RULES


def iteration_1() -> Iterator[Issue]:
    """Streams (generators): the diff must read each once."""
    yield Issue(
        "unmapped_location",
        "items",
        "000000017000050",
        "sub-library BNUZG collection LSCK is not in the locations tab",
    )
    yield Issue(
        "unmapped_location",
        "items",
        "000000052000010",
        "sub-library BNUCP collection CPZW is not in the locations tab",
    )
    yield Issue(
        "unmapped_item_status", "items", "000000093000020", "item status 19 is not in the item-policy tab"
    )
    yield Issue(
        "unmapped_item_status", "items", "000000232000070", "item status 99 is not in the item-policy tab"
    )
    yield Issue("missing_barcode", "items", "000000300000010", "Z30_BARCODE is blank")
    yield Issue("invalid_utf8", "bibs", "BNU01:000000007", "field 300")
    yield Issue("invalid_utf8", "bibs", "BNU01:000000007", "field 500")  # same record twice: one record
    yield Issue("retired_rule", "items", "000000001000010", "a rule since removed")


def iteration_2() -> Iterator[Issue]:
    yield Issue(
        "unmapped_location",
        "items",
        "000000052000010",
        "sub-library BNUCP collection CPZW is not in the locations tab",
    )
    yield Issue("missing_barcode", "items", "000000300000010", "Z30_BARCODE is blank")
    yield Issue("missing_barcode", "items", "000000301000010", "Z30_BARCODE is blank\tnew")
    yield Issue("invalid_utf8", "holdings", "BNU60:000004711", "field 852")


def diff() -> IterationDiff:
    return diff_iterations(iteration_1(), iteration_2(), RULES, labels=("iteration 1", "iteration 2"))


EXPECTED = {  # rule: (severity, fixed, new, still open)
    "invalid_utf8": ("FIX", 1, 1, 0),
    "missing_barcode": ("FIX", 0, 1, 1),
    "unmapped_location": ("FIX", 1, 0, 1),
    "unmapped_item_status": ("FIX", 2, 0, 0),
    "retired_rule": ("UNKNOWN", 1, 0, 0),
}


@pytest.mark.parametrize("rule", EXPECTED, ids=str)
def test_counts_per_rule(rule: str) -> None:
    r = next(r for r in diff().rules if r.rule == rule)
    assert (r.severity, r.fixed, r.new, r.still_open) == EXPECTED[rule]
    assert (r.fixed, r.new, r.still_open) == (len(r.fixed_ids), len(r.new_ids), len(r.open_ids))
    assert r.previous == r.fixed + r.still_open and r.current == r.new + r.still_open


def test_ids_order_and_totals() -> None:
    d = diff()
    assert [r.rule for r in d.rules] == [
        "invalid_utf8",
        "missing_barcode",
        "unmapped_location",
        "unmapped_item_status",
        "retired_rule",
    ]  # registry order, unknown rules last
    loc = next(r for r in d.rules if r.rule == "unmapped_location")
    assert (loc.fixed_ids, loc.open_ids, loc.new_ids) == (["000000017000050"], ["000000052000010"], [])
    assert d.totals == {"previous": 7, "current": 4, "fixed": 5, "new": 2, "still_open": 2}
    assert d.status == "NEW ISSUES"


@pytest.mark.parametrize(
    ("previous", "current", "status"),
    [
        ([], [], "NO NEW ISSUES"),
        ([Issue("missing_barcode", "items", "1")], [], "NO NEW ISSUES"),
        ([], [Issue("missing_barcode", "items", "1")], "NEW ISSUES"),
    ],
    ids=["nothing", "all-fixed", "all-new"],
)
def test_status(previous: list[Issue], current: list[Issue], status: str) -> None:
    assert diff_iterations(previous, current, RULES).status == status


def test_json() -> None:
    data = json.loads(diff().to_json())
    assert data["schema"] == "aleph2alma.iteration-diff/1"
    assert (data["previous"], data["current"], data["status"]) == ("iteration 1", "iteration 2", "NEW ISSUES")
    assert data["rules"]["missing_barcode"] == {
        "rule": "missing_barcode",
        "severity": "FIX",
        "entity": "items",
        "previous": 1,
        "current": 2,
        "fixed": 0,
        "new": 1,
        "still_open": 1,
        "fixed_ids": [],
        "new_ids": ["000000301000010"],
        "open_ids": ["000000300000010"],
    }


def test_worklists(tmp_path: Path) -> None:
    written = diff().write_worklists(tmp_path / "worklists")
    assert sorted(written) == [
        "invalid_utf8",
        "missing_barcode",
        "unmapped_location",
    ]  # rules with nothing open: none
    lines = written["missing_barcode"].read_text(encoding="utf-8").splitlines()
    assert lines == [
        "record_id\tentity\tseverity\tstatus\tdetail",
        "000000301000010\titems\tFIX\tnew\tZ30_BARCODE is blank new",
        "000000300000010\titems\tFIX\tstill_open\tZ30_BARCODE is blank",
    ]
    utf8 = written["invalid_utf8"].read_text(encoding="utf-8").splitlines()
    assert utf8[1:] == ["BNU60:000004711\tholdings\tFIX\tnew\tfield 852"]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.ids: set[str] = set()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(v for k, v in attrs if k == "id" and v)
        if tag not in ("meta", "br", "rect"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("meta", "br", "rect"):
            return
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html() -> None:
    html = diff().to_html()
    page = _Page()
    page.feed(html)
    page.close()
    assert page.errors == [] and page.stack == []
    text = " ".join("".join(page.text).split())
    assert "NEW ISSUES — 5 fixed · 2 new · 2 still open (7 → 4 records with issues)" in text
    assert {"status", "rules", "rule-unmapped_location", "rule-retired_rule"} <= page.ids
    assert html.count("<svg") == 1 and 'fill="#43a047"' in html and 'fill="#c62828"' in html
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_html_escapes_ids() -> None:
    html = diff_iterations([], [Issue("missing_barcode", "items", "<script>")], RULES).to_html()
    assert "<script>" not in html and "&lt;script&gt;" in html
