"""The statistics workbook Ex Libris returns after each load: read it tolerantly, write it alike.

After a test or cutover load Ex Libris sends an ``.xlsx``/``.xlsm`` with one tab per
functional area (``AREAS``: bib_inventory, vendor, fund, fund_tx, p_order, invoice, patron,
loan, request, course, p2e) and one for the MARC holdings (``SUB_AREA_TABS``: the key
``bib_inventory.holdings``, as when the bib_inventory tab counts them). Each tab starts with
a block of counts ("Total records in file", "Loaded", "Rejected"), then lists every record
that did not migrate with its source id and the reason. The exact layout changes from load
to load and from one Ex Libris analyst to the next, so the reader looks for meaning, not
positions:

- **Sheets** are matched to areas by name, case-insensitively and ignoring blanks, ``-``
  and ``_`` (``StatisticsAliases.areas``: "Bib Inventory", "patrons", "Holdings", …). A sheet
  that names no area is listed in ``StatisticsWorkbook.unknown_sheets`` (and logged), never
  an error. A holdings tab's counts and rejects are ``bib_inventory.holdings``.
- **Counts**: a row whose first non-blank cell is a label and whose next non-blank cell is a
  number. Labels are compared as words, lower-cased, punctuation and filler words
  ("records", "number", "of", …) dropped, against ``COUNT_ALIASES`` (``total``,
  ``loaded``, ``rejected``). Blank rows, titles and notes around them are skipped.
- **Sub-areas**: bib_inventory counts bibs, holdings, items and portfolios. A label that
  names one ("Items loaded", "Total holdings in file") or a heading row that names one
  ("Holdings", "Rejected items") puts the counts and tables after it under the key
  ``bib_inventory.holdings`` etc. (``SUB_AREAS``); bibs are ``bib_inventory`` itself.
- **Rejected records**: a header row holding an id column (``ID_HEADERS``, the first in
  that order wins: "Aleph ID", "Source ID", "Record ID", "Code/ID", "Primary ID",
  "Barcode", …) and a reason column (``REASON_HEADERS``). The rows below it, blank rows
  skipped, are (id, reason) pairs until the next header, heading or count row. A
  ``type`` column, when present, sends a row to the sub-area it names.

Every alias list is a field of ``StatisticsAliases``: pass your own to
``read_statistics_workbook`` when a workbook uses other words.

A workbook that cannot be read this way raises ``StatisticsWorkbookError`` naming the sheet
and row: a count label with a value that is not a whole number, one count given twice with
different values, a rejected row with no id, two sheets for one area (or a holdings tab
beside holdings counted on the bib_inventory tab), or a known area's
sheet in which neither counts nor a rejected-records table can be found.

Ids are kept as Excel holds them: an Aleph number typed as a number loses its leading zeros
(``000012345`` → ``12345``); the reconciliation counts them, it does not join on them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

AREAS: tuple[str, ...] = (
    "bib_inventory",
    "vendor",
    "fund",
    "fund_tx",
    "p_order",
    "invoice",
    "patron",
    "loan",
    "request",
    "course",
    "p2e",
)
"""The tabs Ex Libris' statistics workbook may hold, in its order."""

SUB_AREAS: dict[str, tuple[str, ...]] = {"bib_inventory": ("holdings", "items", "portfolios")}
"""Areas whose tab counts more than one kind of record: area → sub-areas (keys ``area.sub``)."""

SUB_AREA_TABS: dict[str, str] = {"bib_inventory.holdings": "holdings"}
"""Sub-areas with a tab of their own (key → sheet name written), after their area's tab."""

AREA_FOR_ENTITY: dict[str, str] = {
    "bibs": "bib_inventory",
    "holdings": "bib_inventory.holdings",
    "items": "bib_inventory.items",
    "portfolios": "bib_inventory.portfolios",
    "vendors": "vendor",
    "budgets": "fund",
    "orders": "p_order",
    "invoices": "invoice",
    "patrons": "patron",
    "loans": "loan",
    "requests": "request",
    "courses": "course",
    "p2e": "p2e",
}
"""Our entity → the workbook key that counts it (fines have no tab of their own: none)."""

COUNT_FIELDS = ("total", "loaded", "rejected")
EXCEL_ROWS = 1_048_576
"""Rows of an Excel sheet: a statistics sheet is read to at most this many."""

FILLER_WORDS = frozenset(
    {"records", "record", "rows", "row", "number", "no", "of", "the", "count", "#", "nr"}
)
"""Words a count label may carry without changing its meaning."""

