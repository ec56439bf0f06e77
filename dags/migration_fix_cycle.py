"""
### Fix cycle: iteration N

Re-runs transform and validation on an extract with the **current migration form** and the
**fix rules** in `include/config/<migration id>/fixes.toml` (remap codes, normalise call
numbers, drop test patrons, move barcodes found in notes), then compares the issues with
the previous iteration.

1. **apply_fixes**: the extract's raw Z-tables with the fix rules applied, committed under
   this run (what each rule changed, with record ids, is in the manifests).
2. **transform_and_validate**: `migration_transform` on the fixed extract (if it fails, fix
   the cause and *clear* this step: the transform runs again).
3. **diff**: per rule, issues fixed, new and still open against the previous iteration
   (the form's *previous transform run*, else the signed-off baseline), with worklists —
   `reports/migration_fix_cycle/<run id>/iteration_diff/`.
4. **sign_off**: approve in the UI when the iteration is good; it becomes the baseline for
   the next iteration and for cutover (`state/baseline/migration_fix_cycle.json`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import Param, dag, task

from aleph2alma.dagkit import (
    DEFAULT_ARGS,
    LONG_TASK_TIMEOUT,
    as_of_param,
    close_with,
    dag_failure_alert,
    entity_asset,
    extract_run_param,
    migration_id_param,
    optional_text_param,
    params,
    phase_context,
    phase_run_ended,
    run_phase,
    text_param,
)
from aleph2alma.gates import ApprovalGate
from aleph2alma.runs import FIX_CYCLE_DAG, ChildStep, RunRef

if TYPE_CHECKING:
    from aleph2alma.refs import FixedExtract, IterationDiff

SIGN_OFF_BODY = """\
Read the iteration diff and the validation report. Approve to make this iteration the
baseline for the next one and for cutover; reject to keep the current baseline.

{% set diff = ti.xcom_pull(task_ids='diff') %}
{%- set against = diff.previous.run_id if diff.previous else '(no earlier iteration)' %}
**Against** `{{ against }}`: {{ diff.totals.fixed }} issues fixed, {{ diff.totals.new }} new,
{{ diff.totals.still_open }} still open.

**Iteration diff:** `{{ diff.report_html }}`"""


@dag(
    dag_id=FIX_CYCLE_DAG,
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    on_failure_callback=dag_failure_alert(),
    doc_md=__doc__,
    tags=["aleph2alma", "fix-cycle"],
    max_active_runs=1,
    params={
        "migration_id": migration_id_param(),
        "iteration": Param(1, type="integer", minimum=1, title="Iteration number"),
        "extract_run_id": extract_run_param(),
        "previous_transform_run_id": optional_text_param(
            "Previous iteration's transform run",
            "Compare with this migration_transform run; empty = the signed-off baseline.",
        ),
        "as_of": as_of_param(),
    },
)
def migration_fix_cycle() -> None:
    @task(outlets=[entity_asset("fixed", "raw")], execution_timeout=LONG_TASK_TIMEOUT)
    def apply_fixes() -> FixedExtract:
        from aleph2alma.phases.fix_cycle import apply_fixes_step

        return apply_fixes_step(phase_context(), text_param("extract_run_id"))

    # The transform reads this run's own raw stage: the extract with the fix rules applied.
    transform_and_validate = run_phase(
        "transform_and_validate",
        ChildStep.TRANSFORM,
        conf={
            "migration_id": "{{ params.migration_id }}",
            "extract_run_id": RunRef.template(FIX_CYCLE_DAG),
            "as_of": "{{ params.as_of or '' }}",
            "scrub_emails": True,
        },
    )

    @task
    def diff() -> IterationDiff:
        from aleph2alma.phases.fix_cycle import diff_step
        from aleph2alma.state import write_run_summary

        ctx = phase_context()
        result = diff_step(ctx, text_param("previous_transform_run_id"))
        write_run_summary(
            ctx.store,
            ctx.scope,
            [],
            extra={"iteration": params()["iteration"], "diff": result.model_dump(mode="json")},
        )
        return result

    sign_off = ApprovalGate(
        task_id="sign_off",
        subject="Sign off iteration {{ params.iteration }}?",
        body=SIGN_OFF_BODY,
        # A rejection skips record_baseline only: the audit still runs.
        ignore_downstream_trigger_rules=False,
    )

    @task
    def record_baseline(fixed: FixedExtract) -> str:
        from aleph2alma.state import record_baseline as run

        ctx = phase_context()
        return run(
            ctx.store,
            ctx.migration_id,
            params()["iteration"],
            ctx.run.child(ChildStep.TRANSFORM),
            ctx.run,
            extract=fixed.source_extract,
        )

    @task(trigger_rule="none_failed")  # also when the sign-off was rejected; never after a failure
    def audit(fixed: FixedExtract) -> dict[str, Any]:
        """Last: every manifest of this run and of its transform run balances, the fixed raw stage
        kept what the extract committed less what the rules dropped, and the transform read it in."""
        from aleph2alma.audit import audit_step

        ctx = phase_context()
        transform = ctx.run.child(ChildStep.TRANSFORM)
        audited = audit_step(
            ctx.store,
            ctx.scope,
            children=[transform],
            reads={ctx.run: fixed.source_extract, transform: ctx.run},
        )
        return {**audited, "status_report": phase_run_ended(ctx)}

    fixed = apply_fixes()
    fixed >> transform_and_validate >> diff() >> sign_off >> record_baseline(fixed)
    close_with(audit(fixed))


migration_fix_cycle()
