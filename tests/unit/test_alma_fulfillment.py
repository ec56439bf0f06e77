"""Z36 loans, Z37 requests, Z31 fines → JSON lines for the Alma API loader."""

from __future__ import annotations

import io
import json
from collections import Counter
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from aleph2alma.aleph.ztables import Z31, Z36, Z37
from aleph2alma.alma.form import generate_form
from aleph2alma.alma.fulfillment import (
    FINE_KEYS,
    LOAN_KEYS,
    REQUEST_KEYS,
    Stats,
    fine_amount,
    item_barcodes,
    transform_fines,
    transform_loans,
    transform_requests,
)
from aleph2alma.profile import CodeInventory
from aleph2alma.rejects import RejectLog
from zrows import ztable

PATRONS = {"BNU000000001": "201911010001", "BNU000000002": "201911010002"}
BARCODES = {"000012345000010": "31000123", "000012345000020": ""}
ITEM = "000012345000010"


class StubForm:
    libraries = {"BNUZG": "MAIN", "BNUZH": "ZHUHAI"}
    fee_types = {"0003": "OVERDUEFINE"}
    defaults: dict[str, str] = {"default_library": "MAIN"}

    def location_for(self, sub_library: str, collection: str) -> tuple[str, str] | None:
        return None

    def item_policy_for(self, item_status: str) -> str | None:
        return None

    def process_type_for(self, process_status: str) -> str | None:
        return None

    def material_type_for(self, material: str) -> str | None:
        return None

    def user_group_for(self, bor_status: str, bor_type: str) -> str | None:
        return None

    def library_for(self, sub_library: str) -> str | None:
        return self.libraries.get(sub_library)

    def fee_type_for(self, fine_type: str) -> str | None:
        return self.fee_types.get(fine_type)

    def default(self, key: str) -> str | None:
        return self.defaults.get(key)


def collect(
    fn: Any,
    table: pa.Table,
    *args: Any,
    excluded: dict[str, str] | None = None,
    form: Any = None,
    **kw: Any,
) -> tuple[list[dict[str, Any]], Stats, list[dict[str, Any]]]:
    out, sink = io.StringIO(), io.StringIO()
    stats = fn(table, *args, form or StubForm(), excluded or {}, RejectLog(sink), out, **kw)
    assert stats.records_in == stats.records_out + stats.rejected
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    return records, stats, [json.loads(line) for line in sink.getvalue().splitlines()]


# --- loans --------------------------------------------------------------------------------

LOAN = {
    "Z36_REC_KEY": ITEM,
    "Z36_ID": "BNU000000001",
    "Z36_NUMBER": "000000001",
    "Z36_SUB_LIBRARY": "BNUZH",
    "Z36_STATUS": "A",
    "Z36_LOAN_DATE": 20240301,
    "Z36_DUE_DATE": 20240331,
    "Z36_NOTE_1": "附光盘",
}


def loans(rows: list[dict[str, Any]], **kw: Any) -> tuple[list[dict[str, Any]], Stats, list[dict[str, Any]]]:
    return collect(transform_loans, ztable(Z36, rows), PATRONS, BARCODES, **kw)


def test_an_active_loan_has_every_field() -> None:
    (loan,), stats, _ = loans([LOAN])
    assert tuple(loan) == LOAN_KEYS
    assert loan == {
        "aleph_key": ITEM,
        "user_primary_id": "201911010001",
        "item_barcode": "31000123",
        "library": "ZHUHAI",
        "circ_desk": "DEFAULT_CIRC_DESK",
        "loan_date": "2024-03-01T00:00:00+08:00",
        "due_date": "2024-03-31T23:59:00+08:00",
        "loan_status": "ACTIVE",
        "process_status": "NORMAL",
        "note": "附光盘",
    }
    assert stats.entity == "loans"


OPEN_LOANS = [
    ("active", "A", "NORMAL"),
    ("lost", "L", "LOST"),
    ("claimed returned", "C", "CLAIMED_RETURN"),
]


@pytest.mark.parametrize(("status", "process"), [c[1:] for c in OPEN_LOANS], ids=[c[0] for c in OPEN_LOANS])
def test_lost_and_claimed_returned_loans_are_open_loans_with_their_process_status(
    status: str, process: str
) -> None:
    (loan,), stats, rejects = loans([LOAN | {"Z36_STATUS": status}])
    assert (loan["loan_status"], loan["process_status"]) == ("ACTIVE", process)
    assert loan["item_barcode"] == "31000123" and loan["due_date"] == "2024-03-31T23:59:00+08:00"
    assert stats.rejected == 0 and rejects == []


