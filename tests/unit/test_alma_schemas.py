"""Alma's published schemas as the oracle for what the migration sends (issue 8, C15).

The tables below are written by hand from Alma's REST XSDs as the public ``kb-dk/alma-client``
repository vendors them (the path is on each table); the schema files are not copied here.
What they state and what is checked:

- the elements of each object, and their order where the XSD says ``xs:sequence`` (``item_loan``,
  ``fee``, the ``contact_info`` of a user); ``xs:all`` (``user``, ``user_request``, ``address``,
  ``email``, ``phone``, ``user_identifier``, ``user_note``) leaves the order free;
- which elements a POST or PUT may carry: those whose ``xs:appinfo/xs:tags`` name the method (the
  others are tagged ``get`` only, "Output parameter"); elements with no tags at all are listed
  apart, as the schema says nothing about them;
- the required ones (``minOccurs`` 1, or "Mandatory" in the element's documentation, per method);
- enumerations (``loan_status``: Active, Complete; ``request_type`` on POST: HOLD, DIGITIZATION,
  BOOKING; ``pickup_location_type``) and simple types (``xs:date``, ``xs:dateTime``, string lengths).

Every request body the client sends in a whole load (users, loans with their due-date PUT,
requests, fees, against the in-process emulator) is held to these tables, and so is the users XML
the transform writes (it goes to Alma's SIS import and, read back, to ``POST /users``).
``rest_users.xsd`` (the ``<users>`` wrapper) is not in that repository: only its ``<user>`` is checked.
"""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_alma_client import ALMA, N_USERS, library_db, records, users_xml  # noqa: F401  (fixture)
from test_alma_users import write

from aleph2alma.alma.client import AlmaClient
from aleph2alma.alma.client_load import load, read_users_xml
from aleph2alma.rejects import RejectLog
from aleph2alma_dev.demo.alma_emulator import Limits, make_app

REPO = "kb-dk/alma-client"
XSD = "src/main/resources/alma_xsd/"  # the REST schemas
WEBHOOK_XSD = "src/main/schemas/webhook/"  # item loan and fee are vendored here


@dataclass(frozen=True)
class Shape:
    """What one Alma XSD states about one object, as used by the migration."""

    source: str  # path in ``REPO``
    elements: tuple[str, ...]  # in the XSD's order
    sequence: bool  # xs:sequence (order fixed) or xs:all (any order)
    writable: Mapping[str, frozenset[str]]  # method → elements tagged with it
    untagged: frozenset[str] = frozenset()  # no xs:tags: the schema does not say
    required: Mapping[str, frozenset[str]] = field(default_factory=dict)  # method → elements
    enums: Mapping[str, frozenset[str]] = field(default_factory=dict)
    types: Mapping[str, str] = field(default_factory=dict)  # element → xs simple type
    # Alma's JSON names a list by its item, one level up: XML <user_identifiers><user_identifier>
    # is JSON "user_identifier": [...]
    json_lists: Mapping[str, str] = field(default_factory=dict)  # JSON key → XSD element

    def order_ok(self, names: list[str]) -> bool:
        known = [n for n in names if n in self.elements]
        return not self.sequence or known == sorted(known, key=self.elements.index)


def names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


ITEM_LOAN = Shape(
    WEBHOOK_XSD + "rest_item_loan.xsd",
    names(
        """loan_id circ_desk return_circ_desk library user_id item_barcode due_date loan_status loan_date
        return_date returned_by process_status mms_id holding_id item_id title author description
        publication_year location_code item_policy call_number loan_fine request_id renewable
        last_renew_date last_renew_status"""
    ),
    sequence=True,
    # circ_desk, return_circ_desk, library: "post get"; due_date: "get put"; everything else "get"
    writable={
        "POST": frozenset({"circ_desk", "return_circ_desk", "library"}),
        "PUT": frozenset({"due_date"}),
    },
    untagged=frozenset({"request_id"}),
    # circ_desk and library: minOccurs 1, "Mandatory". return_circ_desk is minOccurs 1 too, but it is
    # "the circulation desk code where the item was returned": not required of a new loan here
    # (unverified against Alma). PUT: Alma's 401824 "Due date is not in loan object".
    required={"POST": frozenset({"circ_desk", "library"}), "PUT": frozenset({"due_date"})},
    # "When sending a PUT or POST with JSON this field should not be included (or, if included,
    # should be: Active, Complete)"; GET returns the codes ACTIVE, COMPLETE
    enums={"loan_status": frozenset({"Active", "Complete"})},
    types={"due_date": "dateTime", "loan_date": "dateTime"},
)

