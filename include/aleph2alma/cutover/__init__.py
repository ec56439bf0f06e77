"""The cutover's domain steps: preflight, what changed since the signed-off baseline, freeze violations.

The cutover DAG (preflight → technical-services freeze → final inventory extract → transform,
validate, deliver → cutover environment accepted → fulfillment freeze → fulfillment snapshot →
changes since the baseline → freeze violations → go/no-go) composes these steps; each is plain
Python over committed manifests, takes a ``PhaseContext`` and ``RunRef`` values, writes only
under ``ctx.scope`` (its files and manifests, then a report for people and one for machines)
and returns a small ``Ref`` for the gate that follows:

- ``preflight.preflight``: is the migration ready to freeze? (a signed-off baseline, a form that
  maps every code in use, a baseline whose validation let delivery go);
- ``changes.changes_since_baseline``: per entity, records new, changed and deleted between the
  signed-off baseline's extract and the cutover extract, and codes that appeared since;
- ``freeze.freeze_violations``: records Aleph stamped as changed after the freeze began.

This module holds what they share: reading an extract's code inventory, and writing a report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aleph2alma.errors import PermanentError
from aleph2alma.phases.context import PhaseContext
from aleph2alma.profile import CodeInventory
from aleph2alma.runs import RunRef
from aleph2alma.stages import PROFILE

INVENTORY_ENTITY = "codes"
INVENTORY_FILE = "code_inventory.json"
REPORTS = "cutover"


class CutoverInputError(PermanentError):
    """A run a cutover step reads has not committed what the step needs: the message says which
    run, which stage, and what must run first."""


def code_inventory(ctx: PhaseContext, extract: RunRef) -> CodeInventory:
    """The code inventory the extract's profile step committed (``profile/codes/``)."""
    scope = ctx.scope_of(extract)
    if not ctx.store.stage_committed(scope, PROFILE, INVENTORY_ENTITY):
        raise CutoverInputError(
            f"extract {extract} has no committed code inventory ({scope.prefix(PROFILE, INVENTORY_ENTITY)}): "
            "give a migration_extract run that finished its profile step, or run migration_extract"
        )
    manifest = ctx.store.stage_manifest(scope, PROFILE, INVENTORY_ENTITY)
    found = [f for f in manifest.parts() if f.key.endswith("/" + INVENTORY_FILE)]
    if not found:
        raise CutoverInputError(
            f"extract {extract}: the code inventory's manifest lists no {INVENTORY_FILE}; "
            "run its profile step again"
        )
    text = b"".join(ctx.store.iter_lines(found[0].key, found[0].sha256)).decode("utf-8")
    return CodeInventory.from_json(text)


def code_text(code: tuple[str, ...] | list[str]) -> str:
    """A code as people read it: a pair as ``sub-library/collection``; a blank code as ``(blank)``."""
    return "/".join(c or "(blank)" for c in code)


# --- reports -----------------------------------------------------------------------------------

_PAGE = """\
{% extends "base.html.j2" %}
{% import "macros.html.j2" as m %}
{% block title %}{{ title }} · {{ run.run_id }}{% endblock %}
{% block body %}
<h1>{{ title }}</h1>
{{ m.run_meta(run, meta) }}
{% call m.banner(state, status) %}
  — {{ summary }}
  {% if points %}<ul>{% for p in points %}<li>{{ p }}</li>{% endfor %}</ul>{% endif %}
{% endcall %}
{% for s in sections %}
<h2>{{ s.heading }}</h2>
{% if s.note %}<p class="meta">{{ s.note }}</p>{% endif %}
{% if s.rows %}
<table id="{{ s.id }}">
  <thead><tr>
  {% for c in s.columns %}<th{{ ' class="n"' if c in s.numeric }}>{{ c }}</th>{% endfor %}
  </tr></thead>
  <tbody>
  {% for row in s.rows %}
  <tr>
  {% for c in s.columns %}
    {% if c in s.numeric %}<td class="n">{{ row[c] | num }}</td>{% else %}<td>{{ row[c] }}</td>{% endif %}
  {% endfor %}
  </tr>
  {% endfor %}
  </tbody>
</table>
{% else %}
<p>{{ s.empty }}</p>
{% endif %}
{% endfor %}
{% endblock %}
"""


@dataclass
class Section:
    """One table of a cutover report page."""

    id: str
    heading: str
    columns: list[str]
    rows: list[dict[str, Any]]
    numeric: tuple[str, ...] = ()
    note: str = ""
    empty: str = "None."


@dataclass
class Page:
    """A cutover report: a banner (``state``: ok, attention or blocked) and its tables."""

    title: str
    state: str
    status: str
    summary: str
    points: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)


def write_report(ctx: PhaseContext, name: str, page: Page, data: dict[str, Any]) -> tuple[str, str]:
    """The step's report under ``reports/<dag>/<run>/cutover/<name>/``: ``report.html`` for people
    (the reports' page style, through ``aleph2alma.reporting``) and ``report.json`` (``data``, with
    the run) for machines. Returns their URIs (html, json); a retry overwrites both."""
    from aleph2alma.reporting import environment, run_info

    run = run_info(
        {
            "migration_id": ctx.migration_id,
            "dag_id": ctx.scope.dag_id,
            "run_id": ctx.scope.run_id,
            "as_of": ctx.as_of,
        }
    )
    html = (
        environment()
        .from_string(_PAGE)
        .render(
            run=run,
            title=page.title,
            state=page.state,
            status=page.status,
            summary=page.summary,
            points=page.points,
            meta=page.meta,
            sections=page.sections,
        )
    )
    prefix = f"{ctx.scope.report_prefix()}{REPORTS}/{name}/"
    store = ctx.store
    store.put_bytes(prefix + "report.html", html.encode("utf-8"), content_type="text/html")
    body = json.dumps({"run": run, **data}, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    store.put_bytes(prefix + "report.json", body.encode("utf-8"), content_type="application/json")
    return store.uri(prefix + "report.html"), store.uri(prefix + "report.json")
