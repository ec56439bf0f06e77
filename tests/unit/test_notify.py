"""Alerts delivered: the notifiers and callbacks, called with the contexts Airflow gives them.

The targets are real servers on 127.0.0.1 (``tests/alert_receivers.py``): a Slack-compatible
webhook the Slack provider's notifier posts to, and an SMTP server (aiosmtpd) the SMTP
provider's notifier sends to. Connections and the settings Variable are the ``AIRFLOW_CONN_*``
and ``AIRFLOW_VAR_*`` environment variables a deployment may use. Sending is synchronous, so
every assertion counts the messages that arrived once the call returned.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from airflow.sdk import DAG
from airflow.sdk.exceptions import TaskAwaitingInput

from aleph2alma.alerts import Kind
from aleph2alma.errors import ConfigError
from aleph2alma.gates import ApprovalGate
from aleph2alma.notify import (
    ERROR_XCOM_KEY,
    NO_ERROR_LINE,
    AlertDeliveryError,
    AlertNotifier,
    LocalTimeAfterRun,
    nightly_deadline,
    record_error,
)
from alert_receivers import SmtpReceiver, WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://airflow.example:8080"


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def targets(webhook: WebhookReceiver, smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Both targets configured, as a deployment would: two connections and the settings Variable."""
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_SLACK", json.dumps(webhook.connection()))
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_SMTP", json.dumps(smtp.connection()))
    settings = {
        "email_to": ["migration-team@bnu.example"],
        "base_url": BASE,
        "quiet_retries": 1,
        "gate_assignees": {"sign_off": [{"id": "liwei", "name": "Li Wei", "email": "li.wei@bnu.example"}]},
    }
    monkeypatch.setenv("AIRFLOW_VAR_ALEPH2ALMA_ALERTS", json.dumps(settings))
    return settings


class TaskInstance:
    """What the callbacks read of Airflow's RuntimeTaskInstance, with XCom kept in memory."""

    def __init__(self, dag_id: str, task_id: str, *, try_number: int = 1, max_tries: int = 3) -> None:
        self.dag_id, self.task_id, self.run_id = dag_id, task_id, "manual__2026-11-01T10:00:00+00:00"
        self.map_index, self.try_number, self.max_tries = -1, try_number, max_tries
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: str, key: str, map_indexes: int) -> Any:
        assert (task_ids, map_indexes) == (self.task_id, self.map_index)
        return self.xcom.get(key)


def task_context(
    ti: TaskInstance, exception: BaseException | None = None, task: Any = None
) -> dict[str, Any]:
    dag = DAG(dag_id=ti.dag_id, schedule=None)
    return {
        "dag": dag,
        "ti": ti,
        "task_instance": ti,
        "run_id": ti.run_id,
        "task": task,
        "exception": exception,
    }


LOG_URL = (
    f"{BASE}/dags/migration_transform/runs/manual__2026-11-01T10%3A00%3A00%2B00%3A00/tasks/which_extract"
    "?try_number=1"
)


def test_a_failed_run_reaches_slack_and_email_with_task_try_log_and_error(
    targets: dict[str, Any], webhook: WebhookReceiver, smtp: SmtpReceiver
) -> None:
    ti = TaskInstance("migration_transform", "which_extract")
    error = ConfigError("no migration_extract run 'nope' committed a raw stage\nknown runs: …")
    record_error(task_context(ti, error))  # the task's on_failure_callback, in the worker
    assert ti.xcom == {ERROR_XCOM_KEY: "ConfigError: no migration_extract run 'nope' committed a raw stage"}

    # the DAG's on_failure_callback, in the DAG processor: its context has the failed task, not the error
    context = {**task_context(ti), "reason": "task_failure"}
    del context["exception"]
    AlertNotifier(Kind.DAG_FAILED)(context)

    assert webhook.texts == [
        "\n".join(
            [
                "[aleph2alma] FAILED: migration_transform.which_extract",
                "DAG: migration_transform",
                "Task: which_extract",
                "Run: manual__2026-11-01T10:00:00+00:00",
                "Try: 1",
                "Error: ConfigError: no migration_extract run 'nope' committed a raw stage",
                f"Log: {LOG_URL}",
            ]
        )
    ]
    [mail] = smtp.mails
    assert mail.recipients == ["migration-team@bnu.example"] and mail.sender == "airflow@example.org"
    assert mail.subject == "[aleph2alma] FAILED: migration_transform.which_extract"
    for text in (
        "manual__2026-11-01T10:00:00+00:00",
        "which_extract",
        "ConfigError: no migration_extract run",
    ):
        assert text in mail.html
    assert f"<a href='{LOG_URL}'>" in mail.html