FEE = Shape(
    WEBHOOK_XSD + "rest_fee.xsd",
    names(
        """id type status user_primary_id balance remaining_vat_amount original_amount original_vat_amount
        creation_time status_time comment owner title barcode transactions bursar_transaction_id"""
    ),
    sequence=True,
    writable={"POST": frozenset({"type", "original_amount", "owner", "barcode"})},  # "get post"
    untagged=frozenset({"status", "creation_time", "comment", "transactions", "bursar_transaction_id"}),
    # type: "Mandatory"; original_amount, owner: "Mandatory for POST"
    required={"POST": frozenset({"type", "original_amount", "owner"})},
    types={"creation_time": "dateTime", "original_amount": "float"},
)

# the elements of the schema's first 16,000 characters (all the client uses); "api get" only:
REQUEST_OUTPUT = names(
    """user_primary_id request_id request_sub_type mms_id title author manual_description pickup_location
    request_status place_in_queue request_date request_time task_name expiry_date
    adjusted_booking_start_date adjusted_booking_end_date"""
)
REQUEST_INPUT = names(  # tagged "api get post put" (request_type: "api get post")
    """request_type description pickup_location_type pickup_location_library
    pickup_location_circulation_desk target_destination material_type last_interest_date
    partial_digitization chapter_or_article_title chapter_or_article_author required_pages full_chapter
    comment booking_start_date booking_end_date destination_location"""
)
USER_REQUEST = Shape(
    XSD + "rest_user_request.xsd",
    REQUEST_OUTPUT + REQUEST_INPUT,
    sequence=False,  # <xs:all>
    writable={"POST": frozenset(REQUEST_INPUT)},
    # request_type: minOccurs 1; pickup_location_type and _library: "Relevant and mandatory when
    # request_type = HOLD or BOOKING" (the migration's requests are HOLDs)
    required={"POST": frozenset({"request_type", "pickup_location_type", "pickup_location_library"})},
    enums={
        "request_type": frozenset({"HOLD", "DIGITIZATION", "BOOKING"}),  # "POST action: Possible values"
        "pickup_location_type": frozenset(
            {"LIBRARY", "CIRCULATION_DESK", "USER_WORK_ADDRESS", "USER_HOME_ADDRESS"}
        ),
    },
    types={"last_interest_date": "date"},
)

USER_OUTPUT = names(  # tagged "api get" only
    """full_name status_date UserRequests loans fees proxy_for_users source_link_id
    source_institution_code linking_id"""
)
USER_INPUT = names(  # tagged with post (and put); pin_number, password: "api (sis) post put"
    """record_type primary_id first_name middle_name last_name pin_number user_title job_category
    job_description gender user_group campus_code web_site_url cataloger_level preferred_language
    birth_date expiry_date account_type external_id password force_password_change status contact_info
    user_identifiers user_roles user_blocks user_notes user_statistics rs_libraries library_notices
    pref_first_name pref_middle_name pref_last_name pref_name_suffix researcher"""
)
USER = Shape(
    XSD + "rest_user.xsd",
    USER_INPUT + USER_OUTPUT + ("purge_date", "is_researcher"),
    sequence=False,  # <xs:all>
    writable={"POST": frozenset(USER_INPUT)},
    untagged=frozenset({"purge_date", "is_researcher"}),
    # record_type, primary_id: "Mandatory In User API"; account_type: "mandatory in the User API";
    # external_id: "mandatory during the POST and PUT actions for external users"
    required={"POST": frozenset({"record_type", "primary_id", "account_type"})},
    types={"birth_date": "date", "expiry_date": "date", "purge_date": "date"},
    json_lists={
        "user_identifier": "user_identifiers",
        "user_note": "user_notes",
        "user_statistic": "user_statistics",
        "user_role": "user_roles",
        "user_block": "user_blocks",
    },
)

