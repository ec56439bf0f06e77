"""The Alma REST client against the emulator: faults, idempotency, rejects, quota, throttle, key safety.

Fault tests run the emulator in-process on virtual time: timeouts are raised by a transport,
sleeps move a clock, attempts are counted. Nothing depends on how fast the machine is.
"""

from __future__ import annotations

import io
import json
import logging
import math
import sqlite3
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, get_args

import httpx
import pymarc
import pytest
from pymarc import Field, Indicators, Subfield

from aleph2alma.alma.client import (
    AlmaAuthError,
    AlmaClient,
    AlmaQuotaExhausted,
    AlmaRedirectRefused,
    AlmaUnavailable,
    parse_error,
    with_marker,
)
from aleph2alma.alma.client_load import Kind, load, read_users_xml
from aleph2alma.alma.throttle import Throttle, tuned
from aleph2alma.errors import ConfigError
from aleph2alma.rejects import RejectLog
from aleph2alma_dev.demo.alma_emulator import API, Faults, Limits, make_app, serve
from aleph2alma_dev.demo.alma_emulator_store import Store, import_bibs, import_items, import_users

N_USERS, N_LOANS, N_REQUESTS, N_FEES = 200, 300, 100, 150


def json_bytes(data: Any) -> bytes:
    return json.dumps(data).encode()


def fast_client(base: str, key: str = "test-key", **options: Any) -> AlmaClient:
    """No pacing, millisecond backoff, no quota floor: tests of behaviour, not of rate."""
    settings: dict[str, Any] = {"per_second": 0, "backoff_base": 0.005, "backoff_max": 0.05, "quota_floor": 0}
    return AlmaClient(base, key, **(settings | options))


def marc_file(n: int) -> bytes:
    out = io.BytesIO()
    for i in range(n):
        record = pymarc.Record(force_utf8=True, leader="00000nam a2200000 a 4500")
        record.add_field(
            Field(tag="001", data=f"{i:09d}"),
            Field(
                tag="035", indicators=Indicators(" ", " "), subfields=[Subfield("a", f"(ALEPH)BNU01{i:09d}")]
            ),
            Field(tag="245", indicators=Indicators("0", "0"), subfields=[Subfield("a", f"Title {i}")]),
        )
        out.write(record.as_marc())
    return out.getvalue()


def users_xml(n: int) -> bytes:
    """``n`` users as the transform writes them (only what the API needs, plus an identifier)."""
    users = "".join(
        f"<user><record_type>PUBLIC</record_type><primary_id>P{i:05d}</primary_id><first_name>名{i}</first_name>"
        f"<last_name>王</last_name><user_group>UG</user_group><account_type>EXTERNAL</account_type>"
        f'<status>ACTIVE</status><user_identifiers><user_identifier segment_type="External"><id_type>BARCODE'
        f"</id_type><value>UB{i:05d}</value><status>ACTIVE</status></user_identifier></user_identifiers></user>"
        for i in range(n)
    )
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<users>{users}</users>\n'.encode()


