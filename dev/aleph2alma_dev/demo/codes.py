"""Code tables of the demo library: the Aleph codes a BNU-shaped installation uses.

These are the codes the demo migration form maps. ``known_codes()`` lists every code that
clean records use; ``UNMAPPED_CODES`` lists the codes that only defect records carry, so a
form filled from ``known_codes()`` leaves exactly those out and validation finds them.

Locations are ``"<sub-library>/<collection>"`` pairs: in Aleph a collection code means
something only within its sub-library (as in the migration form's locations tab).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Language = Literal["chi", "wes"]
Kind = Literal["mono", "serial", "thesis"]


@dataclass(frozen=True)
class SubLibrary:
    code: str
    name_zh: str
    name_en: str


@dataclass(frozen=True)
class Location:
    """One collection of one sub-library, and what the demo shelves there."""

    sub_library: str
    collection: str
    name_zh: str
    name_en: str
    language: Language  # which BIB library's material is shelved here
    kind: Kind  # monographs, serials or theses
    material: str  # Z30_MATERIAL of its items
    statuses: tuple[tuple[str, int], ...]  # item status → weight
    weight: int  # share of the holdings of its language and kind

    @property
    def code(self) -> str:
        return f"{self.sub_library}/{self.collection}"


SUB_LIBRARIES: tuple[SubLibrary, ...] = (
    SubLibrary("BNUZG", "总馆", "Main Library"),
    SubLibrary("BNUJY", "教育学部分馆", "Faculty of Education Branch"),
    SubLibrary("BNUXL", "心理学部分馆", "Faculty of Psychology Branch"),
    SubLibrary("BNUWX", "文学院分馆", "School of Chinese Language and Literature Branch"),
    SubLibrary("BNUZH", "珠海校区图书馆", "Zhuhai Campus Library"),
)

_LEND = (("01", 70), ("02", 10), ("08", 8), ("06", 4), ("03", 4), ("09", 2), ("10", 2))
_REF = (("03", 90), ("01", 10))
_ARCHIVE = (("04", 100),)
_SPECIAL = (("05", 100),)
_SERIAL = (("07", 85), ("03", 15))
_RESERVE = (("06", 100),)

LOCATIONS: tuple[Location, ...] = (
    Location("BNUZG", "ZWSK", "中文图书借阅区", "Chinese stacks", "chi", "mono", "BOOK", _LEND, 60),
    Location("BNUZG", "ZWCK", "中文工具书", "Chinese reference", "chi", "mono", "BOOK", _REF, 5),
    Location("BNUZG", "BCB", "保存本书库", "Preservation copies", "chi", "mono", "BOOK", _ARCHIVE, 10),
    Location(
        "BNUZG", "TCGJ", "特藏古籍", "Special collections and rare books", "chi", "mono", "BOOK", _SPECIAL, 2
    ),
    Location("BNUZG", "JCK", "教学参考书", "Course reserves", "chi", "mono", "BOOK", _RESERVE, 3),
    Location("BNUZG", "ZWQK", "中文期刊", "Chinese periodicals", "chi", "serial", "ISSUE", _SERIAL, 70),
    Location("BNUZG", "XWLW", "学位论文", "Theses and dissertations", "chi", "thesis", "DISS", _REF, 100),
    Location("BNUZG", "WWSK", "外文图书借阅区", "Western stacks", "wes", "mono", "BOOK", _LEND, 60),
    Location("BNUZG", "WWCK", "外文工具书", "Western reference", "wes", "mono", "BOOK", _REF, 8),
    Location("BNUZG", "WWQK", "外文期刊", "Western periodicals", "wes", "serial", "ISSUE", _SERIAL, 70),
    Location("BNUJY", "JYZW", "教育学中文图书", "Education: Chinese books", "chi", "mono", "BOOK", _LEND, 8),
    Location("BNUJY", "JYWW", "教育学外文图书", "Education: Western books", "wes", "mono", "BOOK", _LEND, 12),
    Location("BNUJY", "JYQK", "教育学期刊", "Education: periodicals", "chi", "serial", "ISSUE", _SERIAL, 15),
    Location("BNUXL", "XLZW", "心理学中文图书", "Psychology: Chinese books", "chi", "mono", "BOOK", _LEND, 5),
    Location(
        "BNUXL", "XLWW", "心理学外文图书", "Psychology: Western books", "wes", "mono", "BOOK", _LEND, 10
    ),
    Location(
        "BNUXL",
        "XLQK",
        "心理学外文期刊",
        "Psychology: Western periodicals",
        "wes",
        "serial",
        "ISSUE",
        _SERIAL,
        30,
    ),
    Location("BNUWX", "WXZW", "文学中文图书", "Literature: Chinese books", "chi", "mono", "BOOK", _LEND, 6),
    Location("BNUWX", "WXGJ", "文学古籍", "Literature: rare books", "chi", "mono", "BOOK", _SPECIAL, 1),
    Location("BNUZH", "ZHZW", "珠海中文图书", "Zhuhai: Chinese books", "chi", "mono", "BOOK", _LEND, 10),
    Location("BNUZH", "ZHWW", "珠海外文图书", "Zhuhai: Western books", "wes", "mono", "BOOK", _LEND, 10),
    Location(
        "BNUZH", "ZHQK", "珠海中文期刊", "Zhuhai: Chinese periodicals", "chi", "serial", "ISSUE", _SERIAL, 15
    ),
)

ITEM_STATUSES: dict[str, str] = {
    "01": "普通外借 Regular loan",
    "02": "短期外借 Short loan (7 days)",
    "03": "馆内阅览 In-library use only",
    "04": "保存本 Preservation copy, not for loan",
    "05": "特藏 Special collection",
    "06": "教学参考 Course reserve",
    "07": "过刊 Bound periodical",
    "08": "新书 New acquisition",
    "09": "馆际互借 Interlibrary loan",
    "10": "剔旧待处理 Withdrawal pending",
}
LOANABLE_STATUSES = ("01", "02", "08")

PROCESS_STATUSES: dict[str, str] = {
    "": "(blank) On shelf",
    "OR": "订购中 On order",
    "CT": "编目中 In cataloguing",
    "BD": "装订中 At the bindery",
    "MI": "丢失 Missing",
    "RP": "修补中 In repair",
}

MATERIALS: dict[str, str] = {
    "BOOK": "图书 Book",
    "ISSUE": "期刊单期 Serial issue",
    "DISS": "学位论文 Thesis",
    "CDROM": "光盘 CD-ROM",
}

BOR_STATUSES: dict[str, str] = {
    "01": "本科生 Undergraduate",
    "02": "硕士研究生 Master's student",
    "03": "博士研究生 Doctoral student",
    "04": "教职工 Faculty and staff",
    "05": "退休教职工 Retired staff",
    "06": "博士后 Postdoctoral fellow",
    "07": "留学生 International student",
    "08": "访问学者 Visiting scholar",
    "09": "校外读者 External reader",
}
# bor status → (weight, years of validity after registration)
BOR_STATUS_PROFILE: dict[str, tuple[int, int]] = {
    "01": (55, 4),
    "02": (20, 3),
    "03": (8, 4),
    "04": (9, 5),
    "05": (2, 5),
    "06": (1, 2),
    "07": (3, 2),
    "08": (1, 1),
    "09": (1, 1),
}

BOR_TYPES: dict[str, str] = {
    "01": "校本部 Beijing campus",
    "02": "珠海校区 Zhuhai campus",
    "03": "校外 External",
}

FINE_TYPES: dict[str, str] = {
    "0003": "超期罚款 Late return",
    "0004": "借阅费 Loan charge",
    "0005": "续借费 Renewal charge",
    "0022": "办证费 Registration",
    "0040": "丢失处理费 Lost item handling",
    "0041": "丢失赔偿 Lost item replacement",
    "0042": "丢失加工费 Lost item processing",
}
"""Z31_TYPE: Aleph's standard cash types (tab18; see ``aleph2alma.alma.fee_types`` for the
source and what stays unverified), as this library's cash table names them."""

