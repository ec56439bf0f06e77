"""Reconciliation: the funnel's arithmetic, where Alma's side comes from, and the sample checked in Alma."""

from __future__ import annotations

import json
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from aleph2alma.alma.statistics import AreaStatistics, StatisticsWorkbook, write_statistics_workbook
from aleph2alma.alma.statistics import read_statistics_workbook as read_workbook
from aleph2alma.reconcile import Reconciliation, reconcile
from aleph2alma.reconcile.reconcile import API_LOAN_DATE_NOTE, draw_sample, is_private, same_value

RUN = {
    "migration_id": "demo",
    "dag_id": "migration_test_load",
    "run_id": "manual__2026-03-01",
    "as_of": "2026-03-01",
}

ITEM_IDS = [f"{n:09d}000010" for n in range(1, 101)]
PATRON_IDS = [f"BNU{n:09d}" for n in range(1, 41)]


def delivered_item(record_id: str) -> dict[str, Any]:
    n = int(record_id[:9])
    return {
        "barcode": f"3000{n:06d}",
        "library": "BNUZG",
        "location": "ZWSK",
        "item_policy": "LOAN_30",
        "call_number": "I247.5/123",
    }


def delivered_patron(record_id: str) -> dict[str, Any]:
    return {
        "primary_id": record_id.lower(),
        "user_group": "UG",
        "expiry_date": "2027-07-01",
        "last_name": "张",
        "first_name": "三",
    }


def expected(entity: str, record_id: str) -> Mapping[str, Any]:
    return delivered_item(record_id) if entity == "items" else delivered_patron(record_id)


class FakeAlma:
    """Alma as the fetch callable sees it: the delivered records, as Alma's API shapes them."""

    def __init__(
        self,
        broken: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
        gone: set[tuple[str, str]] | None = None,
    ) -> None:
        self.broken, self.gone = broken or {}, gone or set()
        self.calls: list[tuple[str, str]] = []

    def __call__(self, entity: str, record_id: str) -> dict[str, Any] | None:
        self.calls.append((entity, record_id))
        if (entity, record_id) in self.gone:
            return None
        record = dict(expected(entity, record_id))
        if entity == "items":  # Alma codes come as {"value", "desc"}
            record["library"] = {"value": record["library"], "desc": "Main Library"}
        else:  # and dates with a time and zone
            record["expiry_date"] = record["expiry_date"] + "Z"
        record.update(self.broken.get((entity, record_id), {}))
        return record


def run(
    alma_counts: Mapping[str, int] | None = None,
    workbook: Mapping[str, AreaStatistics] | None = None,
    fetch: Any = None,
    **kwargs: Any,
) -> Reconciliation:
    args: dict[str, Any] = {
        "sources": {"items": 100, "patrons": 40},
        "delivered": {"items": 97, "patrons": 40},
        "rejected": {"items": {"orphan_item": 2, "missing_barcode": 1}},
        "alma_counts": {"items": 95, "patrons": 40} if alma_counts is None else alma_counts,
        "workbook": workbook,
        "sample_ids": {"items": ITEM_IDS[:97], "patrons": PATRON_IDS},
        "fetch": fetch or FakeAlma(),
        "expected": expected,
    }
    args.update(kwargs)
    return reconcile(**args, run=RUN)


WORKBOOK = {
    "bib_inventory.items": AreaStatistics(
        "bib_inventory.items",
        97,
        95,
        2,
        [(ITEM_IDS[3], "duplicate barcode"), (ITEM_IDS[4], "duplicate barcode")],
    ),
    "patron": AreaStatistics("patron", 40, 40, 0),
    "vendor": AreaStatistics("vendor", 12, 12, 0),
}


