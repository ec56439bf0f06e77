"""Aleph cash types (Z31_TYPE) and the Alma fine/fee types they default to.

The migration form's ``fee_types`` tab maps each Z31_TYPE in the data to an Alma fee type;
``generate_form`` pre-fills a new row with ``DEFAULT_FEE_TYPES`` when Aleph's standard code
is known, and leaves it blank (unmapped, listed by the code inventory) otherwise. A
library that changed its cash types in tab18 corrects the row; the form is the authority.

Sources, and what stays unverified:

- **Aleph.** Z31_TYPE is the cash transaction type that Aleph's ``tab18.<lng>`` (the ADM
  library's cash table) defines per sub-library; the codes below are the standard ones
  Aleph ships (as DOMAIN.md records them: 0003 late return, 0004 loan charge, 0005 renewal
  charge, 0040–0042 lost-item handling / replacement / processing). Ex Libris' Knowledge
  Center confirms that Aleph creates overdue fines and lost-item "processing fees and
  replacement costs" as Z31 debits (articles "Debits/credits for Lost transactions remain
  in Active Cash" and "No z31 (Cash) record for fine on overdue item declared Lost"), but
  no Ex Libris page with the tab18 code list itself could be read here: the numbers, and
  which of 0040–0042 is handling, replacement or processing, are unverified. Sites edit
  tab18; read your own before filling the tab.
- **Alma.** The fee ``type`` of ``rest_fee.xsd`` (code table ``HFrUserFinesFees.fineFeeType``,
  "FineFeeTypes"; its example is OVERDUEFINE), as vendored by the public ``kb-dk/alma-client``
  repository. The codes used here (OVERDUEFINE, LOSTITEMREPLACEMENTFEE, LOSTITEMPROCESSFEE,
  OTHER) also appear in public bursar integrations reading Alma's fines; Alma's code table
  itself (institutions can add types) was not read. Alma has no standard loan-charge or
  renewal-charge type that could be confirmed, so 0004 and 0005 default to OTHER (their
  Aleph description travels in the fee's comment).
"""

from __future__ import annotations

from typing import NamedTuple


class AlephFineType(NamedTuple):
    description: str  # Aleph's meaning of the code (tab18), for the form's reader
    alma_fee_type: str  # the Alma fee type a new form row is pre-filled with


ALEPH_FINE_TYPES: dict[str, AlephFineType] = {
    "0003": AlephFineType("late return (overdue fine)", "OVERDUEFINE"),
    "0004": AlephFineType("loan charge", "OTHER"),
    "0005": AlephFineType("renewal charge", "OTHER"),
    "0040": AlephFineType("lost item: handling fee", "LOSTITEMPROCESSFEE"),
    "0041": AlephFineType("lost item: replacement cost", "LOSTITEMREPLACEMENTFEE"),
    "0042": AlephFineType("lost item: processing fee", "LOSTITEMPROCESSFEE"),
}
"""Aleph's standard Z31 cash types that this project pre-maps (see the module docstring)."""

DEFAULT_FEE_TYPES: dict[str, str] = {code: t.alma_fee_type for code, t in ALEPH_FINE_TYPES.items()}
"""Z31_TYPE → the Alma fee type ``generate_form`` pre-fills."""

UNMAPPED_FEE_TYPE = "OTHER"
"""What a fine whose Z31_TYPE the form does not map is delivered as (the code stays listed
as unmapped by the code inventory and the form, so a librarian sees it)."""
