"""What every DAG file shares: retry policy, trigger-form fields, assets, the phase context.

Cheap to import at parse time: only ``airflow.sdk`` names and small modules at module level.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import Asset, ExceptionRetryPolicy, Param, RetryAction, RetryRule

from aleph2alma.aleph.ztables import table_entities
from aleph2alma.alerts import Kind
from aleph2alma.notify import AlertNotifier, record_error
from aleph2alma.runs import DEFAULT_MIGRATION_ID, ChildStep

if TYPE_CHECKING:
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    from aleph2alma.aleph.landing import Landing
    from aleph2alma.phases.context import PhaseContext

ALL_ENTITIES = ["bibs", "holdings", *table_entities()]
LANDING_VARIABLE = "aleph2alma_alephseq_landing"

# A permanent error (bad config or form, a FIX rule past its threshold, a delivery that does
# not match) fails the task at once: retrying would only make the operator wait for the same message.
PERMANENT = RetryRule(
    exception="aleph2alma.errors.PermanentError",
    action=RetryAction.FAIL,
    reason="a permanent error: retrying cannot fix it; read the message, fix the cause, clear the task",
)


def task_timeout(kind: str, default_minutes: int) -> timedelta:
    """A task's ``execution_timeout``: ``ALEPH2ALMA_<KIND>_TIMEOUT_MINUTES`` if set, else the default.

    Read where the DAG files are parsed (the DAG processor's environment), so a library that needs
    longer at scale changes it there, without editing a DAG. A bad value fails the DAG's import
    with this message, rather than running tasks with no limit.
    """
    name = f"ALEPH2ALMA_{kind}_TIMEOUT_MINUTES"
    raw = os.environ.get(name, "").strip()
    if not raw:
        return timedelta(minutes=default_minutes)
    if not raw.isdigit() or int(raw) == 0:
        from aleph2alma.errors import ConfigError

        raise ConfigError(f"{name}={raw!r} must be a positive whole number of minutes")
    return timedelta(minutes=int(raw))


# Every task has an execution_timeout (it bounds one try's ``execute``; Airflow 3.3 does not count
# time spent deferred or awaiting input against it, so a phase step waiting for its child run or
# an approval gate waiting for a person is bounded by its own waits, not by this):
# - TASK_TIMEOUT, the default: planning, committing, gates opening, reports, bookkeeping;
# - LONG_TASK_TIMEOUT, named in the task decorator: extracting or transforming one part of a large
#   entity, building the package, delivering it (a read-back over a long link counts twice, see
#   delivery.transfer), loading fulfillment through the Alma API at its per-second limit.
TASK_TIMEOUT = task_timeout("TASK", 120)
LONG_TASK_TIMEOUT = task_timeout("LONG_TASK", 12 * 60)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "migration-team",
    "execution_timeout": TASK_TIMEOUT,
    "retries": 3,
    "retry_delay": timedelta(seconds=15),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "retry_policy": ExceptionRetryPolicy(rules=[PERMANENT]),
    # Alerts (aleph2alma.notify): the failed try's first error line is kept for the DAG's failure
    # alert; a retry past the configured quiet count is told at once.
    "on_failure_callback": [record_error],
    "on_retry_callback": [AlertNotifier(Kind.TASK_RETRY)],
}

T = TypeVar("T")


def dag_failure_alert() -> list[AlertNotifier]:
    """Every DAG's ``on_failure_callback``: one message per failed run, naming the task that failed it.

    Targets and recipients come from the ``aleph2alma_alerts`` Variable and the alert connections,
    read when the message is sent (``aleph2alma.notify``).
    """
    return [AlertNotifier(Kind.DAG_FAILED)]


def migration_id_param() -> Param:
    return Param(
        DEFAULT_MIGRATION_ID,
        type="string",
        pattern=r"^[A-Za-z0-9_-]+$",
        title="Migration id",
        description="Folder under include/config/ with migration.toml, the form and the rules.",
    )


# Airflow 3's forms (trigger form, approval gates) mark a field required unless its schema type
# admits null, and a required field left empty disables the Trigger (or Approve) button. So an
# optional field admits null, and the form sends null for a field the operator cleared: tasks read
# optional fields through ``text_param``/``list_param``, where null means "" or []. A pattern
# applies to strings only (null passes), so an optional field's pattern must accept "" too.
OPTIONAL_TEXT = ["null", "string"]
OPTIONAL_LIST = ["null", "array"]


def optional_text_param(title: str, description: str, pattern: str | None = None) -> Param:
    """An optional one-line text field; ``pattern`` (if any) must match "" as well."""
    schema: dict[str, Any] = {"type": OPTIONAL_TEXT, "title": title, "description": description}
    if pattern is not None:
        schema["pattern"] = pattern
    return Param("", **schema)


def as_of_param() -> Param:
    return optional_text_param(
        "As-of date (YYYY-MM-DD)",
        "Date patron expiry and overdue loans are judged against; empty = the run's date.",
        pattern=r"^(\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]))?$",
    )


def extract_run_param() -> Param:
    return optional_text_param(
        "Extract run",
        "Run id of the migration_extract run to use (or <dag id>/<run id> of a run that "
        "committed a raw stage); empty = the latest successful one.",
    )


def delivery_targets_param() -> Param:
    return Param(
        [],
        type=OPTIONAL_LIST,
        items={"type": "string", "pattern": r"^((sftp|s3)://\S+)?$"},
        title="Delivery targets",
        description="sftp://<connection id>/dir and/or s3://bucket/prefix. "
        "Empty: s3://<artifact bucket>/<migration id>/delivery/",
    )


def sample_size_param() -> Param:
    return Param(10, type="integer", minimum=0, title="Records per entity read back from Alma")


def workbook_param(description: str, title: str = "Statistics workbook (s3:// URI)") -> Param:
    """A gate's or a form's optional field for Ex Libris' statistics workbook."""
    return optional_text_param(title, description, pattern=r"^(s3://[^/\s]+/\S+)?$")


def entity_asset(stage: str, entity: str) -> Asset:
    """One Asset per stage and entity, e.g. ``aleph2alma.raw.items``."""
    return Asset(name=f"aleph2alma.{stage}.{entity}", group="aleph2alma")


def phase_context() -> PhaseContext:
    """The running task's context: its run scope, the migration's settings, the as-of date."""
    from airflow.sdk import get_current_context

    from aleph2alma import settings, wiring
    from aleph2alma.phases.context import PhaseContext
    from aleph2alma.storage import RunScope

    ctx = get_current_context()
    params = ctx["params"]
    scope = RunScope(params["migration_id"], ctx["dag"].dag_id, ctx["run_id"])
    return PhaseContext(
        wiring.artifact_store(),
        scope,
        settings.load(params["migration_id"]),
        _as_of(ctx),
        thresholds=str(params.get("thresholds") or "test_load"),
    )


def _as_of(ctx: Any) -> date:
    """The trigger form's as-of date, else the day the run was made for."""
    given = str(ctx["params"].get("as_of") or "").strip()
    if given:
        return date.fromisoformat(given)
    run = ctx["dag_run"]
    return (run.logical_date or run.run_after).date()


def params() -> Any:
    from airflow.sdk import get_current_context

    return get_current_context()["params"]


def text_param(name: str) -> str:
    """An optional text field of the trigger form: "" when left empty (the form sends null)."""
    return str(params().get(name) or "").strip()


def list_param(name: str) -> list[str]:
    """An optional list field of the trigger form: [] when left empty (null); blank lines dropped."""
    return [str(v).strip() for v in params().get(name) or [] if str(v).strip()]


def alephseq_landing() -> Landing:
    """The landing location from the trigger form, or the Variable when the form left it empty."""
    from airflow.sdk import Variable

    from aleph2alma import wiring

    uri = text_param("alephseq_landing") or Variable.get(LANDING_VARIABLE, default="")
    return wiring.landing(uri)


def skip_unless(value: T | None, reason: str) -> T:
    """Skip the task (not fail it) when there is nothing for it to do in this run."""
    if value is None or value is False:
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(reason)
    return value


def run_phase(task_id: str, step: ChildStep, conf: Any) -> TriggerDagRunOperator:
    """A step that runs ``step``'s DAG as ``<this run id>__<step>`` and waits for it.

    The wait is deferred to the triggerer, so a long transform holds no worker slot. A
    failed child run fails the step at once: the child's own tasks have retried already,
    and re-running a whole transform by itself would only repeat the failure. Once the
    cause is fixed, *clear* the step: the child run is cleared and runs again.
    """
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    child_failed = RetryRule(
        exception="airflow.sdk.exceptions.AirflowException",
        action=RetryAction.FAIL,
        match_subclasses=False,
        reason=f"the {step.dag_id} run failed: fix its failed task, then clear this step",
    )
    return TriggerDagRunOperator(
        task_id=task_id,
        trigger_dag_id=step.dag_id,
        trigger_run_id=step.run_id_template(),
        conf=conf,
        wait_for_completion=True,
        deferrable=True,
        poke_interval=10,
        reset_dag_run=True,
        retry_policy=ExceptionRetryPolicy(rules=[child_failed, PERMANENT]),
    )


def phase_run_ended(ctx: PhaseContext) -> dict[str, str]:
    """Called by a phase run's last task (its audit): records the run's end for the plan's actuals
    and writes the migration's status report (``reports/<dag>/<run>/status/``). A phase's child run
    (``<run>__extract``) is part of its parent's: nothing is recorded for it."""
    from datetime import UTC, datetime

    from airflow.sdk import get_current_context

    from aleph2alma.plan.report import phase_run_ended as record
    from aleph2alma.runs import is_child_run

    if is_child_run(ctx.scope.run_id):
        return {}
    context = get_current_context()
    started = context["dag_run"].start_date or datetime.now(UTC)
    params = {k: v for k, v in dict(context["params"]).items() if k in ("iteration",)}
    return record(ctx.store, ctx.scope, started, datetime.now(UTC), params)


def close_with(audit: Any) -> Any:
    """Make ``audit`` (the accounting audit's task, as returned by calling it) the DAG's only leaf:
    every task that had nothing after it now runs before the audit, so the audit sees every
    manifest the run commits. Call it last in the DAG function."""
    last = audit.operator
    for leaf in last.dag.leaves:
        if leaf is not last:
            leaf >> last
    return audit


def autoextract_group() -> Any:
    """Task group ``autoextract``: Ex Libris' AutoExtract on the Aleph server, one retryable task per
    step in order (``AUTOEXTRACT_STEPS``); each is skipped unless this migration delivers through
    AutoExtract and configures that step. Its outputs are staged under the run's ``autoextract/``."""
    from airflow.sdk import TaskGroup

    from aleph2alma.settings import AUTOEXTRACT_STEPS

    with TaskGroup("autoextract", tooltip="Ex Libris' AutoExtract on the Aleph server, over SSH") as group:
        previous = None
        for step in AUTOEXTRACT_STEPS:
            current = _autoextract_step(step)
            if previous is not None:
                previous >> current
            previous = current
    return group


def _autoextract_step(step: str) -> Any:
    from airflow.sdk import task

    @task(task_id=step, trigger_rule="none_failed", execution_timeout=LONG_TASK_TIMEOUT)
    def run() -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.phases.test_load import autoextract_step

        ctx = phase_context()
        delivery = ctx.settings.delivery
        skip_unless(delivery.mode == "autoextract", "delivery mode is generic: our package is delivered")
        skip_unless(delivery.autoextract.step(step), f"migration.toml configures no AutoExtract {step} step")
        return autoextract_step(ctx, step, wiring.aleph_shell)

    return run()
