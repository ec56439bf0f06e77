"""The Alma REST client against the emulator: retries, idempotency, rejects, quota, throttle."""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pymarc
import pytest
from pymarc import Field, Indicators, Subfield

from aleph2alma.alma.client import AlmaAuthError, AlmaClient, AlmaQuotaExhausted, AlmaUnavailable, with_marker
from aleph2alma.alma.client_load import read_users_xml
from aleph2alma.alma.throttle import Throttle, tuned
from aleph2alma.demo.alma_emulator import API, Faults, Limits, serve
from aleph2alma.demo.alma_emulator_store import Store, import_bibs, import_items
from aleph2alma.rejects import RejectLog

N_USERS, N_LOANS, N_REQUESTS, N_FEES = 200, 300, 100, 150


def fast_client(base: str, key: str = "test-key", **options: Any) -> AlmaClient:
    """No pacing, millisecond backoff, no quota floor: tests of behaviour, not of rate."""
    settings: dict[str, Any] = {"per_second": 0, "backoff_base": 0.005, "backoff_max": 0.05, "quota_floor": 0}
    return AlmaClient(base, key, **(settings | options))


def marc_file(n: int) -> bytes:
    out = io.BytesIO()
    for i in range(n):
        record = pymarc.Record(force_utf8=True, leader="00000nam a2200000 a 4500")
        record.add_field(Field(tag="001", data=f"{i:09d}"),
                         Field(tag="035", indicators=Indicators(" ", " "), subfields=[Subfield("a", f"(ALEPH)BNU01{i:09d}")]),
                         Field(tag="245", indicators=Indicators("0", "0"), subfields=[Subfield("a", f"Title {i}")]))
        out.write(record.as_marc())
    return out.getvalue()


def users_xml(n: int) -> bytes:
    """``n`` users as the transform writes them (only what the API needs, plus an identifier)."""
    users = "".join(
        f"<user><record_type>PUBLIC</record_type><primary_id>P{i:05d}</primary_id><first_name>名{i}</first_name>"
        f"<last_name>王</last_name><user_group>UG</user_group><account_type>EXTERNAL</account_type>"
        f"<status>ACTIVE</status><user_identifiers><user_identifier segment_type=\"External\"><id_type>BARCODE"
        f"</id_type><value>UB{i:05d}</value><status>ACTIVE</status></user_identifier></user_identifiers></user>"
        for i in range(n))
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<users>{users}</users>\n'.encode()


