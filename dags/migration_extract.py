"""
### Full extraction from Aleph

Pulls every requested entity out of Aleph into the run's `raw/` stage in S3, then profiles
the codes in use: the **code inventory**, the draft of the migration form.

- **bibs** and **holdings** come from ALEPHSEQ exports in the landing location
  (`file:///dir`, `s3://bucket/prefix` or `sftp://<connection id>/path`);
- **items, patrons, loans, requests, fines, orders, vendors, budgets** and the ADM→BIB
  **links** come from the Aleph Z-tables through the `aleph_db` connection.

Large entities are split into parts, one mapped task each. Every entity is committed with
a `_MANIFEST.json` (files, record counts, sha256) and announced as an Asset. Malformed
ALEPHSEQ lines are written to `raw/<entity>/rejects/` with file, byte offset and reason.

Outputs: `s3://<bucket>/<migration id>/runs/migration_extract/<run id>/raw/<entity>/…`,
the code inventory under `profile/codes/`, and `reports/…/run_summary.json`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from aleph2alma.dagkit import ALL_ENTITIES, DEFAULT_ARGS, entity_asset, migration_id_param, run_scope

ENTITIES = ALL_ENTITIES


@dag(
    dag_id="migration_extract",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["aleph2alma", "extraction"],
    max_active_runs=1,
    params={
        "migration_id": migration_id_param(),
        "entities": Param(ENTITIES, type="array", title="Entities", examples=ENTITIES,
                          description="What to extract. All by default."),
        "alephseq_landing": Param("", type="string", title="ALEPHSEQ landing location",
                                  description="file:///dir, s3://bucket/prefix or sftp://<connection id>/path "
                                              "holding the BIB and HOL exports. Empty: the Variable "
                                              "aleph2alma_alephseq_landing."),
    },
)
def migration_extract() -> None:
    @task
    def plan() -> list[dict[str, Any]]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import alephseq_landing, settings_from_params
        from aleph2alma.phases.extraction import plan_extraction

        params = get_current_context()["params"]
        entities = list(params["entities"])
        needs_db = any(e not in ("bibs", "holdings") for e in entities)
        needs_seq = any(e in ("bibs", "holdings") for e in entities)
        return plan_extraction(settings_from_params(params), entities,
                               engine=wiring.aleph_engine() if needs_db else None,
                               landing=alephseq_landing(params) if needs_seq else None)

    @task(max_active_tis_per_dagrun=4)
    def extract_part(part: dict[str, Any]) -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import alephseq_landing, settings_from_params
        from aleph2alma.phases.extraction import extract_part as run

        params = get_current_context()["params"]
        is_table = part["kind"] == "table"
        return run(wiring.artifact_store(), run_scope(), settings_from_params(params), part,
                   engine=wiring.aleph_engine() if is_table else None,
                   landing=None if is_table else alephseq_landing(params))

    planned = plan()
    extracted = extract_part.expand(part=planned)

    committed = []
    for entity in ENTITIES:
        @task(task_id=f"commit_{entity}", outlets=[entity_asset("raw", entity)])
        def commit(results: list[dict[str, Any]], plan: list[dict[str, Any]], entity: str = entity) -> dict:
            from aleph2alma import wiring
            from aleph2alma.dagkit import skip_unless
            from aleph2alma.phases.extraction import commit_entity

            return skip_unless(commit_entity(wiring.artifact_store(), run_scope(), entity, results, plan),
                               f"{entity} were not requested in this run")

        committed.append(commit(extracted, planned))

    @task(outlets=[entity_asset("profile", "codes")], trigger_rule="none_failed")
    def profile_codes(items: dict | None, patrons: dict | None) -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.phases.extraction import profile_codes as run

        return run(wiring.artifact_store(), run_scope(),
                   items["manifest"] if items else None, patrons["manifest"] if patrons else None)

    by_entity = dict(zip(ENTITIES, committed, strict=True))
    inventory = profile_codes(by_entity["items"], by_entity["patrons"])

    @task(trigger_rule="none_failed")
    def summarise(stages: list[dict | None], inventory: dict | None) -> str:
        from aleph2alma import wiring
        from aleph2alma.phases.extraction import record_latest, write_run_summary

        store, scope = wiring.artifact_store(), run_scope()
        summary = write_run_summary(store, scope, [*stages, inventory])
        if set(get_current_context()["params"]["entities"]) == set(ENTITIES):
            record_latest(store, scope)  # only a full extract can feed the transform
        return summary

    summarise(committed, inventory)


migration_extract()