def test_a_failure_without_a_recorded_error_says_where_to_read_it(
    targets: dict[str, Any], webhook: WebhookReceiver
) -> None:
    ti = TaskInstance("migration_extract", "plan")  # killed, say: no failure callback ran in the worker
    AlertNotifier(Kind.DAG_FAILED)({**task_context(ti), "reason": "task_failure"})
    assert f"Error: {NO_ERROR_LINE}" in webhook.texts[0]


def test_a_run_that_failed_without_a_failed_task_links_the_run(
    targets: dict[str, Any], webhook: WebhookReceiver
) -> None:
    context = {"dag": DAG(dag_id="migration_extract", schedule=None), "run_id": "r1", "reason": "timed_out"}
    AlertNotifier(Kind.DAG_FAILED)(context)
    assert webhook.texts[0].splitlines()[1:] == [
        "DAG: migration_extract",
        "Run: r1",
        "Error: timed_out",
        f"Log: {BASE}/dags/migration_extract/runs/r1",
    ]


def test_retries_are_quiet_up_to_the_configured_count(
    targets: dict[str, Any], webhook: WebhookReceiver, smtp: SmtpReceiver
) -> None:
    notifier = AlertNotifier(Kind.TASK_RETRY)
    error = ConnectionResetError("S3 endpoint reset the connection")
    notifier(task_context(TaskInstance("migration_extract", "plan", try_number=1), error))
    assert (len(webhook.inbox.items), len(smtp.mails)) == (0, 0)

    notifier(task_context(TaskInstance("migration_extract", "plan", try_number=2), error))
    [text] = webhook.texts
    assert text.splitlines()[0] == "[aleph2alma] RETRYING: migration_extract.plan (try 2 failed)"
    assert "Try: 2 of 4" in text and "Error: ConnectionResetError: S3 endpoint reset the connection" in text
    assert "/tasks/plan?try_number=2" in text and len(smtp.mails) == 1


def test_no_target_configured_sends_nothing_and_fails_nothing(
    webhook: WebhookReceiver, smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_VAR_ALEPH2ALMA_ALERTS", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_SMTP", json.dumps(smtp.connection()))  # but nobody to write to
    AlertNotifier(Kind.DAG_FAILED)({"dag": DAG(dag_id="d", schedule=None), "run_id": "r", "reason": "x"})
    assert (len(webhook.inbox.items), len(smtp.mails)) == (0, 0)


def test_a_refusing_webhook_is_reported_after_the_email_went_out(
    targets: dict[str, Any], webhook: WebhookReceiver, smtp: SmtpReceiver
) -> None:
    webhook.status = 403
    with pytest.raises(AlertDeliveryError, match=r"not delivered to: Slack webhook \(alerts_slack\)"):
        AlertNotifier(Kind.DAG_FAILED)({"dag": DAG(dag_id="d", schedule=None), "run_id": "r", "reason": "x"})
    assert (len(webhook.inbox.items), len(smtp.mails)) == (1, 1)


