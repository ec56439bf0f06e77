"""What an alert says and where it goes: plain values in, message text out.

A migration runs for weeks, mostly at night, and nobody watches the Airflow UI. Four events
are told to people: a DAG run **failed**; a task is **retried** more often than the quiet
count allows (a flaky S3 or Alma link, before it becomes a failure); the nightly run has not
finished by its **deadline**; an approval **gate** has waited past the reminder time. Each
message names the DAG, the task, the run and the try number, links to the task's log (or
the gate's page) in the Airflow UI and quotes the first line of the error, so whoever reads
it on a phone knows what broke and where to click.

Routing lives in one Airflow Variable, :data:`ALERTS_VARIABLE` (JSON, :class:`AlertSettings`),
read when an alert is sent, never at parse time; the transports are Airflow connections (a
Slack-compatible incoming webhook, an SMTP server). A target whose connection does not exist
is off. Nothing here imports Airflow: :mod:`aleph2alma.notify` turns callback contexts into
:class:`Alert` values and hands the rendered text to the providers' notifiers.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from aleph2alma import config
from aleph2alma.errors import ConfigError

ALERTS_VARIABLE = "aleph2alma_alerts"
"""The Airflow Variable (JSON) with the alert settings; absent = every default."""

MAX_ERROR_CHARS = 300
"""An error line longer than this is cut (a message is read on a phone)."""


class AlertSettingsError(ConfigError):
    """The alert settings Variable is not JSON or has an unknown key or a bad value."""


class Kind(StrEnum):
    DAG_FAILED = "dag_failed"
    TASK_RETRY = "task_retry"
    DEADLINE_MISSED = "deadline_missed"
    GATE_WAITING = "gate_waiting"


class Assignee(BaseModel):
    """A person who answers a gate: the Airflow user id the gate is assigned to, and where to remind them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Airflow user id (what the auth manager calls the user), e.g. alice")
    name: str = Field(default="", description="Display name; empty = the id")
    email: str = Field(default="", description="E-mail for reminders; empty = the id if it is an address")

    def hitl_user(self) -> dict[str, str]:
        """The gate's ``assigned_users`` entry (Airflow's ``HITLUser``)."""
        return {"id": self.id, "name": self.name or self.id}

    def address(self) -> str:
        return self.email or (self.id if "@" in self.id else "")


class AlertSettings(BaseModel):
    """The keys of the ``aleph2alma_alerts`` Variable (JSON); every key is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slack_conn_id: str = Field(
        default="alerts_slack",
        description="Connection of a Slack-compatible incoming webhook (type slackwebhook); "
        "absent connection = no Slack messages",
    )
    smtp_conn_id: str = Field(
        default="alerts_smtp",
        description="Connection of the SMTP server (type smtp); absent connection = no e-mail",
    )
    email_to: list[str] = Field(default_factory=list, description="Who gets every alert by e-mail")
    email_from: str = Field(
        default="", description="Sender address; empty = the SMTP connection's extra.from_email"
    )
    quiet_retries: Annotated[StrictInt, Field(ge=0)] = Field(
        default=1,
        description="Retries of a task that pass silently; every retry after them is alerted "
        "(0 = every retry)",
    )
    gate_reminder_minutes: Annotated[float, Field(ge=0)] = Field(
        default=480,
        description="Minutes an approval gate waits before its assigned users are reminded, once (0 = never)",
    )
    gate_assignees: dict[str, list[Assignee]] = Field(
        default_factory=dict,
        description="Per gate (task id, or <dag id>.<task id>): who answers it; a gate that names "
        "no users in its DAG file is assigned these when it opens",
    )
    base_url: str = Field(
        default="", description="Airflow UI address for links; empty = the [api] base_url setting"
    )

    def assignees(self, dag_id: str, task_id: str) -> list[Assignee]:
        return self.gate_assignees.get(f"{dag_id}.{task_id}", self.gate_assignees.get(task_id, []))

    def reminder_delay(self) -> timedelta | None:
        return timedelta(minutes=self.gate_reminder_minutes) if self.gate_reminder_minutes else None


def parse_settings(value: Any) -> AlertSettings:
    """The Variable's value (a JSON object, already parsed, or None when unset) as settings.

    Raises :class:`AlertSettingsError` with one line per bad key, naming the Variable.
    """
    if value is None:
        return AlertSettings()
    if not isinstance(value, dict):
        raise AlertSettingsError(f"Variable {ALERTS_VARIABLE}: a JSON object expected, not {value!r}")
    return config.validate(AlertSettings, value, f"Variable {ALERTS_VARIABLE}", AlertSettingsError)


@dataclass(frozen=True)
class Alert:
    """One event worth a message, with what the reader needs to act on it."""

    kind: Kind
    dag_id: str
    run_id: str
    url: str
    task_id: str = ""
    map_index: int = -1
    try_number: int = 0
    tries: int = 0
    """Tries the task has in all (retries + 1); 0 = unknown."""
    error: str = ""
    deadline: str = ""
    waiting: str = ""
    assignees: tuple[str, ...] = ()

    @property
    def task(self) -> str:
        if not self.task_id:
            return ""
        return self.task_id + (f"[{self.map_index}]" if self.map_index >= 0 else "")

    @property
    def headline(self) -> str:
        where = f"{self.dag_id}.{self.task}" if self.task else self.dag_id
        return {
            Kind.DAG_FAILED: f"FAILED: {where}",
            Kind.TASK_RETRY: f"RETRYING: {where} (try {self.try_number} failed)",
            Kind.DEADLINE_MISSED: f"LATE: {self.dag_id} has not finished by {self.deadline}",
            Kind.GATE_WAITING: f"WAITING: {where} needs an answer",
        }[self.kind]

    def fields(self) -> list[tuple[str, str]]:
        """The message's lines as (label, value), in reading order; empty values left out."""
        tries = f"{self.try_number} of {self.tries}" if self.tries else str(self.try_number or "")
        rows = [
            ("DAG", self.dag_id),
            ("Task", self.task),
            ("Run", self.run_id),
            ("Try", tries),
            ("Deadline", self.deadline),
            ("Waiting", self.waiting),
            ("Assigned to", ", ".join(self.assignees)),
            ("Error", self.error),
            ("Answer" if self.kind is Kind.GATE_WAITING else "Log", self.url),
        ]
        return [(label, value) for label, value in rows if value]


