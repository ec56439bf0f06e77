"""Alerts from a real Airflow reach a local webhook and a local SMTP server.

The stack gets the alert targets the way a deployment does: ``AIRFLOW_CONN_ALERTS_SLACK`` (a
Slack-compatible webhook, here an http.server on 127.0.0.1), ``AIRFLOW_CONN_ALERTS_SMTP``
(aiosmtpd on 127.0.0.1) and the ``aleph2alma_alerts`` Variable. Its DAG folder holds the project's
DAG files and the probe DAG ``tests/e2e/dags/alert_probe.py`` (one gate). The scheduler checks
gate timeouts every 2 s here instead of 15 s, a setting, so the reminder comes soon after its
3-second delay.

- A ``migration_transform`` run on an extract run that does not exist fails at once with a
  permanent error: the DAG processor runs the DAG's failure callback, and one message per
  target names the DAG, the task, the run, the try, the log link and the error line.
- The probe's gate, left open, is reminded once to its assigned user, waits again, and is
  answered; the run finishes with no second reminder.
- A run of the nightly probe made for a past night (02:00 Beijing, 2 January 2026) is past its
  06:00 deadline when it is created: the scheduler, which finds the deadline reference through
  ``plugins/aleph2alma_alerts.py``, marks it missed and the executor runs the notifier.

Every wait counts messages or states; its limit only stops a test that would hang.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aleph2alma_dev.airflow_api import AirflowClient
from aleph2alma_dev.demo.runner import stack_for
from aleph2alma_dev.devstack import PROJECT_ROOT, EmbeddedStack, free_port
from alert_receivers import Mail, SmtpReceiver, WebhookReceiver

pytestmark = pytest.mark.e2e

ASSIGNEE = {"id": "admin", "name": "Admin", "email": "admin@bnu.example"}  # the stack's user answers
SETTINGS = {
    "email_to": ["migration-team@bnu.example"],
    "gate_reminder_minutes": 0.05,
    "gate_assignees": {"alert_probe.sign_off": [ASSIGNEE]},
}
STATE_LIMIT = 300.0  # seconds before a state that never comes fails the test


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def alert_stack(
    webhook: WebhookReceiver, smtp: SmtpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedStack]:
    dags = tmp_path_factory.mktemp("dags")
    for dag_file in [
        *sorted((PROJECT_ROOT / "dags").glob("*.py")),
        Path(__file__).parent / "dags" / "alert_probe.py",
    ]:
        (dags / dag_file.name).symlink_to(dag_file)
    # No Aleph data is read: the failing run stops before, and the probe has no data task.
    stack = stack_for(
        tmp_path_factory.mktemp("no-library"),
        state_dir=tmp_path_factory.mktemp("stack"),
        api_port=free_port(),
    )
    stack.extra_env.update(
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
            "AIRFLOW_CONN_ALERTS_SLACK": json.dumps(webhook.connection()),
            "AIRFLOW_CONN_ALERTS_SMTP": json.dumps(smtp.connection()),
            "AIRFLOW_VAR_ALEPH2ALMA_ALERTS": json.dumps(SETTINGS),
        }
    )
    with stack:
        yield stack


@pytest.fixture(scope="module")
def client(alert_stack: EmbeddedStack) -> AirflowClient:
    return alert_stack.airflow_client()


def wait_for_state(client: AirflowClient, dag_id: str, run_id: str, task_id: str, states: set[str]) -> str:
    limit = time.monotonic() + STATE_LIMIT
    while time.monotonic() < limit:
        state = next(
            (ti["state"] for ti in client.task_instances(dag_id, run_id) if ti["task_id"] == task_id), None
        )
        if state in states:
            return str(state)
        time.sleep(1)
    raise AssertionError(f"{dag_id}.{task_id} of {run_id} never reached {sorted(states)}")


def for_run(texts: list[str], run_id: str) -> list[str]:
    return [t for t in texts if f"Run: {run_id}" in t]


# The stack runs the project's DAGs as deployed: the nightly delta's latest scheduled night
# (02:00 in Shanghai) runs, and fails on the empty library, whenever the stack starts after it,
# and its failure alert reaches the same receivers. So a test waits for its own run's messages.
def texts_for(webhook: WebhookReceiver, run_id: str) -> list[str]:
    while not for_run(webhook.texts, run_id):
        webhook.wait_for(len(webhook.texts) + 1)
    return for_run(webhook.texts, run_id)


def mails_for(smtp: SmtpReceiver, run_id: str) -> list[Mail]:
    while not [m for m in smtp.mails if run_id in m.html]:
        smtp.wait_for(len(smtp.mails) + 1)
    return [m for m in smtp.mails if run_id in m.html]


def test_a_failed_transform_run_is_told_with_task_try_log_and_error(
    client: AirflowClient, alert_stack: EmbeddedStack, webhook: WebhookReceiver, smtp: SmtpReceiver
) -> None:
    dag_id, run_id = "migration_transform", "alerts_e2e__missing_extract"
    client.wait_for_dag(dag_id)
    client.trigger(dag_id, run_id, {"migration_id": "demo", "extract_run_id": "no_such_extract_run"})
    assert client.wait(dag_id, run_id, timeout=STATE_LIMIT) == "failed"
    failed = [ti["task_id"] for ti in client.task_instances(dag_id, run_id) if ti["state"] == "failed"]
    assert failed == ["which_extract"]  # the rest: upstream_failed

    [text] = texts_for(webhook, run_id)
    lines = text.splitlines()
    assert lines[0] == "[aleph2alma] FAILED: migration_transform.which_extract"
    assert lines[1:5] == ["DAG: migration_transform", "Task: which_extract", f"Run: {run_id}", "Try: 1"]
    assert lines[5].startswith("Error: TransformInputError: ") and "no_such_extract_run" in lines[5]
    assert lines[6] == (
        f"Log: {alert_stack.api_url}/dags/migration_transform/runs/{run_id}/tasks/which_extract?try_number=1"
    )
    [mail] = mails_for(smtp, run_id)
    assert mail.recipients == ["migration-team@bnu.example"]
    assert mail.subject == "[aleph2alma] FAILED: migration_transform.which_extract"
    assert "TransformInputError" in mail.html


def test_a_gate_left_open_is_reminded_once_to_its_assigned_user(
    client: AirflowClient, alert_stack: EmbeddedStack, webhook: WebhookReceiver, smtp: SmtpReceiver
) -> None:
    dag_id, run_id = "alert_probe", "alerts_e2e__gate"
    client.wait_for_dag(dag_id)
    client.trigger(dag_id, run_id, {})

    [reminder] = mails_for(smtp, run_id)
    assert reminder.recipients == ["admin@bnu.example"]
    assert reminder.subject == "[aleph2alma] WAITING: alert_probe.sign_off needs an answer"
    assert (
        f"{alert_stack.api_url}/dags/alert_probe/runs/{run_id}/tasks/sign_off/required_actions"
        in reminder.html
    )
    [text] = texts_for(webhook, run_id)
    assert "Assigned to: Admin" in text and "Waiting: more than 3 s" in text

    # Reminded, the gate waits again, for its assigned user, with no timeout left
    assert wait_for_state(client, dag_id, run_id, "sign_off", {"awaiting_input"}) == "awaiting_input"
    details = client.hitl_details(dag_id, run_id, "sign_off")
    assert details["assigned_users"] == [{"id": "admin", "name": "Admin"}]
    assert details["responded_at"] is None

    def approve(ti: dict) -> None:
        client.answer(dag_id, run_id, ti["task_id"], ["Approve"])

    assert client.wait(dag_id, run_id, timeout=STATE_LIMIT, on_gate=approve) == "success"
    assert len(for_run(webhook.texts, run_id)) == 1
    assert len([m for m in smtp.mails if run_id in m.html]) == 1


def test_a_nightly_run_past_its_deadline_is_told_late(
    client: AirflowClient, alert_stack: EmbeddedStack, webhook: WebhookReceiver, smtp: SmtpReceiver
) -> None:
    dag_id, run_id = "alert_probe_nightly", "alerts_e2e__late_night"
    client.wait_for_dag(dag_id)
    client._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    body = {"dag_run_id": run_id, "logical_date": "2026-01-01T18:00:00+00:00", "conf": {}}
    client._call("POST", f"/dags/{dag_id}/dagRuns", json=body)
    assert client.wait(dag_id, run_id, timeout=STATE_LIMIT) == "success"  # late, but done

    # The deadline is handled by the scheduler and the executor after the run: wait for its messages
    [text] = texts_for(webhook, run_id)
    mails_for(smtp, run_id)
    assert text.splitlines() == [
        "[aleph2alma] LATE: alert_probe_nightly has not finished by "
        "2026-01-02 06:00 Asia/Shanghai (2026-01-01 22:00 UTC)",
        "DAG: alert_probe_nightly",
        f"Run: {run_id}",
        "Deadline: 2026-01-02 06:00 Asia/Shanghai (2026-01-01 22:00 UTC)",
        f"Log: {alert_stack.api_url}/dags/alert_probe_nightly/runs/{run_id}",
    ]
    [mail] = [m for m in smtp.mails if run_id in m.html]
    assert mail.recipients == ["migration-team@bnu.example"]