CALL_NO_TYPES: dict[str, str] = {
    "0": "LC (Library of Congress)",
    "1": "DDC (Dewey)",
    "8": "CLC 中国图书馆分类法",
}

ORDER_STATUSES: dict[str, str] = {
    "NEW": "新订单 New",
    "SV": "已发订 Sent to vendor",
    "LC": "部分到货 Partly arrived",
    "CLS": "已关闭 Closed",
}

CURRENCIES = ("CNY", "USD", "EUR", "GBP")

UNMAPPED_CODES: dict[str, list[str]] = {
    "sub_libraries": ["BNUCP"],
    "collections": ["BNUCP/CPZW", "BNUZG/LSCK"],
    "item_statuses": ["19", "99"],
    "bor_statuses": ["29", "99"],
}
"""Codes that appear only on defect records (``unmapped_location``, ``unmapped_item_status``,
``unmapped_user_group``): a closed campus library, a temporary stack, two retired statuses."""


def locations_by(language: Language, kind: Kind) -> list[Location]:
    return [loc for loc in LOCATIONS if loc.language == language and loc.kind == kind]


def sub_library_collections() -> dict[str, list[str]]:
    """Sub-library → its collections (the locations tab of the migration form)."""
    out: dict[str, list[str]] = {s.code: [] for s in SUB_LIBRARIES}
    for loc in LOCATIONS:
        out[loc.sub_library].append(loc.collection)
    return out


def known_codes() -> dict[str, list[str]]:
    """Every code clean demo records use, per migration-form tab.

    ``collections`` holds ``"<sub-library>/<collection>"`` pairs; ``process_statuses``
    includes ``""`` (blank: on shelf).
    """
    return {
        "sub_libraries": [s.code for s in SUB_LIBRARIES],
        "collections": [loc.code for loc in LOCATIONS],
        "item_statuses": list(ITEM_STATUSES),
        "process_statuses": list(PROCESS_STATUSES),
        "materials": list(MATERIALS),
        "bor_statuses": list(BOR_STATUSES),
        "bor_types": list(BOR_TYPES),
        "fine_types": list(FINE_TYPES),
        "call_no_types": list(CALL_NO_TYPES),
        "order_statuses": list(ORDER_STATUSES),
    }


def code_labels() -> dict[str, dict[str, str]]:
    """Code → description per tab, for the human side of the migration form."""
    return {
        "sub_libraries": {s.code: f"{s.name_zh} {s.name_en}" for s in SUB_LIBRARIES},
        "collections": {loc.code: f"{loc.name_zh} {loc.name_en}" for loc in LOCATIONS},
        "item_statuses": dict(ITEM_STATUSES),
        "process_statuses": dict(PROCESS_STATUSES),
        "materials": dict(MATERIALS),
        "bor_statuses": dict(BOR_STATUSES),
        "bor_types": dict(BOR_TYPES),
        "fine_types": dict(FINE_TYPES),
        "call_no_types": dict(CALL_NO_TYPES),
        "order_statuses": dict(ORDER_STATUSES),
    }
