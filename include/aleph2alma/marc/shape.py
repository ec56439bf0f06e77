"""A record's MARC flavour from its shape: CNMARC/UNIMARC or MARC 21.

CNMARC is UNIMARC-based: its title is field 200 (UNIMARC Bibliographic, "200 Title and
statement of responsibility") and its field 100 is fixed-length "General processing data"
whose $a starts with the 8-digit date entered on file (YYYYMMDD, positions 0-7). In MARC 21,
200 is not defined and 100 is the main entry (personal name), whose $a is a name. So a record
with a 200 and a 100 $a that starts with 8 digits has CNMARC's shape; one with a 245 and
neither has MARC 21's; anything else (no title at all, or both shapes) says nothing, and the
library's configured flavour applies.
"""

from __future__ import annotations

from typing import Literal

import pymarc

Flavour = Literal["MARC21", "CNMARC"]


def cnmarc_shape(has_200: bool, a100: str) -> bool:
    """A 200 and a 100 $a of fixed data (8-digit date entered on file, then more)."""
    return has_200 and len(a100) >= 9 and a100[:8].isascii() and a100[:8].isdigit()


def record_flavour(record: pymarc.Record) -> Flavour | None:
    """``CNMARC`` or ``MARC21`` when the record's shape says so, else None."""
    has_200 = has_245 = False
    a100: str | None = None  # the first $a of the first 100 data field that has one
    for fld in record.fields:  # one pass (the transform asks this of every record)
        tag = fld.tag
        if fld.control_field or tag[:1] != "2" and tag != "100":
            continue
        if tag == "200":
            has_200 = True
        elif tag == "245":
            has_245 = True
        elif tag == "100" and a100 is None:
            a100 = next((value for code, value in fld.subfields if code == "a"), None)
    cnmarc = cnmarc_shape(has_200, a100 or "")
    if cnmarc and not has_245:
        return "CNMARC"
    if has_245 and not cnmarc:
        return "MARC21"
    return None