def records(kind: str, scale: int = 1) -> list[dict[str, Any]]:
    """Transform-shaped JSON-lines records (1/``scale`` of them); loans on items I00000…, requests after."""
    n_users = N_USERS // scale
    if kind == "loans":
        return [
            {
                "aleph_key": f"L{i:05d}",
                "user_primary_id": f"P{i % n_users:05d}",
                "item_barcode": f"I{i:05d}",
                "library": "MAIN",
                "circ_desk": "DEFAULT_CIRC_DESK",
                "loan_date": "2024-01-02T00:00:00+08:00",
                "due_date": "2099-02-01T23:59:00+08:00",
                "loan_status": "ACTIVE",
                "note": None,
            }
            for i in range(N_LOANS // scale)
        ]
    if kind == "requests":
        return [
            {
                "aleph_key": f"R{i:05d}",
                "user_primary_id": f"P{(i * 7) % n_users:05d}",
                "item_barcode": f"I{N_LOANS + i:05d}",
                "request_type": "HOLD",
                "pickup_location_type": "LIBRARY",
                "pickup_location_library": "MAIN",
                "status": "NOT_STARTED",
                "request_date": "2024-01-02",
                "expiry_date": "2099-03-01",
                "hold_expiry_date": None,
            }
            for i in range(N_REQUESTS // scale)
        ]
    return [
        {
            "aleph_key": f"F{i:05d}",
            "user_primary_id": f"P{(i * 3) % n_users:05d}",
            "type": "OVERDUEFINE",
            "amount": 1.5 + i,
            "currency": "CNY",
            "owner": "MAIN",
            "comment": f"overdue {i}",
            "creation_date": "2023-05-06",
            "aleph_item_key": None,
        }
        for i in range(N_FEES // scale)
    ]


@pytest.fixture
def library_db(tmp_path: Path) -> Path:
    """An emulator database with bibs and the items the loans and requests name (no users yet)."""
    db = tmp_path / "alma.sqlite"
    store = Store(db)
    import_bibs(store, io.BytesIO(marc_file(50)))
    rows = "\n".join(f"I{i:05d},MAIN,STACK,01,BNU01,{i % 50}" for i in range(N_LOANS + N_REQUESTS))
    import_items(store, io.StringIO(f"barcode,library,location,item_policy,bib_library,bib_sysno\n{rows}\n"))
    store.close()
    return db


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start an emulator; returns its API base URL."""
    servers = []

    def start(db: Path, limits: Limits | None = None, faults: Faults | None = None) -> str:
        server, _thread = serve(0, db, faults, limits=limits)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}{API}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def load_all(client: AlmaClient, rejects: RejectLog, scale: int = 1) -> dict[str, Any]:
    """Users, loans, requests and fees, in that order (as the load DAG runs them); stats per kind."""
    users = list(read_users_xml(io.BytesIO(users_xml(N_USERS // scale)), external_id="BNU_SIS"))
    out = {"users": load(client, "users", users, rejects, workers=6).to_dict()}
    out["loans"] = load(client, "loans", records("loans", scale), rejects, workers=6).to_dict()
    out["requests"] = load(client, "requests", records("requests", scale), rejects, workers=6).to_dict()
    out["fees"] = load(client, "fees", records("fines", scale), rejects, workers=6).to_dict()
    return out


def counts(base: str) -> dict[str, int]:
    return httpx.get(base.removesuffix(API) + "/_emulator/counts").json()


# --- faults on virtual time ----------------------------------------------------------------
#
# The emulator runs in-process (httpx's WSGI transport) behind FaultyAlma, which decides each
# request's fault; timeouts are httpx exceptions raised by the transport, not waits, and the
# client's sleep only moves VirtualTime. No outcome depends on how fast this machine is.

ALMA = "https://alma.example/almaws/v1"  # served in-process: nothing leaves the test

Fault = Literal["429", "500_before", "500_after", "timeout_before", "timeout_after", "late_commit"]
FAULTS: tuple[Fault, ...] = get_args(Fault)
PER_SECOND = {"errorList": {"error": [{"errorCode": "PER_SECOND_THRESHOLD", "errorMessage": "too many"}]}}
SERVER_ERROR = {"errorList": {"error": [{"errorCode": "INTERNAL_SERVER_ERROR", "errorMessage": "down"}]}}


class VirtualTime:
    """A clock that moves only when someone sleeps (thread-safe); ``slept`` lists every sleep."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.25
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.now += max(0.0, seconds)


Plan = Callable[[httpx.Request, int], "Fault | None"]


class FaultyAlma(httpx.BaseTransport):
    """The emulator app behind scripted faults. ``plan(request, n)``: the fault for the ``n``-th
    sending (from 0) of this exact request (method, URL, body), or None.

    - ``429``: Alma's PER_SECOND_THRESHOLD, the app not called;
    - ``500_before`` / ``500_after``: a 500 instead of calling the app / after the app ran (committed);
    - ``timeout_before``: ``ReadTimeout``, the request never reached the app (lost on the way);
    - ``timeout_after``: the app ran and committed, the answer is lost (``ReadTimeout``);
    - ``late_commit``: ``ReadTimeout`` now; the app runs the request ``lag`` virtual seconds later
      (delivered before the first request handled at or after that time): Alma committing a
      write after the client gave up on it.
    """

    def __init__(self, app: Any, time: VirtualTime, plan: Plan, lag: float = 0.0) -> None:
        self.inner = httpx.WSGITransport(app=app)
        self.time, self.plan, self.lag = time, plan, lag
        self.injected: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()  # by method, requests that reached the app
        self._seen: Counter[tuple[str, str, bytes]] = Counter()
        self._late: list[tuple[float, httpx.Request]] = []
        self._lock = threading.RLock()

    def _app(self, request: httpx.Request) -> httpx.Response:
        self.sent[request.method] += 1
        response = self.inner.handle_request(request)
        response.read()
        return response

    def deliver_late(self, until: float = math.inf) -> None:
        """Run the late writes due by ``until`` (all of them by default)."""
        with self._lock:
            due = [r for at, r in self._late if at <= until]
            self._late = [(at, r) for at, r in self._late if at > until]
            for request in due:
                self._app(request)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.deliver_late(self.time.clock())
            key = (request.method, str(request.url), request.read())
            fault = self.plan(request, self._seen[key])
            self._seen[key] += 1
            if fault is None:
                return self._app(request)
            self.injected[fault] += 1
            if fault == "429":
                return httpx.Response(429, json=PER_SECOND, request=request)
            if fault == "500_before":
                return httpx.Response(500, json=SERVER_ERROR, request=request)
            if fault == "late_commit":
                self._late.append((self.time.clock() + self.lag, request))
                raise httpx.ReadTimeout("timed out (late commit)", request=request)
            if fault == "timeout_before":
                raise httpx.ReadTimeout("timed out (never arrived)", request=request)
            self._app(request)
            if fault == "500_after":
                return httpx.Response(500, json=SERVER_ERROR, request=request)
            raise httpx.ReadTimeout("timed out (answer lost)", request=request)


def virtual_client(
    db: Path, plan: Plan, *, lag: float = 0.0, app: Any = None, **options: Any
) -> tuple[AlmaClient, FaultyAlma, VirtualTime]:
    """A client of the in-process emulator over ``db``, on virtual time, with ``plan``'s faults."""
    vt = VirtualTime()
    faulty = FaultyAlma(app or make_app(db, limits=Limits(per_second=0)), vt, plan, lag)
    settings: dict[str, Any] = {"per_second": 0, "quota_floor": 0, "timeout": 30.0}
    client = AlmaClient(
        ALMA,
        "test-key",
        session=httpx.Client(transport=faulty),
        sleep=vt.sleep,
        clock=vt.clock,
        **(settings | options),
    )
    return client, faulty, vt


def first_post(fault: Fault) -> Plan:
    """``fault`` on the first sending of every create (POST), nothing else."""
    return lambda request, n: fault if request.method == "POST" and n == 0 else None


def with_users(db: Path, n: int) -> Path:
    store = Store(db)
    import_users(store, io.BytesIO(users_xml(n)), external_id="BNU_SIS")
    store.close()
    return db


def kind_records(kind: str) -> list[dict[str, Any]]:
    """A few records of one load kind (users as the users XML gives them)."""
    if kind == "users":
        return list(read_users_xml(io.BytesIO(users_xml(8)), external_id="BNU_SIS"))
    return records("fines" if kind == "fees" else kind)[:8]


def alma_rows(db: Path, kind: str) -> int:
    with sqlite3.connect(db) as con:
        return int(con.execute(f"SELECT count(*) FROM {kind}").fetchone()[0])  # kind: a fixed table name


# faults after which the first write is in Alma (the client must find it) or is not (it must re-post)
LANDED: dict[Fault, bool] = {
    "429": False,
    "500_before": False,
    "timeout_before": False,
    "500_after": True,
    "timeout_after": True,
    "late_commit": True,
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("kind", ["users", "loans", "requests", "fees"])
def test_each_fault_on_each_create_loses_and_doubles_nothing(
    library_db: Path, kind: Kind, fault: Fault
) -> None:
    """Every create's first POST meets the fault; every record ends in Alma exactly once."""
    db = library_db if kind == "users" else with_users(library_db, N_USERS)
    before = alma_rows(db, kind)
    client, faulty, vt = virtual_client(db, first_post(fault), lag=20.0)  # lag < settle (= timeout, 30 s)
    batch = kind_records(kind)
    rejects = RejectLog()
    stats = load(client, kind, batch, rejects, workers=1)
    faulty.deliver_late()  # anything still on its way lands now: nothing may be doubled by it

    assert rejects.total == 0, dict(rejects.counts)
    assert faulty.injected[fault] == len(batch)
    assert alma_rows(db, kind) - before == len(batch)
    if kind == "fees":
        with sqlite3.connect(db) as con:
            assert con.execute("SELECT count(DISTINCT json_extract(data, '$.comment')) FROM fees").fetchone()[
                0
            ] == len(batch)
    # found after a write that landed, written again after one that did not
    assert (stats.existing, stats.created) == ((len(batch), 0) if LANDED[fault] else (0, len(batch)))
    assert faulty.sent["POST"] == len(batch)  # each record reached Alma once
    if fault in ("timeout_before", "timeout_after", "late_commit"):
        assert client.stats.ambiguous_writes == len(batch)
    if fault == "late_commit":  # looked for it until it landed, 20 s on virtual time: no real wait
        assert sum(vt.slept) >= 20.0 * len(batch)


@pytest.mark.parametrize("kind", ["users", "loans", "requests"])
def test_a_late_twin_of_a_unique_record_is_refused_by_alma(library_db: Path, kind: Kind) -> None:
    """A write that commits after the settle window: Alma's uniqueness refuses the late twin."""
    db = library_db if kind == "users" else with_users(library_db, N_USERS)
    before = alma_rows(db, kind)
    client, faulty, _vt = virtual_client(db, first_post("late_commit"), lag=10_000.0, settle=30.0)
    batch = kind_records(kind)
    stats = load(client, kind, batch, RejectLog(), workers=1)
    assert stats.created == len(batch)  # looked for 30 s, then written again
    faulty.deliver_late()
    assert alma_rows(db, kind) - before == len(batch)


def test_a_fee_committed_after_the_settle_window_is_reported_as_a_twin(library_db: Path) -> None:
    """Alma has no unique key on a fee: a late twin cannot be refused, so a re-run names it."""
    db = with_users(library_db, N_USERS)
    client, faulty, _vt = virtual_client(db, first_post("late_commit"), lag=10_000.0, settle=30.0)
    batch = kind_records("fees")
    assert load(client, "fees", batch, RejectLog(), workers=1).created == len(batch)
    faulty.deliver_late()
    assert alma_rows(db, "fees") == 2 * len(batch)  # the limit of what a client can do
    again = load(client, "fees", batch, RejectLog(), workers=1)
    assert (again.created, again.existing) == (0, len(batch))
    assert again.warnings == {"fee_twins_in_alma": len(batch)}


def test_a_429_storm_is_waited_out(library_db: Path) -> None:
    """Every request's first five answers are 429 PER_SECOND_THRESHOLD: six attempts each."""
    db = with_users(library_db, N_USERS)
    client, faulty, vt = virtual_client(db, lambda request, n: "429" if n < 5 else None)
    stats = load(client, "fees", kind_records("fees"), RejectLog(), workers=1)
    assert (stats.created, stats.rejected) == (8, 0) and alma_rows(db, "fees") == 8
    assert client.stats.throttled == faulty.injected["429"] == 5 * faulty.sent.total()
    assert len(vt.slept) == client.stats.retries == client.stats.throttled  # one backoff per refusal


def test_a_storm_outlasting_the_retries_stops_the_load_and_a_rerun_resumes(library_db: Path) -> None:
    db = with_users(library_db, N_USERS)
    storm = {"on": True}
    client, _faulty, _vt = virtual_client(
        db, lambda request, n: "429" if storm["on"] and request.method == "POST" else None, max_retries=3
    )
    batch = kind_records("fees")
    with pytest.raises(AlmaUnavailable, match="gave up after 4 attempts"):
        load(client, "fees", batch, RejectLog(), workers=1)
    assert alma_rows(db, "fees") == 0
    storm["on"] = False
    stats = load(client, "fees", batch, RejectLog(), workers=1)
    assert (stats.created, stats.records_out) == (8, 8) and alma_rows(db, "fees") == 8


def test_faulty_api_loses_and_duplicates_nothing(library_db: Path) -> None:
    """Every kind of fault, drawn per request from a hash (the same on every run and thread
    interleaving), on a whole load with 6 threads; time is virtual, attempts are counted."""

    def plan(request: httpx.Request, n: int) -> Fault | None:
        if n >= 3:
            return None
        draw = zlib.crc32(f"{request.method} {request.url} {request.content!r} {n}".encode()) % 100
        return FAULTS[draw % len(FAULTS)] if draw < len(FAULTS) * 2 else None  # 2 % per fault

    client, faulty, _vt = virtual_client(library_db, plan, lag=20.0)
    rejects = RejectLog()
    stats = load_all(client, rejects)
    faulty.deliver_late()

    assert rejects.total == 0, dict(rejects.counts)
    for kind, expected in (
        ("users", N_USERS),
        ("loans", N_LOANS),
        ("requests", N_REQUESTS),
        ("fees", N_FEES),
    ):
        assert stats[kind]["balanced"] and stats[kind]["records_in"] == expected
        assert stats[kind]["created"] + stats[kind]["existing"] == stats[kind]["records_out"] == expected, (
            stats[kind]
        )
        assert stats[kind]["warnings"] == {}
        assert alma_rows(library_db, kind) == expected
    with sqlite3.connect(library_db) as db:
        assert (
            db.execute(
                "SELECT count(*) FROM (SELECT primary_id, item_pid FROM loans GROUP BY 1, 2 "
                "HAVING count(*) > 1)"
            ).fetchone()[0]
            == 0
        )
        assert (
            db.execute("SELECT count(DISTINCT json_extract(data, '$.comment')) FROM fees").fetchone()[0]
            == N_FEES
        )
        due = {r[0] for r in db.execute("SELECT json_extract(data, '$.due_date') FROM loans")}
    assert due == {"2099-02-01T15:59:00Z"}  # Aleph's due date, not the policy's
    # every kind of fault happened, on reads and on writes, and was retried
    assert set(faulty.injected) == set(FAULTS), faulty.injected
    assert min(faulty.injected.values()) >= 3, faulty.injected
    assert client.stats.ambiguous_writes > 0 and client.stats.transport_errors > 0
    assert client.stats.retries >= client.stats.throttled + client.stats.server_errors
    assert sum(s["retries"] for s in stats.values()) == client.stats.retries


def test_running_a_load_twice_creates_nothing_new(emulator: Callable[..., str], library_db: Path) -> None:
    base = emulator(library_db, Limits(per_second=0))
    client = fast_client(base)
    first = load_all(client, RejectLog(), scale=5)
    before = counts(base)
    second = load_all(client, RejectLog(), scale=5)
    assert counts(base) == before
    assert all(s["created"] == 0 and s["existing"] == s["records_in"] for s in second.values()), second
    assert [s["created"] for s in first.values()] == [
        N_USERS // 5,
        N_LOANS // 5,
        N_REQUESTS // 5,
        N_FEES // 5,
    ]


def test_permanent_errors_become_rejects_and_the_load_goes_on(
    emulator: Callable[..., str], library_db: Path
) -> None:
    base = emulator(library_db, Limits(per_second=0))
    client = fast_client(base)
    load(client, "users", read_users_xml(io.BytesIO(users_xml(3)), "SIS"), RejectLog())
    loans = records("loans")[:3]
    loans[1] = {**loans[1], "item_barcode": "NO-SUCH-ITEM"}
    loans.append({**records("loans")[3], "user_primary_id": "NOBODY"})
    loans.append({**records("loans")[4], "circ_desk": None})
    out = io.StringIO()
    stats = load(client, "loans", loans, RejectLog(out))
    assert (stats.created, stats.rejected, stats.balanced) == (2, 3, True)
    assert stats.rejected_by_reason == {"alma_401689": 1, "alma_401890": 1, "missing_circ_desk": 1}
    rejected = out.getvalue()
    assert '"entity": "loans"' in rejected and '"record_id": "L00001"' in rejected
    assert "No items found for barcode NO-SUCH-ITEM" in rejected


def test_users_without_external_id_are_rejected_with_almas_code(
    emulator: Callable[..., str], library_db: Path
) -> None:
    client = fast_client(emulator(library_db, Limits(per_second=0)))
    stats = load(client, "users", read_users_xml(io.BytesIO(users_xml(2))), RejectLog())
    assert stats.rejected_by_reason == {"alma_401854": 2}


def test_quota_floor_stops_the_client_before_alma_does(
    emulator: Callable[..., str], library_db: Path
) -> None:
    base = emulator(library_db, Limits(per_second=0, daily_quota=50))
    client = AlmaClient(base, "k", per_second=0, quota_floor=10)
    with pytest.raises(AlmaQuotaExhausted) as caught:
        for _ in range(60):
            client.get_user("P00001")
    assert caught.value.code == "QUOTA_FLOOR"
    assert "X-Exl-Api-Remaining is 10" in str(caught.value) and "floor of 10" in str(caught.value)
    assert client.stats.requests == 40 and client.remaining == 10
    stats = httpx.get(base.removesuffix(API) + "/_emulator/stats").json()
    assert stats["remaining"] == 10 and "429_daily" not in stats


def test_daily_threshold_is_quota_exhausted_and_not_retried(
    emulator: Callable[..., str], library_db: Path
) -> None:
    base = emulator(library_db, Limits(per_second=0, daily_quota=2))
    client = AlmaClient(base, "k", per_second=0, quota_floor=0)
    client.get_user("x"), client.get_user("y")
    fresh = AlmaClient(base, "k", per_second=0, quota_floor=0)  # has not seen the header yet
    with pytest.raises(AlmaQuotaExhausted) as caught:
        fresh.get_user("z")
    assert caught.value.code == "DAILY_THRESHOLD" and caught.value.status == 429
    assert fresh.stats.requests == 1 and fresh.stats.retries == 0


def test_a_refused_key_stops_the_load(emulator: Callable[..., str], library_db: Path) -> None:
    base = emulator(library_db, Limits(per_second=0, api_key="right"))
    client = fast_client(base, "wrong")
    rejects = RejectLog()
    with pytest.raises(AlmaAuthError, match="UNAUTHORIZED"):
        load(client, "fees", records("fines")[:5], rejects, workers=2)
    assert rejects.total == 0


# --- error bodies as JSON and as Alma's XML web_service_result (issue 8, C11) ---------------

WSR = "http://com/exlibris/urm/general/xmlbeans"  # web_service_result.xsd's target namespace


def wsr(code: str, message: str, tracking: str | None = "E01-0612-XML", namespace: str = WSR) -> bytes:
    """Alma's XML error document (``web_service_result.xsd``); ``tracking`` None leaves it out,
    as Alma's gateway does on a refused key."""
    track = "" if tracking is None else f"<trackingId>{tracking}</trackingId>"
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
        f'<web_service_result xmlns="{namespace}"><errorsExist>true</errorsExist><errorList><error>'
        f"<errorCode>{code}</errorCode><errorMessage>{message}</errorMessage>{track}"
        "</error></errorList></web_service_result>"
    ).encode()


def xml_answer(status: int, body: bytes) -> httpx.Response:
    return httpx.Response(status, content=body, headers={"Content-Type": "application/xml"})


KEY_REFUSED = "API-key not defined or not configured to allow this API."


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(
            400,
            json_bytes(
                {
                    "errorsExist": True,
                    "errorList": {
                        "error": [
                            {"errorCode": "401861", "errorMessage": "User not found ", "trackingId": "E01-1"}
                        ]
                    },
                }
            ),
            ("401861", "User not found", "E01-1"),
            id="json-list",
        ),
        pytest.param(
            400,
            json_bytes({"errorList": {"error": {"errorCode": "401890", "errorMessage": "x"}}}),
            ("401890", "x", ""),
            id="json-single-error",
        ),
        pytest.param(
            400,
            wsr("UNAUTHORIZED", KEY_REFUSED, None),
            ("UNAUTHORIZED", KEY_REFUSED, ""),
            id="xml-namespaced-no-tracking-id",
        ),
        pytest.param(
            429,
            wsr("DAILY_THRESHOLD", "Daily", "E01-9", namespace=""),
            ("DAILY_THRESHOLD", "Daily", "E01-9"),
            id="xml-empty-namespace",
        ),
        pytest.param(
            502,
            b"<html><body>Bad Gateway</body></html>",
            ("HTTP_502", "<html><body>Bad Gateway</body></html>", ""),
            id="html-is-no-alma-error",
        ),
        pytest.param(
            400,
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e "UNAUTHORIZED">]><web_service_result>'
            b"<errorList><error><errorCode>&e;</errorCode></error></errorList></web_service_result>",
            ("HTTP_400", None, ""),
            id="xml-with-a-dtd-is-not-parsed",
        ),
    ],
)
def test_error_bodies_are_read_as_json_and_as_xml(
    status: int, body: bytes, expected: tuple[str, str | None, str]
) -> None:
    code, message, tracking = parse_error(httpx.Response(status, content=body))
    assert (code, tracking) == (expected[0], expected[2])
    if expected[1] is not None:
        assert message == expected[1]


