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

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, get_current_context, task

from aleph2alma.dagkit import (
    DEFAULT_ARGS,
    as_of_param,
    entity_asset,
    extract_run_param,
    migration_id_param,
    run_phase,
    run_scope,
)

SIGN_OFF_BODY = """\
Read the iteration diff and the validation report. Approve to make this iteration the
baseline for the next one and for cutover; reject to keep the current baseline.

{% set diff = ti.xcom_pull(task_ids='diff') %}
**Against** `{{ diff.previous_run_id }}`: {{ diff.totals.fixed }} issues fixed, {{ diff.totals.new }} new,
{{ diff.totals.still_open }} still open.

**Iteration diff:** `{{ diff.report_html }}`"""


@dag(
    dag_id="migration_fix_cycle",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["aleph2alma", "fix-cycle"],
    max_active_runs=1,
    params={
        "migration_id": migration_id_param(),
        "iteration": Param(1, type="integer", minimum=1, title="Iteration number"),
        "extract_run_id": extract_run_param(),
        "previous_transform_run_id": Param("", type="string", title="Previous iteration's transform run",
                                           description="Compare with this migration_transform run; "
                                                       "empty = the signed-off baseline."),
        "as_of": as_of_param(),
    },
)
def migration_fix_cycle() -> None:
    @task(outlets=[entity_asset("fixed", "raw")])
    def apply_fixes() -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.phases.fix_cycle import apply_fixes_step

        params = get_current_context()["params"]
        return apply_fixes_step(wiring.artifact_store(), run_scope(), params["migration_id"], params["extract_run_id"])

    transform_and_validate = run_phase(
        "transform_and_validate", "migration_transform", "transform",
        conf={"migration_id": "{{ params.migration_id }}",
              "extract_run_id": "{{ ti.xcom_pull(task_ids='apply_fixes')['extract_ref'] }}",
              "as_of": "{{ params.as_of }}", "scrub_emails": True},
    )

    @task
    def diff() -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import form_and_rules
        from aleph2alma.phases.extraction import write_run_summary
        from aleph2alma.phases.fix_cycle import diff_step

        ctx = get_current_context()
        params = ctx["params"]
        _, rules = form_and_rules(params["migration_id"])
        store, scope = wiring.artifact_store(), run_scope()
        result = diff_step(store, scope, params["migration_id"], f"{ctx['run_id']}__transform",
                           params["previous_transform_run_id"], rules)
        write_run_summary(store, scope, [], extra={"iteration": params["iteration"], "diff": result})
        return result

    sign_off = ApprovalOperator(
        task_id="sign_off",
        subject="Sign off iteration {{ params.iteration }}?",
        body=SIGN_OFF_BODY,
    )

    @task
    def record_baseline() -> str:
        from aleph2alma import wiring
        from aleph2alma.phases.fix_cycle import record_baseline as run

        ctx = get_current_context()
        params = ctx["params"]
        return run(wiring.artifact_store(), params["migration_id"], params["iteration"],
                   f"{ctx['run_id']}__transform", ctx["run_id"])

    apply_fixes() >> transform_and_validate >> diff() >> sign_off >> record_baseline()


migration_fix_cycle()
