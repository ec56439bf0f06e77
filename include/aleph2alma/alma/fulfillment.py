"""Active loans (Z36), requests (Z37) and open fines (Z31) → JSON lines for the Alma API loader.

One JSON object per line, UTF-8, keys in the order below; an unset value is ``null``.

loans (every open loan: Z36_STATUS ``A`` active, ``L`` lost, ``C`` claimed returned; Z36 holds
only open loans, returned ones move to Z36H, which does not migrate)::

    aleph_key        Z36_REC_KEY (the item key)
    user_primary_id  Z36_ID → the patron's primary id (``patron_ids``)
    item_barcode     the item key → its barcode (``barcodes``)
    library          Z36_SUB_LIBRARY → Alma library (form; unmapped → default_library)
    circ_desk        the form's default_circulation_desk, else DEFAULT_CIRC_DESK
    loan_date        Z36_LOAN_DATE at 00:00 local time, ISO 8601 with offset
    due_date         Z36_DUE_DATE at 23:59 local time (Aleph's usual due hour)
    loan_status      "ACTIVE" (a lost or claimed-returned loan is still an open, active loan)
    process_status   Z36_STATUS → Alma's loan process status (``LOAN_PROCESS_STATUS``):
                     A → NORMAL, L → LOST, C → CLAIMED_RETURN
    note             Z36_NOTE_1

Alma's item loan (``rest_item_loan.xsd``) has ``loan_status`` Active or Complete only; lost and
claimed returned are the loan's ``process_status`` (code table ``HItemLoan.processStatus``,
"Loan Process Status"), an output-only field: a loan created through the REST API starts as
NORMAL and cannot be set to LOST or CLAIMED_RETURN by the API, so the status reaches Alma
through the delivered files (Ex Libris' migration), never through the API loader. The codes
LOST and CLAIMED_RETURN are as public Alma clients read them back; Ex Libris' published
code table was not available to check them against (unverified).

requests::

    aleph_key, user_primary_id (Z37_ID), item_barcode (first 15 characters of the key),
    request_type "HOLD", pickup_location_type "LIBRARY",
    pickup_location_library (Z37_PICKUP_LOCATION → Alma library),
    status ("ON_HOLD_SHELF" for Z37_STATUS S, else "NOT_STARTED"),
    request_date (Z37_OPEN_DATE), expiry_date (Z37_END_REQUEST_DATE),
    hold_expiry_date (Z37_END_HOLD_DATE) — dates as ISO ``yyyy-mm-dd``

fines (only open debits: Z31_STATUS ``O`` and Z31_CREDIT_DEBIT ``D``)::

    aleph_key, user_primary_id (first 12 characters of the key),
    type (Z31_TYPE → Alma fee type through the form's ``fee_types`` tab; a type the form does
    not map → OTHER, and the code inventory lists it as unmapped; see ``alma.fee_types``),
    amount (number, 2 decimals), currency (the form's currency, else CNY),
    owner (Z31_SUB_LIBRARY → Alma library), comment (Z31_DESCRIPTION),
    creation_date (Z31_DATE_X, else the date inside the key; ISO ``yyyy-mm-dd``),
    aleph_item_key (Z31_REC_KEY_ITEM, the fined item, when there is one),
    item_barcode (that item's barcode, ``barcodes``; null when the fine names no item or an
    item that is not delivered: the debt migrates all the same; Alma's fee ``barcode``)

Z31_SUM: Aleph keeps sums as text. One with a decimal point is read as it is ("12.50");
one without is read in minor units, two implied decimals ("1250" → 12.50), as Aleph's cash
records store them. A sum that is not a positive number is rejected (``invalid_amount``).

Rejected, with the reason: records in ``excluded`` (validation's reason), loans whose
Z36_STATUS is none of A, L, C (``loan_not_active``), fines that are closed or credits (``fine_not_open``,
``fine_not_debit``), records whose patron is not in ``patron_ids`` (``unknown_patron``)
or whose item is not in ``barcodes`` (``unknown_item``) or has no barcode
(``item_without_barcode``), loans without a due date (``missing_due_date``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

from aleph2alma.accounting import Tally
from aleph2alma.alma.fee_types import UNMAPPED_FEE_TYPE
from aleph2alma.alma.items import (
    FormLookups,
    date_column,
    form_default,
    key_prefix,
    require_columns,
    text_column,
)
from aleph2alma.rejects import Reject, RejectLog

ITEM_KEY_WIDTH = 15  # Z30_REC_KEY inside Z37_REC_KEY
PATRON_KEY_WIDTH = 12  # Z303_REC_KEY inside Z31_REC_KEY
DEFAULT_CIRC_DESK = "DEFAULT_CIRC_DESK"
DEFAULT_CURRENCY = "CNY"

LOAN_PROCESS_STATUS = {"A": "NORMAL", "L": "LOST", "C": "CLAIMED_RETURN"}
"""Z36_STATUS (Aleph: A active, L lost, C claimed returned) → Alma's loan ``process_status``."""

