"""Cross-record checks over the raw Z-tables and the bib/holdings indexes.

One small function per rule (``CHECKS``: rule id → function). Each takes a
``CheckContext`` and yields an ``Issue`` per bad record, sorted by record id; the
context holds the tables, the migration form and the key sets several checks share
(computed once). ``check_tables`` runs them all in registry order.

Record ids (what a librarian looks up in Aleph, and what worklists list):

==========  =====================================================================
bibs        ``<BIB library>:<sysno>`` (emitted by the bib transform), e.g. ``BNU01:000000123``
holdings    ``<HOL library>:<sysno>``, e.g. ``BNU60:000004711``
items       Z30_REC_KEY (ADM doc number + item sequence)
patrons     Z303_REC_KEY (also for Z305-based rules: the first 12 characters of Z305_REC_KEY)
loans       Z36_REC_KEY (the loaned item's key: one active loan per item)
requests    Z37_REC_KEY
fines       Z31_REC_KEY
==========  =====================================================================

Input conventions (``aleph.ztables``): upper-case column names, CHAR values
blank-padded (stripped here; null counts as blank), dates int64 YYYYMMDD with 0 unset.
The indexes come from the bib and holdings transforms: bib index ``library, sysno,
has_856, rejected``; holdings index ``library, sysno, bib_library, bib_sysno,
sub_library, collection, call_number`` (sysno columns as 9-digit strings or integers).

Memory and time. Everything is vectorised (``validate.columns``); only bad rows become
Python objects. Read only ``NEEDED_COLUMNS`` with ``read_parts``: code columns come
dictionary-encoded (4 bytes a row), other text loses its CHAR padding part by part.
All-digit keys (item keys, system numbers, numeric barcodes) are compared as int64
(sorted, binary-searched), code columns as int32 codes with the form asked once per
distinct combination. Measured at BNU scale (synthetic Z30 of 4.8M rows, holdings index
1.6M, bib index 1.6M; 2 vCPUs): inputs 0.37 GB in arrow, peak RSS 1.2-1.3 GB (0.7 GB of it
reading the Parquet parts), all checks in 10-15 s. The largest temporaries are one
int64 and one argsort array over Z30 (2 × 38 MB) and the trimmed barcodes. Patrons,
loans, requests and fines are two orders of magnitude smaller.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aleph2alma.validate.columns import (
    SYSNO_WIDTH,
    Column,
    KeySet,
    column,
    duplicates,
    mask_of,
    strings_at,
    sysno_text,
    trimmed,
    unmapped_rows,
)
from aleph2alma.validate.issues import Issue
from aleph2alma.validate.rules import RULES, Rules

OPEN_LOAN_STATUSES = ("A", "L", "C")
"""Z36_STATUS values of a loan that is still out: A active, L lost, C claimed returned (all three
migrate as open loans; returned loans leave Z36 for Z36H)."""

PATRON_KEY_WIDTH = 12
ITEM_KEY_WIDTH = 15

NEEDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "Z30": (
        "Z30_REC_KEY",
        "Z30_BARCODE",
        "Z30_SUB_LIBRARY",
        "Z30_COLLECTION",
        "Z30_ITEM_STATUS",
        "Z30_HOL_DOC_NUMBER_X",
    ),
    "Z303": ("Z303_REC_KEY", "Z303_PRIMARY_ID"),
    "Z305": ("Z305_REC_KEY", "Z305_BOR_TYPE", "Z305_BOR_STATUS", "Z305_EXPIRY_DATE"),
    "Z36": ("Z36_REC_KEY", "Z36_ID", "Z36_STATUS"),
    "Z37": ("Z37_REC_KEY", "Z37_ID"),
    "Z31": ("Z31_REC_KEY",),
    "Z103": ("Z103_REC_KEY", "Z103_LKR_TYPE", "Z103_REC_KEY_1"),
}
"""The only Z-table columns the checks read (no names, addresses or PINs); Z103's ADM → BIB
links are read with ``aleph.links``."""

DICTIONARY_COLUMNS: dict[str, tuple[str, ...]] = {
    "Z30": ("Z30_SUB_LIBRARY", "Z30_COLLECTION", "Z30_ITEM_STATUS"),
    "Z305": ("Z305_BOR_TYPE", "Z305_BOR_STATUS"),
    "Z36": ("Z36_STATUS",),
}
"""Low-cardinality code columns, read dictionary-encoded."""


class FormLookups(Protocol):
    """What the checks ask of the migration form (``alma.form.MigrationForm``).

    Each lookup honours the form's ``*`` fallback rows and returns None when a code is
    not mapped at all.
    """

    def location_for(self, sub_library: str, collection: str, /) -> tuple[str, str] | None: ...

    def item_policy_for(self, item_status: str, /) -> str | None: ...

    def user_group_for(self, bor_status: str, bor_type: str, /) -> str | None: ...


@dataclass
class TableInputs:
    """The raw tables (only ``NEEDED_COLUMNS`` required) and the transforms' indexes."""

    z30: pa.Table
    z303: pa.Table
    z305: pa.Table
    z36: pa.Table
    z37: pa.Table
    z31: pa.Table
    bib_index: pa.Table
    holdings_index: pa.Table
    # HOL sysnos withheld because their bib was rejected: they exist, so their items are not
    # orphans (the items transform withholds them as holdings_not_delivered).
    withheld_holdings: tuple[str, ...] = ()
    # ADM → BIB links (Z103) of the items with no HOL link (``aleph.links.ADM_LINKS_SCHEMA``):
    # such an item reaches its bib through its ADM record.
    adm_links: pa.Table = field(default_factory=lambda: _no_adm_links())

    def totals(self) -> dict[str, int]:
        """Records per entity: the denominators of the rules' percentages."""
        return {
            "bibs": self.bib_index.num_rows,
            "holdings": self.holdings_index.num_rows,
            "items": self.z30.num_rows,
            "patrons": self.z303.num_rows,
            "loans": self.z36.num_rows,
            "requests": self.z37.num_rows,
            "fines": self.z31.num_rows,
        }


