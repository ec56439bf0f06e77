"""The delimited files of a generic delivery and the Field Mapping form that describes them.

Ex Libris' *Generic Alma Data Delivery Specifications* (Knowledge Center, Alma > Implementation
and Migration > Migration Guides) take bibs and holdings as MARC and every other file as
delimited text, each column named to Ex Libris in a *Field Mapping form*; a *Delivered Files form*
lists each file with its record count. This module holds what we deliver in those files: per
file, its columns in order and, for each, the Alma field it fills. The Alma field is named as
Alma's REST schema names it (``rest_item.xsd``, ``rest_item_loan.xsd``, ``rest_user_request.xsd``,
``rest_fee.xsd``; ``tests/unit/test_alma_schemas.py`` holds what those schemas state). The labels
of Ex Libris' own Generic Field Mapping workbook are not public: the column "Alma field" is to be
copied onto it by the migration team, and stays unverified against it.

``write_field_mapping`` writes the form: one tab per delimited file (column, Alma field, what it
holds, mandatory) and a "Delivered files" tab (file, format, records, bytes, sha256).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

FIELD_MAPPING_MEMBER = "field_mapping.xlsx"


@dataclass(frozen=True)
class Column:
    """One column of a delimited file and the Alma field it fills."""

    name: str
    alma_field: str
    holds: str
    mandatory: bool = False


@dataclass(frozen=True)
class DelimitedFile:
    """A CSV file of the delivery: its member name, the Alma object it becomes, its columns."""

    entity: str
    member: str
    alma_object: str
    columns: tuple[Column, ...]

    @property
    def header(self) -> list[str]:
        return [c.name for c in self.columns]

    def only(self, names: Iterable[str]) -> DelimitedFile:
        """This file with the given columns, in the given order (those a delivered file has)."""
        by_name = {c.name: c for c in self.columns}
        return replace(self, columns=tuple(by_name[n] for n in names))


def _c(name: str, alma_field: str, holds: str, mandatory: bool = False) -> Column:
    return Column(name, alma_field, holds, mandatory)


ITEMS = DelimitedFile(
    "items",
    "items.csv",
    "physical item (rest_item.xsd: item_data, holding_data)",
    (
        _c("aleph_item_key", "(legacy id)", "Aleph item key: ADM sysno + item sequence (Z30_REC_KEY)", True),
        _c("barcode", "item_data.barcode", "item barcode (Z30_BARCODE)", True),
        _c("library", "item_data.library", "Alma library code (from Z30_SUB_LIBRARY via the form)", True),
        _c(
            "location",
            "item_data.location",
            "Alma location code (sub-library + collection via the form)",
            True,
        ),
        _c("item_policy", "item_data.policy", "item policy (Z30_ITEM_STATUS via the form)"),
        _c("material_type", "item_data.physical_material_type", "material type (Z30_MATERIAL via the form)"),
        _c("process_type", "item_data.process_type", "process type (Z30_ITEM_PROCESS_STATUS via the form)"),
        _c("call_number_type", "holding_data.call_number_type", "call number type (Z30_CALL_NO_TYPE)"),
        _c("call_number", "holding_data.call_number", "call number (Z30_CALL_NO)"),
        _c(
            "alternative_call_number",
            "item_data.alternative_call_number",
            "second call number (Z30_CALL_NO_2)",
        ),
        _c("description", "item_data.description", "volume/issue description (Z30_DESCRIPTION)"),
        _c("enumeration_a", "item_data.enumeration_a", "enumeration level 1 (Z30_ENUMERATION_A)"),
        _c("enumeration_b", "item_data.enumeration_b", "enumeration level 2 (Z30_ENUMERATION_B)"),
        _c("chronology_i", "item_data.chronology_i", "chronology level 1 (Z30_CHRONOLOGICAL_I)"),
        _c("chronology_j", "item_data.chronology_j", "chronology level 2 (Z30_CHRONOLOGICAL_J)"),
        _c("public_note", "item_data.public_note", "OPAC note (Z30_NOTE_OPAC)"),
        _c("fulfillment_note", "item_data.fulfillment_note", "circulation note (Z30_NOTE_CIRCULATION)"),
        _c("internal_note_1", "item_data.internal_note_1", "internal note (Z30_NOTE_INTERNAL)"),
        _c("inventory_number", "item_data.inventory_number", "inventory number (Z30_INVENTORY_NUMBER)"),
        _c("inventory_price", "item_data.inventory_price", "price (Z30_PRICE)"),
        _c("creation_date", "item_data.creation_date", "date the item was created in Aleph (YYYY-MM-DD)"),
        _c("modification_date", "item_data.modification_date", "date the item last changed in Aleph"),
        _c("holding_id", "(link to holdings)", "001 of the item's holdings record in holdings.mrc", True),
        _c("bib_library", "(link to bib)", "Aleph BIB library of the item's bib (which bibs_*.mrc)", True),
        _c("bib_sysno", "(link to bib)", "001 of the item's bib record", True),
        _c("no_loans", "(loan count; Alma field unverified)", "number of loans in Aleph (Z30_NO_LOANS)"),
    ),
)

LOANS = DelimitedFile(
    "loans",
    "loans.csv",
    "active loan (rest_item_loan.xsd)",
    (
        _c("aleph_key", "(legacy id)", "Aleph loan key (Z36_REC_KEY)", True),
        _c("user_primary_id", "user_id", "patron's primary id (as in users.xml)", True),
        _c("item_barcode", "item_barcode", "barcode of the loaned item (as in items.csv)", True),
        _c("library", "library", "Alma library of the loan (Z36_SUB_LIBRARY via the form)", True),
        _c("circ_desk", "circ_desk", "circulation desk of that library", True),
        _c("loan_date", "loan_date", "Aleph's loan date (ISO 8601, library time zone)"),
        _c("due_date", "due_date", "due date and time (ISO 8601, library time zone)", True),
        _c("loan_status", "loan_status", "ACTIVE: every delivered loan is open"),
        _c("process_status", "process_status", "NORMAL, LOST or CLAIMED_RETURN (Z36_STATUS A, L, C)"),
        _c("note", "(loan note)", "first loan note (Z36_NOTE_1)"),
    ),
)

REQUESTS = DelimitedFile(
    "requests",
    "requests.csv",
    "hold request (rest_user_request.xsd)",
    (
        _c("aleph_key", "(legacy id)", "Aleph request key (Z37_REC_KEY)", True),
        _c("user_primary_id", "user_primary_id", "requesting patron's primary id", True),
        _c("item_barcode", "(requested item)", "barcode of the requested item", True),
        _c("request_type", "request_type", "HOLD", True),
        _c("pickup_location_type", "pickup_location_type", "LIBRARY", True),
        _c(
            "pickup_location_library",
            "pickup_location_library",
            "Alma library for pickup (Z37_PICKUP_LOCATION)",
            True,
        ),
        _c("status", "request_status", "ON_HOLD_SHELF (Z37_STATUS S) or NOT_STARTED"),
        _c("request_date", "request_date", "date the request was placed (Z37_OPEN_DATE)"),
        _c("expiry_date", "expiry_date", "last date of interest (Z37_END_REQUEST_DATE)"),
        _c(
            "hold_expiry_date",
            "(hold shelf expiry; Alma field unverified)",
            "end of hold-shelf time (Z37_END_HOLD_DATE)",
        ),
    ),
)

FINES = DelimitedFile(
    "fines",
    "fines.csv",
    "fine or fee (rest_fee.xsd)",
    (
        _c("aleph_key", "(legacy id)", "Aleph cash transaction key (Z31_REC_KEY)", True),
        _c("user_primary_id", "user_primary_id", "patron's primary id", True),
        _c("type", "type", "Alma fee type (Z31_TYPE via the form's fine type tab)", True),
        _c("amount", "original_amount", "amount still owed (Z31_SUM / 100)", True),
        _c("currency", "(currency)", "ISO 4217 currency of the amount"),
        _c("owner", "owner", "Alma library owning the fee (Z31_SUB_LIBRARY via the form)", True),
        _c("comment", "comment", "description (Z31_DESCRIPTION)"),
        _c("creation_date", "creation_time", "date of the transaction (Z31_DATE_X)"),
        _c("aleph_item_key", "(legacy item id)", "Aleph key of the item the fee is for (Z31_REC_KEY_ITEM)"),
        _c("item_barcode", "barcode", "barcode of that item"),
    ),
)

DELIMITED: Mapping[str, DelimitedFile] = {f.entity: f for f in (ITEMS, LOANS, REQUESTS, FINES)}
"""Entity → its delimited file, in the order the form's tabs appear."""


def csv_cell(value: Any) -> str:
    """A JSON value as a CSV cell: null is empty, booleans are true/false, numbers as JSON writes them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_field_mapping(
    path: Path, files: Iterable[DelimitedFile], delivered: Iterable[Mapping[str, Any]]
) -> None:
    """The Field Mapping form (one tab per delimited file) and the Delivered Files tab, as ``.xlsx``."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    about = book.active
    assert about is not None
    about.title = "Delivered files"
    about.append(["file", "format", "records", "bytes", "sha256"])
    for member in delivered:
        about.append([member["name"], member["format"], member["records"], member["bytes"], member["sha256"]])
    for spec in files:
        sheet = book.create_sheet(spec.member.removesuffix(".csv"))
        sheet.append(["file", spec.member, "Alma object", spec.alma_object])
        sheet.append(["column", "Alma field", "holds", "mandatory"])
        for column in spec.columns:
            sheet.append([column.name, column.alma_field, column.holds, "yes" if column.mandatory else ""])
        for cell in sheet[2]:
            cell.font = Font(bold=True)
    for cell in about[1]:
        cell.font = Font(bold=True)
    book.save(path)