LOAN_KEYS = (
    "aleph_key",
    "user_primary_id",
    "item_barcode",
    "library",
    "circ_desk",
    "loan_date",
    "due_date",
    "loan_status",
    "process_status",
    "note",
)
REQUEST_KEYS = (
    "aleph_key",
    "user_primary_id",
    "item_barcode",
    "request_type",
    "pickup_location_type",
    "pickup_location_library",
    "status",
    "request_date",
    "expiry_date",
    "hold_expiry_date",
)
FINE_KEYS = (
    "aleph_key",
    "user_primary_id",
    "type",
    "amount",
    "currency",
    "owner",
    "comment",
    "creation_date",
    "aleph_item_key",
    "item_barcode",
)


@dataclass(frozen=True)
class FulfillmentOptions:
    timezone: str = "Asia/Shanghai"  # the library's local time: Aleph dates carry none
    due_time: time = time(23, 59)


@dataclass(kw_only=True)
class Stats(Tally):
    """One part's in, out and rejected by reason (the ``Tally``) of ``entity``."""

    entity: str


class _Run:
    """One transform's bookkeeping: rejects, stats, JSON-lines output."""

    def __init__(self, entity: str, records_in: int, rejects: RejectLog, out: TextIO) -> None:
        self.stats = Stats(entity=entity, records_in=records_in)
        self.rejects, self.out = rejects, out

    def reject(self, key: str, reason: str, raw: Mapping[str, Any]) -> None:
        self.rejects.add(Reject(self.stats.entity, key, reason, raw=_compact(raw)))
        self.stats.reject(reason)

    def write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stats.records_out += 1

    def done(self) -> Stats:
        """The part's counts, checked: every record written or rejected (else ``UnbalancedError``)."""
        return self.stats.check(self.stats.entity)


def _compact(raw: Mapping[str, Any]) -> str:
    return json.dumps(
        {k: (v.isoformat() if isinstance(v, date) else v) for k, v in raw.items() if v not in ("", None)},
        ensure_ascii=False,
    )


def _rows(columns: dict[str, pa.Array]) -> Iterator[dict[str, Any]]:
    """Rows of stripped columns (fulfillment parts are small: Python per row is fine here)."""
    yield from pa.table(columns).to_pylist()


def _iso(value: date | None) -> str | None:
    return value.isoformat() if isinstance(value, date) else None


def _library(form: FormLookups, sub_library: str, default: str) -> str:
    return (form.library_for(sub_library) if sub_library else None) or default


def item_barcodes(delivered: pa.Table, z36: pa.Table, z37: pa.Table, z31: pa.Table) -> dict[str, str]:
    """Delivered item key → barcode, for the items the loans, requests and fines name only.

    ``delivered`` holds ``aleph_item_key`` and ``barcode`` of every delivered item (4.8M at BNU):
    as a Python dict that is over a GB, where the few hundred thousand items circulation names
    take tens of MB. The keys are read as the transforms below read them."""
    require_columns(delivered, ["aleph_item_key", "barcode"], "delivered items")
    for table, name, column in (
        (z36, "Z36", "Z36_REC_KEY"),
        (z37, "Z37", "Z37_REC_KEY"),
        (z31, "Z31", "Z31_REC_KEY_ITEM"),
    ):
        require_columns(table, [column], name)
    wanted = pa.chunked_array(
        [
            text_column(z36, "Z36_REC_KEY"),
            key_prefix(z37, "Z37_REC_KEY", ITEM_KEY_WIDTH),
            text_column(z31, "Z31_REC_KEY_ITEM"),
        ],
        type=pa.string(),
    ).unique()
    named = delivered.filter(pc.is_in(delivered["aleph_item_key"], value_set=wanted))
    return dict(zip(named["aleph_item_key"].to_pylist(), named["barcode"].to_pylist(), strict=True))