def test_an_xml_unauthorized_stops_the_load_with_an_auth_error() -> None:
    """Alma's gateway refuses a key with 400 and an XML body: one call, no reject, no retry."""
    recorder = Recorder(lambda request: xml_answer(400, wsr("UNAUTHORIZED", KEY_REFUSED, None)))
    rejects = RejectLog()
    with pytest.raises(AlmaAuthError, match="UNAUTHORIZED") as caught:
        load(recorder.client(), "fees", records("fines")[:5], rejects, workers=1)
    assert rejects.total == 0 and len(recorder.requests) == 1
    assert caught.value.status == 400 and caught.value.message == KEY_REFUSED


def test_an_xml_daily_threshold_is_quota_exhausted_not_an_outage() -> None:
    recorder = Recorder(
        lambda request: xml_answer(429, wsr("DAILY_THRESHOLD", "Daily API Request Threshold"))
    )
    client = recorder.client()
    with pytest.raises(AlmaQuotaExhausted) as caught:
        client.get_user("P00001")
    assert caught.value.code == "DAILY_THRESHOLD" and not isinstance(caught.value, AlmaUnavailable)
    assert len(recorder.requests) == 1 and client.stats.retries == 0


def test_an_xml_per_second_threshold_is_waited_out_and_an_xml_not_found_is_none() -> None:
    answers = iter(
        [
            xml_answer(429, wsr("PER_SECOND_THRESHOLD", "HTTP requests are more than allowed per second")),
            xml_answer(400, wsr("401861", "User with identifier P00001 was not found.")),
        ]
    )
    recorder = Recorder(lambda request: next(answers))
    vt = VirtualTime()
    client = recorder.client(sleep=vt.sleep, clock=vt.clock)
    assert client.get_user("P00001") is None
    assert client.stats.throttled == 1 and len(recorder.requests) == 2 and len(vt.slept) == 1


