"""Holdings read back from Alma as it answers (issue 8, C13).

Alma's shapes, from its schemas as the ``kb-dk/alma-client`` repository vendors them:
``rest_holdings.xsd`` (the list: holding_id, library, location, call_number, accession_number,
suppress_from_publishing; no originating id, no MARC) and ``rest_holding.xsd`` (one holding:
``originating_system_id``, the MARC record in ``anies``). The MARCXML comes as text inside JSON and
starts with ``<?xml version="1.0" encoding="UTF-16"?>``; Ex Libris' migration names a holding
``<sysno>-HOL-<library>``.
"""

from __future__ import annotations

from typing import Any

import pytest

from aleph2alma.alma.holdings import find_holding, holding_fields, marc_of, same_holding_id

MMS = "991000000028521"


def marcxml(sysno: str, library: str, location: str, h: str, i: str) -> str:
    """A holdings record as Alma's ``anies`` holds it: its own UTF-16 declaration, no namespace."""
    return (
        '<?xml version="1.0" encoding="UTF-16"?><record><leader>00000nx  a2200000un 4500</leader>'
        f'<controlfield tag="001">{sysno}</controlfield><controlfield tag="004">{MMS}</controlfield>'
        f'<datafield tag="852" ind1="8" ind2=" "><subfield code="b">{library}</subfield>'
        f'<subfield code="c">{location}</subfield><subfield code="h">{h}</subfield>'
        f'<subfield code="i">{i}</subfield></datafield></record>'
    )


class Alma:
    """A bib's holdings as Alma's API gives them; counts the holdings read one by one."""

    def __init__(self, holdings: list[dict[str, Any]]) -> None:
        self.holdings = {h["holding_id"]: h for h in holdings}
        self.reads: list[str] = []

    def bib_holdings(self, mms_id: str) -> list[dict]:
        listed = ("holding_id", "library", "location", "call_number", "suppress_from_publishing")
        return [{k: h[k] for k in listed} for h in self.holdings.values()] if mms_id == MMS else []

    def get_holding(self, mms_id: str, holding_id: str) -> dict | None:
        self.reads.append(holding_id)
        return self.holdings.get(holding_id) if mms_id == MMS else None


def holding(holding_id: str, origin: str | None, location: str, number: str) -> dict[str, Any]:
    h, i = number.split("/")
    return {
        "holding_id": holding_id,
        "library": {"value": "MAIN", "desc": "Main library"},
        "location": {"value": location, "desc": location.title()},
        "call_number": f"{h}/{i}",
        "suppress_from_publishing": "false",
        "originating_system": "ALEPH" if origin else "",
        **({"originating_system_id": origin} if origin else {}),
        "anies": [marcxml(holding_id, "MAIN", location, h, i)],
    }


def test_marcxml_with_its_own_utf16_declaration_is_read() -> None:
    """Encoded as UTF-8 with the declaration left in, expat refuses the record (the old failure)."""
    one = holding("22001", "000000101-HOL-BNU60", "STACK", "I247.5/101")
    record = marc_of(one)
    assert record is not None and record["001"].data == "22001"
    assert holding_fields(one) == {
        "library": "MAIN",
        "location": "STACK",
        "call_number": "I247.5/101",
        "bib": MMS,
    }


@pytest.mark.parametrize(
    ("origin", "sysno", "same"),
    [
        ("000000101-HOL-BNU60", "000000101", True),
        ("101-HOL-BNU60", "000000101", True),  # leading zeros do not count
        ("000000101", "101", True),
        ("000000102-HOL-BNU60", "000000101", False),
        ("000000101-HOL-", "000000101", False),  # no library: not the migration's form
        ("X12-HOL-BNU60", "X12", True),
        ("", "000000101", False),
        (None, "000000101", False),
    ],
)
def test_same_holding_id(origin: Any, sysno: str, same: bool) -> None:
    assert same_holding_id(origin, sysno) is same


EXPECTED = {"library": "MAIN", "location": "STACK", "call_number": "I247.5/102"}


def test_the_migrated_holding_is_found_by_its_id_reading_the_likely_one_first() -> None:
    alma = Alma(
        [
            holding("22001", "000000101-HOL-BNU60", "STACK", "I247.5/101"),
            holding("22002", "000000103-HOL-BNU60", "REF", "I247.5/102"),
            holding("22003", "000000102-HOL-BNU60", "STACK", "I247.5/102"),
        ]
    )
    found, how = find_holding(alma, MMS, "000000102", EXPECTED)
    assert found is not None and found["holding_id"] == "22003" and how == "originating_system_id"
    assert alma.reads == ["22003"]  # the one at the expected place was read first, and only it
    moved, how = find_holding(Alma(list(alma.holdings.values())), MMS, "000000103", EXPECTED)
    assert moved is not None and moved["holding_id"] == "22002" and how == "originating_system_id"


def test_a_holding_not_in_alma_is_not_found_even_at_the_same_place() -> None:
    alma = Alma([holding("22001", "000000101-HOL-BNU60", "STACK", "I247.5/102")])
    assert find_holding(alma, MMS, "000000102", EXPECTED) == (None, "")
    assert alma.reads == ["22001"]


def test_without_originating_ids_a_single_holding_at_the_place_is_taken() -> None:
    alone = Alma([holding("22001", None, "REF", "I247.5/101"), holding("22002", None, "STACK", "I247.5/102")])
    found, how = find_holding(alone, MMS, "000000102", EXPECTED)
    assert found is not None and found["holding_id"] == "22002" and how == "library_location_call_number"
    twins = Alma(
        [holding("22001", None, "STACK", "I247.5/102"), holding("22002", None, "STACK", "I247.5/102")]
    )
    assert find_holding(twins, MMS, "000000102", EXPECTED) == (None, "")  # ambiguous: not guessed
    assert find_holding(alone, MMS, "000000102", None) == (None, "")  # no place to go by
