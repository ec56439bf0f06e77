"""The demo library's migration form, filled in as a systems librarian would.

Every code in ``codes.known_codes()`` gets an Alma code; the deliberate ``UNMAPPED_CODES``
get none, so validation reports exactly the records that carry them. The result is written
to ``include/config/demo/form/`` (``aleph2alma-dev demo form``) and committed: a test checks
that the committed form is what this module builds.
"""

from __future__ import annotations

import pandas as pd

from aleph2alma.alma.form import MigrationForm
from aleph2alma.alma.form_spec import DEFAULT_KEYS
from aleph2alma_dev.demo import codes

ITEM_POLICY = {
    "01": "LOAN_30",
    "02": "LOAN_7",
    "03": "LIB_USE",
    "04": "NO_LOAN",
    "05": "SPECIAL",
    "06": "RESERVE_2H",
    "07": "LIB_USE",
    "08": "LOAN_30",
    "09": "ILL",
    "10": "NO_LOAN",
}
PROCESS_TYPE = {
    "": "-",
    "OR": "ACQ",
    "CT": "WORK_ORDER_DEPARTMENT",
    "BD": "BINDERY",
    "MI": "MISSING",
    "RP": "WORK_ORDER_DEPARTMENT",
}
MATERIAL_TYPE = {"BOOK": "BOOK", "ISSUE": "ISSUE", "DISS": "DISSERTATION", "CDROM": "CDROM"}
USER_GROUP = {
    "01": "UG",
    "02": "MASTER",
    "03": "PHD",
    "04": "STAFF",
    "05": "RETIRED",
    "06": "POSTDOC",
    "07": "INTL",
    "08": "VISITOR",
    "09": "EXTERNAL",
}
FEE_TYPE = {
    "0003": "OVERDUEFINE",
    "0004": "OTHER",
    "0005": "OTHER",
    "0022": "OTHER",
    "0040": "LOSTITEMPROCESSFEE",
    "0041": "LOSTITEMREPLACEMENTFEE",
    "0042": "LOSTITEMPROCESSFEE",
}
"""Z31_TYPE → Alma fee type: the suggestions of ``aleph2alma.alma.fee_types``, and the
registration fee (0022, which Alma has no standard type for) as OTHER."""
DEFAULTS = {
    "institution_code": "86DEMO_INST",
    "default_library": "BNUZG",
    "default_location": "UNASSIGNED",
    "default_item_policy": "LIB_USE",
    "default_material_type": "BOOK",
    "default_user_group": "EXTERNAL",
    "default_circulation_desk": "DEFAULT_CIRC_DESK",
    "currency": "CNY",
    "patron_expiry_default": "20271231",
    "patron_purge_default": "20281231",
}


def _frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, dtype="str")


def demo_form() -> MigrationForm:
    libraries = [
        {"aleph_sub_library": s.code, "alma_library_code": s.code, "alma_library_name": s.name_en}
        for s in codes.SUB_LIBRARIES
    ]
    locations = [
        {
            "aleph_sub_library": loc.sub_library,
            "aleph_collection": loc.collection,
            "alma_library_code": loc.sub_library,
            "alma_location_code": loc.collection,
            "alma_location_name": f"{loc.name_zh} {loc.name_en}",
            "electronic": "N",
        }
        for loc in codes.LOCATIONS
    ]
    return MigrationForm(
        {
            "libraries": _frame(libraries),
            "locations": _frame(locations),
            "item_policies": _frame(
                [{"aleph_item_status": k, "alma_item_policy": v} for k, v in ITEM_POLICY.items()]
            ),
            "process_types": _frame(
                [{"aleph_item_process_status": k, "alma_process_type": v} for k, v in PROCESS_TYPE.items()]
            ),
            "material_types": _frame(
                [{"aleph_material": k, "alma_material_type": v} for k, v in MATERIAL_TYPE.items()]
            ),
            "user_groups": _frame(
                [
                    {"aleph_bor_status": status, "aleph_bor_type": "*", "alma_user_group": group}
                    for status, group in USER_GROUP.items()
                ]
            ),
            "fee_types": _frame([{"aleph_fine_type": k, "alma_fee_type": v} for k, v in FEE_TYPE.items()]),
            "defaults": _frame(
                [{"key": k, "value": v, "description": DEFAULT_KEYS[k].doc} for k, v in DEFAULTS.items()]
            ),
        }
    )


CUTOVER_MAPPINGS = {
    "libraries": [{"aleph_sub_library": "BNUCP", "alma_library_code": "BNUZG", "alma_library_name": "Main"}],
    "locations": [
        {
            "aleph_sub_library": "BNUCP",
            "aleph_collection": "CPZW",
            "alma_library_code": "BNUZG",
            "alma_location_code": "CPSTORE",
            "alma_location_name": "昌平校区旧藏 Changping campus store",
            "electronic": "N",
        },
        {
            "aleph_sub_library": "BNUZG",
            "aleph_collection": "LSCK",
            "alma_library_code": "BNUZG",
            "alma_location_code": "LSCK",
            "alma_location_name": "临时书库 Temporary stack",
            "electronic": "N",
        },
    ],
    "item_policies": [
        {"aleph_item_status": "19", "alma_item_policy": "NO_LOAN"},
        {"aleph_item_status": "99", "alma_item_policy": "NO_LOAN"},
    ],
    "user_groups": [
        {"aleph_bor_status": "29", "aleph_bor_type": "*", "alma_user_group": "EXTERNAL"},
        {"aleph_bor_status": "99", "aleph_bor_type": "*", "alma_user_group": "EXTERNAL"},
    ],
}
"""What the librarian adds to the form before the cutover: the codes ``UNMAPPED_CODES`` left out
(the closed campus library to the main library, the retired statuses to non-loanable/external).
The cutover's preflight fails until every code in use is mapped."""


def cutover_form() -> MigrationForm:
    """The demo form as it stands at cutover: ``demo_form`` with ``CUTOVER_MAPPINGS`` added."""
    form = demo_form()
    tabs = dict(form.tabs)
    for tab, rows in CUTOVER_MAPPINGS.items():
        tabs[tab] = pd.concat([tabs[tab], _frame(rows)], ignore_index=True)
    return MigrationForm(tabs)
