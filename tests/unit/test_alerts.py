"""The alert's words, links and deadline clock: pure functions of aleph2alma.alerts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aleph2alma.alerts import (
    MAX_ERROR_CHARS,
    Alert,
    AlertSettingsError,
    Kind,
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
from aleph2alma.errors import ConfigError

BASE = "http://airflow.example:8080/"
RUN = "scheduled__2026-11-01T18:00:00+00:00"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            ConfigError("form.csv: tab 'Locations'\n  row 3: unknown code"),
            "ConfigError: form.csv: tab 'Locations'",
        ),
        (
            ValueError("\n\n  second line is the first with text  \nthird"),
            "ValueError: second line is the first with text",
        ),
        (RuntimeError(), "RuntimeError"),
        ("plain text\nmore", "plain text"),
        (None, ""),
    ],
    ids=["config-error", "leading-blank-lines", "no-message", "string", "none"],
)
def test_first_error_line(error: BaseException | str | None, expected: str) -> None:
    assert first_error_line(error) == expected


def test_a_long_error_line_is_cut_for_a_phone_screen() -> None:
    line = first_error_line(ValueError("x" * 1000))
    assert len(line) == MAX_ERROR_CHARS and line.endswith("…") and line.startswith("ValueError: xxx")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("migration_transform", RUN, "which_extract", -1, 1),
            "http://airflow.example:8080/dags/migration_transform/runs/"
            "scheduled__2026-11-01T18%3A00%3A00%2B00%3A00/tasks/which_extract?try_number=1",
        ),
        (
            ("migration_extract", "r1", "bibs.extract_part", 7, 3),
            "http://airflow.example:8080/dags/migration_extract/runs/r1/tasks/bibs.extract_part/mapped/7"
            "?try_number=3",
        ),
    ],
    ids=["unmapped", "mapped"],
)
def test_task_log_url_is_the_ui_route(args: tuple, expected: str) -> None:
    assert task_log_url(BASE, *args) == expected


def test_run_and_gate_urls() -> None:
    assert run_url("http://h:1", "d", "r/1") == "http://h:1/dags/d/runs/r%2F1"
    assert gate_url("http://h:1/", "d", "r", "sign_off") == (
        "http://h:1/dags/d/runs/r/tasks/sign_off/required_actions?map_index=-1"
    )


@pytest.mark.parametrize(
    ("after", "zone", "expected"),
    [
        # the 02:00 nightly run in Beijing must be done by 06:00 Beijing the same morning (22:00 UTC)
        (datetime(2026, 11, 1, 18, 0, tzinfo=UTC), "Asia/Shanghai", datetime(2026, 11, 1, 22, 0, tzinfo=UTC)),
        # a run triggered at 07:00 Beijing: by 06:00 the next morning
        (datetime(2026, 11, 1, 23, 0, tzinfo=UTC), "Asia/Shanghai", datetime(2026, 11, 2, 22, 0, tzinfo=UTC)),
        # exactly at 06:00: the next one
        (datetime(2026, 11, 1, 22, 0, tzinfo=UTC), "Asia/Shanghai", datetime(2026, 11, 2, 22, 0, tzinfo=UTC)),
        # Berlin's clocks go forward at 02:00 on 2026-03-29: 06:00 is CEST, 04:00 UTC, not 05:00
        (datetime(2026, 3, 29, 0, 30, tzinfo=UTC), "Europe/Berlin", datetime(2026, 3, 29, 4, 0, tzinfo=UTC)),
    ],
    ids=["nightly", "daytime-run", "on-the-hour", "dst-change"],
)
def test_next_local_time(after: datetime, zone: str, expected: datetime) -> None:
    assert next_local_time(after, zone, 6) == expected


def test_next_local_time_refuses_what_it_cannot_place() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Asia/Peking'"):
        next_local_time(datetime(2026, 1, 1, tzinfo=UTC), "Asia/Peking", 6)
    with pytest.raises(ValueError, match="aware"):
        next_local_time(datetime(2026, 1, 1), "UTC", 6)
    with pytest.raises(ValueError, match="0-23"):
        next_local_time(datetime(2026, 1, 1, tzinfo=UTC), "UTC", 24)


def test_settings_default_when_the_variable_is_not_set() -> None:
    settings = parse_settings(None)
    assert (settings.slack_conn_id, settings.smtp_conn_id) == ("alerts_slack", "alerts_smtp")
    assert settings.quiet_retries == 1 and settings.email_to == []
    assert settings.reminder_delay() is not None and settings.reminder_delay().total_seconds() == 8 * 3600


def test_settings_name_the_bad_key() -> None:
    with pytest.raises(AlertSettingsError) as caught:
        parse_settings({"quiet_retries": -1, "emailto": ["a@example.org"]})
    message = str(caught.value)
    assert "Variable aleph2alma_alerts: quiet_retries:" in message and "≥ 0" in message
    assert "Variable aleph2alma_alerts: emailto: unknown key" in message
    with pytest.raises(AlertSettingsError, match="a JSON object expected"):
        parse_settings(["a@example.org"])


def test_gate_assignees_by_dag_and_task_or_task_alone() -> None:
    settings = parse_settings(
        {
            "gate_assignees": {
                "sign_off": [{"id": "li.wei@bnu.example", "name": "Li Wei"}],
                "migration_test_load.test_environment_loaded": [
                    {"id": "zhang", "email": "zhang@bnu.example"}
                ],
            }
        }
    )
    assert [a.address() for a in settings.assignees("migration_fix_cycle", "sign_off")] == [
        "li.wei@bnu.example"
    ]
    [zhang] = settings.assignees("migration_test_load", "test_environment_loaded")
    assert zhang.hitl_user() == {"id": "zhang", "name": "zhang"} and zhang.address() == "zhang@bnu.example"
    assert settings.assignees("migration_test_load", "other_gate") == []


def test_a_failure_message_carries_what_the_reader_acts_on() -> None:
    alert = Alert(
        Kind.DAG_FAILED,
        "migration_transform",
        "manual__1",
        "http://h/dags/migration_transform/runs/manual__1/tasks/which_extract?try_number=1",
        task_id="which_extract",
        try_number=1,
        error="ConfigError: no migration_extract run 'nope' <b>",
    )
    assert render_text(alert).splitlines() == [
        "[aleph2alma] FAILED: migration_transform.which_extract",
        "DAG: migration_transform",
        "Task: which_extract",
        "Run: manual__1",
        "Try: 1",
        "Error: ConfigError: no migration_extract run 'nope' <b>",
        "Log: http://h/dags/migration_transform/runs/manual__1/tasks/which_extract?try_number=1",
    ]
    assert render_subject(alert) == "[aleph2alma] FAILED: migration_transform.which_extract"
    body = render_html(alert)
    assert "&lt;b&gt;" in body and "<b>FAILED" in body
    assert (
        "<a href='http://h/dags/migration_transform/runs/manual__1/tasks/which_extract?try_number=1'>" in body
    )


def test_retry_deadline_and_gate_headlines() -> None:
    retry = Alert(Kind.TASK_RETRY, "d", "r", "u", task_id="t", map_index=2, try_number=2, tries=4)
    assert retry.headline == "RETRYING: d.t[2] (try 2 failed)" and ("Try", "2 of 4") in retry.fields()
    late = Alert(Kind.DEADLINE_MISSED, "aleph_nightly_delta", "r", "u", deadline="06:00 Asia/Shanghai")
    assert late.headline == "LATE: aleph_nightly_delta has not finished by 06:00 Asia/Shanghai"
    gate = Alert(
        Kind.GATE_WAITING, "d", "r", "u", task_id="sign_off", assignees=("Li Wei",), waiting="more than 8 h"
    )
    assert gate.headline == "WAITING: d.sign_off needs an answer"
    assert ("Assigned to", "Li Wei") in gate.fields() and ("Answer", "u") in gate.fields()