def test_circ_desk_and_unmapped_library_come_from_the_form() -> None:
    form = StubForm()
    form.defaults = {"default_library": "MAIN", "default_circulation_desk": "MAIN_DESK"}
    (loan,), _, _ = loans(
        [LOAN | {"Z36_SUB_LIBRARY": "BNUCP", "Z36_NOTE_1": "", "Z36_LOAN_DATE": 0}], form=form
    )
    assert (loan["library"], loan["circ_desk"], loan["note"], loan["loan_date"]) == (
        "MAIN",
        "MAIN_DESK",
        None,
        None,
    )


LOAN_REJECTS = [
    ("a status that is not A, L or C", {"Z36_STATUS": "X"}, "loan_not_active"),
    ("no status", {"Z36_STATUS": ""}, "loan_not_active"),
    ("patron not migrated", {"Z36_ID": "BNU000000404"}, "unknown_patron"),
    ("item not migrated", {"Z36_REC_KEY": "000099999000010"}, "unknown_item"),
    ("item without barcode", {"Z36_REC_KEY": "000012345000020"}, "item_without_barcode"),
    ("no due date", {"Z36_DUE_DATE": 0}, "missing_due_date"),
]


@pytest.mark.parametrize(
    ("change", "reason"), [c[1:] for c in LOAN_REJECTS], ids=[c[0] for c in LOAN_REJECTS]
)
def test_loan_rejects(change: dict[str, Any], reason: str) -> None:
    records, stats, rejects = loans([LOAN, LOAN | change])
    assert len(records) == 1 and stats.rejected_by_reason == {reason: 1}
    assert rejects[0]["reason"] == reason and rejects[0]["entity"] == "loans"


def test_open_loans_migrate_and_excluded_loans_keep_their_reason() -> None:
    rows = [LOAN | {"Z36_STATUS": s} for s in "ACLXA"]
    rows[4]["Z36_ID"] = "BNU000000002"
    records, stats, rejects = loans(rows, excluded={ITEM: "loan_missing_patron"})
    assert records == []
    assert stats.rejected_by_reason == {"loan_missing_patron": 5}  # validation's reason comes first
    records, stats, _ = loans(rows)
    assert [r["process_status"] for r in records] == ["NORMAL", "CLAIMED_RETURN", "LOST", "NORMAL"]
    assert records[-1]["user_primary_id"] == "201911010002"
    assert (stats.records_in, stats.records_out, stats.rejected) == (5, 4, 1)


# --- requests -----------------------------------------------------------------------------

REQUEST = {
    "Z37_REC_KEY": ITEM + "0001",
    "Z37_ID": "BNU000000002",
    "Z37_STATUS": "A",
    "Z37_PRIORITY": "50",
    "Z37_OPEN_DATE": 20240310,
    "Z37_END_REQUEST_DATE": 20240610,
    "Z37_END_HOLD_DATE": 0,
    "Z37_PICKUP_LOCATION": "BNUZG",
    "Z37_REQUEST_NUMBER": "000000007",
}


def requests(
    rows: list[dict[str, Any]], **kw: Any
) -> tuple[list[dict[str, Any]], Stats, list[dict[str, Any]]]:
    return collect(transform_requests, ztable(Z37, rows), PATRONS, BARCODES, **kw)


def test_a_request_has_every_field() -> None:
    (request,), _, _ = requests([REQUEST])
    assert tuple(request) == REQUEST_KEYS
    assert request == {
        "aleph_key": ITEM + "0001",
        "user_primary_id": "201911010002",
        "item_barcode": "31000123",
        "request_type": "HOLD",
        "pickup_location_type": "LIBRARY",
        "pickup_location_library": "MAIN",
        "status": "NOT_STARTED",
        "request_date": "2024-03-10",
        "expiry_date": "2024-06-10",
        "hold_expiry_date": None,
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [("S", "ON_HOLD_SHELF"), ("A", "NOT_STARTED"), ("W", "NOT_STARTED")],
    ids=["S on hold shelf", "A active", "W waiting"],
)
def test_request_status(status: str, expected: str) -> None:
    (request,), _, _ = requests([REQUEST | {"Z37_STATUS": status, "Z37_END_HOLD_DATE": 20240320}])
    assert request["status"] == expected and request["hold_expiry_date"] == "2024-03-20"


def test_request_item_key_is_sliced_before_stripping() -> None:
    padded = "00001234500001 " + "0001"  # a 14-character item key blank-padded to 15
    records, stats, rejects = requests([REQUEST | {"Z37_REC_KEY": padded}])
    assert records == [] and rejects[0]["reason"] == "unknown_item"
    assert rejects[0]["record_id"] == "00001234500001 0001"


