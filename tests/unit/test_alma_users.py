"""Z303/Z304/Z305/Z308 → Alma user XML: names, expiry, contact info, identifiers, PIN, scrubbing."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from datetime import date
from typing import Any

import pyarrow as pa
import pytest

from aleph2alma.aleph.ztables import Z303, Z304, Z305, Z308
from aleph2alma.alma.users import UserOptions, UserStats, patron_primary_ids, split_name, write_users_xml
from aleph2alma.rejects import RejectLog
from zrows import ztable

# Element names of Alma's REST user object (rest_user.xsd) that a migrated user may carry.
ALMA_USER_ELEMENTS = {
    "users",
    "user",
    "record_type",
    "primary_id",
    "first_name",
    "middle_name",
    "last_name",
    "user_group",
    "birth_date",
    "expiry_date",
    "purge_date",
    "account_type",
    "external_id",
    "status",
    "contact_info",
    "addresses",
    "address",
    "line1",
    "line2",
    "line3",
    "line4",
    "line5",
    "city",
    "state_province",
    "postal_code",
    "country",
    "address_note",
    "start_date",
    "end_date",
    "address_types",
    "address_type",
    "emails",
    "email",
    "email_address",
    "description",
    "email_types",
    "email_type",
    "phones",
    "phone",
    "phone_number",
    "phone_types",
    "phone_type",
    "user_identifiers",
    "user_identifier",
    "id_type",
    "value",
    "note",
    "user_notes",
    "user_note",
    "note_type",
    "note_text",
    "user_viewable",
    "popup_note",
    "user_statistics",
    "user_statistic",
}
USER_ORDER = [
    "record_type",
    "primary_id",
    "first_name",
    "last_name",
    "user_group",
    "birth_date",
    "expiry_date",
    "purge_date",
    "account_type",
    "external_id",
    "status",
    "contact_info",
    "user_identifiers",
    "user_notes",
]
PIN = "739146"


def pid(patron: str) -> str:
    return patron.ljust(12)


class StubForm:
    groups = {("01", "01"): "UG", ("04", "01"): "STAFF", ("04", "02"): "STAFF_ZH"}
    defaults = {
        "default_user_group": "PATRON",
        "patron_expiry_default": "20301231",
        "patron_purge_default": "",
    }

    def location_for(self, sub_library: str, collection: str) -> tuple[str, str] | None:
        return None

    def item_policy_for(self, item_status: str) -> str | None:
        return None

    def process_type_for(self, process_status: str) -> str | None:
        return None

    def material_type_for(self, material: str) -> str | None:
        return None

    def user_group_for(self, bor_status: str, bor_type: str) -> str | None:
        return self.groups.get((bor_status, bor_type))

    def library_for(self, sub_library: str) -> str | None:
        return None

    def default(self, key: str) -> str | None:
        return self.defaults.get(key) or None


def patron(
    key: str = "BNU000000001", primary_id: str = "201911010001", name: str = "张三", **extra: Any
) -> dict[str, Any]:
    return {"Z303_REC_KEY": key, "Z303_PRIMARY_ID": primary_id, "Z303_NAME": name, **extra}


Z303_ROWS: list[dict[str, Any]] = [patron(Z303_BIRTH_DATE=20010514)]
Z304_ROWS: list[dict[str, Any]] = [
    {
        "Z304_REC_KEY": pid("BNU000000001") + "01",
        "Z304_ADDRESS_0": "张三",
        "Z304_ADDRESS_1": "北京市海淀区新街口外大街19号",
        "Z304_ADDRESS_2": "学生公寓 5-301",
        "Z304_ZIP": "100875",
        "Z304_EMAIL_ADDRESS": "zhangsan@mail.bnu.edu.cn",
        "Z304_TELEPHONE": "138 0013 8000",
        "Z304_ADDRESS_TYPE": "01",
        "Z304_DATE_FROM": 20190901,
    },
    {
        "Z304_REC_KEY": pid("BNU000000001") + "02",
        "Z304_ADDRESS_1": "珠海市香洲区金凤路18号",
        "Z304_EMAIL_ADDRESS": "zs@example.com",
        "Z304_TELEPHONE": "010-58807000",
        "Z304_ADDRESS_TYPE": "02",
    },
]
Z305_ROWS: list[dict[str, Any]] = [
    {
        "Z305_REC_KEY": pid("BNU000000001") + "BNUZG",
        "Z305_BOR_STATUS": "01",
        "Z305_BOR_TYPE": "01",
        "Z305_EXPIRY_DATE": 20230630,
    },
    {
        "Z305_REC_KEY": pid("BNU000000001") + "BNUZH",
        "Z305_BOR_STATUS": "04",
        "Z305_BOR_TYPE": "02",
        "Z305_EXPIRY_DATE": 20270630,
    },
    {
        "Z305_REC_KEY": pid("BNU000000001") + "BNU50",
        "Z305_BOR_STATUS": "01",
        "Z305_BOR_TYPE": "01",
        "Z305_EXPIRY_DATE": 0,
    },
]
Z308_ROWS: list[dict[str, Any]] = [
    {"Z308_REC_KEY": "01" + "31900012345", "Z308_ID": "BNU000000001"},
    {"Z308_REC_KEY": "02" + "201911010001", "Z308_ID": "BNU000000001"},
    {"Z308_REC_KEY": "03" + "zhangsan", "Z308_ID": "BNU000000001"},
]


def write(
    z303: list[dict[str, Any]] = Z303_ROWS,
    z304: list[dict[str, Any]] = Z304_ROWS,
    z305: list[dict[str, Any]] = Z305_ROWS,
    z308: list[dict[str, Any]] = Z308_ROWS,
    excluded: dict[str, str] | None = None,
    **options: Any,
) -> tuple[bytes, UserStats, list[dict[str, Any]]]:
    out, sink = io.BytesIO(), io.StringIO()
    stats = write_users_xml(
        ztable(Z303, z303),
        ztable(Z304, z304),
        ztable(Z305, z305),
        ztable(Z308, z308),
        StubForm(),
        out,
        excluded or {},
        RejectLog(sink),
        UserOptions(**options),
    )
    assert stats.records_in == stats.records_out + stats.rejected
    return out.getvalue(), stats, [json.loads(line) for line in sink.getvalue().splitlines()]


def users(data: bytes) -> list[ET.Element]:
    root = ET.fromstring(data)
    assert root.tag == "users"
    return list(root)


def text(user: ET.Element, path: str) -> str | None:
    found = user.find(path)
    return None if found is None else found.text


NAMES = [
    ("Chinese: one-character family name", "张三", ("三", "张")),
    ("Chinese: two-character given name", "王小明", ("小明", "王")),
    ("Chinese: compound surname", "欧阳修", ("修", "欧阳")),
    ("Chinese: compound surname, two-character given name", "司马相如", ("相如", "司马")),
    ("Chinese: two characters starting like a compound surname", "欧阳", ("阳", "欧")),
    ("Chinese: space after the family name", "张 三丰", ("三丰", "张")),
    ("Chinese: transliterated name splits at the middle dot", "约翰·史密斯", ("约翰", "史密斯")),
    ("Chinese: compatibility ideograph normalised (NFC)", "\uf900三", ("三", "\u8c48")),
    ("Western: Last, First", "Smith, John", ("John", "Smith")),
    ("Western: no space after the comma", "Smith,John A.", ("John A.", "Smith")),
    ("Western: full-width comma", "Müller，Jürgen", ("Jürgen", "Müller")),
    ("Western: decomposed accents recomposed (NFC)", "Mu\u0308ller, Ju\u0308rgen", ("Jürgen", "Müller")),
    ("Western: First Last without comma", "John Smith", ("John", "Smith")),
    ("one word", "Madonna", ("", "Madonna")),
    ("blank", "   ", ("", "")),
]


@pytest.mark.parametrize(("name", "expected"), [n[1:] for n in NAMES], ids=[n[0] for n in NAMES])
def test_split_name(name: str, expected: tuple[str, str]) -> None:
    assert split_name(name) == expected


def test_a_full_user_is_well_formed_with_alma_element_names_in_order() -> None:
    data, stats, _ = write()
    (user,) = users(data)
    assert {el.tag for el in ET.fromstring(data).iter()} <= ALMA_USER_ELEMENTS
    assert [child.tag for child in user] == [
        t for t in USER_ORDER if t not in ("purge_date", "external_id", "user_notes")
    ]
    assert text(user, "record_type") == "PUBLIC"
    assert text(user, "primary_id") == "201911010001"
    assert (text(user, "first_name"), text(user, "last_name")) == ("三", "张")
    assert text(user, "birth_date") == "2001-05-14Z"
    assert (text(user, "account_type"), text(user, "status")) == ("EXTERNAL", "ACTIVE")
    assert stats.records_out == 1 and stats.orphan_rows == 0


def test_latest_expiry_across_sub_libraries_and_its_user_group() -> None:
    (user,) = users(write()[0])
    assert text(user, "expiry_date") == "2027-06-30Z"
    assert text(user, "user_group") == "STAFF_ZH"


def test_no_local_record_takes_the_form_defaults() -> None:
    data, stats, _ = write(z305=[])
    (user,) = users(data)
    assert (text(user, "user_group"), text(user, "expiry_date")) == ("PATRON", "2030-12-31Z")
    assert stats.group_fallbacks == 1


def test_unmapped_user_group_falls_back() -> None:
    data, stats, _ = write(z305=[Z305_ROWS[0] | {"Z305_BOR_STATUS": "99"}])
    (user,) = users(data)
    assert text(user, "user_group") == "PATRON" and stats.group_fallbacks == 1


def test_contact_info() -> None:
    (user,) = users(write()[0])
    home, school = user.findall("contact_info/addresses/address")
    assert (home.get("preferred"), school.get("preferred")) == ("true", "false")
    assert home.get("segment_type") == "External"
    # ADDRESS_0 repeats the name (Aleph's mailing label): not an address line
    assert [el.text for el in home if el.tag.startswith("line")] == [
        "北京市海淀区新街口外大街19号",
        "学生公寓 5-301",
    ]
    assert (text(home, "postal_code"), text(home, "start_date")) == ("100875", "2019-09-01Z")
    assert text(home, "address_types/address_type") == "home"
    assert text(school, "address_types/address_type") == "school"
    emails = user.findall("contact_info/emails/email")
    assert [
        (text(e, "email_address"), e.get("preferred"), text(e, "email_types/email_type")) for e in emails
    ] == [("zhangsan@mail.bnu.edu.cn", "true", "personal"), ("zs@example.com", "false", "school")]
    phones = user.findall("contact_info/phones/phone")
    assert [(text(p, "phone_number"), text(p, "phone_types/phone_type")) for p in phones] == [
        ("138 0013 8000", "mobile"),
        ("010-58807000", "office"),
    ]


def test_the_address_current_on_as_of_is_preferred() -> None:
    rows = [Z304_ROWS[0] | {"Z304_DATE_TO": 20230630}, Z304_ROWS[1]]
    (user,) = users(write(z304=rows, as_of=date(2024, 9, 1))[0])
    first = user.find("contact_info/addresses/address")
    assert first is not None and first.get("preferred") == "true"
    assert text(first, "line1") == "珠海市香洲区金凤路18号"
    assert text(user, "contact_info/emails/email/email_address") == "zs@example.com"


def test_identifiers_barcode_and_other_id_unknown_types_skipped() -> None:
    data, stats, _ = write()
    (user,) = users(data)
    ids = [
        (text(i, "id_type"), text(i, "value"), i.get("segment_type"))
        for i in user.findall("user_identifiers/user_identifier")
    ]
    assert ids == [("BARCODE", "31900012345", "External"), ("UNIV_ID", "201911010001", "External")]
    assert stats.identifiers_skipped == 1


def test_the_extract_holds_no_pin_and_the_user_xml_writes_none() -> None:
    assert "Z308_VERIFICATION" not in ztable(Z308, Z308_ROWS).column_names
    # Even a raw extract made before PINs were dropped at extraction gives no PIN, in clear or hashed.
    old_extract = ztable(Z308, Z308_ROWS).append_column(
        "Z308_VERIFICATION", pa.array([PIN.ljust(20)] * len(Z308_ROWS), pa.string())
    )
    out = io.BytesIO()
    write_users_xml(
        ztable(Z303, [patron(Z303_DELINQ_N_1="overdue notice sent")]),
        ztable(Z304, Z304_ROWS),
        ztable(Z305, Z305_ROWS),
        old_extract,
        StubForm(),
        out,
        {},
        RejectLog(io.StringIO()),
        UserOptions(),
    )
    data = out.getvalue()
    assert PIN.encode() not in data and b"pin" not in data.lower()
    (user,) = users(data)
    assert [text(n, "note_type") for n in user.findall("user_notes/user_note")] == ["CIRCULATION"]


def test_scrubbed_emails_never_reach_a_real_patron() -> None:
    data, stats, _ = write(scrub_emails=True, scrub_domain="test.invalid")
    assert b"bnu.edu.cn" not in data and b"example.com" not in data
    (user,) = users(data)
    assert [text(e, "email_address") for e in user.findall("contact_info/emails/email")] == [
        "201911010001@test.invalid"
    ]
    assert stats.emails_scrubbed == 2


def test_rejects_excluded_keyless_and_duplicate_patrons_without_personal_data() -> None:
    z303 = [
        patron(),
        patron("BNU000000002", "P2", "李四"),
        patron("BNU000000003", "", "王五"),
        patron("BNU000000004", "201911010001", "赵六"),
        patron("", "P5", "孙七"),
    ]
    data, stats, rejects = write(z303=z303, excluded={"BNU000000002": "unmapped_user_group"})
    assert [text(u, "primary_id") for u in users(data)] == ["201911010001"]
    assert stats.rejected_by_reason == {
        "unmapped_user_group": 1,
        "missing_primary_id": 1,
        "duplicate_primary_id": 1,
        "missing_patron_key": 1,
    }
    assert [(r.get("record_id", ""), r["entity"]) for r in rejects] == [
        ("BNU000000002", "patrons"),
        ("BNU000000003", "patrons"),
        ("BNU000000004", "patrons"),
        ("", "patrons"),
    ]
    assert not any(
        name in json.dumps(rejects, ensure_ascii=False) for name in ("李四", "王五", "赵六", "孙七")
    )


def test_escaping_and_invalid_xml_characters() -> None:
    z303 = [patron(name="O'Brien & <Sons>, Pat\x01rick\ufffe")]
    data, stats, _ = write(z303=z303, z304=[], z308=[])
    (user,) = users(data)
    assert (text(user, "last_name"), text(user, "first_name")) == ("O'Brien & <Sons>", "Patrick")
    assert stats.invalid_chars_removed == 2


def test_rows_of_other_patrons_are_ignored_and_counted() -> None:
    stray = {
        "Z305_REC_KEY": pid("BNU000000099") + "BNUZG",
        "Z305_BOR_STATUS": "01",
        "Z305_EXPIRY_DATE": 20990101,
    }
    data, stats, _ = write(z305=[*Z305_ROWS, stray])
    (user,) = users(data)
    assert text(user, "expiry_date") == "2027-06-30Z"
    assert stats.orphan_rows == 1


def test_external_id_when_configured() -> None:
    (user,) = users(write(external_id="SIS_BNU")[0])
    assert text(user, "external_id") == "SIS_BNU"


def _with_purge_default(purge: str, **kw: Any) -> list[ET.Element]:
    StubForm.defaults["patron_purge_default"] = purge
    try:
        return users(write(**kw)[0])
    finally:
        StubForm.defaults["patron_purge_default"] = ""


PURGE_CASES = [
    # (case, purge default, Z305 rows, expected purge_date)
    ("patron with its own expiry gets no purge date from the form", "20351231", Z305_ROWS, None),
    ("patron without Z305 takes the form's purge date", "20351231", [], "2035-12-31Z"),
    (
        "patron whose Z305 rows carry no expiry takes the form's purge date",
        "20351231",
        [{**Z305_ROWS[2]}],
        "2035-12-31Z",
    ),
    ("a form purge date before the default expiry moves up to it", "20281231", [], "2030-12-31Z"),
    ("no form purge date, no purge date", "", [], None),
]


@pytest.mark.parametrize(
    ("purge", "z305", "expected"), [c[1:] for c in PURGE_CASES], ids=[c[0] for c in PURGE_CASES]
)
def test_purge_date_only_for_patrons_without_expiry_and_never_before_it(
    purge: str, z305: list[dict[str, Any]], expected: str | None
) -> None:
    (user,) = _with_purge_default(purge, z305=z305)
    assert text(user, "purge_date") == expected
    if expected is not None:
        assert [c.tag for c in user].index("purge_date") == [c.tag for c in user].index("expiry_date") + 1
        assert expected >= (text(user, "expiry_date") or "")


def test_empty_part_is_an_empty_users_document() -> None:
    data, stats, _ = write(z303=[], z304=[], z305=[], z308=[])
    assert users(data) == [] and stats.records_in == 0


def test_patron_primary_ids_leave_out_patrons_who_do_not_migrate() -> None:
    z303 = ztable(Z303, [patron(), patron("BNU000000002", "P2"), patron("BNU000000003", "")])
    assert patron_primary_ids(z303) == {"BNU000000001": "201911010001", "BNU000000002": "P2"}
    assert patron_primary_ids(z303, {"BNU000000002": "duplicate_patron_id"}) == {
        "BNU000000001": "201911010001"
    }