def test_all_accounted() -> None:
    rec = run(workbook=WORKBOOK)
    items, patrons = rec.entities
    assert (
        items.source,
        items.delivered,
        items.rejected,
        items.in_alma,
        items.alma_rejected,
        items.missing_in_alma,
    ) == (100, 97, 3, 95, 2, 0)
    assert items.rejected_by_reason == {"orphan_item": 2, "missing_barcode": 1}
    assert items.alma_rejected_ids == [(ITEM_IDS[3], "duplicate barcode"), (ITEM_IDS[4], "duplicate barcode")]
    assert items.workbook_area == "bib_inventory.items" and items.in_alma_from == "alma"
    assert items.accounted and patrons.accounted and rec.all_accounted
    assert rec.status == "PASS" and not rec.sample_failures
    assert rec.totals == {
        "entities": 2,
        "accounted_entities": 2,
        "source": 140,
        "delivered": 137,
        "rejected": 3,
        "in_alma": 135,
        "alma_rejected": 2,
        "missing_in_alma": 0,
        "sampled": 20,
        "sample_failures": 0,
    }
    assert [a.area for a in rec.other_areas] == ["vendor"]


CASES: dict[str, tuple[dict[str, Any], bool, str]] = {
    "source-not-balanced": (
        {"sources": {"items": 101, "patrons": 40}},
        False,
        "source 101 ≠ delivered 97 + rejected 3 (off by 1)",
    ),
    "missing-unnamed": (
        {"alma_counts": {"items": 93, "patrons": 40}},
        False,
        "2 delivered records are not in Alma, 0 of them named",
    ),
    "missing-named": (
        {"alma_counts": {"items": 93, "patrons": 40}, "missing_ids": {"items": [ITEM_IDS[10], ITEM_IDS[11]]}},
        True,
        "",
    ),
    "missing-partly-named": (
        {"alma_counts": {"items": 93, "patrons": 40}, "missing_ids": {"items": [ITEM_IDS[10]]}},
        False,
        "2 delivered records are not in Alma, 1 of them named",
    ),
    "alma-holds-more": (
        {"alma_counts": {"items": 99, "patrons": 40}},
        False,
        "Alma holds 4 more records than were delivered and not rejected",
    ),
    "no-alma-count": ({"alma_counts": {"patrons": 40}}, False, "no Alma count"),
}


@pytest.mark.parametrize(("changes", "accounted", "note"), CASES.values(), ids=CASES.keys())
def test_accounting(changes: dict[str, Any], accounted: bool, note: str) -> None:
    items = WORKBOOK["bib_inventory.items"]  # Alma's rejects from the workbook, its loaded count left out
    rec = run(
        workbook={
            **WORKBOOK,
            "bib_inventory.items": AreaStatistics(
                items.area, items.total, None, items.rejected, items.rejected_records
            ),
        },
        **changes,
    )
    items = rec.entities[0]
    assert items.accounted is accounted and rec.all_accounted is accounted
    assert rec.status == ("PASS" if accounted else "ATTENTION")
    if note:
        assert any(note in d for d in items.discrepancies), items.discrepancies
    else:
        assert items.discrepancies == []


def test_records_alma_api_refused_are_almas_rejects_with_their_reason_not_missing() -> None:
    """Loans, requests and fees go through the API: what it refused is named with Alma's code."""
    refused = [(ITEM_IDS[5], "alma_401651"), (ITEM_IDS[6], "alma_401651")]
    rec = run(alma_counts={"items": 95, "patrons": 40}, alma_refused={"items": refused})
    items = rec.entities[0]
    assert (items.alma_rejected, items.missing_in_alma, items.accounted) == (2, 0, True)
    assert items.alma_rejected_ids == refused and items.discrepancies == []
    assert rec.totals["alma_rejected"] == 2 and rec.totals["missing_in_alma"] == 0
    assert sorted(s.record_id for s in items.sample).count(ITEM_IDS[5]) == 0  # refused ids are not sampled
    assert "alma_401651" in rec.to_html()
    # The same two not refused but absent: missing, and not accounted unless named.
    assert not run(alma_counts={"items": 95, "patrons": 40}).entities[0].accounted


def test_workbook_stands_in_for_alma_and_counts_are_compared() -> None:
    rec = run(alma_counts={"patrons": 39}, workbook=WORKBOOK)
    items, patrons = rec.entities
    assert (items.in_alma, items.in_alma_from, items.accounted) == (95, "workbook", True)
    assert patrons.in_alma == 39 and not patrons.accounted
    assert "Alma counts 39 records, the workbook says 40 were loaded" in patrons.discrepancies
    wb = {**WORKBOOK, "patron": AreaStatistics("patron", 41, 40, 0)}
    rec = run(workbook=wb)
    assert rec.entities[1].accounted and rec.status == "ATTENTION"  # the numbers add up, but not the file's
    assert rec.entities[1].discrepancies == ["the workbook counts 41 records in the file, 40 were delivered"]