@pytest.mark.parametrize(
    ("change", "excluded", "reason"),
    [
        ({"Z37_ID": "BNU000000404"}, {}, "unknown_patron"),
        ({"Z37_REC_KEY": "000099999000010" + "0001"}, {}, "unknown_item"),
        ({}, {ITEM + "0001": "request_missing_item"}, "request_missing_item"),
    ],
    ids=["patron not migrated", "item not migrated", "excluded by validation"],
)
def test_request_rejects(change: dict[str, Any], excluded: dict[str, str], reason: str) -> None:
    records, stats, _ = requests([REQUEST | change], excluded=excluded)
    assert records == [] and stats.rejected_by_reason == {reason: 1}


# --- fines --------------------------------------------------------------------------------

FINE_KEY = "BNU000000001" + "2024031514301" + "0001"
FINE = {
    "Z31_REC_KEY": FINE_KEY,
    "Z31_STATUS": "O",
    "Z31_CREDIT_DEBIT": "D",
    "Z31_SUM": "1250",
    "Z31_TYPE": "0003",
    "Z31_SUB_LIBRARY": "BNUZG",
    "Z31_DESCRIPTION": "超期罚款",
    "Z31_REC_KEY_ITEM": ITEM,
    "Z31_DATE_X": 20240316,
}


def fines(rows: list[dict[str, Any]], **kw: Any) -> tuple[list[dict[str, Any]], Stats, list[dict[str, Any]]]:
    return collect(transform_fines, ztable(Z31, rows), PATRONS, **kw)


def test_an_open_fine_has_every_field() -> None:
    (fine,), _, _ = fines([FINE], barcodes=BARCODES)
    assert tuple(fine) == FINE_KEYS
    assert fine == {
        "aleph_key": FINE_KEY,
        "user_primary_id": "201911010001",
        "type": "OVERDUEFINE",
        "amount": 12.5,
        "currency": "CNY",
        "owner": "MAIN",
        "comment": "超期罚款",
        "creation_date": "2024-03-16",
        "aleph_item_key": ITEM,
        "item_barcode": "31000123",
    }


FINE_ITEMS = [
    ("the fined item's barcode", ITEM, "31000123"),
    ("an item that is not delivered", "000099999000010", None),
    ("an item without a barcode", "000012345000020", None),
    ("no item", "", None),
]


@pytest.mark.parametrize(("item", "barcode"), [c[1:] for c in FINE_ITEMS], ids=[c[0] for c in FINE_ITEMS])
def test_a_fine_keeps_its_items_barcode_and_migrates_without_one(item: str, barcode: str | None) -> None:
    (fine,), stats, _ = fines([FINE | {"Z31_REC_KEY_ITEM": item}], barcodes=BARCODES)
    assert (fine["aleph_item_key"], fine["item_barcode"]) == (item or None, barcode)
    assert stats.rejected == 0


AMOUNTS = [
    ("minor units", "1250", Decimal("12.50")),
    ("minor units, zero-padded", "00000000000150", Decimal("1.50")),
    ("decimal point as written", "12.5", Decimal("12.50")),
    ("thousands separator", "1,234.50", Decimal("1234.50")),
    ("blank", "", None),
    ("not a number", "abc", None),
]


@pytest.mark.parametrize(("raw", "amount"), [a[1:] for a in AMOUNTS], ids=[a[0] for a in AMOUNTS])
def test_fine_amount(raw: str, amount: Decimal | None) -> None:
    assert fine_amount(raw) == amount


FINE_REJECTS = [
    ("closed", {"Z31_STATUS": "C"}, "fine_not_open"),
    ("a credit", {"Z31_CREDIT_DEBIT": "C"}, "fine_not_debit"),
    ("patron not migrated", {"Z31_REC_KEY": "BNU000000404" + FINE_KEY[12:]}, "unknown_patron"),
    ("zero", {"Z31_SUM": "0"}, "invalid_amount"),
    ("negative", {"Z31_SUM": "-100"}, "invalid_amount"),
    ("garbage", {"Z31_SUM": "12元"}, "invalid_amount"),
]


@pytest.mark.parametrize(
    ("change", "reason"), [c[1:] for c in FINE_REJECTS], ids=[c[0] for c in FINE_REJECTS]
)
def test_fine_rejects(change: dict[str, Any], reason: str) -> None:
    records, stats, rejects = fines([FINE, FINE | change])
    assert len(records) == 1 and stats.rejected_by_reason == {reason: 1}
    assert rejects[0]["entity"] == "fines"


