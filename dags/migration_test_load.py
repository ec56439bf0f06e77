"""
### First test load

extract → transform + validate → package → deliver (or AutoExtract's steps) →
**[test environment loaded?]** → load fulfillment through the API (optional) → reconcile.

1. Runs `migration_extract` and `migration_transform` (waits for both; the transform
   stops the load when a FIX rule passes its threshold, with the report linked). If a
   child run fails, fix the cause and *clear* the step here: the child run runs again.
2. **package**: the delivery zip in Ex Libris' generic shape (bib and holdings MARC; items,
   loans, requests and fines as CSV with the Field Mapping form naming each column's Alma
   field; users as Alma user XML; P2E; the filled migration form; `MANIFEST.json` with counts
   and sha256). Built in both delivery modes: it is what validation and reconciliation read.
3. **deliver** (delivery mode `generic` in `migration.toml`): to every target of the form —
   `sftp://<connection id>/dir` (the migration file-transfer server) and/or
   `s3://bucket/prefix` — with the far side's size and checksum verified.
   **autoextract** (delivery mode `autoextract`): Ex Libris' AutoExtract on the Aleph server,
   one task per step (generate form → validate P2E → extract → package → transfer), each a
   command over SSH; what each step produced is staged under `autoextract/<step>/` with a
   manifest. A step the site does not configure is skipped. If a step fails, its log has the
   command's last lines; fix the cause on the Aleph server and clear the task.
4. **test_environment_loaded**: answer in the UI when Ex Libris has loaded the test
   environment; paste the `s3://` URI of their statistics workbook if you have it.
5. **api_load** (when *Load fulfillment through the API* is on; skipped otherwise): active
   loans, requests and fees through the Alma REST API, in the `alma_api` pool. Loans created
   this way carry the day of the load as their loan date (Alma sets it); the gate and the
   reconciliation report say so. The package's fulfillment files keep Aleph's dates.
6. **reconcile**: per entity, Aleph source → delivered → rejected → in Alma, and a sample
   of records read back from Alma field by field. Report under
   `reports/migration_test_load/<run id>/reconciliation/`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import Param, dag, task

from aleph2alma.alma.rate import ALMA_POOL, ALMA_POOL_SLOTS
from aleph2alma.dagkit import (
    DEFAULT_ARGS,
    LONG_TASK_TIMEOUT,
    as_of_param,
    autoextract_group,
    close_with,
    dag_failure_alert,
    delivery_targets_param,
    entity_asset,
    list_param,
    migration_id_param,
    params,
    phase_context,
    phase_run_ended,
    run_phase,
    sample_size_param,
    workbook_param,
)
from aleph2alma.gates import ApprovalGate
from aleph2alma.runs import ChildStep
from aleph2alma.settings import AUTOEXTRACT_STEPS

if TYPE_CHECKING:
    from aleph2alma.delivery.package import PackageResult
    from aleph2alma.delivery.transfer import Delivered
    from aleph2alma.refs import Reconciliation

# What the operator needs on the gate's page: what was delivered, where, and what it holds.
LOADED_GATE_BODY = """\
Approve once Ex Libris has loaded the delivery into the Alma test environment. Paste the
s3:// URI of their statistics workbook, if they sent one, before approving.

{% set package = ti.xcom_pull(task_ids='package') %}
{% set delivered = ti.xcom_pull(task_ids='deliver') %}
{% if delivered %}
**Package** `{{ package.uri }}` — {{ '{:,}'.format(package.bytes) }} bytes, sha256 `{{ package.sha256 }}`

**Delivered to** (size and sha256 verified on the far side):
{% for d in delivered %}
- `{{ d.target }}` → `{{ d.remote_path }}` ({{ d.method }}{{ ', already there' if d.already }})
{% endfor %}
{% else %}
**Delivered by Ex Libris' AutoExtract** on the Aleph server. Its steps and what they produced
(staged in the artifact store):
{% for step in AUTOEXTRACT_STEPS %}{% set r = ti.xcom_pull(task_ids='autoextract.' ~ step) %}{% if r %}
- **{{ step }}**: exit {{ r.exit_status }}; {% for o in r.outputs -%}
`{{ o.path }}` ({{ '{:,}'.format(o.bytes) }} bytes){{ ', ' if not loop.last }}{% endfor %}
{% endif %}{% endfor %}

Our own package (not delivered; validation and reconciliation read it): `{{ package.uri }}`
{% endif %}