HEADING_WORDS = frozenset(
    {"rejected", "not", "migrated", "loaded", "counts", "statistics", "summary", "list"}
)
"""Words a heading row may carry beside the sub-area it names ("Rejected items")."""


@dataclass(frozen=True)
class StatisticsAliases:
    """The words the reader recognises. Replace a field (``dataclasses.replace``) to add your own."""

    areas: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "bib_inventory": ("bib_inventory", "bib inventory", "inventory", "bibs", "bib"),
            "vendor": ("vendor", "vendors"),
            "fund": ("fund", "funds", "budget", "budgets"),
            "fund_tx": ("fund_tx", "fund transactions", "fund transaction", "fund tx", "transactions"),
            "p_order": ("p_order", "po", "orders", "order", "purchase orders", "po lines", "pol"),
            "invoice": ("invoice", "invoices"),
            "patron": ("patron", "patrons", "user", "users"),
            "loan": ("loan", "loans"),
            "request": ("request", "requests", "holds", "hold requests"),
            "course": ("course", "courses", "course reserves", "reading lists"),
            "p2e": ("p2e", "physical to electronic"),
            "bib_inventory.holdings": ("holdings", "holding", "holdings records", "mfhd", "mfhds", "hol"),
        }
    )
    """Area (or sub-area with a tab: ``SUB_AREA_TABS``) → sheet names (compared lower-cased,
    without blanks, ``-`` and ``_``)."""
    counts: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "total": (
                "total records in file",
                "total",
                "total in file",
                "records in file",
                "in file",
                "input",
                "total input",
                "extracted",
                "delivered",
                "received",
                "total records",
            ),
            "loaded": (
                "loaded",
                "migrated",
                "successfully loaded",
                "successfully migrated",
                "loaded successfully",
                "created",
                "in alma",
                "records in alma",
                "total loaded",
                "total migrated",
            ),
            "rejected": (
                "rejected",
                "not loaded",
                "not migrated",
                "failed",
                "total rejected",
                "rejected records",
            ),
        }
    )
    """Count field → labels (compared as words, filler words dropped)."""
    nouns: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "bib_inventory": ("bibs", "bib", "bibliographic", "bibliographic records", "titles", "mms"),
            "bib_inventory.holdings": ("holdings", "holding", "mfhd", "mfhds"),
            "bib_inventory.items": ("items", "item", "physical items"),
            "bib_inventory.portfolios": ("portfolios", "portfolio", "electronic portfolios"),
            "vendor": ("vendors", "vendor"),
            "fund": ("funds", "fund"),
            "fund_tx": ("transactions", "transaction"),
            "p_order": ("orders", "order", "po lines", "pol", "polines"),
            "invoice": ("invoices", "invoice"),
            "patron": ("patrons", "patron", "users", "user"),
            "loan": ("loans", "loan"),
            "request": ("requests", "request", "holds"),
            "course": ("courses", "course"),
            "p2e": ("p2e", "portfolios", "databases"),
        }
    )
    """Workbook key → the nouns that name its records in labels, headings and type columns."""
    id_headers: tuple[str, ...] = (
        "aleph id",
        "aleph system number",
        "aleph key",
        "source id",
        "record id",
        "code/id",
        "code / id",
        "primary id",
        "user primary id",
        "barcode",
        "item barcode",
        "identifier",
        "id",
        "code",
    )
    """Headers of the rejected record's id column, most preferred first."""
    reason_headers: tuple[str, ...] = (
        "reason",
        "rejection reason",
        "reason for rejection",
        "reject reason",
        "error",
        "error message",
        "failure reason",
        "message",
        "description",
    )
    type_headers: tuple[str, ...] = ("type", "record type", "entity", "object type")


DEFAULT_ALIASES = StatisticsAliases()


class StatisticsWorkbookError(ValueError):
    """The workbook cannot be read: the message names the file, sheet and row."""


@dataclass
class AreaStatistics:
    """What the workbook says of one area (or sub-area): counts (None when not given) and rejects."""

    area: str
    total: int | None = None
    loaded: int | None = None
    rejected: int | None = None
    rejected_records: list[tuple[str, str]] = field(default_factory=list)
    """(source id, reason) of every record that did not migrate, in workbook order."""

    @property
    def rejected_count(self) -> int:
        """The rejected count, or the number of listed rejects when the count is not given."""
        return self.rejected if self.rejected is not None else len(self.rejected_records)

    def to_dict(self) -> dict[str, Any]:
        return {
            "area": self.area,
            "total": self.total,
            "loaded": self.loaded,
            "rejected": self.rejected,
            "rejected_records": [list(r) for r in self.rejected_records],
        }