def _item_barcode(item_key: str, barcodes: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(barcode, None) or (None, reject reason)."""
    if item_key not in barcodes:
        return None, "unknown_item"
    barcode = barcodes[item_key]
    return (barcode, None) if barcode else (None, "item_without_barcode")


def transform_loans(
    z36: pa.Table,
    patron_ids: Mapping[str, str],
    barcodes: Mapping[str, str],
    form: FormLookups,
    excluded: Mapping[str, str],
    rejects: RejectLog,
    out: TextIO,
    options: FulfillmentOptions | None = None,
) -> Stats:
    """Write the open loans (active, lost, claimed returned) of one Z36 part as JSON lines (``LOAN_KEYS``)."""
    options = options or FulfillmentOptions()
    require_columns(
        z36,
        [
            "Z36_REC_KEY",
            "Z36_ID",
            "Z36_SUB_LIBRARY",
            "Z36_STATUS",
            "Z36_LOAN_DATE",
            "Z36_DUE_DATE",
            "Z36_NOTE_1",
        ],
        "Z36",
    )
    run = _Run("loans", z36.num_rows, rejects, out)
    zone = ZoneInfo(options.timezone)

    @functools.cache
    def stamp(day: date, at: time) -> str:  # loans share few distinct days: format each once
        return datetime.combine(day, at, zone).isoformat()

    desk = form_default(form, "default_circulation_desk", DEFAULT_CIRC_DESK)
    default_library = form_default(form, "default_library")
    for row in _rows(
        {
            "key": text_column(z36, "Z36_REC_KEY"),
            "patron": text_column(z36, "Z36_ID"),
            "sub_library": text_column(z36, "Z36_SUB_LIBRARY"),
            "status": text_column(z36, "Z36_STATUS"),
            "loan_date": date_column(z36, "Z36_LOAN_DATE"),
            "due_date": date_column(z36, "Z36_DUE_DATE"),
            "note": text_column(z36, "Z36_NOTE_1"),
        }
    ):
        key = row["key"]
        barcode, item_problem = _item_barcode(key, barcodes)
        reason = (
            excluded.get(key)
            or ("loan_not_active" if row["status"] not in LOAN_PROCESS_STATUS else None)
            or ("unknown_patron" if row["patron"] not in patron_ids else None)
            or item_problem
            or ("missing_due_date" if row["due_date"] is None else None)
        )
        if reason:
            run.reject(key, reason, row)
            continue
        loaned, due = row["loan_date"], row["due_date"]
        run.write(
            {
                "aleph_key": key,
                "user_primary_id": patron_ids[row["patron"]],
                "item_barcode": barcode,
                "library": _library(form, row["sub_library"], default_library),
                "circ_desk": desk,
                "loan_date": stamp(loaned, time(0, 0)) if loaned else None,
                "due_date": stamp(due, options.due_time),
                "loan_status": "ACTIVE",
                "process_status": LOAN_PROCESS_STATUS[row["status"]],
                "note": row["note"] or None,
            }
        )
    return run.done()


def transform_requests(
    z37: pa.Table,
    patron_ids: Mapping[str, str],
    barcodes: Mapping[str, str],
    form: FormLookups,
    excluded: Mapping[str, str],
    rejects: RejectLog,
    out: TextIO,
) -> Stats:
    """Write one Z37 part as hold requests, JSON lines (``REQUEST_KEYS``)."""
    require_columns(
        z37,
        [
            "Z37_REC_KEY",
            "Z37_ID",
            "Z37_STATUS",
            "Z37_OPEN_DATE",
            "Z37_END_REQUEST_DATE",
            "Z37_END_HOLD_DATE",
            "Z37_PICKUP_LOCATION",
        ],
        "Z37",
    )
    run = _Run("requests", z37.num_rows, rejects, out)
    default_library = form_default(form, "default_library")
    for row in _rows(
        {
            "key": text_column(z37, "Z37_REC_KEY"),
            "item": key_prefix(z37, "Z37_REC_KEY", ITEM_KEY_WIDTH),
            "patron": text_column(z37, "Z37_ID"),
            "status": text_column(z37, "Z37_STATUS"),
            "opened": date_column(z37, "Z37_OPEN_DATE"),
            "ends": date_column(z37, "Z37_END_REQUEST_DATE"),
            "hold_ends": date_column(z37, "Z37_END_HOLD_DATE"),
            "pickup": text_column(z37, "Z37_PICKUP_LOCATION"),
        }
    ):
        key = row["key"]
        barcode, item_problem = _item_barcode(row["item"], barcodes)
        reason = (
            excluded.get(key)
            or ("unknown_patron" if row["patron"] not in patron_ids else None)
            or item_problem
        )
        if reason:
            run.reject(key, reason, row)
            continue
        run.write(
            {
                "aleph_key": key,
                "user_primary_id": patron_ids[row["patron"]],
                "item_barcode": barcode,
                "request_type": "HOLD",
                "pickup_location_type": "LIBRARY",
                "pickup_location_library": _library(form, row["pickup"], default_library),
                "status": "ON_HOLD_SHELF" if row["status"] == "S" else "NOT_STARTED",
                "request_date": _iso(row["opened"]),
                "expiry_date": _iso(row["ends"]),
                "hold_expiry_date": _iso(row["hold_ends"]),
            }
        )
    return run.done()


def fine_amount(raw: str) -> Decimal | None:
    """Z31_SUM as an amount: ``"12.50"`` as written, ``"1250"`` as minor units (12.50); None if invalid."""
    text = raw.strip().replace(",", "")
    if not text:
        return None
    try:
        value = Decimal(text) if "." in text else Decimal(int(text)) / 100
    except (InvalidOperation, ValueError):
        return None
    return value.quantize(Decimal("0.01")) if value.is_finite() else None


def _key_date(key: str) -> str | None:
    """The date inside a Z31 key (patron id, then YYYYMMDD…), as ISO, if it is one."""
    digits = key[PATRON_KEY_WIDTH : PATRON_KEY_WIDTH + 8]
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8])).isoformat()
    except ValueError:
        return None


def transform_fines(
    z31: pa.Table,
    patron_ids: Mapping[str, str],
    form: FormLookups,
    excluded: Mapping[str, str],
    rejects: RejectLog,
    out: TextIO,
    barcodes: Mapping[str, str] | None = None,
) -> Stats:
    """Write the open debits of one Z31 part as fees, JSON lines (``FINE_KEYS``).

    ``barcodes``: delivered item key → barcode, so a fine keeps the barcode of its item.
    """
    barcodes = barcodes or {}
    require_columns(
        z31,
        [
            "Z31_REC_KEY",
            "Z31_STATUS",
            "Z31_CREDIT_DEBIT",
            "Z31_SUM",
            "Z31_TYPE",
            "Z31_SUB_LIBRARY",
            "Z31_DESCRIPTION",
            "Z31_REC_KEY_ITEM",
            "Z31_DATE_X",
        ],
        "Z31",
    )
    run = _Run("fines", z31.num_rows, rejects, out)

    @functools.cache
    def fee_type(code: str) -> str:
        return form.fee_type_for(code) or UNMAPPED_FEE_TYPE

    currency = form_default(form, "currency", DEFAULT_CURRENCY)
    default_library = form_default(form, "default_library")
    raw_keys = z31.column("Z31_REC_KEY").combine_chunks().fill_null("")
    for row in _rows(
        {
            "key": text_column(z31, "Z31_REC_KEY"),
            "raw_key": raw_keys,
            "patron": key_prefix(z31, "Z31_REC_KEY", PATRON_KEY_WIDTH),
            "status": text_column(z31, "Z31_STATUS"),
            "credit_debit": text_column(z31, "Z31_CREDIT_DEBIT"),
            "sum": text_column(z31, "Z31_SUM"),
            "type": text_column(z31, "Z31_TYPE"),
            "sub_library": text_column(z31, "Z31_SUB_LIBRARY"),
            "description": text_column(z31, "Z31_DESCRIPTION"),
            "item": text_column(z31, "Z31_REC_KEY_ITEM"),
            "date": date_column(z31, "Z31_DATE_X"),
        }
    ):
        key, raw_key = row["key"], row.pop("raw_key")
        amount = fine_amount(row["sum"])
        reason = (
            excluded.get(key)
            or ("fine_not_open" if row["status"] != "O" else None)
            or ("fine_not_debit" if row["credit_debit"] != "D" else None)
            or ("unknown_patron" if row["patron"] not in patron_ids else None)
            or ("invalid_amount" if amount is None or amount <= 0 else None)
        )
        if reason:
            run.reject(key, reason, row)
            continue
        assert amount is not None
        item = row["item"] or None
        run.write(
            {
                "aleph_key": key,
                "user_primary_id": patron_ids[row["patron"]],
                "type": fee_type(row["type"]),
                "amount": float(amount),
                "currency": currency,
                "owner": _library(form, row["sub_library"], default_library),
                "comment": row["description"] or None,
                "creation_date": _iso(row["date"]) or _key_date(raw_key),
                "aleph_item_key": item,
                "item_barcode": (barcodes.get(item) or None) if item else None,
            }
        )
    return run.done()
