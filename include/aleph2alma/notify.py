"""Airflow's notifier mechanism carrying :mod:`aleph2alma.alerts` to people.

Wired in one place, :mod:`aleph2alma.dagkit`, so every DAG gets it:

- every task's ``on_failure_callback`` is :func:`record_error`: it keeps the first line of the
  error as an XCom of the failed try, which the DAG-level failure alert quotes (that alert runs
  in the DAG processor, where the exception itself is gone; the try's state reaches the
  scheduler only after its callbacks ran, so the line is there before the DAG run can fail);
- every task's ``on_retry_callback`` is ``AlertNotifier(Kind.TASK_RETRY)``: silent for the first
  ``quiet_retries`` retries of a task, a message for each one after;
- every DAG's ``on_failure_callback`` is ``AlertNotifier(Kind.DAG_FAILED)``
  (``dagkit.dag_failure_alert()``): one message per failed run, naming the task that failed it;
- the nightly DAG's deadline (:func:`nightly_deadline`): a deadline alert whose callback is
  ``AlertNotifier(Kind.DEADLINE_MISSED)``, run by the executor when the run is not done by
  06:00 on the configured time zone's clock (:class:`LocalTimeAfterRun`, registered by the
  plugin in ``plugins/aleph2alma_alerts.py``);
- the approval gates remind their assigned users once (:mod:`aleph2alma.gates`).

:class:`AlertNotifier` reads the ``aleph2alma_alerts`` Variable and looks the connections up when
it sends, never at parse time, and delivers through the providers' notifiers:
``SlackWebhookNotifier`` (apache-airflow-providers-slack) and ``SmtpNotifier``
(apache-airflow-providers-smtp). Their text is passed ready-made and never rendered as a
template, so an error message with braces in it is sent as it is.

Cheap to import at parse time: only ``airflow.sdk`` names; slack_sdk and smtplib load when a
message is sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseNotifier
from airflow.sdk.definitions.callback import SyncCallback
from airflow.sdk.definitions.deadline import REFERENCE_TYPE_FIELD, BaseDeadlineReference, DeadlineAlert

from aleph2alma.alerts import (
    ALERTS_VARIABLE,
    Alert,
    AlertSettings,
    AlertSettingsError,
    Assignee,
    Kind,
    check_timezone,
    describe_delay,
    first_error_line,
    gate_url,
    next_local_time,
    parse_settings,
    render_html,
    render_subject,
    render_text,
    run_url,
    task_log_url,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

ERROR_XCOM_KEY = "aleph2alma_error"
"""XCom key of a failed try's first error line (pushed by :func:`record_error`)."""

NO_ERROR_LINE = "(no error line recorded: read the log)"


class AlertDeliveryError(RuntimeError):
    """A configured alert target refused the message; the message says which and why."""


def load_settings() -> AlertSettings:
    """The ``aleph2alma_alerts`` Variable as settings (every default when it is not set)."""
    from airflow.sdk import Variable

    # Read as text and parsed here: Variable.get(deserialize_json=True) takes malformed JSON for
    # "not set" and would quietly fall back to every default.
    raw = Variable.get(ALERTS_VARIABLE, default=None)
    if raw is None:
        return parse_settings(None)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise AlertSettingsError(f"Variable {ALERTS_VARIABLE}: not JSON ({exc})") from None
    return parse_settings(value)


def record_error(context: Any) -> None:
    """``on_failure_callback`` of every task: the first error line, kept for the DAG's failure alert."""
    line = first_error_line(context.get("exception"))
    if line:
        context["ti"].xcom_push(key=ERROR_XCOM_KEY, value=line)


class AlertNotifier(BaseNotifier):
    """Sends one :class:`~aleph2alma.alerts.Alert` of ``kind`` to every configured target.

    Used as a task or DAG callback (``notify(context)`` with the callback's context) and as a
    deadline alert's ``SyncCallback`` (built with the deadline's simple context). ``timezone``
    only serves the deadline message (the deadline shown on the local clock).
    """

    def __init__(self, kind: str = Kind.DAG_FAILED, timezone: str = "", context: Any = None) -> None:
        super().__init__(context=context)
        self.kind = Kind(kind)
        self.timezone = timezone

    def notify(self, context: Any) -> None:
        settings = load_settings()
        message = build_alert(self.kind, context, settings, self.timezone)
        if message is None:
            return
        alert, email_to = message
        sent = deliver(alert, settings, email_to, context)
        self.log.info("Alert %r sent to %s", alert.headline, ", ".join(sent) or "no target (none configured)")