# A user's parts: (elements, xs:sequence?, required children); the rest are xs:all
USER_PARTS: dict[str, tuple[tuple[str, ...], bool, frozenset[str]]] = {
    "contact_info": (names("addresses emails phones"), True, frozenset()),
    "address": (
        names(
            """line1 line2 line3 line4 line5 city state_province postal_code country address_note
            start_date end_date address_types"""
        ),
        False,
        frozenset({"address_types"}),  # no minOccurs: 1
    ),
    "email": (
        names("email_address description email_types"),
        False,
        frozenset(names("email_address email_types")),
    ),
    "phone": (names("phone_number phone_types"), False, frozenset(names("phone_number phone_types"))),
    "user_identifier": (names("id_type value note status"), False, frozenset(names("id_type value"))),
    "user_note": (
        names("note_type note_text user_viewable popup_note created_by created_date"),
        False,
        frozenset(names("note_type user_viewable popup_note")),  # minOccurs 1
    ),
}
LIST_OF = {
    "addresses": "address", "emails": "email", "phones": "phone", "user_identifiers": "user_identifier",
    "user_notes": "user_note", "address_types": "address_type", "email_types": "email_type",
    "phone_types": "phone_type",
}  # fmt: skip
SEGMENT_TYPES = frozenset({"Internal", "External"})  # segment_type's documentation
BOOLEANS = frozenset({"true", "false"})  # xs:boolean as Alma writes it
STRING_LIMITS = {  # string255Length and friends
    "primary_id": 255, "first_name": 255, "last_name": 255, "external_id": 255, "email_address": 255,
    "phone_number": 255, "value": 255, "line2": 255, "line3": 255, "line4": 255, "line5": 255,
    "city": 255, "postal_code": 255, "address_note": 1000, "note_text": 2000, "segment_type": 10,
}  # fmt: skip
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(Z|[+-]\d{2}:\d{2})?$")  # xs:date
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")  # xs:dateTime


def simple_type_ok(kind: str, value: Any) -> bool:
    if kind == "date":
        return bool(DATE.match(str(value)))
    if kind == "dateTime":
        return bool(DATE_TIME.match(str(value)))
    return isinstance(value, int | float) and not isinstance(value, bool)  # float


def body_problems(shape: Shape, method: str, body: Mapping[str, Any]) -> list[str]:
    """What in a JSON request body ``shape`` does not allow for ``method`` (empty: none)."""
    where = f"{method} {shape.source}"
    names = [shape.json_lists.get(n, n) for n in body]
    problems = [f"{where}: unknown element {n}" for n in names if n not in shape.elements]
    problems += [
        f"{where}: {n} is not writable on {method}"
        for n in names
        if n in shape.elements and n not in shape.writable.get(method, frozenset()) | shape.untagged
    ]
    problems += [
        f"{where}: {n} missing" for n in sorted(shape.required.get(method, frozenset()) - set(names))
    ]
    if not shape.order_ok(names):
        problems.append(f"{where}: out of the schema's order: {names}")
    for name, allowed in shape.enums.items():
        if name in body and body[name] not in allowed:
            problems.append(f"{where}: {name}={body[name]!r} not one of {sorted(allowed)}")
    for name, kind in shape.types.items():
        if name in body and not simple_type_ok(kind, body[name]):
            problems.append(f"{where}: {name}={body[name]!r} is no xs:{kind}")
    return problems


# --- the tables catch what they should ----------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "method", "body", "problem"),
    [
        pytest.param(
            ITEM_LOAN,
            "PUT",
            {"loan_id": "71", "due_date": "2099-02-01T15:59:00Z", "loan_status": "ACTIVE", "link": "x"},
            ["loan_id is not writable", "unknown element link", "loan_status='ACTIVE' not one of"],
            id="the-loan-read-back-as-a-PUT-body",
        ),
        pytest.param(ITEM_LOAN, "PUT", {}, ["due_date missing"], id="put-without-due-date"),
        pytest.param(
            ITEM_LOAN, "POST", {"library": {"value": "M"}, "circ_desk": {"value": "D"}}, ["order"], id="order"
        ),
        pytest.param(
            FEE,
            "POST",
            {"type": {"value": "OTHER"}, "original_amount": "1.5"},
            ["owner missing", "xs:float"],
            id="fee-without-owner-amount-as-text",
        ),  # fmt: skip
        pytest.param(
            USER_REQUEST,
            "POST",
            {"request_type": "MOVE", "pickup_location_type": "LIBRARY", "pickup_location_library": "M"},
            ["request_type='MOVE'"],
            id="request-type-not-creatable",
        ),
        pytest.param(
            USER_REQUEST,
            "POST",
            {
                "request_type": "HOLD",
                "pickup_location_type": "LIBRARY",
                "pickup_location_library": "M",
                "last_interest_date": "2099-03-01T00:00:00Z",
            },
            ["no xs:date"],
            id="last-interest-date-is-a-date",
        ),  # fmt: skip
        pytest.param(
            USER,
            "POST",
            {"primary_id": "P1", "full_name": "A B"},
            ["full_name is not writable", "record_type missing"],
            id="user-output-field",
        ),  # fmt: skip
    ],
)
def test_the_tables_catch_what_the_schemas_forbid(
    shape: Shape, method: str, body: dict[str, Any], problem: list[str]
) -> None:
    """The oracle can fail: bodies the schemas forbid are named (the first is what the client sent
    for the due-date update before issue 8)."""
    found = " | ".join(body_problems(shape, method, body))
    for text in problem:
        assert text in found, found