def _no_adm_links() -> pa.Table:
    from aleph2alma.aleph.links import ADM_LINKS_SCHEMA

    return ADM_LINKS_SCHEMA.empty_table()


def read_parts(sources: Iterable[str | Path | BinaryIO], table: str) -> pa.Table:
    """Concatenate the Parquet parts of one Z-table: only the columns the checks need, code
    columns dictionary-encoded, other text with its trailing blanks removed."""
    import pyarrow.parquet as pq

    columns = list(NEEDED_COLUMNS[table])
    dictionary = list(DICTIONARY_COLUMNS.get(table, ()))
    parts = []
    for src in sources:
        part = pq.read_table(src, columns=columns, read_dictionary=dictionary)
        for i, name in enumerate(part.column_names):  # drop the CHAR padding part by part: half the memory
            col = part.column(i)
            if name not in dictionary and (
                pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
            ):
                part = part.set_column(i, name, pc.utf8_rtrim_whitespace(col))
        parts.append(part)
    if not parts:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    return pa.concat_tables(parts, promote_options="permissive")


def _issues(rule: str, entity: str, ids: list[str], details: Iterable[str]) -> Iterator[Issue]:
    for record_id, detail in sorted(zip(ids, details, strict=True)):
        yield Issue(rule, entity, record_id, detail)


# --- the shared context -------------------------------------------------------------------


@dataclass
class CheckContext:
    """Inputs of one validation run and the key sets shared by several checks (built once)."""

    inputs: TableInputs
    form: FormLookups
    as_of: date

    @property
    def as_of_ymd(self) -> int:
        return self.as_of.year * 10000 + self.as_of.month * 100 + self.as_of.day

    @cached_property
    def item_keys(self) -> KeySet:
        return KeySet.of(trimmed(column(self.inputs.z30, "Z30_REC_KEY")))

    @cached_property
    def patron_keys(self) -> KeySet:
        return KeySet.of(trimmed(column(self.inputs.z303, "Z303_REC_KEY")))

    @cached_property
    def holdings_sysnos(self) -> KeySet:
        """Every HOL record that exists: the delivered ones and those withheld with their bib."""
        delivered = column(self.inputs.holdings_index, "sysno").cast(pa.string())
        withheld = pa.chunked_array([pa.array(self.inputs.withheld_holdings, pa.string())])
        return KeySet.of(sysno_text(pa.chunked_array(delivered.chunks + withheld.chunks, pa.string())))


# --- items ----------------------------------------------------------------------------------


def _item_ids(ctx: CheckContext, mask: np.ndarray) -> list[str]:
    return strings_at(column(ctx.inputs.z30, "Z30_REC_KEY"), mask)


