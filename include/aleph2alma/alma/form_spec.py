"""The migration form's structure: tabs, columns, questionnaire keys, and the row checks.

Kept apart from the lookups (``form``) and the file formats (``form_io``) so both share one
definition of what a valid form is. ``CONVENTIONS`` is what a librarian reads (it is
written into every form as its README).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from aleph2alma.aleph.ztables import Z30, Z31, Z305, ZTable
from aleph2alma.errors import ConfigError

WILDCARD = "*"
NO_VALUE = "-"
COUNT = "count"
IN_DATA = "in_data"
FLAG_VALUES = ("Y", "N", "")

CONVENTIONS = """\
- One row per Aleph code (or sub-library + collection pair, bor status + bor type pair).
  Codes are compared exactly, after trimming blanks; keep them as text (01, not 1).
- A * alone in an Aleph column makes a fallback row, used when no exact row is mapped.
  The most specific row wins: exact, then (code, *), then (*, code), then (*, *).
  Each key, * included, may appear once: at most one fallback row per key shape.
- A row whose Alma code is blank is not mapped yet; lookups fall through to the * rows.
- locations: a blank alma_library_code means the library the libraries tab gives the
  sub-library; electronic is Y or N (blank = N).
- process_types: an Alma value of - means no process type (the item is in place).
- fee_types: new rows of Aleph's standard cash types (0003, 0004, 0005, 0040-0042) come
  pre-filled with a suggested Alma fee type; check them against your tab18.
- count and in_data are written by the generator from the latest code inventory and
  refreshed on every regeneration. Every other filled cell is kept as you set it; rows
  whose code is no longer in the data are kept with in_data = N.
