"""
### Nightly delta: what changed in Aleph since the last committed night

Runs every night (`[nightly] schedule` in `migration.toml`, 02:00 by default, in its
`time_zone`: Asia/Shanghai for the demo library) and compares Aleph as it is now with the
baseline of the last committed night — before the first night, with the latest full
`migration_extract` run. Per entity it stages under
`s3://<bucket>/<migration id>/runs/aleph_nightly_delta/<run id>/`:

- `delta/<entity>/`: the **new and changed records** in the raw extract's format, `changes/`
  (every new, changed and deleted key, with Aleph's own stamps) and a `_MANIFEST.json`;
- `baseline/<entity>/`: every record's hash tonight, the next night's baseline;
- `issues/delta/`: the validation rules over the delta (and the library's issues gained and lost).

How changes are found: Z30 and Z303 by their update date plus a key scan (inserts, deletes);
bibs and holdings by record hash, their CAT lines telling changes the library recorded from
those it did not; every other Z-table by record hash. The report is at
`reports/aleph_nightly_delta/<run id>/delta/report.html` (and `run_summary.json`).

**The watermark** moves only in the last task, `advance_watermark`, once everything is
committed (`<migration id>/state/delta/nights/<watermark>.json`). A night that fails leaves
it where it was, and the next night covers both windows. A manual run may set the window in
the form: *from* picks the last night at or before it as the baseline, *to* is the watermark
to record (empty: the run's date); a window that ends before the current watermark is staged
and reported but does not move it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow.sdk import CronTriggerTimetable, Param, TaskGroup, dag, task

from aleph2alma.dagkit import (
    ALL_ENTITIES,
    DEFAULT_ARGS,
    LONG_TASK_TIMEOUT,
    dag_failure_alert,
    entity_asset,
    optional_text_param,
    phase_context,
)
from aleph2alma.notify import nightly_deadline
from aleph2alma.runs import NIGHTLY_DELTA_DAG
from aleph2alma.settings import nightly_settings

if TYPE_CHECKING:
    from collections.abc import Iterable

    from aleph2alma.aleph.extract import PartSpec
    from aleph2alma.refs import Committed, DeltaValidation, DeltaWindow, PartResult

# The migration whose [nightly] table sets the schedule: read at parse time from the config file
# only (no network, no database); the form's migration id defaults to it.
MIGRATION = os.environ.get("ALEPH2ALMA_NIGHTLY_MIGRATION", "demo")
NIGHTLY = nightly_settings(MIGRATION)
INSTANT = r"^(\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?)?$"


@dag(
    dag_id=NIGHTLY_DELTA_DAG,
    schedule=CronTriggerTimetable(NIGHTLY.schedule, timezone=NIGHTLY.time_zone),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    on_failure_callback=dag_failure_alert(),
    doc_md=__doc__,
    tags=["aleph2alma", "delta"],
    deadline=nightly_deadline(NIGHTLY.time_zone),  # not finished by 06:00 there: alert
    params={
        "migration_id": Param(
            MIGRATION,
            type="string",
            pattern=r"^[A-Za-z0-9_-]+$",
            title="Migration id",
            description="Folder under include/config/ with migration.toml, the form and the rules.",
        ),
        "window_from": optional_text_param(
            "From",
            "Compare with the last committed night at or before this date-time (before the first "
            f"night: the full extract). Empty: the last committed night. Without an offset it is "
            f"read in {NIGHTLY.time_zone}.",
            pattern=INSTANT,
        ),
        "window_to": optional_text_param(
            "To",
            "The watermark this night records (not after the run's date). Empty: the run's date "
            "(the scheduled time of a scheduled run).",
            pattern=INSTANT,
        ),
        "alephseq_landing": optional_text_param(
            "ALEPHSEQ landing location",
            "file:///dir, s3://bucket/prefix or sftp://<connection id>/path holding tonight's BIB "
            "and HOL exports. Empty: the Variable aleph2alma_alephseq_landing.",
            pattern=r"^((file|s3|sftp)://\S+)?$",
        ),
    },
)
def aleph_nightly_delta() -> None:
    @task
    def window() -> DeltaWindow:
        """From the last committed watermark to the run's data interval end (or the form's window)."""
        from airflow.sdk import get_current_context

        from aleph2alma.dagkit import text_param
        from aleph2alma.phases.delta import resolve_window

        run = get_current_context()["dag_run"]
        end = run.data_interval_end or run.logical_date or run.run_after
        return resolve_window(phase_context(), text_param("window_from"), text_param("window_to"), end)

    @task
    def plan() -> list[PartSpec]:
        from aleph2alma.phases.delta import plan_sources

        return plan_sources(phase_context())

    @task(max_active_tis_per_dagrun=4, execution_timeout=LONG_TASK_TIMEOUT)
    def diff_source(source: PartSpec, window: DeltaWindow) -> PartResult:
        from aleph2alma import wiring
        from aleph2alma.dagkit import alephseq_landing
        from aleph2alma.phases.delta import diff_source as run

        is_table = source.kind == "table"
        return run(
            phase_context(),
            window,
            source,
            engine=wiring.aleph_engine() if is_table else None,
            landing=None if is_table else alephseq_landing(),
        )

    night = window()
    compared = diff_source.partial(window=night).expand(source=plan())

    committed = []
    with TaskGroup("commit", tooltip="Per entity: the baseline, then the delta manifest"):
        for entity in ALL_ENTITIES:

            @task(task_id=entity, outlets=[entity_asset("delta", entity)])
            def commit(results: Iterable[PartResult], window: DeltaWindow, entity: str = entity) -> Committed:
                from aleph2alma.phases.delta import commit_delta

                return commit_delta(phase_context(), window, entity, results)

            committed.append(commit(compared, night))

    @task
    def validate(window: DeltaWindow, committed: Iterable[Committed]) -> DeltaValidation:
        from aleph2alma.phases.delta import validate_delta

        return validate_delta(phase_context(), window, list(committed))

    @task
    def summarise(window: DeltaWindow, committed: Iterable[Committed], validation: DeltaValidation) -> str:
        from aleph2alma.phases.delta import summarise as run

        return run(phase_context(), window, list(committed), validation)

    @task
    def advance_watermark(window: DeltaWindow, committed: Iterable[Committed], summary: str) -> str:
        """Last: the night's record under state/ moves the watermark; skipped when a later night
        is already recorded."""
        from aleph2alma.dagkit import skip_unless
        from aleph2alma.phases.delta import advance_watermark as run

        return skip_unless(
            run(phase_context(), window, list(committed), summary),
            f"the watermark is already past {window.end.isoformat()}: this window is staged and "
            "reported, the watermark stays",
        )

    @task
    def audit(summary: str) -> dict[str, Any]:
        """Every manifest of the night balances and the night compared what its baseline committed:
        before the watermark moves, so that a night with a gap never becomes the next baseline."""
        from aleph2alma.audit import audit_step

        ctx = phase_context()
        return audit_step(ctx.store, ctx.scope)

    validated = validate(night, committed)
    summary = summarise(night, committed, validated)
    audit(summary) >> advance_watermark(night, committed, summary)


aleph_nightly_delta()
