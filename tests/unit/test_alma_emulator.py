"""The Alma API emulator: labelled, Alma's shapes and codes, limits, faults, imports, persistence."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pymarc
import pytest
from pymarc import Field, Indicators, Subfield

from aleph2alma.alma.client import AlmaClient, parse_error
from aleph2alma.alma.holdings import holding_fields
from aleph2alma.reconcile.against_alma import fetch_holding
from aleph2alma_dev.demo.alma_emulator import API, HEADER, Faults, Limits, make_app, serve
from aleph2alma_dev.demo.alma_emulator_store import (
    Store,
    import_bibs,
    import_holdings,
    import_items,
    import_users,
)

KEY = {"Authorization": "apikey test-key", "Accept": "application/json"}

USERS_XML = """<?xml version="1.0" encoding="UTF-8"?>
<users>
<user><record_type>PUBLIC</record_type><primary_id>201911010001</primary_id><first_name>修</first_name>\
<last_name>欧阳</last_name><user_group>UG</user_group><expiry_date>2031-07-31Z</expiry_date>\
<account_type>EXTERNAL</account_type><status>ACTIVE</status><contact_info><addresses>\
<address preferred="true" segment_type="External"><line1>新街口外大街19号</line1>\
<postal_code>100875</postal_code>\
<address_types><address_type>home</address_type></address_types></address></addresses><emails>\
<email preferred="true" segment_type="External"><email_address>201911010001@example.invalid</email_address>\
<email_types><email_type>personal</email_type></email_types></email></emails></contact_info>\
<user_identifiers><user_identifier segment_type="External"><id_type>BARCODE</id_type><value>B0001</value>\
<status>ACTIVE</status></user_identifier></user_identifiers><user_notes><user_note segment_type="External">\
<note_type>CIRCULATION</note_type><note_text>overdue 2019</note_text><user_viewable>false</user_viewable>\
<popup_note>false</popup_note></user_note></user_notes></user>
<user><record_type>PUBLIC</record_type><primary_id>201911010002</primary_id><first_name>Ann</first_name>\
<last_name>Lee</last_name><user_group>STAFF</user_group><account_type>EXTERNAL</account_type>\
<status>ACTIVE</status></user>
</users>
"""


def marc_file(n: int, library: str = "BNU01") -> bytes:
    out = io.BytesIO()
    for i in range(n):
        record = pymarc.Record(force_utf8=True, leader="00000nam a2200000 a 4500")
        record.add_field(
            Field(tag="001", data=f"{i:09d}"),
            Field(
                tag="035",
                indicators=Indicators(" ", " "),
                subfields=[Subfield("a", f"(ALEPH){library}{i:09d}")],
            ),
            Field(tag="245", indicators=Indicators("0", "0"), subfields=[Subfield("a", f"书名 {i} /")]),
        )
        out.write(record.as_marc())
    return out.getvalue()


def items_csv(rows: list[tuple[str, str, str]]) -> str:
    """(barcode, bib_library, bib_sysno) rows in the items CSV's columns."""
    lines = ["barcode,library,location,item_policy,material_type,call_number,bib_library,bib_sysno"]
    lines += [f"{b},MAIN,STACK,01,BOOK,QA76 .P22,{lib},{sysno}" for b, lib, sysno in rows]
    return "\n".join(lines) + "\n"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start emulators on free ports over ``tmp_path/alma.sqlite``; returns the root URL."""
    servers = []

    def start(limits: Limits | None = None, faults: Faults | None = None, db: Path | None = None) -> str:
        server, _thread = serve(0, db or tmp_path / "alma.sqlite", faults, limits=limits)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    """Three bibs, three items (B0..B2), two users; then a loan of B0 and a request on B1 by the
    first user."""
    db = tmp_path / "alma.sqlite"
    store = Store(db)
    import_bibs(store, io.BytesIO(marc_file(3)))
    import_items(store, io.StringIO(items_csv([(f"B{i}", "BNU01", str(i)) for i in range(3)])))
    import_users(store, io.BytesIO(USERS_XML.encode()), external_id="BNU_SIS")
    store.close()
    return db


def test_every_response_says_it_is_an_emulator(emulator: Callable[..., str]) -> None:
    root = emulator()
    page = httpx.get(root + "/")
    assert "emulator" in page.text.lower() and "not Ex Libris Alma" in page.text
    for response in (
        page,
        httpx.get(f"{root}{API}/users/x"),
        httpx.get(f"{root}{API}/users/x", headers=KEY),
        httpx.get(f"{root}/_emulator/counts"),
        httpx.get(f"{root}{API}/no/such/path", headers=KEY),
    ):
        assert response.headers[HEADER] == "true"
        assert "X-Exl-Api-Remaining" in response.headers


def test_a_call_without_key_is_refused_and_uses_no_quota(emulator: Callable[..., str]) -> None:
    root = emulator(Limits(daily_quota=10))
    refused = httpx.get(f"{root}{API}/users/x")
    assert refused.status_code == 400
    assert _code(refused) == "UNAUTHORIZED" and refused.headers["Content-Type"].startswith("application/xml")
    assert refused.headers["X-Exl-Api-Remaining"] == "10"
    assert httpx.get(f"{root}{API}/users/x", headers=KEY).headers["X-Exl-Api-Remaining"] == "9"


def _code(response: httpx.Response) -> str:
    """Alma's errorCode, from JSON or (the gateway's errors) the XML web_service_result."""
    return parse_error(response)[0]


def in_process(app: Any) -> httpx.Client:
    """A client of the emulator app in-process (no server, no port, no real time)."""
    return httpx.Client(
        transport=httpx.WSGITransport(app=app), base_url="http://127.0.0.1" + API, headers=KEY
    )


def test_per_second_threshold_counts_whole_seconds(tmp_path: Path) -> None:
    """Calls are counted per wall-clock second (an injected clock: no waiting for a boundary)."""
    now = [1_700_000_000.9]
    app = make_app(tmp_path / "alma.sqlite", limits=Limits(per_second=5), clock=lambda: now[0])
    with in_process(app) as http:
        first = [http.get("/users/x").status_code for _ in range(8)]  # all in second ...000
        now[0] = 1_700_000_001.0  # the next second starts: the count starts again
        second = [http.get("/users/x") for _ in range(6)]
    assert first.count(429) == 3
    assert [r.status_code for r in second].count(429) == 1
    assert {_code(r) for r in second if r.status_code == 429} == {"PER_SECOND_THRESHOLD"}


@pytest.mark.parametrize("phase", ["after", "before"])
def test_a_slow_call_commits_before_or_after_its_delay(seeded: Path, phase: str) -> None:
    """``after`` (default): the fee is written, then the answer is late, so a client that timed out
    has written; ``before``: the write itself comes late. The injected sleep looks at the store."""
    store = Store(seeded)
    fees_at_delay: list[int] = []

    def sleep(seconds: float) -> None:
        fees_at_delay.append(store.counts()["fees"])
        assert seconds == 0.4

    app = make_app(seeded, Faults(slow_ms=400, slow_phase=phase), limits=Limits(per_second=0), sleep=sleep)
    with in_process(app) as http:
        http.post(f"/users/{U1}/fees", json=FEE).raise_for_status()
    assert fees_at_delay == [1 if phase == "after" else 0]
    assert store.counts()["fees"] == 1
    store.close()
    assert Faults().slow_phase == "after"
    with pytest.raises(ValueError, match="slow_phase"):
        Faults(slow_phase="never")


def test_daily_quota_gives_daily_threshold(emulator: Callable[..., str]) -> None:
    root = emulator(Limits(daily_quota=3))
    with httpx.Client(base_url=root + API, headers=KEY) as http:
        answers = [http.get("/users/x") for _ in range(4)]
    assert [r.headers["X-Exl-Api-Remaining"] for r in answers] == ["2", "1", "0", "0"]
    assert answers[3].status_code == 429 and _code(answers[3]) == "DAILY_THRESHOLD"


def test_item_by_barcode_redirects_to_the_item_as_alma_does(
    emulator: Callable[..., str], seeded: Path
) -> None:
    root = emulator(db=seeded)
    with httpx.Client(base_url=root + API, headers=KEY) as http:
        hop = http.get("/items", params={"item_barcode": "B1"})
        assert hop.status_code == 302
        assert "/bibs/99" in hop.headers["Location"] and "/holdings/22" in hop.headers["Location"]
        item = http.get(hop.headers["Location"]).json()
    assert item["item_data"]["barcode"] == "B1"
    assert item["item_data"]["library"] == {"value": "MAIN"} and item["item_data"]["location"] == {
        "value": "STACK"
    }
    assert item["bib_data"]["network_number"] == ["(ALEPH)BNU01000000001"]
    assert item["holding_data"]["holding_id"].startswith("22")
    assert item["item_data"]["pid"].startswith("23") and item["bib_data"]["mms_id"].startswith("99")


def _api(
    http: httpx.Client,
    method: str,
    path: str,
    params: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    return http.request(method, path, params=params, json=body)


EXTERNAL_USER = {
    "record_type": {"value": "PUBLIC"},
    "account_type": {"value": "EXTERNAL"},
    "external_id": "SIS",
}
FEE = {"type": {"value": "OVERDUEFINE"}, "original_amount": 5.0, "owner": {"value": "MAIN"}}
DESK = {"circ_desk": {"value": "DEFAULT_CIRC_DESK"}, "library": {"value": "MAIN"}}
U1 = "201911010001"

ERROR_CASES = [
    ("user_not_found", "GET", "/users/nobody", None, None, "401861"),
    ("loans_of_unknown_user", "GET", "/users/nobody/loans", None, None, "401890"),
    ("fees_of_unknown_user", "POST", "/users/nobody/fees", None, FEE, "401861"),
    ("no_item_for_barcode", "GET", "/items", {"item_barcode": "NOPE"}, None, "401689"),
    ("loan_of_unknown_barcode", "POST", f"/users/{U1}/loans", {"item_barcode": "NOPE"}, DESK, "401689"),
    ("loan_without_desk", "POST", f"/users/{U1}/loans", {"item_barcode": "B2"}, {}, "401664"),
    ("item_already_on_loan", "POST", "/users/201911010002/loans", {"item_barcode": "B0"}, DESK, "401651"),
    ("duplicate_primary_id", "POST", "/users", None, {**EXTERNAL_USER, "primary_id": U1}, "401851"),
    (
        "duplicate_identifier",
        "POST",
        "/users",
        None,
        {
            **EXTERNAL_USER,
            "primary_id": "new",
            "user_identifier": [{"id_type": {"value": "BARCODE"}, "value": "B0001"}],
        },
        "401851",
    ),
    ("user_without_primary_id", "POST", "/users", None, EXTERNAL_USER, "401664"),
    (
        "external_user_without_external_id",
        "POST",
        "/users",
        None,
        {"record_type": {"value": "PUBLIC"}, "primary_id": "x", "account_type": {"value": "EXTERNAL"}},
        "401854",
    ),
    (
        "fee_type_missing",
        "POST",
        f"/users/{U1}/fees",
        None,
        {"original_amount": 1, "owner": {"value": "M"}},
        "4019991",
    ),
    ("fee_type_invalid", "POST", f"/users/{U1}/fees", None, {**FEE, "type": {"value": "PARKING"}}, "4019992"),
    ("fee_without_amount", "POST", f"/users/{U1}/fees", None, {**FEE, "original_amount": None}, "4019994"),
    ("fee_without_owner", "POST", f"/users/{U1}/fees", None, {**FEE, "owner": {"value": ""}}, "4019996"),
    ("request_twice", "POST", f"/users/{U1}/requests", "B1", {"pickup_location_library": "MAIN"}, "401136"),
    (
        "request_unknown_item",
        "POST",
        f"/users/{U1}/requests",
        {"item_pid": "23999"},
        {"pickup_location_library": "MAIN"},
        "401129",
    ),
    ("due_date_in_past", "PUT", "LOAN", None, {"due_date": "2001-01-01T00:00:00Z"}, "401681"),
    ("unknown_loan", "PUT", f"/users/{U1}/loans/71000", None, {"due_date": "2099-01-01T00:00:00Z"}, "401823"),
]


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "code"),
    [c[1:] for c in ERROR_CASES],
    ids=[c[0] for c in ERROR_CASES],
)
def test_alma_error_codes(
    emulator: Callable[..., str],
    seeded: Path,
    method: str,
    path: str,
    params: Any,
    body: dict[str, Any] | None,
    code: str,
) -> None:
    root = emulator(db=seeded)
    with httpx.Client(base_url=root + API, headers=KEY, follow_redirects=True) as http:
        loan = _api(http, "POST", f"/users/{U1}/loans", {"item_barcode": "B0"}, DESK).json()
        b1 = http.get("/items", params={"item_barcode": "B1"}).json()["item_data"]["pid"]
        assert _api(
            http, "POST", f"/users/{U1}/requests", {"item_pid": b1}, {"pickup_location_library": "MAIN"}
        )
        if params == "B1":
            params = {"item_pid": b1}
        if path == "LOAN":
            path = f"/users/{U1}/loans/{loan['loan_id']}"
        response = _api(http, method, path, params, body)
    assert response.status_code == 400, response.text
    error = response.json()["errorList"]["error"][0]
    assert error["errorCode"] == code and error["errorMessage"] and error["trackingId"]


def test_loan_request_and_fee_have_alma_shapes(emulator: Callable[..., str], seeded: Path) -> None:
    root = emulator(db=seeded)
    with httpx.Client(base_url=root + API, headers=KEY, follow_redirects=True) as http:
        loan = _api(http, "POST", f"/users/{U1}/loans", {"item_barcode": "B0"}, DESK).json()
        moved = _api(
            http,
            "PUT",
            f"/users/{U1}/loans/{loan['loan_id']}",
            None,
            {"due_date": "2099-06-30T15:59:00Z"},  # the one element rest_item_loan.xsd tags "put"
        ).json()
        loans = http.get(f"/users/{U1}/loans").json()
        fee = _api(http, "POST", f"/users/{U1}/fees", None, {**FEE, "comment": "late [aleph:K1]"}).json()
        fees = http.get(f"/users/{U1}/fees").json()
        item = http.get("/items", params={"item_barcode": "B0"}).json()["item_data"]
        by_barcode = http.get("/users/B0001").json()  # a unique identifier finds the user too
    assert loan["loan_status"] == "ACTIVE" and loan["item_barcode"] == "B0" and loan["due_date"].endswith("Z")
    assert moved["due_date"] == "2099-06-30T15:59:00Z"
    assert loans["total_record_count"] == 1 and loans["item_loan"][0]["loan_id"] == loan["loan_id"]
    assert fee["status"]["value"] == "ACTIVE" and fee["balance"] == 5.0 and fee["id"].startswith("73")
    assert fees["total_sum"] == 5.0 and fees["fee"][0]["comment"] == "late [aleph:K1]"
    assert item["base_status"]["value"] == "0" and item["process_type"]["value"] == "LOAN"
    assert by_barcode["primary_id"] == U1


def test_empty_lists_leave_the_list_out_as_alma_does(emulator: Callable[..., str], seeded: Path) -> None:
    root = emulator(db=seeded)
    with httpx.Client(base_url=root + API, headers=KEY) as http:
        assert http.get(f"/users/{U1}/requests").json() == {"total_record_count": 0}
        assert http.get("/bibs", params={"other_system_id": "(ALEPH)BNU01999999999"}).json() == {
            "total_record_count": 0
        }
        hit = http.get("/bibs", params={"other_system_id": "(ALEPH)BNU01000000002"}).json()
    assert hit["total_record_count"] == 1 and hit["bib"][0]["title"] == "书名 2"


def test_imports_match_like_an_import_profile(tmp_path: Path) -> None:
    store = Store(tmp_path / "alma.sqlite")
    assert import_bibs(store, io.BytesIO(marc_file(4))) == {"created": 4, "updated": 0, "rejected": 0}
    assert import_bibs(store, io.BytesIO(marc_file(4))) == {"created": 0, "updated": 4, "rejected": 0}
    rows = [("B0", "BNU01", "0"), ("B1", "BNU01", "000000001"), ("B2", "BNU01", "1"), ("B9", "BNU02", "1")]
    result = import_items(store, io.StringIO(items_csv(rows)))
    assert result == {
        "created": 3,
        "updated": 0,
        "rejected": 1,
        "rejected_by_reason": {"no_matching_bib": 1},
        "rejected_records": [["B9", "no bib with 035 (ALEPH)BNU02000000001"]],
    }
    assert import_users(store, io.BytesIO(USERS_XML.encode()), "SIS") == {
        "created": 2,
        "updated": 0,
        "rejected": 0,
    }
    counts = store.counts()
    assert (counts["bibs"], counts["items"], counts["users"]) == (4, 3, 2)
    assert (counts["holdings"], counts["holdings_synthesised"]) == (0, 2)  # no MARC holdings: all synthesised
    user = store.user(U1)
    assert user is not None and user["user_group"] == {"value": "UG"} and user["external_id"] == "SIS"
    assert user["contact_info"]["address"][0]["address_type"] == [{"value": "home"}]
    assert user["contact_info"]["address"][0]["preferred"] is True
    assert user["user_note"][0]["user_viewable"] is False


def test_admin_imports_and_counts_over_http(emulator: Callable[..., str]) -> None:
    root = emulator()
    assert httpx.post(f"{root}/_emulator/import/bibs", content=marc_file(2)).json()["bibs"]["created"] == 2
    items = httpx.post(f"{root}/_emulator/import/items", content=items_csv([("B0", "BNU01", "0")]).encode())
    users = httpx.post(
        f"{root}/_emulator/import/users", params={"external_id": "SIS"}, content=USERS_XML.encode()
    )
    assert items.json()["items"]["created"] == 1 and users.json()["users"]["created"] == 2
    counts = httpx.get(f"{root}/_emulator/counts").json()
    assert counts["emulator"] is True and (counts["bibs"], counts["items"], counts["users"]) == (2, 1, 2)
    assert httpx.post(f"{root}/_emulator/import/orders", content=b"").status_code == 404


def test_faults_are_seeded(emulator: Callable[..., str], tmp_path: Path) -> None:
    faults = Faults(rate_429=0.1, burst_429=2, rate_500=0.1, seed=42)
    runs = []
    for name in ("a", "b"):
        root = emulator(Limits(per_second=0), faults, db=tmp_path / f"{name}.sqlite")
        with httpx.Client(base_url=root + API, headers=KEY) as http:
            runs.append([http.get("/users/x").status_code for _ in range(60)])
    assert runs[0] == runs[1]
    assert {429, 500, 400} <= set(runs[0])


def test_injected_429_can_carry_retry_after(emulator: Callable[..., str]) -> None:
    root = emulator(Limits(per_second=0), Faults(rate_429=1.0, retry_after=1.5))
    response = httpx.get(f"{root}{API}/users/x", headers=KEY)
    assert response.status_code == 429 and response.headers["Retry-After"] == "1.5"


def test_data_survive_a_restart(emulator: Callable[..., str], seeded: Path) -> None:
    first = emulator(db=seeded)
    httpx.post(f"{first}{API}/users/{U1}/fees", headers=KEY, json=FEE).raise_for_status()
    second = emulator(db=seeded)
    assert httpx.get(f"{second}/_emulator/counts").json()["fees"] == 1


# --- MARC holdings --------------------------------------------------------------------------


def holdings_file(rows: list[tuple[str, str, str]]) -> bytes:
    """(001 HOL sysno, 004 bib sysno, 852 $b) rows as MARC 21 holdings; 852 $c STACK, $h $i a call number."""
    out = io.BytesIO()
    for sysno, bib, library in rows:
        record = pymarc.Record(force_utf8=True, leader="00000nx  a2200000un 4500")
        f852 = [Subfield("b", library)] if library else []
        record.add_field(
            Field(tag="001", data=sysno),
            Field(tag="004", data=bib),
            Field(
                tag="035", indicators=Indicators(" ", " "), subfields=[Subfield("a", f"(ALEPH)BNU60{sysno}")]
            ),
            Field(
                tag="852",
                indicators=Indicators("8", " "),
                subfields=[*f852, Subfield("c", "STACK"), Subfield("h", "I247.5"), Subfield("i", sysno[-3:])],
            ),
        )
        out.write(record.as_marc())
    return out.getvalue()


HOLDINGS = [
    ("000000101", "000000002", "MAIN"),  # loaded
    ("000000102", "000000009", "MAIN"),  # no bib with that 001
    ("000000103", "000000001", "MAIN"),  # two bibs (BNU01, BNU02) have that 001
    ("000000104", "000000002", ""),
]  # no library


@pytest.fixture
def with_holdings(tmp_path: Path) -> Path:
    """Bibs 0-2 of BNU01 and 0-1 of BNU02 (same 001s); the holdings above; items on 101 and on refused 102."""
    db = tmp_path / "alma.sqlite"
    store = Store(db)
    import_bibs(store, io.BytesIO(marc_file(3)))
    import_bibs(store, io.BytesIO(marc_file(2, "BNU02")))
    import_holdings(store, io.BytesIO(holdings_file(HOLDINGS)))
    lines = [
        "barcode,library,location,item_policy,call_number,holding_id,bib_library,bib_sysno",
        "B0,MAIN,STACK,01,X,000000101,BNU01,000000002",
        "B1,MAIN,STACK,01,X,000000102,BNU01,000000002",
        "B2,MAIN,STACK,01,X,,BNU01,000000002",
    ]
    import_items(store, io.StringIO("\n".join(lines) + "\n"))
    store.close()
    return db


def test_holdings_import_refuses_what_alma_would(tmp_path: Path) -> None:
    store = Store(tmp_path / "alma.sqlite")
    import_bibs(store, io.BytesIO(marc_file(3)))
    import_bibs(store, io.BytesIO(marc_file(2, "BNU02")))
    result = import_holdings(store, io.BytesIO(holdings_file(HOLDINGS)))
    assert (result["created"], result["updated"], result["rejected"]) == (1, 0, 3)
    assert result["rejected_by_reason"] == {"no_matching_bib": 1, "ambiguous_bib_link": 1, "no_library": 1}
    assert [r[0] for r in result["rejected_records"]] == ["000000102", "000000103", "000000104"]
    assert "004 000000001 matches 2 bibliographic records" in result["rejected_records"][1][1]
    again = import_holdings(store, io.BytesIO(holdings_file(HOLDINGS[:1])))
    assert (again["created"], again["updated"]) == (0, 1)  # matched on the 001
    assert store.counts()["holdings"] == 1


def test_items_hang_off_their_hol_record(with_holdings: Path) -> None:
    store = Store(with_holdings)
    b0, b1, b2 = (store.item_row(barcode=b) for b in ("B0", "B1", "B2"))
    assert b0 is not None and b1 is not None and b2 is not None
    holding = store.holding(b0["_holding_id"])
    assert holding is not None and holding["originating_system_id"] == "000000101-HOL-BNU60"
    assert (
        b1["_holding_id"] == b2["_holding_id"] != b0["_holding_id"]
    )  # no HOL record loaded: one synthesised
    assert (store.counts()["holdings"], store.counts()["holdings_synthesised"]) == (1, 1)
    item = store.item_json(b0, "http://x")
    assert item["holding_data"]["holding_id"] == b0["_holding_id"] and "anies" not in item["holding_data"]


def test_holdings_endpoints_have_alma_shapes(emulator: Callable[..., str], with_holdings: Path) -> None:
    root = emulator(db=with_holdings)
    with httpx.Client(base_url=root + API, headers=KEY) as http:
        bib = http.get("/bibs", params={"other_system_id": "(ALEPH)BNU01000000002"}).json()["bib"][0]
        listed = http.get(f"/bibs/{bib['mms_id']}/holdings").json()
        marc = next(h for h in listed["holding"] if h["call_number"] == "I247.5/101")
        one = http.get(f"/bibs/{bib['mms_id']}/holdings/{marc['holding_id']}").json()
        other = http.get("/bibs", params={"other_system_id": "(ALEPH)BNU01000000000"}).json()["bib"][0]
        wrong_bib = http.get(f"/bibs/{other['mms_id']}/holdings/{marc['holding_id']}")
        no_bib = http.get("/bibs/99000/holdings")
        empty = http.get(f"/bibs/{other['mms_id']}/holdings").json()
    assert listed["total_record_count"] == 2 and listed["bib_data"]["mms_id"] == bib["mms_id"]
    # rest_holdings.xsd: the list gives no originating id and no MARC
    assert set(marc) == {
        "holding_id",
        "library",
        "location",
        "call_number",
        "suppress_from_publishing",
        "link",
    }
    assert marc["library"] == {"value": "MAIN"} and marc["link"].endswith(marc["holding_id"])
    assert one["holding_id"] == marc["holding_id"]
    assert one["originating_system_id"] == "000000101-HOL-BNU60"  # as Ex Libris' migration names it
    assert one["anies"][0].startswith('<?xml version="1.0" encoding="UTF-16"?><record')  # as Alma sends it
    assert holding_fields(one) == {
        "library": "MAIN",
        "location": "STACK",
        "call_number": "I247.5/101",
        "bib": bib["mms_id"],
    }  # Alma's 004 is the MMS id
    assert (wrong_bib.status_code, _code(wrong_bib)) == (400, "402204")
    assert (no_bib.status_code, _code(no_bib)) == (400, "402203")
    assert empty == {
        "bib_data": {
            **{k: other[k] for k in ("mms_id", "title", "author", "network_number")},
            "link": other["link"],
        },
        "total_record_count": 0,
    }


def test_a_holding_fetched_back_through_the_client(emulator: Callable[..., str], with_holdings: Path) -> None:
    root = emulator(db=with_holdings)
    with AlmaClient(root + API, "test-key", per_second=0) as client:
        found = fetch_holding(client, "(ALEPH)BNU01000000002", "000000101")
        assert fetch_holding(client, "(ALEPH)BNU01000000002", "000000102") is None  # refused: not in Alma
        assert fetch_holding(client, "(ALEPH)BNU01000000007", "000000101") is None  # no such bib
        assert client.bib_holdings("99000") == [] and client.get_holding("99000", "22000") is None
        requests = client.stats.requests
    assert found == {
        "bib": "(ALEPH)BNU01000000002",
        "library": "MAIN",
        "location": "STACK",
        "call_number": "I247.5/101",
        "matched_by": "originating_system_id",
    }
    # bib, list, the first holding; bib, list, both holdings (none is 102); bib; list, holding
    assert requests == 3 + 4 + 1 + 2


def test_an_older_database_gets_holdings_origins(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as old:
        old.execute(
            "CREATE TABLE holdings (holding_id TEXT PRIMARY KEY, mms_id TEXT NOT NULL, library TEXT, "
            "location TEXT, data TEXT NOT NULL, UNIQUE (mms_id, library, location))"
        )
        old.execute("INSERT INTO holdings VALUES ('22001', '99001', 'MAIN', 'STACK', '{}')")
    store = Store(db)
    assert (store.counts()["holdings"], store.counts()["holdings_synthesised"]) == (0, 1)


def test_ex_libris_maps_the_852_through_the_form() -> None:
    from aleph2alma_dev.demo.exlibris import mapped_holdings

    class Form:
        def location_for(self, sub_library: str, collection: str) -> tuple[str, str] | None:
            return ("ALMA_MAIN", "ALMA_STACK") if (sub_library, collection) == ("MAIN", "STACK") else None

    data = (
        holdings_file([("000000101", "000000002", "MAIN"), ("000000102", "000000002", "OTHER")]) + b"junk\x1d"
    )
    out = mapped_holdings(data, Form())  # type: ignore[arg-type]
    records = list(pymarc.MARCReader(io.BytesIO(out), to_unicode=True, force_utf8=True, permissive=True))
    assert [(r["852"]["b"], r["852"]["c"]) for r in records[:2]] == [
        ("ALMA_MAIN", "ALMA_STACK"),
        ("OTHER", "STACK"),
    ]
    assert (
        records[2] is None and out.count(b"\x1d") == 3
    )  # an unreadable record is passed on, for Alma to refuse


# --- fulfilment rules and latency (issue 8, C14) -----------------------------------------------

RULE_USERS = """<users>
<user><record_type>PUBLIC</record_type><primary_id>EXPIRED</primary_id><expiry_date>2020-01-31Z</expiry_date>\
<account_type>EXTERNAL</account_type><status>ACTIVE</status></user>
<user><record_type>PUBLIC</record_type><primary_id>BLOCKED</primary_id><account_type>EXTERNAL</account_type>\
<status>ACTIVE</status><user_blocks><user_block segment_type="External"><block_type>GENERAL</block_type>\
<block_description>LOST_CARD</block_description><block_status>ACTIVE</block_status></user_block></user_blocks></user>
<user><record_type>PUBLIC</record_type><primary_id>READER</primary_id><expiry_date>2099-01-31Z</expiry_date>\
<account_type>EXTERNAL</account_type><status>ACTIVE</status></user>
</users>"""


@pytest.fixture
def rules_db(tmp_path: Path) -> Path:
    db = tmp_path / "alma.sqlite"
    store = Store(db)
    import_bibs(store, io.BytesIO(marc_file(3)))
    rows = ["barcode,library,location,item_policy,process_type,bib_library,bib_sysno"]
    rows += ["B0,MAIN,STACK,01,,BNU01,0", "B1,MAIN,STACK,01,,BNU01,1", "B2,MAIN,STACK,NL,,BNU01,2"]
    rows += ["B3,MAIN,STACK,01,MISSING,BNU01,2", "B4,MAIN,STACK,01,,BNU01,2"]
    import_items(store, io.StringIO("\n".join(rows) + "\n"))
    import_users(store, io.BytesIO(RULE_USERS.encode()), external_id="BNU_SIS")
    store.close()
    return db


RULE_CASES = [
    ("expired patron", "EXPIRED", "B0", "the patron's account expired on 2020-01-31"),
    ("blocked patron", "BLOCKED", "B0", "the patron is blocked (LOST_CARD)"),
    ("item policy that does not loan", "READER", "B2", "item policy NL does not loan"),
    ("item missing", "READER", "B3", "the item is in process MISSING"),
    ("loan limit reached", "READER", "B1", "the patron has 1 active loans, the limit is 1"),
]


@pytest.mark.parametrize(
    ("user", "barcode", "why"), [c[1:] for c in RULE_CASES], ids=[c[0] for c in RULE_CASES]
)
def test_fulfilment_rules_refuse_loans_with_almas_not_loanable(
    rules_db: Path, user: str, barcode: str, why: str
) -> None:
    limits = Limits(per_second=0, loan_limit=1, not_loanable_policies=frozenset({"NL"}))
    with in_process(make_app(rules_db, limits=limits)) as http:
        if "limit" in why:  # one loan first
            assert _api(http, "POST", "/users/READER/loans", {"item_barcode": "B4"}, DESK).status_code == 200
        refused = _api(http, "POST", f"/users/{user}/loans", {"item_barcode": barcode}, DESK)
        loans = http.get(f"/users/{user}/loans").json()["total_record_count"]
    assert refused.status_code == 400 and _code(refused) == "401651"
    assert parse_error(refused)[1] == f"Item is not loanable: {why}."
    assert loans == (1 if "limit" in why else 0)  # nothing was loaned by the refused call


def test_refused_loans_become_rejects_and_the_load_goes_on(rules_db: Path) -> None:
    from aleph2alma.alma.client_load import load
    from aleph2alma.rejects import RejectLog

    session = httpx.Client(transport=httpx.WSGITransport(app=make_app(rules_db, limits=Limits(per_second=0))))
    client = AlmaClient("https://alma.example/almaws/v1", "k", per_second=0, quota_floor=0, session=session)
    loan = {"library": "MAIN", "circ_desk": "DEFAULT_CIRC_DESK", "due_date": None}
    records = [
        {**loan, "aleph_key": "L1", "user_primary_id": "EXPIRED", "item_barcode": "B0"},
        {**loan, "aleph_key": "L2", "user_primary_id": "READER", "item_barcode": "B1"},
        {**loan, "aleph_key": "L3", "user_primary_id": "BLOCKED", "item_barcode": "B4"},
    ]
    stats = load(client, "loans", records, RejectLog(), workers=1)
    assert (stats.created, stats.rejected_by_reason) == (1, {"alma_401651": 2})


def test_every_call_takes_the_configured_latency_on_the_apps_sleep(tmp_path: Path) -> None:
    """Virtual time: the sleeps are recorded, nothing waits."""
    slept: list[float] = []
    app = make_app(tmp_path / "alma.sqlite", limits=Limits(per_second=0, latency_ms=250), sleep=slept.append)
    with in_process(app) as http:
        for _ in range(3):
            http.get("/users/x")
        http.get("http://127.0.0.1/")  # the emulator's own page is no Alma call
    assert slept == [0.25, 0.25, 0.25]