def test_outage_outlasting_the_retries_is_unavailable(library_db: Path) -> None:
    client, faulty, vt = virtual_client(library_db, lambda request, n: "500_before", max_retries=2)
    with pytest.raises(AlmaUnavailable, match="gave up after 3 attempts"):
        client.get_user("P00001")
    assert client.stats.requests == faulty.injected["500_before"] == 3 and client.stats.retries == 2
    assert len(vt.slept) == 2


def test_retry_after_is_honoured(library_db: Path) -> None:
    """The emulator's seeded 429s carry Retry-After: 0.2; the client sleeps exactly that after each."""
    app = make_app(
        library_db,
        Faults(rate_429=0.5, burst_429=1, retry_after=0.2, seed=3),
        limits=Limits(per_second=0),
    )
    client, _faulty, vt = virtual_client(library_db, lambda request, n: None, app=app, backoff_base=0.001)
    for _ in range(6):
        client.get_user("P00001")
    assert client.stats.throttled >= 2
    assert vt.slept == [0.2] * client.stats.throttled


def test_a_paced_client_stays_under_the_servers_whole_second_limit(library_db: Path) -> None:
    """The client's throttle and the emulator's per-second counter on one virtual clock: 60 calls at a
    limit of 30/s get no 429; an unpaced client making the same calls is refused (the control)."""
    vt = VirtualTime()
    app = make_app(library_db, limits=Limits(per_second=30), clock=vt.clock)
    throttle = replace(tuned(30), clock=vt.clock, wall=vt.clock, sleep=vt.sleep)
    session = httpx.Client(transport=httpx.WSGITransport(app=app))
    client = AlmaClient(ALMA, "k", per_second=30, quota_floor=0, session=session, throttle=throttle)
    for _ in range(60):
        client.get_user("x")
    assert client.stats.requests == 60 and client.stats.throttled == 0
    assert 60 / 30 <= vt.now - 1_700_000_000.25 < 60 / 24  # paced near the limit, not far under it
    unpaced, _faulty, _vt = virtual_client(library_db, lambda request, n: None, app=app, max_retries=0)
    with pytest.raises(AlmaUnavailable, match="PER_SECOND_THRESHOLD"):
        for _ in range(60):
            unpaced.get_user("x")


