"""
### After go-live

Runs once Alma is live, on the **final run**: the phase run whose extract and transform are
Aleph's last snapshot (`migration_test_load/<run id>` today; the cutover run once it exists).
**which_final_run** resolves it once (left empty: the latest test load that reconciled).

1. **offline_circulation** (when files are given): the loans, returns and renewals the desks
   recorded while circulation was frozen, applied to Alma through the API in time order, in the
   `alma_api` pool. A retry never applies a transaction twice (a checkpoint in S3 plus a look at
   Alma before each write). Bad rows and Alma's refusals are rejects with line and reason:
   `runs/migration_post_go_live/<run id>/offline_circ/applied/rejects.jsonl`. The file layout is
   `[post_go_live.offline_circulation]` in `migration.toml`.
2. **worklists**: what librarians clean up in Alma — test patrons to purge, items without
   barcodes, records Aleph suppressed, items still in acquisitions, loans whose dates Alma could
   not keep — one workbook and one CSV per list under `worklists/cleanup/`.
3. **final_reconciliation**: the final snapshot against what Alma holds (Ex Libris' cutover
   statistics workbook when given, the final run's API load, a sample read back now).
4. **archive**: the final extract and every delivered package copied into
   `<migration id>/archive/final-<run id>/`, each copy's sha256 verified, with the storage class
   and retention of `[post_go_live.archive]`.
5. **decommission** — answer in the UI (*Required actions*) once you have read the reconciliation
   report, handed the worklists over and checked the archive: *Approve* if Aleph can be switched
   off. **checklist** then writes the decommission checklist (what was verified, by whom, when)
   under `reports/migration_post_go_live/<run id>/decommission/`. A *Reject* skips the
   checklist (the audit still runs): fix what is missing and run this DAG again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import Param, dag, task

from aleph2alma.alma.rate import ALMA_POOL, ALMA_POOL_SLOTS
from aleph2alma.dagkit import (
    DEFAULT_ARGS,
    LONG_TASK_TIMEOUT,
    OPTIONAL_LIST,
    as_of_param,
    close_with,
    dag_failure_alert,
    list_param,
    migration_id_param,
    optional_text_param,
    params,
    phase_context,
    phase_run_ended,
    sample_size_param,
    text_param,
    workbook_param,
)
from aleph2alma.gates import ApprovalGate
from aleph2alma.runs import POST_GO_LIVE_DAG, TEST_LOAD_DAG, RunRef

if TYPE_CHECKING:
    from aleph2alma.refs import Reconciliation

DECOMMISSION_BODY = """\
Approve when Aleph can be switched off: the final reconciliation accounts for every record,
the worklists are with the librarians, and the archive holds the final snapshot.

{% set rec = ti.xcom_pull(task_ids='final_reconciliation') %}
{% set lists = ti.xcom_pull(task_ids='worklists') %}
{% set kept = ti.xcom_pull(task_ids='archive') %}
{% set offline = ti.xcom_pull(task_ids='offline_circulation') %}
**Final reconciliation:**
{{ 'every record accounted for' if rec.all_accounted else 'NOT every record accounted for' }}
— `{{ rec.report_html }}`

**Worklists:** {% for name, n in lists.counts.items() -%}
{{ name }} {{ n }}{{ ', ' if not loop.last }}{% endfor %}
— `{{ lists.workbook }}`

**Archive** `{{ kept.label }}`: {{ kept.objects }} objects ({{ '{:,}'.format(kept.bytes) }} bytes),
{{ kept.storage_class }}, kept until {{ kept.retain_until }}

