"""Small pieces every DAG file shares: retry policy, assets, run scope, params → settings.

Cheap to import at parse time: only ``airflow.sdk`` names at module level.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from airflow.sdk import Asset, Param

from aleph2alma.aleph.ztables import table_entities

ALL_ENTITIES = ["bibs", "holdings", *table_entities()]
LANDING_VARIABLE = "aleph2alma_alephseq_landing"

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "migration-team",
    "retries": 3,
    "retry_delay": timedelta(seconds=15),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}

T = TypeVar("T")


def migration_id_param() -> Param:
    return Param("demo", type="string", pattern=r"^[A-Za-z0-9_-]+$", title="Migration id",
                 description="Folder under include/config/ with migration.toml, the form and the rules.")


def as_of_param() -> Param:
    return Param("", type="string", pattern=r"^(\d{4}-\d{2}-\d{2})?$", title="As-of date (YYYY-MM-DD)",
                 description="Date patron expiry and overdue loans are judged against; empty = the run's date.")


def extract_run_param() -> Param:
    return Param("", type="string", title="Extract run",
                 description="Run id of the migration_extract run to use; empty = the latest successful one.")


def entity_asset(stage: str, entity: str) -> Asset:
    """One Asset per stage and entity, e.g. ``aleph2alma.raw.items``."""
    return Asset(name=f"aleph2alma.{stage}.{entity}", group="aleph2alma")


def run_scope() -> Any:
    """The running task's artifact scope: migration id (from params), DAG id, run id."""
    from airflow.sdk import get_current_context

    from aleph2alma.storage import RunScope

    ctx = get_current_context()
    return RunScope(ctx["params"]["migration_id"], ctx["dag"].dag_id, ctx["run_id"])


def settings_from_params(params: Any) -> Any:
    from aleph2alma import settings

    return settings.load(params["migration_id"])


def alephseq_landing(params: Any) -> Any:
    """The landing location from the trigger form, or the Variable when the form left it empty."""
    from airflow.sdk import Variable

    from aleph2alma import wiring

    uri = params.get("alephseq_landing") or Variable.get(LANDING_VARIABLE, default="")
    return wiring.landing(uri)


def skip_unless(value: T | None, reason: str) -> T:
    """Skip the task (not fail it) when there is nothing for it to do in this run."""
    if value is None:
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(reason)
    return value


def form_and_rules(migration_id: str) -> tuple[Any, Any]:
    """The migration's form and validation rules, as a librarian last saved them."""
    from aleph2alma.alma.form import form_dir, load_form
    from aleph2alma.validate.rules import rules_for_migration

    return load_form(form_dir(migration_id)), rules_for_migration(migration_id)


def as_of_date() -> Any:
    """The as-of date of the run: the trigger form's, else the day the run was made for."""
    from datetime import date

    from airflow.sdk import get_current_context

    ctx = get_current_context()
    given = ctx["params"].get("as_of") or ""
    if given:
        return date.fromisoformat(given)
    run = ctx["dag_run"]
    when = run.logical_date or run.run_after
    return when.date()


def run_phase(task_id: str, dag_id: str, phase: str, conf: dict[str, Any]) -> Any:
    """A step that runs another migration DAG as ``<this run id>__<phase>`` and waits for it.

    The wait is deferred to the triggerer, so a long transform holds no worker slot. A
    failed child run fails the step at once: the child's own tasks have retried already,
    and re-running a whole transform by itself would only repeat the failure. Once the
    cause is fixed, *clear* the step: the child run is cleared and runs again.
    """
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
    from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

    child_failed = RetryRule(exception="airflow.sdk.exceptions.AirflowException", action=RetryAction.FAIL,
                             match_subclasses=False,
                             reason=f"the {dag_id} run failed: fix its failed task, then clear this step")
    return TriggerDagRunOperator(
        task_id=task_id, trigger_dag_id=dag_id, trigger_run_id=f"{{{{ run_id }}}}__{phase}", conf=conf,
        wait_for_completion=True, deferrable=True, poke_interval=10, reset_dag_run=True,
        retry_policy=ExceptionRetryPolicy(rules=[child_failed]),
    )