def build_alert(
    kind: Kind, context: Any, settings: AlertSettings, timezone: str = ""
) -> tuple[Alert, list[str]] | None:
    """The alert for a callback's context and its e-mail recipients; None when it is not worth one."""
    base = settings.base_url or _configured_base_url()
    if kind is Kind.DEADLINE_MISSED:
        return _deadline_alert(context, base, timezone), list(settings.email_to)
    ti = context.get("ti")
    if kind is Kind.DAG_FAILED:
        return _dag_failed_alert(context, ti, base), list(settings.email_to)
    if ti is None:
        raise ValueError(f"a {kind} alert needs the task instance in its context")
    if kind is Kind.TASK_RETRY:
        if ti.try_number <= settings.quiet_retries:
            return None
        max_tries = getattr(ti, "max_tries", None)
        alert = Alert(
            kind,
            ti.dag_id,
            ti.run_id,
            task_log_url(base, ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number),
            task_id=ti.task_id,
            map_index=ti.map_index,
            try_number=ti.try_number,
            tries=max_tries + 1 if isinstance(max_tries, int) else 0,
            error=first_error_line(context.get("exception")),
        )
        return alert, list(settings.email_to)
    planned = planned_assignees(context, ti)
    assignees = gate_assignees(getattr(context.get("task"), "assigned_users", None), settings, ti, planned)
    delay = settings.reminder_delay()
    alert = Alert(
        kind,
        ti.dag_id,
        ti.run_id,
        gate_url(base, ti.dag_id, ti.run_id, ti.task_id, ti.map_index),
        task_id=ti.task_id,
        map_index=ti.map_index,
        try_number=ti.try_number,
        waiting=describe_delay(delay) if delay else "",
        assignees=tuple(a.name or a.id for a in assignees),
    )
    addresses = [a.address() for a in assignees if a.address()]
    return alert, addresses or list(settings.email_to)


def _dag_failed_alert(context: Any, ti: Any, base: str) -> Alert:
    dag_id, run_id = context["dag"].dag_id, context["run_id"]
    if ti is None:  # the run failed without a failed task: timed out, deadlocked, marked failed
        return Alert(Kind.DAG_FAILED, dag_id, run_id, run_url(base, dag_id, run_id), error=context["reason"])
    return Alert(
        Kind.DAG_FAILED,
        dag_id,
        run_id,
        task_log_url(base, dag_id, run_id, ti.task_id, ti.map_index, ti.try_number),
        task_id=ti.task_id,
        map_index=ti.map_index,
        try_number=ti.try_number,
        error=_recorded_error(ti),
    )


def _recorded_error(ti: Any) -> str:
    """The failed try's first error line, as :func:`record_error` kept it."""
    line = ti.xcom_pull(task_ids=ti.task_id, key=ERROR_XCOM_KEY, map_indexes=ti.map_index)
    if isinstance(line, list):  # a pull by task id list; here one task, one map index
        line = line[0] if line else None
    return str(line) if line else NO_ERROR_LINE


def _deadline_alert(context: Any, base: str, timezone: str) -> Alert:
    run = context["dag_run"]
    deadline = context["deadline"]["deadline_time"]
    when = deadline if isinstance(deadline, datetime) else datetime.fromisoformat(str(deadline))
    return Alert(
        Kind.DEADLINE_MISSED,
        run["dag_id"],
        run["dag_run_id"],
        run_url(base, run["dag_id"], run["dag_run_id"]),
        deadline=_local_time(when, timezone),
    )


def _local_time(when: datetime, timezone: str) -> str:
    """``06:00 Asia/Shanghai (2026-11-02 22:00 UTC)``; UTC alone when no zone is known."""
    utc = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    in_utc = f"{utc:%Y-%m-%d %H:%M} UTC"
    if not timezone:
        return in_utc
    local = utc.astimezone(check_timezone(timezone))
    return f"{local:%Y-%m-%d %H:%M} {timezone} ({in_utc})"


def planned_assignees(context: Any, ti: Any) -> list[Assignee]:
    """The users the migration's plan assigns the gate to ([] without a plan)."""
    from aleph2alma.plan.model import plan_of_run

    plan = plan_of_run(context.get("params"))
    return plan.gate_assignees(ti.dag_id, ti.task_id) if plan else []


def gate_assignees(
    assigned_users: Any, settings: AlertSettings, ti: Any, planned: list[Assignee] | None = None
) -> list[Assignee]:
    """Who a gate's reminder goes to: the users its DAG file assigns, else the plan's, else the
    settings' ones.

    A user named by id alone gets the e-mail the plan or the settings give for the same id, if any.
    """
    configured = list(planned or []) or settings.assignees(ti.dag_id, ti.task_id)
    users = [assigned_users] if isinstance(assigned_users, dict) else list(assigned_users or [])
    if not users:
        return configured
    known = {a.id: a for a in [*settings.assignees(ti.dag_id, ti.task_id), *configured]}
    return [
        known.get(str(u["id"])) or Assignee(id=str(u["id"]), name=str(u.get("name") or "")) for u in users
    ]