def check_duplicate_barcode(ctx: CheckContext) -> Iterator[Issue]:
    """Every item whose (non-blank) barcode is shared with another item."""
    barcodes = trimmed(column(ctx.inputs.z30, "Z30_BARCODE"))
    bad, sizes = duplicates(barcodes)
    details = [
        f"barcode {v} shared by {n} items"
        for v, n in zip(strings_at(barcodes, bad), sizes[bad].tolist(), strict=True)
    ]
    yield from _issues("duplicate_barcode", "items", _item_ids(ctx, bad), details)


def check_missing_barcode(ctx: CheckContext) -> Iterator[Issue]:
    """Items with a blank or null Z30_BARCODE."""
    barcodes = trimmed(column(ctx.inputs.z30, "Z30_BARCODE"))
    bad = mask_of(pc.equal(barcodes, ""))
    ids = _item_ids(ctx, bad)
    yield from _issues("missing_barcode", "items", ids, ["Z30_BARCODE is blank"] * len(ids))


def check_orphan_item(ctx: CheckContext) -> Iterator[Issue]:
    """Items whose Z30_HOL_DOC_NUMBER_X is not a holdings record in the holdings index, or is
    blank while their ADM record has no Z103 link to a bib in the bib index."""
    z30 = ctx.inputs.z30
    hol = sysno_text(column(z30, "Z30_HOL_DOC_NUMBER_X"))
    bad = ~ctx.holdings_sysnos.contains(hol)
    no_hol = np.flatnonzero(bad & mask_of(pc.equal(hol, "")))
    adm = trimmed(column(z30, "Z30_REC_KEY"), 0, SYSNO_WIDTH).take(pa.array(no_hol))
    bib, found = _adm_bibs(ctx, adm)
    bad[no_hol[found]] = False
    unlinked = zip(strings_at(adm, ~found), bib.filter(pa.array(~found)).to_pylist(), strict=True)
    details = []
    for h in strings_at(hol, bad):
        if h:
            details.append(f"Z30_HOL_DOC_NUMBER_X {h}: no such holdings record")
            continue
        adm_doc, linked = next(unlinked)
        details.append(
            f"Z30_HOL_DOC_NUMBER_X is blank and ADM record {adm_doc} "
            + (f"links (Z103) to {linked}: no such bib record" if linked else "has no Z103 link to a bib")
        )
    yield from _issues("orphan_item", "items", _item_ids(ctx, bad), details)


def _adm_bibs(ctx: CheckContext, adm: Column) -> tuple[pa.Array, np.ndarray]:
    """Per ADM doc number: its Z103 bib as ``library:sysno`` (null: no ADM → BIB link), and
    whether the bib index has that bib."""
    links = ctx.inputs.adm_links
    bib = pc.binary_join_element_wise(
        trimmed(links.column("bib_library")), sysno_text(links.column("bib_sysno")), ":"
    )
    index = ctx.inputs.bib_index
    sysno = sysno_text(column(index, "sysno"))
    near = pa.array(KeySet.of(sysno_text(links.column("bib_sysno"))).contains(sysno))
    known = pc.binary_join_element_wise(
        trimmed(column(index, "library")).filter(near), sysno.filter(near), ":"
    )
    exists = pc.is_in(bib, value_set=_whole(known))
    at = pc.index_in(adm, value_set=_whole(links.column("adm")))
    return _whole(bib).take(at), mask_of(_whole(exists).take(at))


def _whole(col: Column) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def check_unmapped_location(ctx: CheckContext) -> Iterator[Issue]:
    """Items whose sub-library + collection has no locations row in the form (fallbacks included)."""
    sub, coll = column(ctx.inputs.z30, "Z30_SUB_LIBRARY"), column(ctx.inputs.z30, "Z30_COLLECTION")
    bad = unmapped_rows([sub, coll], lambda s, c: ctx.form.location_for(s, c) is not None)
    details = [
        f"sub-library {s or '(blank)'} collection {c or '(blank)'} is not in the locations tab"
        for s, c in zip(strings_at(sub, bad), strings_at(coll, bad), strict=True)
    ]
    yield from _issues("unmapped_location", "items", _item_ids(ctx, bad), details)


def check_unmapped_item_status(ctx: CheckContext) -> Iterator[Issue]:
    """Items whose Z30_ITEM_STATUS has no item-policy row in the form (fallbacks included)."""
    status = column(ctx.inputs.z30, "Z30_ITEM_STATUS")
    bad = unmapped_rows([status], lambda s: ctx.form.item_policy_for(s) is not None)
    details = [f"item status {s or '(blank)'} is not in the item-policy tab" for s in strings_at(status, bad)]
    yield from _issues("unmapped_item_status", "items", _item_ids(ctx, bad), details)