{% if offline %}**Offline circulation:** {{ offline.records_in }} transactions read,
{{ offline.records_out }} in Alma, {{ offline.rejected }} rejected {{ offline.rejected_by_reason }}
{% else %}**Offline circulation:** no files in this run{% endif %}"""


@dag(
    dag_id=POST_GO_LIVE_DAG,
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    on_failure_callback=dag_failure_alert(),
    doc_md=__doc__,
    tags=["aleph2alma", "post-go-live"],
    max_active_runs=1,
    params={
        "migration_id": migration_id_param(),
        "final_run": optional_text_param(
            "Final run",
            "The run whose extract and transform are Aleph's last snapshot: <dag id>/<run id>, or a "
            f"run id of {TEST_LOAD_DAG}; empty = the latest {TEST_LOAD_DAG} run that reconciled.",
            pattern=r"^\S*$",
        ),
        "offline_circulation_files": Param(
            [],
            type=OPTIONAL_LIST,
            items={"type": "string", "pattern": r"^(s3://[^/\s]+/\S+)?$"},
            title="Offline circulation files",
            description="s3:// URIs of the desks' offline circulation CSV files; empty = none.",
        ),
        "statistics_workbook_uri": workbook_param(
            "Optional: Ex Libris' statistics workbook of the cutover load; empty = the one the final run "
            "was reconciled with.",
            title="Cutover statistics workbook (s3:// URI)",
        ),
        "package_runs": Param(
            [],
            type=OPTIONAL_LIST,
            items={"type": "string"},
            title="Runs whose delivered packages are archived",
            description="<dag id>/<run id> of each run that delivered a package; empty = the final run.",
        ),
        "as_of": as_of_param(),
        "sample_size": sample_size_param(),
    },
)
def migration_post_go_live() -> None:
    @task
    def which_final_run() -> RunRef:
        """Resolved once, here: every later task reads the same final run."""
        from aleph2alma.phases.post_go_live import final_run_of

        return final_run_of(phase_context(), text_param("final_run"))

    # the whole pool: one Alma task at a time
    @task(pool=ALMA_POOL, pool_slots=ALMA_POOL_SLOTS, execution_timeout=LONG_TASK_TIMEOUT)
    def offline_circulation() -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import skip_unless
        from aleph2alma.phases.post_go_live import offline_circulation_step

        files = list_param("offline_circulation_files")
        skip_unless(files or None, "no offline circulation files were given for this run")
        with wiring.alma_client() as client:
            return offline_circulation_step(phase_context(), files, client)

    @task(execution_timeout=LONG_TASK_TIMEOUT)
    def worklists(final: RunRef) -> dict[str, Any]:
        from aleph2alma.phases.post_go_live import worklists_step

        return worklists_step(phase_context(), final)

    # after the offline circulation (run or skipped): Alma then holds what it will hold
    @task(pool=ALMA_POOL, pool_slots=ALMA_POOL_SLOTS, trigger_rule="none_failed")
    def final_reconciliation(final: RunRef) -> Reconciliation:
        from aleph2alma import wiring
        from aleph2alma.phases.post_go_live import final_reconciliation_step

        with wiring.alma_client() as client:
            return final_reconciliation_step(
                phase_context(),
                final,
                text_param("statistics_workbook_uri"),
                client,
                params()["sample_size"],
            )

    @task(execution_timeout=LONG_TASK_TIMEOUT)
    def archive(final: RunRef) -> dict[str, Any]:
        from aleph2alma.phases.post_go_live import archive_step

        runs = [RunRef.parse(r, TEST_LOAD_DAG) for r in list_param("package_runs")] or [final]
        return archive_step(phase_context(), final, runs)

    decommission = ApprovalGate(
        task_id="decommission",
        subject="Aleph can be decommissioned?",
        body=DECOMMISSION_BODY,
        trigger_rule="none_failed",  # offline circulation may be skipped
        # A rejection skips the checklist only: the audit still runs.
        ignore_downstream_trigger_rules=False,
    )

    @task(trigger_rule="none_failed")
    def checklist(answer: Any, offline: Any, lists: Any, rec: Reconciliation, kept: Any) -> dict[str, Any]:
        from aleph2alma.phases.post_go_live import checklist_step
        from aleph2alma.state import write_run_summary

        ctx = phase_context()
        results = {
            "offline_circulation": offline,
            "worklists": lists,
            "reconciliation": rec.model_dump(mode="json"),
            "archive": kept,
        }
        result = checklist_step(ctx, results, answer or {})
        write_run_summary(ctx.store, ctx.scope, [], extra={**results, "checklist": result})
        return result

    @task(trigger_rule="none_failed")  # after the checklist; never after a failure
    def audit() -> dict[str, Any]:
        """Last: every manifest of this run balances (offline circulation: read = in Alma + rejected)."""
        from aleph2alma.audit import audit_step

        ctx = phase_context()
        return {**audit_step(ctx.store, ctx.scope), "status_report": phase_run_ended(ctx)}

    final = which_final_run()
    offline = offline_circulation()
    lists = worklists(final)
    rec = final_reconciliation(final)
    kept = archive(final)
    offline >> rec
    [offline, lists, rec, kept] >> decommission
    checklist(decommission.output, offline, lists, rec, kept)
    close_with(audit())


migration_post_go_live()
