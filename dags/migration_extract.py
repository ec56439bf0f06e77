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

from typing import TYPE_CHECKING, Any

from airflow.sdk import Param, TaskGroup, dag, task

from aleph2alma.dagkit import (
    ALL_ENTITIES,
    DEFAULT_ARGS,
    LONG_TASK_TIMEOUT,
    close_with,
    dag_failure_alert,
    entity_asset,
    migration_id_param,
    optional_text_param,
    params,
    phase_context,
    phase_run_ended,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from aleph2alma.aleph.extract import PartSpec
    from aleph2alma.refs import Committed, PartResult

ENTITIES = ALL_ENTITIES
SEQ_ENTITIES = ("bibs", "holdings")


@dag(
    dag_id="migration_extract",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    on_failure_callback=dag_failure_alert(),
    doc_md=__doc__,
    tags=["aleph2alma", "extraction"],
    max_active_runs=1,
    params={
        "migration_id": migration_id_param(),
        "entities": Param(
            ENTITIES,
            type="array",
            items={"type": "string", "enum": ENTITIES},
            minItems=1,
            title="Entities",
            examples=ENTITIES,
            description="What to extract. All by default.",
        ),
        "alephseq_landing": optional_text_param(
            "ALEPHSEQ landing location",
            "file:///dir, s3://bucket/prefix or sftp://<connection id>/path "
            "holding the BIB and HOL exports. Empty: the Variable "
            "aleph2alma_alephseq_landing.",
            pattern=r"^((file|s3|sftp)://\S+)?$",
        ),
    },
)
def migration_extract() -> None:
    @task
    def plan() -> list[PartSpec]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import alephseq_landing
        from aleph2alma.phases.extraction import plan_extraction

        entities = list(params()["entities"])
        needs_db = any(e not in SEQ_ENTITIES for e in entities)
        needs_seq = any(e in SEQ_ENTITIES for e in entities)
        return plan_extraction(
            phase_context(),
            entities,
            engine=wiring.aleph_engine() if needs_db else None,
            landing=alephseq_landing() if needs_seq else None,
        )

    @task(max_active_tis_per_dagrun=4, execution_timeout=LONG_TASK_TIMEOUT)
    def extract_part(part: PartSpec) -> PartResult:
        from aleph2alma import wiring
        from aleph2alma.dagkit import alephseq_landing
        from aleph2alma.phases.extraction import extract_part as run

        is_table = part.kind == "table"
        return run(
            phase_context(),
            part,
            engine=wiring.aleph_engine() if is_table else None,
            landing=None if is_table else alephseq_landing(),
        )

    planned = plan()
    extracted = extract_part.expand(part=planned)

    committed = {}
    with TaskGroup("commit", tooltip="One manifest per entity, once all its parts are in"):
        for entity in ENTITIES:

            @task(task_id=entity, outlets=[entity_asset("raw", entity)])
            def commit(
                results: Iterable[PartResult], plan: Iterable[PartSpec], entity: str = entity
            ) -> Committed:
                from aleph2alma.dagkit import skip_unless
                from aleph2alma.phases.extraction import commit_entity

                return skip_unless(
                    commit_entity(phase_context(), entity, results, plan),
                    f"{entity} were not requested in this run",
                )

            committed[entity] = commit(extracted, planned)

    @task(outlets=[entity_asset("profile", "codes")], trigger_rule="none_failed")
    def profile_codes(
        items: Committed | None, patrons: Committed | None, fines: Committed | None
    ) -> Committed:
        from aleph2alma.phases.extraction import profile_codes as run

        return run(phase_context(), items, patrons, fines)

    inventory = profile_codes(committed["items"], committed["patrons"], committed["fines"])

    @task(trigger_rule="none_failed")
    def summarise(stages: Iterable[Committed | None], inventory: Committed | None) -> str:
        from aleph2alma.state import record_latest, write_run_summary

        ctx = phase_context()
        summary = write_run_summary(ctx.store, ctx.scope, [*stages, inventory])
        if set(params()["entities"]) == set(ENTITIES):
            record_latest(ctx.store, ctx.scope)  # only a full extract can feed the transform
        return summary

    @task(trigger_rule="none_failed")  # after everything; never after a failure
    def audit(summary: str) -> dict[str, Any]:
        """Last: every manifest of the run balances (in = out + rejected); fails naming the gap."""
        from aleph2alma.audit import audit_step

        ctx = phase_context()
        return {**audit_step(ctx.store, ctx.scope), "status_report": phase_run_ended(ctx)}

    close_with(audit(summarise(list(committed.values()), inventory)))


migration_extract()