# --- patrons --------------------------------------------------------------------------------


def check_duplicate_patron_id(ctx: CheckContext) -> Iterator[Issue]:
    """Every Z303 patron whose (non-blank) Z303_PRIMARY_ID is shared with another Z303 record."""
    primary = trimmed(column(ctx.inputs.z303, "Z303_PRIMARY_ID"))
    bad, sizes = duplicates(primary)
    details = [
        f"primary id {v} shared by {n} patrons"
        for v, n in zip(strings_at(primary, bad), sizes[bad].tolist(), strict=True)
    ]
    yield from _issues(
        "duplicate_patron_id", "patrons", strings_at(column(ctx.inputs.z303, "Z303_REC_KEY"), bad), details
    )


def check_unmapped_user_group(ctx: CheckContext) -> Iterator[Issue]:
    """Patrons with a Z305 row whose borrower status + type has no user-group row (one issue per patron)."""
    z305 = ctx.inputs.z305
    status, btype = column(z305, "Z305_BOR_STATUS"), column(z305, "Z305_BOR_TYPE")
    bad = unmapped_rows([status, btype], lambda s, t: ctx.form.user_group_for(s, t) is not None)
    keys = strings_at(column(z305, "Z305_REC_KEY"), bad)
    per_patron: dict[str, list[str]] = defaultdict(list)
    for key, s, t in zip(keys, strings_at(status, bad), strings_at(btype, bad), strict=True):
        sub = key[PATRON_KEY_WIDTH:].strip() or "(no sub-library)"
        per_patron[key[:PATRON_KEY_WIDTH].strip()].append(
            f"{sub}: bor_status {s or '(blank)'} bor_type {t or '(blank)'}"
        )
    details = ["; ".join(sorted(v)) + " not in the user-group tab" for v in per_patron.values()]
    yield from _issues("unmapped_user_group", "patrons", list(per_patron), details)


def check_expired_patron_with_loans(ctx: CheckContext) -> Iterator[Issue]:
    """Z303 patrons whose every Z305 expiry date is before ``as_of`` and who have ≥ 1 active loan.

    An expiry of 0 (unset) never lapses; a patron with no Z305 row is not judged.
    """
    z305 = ctx.inputs.z305
    patron = trimmed(column(z305, "Z305_REC_KEY"), 0, PATRON_KEY_WIDTH)
    expiry = pc.fill_null(pc.cast(column(z305, "Z305_EXPIRY_DATE"), pa.int64()), 0)
    expiry = pc.if_else(pc.equal(expiry, 0), 99_999_999, expiry)
    latest = pa.table({"patron": patron, "expiry": expiry}).group_by("patron").aggregate([("expiry", "max")])
    lapsed = latest.filter(pc.less(latest["expiry_max"], ctx.as_of_ymd))
    lapsed = lapsed.filter(pa.array(ctx.patron_keys.contains(lapsed["patron"])))
    if lapsed.num_rows == 0:
        return
    z36 = ctx.inputs.z36
    out = pc.is_in(trimmed(column(z36, "Z36_STATUS")), value_set=pa.array(OPEN_LOAN_STATUSES))
    borrowers = trimmed(column(z36, "Z36_ID"), 0, PATRON_KEY_WIDTH).filter(out)
    loans = pc.value_counts(borrowers)
    loan_count = dict(zip(loans.field("values").to_pylist(), loans.field("counts").to_pylist(), strict=True))
    ids, details = [], []
    for key, expiry_max in zip(lapsed["patron"].to_pylist(), lapsed["expiry_max"].to_pylist(), strict=True):
        if loan_count.get(key, 0):
            ids.append(key)
            day = f"{expiry_max // 10000:04d}-{expiry_max // 100 % 100:02d}-{expiry_max % 100:02d}"
            details.append(f"registration expired {day}; {loan_count[key]} open loan(s)")
    yield from _issues("expired_patron_with_loans", "patrons", ids, details)


# --- circulation ----------------------------------------------------------------------------