def test_workbook_read_from_file(tmp_path: Path) -> None:
    path = tmp_path / "stats.xlsx"
    write_statistics_workbook(WORKBOOK, path)
    rec = run(alma_counts={}, workbook=read_workbook(path))
    assert rec.all_accounted and rec.workbook_source == str(path)
    assert json.loads(rec.to_json())["workbook"]["source"] == str(path)


def test_entities_beyond_sources_are_reported() -> None:
    rec = run(delivered={"items": 97, "patrons": 40, "loans": 5}, workbook=WORKBOOK)
    loans = rec.entities[-1]
    assert (loans.entity, loans.source, loans.delivered, loans.accounted) == ("loans", 0, 5, False)


# --- the sample ---------------------------------------------------------------------------------


def test_sample_mismatches_field_by_field() -> None:
    fetch = FakeAlma(
        broken={
            ("items", ITEM_IDS[0]): {"location": "WWSK", "item_policy": "NO_LOAN"},
            ("patrons", PATRON_IDS[5]): {"user_group": {"value": "STAFF"}},
        },
        gone={("items", ITEM_IDS[1])},
    )
    ids = {"items": ITEM_IDS[:2], "patrons": PATRON_IDS[5:6]}
    rec = run(
        fetch=fetch,
        workbook=None,
        sample_ids=ids,
        alma_counts={"items": 96, "patrons": 40},
        missing_ids={"items": [ITEM_IDS[1]]},
    )
    items, patrons = rec.entities
    assert items.accounted  # the one missing item is named
    assert [s.record_id for s in items.sample] == [ITEM_IDS[0]]  # known-missing ids are not sampled
    wrong = items.sample[0]
    assert wrong.found and [(m.field, m.expected, m.actual) for m in wrong.mismatches] == [
        ("location", "ZWSK", "WWSK"),
        ("item_policy", "LOAN_30", "NO_LOAN"),
    ]
    assert [(m.field, m.expected, m.actual) for m in patrons.sample[0].mismatches] == [
        ("user_group", "UG", "STAFF")
    ]
    assert rec.status == "ATTENTION" and len(rec.sample_failures) == 2

    fetch = FakeAlma(gone={("items", ITEM_IDS[1])})
    rec = run(
        fetch=fetch,
        workbook=None,
        sample_ids={"items": ITEM_IDS[:2]},
        alma_counts={"items": 96, "patrons": 40},
    )
    lost = [s for s in rec.entities[0].sample if not s.ok]
    assert [(s.record_id, s.found) for s in lost] == [(ITEM_IDS[1], False)]


def test_sample_is_seeded_and_skips_alma_rejects() -> None:
    a, b = FakeAlma(), FakeAlma()
    run(fetch=a, workbook=WORKBOOK, seed=3)
    run(fetch=b, workbook=WORKBOOK, seed=3)
    assert a.calls == b.calls and len(a.calls) == 20
    assert not {ITEM_IDS[3], ITEM_IDS[4]} & {i for _, i in a.calls}
    c = FakeAlma()
    run(fetch=c, workbook=WORKBOOK, seed=4)
    assert c.calls != a.calls


@pytest.mark.parametrize(
    ("size", "available", "expected_n"),
    [(10, 100, 10), (10, 3, 3), (0, 100, 0), (5, 0, 0)],
    ids=["ten-of-100", "all-3", "none-asked", "none-there"],
)
def test_sample_size(size: int, available: int, expected_n: int) -> None:
    rec = run(sample_size=size, sample_ids={"items": ITEM_IDS[:available]}, workbook=None)
    assert len(rec.entities[0].sample) == expected_n
    assert rec.entities[1].sample == []  # no ids given for patrons: nothing to sample


def test_draw_sample_never_copies_or_repeats() -> None:
    ids = range(10**9)  # a sequence of a billion ids: only indices are drawn
    picked = draw_sample("items", ids, 5, seed=1, exclude={0, 1})  # type: ignore[arg-type]
    assert len(picked) == len(set(picked)) == 5 and picked == draw_sample(
        "items",
        ids,
        5,
        seed=1,  # type: ignore[arg-type]
        exclude={0, 1},
    )