def test_bad_settings_name_the_variable_and_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_ALEPH2ALMA_ALERTS", '{"quiet_retries": "often"}')
    with pytest.raises(ConfigError, match="Variable aleph2alma_alerts: quiet_retries"):
        AlertNotifier(Kind.DAG_FAILED)({"dag": DAG(dag_id="d", schedule=None), "run_id": "r", "reason": "x"})
    monkeypatch.setenv("AIRFLOW_VAR_ALEPH2ALMA_ALERTS", "{not json")
    with pytest.raises(ConfigError, match="Variable aleph2alma_alerts: not JSON"):
        AlertNotifier(Kind.DAG_FAILED)({"dag": DAG(dag_id="d", schedule=None), "run_id": "r", "reason": "x"})


# --- the nightly deadline ----------------------------------------------------------------------


def test_a_tiny_nightly_dag_gets_the_deadline_and_a_missed_one_is_delivered(
    targets: dict[str, Any], webhook: WebhookReceiver, smtp: SmtpReceiver
) -> None:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk.execution_time.callback_supervisor import execute_callback

    with DAG(
        dag_id="tiny_nightly",
        schedule="0 2 * * *",
        start_date=datetime(2026, 1, 1),
        deadline=nightly_deadline("Asia/Shanghai"),
    ) as dag:
        EmptyOperator(task_id="extract")
    [alert] = dag.deadline
    assert alert.reference == LocalTimeAfterRun(timezone="Asia/Shanghai", hour=6)
    assert alert.interval.total_seconds() == 0 and alert.name == "finished by 06:00 Asia/Shanghai"
    # the 02:00 Beijing run of 2 November (18:00 UTC on the 1st) is due at 06:00 Beijing
    due = alert.reference.deadline_after(datetime(2026, 11, 1, 18, 0, tzinfo=UTC))
    assert due == datetime(2026, 11, 1, 22, 0, tzinfo=UTC)

    # Missed: the executor runs the SyncCallback as it runs every deadline callback, with the
    # simple context the scheduler gives it (the run as the REST API shows it, the deadline).
    context = {
        "dag_run": {"dag_id": "tiny_nightly", "dag_run_id": "scheduled__2026-11-01T18:00:00+00:00"},
        "deadline": {"id": "0190f0c0-0000-7000-8000-000000000000", "deadline_time": due.isoformat()},
    }
    ok, error = execute_callback(
        alert.callback.path, {**alert.callback.kwargs, "context": context}, "", None, structlog.get_logger()
    )
    assert (ok, error) == (True, None)
    [text] = webhook.texts
    assert text.splitlines() == [
        "[aleph2alma] LATE: tiny_nightly has not finished by "
        "2026-11-02 06:00 Asia/Shanghai (2026-11-01 22:00 UTC)",
        "DAG: tiny_nightly",
        "Run: scheduled__2026-11-01T18:00:00+00:00",
        "Deadline: 2026-11-02 06:00 Asia/Shanghai (2026-11-01 22:00 UTC)",
        f"Log: {BASE}/dags/tiny_nightly/runs/scheduled__2026-11-01T18%3A00%3A00%2B00%3A00",
    ]
    [mail] = smtp.mails
    assert mail.subject.startswith("[aleph2alma] LATE: tiny_nightly") and "2026-11-02 06:00" in mail.html


def test_nightly_deadline_refuses_an_unknown_zone_at_parse_time() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Beijing'"):
        nightly_deadline("Beijing")