# --- the API key goes to the configured host only (B6) --------------------------------------


class Recorder:
    """A MockTransport handler: answers by ``route(request)``; keeps every request it was sent."""

    def __init__(self, route: Callable[[httpx.Request], httpx.Response]) -> None:
        self.route, self.requests = route, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.route(request)

    def client(self, base: str = ALMA, **options: Any) -> AlmaClient:
        session = httpx.Client(transport=httpx.MockTransport(self))
        return AlmaClient(base, "SECRET-KEY", session=session, per_second=0, quota_floor=0, **options)

    def hosts(self) -> set[str]:
        return {r.url.host for r in self.requests}


def redirect_to(target: str) -> Callable[[httpx.Request], httpx.Response]:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/items"):
            return httpx.Response(302, headers={"Location": target})
        return httpx.Response(200, json={"item_data": {"pid": "23001", "barcode": "BC999"}})

    return route


@pytest.mark.parametrize(
    "base",
    [
        "http://alma.example/almaws/v1",
        "http://10.0.0.5:8765/almaws/v1",
        "ftp://alma.example/almaws/v1",
        "alma.example/almaws/v1",
        "https:///almaws/v1",
    ],
)
def test_a_base_url_the_key_could_leak_from_is_a_config_error(base: str) -> None:
    with pytest.raises(ConfigError, match="Alma base_url") as caught:
        AlmaClient(base, "SECRET-KEY")
    assert "\n" not in str(caught.value) and "SECRET-KEY" not in str(caught.value)