SAME = {
    "trimmed": ("ZWSK ", "ZWSK", True),
    "code-object": ("UG", {"value": "UG", "desc": "Undergraduate"}, True),
    "date-vs-datetime": ("2027-07-01", "2027-07-01T15:59:00Z", True),
    "alma-date-with-zone": ("2027-07-01", "2027-07-01Z", True),
    "instants-in-zones": ("2027-07-01T23:59:00+08:00", "2027-07-01T15:59:00Z", True),
    "different-day": ("2027-07-01", "2027-07-02Z", False),
    "lists-as-sets": (["(BNU01)000000007", "(OCoLC)123"], ["(OCoLC)123", "(BNU01)000000007"], True),
    "lists-differ": (["(BNU01)000000007"], ["(BNU01)000000008"], False),
    "number-vs-text": (12.5, "12.50", True),
    "numeric-barcodes-stay-text": ("0012345", "12345", False),
    "missing-vs-blank": (None, "", True),
    "missing-vs-value": (None, "x", False),
}


@pytest.mark.parametrize(("a", "b", "same"), SAME.values(), ids=SAME.keys())
def test_same_value(a: Any, b: Any, same: bool) -> None:
    assert same_value(a, b) is same


@pytest.mark.parametrize(
    ("name", "private"),
    [
        ("last_name", True),
        ("full_name", True),
        ("email_address", True),
        ("phone", True),
        ("birth_date", True),
        ("pin_number", True),
        ("primary_id", False),
        ("user_group", False),
        ("expiry_date", False),
        ("pinyin", True),
    ],
)
def test_private_fields(name: str, private: bool) -> None:
    assert is_private(name) is private


def test_private_values_never_reported() -> None:
    fetch = FakeAlma(broken={("patrons", PATRON_IDS[0]): {"last_name": "李"}})
    rec = run(
        fetch=fetch,
        sample_ids={"patrons": PATRON_IDS[:1]},
        workbook=None,
        fields={"patrons": ("primary_id", "last_name")},
    )
    mismatch = rec.entities[1].sample[0].mismatches
    assert [(m.field, m.expected, m.actual) for m in mismatch] == [("last_name", "(withheld)", "(withheld)")]
    assert "李" not in rec.to_json() and "张" not in rec.to_json() and "李" not in rec.to_html()


# --- reports ------------------------------------------------------------------------------------