def test_the_scheduler_finds_the_deadline_reference_through_the_plugin(tmp_path: Path) -> None:
    """Serialized and rebuilt as the scheduler does, in an interpreter whose plugins folder is plugins/."""
    code = """
import json
from datetime import datetime, timezone
from airflow.sdk import DAG
from airflow.serialization.serialized_objects import DagSerialization
from airflow.serialization.decoders import decode_deadline_alert
from airflow.serialization.enums import DagAttributeTypes as DAT, Encoding
from aleph2alma.notify import nightly_deadline

with DAG("tiny_nightly", schedule="0 2 * * *", deadline=nightly_deadline("Asia/Shanghai")) as dag:
    pass
[stored] = DagSerialization.to_dict(dag)["dag"]["deadline"]
rebuilt = decode_deadline_alert({Encoding.TYPE: DAT.DEADLINE_ALERT, Encoding.VAR: stored})
ref = rebuilt.reference
due = ref.inner_ref.deadline_after(datetime(2026, 11, 1, 18, tzinfo=timezone.utc))
print(json.dumps({"wrapper": type(ref).__name__, "inner": repr(ref.inner_ref), "due": due.isoformat(),
                  "callback": rebuilt.callback.path}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "wrapper": "SerializedCustomReference",
        "inner": "LocalTimeAfterRun(timezone='Asia/Shanghai', hour=6)",
        "due": "2026-11-01T22:00:00+00:00",
        "callback": "aleph2alma.notify.AlertNotifier",
    }


# --- the approval gate's reminder --------------------------------------------------------------


def make_gate(**kwargs: Any) -> ApprovalGate:
    with DAG(dag_id="migration_fix_cycle", schedule=None):
        return ApprovalGate(task_id="sign_off", subject="Sign off iteration?", **kwargs)


def test_a_gate_left_open_reminds_its_assigned_users_once_and_keeps_waiting(
    targets: dict[str, Any], webhook: WebhookReceiver, smtp: SmtpReceiver
) -> None:
    gate = make_gate()
    ti = TaskInstance("migration_fix_cycle", "sign_off")
    timeout_event = {"error": "The Human-in-the-loop response timeout has passed", "error_type": "timeout"}
    with pytest.raises(TaskAwaitingInput) as parked:
        gate.execute_complete(task_context(ti, task=gate), timeout_event)
    assert (
        parked.value.method_name == "execute_complete" and parked.value.timeout is None
    )  # no second reminder

    [mail] = smtp.mails
    assert mail.recipients == ["li.wei@bnu.example"]  # the assigned user, not the whole team
    assert mail.subject == "[aleph2alma] WAITING: migration_fix_cycle.sign_off needs an answer"
    [text] = webhook.texts
    assert "Assigned to: Li Wei" in text and "Waiting: more than 8 h" in text
    assert f"Answer: {BASE}/dags/migration_fix_cycle/runs/" in text
    assert text.endswith("/tasks/sign_off/required_actions?map_index=-1")

    answer = {
        "chosen_options": ["Approve"],
        "params_input": {},
        "responded_at": datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
        "responded_by_user": {"id": "liwei", "name": "Li Wei"},
    }
    assert gate.execute_complete(task_context(ti, task=gate), answer)["chosen_options"] == ["Approve"]
    assert (len(smtp.mails), len(webhook.inbox.items)) == (1, 1)


def test_a_gate_the_dag_file_assigns_reminds_those_users(targets: dict[str, Any], smtp: SmtpReceiver) -> None:
    gate = make_gate(assigned_users=[{"id": "ops@bnu.example", "name": "Ops"}])
    with pytest.raises(TaskAwaitingInput):
        gate.execute_complete(
            task_context(TaskInstance("migration_fix_cycle", "sign_off"), task=gate),
            {"error_type": "timeout"},
        )
    assert smtp.mails[0].recipients == ["ops@bnu.example"]


def test_a_reminder_that_cannot_be_sent_leaves_the_gate_waiting(
    targets: dict[str, Any], webhook: WebhookReceiver
) -> None:
    webhook.status = 500
    gate = make_gate()
    with pytest.raises(TaskAwaitingInput):
        gate.execute_complete(
            task_context(TaskInstance("migration_fix_cycle", "sign_off"), task=gate),
            {"error_type": "timeout"},
        )


def test_a_gate_never_decides_by_itself() -> None:
    with pytest.raises(ValueError, match="answered by a person only"):
        make_gate(defaults="Approve")
