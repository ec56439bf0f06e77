"""
### First test load

extract → transform + validate → package → deliver → **[test environment loaded?]** →
load fulfillment through the API (optional) → reconcile.

1. Runs `migration_extract` and `migration_transform` (waits for both; the transform
   stops the load when a FIX rule passes its threshold, with the report linked). If a
   child run fails, fix the cause and *clear* the step here: the child run runs again.
2. **package**: the delivery zip (bib and holdings MARC, items, user XML, loans, requests,
   fees, P2E, the filled migration form, `MANIFEST.json` with counts and sha256).
3. **deliver**: to every target of the form — `sftp://<connection id>/dir` (the migration
   file-transfer server) and/or `s3://bucket/prefix` — with the far side's size and
   checksum verified.
4. **test_environment_loaded**: answer in the UI when Ex Libris has loaded the test
   environment; paste the `s3://` URI of their statistics workbook if you have it.
5. **api_load** (when *Load fulfillment through the API* is on): active loans, requests
   and fees through the Alma REST API, in the `alma_api` pool.
6. **reconcile**: per entity, Aleph source → delivered → rejected → in Alma, and a sample
   of records read back from Alma field by field. Report under
   `reports/migration_test_load/<run id>/reconciliation/`.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, get_current_context, task

from aleph2alma.dagkit import (
    DEFAULT_ARGS,
    as_of_param,
    entity_asset,
    migration_id_param,
    run_phase,
    run_scope,
)

# What the operator needs on the gate's page: what was delivered, where, and what it holds.
LOADED_GATE_BODY = """\
Approve once Ex Libris has loaded the delivery into the Alma test environment. Paste the
s3:// URI of their statistics workbook, if they sent one, before approving.

{% set package = ti.xcom_pull(task_ids='package') %}
**Package** `{{ package.uri }}` — {{ '{:,}'.format(package.bytes) }} bytes, sha256 `{{ package.sha256 }}`

**Delivered to** (size and sha256 verified on the far side):
{% for d in ti.xcom_pull(task_ids='deliver') %}
- `{{ d.target }}` → `{{ d.remote_path }}` ({{ d.method }}{{ ', already there' if d.already }})
{% endfor %}

| member | records |
|---|---|
{% for m in package.members if m.records %}| `{{ m.name }}` | {{ '{:,}'.format(m.records) }} |
{% endfor %}"""


@dag(
    dag_id="migration_test_load",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["aleph2alma", "test-load"],
    max_active_runs=1,
    params={
        "migration_id": migration_id_param(),
        "delivery_targets": Param([], type="array", title="Delivery targets",
                                  description="sftp://<connection id>/dir and/or s3://bucket/prefix. "
                                              "Empty: s3://<artifact bucket>/<migration id>/delivery/"),
        "api_load": Param(False, type="boolean", title="Load fulfillment through the API",
                          description="Create active loans, requests and fees through the Alma REST API."),
        "as_of": as_of_param(),
        "sample_size": Param(10, type="integer", minimum=0, title="Records per entity read back from Alma"),
    },
)
def migration_test_load() -> None:
    extract = run_phase("extract", "migration_extract", "extract", conf={"migration_id": "{{ params.migration_id }}"})
    transform_and_validate = run_phase(
        "transform_and_validate", "migration_transform", "transform",
        conf={"migration_id": "{{ params.migration_id }}", "extract_run_id": "{{ run_id }}__extract",
              "as_of": "{{ params.as_of }}", "scrub_emails": True},
    )

    @task(outlets=[entity_asset("package", "delivery")])
    def package() -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.phases.test_load import package_step

        ctx = get_current_context()
        return package_step(wiring.artifact_store(), run_scope(), ctx["params"]["migration_id"],
                            f"{ctx['run_id']}__transform")

    @task
    def deliver(package: dict[str, Any]) -> list[dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowFailException

        from aleph2alma import wiring
        from aleph2alma.delivery.transfer import DeliveryError
        from aleph2alma.phases.test_load import deliver_step

        params = get_current_context()["params"]
        store = wiring.artifact_store()
        targets = list(params["delivery_targets"]) or [f"s3://{store.bucket}/{params['migration_id']}/delivery/"]
        try:
            return deliver_step(store, package, targets, sftp_client=wiring.sftp_client,
                                s3_client=wiring.s3_client)
        except DeliveryError as exc:  # a mismatch on the far side: retrying sends the same bytes
            raise AirflowFailException(str(exc)) from exc

    test_environment_loaded = ApprovalOperator(
        task_id="test_environment_loaded",
        subject="Test environment loaded?",
        body=LOADED_GATE_BODY,
        params={"statistics_workbook_uri": Param("", type="string", title="Statistics workbook (s3:// URI)")},
    )

    @task(pool="alma_api", pool_slots=25)  # the whole pool: this task alone uses the 25 calls/s
    def api_load() -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.phases.test_load import api_load_step

        ctx = get_current_context()
        if not ctx["params"]["api_load"]:
            return {}
        with wiring.alma_client() as client:
            return api_load_step(wiring.artifact_store(), run_scope(), ctx["params"]["migration_id"],
                                 f"{ctx['run_id']}__transform", client)

    @task(pool="alma_api", pool_slots=25)  # the whole pool: this task alone uses the 25 calls/s
    def reconcile(answer: dict[str, Any], loaded: dict[str, Any]) -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.phases.extraction import write_run_summary
        from aleph2alma.phases.test_load import reconcile_step

        ctx = get_current_context()
        params, run_id = ctx["params"], ctx["run_id"]
        store, scope = wiring.artifact_store(), run_scope()
        workbook = (answer.get("params_input") or {}).get("statistics_workbook_uri", "")
        with wiring.alma_client() as client:
            result = reconcile_step(store, scope, params["migration_id"], f"{run_id}__extract",
                                    f"{run_id}__transform", workbook, client, loaded, params["sample_size"])
        write_run_summary(store, scope, [], extra={"reconciliation": result, "api_load": loaded})
        return result

    packaged = package()
    delivered = deliver(packaged)
    loaded = api_load()
    extract >> transform_and_validate >> packaged
    delivered >> test_environment_loaded >> loaded
    reconcile(test_environment_loaded.output, loaded)


migration_test_load()