class StatisticsWorkbook(dict[str, AreaStatistics]):
    """Workbook key (``patron``, ``bib_inventory.items``, …) → statistics; plus what was not read."""

    def __init__(
        self,
        areas: Mapping[str, AreaStatistics] | None = None,
        unknown_sheets: Iterable[str] = (),
        source: str = "",
    ) -> None:
        super().__init__(areas or {})
        self.unknown_sheets: list[str] = list(unknown_sheets)
        """Sheets that name no known area: listed, not read."""
        self.source = source


# --- text helpers -------------------------------------------------------------------------

_PUNCT = re.compile(r"[^\w#%]+")


def _words(text: str) -> tuple[str, ...]:
    """Lower-case words of a label, punctuation and filler words dropped."""
    return tuple(w for w in _PUNCT.sub(" ", text.lower().replace("_", " ")).split() if w not in FILLER_WORDS)


def _header(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(":：").split())


def _sheet_key(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", text.lower())


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).strip()


def _whole_number(value: Any) -> int | None:
    """A count cell as an int; None when it is not a whole number ≥ 0."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and value >= 0 else None
    if isinstance(value, str):
        digits = re.sub(r"[\s,\u00a0\u202f']", "", value)
        return int(digits) if digits.isdigit() else None
    return None


# --- reading ------------------------------------------------------------------------------


@dataclass
class _Vocabulary:
    """The aliases of one area, precomputed as word tuples."""

    area: str
    counts: dict[tuple[str, ...], str]
    nouns: list[tuple[tuple[str, ...], str]]  # (noun words, key), longest first
    id_headers: dict[str, int]
    reason_headers: set[str]
    type_headers: set[str]

    @classmethod
    def build(cls, area: str, aliases: StatisticsAliases) -> _Vocabulary:
        counts = {_words(label): name for name, labels in aliases.counts.items() for label in labels}
        keys = [area, *(f"{area}.{sub}" for sub in SUB_AREAS.get(area, ()))]
        nouns = [(_words(noun), key) for key in keys for noun in aliases.nouns.get(key, ())]
        nouns = sorted((n for n in nouns if n[0]), key=lambda n: -len(n[0]))
        return cls(
            area,
            counts,
            nouns,
            {_header(h): i for i, h in enumerate(aliases.id_headers)},
            {_header(h) for h in aliases.reason_headers},
            {_header(h) for h in aliases.type_headers},
        )

    def split_noun(self, words: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
        """(key named, the other words) when ``words`` hold one of the area's nouns."""
        for noun, key in self.nouns:
            for i in range(len(words) - len(noun) + 1):
                if words[i : i + len(noun)] == noun:
                    return key, words[:i] + words[i + len(noun) :]
        return None

    def count_label(self, words: tuple[str, ...]) -> tuple[str | None, str] | None:
        """(key or None for the current section, count field) of a count label."""
        if words in self.counts:
            return None, self.counts[words]
        split = self.split_noun(words)
        if split is not None and split[1] in self.counts:
            return split[0], self.counts[split[1]]
        return None

    def heading(self, words: tuple[str, ...]) -> str | None:
        split = self.split_noun(words)
        if split is not None and set(split[1]) <= HEADING_WORDS:
            return split[0]
        return None

    def key_of_type(self, text: str) -> str | None:
        split = self.split_noun(_words(text))
        return split[0] if split is not None and not split[1] else None


@dataclass
class _Table:
    id_col: int
    reason_col: int
    type_col: int | None


def _cells(row: tuple[Any, ...]) -> list[tuple[int, Any]]:
    return [(i, v) for i, v in enumerate(row) if _text(v) != ""]