def _missing(
    rule: str,
    entity: str,
    table: pa.Table,
    key_col: str,
    ref_col: str,
    ref_width: int,
    keys: KeySet,
    what: str,
) -> Iterator[Issue]:
    """Rows whose reference (the first ``ref_width`` characters of ``ref_col``) is not in ``keys``."""
    ref = trimmed(column(table, ref_col), 0, ref_width)
    bad = ~keys.contains(ref)
    label = ref_col if ref_col != key_col else f"{ref_col}[:{ref_width}]"
    details = [f"{label} {r}: no such {what}" if r else f"{label} is blank" for r in strings_at(ref, bad)]
    yield from _issues(rule, entity, strings_at(column(table, key_col), bad), details)


def check_loan_missing_item(ctx: CheckContext) -> Iterator[Issue]:
    """Loans whose Z36_REC_KEY is not a Z30 item key."""
    yield from _missing(
        "loan_missing_item",
        "loans",
        ctx.inputs.z36,
        "Z36_REC_KEY",
        "Z36_REC_KEY",
        ITEM_KEY_WIDTH,
        ctx.item_keys,
        "item (Z30)",
    )


def check_loan_missing_patron(ctx: CheckContext) -> Iterator[Issue]:
    """Loans whose Z36_ID is not a Z303 patron key."""
    yield from _missing(
        "loan_missing_patron",
        "loans",
        ctx.inputs.z36,
        "Z36_REC_KEY",
        "Z36_ID",
        PATRON_KEY_WIDTH,
        ctx.patron_keys,
        "patron (Z303)",
    )


def check_request_missing_item(ctx: CheckContext) -> Iterator[Issue]:
    """Requests whose item part of the key (Z37_REC_KEY[:15]) is not a Z30 item key."""
    yield from _missing(
        "request_missing_item",
        "requests",
        ctx.inputs.z37,
        "Z37_REC_KEY",
        "Z37_REC_KEY",
        ITEM_KEY_WIDTH,
        ctx.item_keys,
        "item (Z30)",
    )


def check_request_missing_patron(ctx: CheckContext) -> Iterator[Issue]:
    """Requests whose Z37_ID is not a Z303 patron key."""
    yield from _missing(
        "request_missing_patron",
        "requests",
        ctx.inputs.z37,
        "Z37_REC_KEY",
        "Z37_ID",
        PATRON_KEY_WIDTH,
        ctx.patron_keys,
        "patron (Z303)",
    )


def check_fine_missing_patron(ctx: CheckContext) -> Iterator[Issue]:
    """Cash transactions whose patron part of the key (Z31_REC_KEY[:12]) is not a Z303 patron key."""
    yield from _missing(
        "fine_missing_patron",
        "fines",
        ctx.inputs.z31,
        "Z31_REC_KEY",
        "Z31_REC_KEY",
        PATRON_KEY_WIDTH,
        ctx.patron_keys,
        "patron (Z303)",
    )


Check = Callable[[CheckContext], Iterable[Issue]]

CHECKS: dict[str, Check] = {
    "duplicate_barcode": check_duplicate_barcode,
    "missing_barcode": check_missing_barcode,
    "orphan_item": check_orphan_item,
    "unmapped_location": check_unmapped_location,
    "unmapped_item_status": check_unmapped_item_status,
    "duplicate_patron_id": check_duplicate_patron_id,
    "unmapped_user_group": check_unmapped_user_group,
    "expired_patron_with_loans": check_expired_patron_with_loans,
    "loan_missing_item": check_loan_missing_item,
    "loan_missing_patron": check_loan_missing_patron,
    "request_missing_item": check_request_missing_item,
    "request_missing_patron": check_request_missing_patron,
    "fine_missing_patron": check_fine_missing_patron,
}
"""Rule id → check over the tables. Bib rules are not here: the bib transform emits them."""


def check_tables(
    inputs: TableInputs, form: FormLookups, as_of: date, rules: Rules = RULES
) -> Iterator[Issue]:
    """Every table check whose rule is in ``rules``, in registry order; issues sorted by record id
    per rule."""
    ctx = CheckContext(inputs, form, as_of)
    for rule_id in rules:
        check = CHECKS.get(rule_id)
        if check is not None:
            yield from check(ctx)


def rejected_ids(issues: Iterable[Issue], rules: Rules = RULES) -> dict[str, dict[str, str]]:
    """Entity → record id → the first rule (in stream order) that rejects the record."""
    out: dict[str, dict[str, str]] = {}
    for issue in issues:
        rule = rules.get(issue.rule)
        if rule is None:
            raise ValueError(f"issue of unknown rule {issue.rule!r}; known rule ids: {', '.join(rules)}")
        if rule.rejects_record:
            out.setdefault(issue.entity, {}).setdefault(issue.record_id, rule.id)
    return out