class _Page(HTMLParser):
    VOID = {"meta", "br", "rect"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: set[str] = set()
        self.text: list[str] = []
        self.svgs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(v for k, v in attrs if k == "id" and v)
        self.svgs += tag == "svg"
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page(html: str) -> tuple[_Page, str]:
    p = _Page()
    p.feed(html)
    p.close()
    assert p.errors == [] and p.stack == []
    return p, " ".join("".join(p.text).split())


def test_json_report() -> None:
    data = json.loads(run(workbook=WORKBOOK).to_json())
    assert (
        data["schema"] == "aleph2alma.reconciliation/1" and data["status"] == "PASS" and data["all_accounted"]
    )
    assert data["run"]["run_id"] == "manual__2026-03-01" and data["sample"] == {"size": 10, "seed": 0}
    items = data["entities"][0]
    assert items["alma_rejected_ids"][0] == {"id": ITEM_IDS[3], "reason": "duplicate barcode"}
    assert items["sample"]["checked"] == 10 and items["sample"]["failed"] == 0
    assert "last_name" not in json.dumps(data)  # only the compared fields, and ids


def test_html_pass() -> None:
    p, text = page(run(workbook=WORKBOOK).to_html())
    assert "PASS" in text and "every one of 140 Aleph records is accounted for" in text
    assert {"status", "funnel", "entity-items", "entity-patrons", "other-areas"} <= p.ids
    assert p.svgs == 1 and "All 20 sampled records match." in text


def test_html_attention_lists_discrepancies_and_mismatches() -> None:
    fetch = FakeAlma(broken={("items", ITEM_IDS[0]): {"barcode": "<b>x</b>"}})
    rec = run(
        fetch=fetch,
        sample_ids={"items": ITEM_IDS[:1]},
        alma_counts={"items": 93, "patrons": 40},
        workbook=WORKBOOK,
    )
    html = rec.to_html()
    p, text = page(html)
    assert "ATTENTION" in text and "sample-mismatches" in p.ids
    assert "items: 2 delivered records are not in Alma, 0 of them named" in text
    assert "Alma counts 93 records, the workbook says 95 were loaded" in text
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained


def test_unknown_sheets_shown() -> None:
    wb = StatisticsWorkbook(WORKBOOK, unknown_sheets=["Summary"], source="stats.xlsx")
    rec = run(workbook=wb)
    assert rec.unknown_sheets == ["Summary"]
    assert "Summary" in page(rec.to_html())[1]


# --- holdings -----------------------------------------------------------------------------------

HOL_IDS = [f"{n:09d}" for n in range(101, 121)]


def delivered_holding(record_id: str) -> dict[str, Any]:
    return {
        "bib": f"(ALEPH)BNU01{int(record_id) - 100:09d}",
        "library": "MAIN",
        "location": "STACK",
        "call_number": f"I247.5/{record_id[-3:]}",
    }


def test_holdings_reconcile_with_a_refused_record() -> None:
    """20 HOL records: 1 orphan rejected by us, 19 delivered; Alma refuses one (no bib), loads 18."""
    refused = HOL_IDS[4]
    workbook = {
        "bib_inventory.holdings": AreaStatistics(
            "bib_inventory.holdings",
            19,
            18,
            1,
            [
                (
                    refused,
                    f"No bibliographic record with 001 {int(refused) - 100:09d} (the holdings record's 004).",
                )
            ],
        )
    }
    calls: list[str] = []

    def fetch(entity: str, record_id: str) -> dict[str, Any] | None:
        calls.append(record_id)
        record = delivered_holding(record_id)
        if record_id == HOL_IDS[7]:  # hung off another bib in Alma
            record["bib"] = "(ALEPH)BNU01000000099"
        return record

    rec = reconcile(
        {"holdings": 20},
        {"holdings": 19},
        {"holdings": {"orphan_holdings": 1}},
        {},
        workbook,
        {"holdings": HOL_IDS[:19]},
        fetch,
        lambda _e, i: delivered_holding(i),
        sample_size=19,
        fields={"holdings": ("bib", "library", "location", "call_number")},
        run=RUN,
    )
    holdings = rec.entities[0]
    assert (
        holdings.source,
        holdings.delivered,
        holdings.rejected,
        holdings.in_alma,
        holdings.in_alma_from,
        holdings.alma_rejected,
        holdings.missing_in_alma,
    ) == (20, 19, 1, 18, "workbook", 1, 0)
    assert (
        holdings.rejected_by_reason == {"orphan_holdings": 1}
        and holdings.workbook_area == "bib_inventory.holdings"
    )
    assert holdings.accounted and holdings.discrepancies == []
    assert refused not in calls and len(holdings.sample) == 18  # Alma's refusal is not sampled
    assert [
        (s.record_id, [(m.field, m.expected, m.actual) for m in s.mismatches])
        for s in holdings.sample_failures
    ] == [(HOL_IDS[7], [("bib", "(ALEPH)BNU01000000008", "(ALEPH)BNU01000000099")])]
    assert rec.status == "ATTENTION"


def test_loans_created_through_the_api_carry_a_note_on_their_loan_date() -> None:
    """A note, not a discrepancy: the report still passes, and says it twice (JSON and HTML)."""
    rec = reconcile(
        {"loans": 5},
        {"loans": 5},
        {},
        {"loans": 5},
        None,
        {},
        lambda _e, _i: None,
        lambda _e, _i: {},
        notes={"loans": [API_LOAN_DATE_NOTE]},
        run=RUN,
    )
    assert rec.status == "PASS" and rec.entities[0].notes == [API_LOAN_DATE_NOTE]
    assert json.loads(rec.to_json())["entities"][0]["notes"] == [API_LOAN_DATE_NOTE]
    p, text = page(rec.to_html())
    assert "notes" in p.ids and "loans: Loans created through Alma's API carry the day of the load" in text
    plain = reconcile({"loans": 5}, {"loans": 5}, {}, {"loans": 5}, None, {}, lambda *_: None, lambda *_: {})
    assert "notes" not in page(plain.to_html())[0].ids and plain.entities[0].notes == []
