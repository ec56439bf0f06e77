"""Holdings as Alma holds them: the 852 location after the migration form, and Alma's holding read back.

The delivered MARC holdings keep Aleph's codes in 852 ``$b`` (sub-library) and ``$c``
(collection); Ex Libris' load maps them to Alma's library and location through the
migration form's locations tab (:func:`alma_location`: the Aleph codes stay when the form
does not map them). :func:`holding_fields` flattens Alma's holding object (``GET
/bibs/{mms_id}/holdings/{holding_id}``: the MARCXML in ``anies``) to the fields the
reconciliation compares: ``library``, ``location``, ``call_number`` (852 ``$h $i $j`` joined
as :func:`aleph2alma.marc.holdings.call_number` does) and ``bib`` (the 004: in Alma, the MMS id
of the bib the holding hangs off). The MARCXML Alma sends starts with its own XML declaration
(``encoding="UTF-16"`` inside a JSON string): :func:`marc_of` drops it before parsing.

:func:`find_holding` finds a delivered HOL record among a bib's holdings, as Alma answers: its
holdings list carries no ``originating_system_id`` (``rest_holdings.xsd``), a holding does
(``rest_holding.xsd``; schemas as vendored by the ``kb-dk/alma-client`` repository), in the form
Ex Libris' migration gives, ``<sysno>-HOL-<library>``, or as the bare number.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import pymarc

from aleph2alma.marc.holdings import call_number

if TYPE_CHECKING:
    from aleph2alma.alma.form import MigrationForm

XML_DECLARATION = re.compile(r"^\ufeff?\s*<\?xml[^>]*\?>")
"""The XML declaration Alma puts at the start of the MARCXML in ``anies`` (``encoding="UTF-16"``,
although the JSON string holding it is text): removed before the record is parsed."""
MIGRATED_HOL_ID = re.compile(r"^(?P<sysno>[^-\s]+)-HOL-\S+$")
"""Ex Libris' migration names a holding ``<sysno>-HOL-<library>`` in ``originating_system_id``."""
MAX_HOLDING_READS = 50
"""Holdings of one bib read one by one when looking for a delivered one (a bib has a few)."""


class HoldingsApi(Protocol):
    def bib_holdings(self, mms_id: str) -> list[dict]: ...

    def get_holding(self, mms_id: str, holding_id: str) -> dict | None: ...


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
    xml = XML_DECLARATION.sub("", xml, count=1)  # it may name an encoding the text no longer has
    records = pymarc.parse_xml_to_array(io.BytesIO(xml.encode("utf-8")))
    return records[0] if records else None


def holding_fields(holding: Mapping[str, Any]) -> dict[str, Any]:
    """Alma's holding object → ``library``, ``location``, ``call_number``, ``bib`` (see the module
    docstring)."""
    record = marc_of(holding)
    f852 = next(iter(record.get_fields("852")), None) if record is not None else None
    control = record["004"] if record is not None else None
    return {
        "library": f852.get("b", "").strip() if f852 else holding.get("library"),
        "location": f852.get("c", "").strip() if f852 else holding.get("location"),
        "call_number": call_number(f852) if f852 else holding.get("call_number"),
        "bib": (control.data or "").strip() if control is not None else "",
    }


def same_holding_id(origin: Any, sysno: str) -> bool:
    """Whether Alma's ``originating_system_id`` names the Aleph HOL record ``sysno``: the number
    itself, or Ex Libris' ``<sysno>-HOL-<library>``; leading zeros do not count."""
    text, want = str(origin or "").strip(), sysno.strip()
    if not text or not want:
        return False
    migrated = MIGRATED_HOL_ID.match(text)
    got = migrated.group("sysno") if migrated else text
    if got.isdigit() and want.isdigit():
        return int(got) == int(want)
    return got == want


def _code(value: Any) -> str:
    return str((value.get("value") if isinstance(value, Mapping) else value) or "").strip()


def _place(holding: Mapping[str, Any]) -> tuple[str, str, str]:
    number = " ".join(str(holding.get("call_number") or "").split())
    return _code(holding.get("library")), _code(holding.get("location")), number


def find_holding(
    client: HoldingsApi, mms_id: str, sysno: str, expected: Mapping[str, Any] | None = None
) -> tuple[dict | None, str]:
    """(holding, how it was matched) of the delivered HOL record ``sysno`` under the bib ``mms_id``.

    Alma's holdings list (``rest_holdings.xsd``: holding_id, library, location, call_number,
    accession_number, suppress_from_publishing) has no ``originating_system_id``; the holding
    itself (``rest_holding.xsd``) has. So the holdings are read one by one, those at ``expected``'s
    library, location and call number first, until one's ``originating_system_id`` names
    ``sysno`` (:func:`same_holding_id`): ``"originating_system_id"``. When none of them carries
    an originating id at all, a single holding at ``expected``'s place is taken:
    ``"library_location_call_number"`` (its place then matches by construction; the bib it hangs
    off is still compared). Otherwise ``(None, "")``: the record is not in Alma.
    """
    shorts = client.bib_holdings(mms_id)
    want = _place(expected) if expected is not None else None
    at_place = [h for h in shorts if want is not None and _place(h) == want]
    ranked = at_place + [h for h in shorts if h not in at_place]
    read: dict[str, dict] = {}
    carries_ids = False
    for short in ranked[:MAX_HOLDING_READS]:
        holding_id = str(short.get("holding_id") or "")
        full = client.get_holding(mms_id, holding_id) if holding_id else None
        if full is None:
            continue
        read[holding_id] = full
        carries_ids = carries_ids or bool(str(full.get("originating_system_id") or "").strip())
        if same_holding_id(full.get("originating_system_id"), sysno):
            return full, "originating_system_id"
    if not carries_ids and len(at_place) == 1:
        only = read.get(str(at_place[0].get("holding_id") or ""))
        if only is not None:
            return only, "library_location_call_number"
    return None, ""
