"""Holdings as Alma holds them: the 852 location after the migration form, and Alma's holding read back.

The delivered MARC holdings keep Aleph's codes in 852 ``$b`` (sub-library) and ``$c``
(collection); Ex Libris' load maps them to Alma's library and location through the
migration form's locations tab (:func:`alma_location`: the Aleph codes stay when the form
does not map them). :func:`holding_fields` flattens Alma's holding object (``GET
/bibs/{mms_id}/holdings/{holding_id}``: the MARCXML in ``anies``) to the fields the
reconciliation compares: ``library``, ``location``, ``call_number`` (852 ``$h $i $j`` joined
as :func:`aleph2alma.marc.holdings.call_number` does) and ``bib`` (the 004: in Alma, the MMS id
of the bib the holding hangs off).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pymarc

from aleph2alma.marc.holdings import call_number

if TYPE_CHECKING:
    from aleph2alma.alma.form import MigrationForm


def alma_location(form: MigrationForm | None, sub_library: str, collection: str) -> tuple[str, str]:
    """(library, location) in Alma of an 852 ``$b``/``$c``: the form's mapping, else the codes as given."""
    mapped = form.location_for(sub_library, collection) if form is not None else None
    return mapped if mapped else (sub_library.strip(), collection.strip())


def map_852(record: pymarc.Record, form: MigrationForm | None) -> pymarc.Record:
    """``record`` with every 852 ``$b``/``$c`` mapped by :func:`alma_location` (changed in place)."""
    for f852 in record.get_fields("852"):
        library, location = alma_location(form, f852.get("b", ""), f852.get("c", ""))
        mapped = {"b": library, "c": location}
        f852.subfields = [pymarc.Subfield(code, mapped.get(code, value)) for code, value in f852.subfields]
    return record


def marc_of(holding: Mapping[str, Any]) -> pymarc.Record | None:
    """The MARC record of an Alma holding object (its ``anies`` MARCXML); None when it has none."""
    anies = holding.get("anies") or []
    xml = anies[0] if isinstance(anies, list) and anies else anies
    if not isinstance(xml, str) or not xml.strip():
        return None
    records = pymarc.parse_xml_to_array(io.BytesIO(xml.encode("utf-8")))
    return records[0] if records else None


def holding_fields(holding: Mapping[str, Any]) -> dict[str, Any]:
    """Alma's holding object → ``library``, ``location``, ``call_number``, ``bib`` (see the module docstring)."""
    record = marc_of(holding)
    f852 = next(iter(record.get_fields("852")), None) if record is not None else None
    control = record["004"] if record is not None else None
    return {"library": f852.get("b", "").strip() if f852 else holding.get("library"),
            "location": f852.get("c", "").strip() if f852 else holding.get("location"),
            "call_number": call_number(f852) if f852 else holding.get("call_number"),
            "bib": (control.data or "").strip() if control is not None else ""}
