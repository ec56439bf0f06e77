"""The control room written out: the page's HTML (with live Airflow data) and the status report a
phase run leaves in S3 for the project lead to send (self-contained HTML in English and Chinese,
and a PNG of the timeline and status)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from markupsafe import Markup

from aleph2alma.alerts import check_timezone
from aleph2alma.plan import charts
from aleph2alma.plan.actuals import RunEnded, record_run_end
from aleph2alma.plan.labels import LANGUAGES, t
from aleph2alma.plan.model import Plan, load_plan, zone_name
from aleph2alma.plan.status import ControlRoom, build
from aleph2alma.storage import ArtifactStore, RunScope


def chart_markup(room: ControlRoom, lang: str) -> dict[str, Markup]:
    """Each chart the room has data for, as inline SVG (matplotlib's own, trusted output)."""
    drawn = {"timeline": charts.timeline(room, lang)}
    if room.counts:
        drawn["funnel"] = charts.funnel(room, lang)
    if room.fix_trend.iterations:
        drawn["fix_trend"] = charts.fix_trend(room, lang)
    if room.nights:
        drawn["nights"] = charts.nights(room, lang)
    if room.effort:
        drawn["effort"] = charts.effort(room, lang)
    return {name: Markup(charts.svg(fig)) for name, fig in drawn.items()}  # noqa: S704 - our own SVG


@dataclass(frozen=True)
class PageLinks:
    """What only the page has: links into Airflow's UI and to the page itself."""

    url: Callable[..., str]
    run_url: Callable[[Any], str]
    gate_url: Callable[[Any], str]
    migrations: list[str]


def render(
    room: ControlRoom, lang: str, plan: Plan | None, links: PageLinks | None = None, written_by: str = ""
) -> str:
    from aleph2alma.reporting import render as render_template

    def role_title(role: str) -> str:
        return plan.role_title(role)(lang) if plan else role

    return render_template(
        "control_room.html.j2",
        room=room,
        lang=lang,
        t=lambda key: t(key, lang),
        heading="control_room" if links else "status_report",
        charts=chart_markup(room, lang),
        page=links is not None,
        url=links.url if links else None,
        run_url=links.run_url if links else None,
        gate_url=links.gate_url if links else None,
        migrations=links.migrations if links else [],
        role_title=role_title,
        written_by=written_by,
    )


def status_prefix(scope: RunScope) -> str:
    return scope.report_prefix() + "status/"


def write_status_report(
    store: ArtifactStore, scope: RunScope, plan: Plan | None, today: date
) -> dict[str, str]:
    """The status report of the migration as this run leaves it: ``status/status.<lang>.html`` and
    ``status.<lang>.png`` under the run's reports; the URIs by file name."""
    room = build(store, scope.migration_id, plan, today)
    prefix, written = status_prefix(scope), {}
    for lang in LANGUAGES:
        html = render(room, lang, plan, written_by=f"{scope.dag_id}/{scope.run_id}")
        key = f"{prefix}status.{lang}.html"
        store.put_bytes(key, html.encode("utf-8"), content_type="text/html; charset=utf-8")
        written[f"status.{lang}.html"] = store.uri(key)
        if lang == "en" or charts.has_cjk_font():
            key = f"{prefix}status.{lang}.png"
            store.put_bytes(key, charts.png(charts.status_board(room, lang)), content_type="image/png")
            written[f"status.{lang}.png"] = store.uri(key)
    return written


def phase_run_ended(
    store: ArtifactStore, scope: RunScope, started_at: datetime, ended_at: datetime, params: dict[str, Any]
) -> dict[str, str]:
    """A phase run's last step: record the run's end (the phase's actuals), then write the status
    report as the run leaves the migration."""
    plan = load_plan(scope.migration_id)
    ended = RunEnded(scope.dag_id, scope.run_id, started_at, ended_at, "success", params)
    recorded = record_run_end(store, scope.migration_id, ended)
    today = ended_at.astimezone(check_timezone(zone_name(plan))).date()
    return {"run_record": recorded, **write_status_report(store, scope, plan, today)}
