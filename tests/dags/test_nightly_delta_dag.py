"""aleph_nightly_delta: scheduled at 02:00 in the library's time zone, one run at a time, watermark last."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS_DIR)).dags["aleph_nightly_delta"]


def test_it_runs_at_two_in_the_morning_in_shanghai_without_catching_up(dag) -> None:
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import TimeRestriction

    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 2 * * *", "Asia/Shanghai")
    assert dag.catchup is False and dag.max_active_runs == 1
    assert set(dag.tags) == {"aleph2alma", "delta"}
    earliest = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)  # 20:00 in Shanghai
    info = coerce_to_core_timetable(dag.timetable).next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest, None, catchup=True)
    )
    assert info.run_after == datetime(2026, 11, 1, 18, 0, tzinfo=UTC)  # 02:00 on 2 November, UTC+8
    assert info.data_interval.end == info.run_after  # the window's end: the run's date


def test_the_watermark_moves_last(dag) -> None:
    advance = dag.get_task("advance_watermark")
    assert advance.downstream_task_ids == set()
    upstream = advance.get_flat_relative_ids(upstream=True)
    commits = {t.task_id for t in dag.tasks if t.task_id.startswith("commit.")}
    assert len(commits) == 11
    assert commits | {"window", "plan", "diff_source", "validate", "summarise"} <= upstream
    assert set(dag.task_ids) == upstream | {"advance_watermark"}


def test_the_form_takes_a_window_in_local_time_or_with_an_offset(dag) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    for name in ("window_from", "window_to"):
        param = dag.params.get_param(name)
        for ok in (
            "",
            None,
            "2026-11-02",
            "2026-11-02T02:00",
            "2026-11-01T18:00:00Z",
            "2026-11-02 02:00+08:00",
        ):
            assert param.resolve(ok) == ok
        with pytest.raises(ParamValidationError):
            param.resolve("yesterday")
    assert dag.params["migration_id"] == "demo"


def test_a_night_not_finished_by_six_in_its_time_zone_is_alerted(dag) -> None:
    deadlines = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    names = [d.name for d in deadlines if d is not None]
    assert names == ["finished by 06:00 Asia/Shanghai"], names