@pytest.mark.parametrize(
    "base",
    [
        ALMA,
        "http://127.0.0.1:8765/almaws/v1",
        "http://localhost:8765/almaws/v1",
        "http://[::1]:8765/almaws/v1",
    ],
)
def test_https_or_plain_http_to_this_machine_is_accepted(base: str) -> None:
    AlmaClient(base, "k").close()


def test_a_same_origin_redirect_is_followed_with_the_key() -> None:
    recorder = Recorder(redirect_to(f"{ALMA}/bibs/99/holdings/22/items/23001"))
    item = recorder.client().find_item_by_barcode("BC999")
    assert item is not None and item["item_data"]["pid"] == "23001"
    assert [r.url.path for r in recorder.requests] == [
        "/almaws/v1/items",
        "/almaws/v1/bibs/99/holdings/22/items/23001",
    ]
    assert all(r.headers["Authorization"] == "apikey SECRET-KEY" for r in recorder.requests)


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/almaws/v1/bibs/99/holdings/22/items/23001",  # another host
        "http://alma.example/almaws/v1/bibs/99/holdings/22/items/23001",  # https → http
        "https://alma.example:8443/almaws/v1/bibs/99/holdings/22/items/23001",  # another port
        "//evil.example/almaws/v1/items/1",  # scheme-relative
    ],
)
def test_a_redirect_elsewhere_is_refused_and_gets_nothing(target: str) -> None:
    recorder = Recorder(redirect_to(target))
    with pytest.raises(AlmaRedirectRefused, match="not followed, the API key is not sent there") as caught:
        recorder.client().find_item_by_barcode("BC999")
    assert len(recorder.requests) == 1 and recorder.hosts() == {"alma.example"}
    assert recorder.requests[0].url.port is None  # the one request went to the configured origin
    assert caught.value.code == "REDIRECT_REFUSED" and "BC999" not in str(caught.value)