def render_text(alert: Alert) -> str:
    """The message as plain text (Slack shows it as is): the headline, then one labelled line each."""
    return "\n".join([f"[aleph2alma] {alert.headline}", *(f"{k}: {v}" for k, v in alert.fields())])


def render_subject(alert: Alert) -> str:
    return f"[aleph2alma] {alert.headline}"


def render_html(alert: Alert) -> str:
    """The message as an e-mail body: the headline and a two-column table, every value escaped."""
    rows = "".join(
        f"<tr><th align='left'>{html.escape(k)}</th><td>{_html_value(k, v)}</td></tr>"
        for k, v in alert.fields()
    )
    return f"<p><b>{html.escape(alert.headline)}</b></p><table>{rows}</table>"


def _html_value(label: str, value: str) -> str:
    if label in ("Log", "Answer"):
        return f"<a href='{html.escape(value, quote=True)}'>{html.escape(value)}</a>"
    return html.escape(value)


def first_error_line(error: BaseException | str | None) -> str:
    """``ConfigError: <first line of the message>``: the exception type and the first non-empty line.

    A chained or multi-line message (pydantic's, a traceback pasted into an error) keeps only
    its first line; a line past :data:`MAX_ERROR_CHARS` is cut with an ellipsis.
    """
    if error is None:
        return ""
    if isinstance(error, BaseException):
        message = str(error)
        kind = type(error).__name__
    else:
        message, kind = error, ""
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    line = f"{kind}: {first}" if kind and first else kind or first
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"


def task_log_url(
    base_url: str, dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int = 0
) -> str:
    """The task's log page in the Airflow 3 UI (the same route as ``ti.log_url``)."""
    mapped = f"/mapped/{map_index}" if map_index >= 0 else ""
    tried = f"?try_number={try_number}" if try_number > 0 else ""
    return f"{run_url(base_url, dag_id, run_id)}/tasks/{quote(task_id, safe='')}{mapped}{tried}"


def run_url(base_url: str, dag_id: str, run_id: str) -> str:
    """The DAG run's page in the Airflow 3 UI."""
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def gate_url(base_url: str, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The gate's "required actions" page, where it is answered (HITLOperator's own link)."""
    task = quote(task_id, safe="")
    return f"{run_url(base_url, dag_id, run_id)}/tasks/{task}/required_actions?map_index={map_index}"


def check_timezone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (e.g. ``Asia/Shanghai``); ValueError naming it if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as 'Asia/Shanghai'") from None


def next_local_time(after: datetime, timezone: str, hour: int) -> datetime:
    """The first ``hour``:00 in ``timezone`` strictly after ``after`` (aware), in UTC.

    The nightly run started (logically) at 02:00 Asia/Shanghai must be done by 06:00 the same
    morning; one started at 07:00 by 06:00 the next morning. Computed on the wall clock of
    ``timezone``, so a daylight-saving change between start and deadline moves nothing.
    """
    if after.tzinfo is None:
        raise ValueError(f"an aware datetime expected, not {after!r}")
    if not 0 <= hour <= 23:
        raise ValueError(f"hour must be 0-23, not {hour}")
    zone = check_timezone(timezone)
    local = after.astimezone(zone)
    candidate = datetime.combine(local.date(), time(hour), tzinfo=zone)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), time(hour), tzinfo=zone)
    return candidate.astimezone(UTC)


def describe_delay(delay: timedelta) -> str:
    """``timedelta(hours=8)`` → ``more than 8 h``; minutes below an hour, seconds below a minute."""
    seconds = delay.total_seconds()
    if seconds >= 3600:
        return f"more than {seconds / 3600:g} h"
    if seconds >= 60:
        return f"more than {seconds / 60:g} min"
    return f"more than {seconds:g} s"
