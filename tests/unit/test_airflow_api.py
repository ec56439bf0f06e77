"""AirflowClient: gates are answered once settled, and again when Airflow asks again; task instances
are read page by page."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aleph2alma_dev.airflow_api import AirflowApiError, AirflowClient


class FakeAirflow:
    """Serves a scripted run: each poll of the run advances one step of ``steps``.

    A step is (run state, [(task_id, try_number), ...] awaiting input).
    """

    def __init__(self, steps: list[tuple[str, list[tuple[str, int]]]]) -> None:
        self.steps = steps
        self.at = -1

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        if path.endswith("/taskInstances"):
            _, gates = self.steps[self.at]
            tis = [
                {"task_id": task, "map_index": -1, "try_number": tries, "state": "awaiting_input"}
                for task, tries in gates
            ]
            return httpx.Response(200, json=page_of(request, tis))
        if "/dagRuns/" in path:
            self.at = min(self.at + 1, len(self.steps) - 1)
            return httpx.Response(200, json={"state": self.steps[self.at][0]})
        return httpx.Response(404, json={"detail": path})


def page_of(request: httpx.Request, tis: list[dict[str, Any]]) -> dict[str, Any]:
    """One page as Airflow 3's REST API serves it: ``limit`` capped at ``[api] maximum_page_limit``
    (100 by default), from ``offset``, with the collection's ``total_entries``."""
    limit = min(int(request.url.params.get("limit", 50)), 100)
    offset = int(request.url.params.get("offset", 0))
    return {"task_instances": tis[offset : offset + limit], "total_entries": len(tis)}


def test_every_task_instance_is_read_page_by_page() -> None:
    tis = [{"task_id": "extract_part", "map_index": i, "state": "success"} for i in range(250)]

    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        return httpx.Response(200, json=page_of(request, tis))

    found = AirflowClient(
        "http://airflow", "admin", "pw", transport=httpx.MockTransport(serve)
    ).task_instances("d", "r")
    assert [t["map_index"] for t in found] == list(range(250))


def client(fake: FakeAirflow) -> AirflowClient:
    return AirflowClient("http://airflow", "admin", "pw", transport=httpx.MockTransport(fake))


def test_a_gate_is_answered_once_it_has_settled() -> None:
    fake = FakeAirflow([("running", [("sign_off", 1)])] * 6 + [("success", [])])
    answered: list[tuple[str, int]] = []
    state = client(fake).wait(
        "d",
        "r",
        poll=0.01,
        settle=0.03,
        on_gate=lambda ti: answered.append((ti["task_id"], ti["try_number"])),
    )
    assert state == "success"
    assert answered == [("sign_off", 1)]


def test_a_gate_not_yet_settled_is_left_alone() -> None:
    fake = FakeAirflow([("running", [("sign_off", 1)]), ("success", [])])
    answered: list[dict] = []
    assert client(fake).wait("d", "r", poll=0.001, settle=60, on_gate=answered.append) == "success"
    assert answered == []


def test_a_gate_asked_again_on_a_later_try_is_answered_again() -> None:
    fake = FakeAirflow(
        [("running", [("sign_off", 1)])] * 4 + [("running", [("sign_off", 2)])] * 4 + [("success", [])]
    )
    answered: list[int] = []
    client(fake).wait("d", "r", poll=0.01, settle=0.0, on_gate=lambda ti: answered.append(ti["try_number"]))
    assert answered == [1, 2]


def test_a_run_that_never_finishes_times_out_with_its_name() -> None:
    fake = FakeAirflow([("running", [])])
    with pytest.raises(AirflowApiError, match="d run r did not finish"):
        client(fake).wait("d", "r", timeout=0.05, poll=0.01)


def test_typed_xcom_values_come_back_as_plain_json() -> None:
    from aleph2alma_dev.airflow_api import plain_xcom

    stored = [
        {
            "__classname__": "aleph2alma.delivery.transfer.Delivered",
            "__version__": 0,
            "__data__": {"target": "s3://b/d/", "remote_path": "d/p.zip"},
        }
    ]
    assert plain_xcom(stored) == [{"target": "s3://b/d/", "remote_path": "d/p.zip"}]
    assert plain_xcom('{"__classname__": "x", "__version__": 1, "__data__": {"run_id": "r"}}') == {
        "run_id": "r"
    }
    assert plain_xcom("123") == "123" and plain_xcom("s3://b/k") == "s3://b/k"


DATABASE_ERROR = {"detail": {"reason": "Database error", "statement": "hidden", "orig_error": "hidden"}}


def scripted(answers: list[httpx.Response]) -> tuple[AirflowClient, list[str], list[float]]:
    """A client whose API calls get ``answers`` in turn; the calls made and the waits are recorded."""
    calls: list[str] = []
    waits: list[float] = []

    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        calls.append(f"{request.method} {request.url.path}")
        return answers.pop(0)

    return (
        AirflowClient(
            "http://airflow", "admin", "pw", transport=httpx.MockTransport(serve), sleep=waits.append
        ),
        calls,
        waits,
    )


def test_a_database_error_is_asked_again_until_airflow_answers() -> None:
    """CI: the standalone stack's SQLite was locked and `PATCH /dags/{id}` (unpause) answered 500."""
    airflow, calls, waits = scripted(
        [httpx.Response(500, json=DATABASE_ERROR)] * 2 + [httpx.Response(200, json={"is_paused": False})]
    )
    assert airflow._call("PATCH", "/dags/migration_transform", json={"is_paused": False}) == {
        "is_paused": False
    }
    assert calls == ["PATCH /api/v2/dags/migration_transform"] * 3 and waits == [0.5, 1.0]


def test_a_database_error_that_persists_is_reported_after_the_last_attempt() -> None:
    airflow, calls, waits = scripted([httpx.Response(500, json=DATABASE_ERROR)] * 5)
    with pytest.raises(AirflowApiError, match="500 .*Database error"):
        airflow._call("GET", "/dags/x")
    assert len(calls) == 5 and len(waits) == 4


def test_other_errors_are_reported_at_once() -> None:
    airflow, calls, waits = scripted([httpx.Response(500, json={"detail": "boom"})])
    with pytest.raises(AirflowApiError, match="500"):
        airflow._call("POST", "/dags/x/dagRuns", json={})
    assert len(calls) == 1 and waits == []
