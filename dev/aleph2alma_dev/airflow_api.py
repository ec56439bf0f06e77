"""A small client of Airflow 3's public REST API: what the demo and the tests need.

Triggers DAG runs, waits for them, and answers human-in-the-loop gates through the same
endpoints the UI uses, so no gate is ever bypassed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

FINISHED = {"success", "failed"}
GATE_SETTLE_SECONDS = 5.0


class AirflowApiError(RuntimeError):
    """Airflow answered with an error, or a run did not finish in time."""


DATABASE_ERROR_ATTEMPTS = 5
"""How often a call is made when Airflow answers 500 *Database error*.

The API server answers so when its transaction fails, e.g. on SQLite (the standalone stack)
while the scheduler or the DAG processor holds the write lock. The transaction was rolled
back, so the same call can be made again: seen in CI on ``PATCH /dags/{id}`` (unpause)."""


def _database_error(response: httpx.Response) -> bool:
    if response.status_code != 500:
        return False
    try:
        detail = response.json().get("detail")
    except ValueError:
        return False
    return isinstance(detail, dict) and detail.get("reason") == "Database error"


@dataclass
class AirflowClient:
    base_url: str
    username: str
    password: str
    timeout: float = 30
    transport: httpx.BaseTransport | None = None  # tests pass an httpx.MockTransport
    sleep: Callable[[float], None] = time.sleep  # injectable: tests count the waits
    _http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout, transport=self.transport)
        response = self._http.post("/auth/token", json={"username": self.username, "password": self.password})
        if response.status_code >= 300:
            raise AirflowApiError(
                f"login to {self.base_url} failed: {response.status_code} {response.text[:200]}"
            )
        self._http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(1, DATABASE_ERROR_ATTEMPTS + 1):
            response = self._http.request(method, f"/api/v2{path}", **kwargs)
            if not _database_error(response) or attempt == DATABASE_ERROR_ATTEMPTS:
                break
            self.sleep(attempt * 0.5)
        if response.status_code >= 300:
            raise AirflowApiError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Wait until the DAG processor has parsed the DAG and reports no import error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self._http.get(f"/api/v2/dags/{dag_id}")
            if response.status_code == 200:
                return
            time.sleep(1)
        errors = self._call("GET", "/importErrors").get("import_errors", [])
        raise AirflowApiError(f"DAG {dag_id} not parsed within {timeout:.0f} s; import errors: {errors}")

    def ensure_pool(self, name: str, slots: int, description: str = "") -> None:
        """Create or resize a pool (as `airflow pools set` does)."""
        body = {"name": name, "slots": slots, "description": description, "include_deferred": False}
        response = self._http.get(f"/api/v2/pools/{name}")
        if response.status_code == 200:
            self._call("PATCH", f"/pools/{name}", json=body)
        else:
            self._call("POST", "/pools", json=body)

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        return dict(self._call("POST", f"/dags/{dag_id}/dagRuns", json=body))

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.dag_run(dag_id, run_id)["state"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run, page by page (the API caps a page at
        ``[api] maximum_page_limit``, 100 by default: a bnu-sized run has more mapped tasks)."""
        found: list[dict[str, Any]] = []
        while True:
            data = self._call(
                "GET",
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(found), "order_by": "id"},
            )
            page = list(data["task_instances"])
            found += page
            if not page or len(found) >= data["total_entries"]:
                return found

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        """A task's return value as plain JSON (Airflow's serde envelopes of typed values unwrapped).

        The API's ``deserialize=true`` would render typed values as their repr: the stored
        form is read instead and the ``__data__`` of each envelope kept.
        """
        data = self._call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
            params={"map_index": map_index},
        )
        return plain_xcom(data["value"])

    def awaiting_input(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return [ti for ti in self.task_instances(dag_id, run_id) if ti["state"] == "awaiting_input"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """A try's whole log as text: each structured event (message, exception and its value) as a
        JSON line, as the UI's log view shows it."""
        body = self._call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
            headers={"Accept": "application/json"},
        )
        content = body.get("content") or []
        return "\n".join(e if isinstance(e, str) else json.dumps(e, ensure_ascii=False) for e in content)

    def hitl_details(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        return dict(
            self._call(
                "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"
            )
        )

    def answer(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        chosen: list[str],
        params_input: dict[str, Any] | None = None,
        map_index: int = -1,
    ) -> None:
        self._call(
            "PATCH",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails",
            json={"chosen_options": chosen, "params_input": params_input or {}},
        )

    def clear(self, dag_id: str, run_id: str, task_ids: list[str]) -> None:
        """Clear tasks of a run (what the UI's *Clear* does) so that they run again."""
        self._call(
            "POST",
            f"/dags/{dag_id}/clearTaskInstances",
            json={
                "dry_run": False,
                "dag_run_id": run_id,
                "task_ids": task_ids,
                "only_failed": False,
                "reset_dag_runs": True,
            },
        )

    def wait(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 900,
        poll: float = 2,
        on_gate: Any = None,
        settle: float = GATE_SETTLE_SECONDS,
    ) -> str:
        """Wait for the run to finish; ``on_gate(ti)`` answers each gate that waits for input.

        A gate is answered once it has waited ``settle`` seconds: Airflow 3.3 races an
        answer given within a second of the gate opening against the executor's report that
        the paused task exited, sees the state "changed externally" and retries the gate.
        A gate asked again on a later try is answered again.
        """
        deadline = time.monotonic() + timeout
        first_seen: dict[tuple[str, int, int], float] = {}
        answered: set[tuple[str, int, int]] = set()
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in FINISHED:
                return state
            if on_gate is not None:
                now = time.monotonic()
                for ti in self.awaiting_input(dag_id, run_id):
                    key = (ti["task_id"], ti.get("map_index", -1), ti.get("try_number", 0))
                    seen = first_seen.setdefault(key, now)
                    if key not in answered and now - seen >= settle:
                        on_gate(ti)
                        answered.add(key)
            time.sleep(poll)
        raise AirflowApiError(f"{dag_id} run {run_id} did not finish within {timeout:.0f} s")

    def failed_tasks(self, dag_id: str, run_id: str) -> list[str]:
        return [
            f"{ti['task_id']}[{ti.get('map_index', -1)}]"
            for ti in self.task_instances(dag_id, run_id)
            if ti["state"] in ("failed", "upstream_failed")
        ]


def plain_xcom(value: Any) -> Any:
    """Airflow serde's stored form → plain JSON: ``{"__classname__", "__data__"}`` envelopes unwrapped."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if not isinstance(decoded, dict | list):
            return value
        value = decoded
    if isinstance(value, dict):
        if "__classname__" in value and "__data__" in value:
            return plain_xcom(value["__data__"])
        return {k: plain_xcom(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_xcom(v) for v in value]
    return value