| member | records |
|---|---|
{% for m in package.members if m.records %}| `{{ m.name }}` | {{ '{:,}'.format(m.records) }} |
{% endfor %}
{% if params.get('api_load') %}
**Fulfillment through the API is on for this run.** After this gate the active loans, requests
and fees are created through Alma's API. Alma gives every loan it creates today's date as its
loan date (it sets the date itself on the POST; Aleph's loan dates cannot be sent); due dates
follow Aleph. If Aleph's loan dates must be kept, have Ex Libris load the loans file of the
package instead, and run the test load with the API load off.
{% endif %}"""


@dag(
    dag_id="migration_test_load",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    on_failure_callback=dag_failure_alert(),
    doc_md=__doc__,
    tags=["aleph2alma", "test-load"],
    max_active_runs=1,
    user_defined_macros={"AUTOEXTRACT_STEPS": AUTOEXTRACT_STEPS},  # the gate's body lists them
    params={
        "migration_id": migration_id_param(),
        "delivery_targets": delivery_targets_param(),
        "api_load": Param(
            False,
            type="boolean",
            title="Load fulfillment through the API",
            description="Create active loans, requests and fees through the Alma REST API.",
        ),
        "as_of": as_of_param(),
        "sample_size": sample_size_param(),
    },
)
def migration_test_load() -> None:
    extract = run_phase("extract", ChildStep.EXTRACT, conf={"migration_id": "{{ params.migration_id }}"})
    transform_and_validate = run_phase(
        "transform_and_validate",
        ChildStep.TRANSFORM,
        conf={
            "migration_id": "{{ params.migration_id }}",
            "extract_run_id": ChildStep.EXTRACT.run_id_template(),
            "as_of": "{{ params.as_of or '' }}",
            "scrub_emails": True,
        },
    )

    @task(outlets=[entity_asset("package", "delivery")], execution_timeout=LONG_TASK_TIMEOUT)
    def package() -> PackageResult:
        from aleph2alma.phases.test_load import package_step

        ctx = phase_context()
        return package_step(ctx, ctx.run.child(ChildStep.TRANSFORM))

    @task(execution_timeout=LONG_TASK_TIMEOUT)
    def deliver(package: PackageResult) -> list[Delivered]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import skip_unless
        from aleph2alma.phases.test_load import deliver_step

        ctx = phase_context()
        skip_unless(
            ctx.settings.delivery.mode == "generic",
            "delivery mode is autoextract: Ex Libris' AutoExtract delivers (task group autoextract)",
        )
        return deliver_step(
            ctx,
            package,
            list_param("delivery_targets"),
            sftp_client=wiring.sftp_client,
            s3_client=wiring.s3_client,
        )

    autoextract = autoextract_group()

    test_environment_loaded = ApprovalGate(
        task_id="test_environment_loaded",
        subject="Test environment loaded?",
        body=LOADED_GATE_BODY,
        trigger_rule="none_failed",  # after deliver or AutoExtract, the other skipped
        params={
            "statistics_workbook_uri": workbook_param(
                "Optional: the s3:// URI of Ex Libris' statistics workbook, if they sent one."
            )
        },
    )

    # the whole pool: one Alma task at a time
    @task(pool=ALMA_POOL, pool_slots=ALMA_POOL_SLOTS, execution_timeout=LONG_TASK_TIMEOUT)
    def api_load() -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import skip_unless
        from aleph2alma.phases.test_load import api_load_step

        skip_unless(params()["api_load"], "Load fulfillment through the API is off for this run")
        ctx = phase_context()
        with wiring.alma_client() as client:
            return api_load_step(ctx, ctx.run.child(ChildStep.TRANSFORM), client)

    @task(
        pool=ALMA_POOL, pool_slots=ALMA_POOL_SLOTS, trigger_rule="none_failed"
    )  # after api_load, run or skipped
    def reconcile(answer: Any, loaded: Any) -> Reconciliation:  # the gate's answer; api_load's result or None
        from aleph2alma import wiring
        from aleph2alma.reconcile.against_alma import reconcile_step
        from aleph2alma.state import write_run_summary

        ctx = phase_context()
        workbook = str((answer.get("params_input") or {}).get("statistics_workbook_uri") or "").strip()
        with wiring.alma_client() as client:
            result = reconcile_step(ctx, workbook, client, loaded, params()["sample_size"])
        write_run_summary(
            ctx.store,
            ctx.scope,
            [],
            extra={
                "reconciliation": result.model_dump(),
                "api_load": loaded or {},
                "statistics_workbook_uri": workbook,
            },
        )
        return result

    packaged = package()
    delivered = deliver(packaged)
    loaded = api_load()
    extract >> transform_and_validate >> packaged >> autoextract
    [delivered, autoextract] >> test_environment_loaded >> loaded

    @task(trigger_rule="none_failed")  # after reconcile; never after a failure
    def audit() -> dict[str, Any]:
        """Last: every manifest of this run and of its extract and transform runs balances, and the
        chained stages agree (raw → alma → package); fails naming the gap."""
        from aleph2alma.audit import audit_step

        ctx = phase_context()
        extracted, transform = ctx.run.child(ChildStep.EXTRACT), ctx.run.child(ChildStep.TRANSFORM)
        audited = audit_step(
            ctx.store,
            ctx.scope,
            children=[extracted, transform],
            reads={transform: extracted, ctx.run: transform},
        )
        return {**audited, "status_report": phase_run_ended(ctx)}

    reconcile(test_environment_loaded.output, loaded)
    close_with(audit())


migration_test_load()