class _SheetReader:
    """Reads one sheet row by row: counts, headings and rejected-records tables."""

    def __init__(self, source: str, sheet: str, vocab: _Vocabulary) -> None:
        self.where = f"{source}, sheet {sheet!r}"
        self.vocab = vocab
        self.section = vocab.area
        self.table: _Table | None = None
        self.stats: dict[str, AreaStatistics] = {}
        self.count_rows: dict[tuple[str, str], int] = {}
        self.found = False

    def fail(self, row_no: int, message: str) -> StatisticsWorkbookError:
        return StatisticsWorkbookError(f"{self.where}, row {row_no}: {message}")

    def area(self, key: str) -> AreaStatistics:
        if key not in self.stats:
            self.stats[key] = AreaStatistics(key)
        return self.stats[key]

    def header(self, row: tuple[Any, ...]) -> _Table | None:
        ids = [
            (self.vocab.id_headers[h], i)
            for i, v in enumerate(row)
            if (h := _header(_text(v))) in self.vocab.id_headers
        ]
        reasons = [i for i, v in enumerate(row) if _header(_text(v)) in self.vocab.reason_headers]
        types = [i for i, v in enumerate(row) if _header(_text(v)) in self.vocab.type_headers]
        if not ids or not reasons:
            return None
        id_col = min(ids)[1]
        reason_col = next((i for i in reasons if i != id_col), None)
        if reason_col is None:
            return None
        return _Table(id_col, reason_col, next((i for i in types if i not in (id_col, reason_col)), None))

    def read(self, rows: Iterable[tuple[Any, ...]]) -> dict[str, AreaStatistics]:
        for row_no, row in enumerate(rows, start=1):
            cells = _cells(row)
            if not cells:
                continue
            if self.counts(row_no, cells) or self.new_table(row) or self.new_heading(cells):
                continue
            if self.table is not None:
                self.record(row_no, row)
        return self.stats

    def counts(self, row_no: int, cells: list[tuple[int, Any]]) -> bool:
        if len(cells) < 2 or not isinstance(cells[0][1], str):
            return False
        label = self.vocab.count_label(_words(cells[0][1]))
        if label is None:
            return False
        key, name = label
        value = _whole_number(cells[1][1])
        if value is None:
            raise self.fail(
                row_no, f"{cells[0][1].strip()!r} is {_text(cells[1][1])!r}, not a whole number ≥ 0"
            )
        key = key or self.section
        stats = self.area(key)
        previous = getattr(stats, name)
        if previous is not None and previous != value:
            raise self.fail(
                row_no, f"{key} {name} given twice: {previous} (row {self.count_rows[key, name]}) and {value}"
            )
        setattr(stats, name, value)
        self.count_rows[key, name] = row_no
        self.table = None
        self.found = True
        return True

    def new_table(self, row: tuple[Any, ...]) -> bool:
        table = self.header(row)
        if table is None:
            return False
        self.table = table
        self.area(self.section)
        self.found = True
        return True

    def new_heading(self, cells: list[tuple[int, Any]]) -> bool:
        if len(cells) != 1 or not isinstance(cells[0][1], str):
            return False
        key = self.vocab.heading(_words(cells[0][1]))
        if key is None:
            return False
        self.section, self.table = key, None
        return True

    def record(self, row_no: int, row: tuple[Any, ...]) -> None:
        assert self.table is not None
        t = self.table

        def cell(i: int | None) -> str:
            return _text(row[i]) if i is not None and i < len(row) else ""

        record_id, reason = cell(t.id_col), cell(t.reason_col)
        if not record_id:
            raise self.fail(
                row_no,
                f"rejected record with no id (reason {reason!r})"
                if reason
                else "row in the rejected-records table with no id and no reason",
            )
        key = self.section
        kind = cell(t.type_col)
        if kind:
            key = self.vocab.key_of_type(kind) or key
        self.area(key).rejected_records.append((record_id, reason))


def area_of_sheet(name: str, aliases: StatisticsAliases = DEFAULT_ALIASES) -> str | None:
    """The area a sheet name stands for, or None."""
    wanted = _sheet_key(name)
    for area, names in aliases.areas.items():
        if wanted in {_sheet_key(n) for n in names}:
            return area
    return None