def test_a_refused_redirect_stops_the_load(library_db: Path) -> None:
    recorder = Recorder(redirect_to("https://evil.example/almaws/v1/items/1"))
    rejects = RejectLog()
    with pytest.raises(AlmaRedirectRefused):
        load(recorder.client(), "requests", records("requests")[:3], rejects, workers=1)
    assert rejects.total == 0 and recorder.hosts() == {"alma.example"}


def test_patron_ids_barcodes_and_the_key_stay_out_of_info_logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx logs every request at INFO with its URL; for Alma the ids are masked, the query dropped."""
    # Earlier tests in the same process may have configured logging (Airflow's dictConfig disables
    # existing loggers, others raise httpx to WARNING): this test needs httpx's INFO lines to reach caplog.
    httpx_logger = logging.getLogger("httpx")
    monkeypatch.setattr(httpx_logger, "disabled", False)
    monkeypatch.setattr(httpx_logger, "propagate", True)

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/items"):
            return httpx.Response(302, headers={"Location": f"{ALMA}/bibs/99123/holdings/22456/items/23789"})
        if request.url.path.endswith("/fees") and request.method == "GET":
            return httpx.Response(200, json={"total_record_count": 0})
        if request.url.path.endswith("/fees"):
            return httpx.Response(200, json={"id": "73001", "comment": "x"})
        if request.url.path.startswith("/almaws/v1/users/"):
            return httpx.Response(200, json={"primary_id": "PATRON-4711"})
        return httpx.Response(200, json={"item_data": {"pid": "23789", "barcode": "BC-0815"}})

    recorder = Recorder(route)
    client = recorder.client()
    with caplog.at_level(logging.INFO, logger="httpx"):
        client.get_user("PATRON-4711")
        client.find_item_by_barcode("BC-0815")
        client.ensure_fee("PATRON-4711", {"type": {"value": "OTHER"}, "original_amount": 1.0}, aleph_key="K1")
    logged = caplog.text
    assert "HTTP Request: GET https://alma.example/almaws/v1/users/*" in logged  # httpx still logs, masked
    assert "/almaws/v1/bibs/*/holdings/*/items/*" in logged
    for secret in ("PATRON-4711", "BC-0815", "99123", "23789", "SECRET-KEY", "item_barcode"):
        assert secret not in logged, secret
    assert len(recorder.requests) == 5


def test_errors_name_the_call_without_the_patron_id(library_db: Path) -> None:
    client, _faulty, _vt = virtual_client(library_db, lambda request, n: "500_before", max_retries=0)
    with pytest.raises(AlmaUnavailable) as caught:
        client.get_user("PATRON-4711")
    assert "GET /users/*" in str(caught.value) and "PATRON-4711" not in str(caught.value)


def test_whole_second_cap_moves_calls_to_the_next_second() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    throttle = Throttle(rate=10, cap=3, clock=lambda: now[0], wall=lambda: now[0] + 0.5, sleep=sleep)
    starts = []
    for _ in range(7):
        throttle.acquire()
        starts.append(round(now[0] + 0.5, 3))  # wall-clock time of each call
    per_second: dict[int, int] = {}
    for t in starts:
        per_second[int(t)] = per_second.get(int(t), 0) + 1
    assert max(per_second.values()) == 3
    assert all(b - a >= 0.1 - 1e-9 for a, b in zip(starts, starts[1:], strict=False))
    assert tuned(25).rate == 24 and tuned(25).cap == 24 and not tuned(0).enabled


def test_a_deep_bucket_lets_a_burst_through_then_paces() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    throttle = Throttle(rate=10, burst=3, clock=lambda: now[0], sleep=sleep)
    waits = [throttle.acquire() for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0] and waits[3] == pytest.approx(0.1) and waits[4] == pytest.approx(0.1)


def test_marker_is_added_once() -> None:
    assert with_marker("late", "K1") == "late [aleph:K1]"
    assert with_marker("late [aleph:K1]", "K1") == "late [aleph:K1]"
    assert with_marker(None, "K1") == "[aleph:K1]"


def test_user_xml_becomes_alma_user_json() -> None:
    (user,) = read_users_xml(io.BytesIO(users_xml(1)), external_id="SIS")
    assert user["primary_id"] == "P00000" and user["user_group"] == {"value": "UG"}
    assert user["record_type"] == {"value": "PUBLIC"} and user["external_id"] == "SIS"
    assert user["user_identifier"] == [
        {"segment_type": "External", "id_type": {"value": "BARCODE"}, "value": "UB00000", "status": "ACTIVE"}
    ]
