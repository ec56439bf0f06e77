"""Offline circulation against the in-process Alma emulator: order, rejects, refusals, retries, layouts.

The emulator runs in-process (httpx's WSGI transport): no server, no port, no wall-clock waits.
A crash is simulated by the transport: after a chosen write has reached (and committed in) the
emulator, its answer is lost and the worker dies; a store wrapper then drops the checkpoint
writes a dying process would not make. The retry runs with a fresh client on the same
emulator and artifact store.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from test_alma_client import marc_file

from aleph2alma.alma.client import AlmaApiError, AlmaClient
from aleph2alma.alma.offline_circ import (
    Checkpoint,
    OfflineCircFileError,
    OfflineCircResult,
    read_transactions,
    upload,
)
from aleph2alma.postlive.settings import CircDesk, OfflineCircSettings
from aleph2alma.rejects import RejectLog, read_rejects
from aleph2alma.storage import ArtifactStore, RunScope
from aleph2alma.storage_local import LocalObjectClient
from aleph2alma_dev.demo.alma_emulator import API, Limits, make_app
from aleph2alma_dev.demo.alma_emulator_store import Store, import_bibs, import_items, import_users
from aleph2alma_dev.demo.offline_circ import demo_settings, expected_counts, offline_circulation

ALMA = "https://alma.example/almaws/v1"  # served in-process
SCOPE = RunScope("demo", "post_go_live", "manual__2026-11-05")
SETTINGS = OfflineCircSettings(default_library="BNUZG")
HEADER = "time,circ_desk,action,patron_id,item_barcode\r\n"


class Crash(Exception):
    """The worker died (raised by the transport: no client code catches it)."""


class Alma(httpx.BaseTransport):
    """The emulator app; ``crash_on(request)`` true for the request after which the worker dies
    (the request reached the emulator and committed, its answer is lost)."""

    def __init__(self, app: Any, crash_on: Callable[[httpx.Request], bool] | None = None) -> None:
        self.inner = httpx.WSGITransport(app=app)
        self.crash_on, self.crashed = crash_on, False
        self.writes: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.crashed:
            raise Crash("the worker is dead")
        response = self.inner.handle_request(request)
        response.read()
        if request.method != "GET":
            self.writes.append(f"{request.method} {request.url.params.get('op', '')}")
        if self.crash_on is not None and self.crash_on(request):
            self.crashed = True
            raise Crash("the worker died with a write in flight")
        return response


def nth(n: int, method: str = "POST", op: str | None = None) -> Callable[[httpx.Request], bool]:
    """True for the ``n``-th (from 1) ``method`` request with ``op`` (None: any)."""
    seen = [0]

    def match(request: httpx.Request) -> bool:
        if request.method == method and (op is None or request.url.params.get("op", "") == op):
            seen[0] += 1
            return seen[0] == n
        return False

    return match


class DyingStore:
    """The artifact store as seen by a worker that may die: after the crash nothing more is written."""

    def __init__(self, store: ArtifactStore, alma: Alma) -> None:
        self.store, self.alma = store, alma

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> object:
        return None if self.alma.crashed else self.store.put_bytes(key, data, content_type=content_type)

    def get_bytes(self, key: str) -> bytes:
        return self.store.get_bytes(key)

    def exists(self, key: str) -> bool:
        return self.store.exists(key)


def users_xml(barcodes: list[str]) -> bytes:
    users = "".join(
        f"<user><record_type>PUBLIC</record_type><primary_id>U{b}</primary_id><first_name>名</first_name>"
        f"<last_name>王</last_name><user_group>UG</user_group><account_type>EXTERNAL</account_type>"
        f'<status>ACTIVE</status><user_identifiers><user_identifier segment_type="External"><id_type>BARCODE'
        f"</id_type><value>{b}</value><status>ACTIVE</status></user_identifier></user_identifiers></user>"
        for b in barcodes
    )
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<users>{users}</users>\n'.encode()


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore(LocalObjectClient(tmp_path / "s3"), "artifacts")
    store.ensure_bucket()
    return store


class World:
    """An emulator database holding patrons, items and loans; clients of it, on one app."""

    def __init__(self, db: Path, patrons: list[str], items: list[str]) -> None:
        self.db = db
        store = Store(db)
        import_bibs(store, io.BytesIO(marc_file(1)))
        rows = "".join(f"{b},BNUZG,ZWSK,01,BNU01,0\n" for b in items)
        import_items(
            store, io.StringIO(f"barcode,library,location,item_policy,bib_library,bib_sysno\n{rows}")
        )
        import_users(store, io.BytesIO(users_xml(patrons)), external_id="BNU_SIS")
        store.close()
        self.app = make_app(db, limits=Limits(per_second=0))

    def client(self, crash_on: Callable[[httpx.Request], bool] | None = None) -> tuple[AlmaClient, Alma]:
        alma = Alma(self.app, crash_on)
        client = AlmaClient(
            ALMA, "test-key", per_second=0, quota_floor=0, session=httpx.Client(transport=alma)
        )
        return client, alma

    def lend(self, loans: list[tuple[str, str]]) -> None:
        client, _ = self.client()
        for patron, barcode in loans:
            client.ensure_loan(patron, barcode, "BNUZG", "DEFAULT_CIRC_DESK", aleph_key=barcode)

    def count(self, sql: str) -> int:
        with sqlite3.connect(self.db) as con:
            return int(con.execute(sql).fetchone()[0])

    def loans(self, status: str | None = None) -> int:
        return self.count("SELECT count(*) FROM loans" + (f" WHERE status = '{status}'" if status else ""))

    def renewals(self) -> int:
        return self.count("SELECT count(*) FROM renewals")


@pytest.fixture
def demo_world(tmp_path: Path) -> Iterator[tuple[World, Any]]:
    demo = offline_circulation()
    items = sorted({*demo.items, *(b for _, b in demo.snapshot_loans)})
    patrons = sorted({*demo.patrons, *(p for p, _ in demo.snapshot_loans)})
    world = World(tmp_path / "alma.sqlite", patrons, items)
    world.lend(list(demo.snapshot_loans))
    yield world, demo


def run(
    client: AlmaClient, store: Any, data: bytes, settings: OfflineCircSettings, sink: Path
) -> OfflineCircResult:
    with open(sink, "w", encoding="utf-8") as fh:
        return upload(
            client, [("desks.csv", data)], settings, Checkpoint.for_run(store, SCOPE), RejectLog(fh)
        )


# --- the demo file, whole ---------------------------------------------------------------


def test_the_demo_file_applies_in_full(
    demo_world: tuple[World, Any], artifacts: ArtifactStore, tmp_path: Path
) -> None:
    world, demo = demo_world
    client, _ = world.client()
    result = run(client, artifacts, demo.data, demo_settings(), tmp_path / "rejects.jsonl").to_dict()
    expected = expected_counts()
    assert result["records_in"] == expected["records_in"]
    assert result["records_out"] == expected["records_out"]
    assert result["rejected_input"] == expected["rejected_input"]
    assert {a: c["applied"] for a, c in result["actions"].items()} == expected["applied"]
    assert all(c["already_applied"] == 0 and not c["refused"] for c in result["actions"].values())
    snapshot = len(demo.snapshot_loans)
    assert world.loans() == snapshot + expected["applied"]["loan"]
    assert world.loans("COMPLETE") == expected["applied"]["return"]
    assert world.renewals() == expected["applied"]["renew"]
    rejected = read_rejects(tmp_path / "rejects.jsonl")
    assert sorted(r["reason"] for r in rejected) == sorted(
        reason for reason, n in expected["rejected_input"].items() for _ in range(n)
    )
    assert all(r["source"] == "desks.csv" and r["line_no"] > 1 for r in rejected)


def test_transactions_apply_in_time_order_not_file_order(tmp_path: Path, artifacts: ArtifactStore) -> None:
    """The file lists the return first; it happened after the loan. Equal times keep file order."""
    world = World(tmp_path / "alma.sqlite", ["P1", "P2"], ["I1", "I2"])
    world.lend([("P2", "I2")])
    data = (
        HEADER + "2026-11-02 11:00:00,DESK,return,,I1\r\n"
        "2026-11-02 10:00:00,DESK,loan,P1,I1\r\n"
        "2026-11-02 12:00:00,DESK,return,,I2\r\n"  # same second: return, then loan to another patron
        "2026-11-02 12:00:00,DESK,loan,P1,I2\r\n"
    ).encode()
    client, alma = world.client()
    result = run(client, artifacts, data, SETTINGS, tmp_path / "r.jsonl")
    assert {a: c.applied for a, c in result.actions.items()} == {"loan": 2, "return": 2, "renew": 0}
    assert [w for w in alma.writes] == ["POST ", "POST scan", "POST scan", "POST "]
    assert world.loans("ACTIVE") == 1 and world.loans("COMPLETE") == 2


# --- malformed rows -----------------------------------------------------------------------

BAD_ROWS = {
    "bad_time": "2026-11-31 09:00:00,DESK,return,,I1",
    "missing_time": ",DESK,return,,I1",
    "unknown_action": "2026-11-02 09:00:00,DESK,lend,P1,I1",
    "missing_action": "2026-11-02 09:00:00,DESK,,P1,I1",
    "missing_item_barcode": "2026-11-02 09:00:00,DESK,loan,P1,",
    "missing_patron_id": "2026-11-02 09:00:00,DESK,renew,,I1",
    "missing_circ_desk": "2026-11-02 09:00:00,,loan,P1,I1",
    "bad_field_count": "2026-11-02 09:00:00,DESK,loan,P1,I1,a note",
    "bad_csv": '2026-11-02 09:00:00,DESK,"loan"x,P1,I1',
}


@pytest.mark.parametrize("reason", list(BAD_ROWS))
def test_a_malformed_row_is_rejected_with_its_line_and_reason(reason: str) -> None:
    data = f"{HEADER}2026-11-02 08:00:00,DESK,loan,P1,I9\r\n\r\n{BAD_ROWS[reason]}\r\n".encode()
    out = io.StringIO()
    parsed = read_transactions([("desk.csv", data)], SETTINGS, RejectLog(out))
    assert parsed.rows == 2 and len(parsed.transactions) == 1 and dict(parsed.rejected) == {reason: 1}
    (reject,) = [__import__("json").loads(line) for line in out.getvalue().splitlines()]
    assert (reject["reason"], reject["source"], reject["line_no"], reject["raw"]) == (
        reason,
        "desk.csv",
        4,
        BAD_ROWS[reason],
    )


def test_an_unknown_desk_is_rejected_unless_a_default_library_takes_it() -> None:
    data = f"{HEADER}2026-11-02 08:00:00,ELSEWHERE,loan,P1,I1\r\n".encode()
    strict = replace(SETTINGS, default_library="", desks={"DESK": CircDesk("BNUZG")})
    assert dict(read_transactions([("d.csv", data)], strict, RejectLog()).rejected) == {
        "unknown_circ_desk": 1
    }
    (txn,) = read_transactions([("d.csv", data)], SETTINGS, RejectLog()).transactions
    assert (txn.library, txn.circ_desk) == ("BNUZG", "ELSEWHERE")


def test_a_file_without_a_configured_column_is_refused_whole() -> None:
    data = b"when,desk,action,patron_id,item_barcode\r\n2026-11-02 08:00:00,D,loan,P1,I1\r\n"
    with pytest.raises(OfflineCircFileError, match=r"no column 'time', 'circ_desk'.*the header has 'when'"):
        read_transactions([("d.csv", data)], SETTINGS, RejectLog())


# --- crashes and retries ------------------------------------------------------------------


@pytest.mark.parametrize(
    "crash_on",
    [
        pytest.param(lambda: nth(3, op=None), id="third-write-a-loan-or-return"),
        pytest.param(lambda: nth(7, op="scan"), id="seventh-return"),
        pytest.param(lambda: nth(2, op="renew"), id="second-renew"),
        pytest.param(lambda: nth(33, op=None), id="thirty-third-write"),
    ],
)
def test_a_retry_after_a_crash_applies_nothing_twice(
    demo_world: tuple[World, Any], artifacts: ArtifactStore, tmp_path: Path, crash_on: Callable[[], Any]
) -> None:
    world, demo = demo_world
    settings = replace(demo_settings(), checkpoint_every=5)
    client, alma = world.client(crash_on())
    with pytest.raises(Crash):
        run(client, DyingStore(artifacts, alma), demo.data, settings, tmp_path / "r1.jsonl")
    crashed_after = len(alma.writes)

    retry, _ = world.client()
    result = run(retry, artifacts, demo.data, settings, tmp_path / "r2.jsonl")
    expected = expected_counts()
    assert result.records_out == expected["records_out"] and result.balanced
    for action, counts in result.actions.items():
        assert counts.applied + counts.already_applied == expected["applied"][action], action
        assert not counts.refused, action
    # every transaction of the crashed attempt wrote once; those its last checkpoint names are
    # counted from it, the others (the write in flight included) are found done in Alma
    already = sum(c.already_applied for c in result.actions.values())
    assert result.resumed < crashed_after
    assert already == crashed_after - result.resumed >= 1
    # Alma saw each transaction once
    assert world.loans() == len(demo.snapshot_loans) + expected["applied"]["loan"]
    assert world.loans("COMPLETE") == expected["applied"]["return"]
    assert world.renewals() == expected["applied"]["renew"]


def test_a_finished_upload_run_again_asks_alma_nothing(
    demo_world: tuple[World, Any], artifacts: ArtifactStore, tmp_path: Path
) -> None:
    world, demo = demo_world
    first = run(world.client()[0], artifacts, demo.data, demo_settings(), tmp_path / "r1.jsonl")
    again = run(world.client()[0], artifacts, demo.data, demo_settings(), tmp_path / "r2.jsonl")
    assert again.api_calls == 0 and again.resumed == first.records_out
    assert again.to_dict() | {"api_calls": 0, "resumed": 0, "checkpoint_writes": 0} == first.to_dict() | {
        "api_calls": 0,
        "resumed": 0,
        "checkpoint_writes": 0,
    }


# --- Alma's refusals ----------------------------------------------------------------------


def test_alma_refusals_become_rejects_with_their_code(tmp_path: Path, artifacts: ArtifactStore) -> None:
    world = World(tmp_path / "alma.sqlite", ["P1", "P2"], ["I1", "I2"])
    world.lend([("P1", "I1")])
    data = (
        HEADER + "2026-11-02 09:00:00,DESK,loan,P2,I1\r\n"  # on loan to P1: its return was never recorded
        "2026-11-02 09:01:00,DESK,loan,NOBODY,I2\r\n"
        "2026-11-02 09:02:00,DESK,return,,NO-SUCH-ITEM\r\n"
        "2026-11-02 09:03:00,DESK,renew,P2,I2\r\n"  # P2 has no loan of I2
        "2026-11-02 09:04:00,DESK,renew,P1,I1\r\n"
    ).encode()
    result = run(world.client()[0], artifacts, data, SETTINGS, tmp_path / "r.jsonl")
    assert dict(result.actions["loan"].refused) == {"401651": 1, "401890": 1}
    assert dict(result.actions["return"].refused) == {"401689": 1}
    assert dict(result.actions["renew"].refused) == {"no_active_loan": 1}
    assert result.actions["renew"].applied == 1 and result.balanced
    rejected = {r["line_no"]: r for r in read_rejects(tmp_path / "r.jsonl")}
    assert {n: r["reason"] for n, r in rejected.items()} == {
        2: "alma_401651",
        3: "alma_401890",
        4: "alma_401689",
        5: "no_active_loan",
    }
    assert "Item is not loanable" in rejected[2]["detail"] and rejected[2]["record_id"] == "I1"
    # a re-run counts and rejects them again from the checkpoint, without asking Alma
    again = run(world.client()[0], artifacts, data, SETTINGS, tmp_path / "r2.jsonl")
    assert again.api_calls == 0 and again.rejected_by_reason == result.rejected_by_reason
    assert [r["reason"] for r in read_rejects(tmp_path / "r2.jsonl")] == [
        r["reason"] for r in rejected.values()
    ]


# --- another layout -----------------------------------------------------------------------

GBK_SETTINGS = OfflineCircSettings(
    time_column="借还时间",
    desk_column="服务台",
    action_column="操作",
    patron_column="读者证号",
    barcode_column="条码号",
    time_format="%Y/%m/%d %H:%M",
    time_zone="Asia/Shanghai",
    actions={"loan": ("借书",), "return": ("还书",), "renew": ("续借",)},
    desks={"总馆流通台": CircDesk("BNUZG", "ZG_CIRC")},
    delimiter=";",
    encoding="gbk",
)


def test_another_layout_semicolons_and_gbk(tmp_path: Path, artifacts: ArtifactStore) -> None:
    text = (
        "条码号;操作;借还时间;读者证号;服务台;备注\r\n"
        "I1;还书;2026/11/02 10:05;;总馆流通台;\r\n"
        "I2;借书;2026/11/02 09:30;P1;总馆流通台;读者说“明天还”\r\n"
        "I2;续借;2026/11/03 09:30;P1;总馆流通台;\r\n"
    )
    data = text.encode("gbk") + "I1;借书;2026/11/04 09:00;P1;总馆流通台;".encode("gbk") + b"\xff\xfe\r\n"
    out = io.StringIO()
    parsed = read_transactions([("zg.csv", data)], GBK_SETTINGS, RejectLog(out))
    assert dict(parsed.rejected) == {"undecodable": 1} and '"line_no": 5' in out.getvalue()
    first = parsed.transactions[0]
    assert (first.item_barcode, first.action, first.time.isoformat()) == (
        "I2",
        "loan",
        "2026-11-02T01:30:00+00:00",
    )
    assert (first.library, first.circ_desk) == ("BNUZG", "ZG_CIRC")

    world = World(tmp_path / "alma.sqlite", ["P1", "P9"], ["I1", "I2"])
    world.lend([("P9", "I1")])
    result = run(world.client()[0], artifacts, data, GBK_SETTINGS, tmp_path / "r.jsonl")
    assert {a: c.applied for a, c in result.actions.items()} == {"loan": 1, "return": 1, "renew": 1}
    assert world.loans("COMPLETE") == 1 and world.renewals() == 1


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"time_format": "no directives"}, "not a strptime format"),
        ({"time_zone": "Beijing"}, "not a time zone"),
        ({"delimiter": ";;"}, "not a delimiter"),
        ({"encoding": "utf-16"}, "not an encoding whose line ends"),
        ({"encoding": "klingon"}, "not an encoding"),
        ({"actions": {"loan": ["x"], "return": ["x"], "renew": ["r"]}}, "stands for both loan and return"),
        ({"actions": {"loan": ["l"], "return": ["r"]}}, "no words for renew"),
        ({"patron_column": "time"}, "column time named for more than one field"),
        ({"checkpoint_every": 0}, "greater than 0"),
        ({"extra_key": 1}, "extra_key"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_settings_say_what_is_wrong(changes: dict[str, Any], message: str) -> None:
    with pytest.raises((ValidationError, TypeError), match=message):
        OfflineCircSettings(**changes)


def test_settings_defaults_and_words() -> None:
    settings = OfflineCircSettings(actions={"loan": [" Loan "], "return": ["归还"], "renew": ["续借"]})
    assert settings.actions["loan"] == ("Loan",) and settings.encoding == "utf-8-sig"


# --- the emulator's new routes ------------------------------------------------------------


def test_scan_in_and_renew_on_the_emulator(tmp_path: Path) -> None:
    world = World(tmp_path / "alma.sqlite", ["P1"], ["I1", "I2"])
    world.lend([("P1", "I1")])
    client, _ = world.client()
    (loan,) = client.user_loans("P1")
    renewed, done = client.renew_loan("P1", loan["loan_id"])
    assert done and renewed["last_renew_date"] and renewed["due_date"] > loan["due_date"]
    again, done = client.renew_loan("P1", loan["loan_id"], before=loan)  # recognised, not sent again
    assert not done and world.renewals() == 1
    with pytest.raises(AlmaApiError) as refused:
        client.renew_loan("P1", "71999999999998521")
    assert refused.value.code == "401823"

    http = httpx.Client(transport=httpx.WSGITransport(app=world.app), headers={"Authorization": "apikey k"})
    item = http.get(f"http://x{API}/items", params={"item_barcode": "I2"}, follow_redirects=True).json()
    path = f"http://x{API}/bibs/{item['bib_data']['mms_id']}/holdings/{item['holding_data']['holding_id']}"
    not_on_loan = http.post(
        f"{path}/items/{item['item_data']['pid']}",
        params={"op": "scan", "library": "BNUZG", "circ_desk": "D"},
    )
    assert not_on_loan.status_code == 200 and not_on_loan.json()["item_data"] == item["item_data"]
    assert (
        http.post(f"{path}/items/{item['item_data']['pid']}", params={"op": "scan"}).json()["errorList"][
            "error"
        ][0]["errorCode"]
        == "401664"
    )
    item1 = client.find_item_by_barcode("I1") or {}
    ids = (item1["bib_data"]["mms_id"], item1["holding_data"]["holding_id"], item1["item_data"]["pid"])
    returned, scanned = client.scan_in_item(*ids, library="BNUZG", circ_desk="D")
    assert scanned and returned["item_data"]["base_status"]["value"] == "1"
    assert client.user_loans("P1") == [] and world.loans("COMPLETE") == 1
    assert client.scan_in_item(*ids, library="BNUZG", circ_desk="D")[1] is False  # not on loan: not scanned


def test_the_same_file_in_a_later_run_asks_alma_nothing(
    demo_world: tuple[World, Any], artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """The post-go-live step keeps one checkpoint per migration: a desk file uploaded again by a
    new run (or twice in one run) applies none of its transactions a second time."""
    from aleph2alma import settings as migration_settings
    from aleph2alma.phases.context import PhaseContext
    from aleph2alma.phases.post_go_live import offline_circulation_step

    world, demo = demo_world
    artifacts.put_bytes("demo/offline/desks.csv", demo.data)
    uri = artifacts.uri("demo/offline/desks.csv")
    loaded = migration_settings.load("demo")
    first_run = PhaseContext(artifacts, RunScope("demo", "migration_post_go_live", "r1"), loaded)
    later_run = PhaseContext(artifacts, RunScope("demo", "migration_post_go_live", "r2"), loaded)

    first = offline_circulation_step(first_run, [uri, uri], world.client()[0])
    loans, returned, renewals = world.loans(), world.loans("COMPLETE"), world.renewals()
    again = offline_circulation_step(later_run, [uri], world.client()[0])

    assert first["same_file_again"] == [uri] and first["records_in"] == expected_counts()["records_in"]
    assert again["api_calls"] == 0 and again["records_out"] == first["records_out"]
    assert (world.loans(), world.loans("COMPLETE"), world.renewals()) == (loans, returned, renewals)
    assert artifacts.stage_committed(later_run.scope, "offline_circ", "applied")