def read_statistics_workbook(path: Path, aliases: StatisticsAliases = DEFAULT_ALIASES) -> StatisticsWorkbook:
    """Read an Ex Libris statistics workbook: key (``patron``, ``bib_inventory.items``…) → statistics.

    Unknown sheets are listed in the result's ``unknown_sheets``; a malformed sheet raises
    ``StatisticsWorkbookError`` naming it and the row (see the module docstring).
    """
    from aleph2alma.alma.form_io import open_workbook, sheet_rows

    workbook = open_workbook(
        path, StatisticsWorkbookError, "accepted: the workbook Ex Libris sent", kind=".xlsx/.xlsm workbook"
    )
    out = StatisticsWorkbook(source=str(path))
    seen: dict[str, str] = {}
    counted_on: dict[str, str] = {}  # key → the sheet that gave it
    try:
        for sheet in workbook.worksheets:
            area = area_of_sheet(sheet.title, aliases)
            if area is None:
                out.unknown_sheets.append(sheet.title)
                log.warning(
                    "%s: sheet %r names no statistics area (known: %s); not read",
                    path,
                    sheet.title,
                    ", ".join(aliases.areas),
                )
                continue
            if area in seen:
                raise StatisticsWorkbookError(
                    f"{path}: sheets {seen[area]!r} and {sheet.title!r} are both area {area!r}"
                )
            seen[area] = sheet.title
            reader = _SheetReader(str(path), sheet.title, _Vocabulary.build(area, aliases))
            # Rows as they are (the sheet's <dimension> is not trusted), at most Excel's own limit.
            where = f"{path}, sheet {sheet.title!r}"
            rows = [values for _, values in sheet_rows(sheet, where, StatisticsWorkbookError, EXCEL_ROWS)]
            stats = reader.read(rows)
            if not reader.found:
                if any(_cells(r) for r in rows):
                    raise StatisticsWorkbookError(
                        f"{path}, sheet {sheet.title!r}: neither counts ({', '.join(COUNT_FIELDS)}: "
                        "labels like 'Total records in file', 'Loaded', 'Rejected') nor a rejected-records "
                        "table (a header row with an id column such as 'Aleph ID' and a 'Reason' column) "
                        "found"
                    )
                stats = {area: AreaStatistics(area)}
            for key in stats:
                if key in counted_on:
                    raise StatisticsWorkbookError(
                        f"{path}: sheets {counted_on[key]!r} and {sheet.title!r} both count {key!r}"
                    )
                counted_on[key] = sheet.title
            out.update(stats)
    finally:
        workbook.close()
    return out


# --- writing ------------------------------------------------------------------------------

COUNT_LABELS = {"total": "Total records in file", "loaded": "Loaded", "rejected": "Rejected"}
SUB_AREA_TITLES = {"holdings": "Holdings", "items": "Items", "portfolios": "Portfolios"}


def _split_key(key: str) -> tuple[str, str | None]:
    area, _, sub = key.partition(".")
    if area not in AREAS or (sub and sub not in SUB_AREAS.get(area, ())):
        known = [*AREAS, *(f"{a}.{s}" for a, subs in SUB_AREAS.items() for s in subs)]
        raise ValueError(f"unknown statistics area {key!r}; known: {', '.join(known)}")
    return area, sub or None


def _sheets() -> Iterator[tuple[str, str]]:
    """(sheet name, area written on it) in the workbook's order: each area, then its own-tab sub-areas."""
    for area in AREAS:
        yield area, area
        for key, tab in SUB_AREA_TABS.items():
            if key.partition(".")[0] == area:
                yield tab, key


def _sheet_rows(area: str, sections: list[tuple[str | None, AreaStatistics]]) -> Iterator[list[Any]]:
    yield ["Area", area]
    for sub, stats in sections:
        yield []
        if sub is not None:
            yield [SUB_AREA_TITLES[sub]]
        for name in COUNT_FIELDS:
            value = getattr(stats, name)
            if value is not None:
                yield [COUNT_LABELS[name], value]
        if stats.rejected_records:
            yield []
            yield ["Aleph ID", "Reason"]
            for record_id, reason in stats.rejected_records:
                yield [record_id, reason]


def write_statistics_workbook(stats: Mapping[str, AreaStatistics], path: Path) -> None:
    """Write ``stats`` in the layout ``read_statistics_workbook`` reads (for the demo and tests).

    One sheet per area in ``AREAS`` order; a sub-area's counts and rejects follow a heading
    row naming it, except a sub-area with a tab of its own (``SUB_AREA_TABS``: holdings),
    written on that tab after its area's. Ids are written as text, so leading zeros survive.
    """
    from openpyxl import Workbook

    from aleph2alma.alma.form_io import text_cell

    by_sheet: dict[str, list[tuple[str | None, AreaStatistics]]] = {}
    for key, value in stats.items():
        area, sub = _split_key(key)
        if key in SUB_AREA_TABS:
            by_sheet.setdefault(key, []).append((None, value))
        else:
            by_sheet.setdefault(area, []).append((sub, value))
    if not by_sheet:
        raise ValueError("no statistics to write: a workbook needs at least one area")
    workbook = Workbook(write_only=True)
    for name, area in _sheets():
        if area not in by_sheet:
            continue
        sheet = workbook.create_sheet(name)
        sections = sorted(by_sheet[area], key=lambda s: (s[0] is not None, s[0] or ""))
        for row in _sheet_rows(name, sections):
            sheet.append([text_cell(sheet, v) for v in row])
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)