def records(kind: str, scale: int = 1) -> list[dict[str, Any]]:
    """Transform-shaped JSON-lines records (1/``scale`` of them); loans on items I00000…, requests after."""
    n_users = N_USERS // scale
    if kind == "loans":
        return [{"aleph_key": f"L{i:05d}", "user_primary_id": f"P{i % n_users:05d}", "item_barcode": f"I{i:05d}",
                 "library": "MAIN", "circ_desk": "DEFAULT_CIRC_DESK", "loan_date": "2024-01-02T00:00:00+08:00",
                 "due_date": "2099-02-01T23:59:00+08:00", "loan_status": "ACTIVE", "note": None}
                for i in range(N_LOANS // scale)]
    if kind == "requests":
        return [{"aleph_key": f"R{i:05d}", "user_primary_id": f"P{(i * 7) % n_users:05d}",
                 "item_barcode": f"I{N_LOANS + i:05d}", "request_type": "HOLD", "pickup_location_type": "LIBRARY",
                 "pickup_location_library": "MAIN", "status": "NOT_STARTED", "request_date": "2024-01-02",
                 "expiry_date": "2099-03-01", "hold_expiry_date": None} for i in range(N_REQUESTS // scale)]
    return [{"aleph_key": f"F{i:05d}", "user_primary_id": f"P{(i * 3) % n_users:05d}", "type": "OVERDUEFINE",
             "amount": 1.5 + i, "currency": "CNY", "owner": "MAIN", "comment": f"overdue {i}",
             "creation_date": "2023-05-06", "aleph_item_key": None} for i in range(N_FEES // scale)]


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
    out = {"users": client.load("users", users, rejects, workers=6).to_dict()}
    out["loans"] = client.load("loans", records("loans", scale), rejects, workers=6).to_dict()
    out["requests"] = client.load("requests", records("requests", scale), rejects, workers=6).to_dict()
    out["fees"] = client.load("fees", records("fines", scale), rejects, workers=6).to_dict()
    return out


def counts(base: str) -> dict[str, int]:
    return httpx.get(base.removesuffix(API) + "/_emulator/counts").json()


def test_faulty_api_loses_and_duplicates_nothing(emulator: Callable[..., str], library_db: Path) -> None:
    faults = Faults(rate_429=0.03, burst_429=3, rate_500=0.03, slow_ms=400, slow_rate=0.02, seed=7)
    base = emulator(library_db, Limits(per_second=0), faults)
    client = fast_client(base, timeout=0.15)
    rejects = RejectLog()
    stats = load_all(client, rejects)

    assert rejects.total == 0, dict(rejects.counts)
    for kind, expected in (("users", N_USERS), ("loans", N_LOANS), ("requests", N_REQUESTS), ("fees", N_FEES)):
        assert stats[kind]["balanced"] and stats[kind]["records_in"] == expected
        assert stats[kind]["created"] + stats[kind]["existing"] == stats[kind]["records_out"] == expected, stats[kind]
        assert stats[kind]["warnings"] == {}
    found = counts(base)
    assert (found["users"], found["loans"], found["requests"], found["fees"]) == (
        N_USERS, N_LOANS, N_REQUESTS, N_FEES)
    with sqlite3.connect(library_db) as db:
        assert db.execute("SELECT count(*) FROM (SELECT primary_id, item_pid FROM loans GROUP BY 1, 2 "
                          "HAVING count(*) > 1)").fetchone()[0] == 0
        assert db.execute("SELECT count(DISTINCT json_extract(data, '$.comment')) FROM fees").fetchone()[0] == N_FEES
        due = {r[0] for r in db.execute("SELECT json_extract(data, '$.due_date') FROM loans")}
    assert due == {"2099-02-01T15:59:00Z"}  # Aleph's due date, not the policy's
    # every kind of fault happened and was retried
    assert client.stats.throttled > 0 and client.stats.server_errors > 0 and client.stats.transport_errors > 0
    assert client.stats.ambiguous_writes > 0
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
    assert [s["created"] for s in first.values()] == [N_USERS // 5, N_LOANS // 5, N_REQUESTS // 5, N_FEES // 5]


def test_permanent_errors_become_rejects_and_the_load_goes_on(emulator: Callable[..., str],
                                                              library_db: Path) -> None:
    base = emulator(library_db, Limits(per_second=0))
    client = fast_client(base)
    client.load("users", read_users_xml(io.BytesIO(users_xml(3)), "SIS"), RejectLog())
    loans = records("loans")[:3]
    loans[1] = {**loans[1], "item_barcode": "NO-SUCH-ITEM"}
    loans.append({**records("loans")[3], "user_primary_id": "NOBODY"})
    loans.append({**records("loans")[4], "circ_desk": None})
    out = io.StringIO()
    stats = client.load("loans", loans, RejectLog(out))
    assert (stats.created, stats.rejected, stats.balanced) == (2, 3, True)
    assert stats.rejected_by_reason == {"alma_401689": 1, "alma_401890": 1, "missing_circ_desk": 1}
    rejected = out.getvalue()
    assert '"entity": "loans"' in rejected and '"record_id": "L00001"' in rejected
    assert "No items found for barcode NO-SUCH-ITEM" in rejected


def test_users_without_external_id_are_rejected_with_almas_code(emulator: Callable[..., str],
                                                                library_db: Path) -> None:
    client = fast_client(emulator(library_db, Limits(per_second=0)))
    stats = client.load("users", read_users_xml(io.BytesIO(users_xml(2))), RejectLog())
    assert stats.rejected_by_reason == {"alma_401854": 2}


def test_quota_floor_stops_the_client_before_alma_does(emulator: Callable[..., str], library_db: Path) -> None:
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


def test_daily_threshold_is_quota_exhausted_and_not_retried(emulator: Callable[..., str],
                                                            library_db: Path) -> None:
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
        client.load("fees", records("fines")[:5], rejects, workers=2)
    assert rejects.total == 0


def test_outage_outlasting_the_retries_is_unavailable(emulator: Callable[..., str], library_db: Path) -> None:
    base = emulator(library_db, Limits(per_second=0), Faults(rate_500=1.0))
    client = fast_client(base, max_retries=2)
    with pytest.raises(AlmaUnavailable, match="gave up after 3 attempts"):
        client.get_user("P00001")
    assert client.stats.requests == 3 and client.stats.retries == 2


def test_retry_after_is_honoured(emulator: Callable[..., str], library_db: Path) -> None:
    base = emulator(library_db, Limits(per_second=0), Faults(rate_429=0.5, burst_429=1, retry_after=0.2, seed=3))
    client = AlmaClient(base, "k", per_second=0, backoff_base=0.001, quota_floor=0)
    started = time.monotonic()
    for _ in range(6):
        client.get_user("P00001")
    assert client.stats.throttled >= 2
    assert time.monotonic() - started >= 0.2 * client.stats.throttled * 0.95


def test_throttle_paces_threads(emulator: Callable[..., str], library_db: Path) -> None:
    base = emulator(library_db, Limits(per_second=30))
    client = AlmaClient(base, "k", per_second=30, quota_floor=0)
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: [client.get_user("x") for _ in range(15)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert client.stats.requests == 60 and client.stats.throttled == 0
    assert 1.9 <= elapsed < 10


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
    assert user["user_identifier"] == [{"segment_type": "External", "id_type": {"value": "BARCODE"},
                                        "value": "UB00000", "status": "ACTIVE"}]