# --- every request body of a whole load -------------------------------------------------


class Recording(httpx.BaseTransport):
    """The in-process emulator; keeps (method, path, JSON body) of every write."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.WSGITransport(app=app)
        self.writes: list[tuple[str, str, dict[str, Any]]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method in ("POST", "PUT"):
            self.writes.append((request.method, request.url.path, json.loads(request.read() or b"{}")))
        return self.inner.handle_request(request)


ROUTES: list[tuple[str, re.Pattern[str], Shape]] = [
    ("POST", re.compile(r"/users$"), USER),
    ("POST", re.compile(r"/users/[^/]+/loans$"), ITEM_LOAN),
    ("PUT", re.compile(r"/users/[^/]+/loans/[^/]+$"), ITEM_LOAN),
    ("POST", re.compile(r"/users/[^/]+/requests$"), USER_REQUEST),
    ("POST", re.compile(r"/users/[^/]+/fees$"), FEE),
]


def test_every_body_the_client_sends_is_what_the_schemas_allow(library_db: Path) -> None:  # noqa: F811
    transport = Recording(make_app(library_db, limits=Limits(per_second=0)))
    client = AlmaClient(ALMA, "k", per_second=0, quota_floor=0, session=httpx.Client(transport=transport))
    users = list(read_users_xml(io.BytesIO(users_xml(N_USERS)), external_id="BNU_SIS"))
    fines = [{**r, "item_barcode": f"I{i:05d}"} for i, r in enumerate(records("fines")[:20])]
    batches: list[tuple[Any, list[dict[str, Any]]]] = [
        ("users", users),
        ("loans", records("loans")[:20]),
        ("requests", records("requests")[:20]),
        ("fees", fines),
    ]
    for kind, batch in batches:
        stats = load(client, kind, batch, RejectLog(), workers=1)
        assert stats.rejected == 0 and stats.warnings == {}, (kind, stats.to_dict())
    seen: dict[tuple[str, str], int] = {}
    problems: list[str] = []
    for method, path, body in transport.writes:
        route = next(((m, p.pattern, s) for m, p, s in ROUTES if m == method and p.search(path)), None)
        assert route is not None, f"{method} {path}: no schema table for this call"
        seen[route[:2]] = seen.get(route[:2], 0) + 1
        problems += body_problems(route[2], method, body)
    assert problems == []
    assert set(seen) == {(m, p.pattern) for m, p, _ in ROUTES}, seen  # every kind of write was checked
    (put,) = {json.dumps(b, sort_keys=True) for m, _, b in transport.writes if m == "PUT"}
    assert json.loads(put) == {"due_date": "2099-02-01T15:59:00Z"}  # due_date alone, in UTC


def test_the_emulator_refuses_a_loan_status_code_on_put(library_db: Path) -> None:  # noqa: F811
    """The schema's rule on ``loan_status`` is enforced by the emulator, so a client that sent the
    loan back (``"ACTIVE"``) would see its due date refused in every emulator test."""
    transport = Recording(make_app(library_db, limits=Limits(per_second=0)))
    http = httpx.Client(transport=transport, base_url=ALMA, headers={"Authorization": "apikey k"})
    load(
        AlmaClient(ALMA, "k", per_second=0, quota_floor=0, session=http),
        "users",
        list(read_users_xml(io.BytesIO(users_xml(1)), external_id="BNU_SIS")),
        RejectLog(),
    )
    loan = http.post(
        f"{ALMA}/users/P00000/loans",
        params={"item_barcode": "I00000"},
        json={"circ_desk": {"value": "D"}, "library": {"value": "MAIN"}},
    ).json()
    url = f"{ALMA}/users/P00000/loans/{loan['loan_id']}"
    refused = http.put(url, json={**loan, "due_date": "2099-02-01T15:59:00Z"})
    assert refused.status_code == 400 and refused.json()["errorList"]["error"][0]["errorCode"] == "401652"
    assert http.put(url, json={"due_date": "2099-02-01T15:59:00Z"}).status_code == 200
    assert (
        http.put(url, json={"due_date": "2099-02-01T15:59:00Z", "loan_status": "Active"}).status_code == 200
    )


# --- the users XML the transform writes -----------------------------------------------------


def element_problems(elem: ET.Element, path: str = "user") -> list[str]:
    """What in a ``<user>`` (and its parts, recursively) ``rest_user.xsd`` does not allow."""
    problems: list[str] = []
    names = [child.tag for child in elem]
    if path == "user":
        problems += [f"user: unknown element {n}" for n in names if n not in USER.elements]
        problems += [
            f"user: {n} is not writable on POST"
            for n in names
            if n in USER.elements and n not in USER.writable["POST"] | USER.untagged
        ]
        # (an EXTERNAL user's external_id: the SIS profile fills it in on an SIS load, and
        # read_users_xml adds it for the API; the JSON test checks that)
        problems += [f"user: {n} missing" for n in sorted(USER.required["POST"] - set(names))]
        for name, kind in USER.types.items():
            value = elem.findtext(name)
            if value is not None and not simple_type_ok(kind, value):
                problems.append(f"user: {name}={value!r} is no xs:{kind}")
    elif elem.tag in USER_PARTS:
        order, sequence, required = USER_PARTS[elem.tag]
        problems += [f"{path}: unknown element {n}" for n in names if n not in order]
        problems += [f"{path}: {n} missing" for n in sorted(required - set(names))]
        known = [n for n in names if n in order]
        if sequence and known != sorted(known, key=order.index):
            problems.append(f"{path}: out of the schema's order: {names}")
    elif elem.tag in LIST_OF:
        problems += [f"{path}: {n} in a list of {LIST_OF[elem.tag]}" for n in names if n != LIST_OF[elem.tag]]
    for attr, value in elem.attrib.items():
        if attr == "segment_type" and value not in SEGMENT_TYPES:
            problems.append(f"{path}: segment_type={value!r}")
        if attr in ("preferred", "preferred_sms") and value not in BOOLEANS:
            problems.append(f"{path}: {attr}={value!r} is no xs:boolean")
    if elem.tag in ("user_viewable", "popup_note") and elem.text not in BOOLEANS:
        problems.append(f"{path}: {elem.text!r} is no xs:boolean")
    if elem.tag in ("start_date", "end_date") and not DATE.match(elem.text or ""):
        problems.append(f"{path}: {elem.text!r} is no xs:date")
    limit = STRING_LIMITS.get(elem.tag)
    if limit is not None and len(elem.text or "") > limit:
        problems.append(f"{path}: longer than {limit} characters")
    for child in elem:
        problems += element_problems(child, f"{path}/{child.tag}")
    return problems


def test_the_transforms_users_xml_is_what_rest_user_xsd_allows() -> None:
    data, stats, _ = write(external_id="BNU_SIS")
    root = ET.fromstring(data)
    assert root.tag == "users" and stats.records_out == len(root) >= 1
    problems = [p for user in root for p in element_problems(user)]
    assert problems == []
    # the checks above looked at every part the writer produced (the fixture has them all)
    tags = {e.tag for e in root.iter()}
    assert {"contact_info", "address", "email", "phone", "user_identifier"} <= tags, tags


def test_the_user_json_posted_from_the_xml_is_what_rest_user_xsd_allows() -> None:
    data, _, _ = write(external_id="BNU_SIS")
    (user,) = read_users_xml(io.BytesIO(data), external_id="BNU_SIS")
    assert body_problems(USER, "POST", user) == []
    assert user["account_type"] == {"value": "EXTERNAL"} and user["external_id"] == "BNU_SIS"


def test_the_user_checks_can_fail() -> None:
    bad = ET.fromstring(
        "<user><primary_id>P</primary_id><full_name>x</full_name><birth_date>2001-05-14</birth_date>"
        "<contact_info><emails><email preferred='yes'><email_address>a@b</email_address></email></emails>"
        "<addresses><address segment_type='Externe'><address_types/></address></addresses></contact_info>"
        "<user_notes><user_note><note_type>X</note_type><user_viewable>0</user_viewable></user_note>"
        "</user_notes></user>"
    )
    found = " | ".join(element_problems(bad))
    for text in (
        "full_name is not writable",
        "record_type missing",
        "account_type missing",
        "email_types missing",
        "preferred='yes'",
        "out of the schema's order",
        "segment_type='Externe'",
        "popup_note missing",
        "'0' is no xs:boolean",
    ):
        assert text in found, (text, found)