def deliver(alert: Alert, settings: AlertSettings, email_to: list[str], context: Any) -> list[str]:
    """Send ``alert`` to every configured target; the names of those that took it.

    A target is configured when its connection exists (and, for e-mail, someone is to receive
    it). One refusing target does not stop the others; afterwards AlertDeliveryError names it.
    """
    sent, failed = [], []
    if _has_connection(settings.slack_conn_id):
        try:
            _send_slack(alert, settings.slack_conn_id, context)
            sent.append(f"Slack webhook ({settings.slack_conn_id})")
        except Exception as exc:  # noqa: BLE001 - reported below, after the other targets had their turn
            failed.append(f"Slack webhook ({settings.slack_conn_id}): {first_error_line(exc)}")
    if email_to and _has_connection(settings.smtp_conn_id):
        try:
            _send_email(alert, settings, email_to, context)
            sent.append(f"e-mail to {', '.join(email_to)} ({settings.smtp_conn_id})")
        except Exception as exc:  # noqa: BLE001 - as above
            failed.append(f"e-mail ({settings.smtp_conn_id}): {first_error_line(exc)}")
    if failed:
        raise AlertDeliveryError(f"alert {alert.headline!r} not delivered to: " + "; ".join(failed))
    return sent


def _send_slack(alert: Alert, conn_id: str, context: Any) -> None:
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    SlackWebhookNotifier(slack_webhook_conn_id=conn_id, text=render_text(alert)).notify(context)


def _send_email(alert: Alert, settings: AlertSettings, email_to: list[str], context: Any) -> None:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    SmtpNotifier(
        to=email_to,
        from_email=settings.email_from or None,
        subject=render_subject(alert),
        html_content=render_html(alert),
        smtp_conn_id=settings.smtp_conn_id,
    ).notify(context)


def _has_connection(conn_id: str) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    if not conn_id:
        return False
    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def _configured_base_url() -> str:
    from airflow.sdk.configuration import conf

    return str(conf.get("api", "base_url", fallback="http://localhost:8080/"))


# --- the nightly deadline ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LocalTimeAfterRun(BaseDeadlineReference):
    """Deadline reference: the first ``hour``:00 on ``timezone``'s clock after the run's date.

    The run's date is its logical date (the 02:00 a nightly run was scheduled for), or, for a
    run triggered without one, when it was triggered. Airflow's own references count a fixed
    interval from a point in time; this one names a time of day, so a daylight-saving change
    or a schedule moved from 02:00 to 01:00 needs no new interval. A custom reference: the
    scheduler finds it through the plugin ``plugins/aleph2alma_alerts.py``.
    """

    timezone: str = "UTC"
    hour: int = 6
    required_kwargs: ClassVar[set[str]] = {"dag_id", "run_id"}

    def serialize_reference(self) -> dict[str, Any]:
        return {REFERENCE_TYPE_FIELD: self.reference_name, "timezone": self.timezone, "hour": self.hour}

    @classmethod
    def deserialize_reference(cls, reference_data: dict[str, Any]) -> LocalTimeAfterRun:
        return cls(timezone=str(reference_data["timezone"]), hour=int(reference_data["hour"]))

    def deadline_after(self, run_date: datetime) -> datetime:
        return next_local_time(run_date, self.timezone, self.hour)

    def _evaluate_with(self, *, session: Session, **kwargs: Any) -> datetime | None:
        """Called by the scheduler when the run is created (the interval is added to this)."""
        from airflow.models import DagRun
        from sqlalchemy import select

        row = session.execute(
            select(DagRun.logical_date, DagRun.run_after).where(
                DagRun.dag_id == kwargs["dag_id"], DagRun.run_id == kwargs["run_id"]
            )
        ).one_or_none()
        if row is None:
            return None
        return self.deadline_after(row.logical_date or row.run_after)


def nightly_deadline(timezone: str, hour: int = 6) -> DeadlineAlert:
    """A deadline alert: the run is not finished by ``hour``:00 in ``timezone`` (IANA name).

    Goes on the nightly DAG: ``@dag(..., deadline=nightly_deadline("Asia/Shanghai"))``. Missed,
    it sends ``AlertNotifier(Kind.DEADLINE_MISSED)`` (run by the executor, like a task). A run
    that succeeds before the deadline cancels it; a run that failed earlier has had its failure
    alert, and is still told late, since it did not finish its work.
    """
    check_timezone(timezone)
    if not 0 <= hour <= 23:
        raise ValueError(f"hour must be 0-23, not {hour}")
    return DeadlineAlert(
        reference=LocalTimeAfterRun(timezone=timezone, hour=hour),
        interval=timedelta(0),
        callback=SyncCallback(
            AlertNotifier, kwargs={"kind": str(Kind.DEADLINE_MISSED), "timezone": timezone}
        ),
        name=f"finished by {hour:02d}:00 {timezone}",
    )