- Extra columns (notes) and extra sheets/files are kept and ignored.
"""


class FormError(ConfigError):
    """The migration form is malformed; the message names file/sheet, row, column and value.

    A ``ConfigError``: the task fails at once (retrying reads the same form).
    """


@dataclass(frozen=True)
class TabSpec:
    """One tab of the migration form."""

    name: str
    keys: tuple[str, ...]  # Aleph columns: the row's key
    values: tuple[str, ...]  # Alma columns a librarian fills
    mapped_by: str  # the Alma column that must be filled for the row to count as mapped
    code_type: str | None  # the code inventory's code type that feeds the tab
    doc: str
    flags: tuple[str, ...] = ()  # Y/N columns
    none_allowed: bool = False  # NO_VALUE ("-") accepted in mapped_by: "deliberately nothing"
    optional: tuple[str, ...] = (COUNT, IN_DATA)  # written by the generator, not required on load

    @property
    def required(self) -> tuple[str, ...]:
        return self.keys + self.values

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional


def _width(table: ZTable, column: str) -> int:
    return next(c.width for c in table.columns if c.name == column)


# Aleph key column -> (Z-table column it holds, CHAR width): a longer code can never match.
KEY_WIDTHS: dict[str, tuple[str, int]] = {
    "aleph_sub_library": ("Z30_SUB_LIBRARY", _width(Z30, "Z30_SUB_LIBRARY")),
    "aleph_collection": ("Z30_COLLECTION", _width(Z30, "Z30_COLLECTION")),
    "aleph_item_status": ("Z30_ITEM_STATUS", _width(Z30, "Z30_ITEM_STATUS")),
    "aleph_item_process_status": ("Z30_ITEM_PROCESS_STATUS", _width(Z30, "Z30_ITEM_PROCESS_STATUS")),
    "aleph_material": ("Z30_MATERIAL", _width(Z30, "Z30_MATERIAL")),
    "aleph_bor_status": ("Z305_BOR_STATUS", _width(Z305, "Z305_BOR_STATUS")),
    "aleph_bor_type": ("Z305_BOR_TYPE", _width(Z305, "Z305_BOR_TYPE")),
    "aleph_fine_type": ("Z31_TYPE", _width(Z31, "Z31_TYPE")),
}

MAPPING_TABS: tuple[TabSpec, ...] = (
    TabSpec(
        "libraries",
        ("aleph_sub_library",),
        ("alma_library_code", "alma_library_name"),
        "alma_library_code",
        "sub_library",
        "Aleph sub-library → Alma library",
    ),
    TabSpec(
        "locations",
        ("aleph_sub_library", "aleph_collection"),
        ("alma_library_code", "alma_location_code", "alma_location_name", "electronic"),
        "alma_location_code",
        "collection",
        "Aleph sub-library + collection → Alma library + location (blank library: the libraries tab's)",
        flags=("electronic",),
    ),
    TabSpec(
        "item_policies",
        ("aleph_item_status",),
        ("alma_item_policy",),
        "alma_item_policy",
        "item_status",
        "Aleph item status → Alma item policy",
    ),
    TabSpec(
        "process_types",
        ("aleph_item_process_status",),
        ("alma_process_type",),
        "alma_process_type",
        "item_process_status",
        "Aleph item process status → Alma process type ('-' = none, item in place)",
        none_allowed=True,
    ),
    TabSpec(
        "material_types",
        ("aleph_material",),
        ("alma_material_type",),
        "alma_material_type",
        "material",
        "Aleph material → Alma material type",
    ),
    TabSpec(
        "user_groups",
        ("aleph_bor_status", "aleph_bor_type"),
        ("alma_user_group",),
        "alma_user_group",
        "user_group",
        "Aleph bor status + bor type → Alma user group",
    ),
    TabSpec(
        "fee_types",
        ("aleph_fine_type",),
        ("alma_fee_type",),
        "alma_fee_type",
        "fine_type",
        "Aleph cash type (Z31_TYPE, tab18) → Alma fine/fee type (new rows pre-filled for Aleph's "
        "standard codes; unmapped → OTHER)",
    ),
)
DEFAULTS_TAB = TabSpec(
    "defaults",
    ("key",),
    ("value",),
    "value",
    None,
    "Questionnaire values of the migration form",
    optional=("description",),
)
TABS: dict[str, TabSpec] = {spec.name: spec for spec in (*MAPPING_TABS, DEFAULTS_TAB)}

COLUMN_DOCS: dict[str, str] = {
    "aleph_sub_library": "Aleph sub-library code (Z30_SUB_LIBRARY), or * for any",
    "aleph_collection": "Aleph collection code (Z30_COLLECTION) within the sub-library, or * for any",
    "aleph_item_status": "Aleph item status (Z30_ITEM_STATUS), or * for any",
    "aleph_item_process_status": "Aleph item process status (Z30_ITEM_PROCESS_STATUS; blank = none), or *",
    "aleph_material": "Aleph material (Z30_MATERIAL), or * for any",
    "aleph_bor_status": "Aleph patron status (Z305_BOR_STATUS), or * for any",
    "aleph_bor_type": "Aleph patron type (Z305_BOR_TYPE), or * for any",
    "aleph_fine_type": "Aleph cash type of a fine (Z31_TYPE, defined in tab18), or * for any",
    "alma_library_code": "Alma library code (locations: blank = the sub-library's library)",
    "alma_library_name": "Alma library name",
    "alma_location_code": "Alma location code",
    "alma_location_name": "Alma location name",
    "electronic": "Y if the location holds electronic resources, N (or blank) otherwise",
    "alma_item_policy": "Alma item policy code",
    "alma_process_type": "Alma process type code, or - for none (item in place)",
    "alma_material_type": "Alma material type code",
    "alma_user_group": "Alma user group code",
    "alma_fee_type": "Alma fine/fee type code (rest_fee.xsd type, e.g. OVERDUEFINE, LOSTITEMREPLACEMENTFEE)",
    COUNT: "Records with this code in the last profiled data (written by the generator)",
    IN_DATA: "Y if the code occurs in the last profiled data, N if the row is kept from an earlier form",
    "key": "Questionnaire key",
    "value": "Questionnaire answer",
    "description": "What the key means",
}


def _yyyymmdd(value: str) -> str | None:
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return "a date as YYYYMMDD"
    return None


def _currency(value: str) -> str | None:
    return None if re.fullmatch(r"[A-Z]{3}", value) else "an ISO 4217 code such as CNY"


@dataclass(frozen=True)
class DefaultKey:
    doc: str
    check: Callable[[str], str | None] | None = None  # returns what is accepted when the value is bad


DEFAULT_KEYS: dict[str, DefaultKey] = {
    "institution_code": DefaultKey("Alma institution code, e.g. 86BNU_INST"),
    "default_library": DefaultKey("Alma library code for records the tabs give no library (questionnaire)"),
    "default_location": DefaultKey(
        "Alma location code in default_library for records the tabs give no location"
    ),
    "default_item_policy": DefaultKey("Alma item policy for items the item_policies tab does not cover"),
    "default_material_type": DefaultKey("Alma material type for items the material_types tab does not cover"),
    "default_user_group": DefaultKey("Alma user group for patrons the user_groups tab does not cover"),
    "default_circulation_desk": DefaultKey("Alma circulation desk that migrated loans and requests use"),
    "currency": DefaultKey("Currency of prices, fines and funds (ISO 4217), e.g. CNY", _currency),
    "patron_expiry_default": DefaultKey("Expiry date (YYYYMMDD) for patrons whose Z305 has none", _yyyymmdd),
    "patron_purge_default": DefaultKey("Purge date (YYYYMMDD) for patrons whose Z305 has none", _yyyymmdd),
}


def _fail(where: str, row: int, column: str, value: str, accepted: str) -> FormError:
    return FormError(f"{where}, row {row}, column {column!r}: {value!r} is not valid; accepted: {accepted}")


def candidates(key: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The rows that may map ``key``, most specific first: exact, then later columns as ``*`` first."""
    masks = sorted(itertools.product((False, True), repeat=len(key)), key=lambda m: (sum(m), m))
    return list(
        dict.fromkeys(
            tuple(WILDCARD if wild else k for k, wild in zip(key, mask, strict=True)) for mask in masks
        )
    )


def _flag_columns(spec: TabSpec) -> tuple[str, ...]:
    return (*spec.flags, *(c for c in spec.optional if c == IN_DATA))


Columns = dict[str, list[str]]