FEE_TYPES = [
    ("0003 late return is an overdue fine", "0003", "OVERDUEFINE"),
    ("0004 loan charge", "0004", "OTHER"),
    ("0005 renewal charge", "0005", "OTHER"),
    ("0040 lost item handling", "0040", "LOSTITEMPROCESSFEE"),
    ("0041 lost item replacement", "0041", "LOSTITEMREPLACEMENTFEE"),
    ("0042 lost item processing", "0042", "LOSTITEMPROCESSFEE"),
    ("a site's own type, not in the form", "0099", "OTHER"),
]
FINE_TYPE_COUNTS = Counter({(c[1],): n for n, c in enumerate(FEE_TYPES, start=1)})


@pytest.mark.parametrize(("code", "alma"), [c[1:] for c in FEE_TYPES], ids=[c[0] for c in FEE_TYPES])
def test_fee_type_from_a_generated_forms_fee_types_tab(code: str, alma: str) -> None:
    inventory = CodeInventory({"fine_type": FINE_TYPE_COUNTS})
    form = generate_form(inventory)
    (fine,), _, _ = fines([FINE | {"Z31_TYPE": code}], form=form)
    assert fine["type"] == alma
    assert form.unmapped(inventory) == {"fee_types": [("0099",)]}  # listed for the librarian


def test_the_librarians_fee_type_row_wins_over_the_suggestion() -> None:
    inventory = CodeInventory({"fine_type": Counter({("0003",): 5, ("0099",): 1})})
    generated = generate_form(inventory)
    tab = generated.tabs["fee_types"].copy()
    assert dict(zip(tab["aleph_fine_type"], tab["alma_fee_type"], strict=True)) == {
        "0003": "OVERDUEFINE",
        "0099": "",
    }
    tab.loc[tab["aleph_fine_type"] == "0099", "alma_fee_type"] = "DAMAGEDITEMFINE"
    form = type(generated)({**generated.tabs, "fee_types": tab})
    (fine,), _, _ = fines([FINE | {"Z31_TYPE": "0099"}], form=form)
    assert fine["type"] == "DAMAGEDITEMFINE" and form.unmapped(inventory) == {}


def test_fine_currency_from_the_form_and_date_from_the_key() -> None:
    form = StubForm()
    form.defaults = {"default_library": "MAIN", "currency": "USD"}
    (fine,), _, _ = fines([FINE | {"Z31_DATE_X": 0, "Z31_REC_KEY_ITEM": ""}], form=form)
    assert (fine["currency"], fine["creation_date"], fine["aleph_item_key"]) == ("USD", "2024-03-15", None)


def test_padding_is_stripped_and_nulls_tolerated() -> None:
    (fine,), _, _ = fines([FINE | {"Z31_DESCRIPTION": None, "Z31_SUB_LIBRARY": None}])
    assert (fine["comment"], fine["owner"], fine["aleph_key"]) == (None, "MAIN", FINE_KEY)


# --- barcodes of the items circulation names ------------------------------------------------


def test_item_barcodes_keeps_only_the_items_loans_requests_and_fines_name() -> None:
    """Every delivered item would be a GB-sized dict at BNU: only the named ones are kept, keyed as
    the transforms look them up (a request's item key sliced from its padded key)."""
    delivered = pa.table(
        {
            "aleph_item_key": ["000000001000010", "000000002000010", "000000003000010", "000000004000010"],
            "barcode": ["B1", "B2", "", "B4"],
        }
    )
    z36 = ztable(Z36, [LOAN | {"Z36_REC_KEY": "000000001000010"}])
    z37 = ztable(Z37, [REQUEST | {"Z37_REC_KEY": "000000003000010" + "0001"}])
    z31 = ztable(Z31, [FINE | {"Z31_REC_KEY_ITEM": "000000009000010"}, FINE | {"Z31_REC_KEY_ITEM": ""}])
    assert item_barcodes(delivered, z36, z37, z31) == {"000000001000010": "B1", "000000003000010": ""}


def test_item_barcodes_names_a_missing_key_column() -> None:
    delivered = pa.table({"aleph_item_key": ["000000001000010"], "barcode": ["B1"]})
    z37 = ztable(Z37, [REQUEST]).drop_columns(["Z37_REC_KEY"])
    with pytest.raises(ValueError, match="Z37: missing column"):
        item_barcodes(delivered, ztable(Z36, [LOAN]), z37, ztable(Z31, [FINE]))
