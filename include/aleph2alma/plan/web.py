"""The control-room page: a FastAPI app the ``aleph2alma_control_room`` plugin mounts in Airflow's
API server, behind Airflow's own authentication.

It reads S3 (plan actuals, reports) as the product does, and Airflow's REST API *with the caller's
own token*: the page shows only the runs and gates the signed-in user may see.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import Request
from fastapi.responses import HTMLResponse

from aleph2alma.alerts import check_timezone, gate_url, run_url
from aleph2alma.plan.status import OpenGate, RunInfo
from aleph2alma.runs import DEFAULT_MIGRATION_ID, is_child_run

log = logging.getLogger(__name__)

PAGE_PATH = "control-room"


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


@dataclass
class RestAirflowView:
    """``status.AirflowView`` over Airflow's REST API (``/api/v2``), as the token's user."""

    http: httpx.Client
    """One client for the page's calls, on ``<base url>/api/v2`` with the user's token."""
    migration_id: str

    @classmethod
    def client(cls, base_url: str, token: str, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v2",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def _get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def _mine(self, conf: Any) -> bool:
        return str((conf or {}).get("migration_id") or DEFAULT_MIGRATION_ID) == self.migration_id

    def latest_runs(self, dag_id: str, limit: int) -> list[RunInfo]:
        """The DAG's newest runs of this migration, its own (a phase's child runs left out)."""
        try:
            body = self._get(f"/dags/{dag_id}/dagRuns", order_by="-run_after", limit=limit * 4)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (403, 404):  # not visible to this user, or not deployed
                return []
            raise
        runs = [
            RunInfo(
                dag_id,
                r["dag_run_id"],
                str(r.get("state") or ""),
                _when(r.get("start_date")),
                _when(r.get("end_date")),
            )
            for r in body.get("dag_runs", [])
            if self._mine(r.get("conf")) and not is_child_run(r["dag_run_id"])
        ]
        return runs[:limit]

    def open_gates(self) -> list[OpenGate]:
        body = self._get("/dags/~/dagRuns/~/hitlDetails", response_received="false", limit=100)
        confs: dict[tuple[str, str], Any] = {}
        gates = []
        for detail in body.get("hitl_details", []):
            ti = detail["task_instance"]
            run = (ti["dag_id"], ti["dag_run_id"])
            if run not in confs:
                confs[run] = self._get(f"/dags/{run[0]}/dagRuns/{run[1]}").get("conf")
            if not self._mine(confs[run]):
                continue
            assigned = tuple(str(u.get("name") or u.get("id")) for u in detail.get("assigned_users") or [])
            gates.append(
                OpenGate(
                    ti["dag_id"],
                    ti["dag_run_id"],
                    ti["task_id"],
                    str(detail.get("subject") or ""),
                    assigned,
                    _when(detail.get("created_at")),
                )
            )
        return gates


def create_app() -> Any:
    """The FastAPI app: ``GET /control-room?migration=<id>&lang=en|zh``."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view
    from fastapi import Depends, FastAPI

    app = FastAPI(title="aleph2alma control room", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get(
        f"/{PAGE_PATH}",
        response_class=HTMLResponse,
        dependencies=[Depends(requires_access_view(AccessView.WEBSITE))],
    )
    def control_room(request: Request, migration: str = "", lang: str = "") -> HTMLResponse:
        header = request.headers.get("authorization", "")
        token = (
            header[7:]
            if header.lower().startswith("bearer ")
            else request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")
        )
        try:
            html = page(str(request.url.path), token, migration, lang)
        except Exception as exc:  # the page says what failed; the API server's log has the traceback
            log.exception("The control room could not be built")
            return HTMLResponse(error_page(exc), status_code=500, headers={"Cache-Control": "no-store"})
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    return app


def error_page(exc: Exception) -> str:
    """What the operator sees when the page cannot be built: the cause in one line, and where to look."""
    from aleph2alma.errors import ConfigError

    if isinstance(exc, ConfigError):
        what = "The migration's configuration has a problem (fix the file and reload):"
    elif isinstance(exc, httpx.HTTPError):
        what = "Airflow's API did not answer the control room:"
    else:
        what = "The control room could not read the migration's artifacts (S3) or runs:"
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Migration control room</title></head>"
        f"<body><h1>Migration control room</h1><p>{escape(what)}</p>"
        f"<pre>{escape(type(exc).__name__)}: {escape(str(exc))}</pre>"
        "<p>The API server's log has the details.</p></body></html>"
    )


def migrations() -> list[str]:
    from aleph2alma.settings import CONFIG_ROOT

    return sorted(p.parent.name for p in CONFIG_ROOT.glob("*/migration.toml"))


def airflow_base_url() -> str:
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")


def page(path: str, token: str, migration: str, lang: str) -> str:
    """The page's HTML for ``migration`` (default: ``demo``, else the first) in ``lang``."""
    from aleph2alma import wiring
    from aleph2alma.plan.labels import lang_of
    from aleph2alma.plan.model import load_plan, zone_name
    from aleph2alma.plan.report import PageLinks, render
    from aleph2alma.plan.status import build

    known = migrations()
    chosen = (
        migration
        if migration in known
        else (DEFAULT_MIGRATION_ID if DEFAULT_MIGRATION_ID in known else known[0])
    )
    language = lang_of(lang)
    plan = load_plan(chosen)
    base = airflow_base_url()
    today = datetime.now(check_timezone(zone_name(plan))).date()
    with RestAirflowView.client(base, token) as http:
        room = build(wiring.artifact_store(), chosen, plan, today, RestAirflowView(http, chosen))

    def url(**change: str) -> str:
        query = {"migration": chosen, "lang": language, **change}
        return f"{path}?{urlencode(query)}"

    links = PageLinks(
        url=url,
        run_url=lambda r: run_url(base, r.dag_id, r.run_id),
        gate_url=lambda g: gate_url(base, g.dag_id, g.run_id, g.task_id),
        migrations=known,
    )
    return render(room, language, plan, links)