def _check_cells(spec: TabSpec, data: Columns, where: str, rows: Sequence[int]) -> None:
    for column in spec.keys:
        _, width = KEY_WIDTHS.get(column, ("", 0))
        for row, value in zip(rows, data[column], strict=True):
            if value != WILDCARD and WILDCARD in value:
                raise _fail(where, row, column, value, "an Aleph code, or * alone for any code")
            if width and len(value) > width:
                raise _fail(
                    where,
                    row,
                    column,
                    value,
                    f"an Aleph code of at most {width} characters ({KEY_WIDTHS[column][0]}), or *",
                )
    for column in spec.values:
        for row, value in zip(rows, data[column], strict=True):
            if value == WILDCARD:
                raise _fail(where, row, column, value, "an Alma code; * is only for Aleph columns")
            if value == NO_VALUE and not (spec.none_allowed and column == spec.mapped_by):
                raise _fail(
                    where,
                    row,
                    column,
                    value,
                    "an Alma code; '-' (none) only in process_types.alma_process_type",
                )
    for column in _flag_columns(spec):
        for row, value in zip(rows, data[column], strict=True):
            if value.upper() not in FLAG_VALUES:
                raise _fail(where, row, column, value, "Y, N or blank")


def _check_defaults(data: Columns, where: str, rows: Sequence[int]) -> None:
    for row, key, value in zip(rows, data["key"], data["value"], strict=True):
        if key not in DEFAULT_KEYS:
            raise _fail(where, row, "key", key, ", ".join(DEFAULT_KEYS))
        check = DEFAULT_KEYS[key].check
        accepted = check(value) if check and value else None
        if accepted:
            raise _fail(where, row, "value", value, f"{accepted} (key {key})")


def _check_duplicates(spec: TabSpec, data: Columns, where: str, rows: Sequence[int]) -> None:
    seen: dict[tuple[str, ...], int] = {}
    for row, key in zip(rows, zip(*(data[c] for c in spec.keys), strict=True), strict=True):
        if key in seen:
            columns = " + ".join(repr(c) for c in spec.keys)
            value = " + ".join(repr(k) for k in key)
            raise FormError(
                f"{where}, row {row}, column {columns}: {value} duplicates row {seen[key]}; "
                "accepted: each key once (a * row once per key shape)"
            )
        seen[key] = row


def _text(value: object) -> str:
    """A cell as the form holds it: stripped text, missing as ``""``."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def check_tab(spec: TabSpec, df: pd.DataFrame, where: str, rows: Sequence[int] | None = None) -> pd.DataFrame:
    """Check one tab and return it normalised: all columns str, stripped, flags upper case.

    ``rows`` are the source row numbers of ``df``'s rows (header = row 1); by default the
    rows as written (2, 3, …). Missing optional columns are added blank; extra columns
    (a librarian's notes) are kept after the form's own. Works on plain lists: forms are
    small and pandas' per-column overhead would dominate.
    """
    missing = [c for c in spec.required if c not in df.columns]
    if missing:
        raise FormError(
            f"{where}: column {', '.join(repr(c) for c in missing)} missing; "
            f"required columns: {', '.join(spec.required)} (optional: {', '.join(spec.optional)})"
        )
    rows = list(range(2, len(df) + 2)) if rows is None else list(rows)
    extras = [str(c) for c in df.columns if c not in spec.columns]
    blank = [""] * len(df)
    data: Columns = {
        c: [_text(v) for v in df[c].tolist()] if c in df.columns else list(blank)
        for c in (*spec.columns, *extras)
    }
    _check_cells(spec, data, where, rows)
    for column in _flag_columns(spec):
        data[column] = [v.upper() for v in data[column]]
    _check_duplicates(spec, data, where, rows)
    if spec is DEFAULTS_TAB:
        _check_defaults(data, where, rows)
    return pd.DataFrame(data, columns=list(data), dtype="str")


def check_tabs(
    tabs: dict[str, pd.DataFrame],
    where: dict[str, str] | None = None,
    rows: dict[str, Sequence[int]] | None = None,
) -> dict[str, pd.DataFrame]:
    """Check every tab of a form: all required tabs present, each tab valid (``check_tab``)."""
    missing = [name for name in TABS if name not in tabs]
    if missing:
        raise FormError(
            f"migration form: tab {', '.join(repr(m) for m in missing)} missing; "
            f"required tabs: {', '.join(TABS)}"
        )
    where = where or {}
    rows = rows or {}
    return {
        name: check_tab(spec, tabs[name], where.get(name, f"tab {name!r}"), rows.get(name))
        for name, spec in TABS.items()
    }


def instructions() -> str:
    """The README of a written form: conventions, then every tab and column."""
    text = ["Migration form: Aleph codes -> Alma codes", "", CONVENTIONS, "Tabs"]
    for spec in TABS.values():
        text += ["", f"{spec.name}: {spec.doc}"]
        text += [f"  {c}: {COLUMN_DOCS[c]}" for c in spec.columns]
    text += ["", "defaults: the keys"] + [f"  {k}: {d.doc}" for k, d in DEFAULT_KEYS.items()]
    return "\n".join(text) + "\n"
