"""
### Transform and validate: Aleph extract → Alma-ready files

Reads a committed `migration_extract` run (the latest successful one unless the form names
another) and turns it into what Alma loads, driven by the **migration form** in
`include/config/<migration id>/form/` and the rules in `rules.toml`:

- **bibs** → ISO 2709 UTF-8 (MARC 21 and CNMARC), Aleph-local fields dropped, 001 + 035 `(ALEPH)…`;
- **holdings** → MARC 21 holdings linked to their bib (004);
- **items** → Alma item fields (CSV), **patrons** → SIS user XML (no PINs; e-mails scrubbed
  for test loads), **loans / requests / fines** → JSON lines for the API loader;
- the **P2E** file;
- when `items_in_bib_field` is set in `migration.toml` (e.g. `949`), the bibs again with one
  such field per item (`alma/bibs_with_items/`), for an import-profile load.

Every record ends delivered or rejected with its id and reason. Validation rules (FIX /
REVIEW / INFO) write the **validation report** (HTML + JSON) and one **worklist TSV per
rule** under `reports/migration_transform/<run id>/validation/`. The last task,
`delivery_gate`, fails when a FIX rule passed its threshold and names the rules and the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import Param, TaskGroup, dag, task

from aleph2alma.dagkit import (
    DEFAULT_ARGS,
    LONG_TASK_TIMEOUT,
    as_of_param,
    close_with,
    dag_failure_alert,
    entity_asset,
    extract_run_param,
    migration_id_param,
    params,
    phase_context,
    text_param,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from aleph2alma.refs import Committed, PartRef, PartResult, TableValidation, ValidationOutcome
    from aleph2alma.runs import RunRef

PARTS = 4  # part tasks of one entity running at once in a run


@dag(
    dag_id="migration_transform",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    on_failure_callback=dag_failure_alert(),
    doc_md=__doc__,
    tags=["aleph2alma", "test-load"],
    max_active_runs=1,
    params={
        "migration_id": migration_id_param(),
        "extract_run_id": extract_run_param(),
        "scrub_emails": Param(
            True,
            type="boolean",
            title="Scrub patron e-mails",
            description="Replace every e-mail with <primary id>@example.invalid (keep on until go-live).",
        ),
        "as_of": as_of_param(),
        "thresholds": Param(
            "test_load",
            type="string",
            enum=["test_load", "cutover"],
            title="Validation thresholds",
            description="test_load: rules.toml. cutover: rules.cutover.toml on top of it (the cutover "
            "runs its transforms with these).",
        ),
    },
)
def migration_transform() -> None:
    @task
    def which_extract() -> RunRef:
        from aleph2alma.phases.transform import extract_of

        return extract_of(phase_context(), text_param("extract_run_id"))

    @task(task_id="plan")
    def plan_parts(extract: RunRef, entity: str, source: str | None = None) -> list[PartRef]:
        from aleph2alma.phases.transform import parts_of

        return parts_of(phase_context(), extract, entity, source)

    @task(max_active_tis_per_dagrun=PARTS, execution_timeout=LONG_TASK_TIMEOUT)
    def transform_part(part: PartRef, bibs: Committed | None = None) -> PartResult:
        from aleph2alma.phases.transform import transform_marc_part

        return transform_marc_part(phase_context(), part, bibs)

    def commit(entity: str, plan: Any, results: Any) -> Any:
        # The plan goes to the commit too: a planned part without a result refuses the commit.
        @task(task_id="commit", outlets=[entity_asset("alma", entity)])
        def commit_entity(plan: list[PartRef], results: Iterable[PartResult]) -> Committed:
            from aleph2alma.stages import commit_alma

            return commit_alma(phase_context(), entity, results, planned=plan)

        return commit_entity(plan, results)

    extract = which_extract()
    with TaskGroup("bibs", tooltip="ALEPHSEQ → ISO 2709 UTF-8, per part"):
        plan = plan_parts(extract, "bibs")
        bibs = commit("bibs", plan, transform_part.override(task_id="transform").expand(part=plan))
    # Holdings follow the bibs: what hangs off a missing or rejected bib is withheld.
    with TaskGroup("holdings", tooltip="MARC 21 holdings linked to their bib, per part"):
        plan = plan_parts(extract, "holdings")
        holdings = commit(
            "holdings",
            plan,
            transform_part.override(task_id="transform").partial(bibs=bibs).expand(part=plan),
        )

    validation = TaskGroup("validation", tooltip="Cross-record rules, the report, the delivery gate")
    with validation:

        @task(execution_timeout=LONG_TASK_TIMEOUT)
        def cross_record_rules(extract: RunRef, bibs: Committed, holdings: Committed) -> TableValidation:
            from aleph2alma.phases.validation import validate_tables

            return validate_tables(phase_context(), extract, bibs, holdings)

        validated = cross_record_rules(extract, bibs, holdings)

    with TaskGroup("items", tooltip="Z30 → Alma item rows, per part"):

        @task(max_active_tis_per_dagrun=PARTS, execution_timeout=LONG_TASK_TIMEOUT)
        def transform(part: PartRef, validated: TableValidation) -> PartResult:
            from aleph2alma.phases.transform import transform_items_part

            return transform_items_part(phase_context(), part, validated.excluded_key)

        plan = plan_parts(extract, "items", "Z30")
        items = commit("items", plan, transform.partial(validated=validated).expand(part=plan))

    with TaskGroup("bibs_with_items", tooltip="Bibs with one field per item (items_in_bib_field)"):

        @task(task_id="plan")
        def plan_bib_parts(bibs: Committed) -> list[PartRef]:
            from aleph2alma.dagkit import skip_unless
            from aleph2alma.phases.transform import bib_parts

            ctx = phase_context()
            skip_unless(
                ctx.settings.items_in_bib_field or None,
                "items_in_bib_field is not set in migration.toml: items are delivered as their own file only",
            )
            return bib_parts(ctx, bibs)

        @task(max_active_tis_per_dagrun=PARTS, execution_timeout=LONG_TASK_TIMEOUT)
        def embed_items(part: PartRef, items: Committed) -> PartResult:
            from aleph2alma.phases.transform import embed_items_part

            return embed_items_part(phase_context(), part, items)

        @task(task_id="commit", outlets=[entity_asset("alma", "bibs_with_items")])
        def commit_bibs_with_items(plan: list[PartRef], results: Iterable[PartResult]) -> Committed:
            from aleph2alma.phases.transform import commit_bibs_with_items as run

            return run(phase_context(), results, planned=plan)

        plan = plan_bib_parts(bibs)
        commit_bibs_with_items(plan, embed_items.partial(items=items).expand(part=plan))

    with TaskGroup("patrons", tooltip="Z303–Z308 → SIS user XML"):

        @task(
            task_id="transform",
            outlets=[entity_asset("alma", "patrons")],
            execution_timeout=LONG_TASK_TIMEOUT,
        )
        def transform_patrons(extract: RunRef, validated: TableValidation) -> Committed:
            from aleph2alma.phases.transform import transform_patrons as run

            return run(phase_context(), extract, validated.excluded_key, bool(params()["scrub_emails"]))

        patrons = transform_patrons(extract, validated)

    with TaskGroup("fulfillment", tooltip="Active loans, requests, open fines → JSON lines"):

        @task(
            task_id="transform",
            outlets=[entity_asset("alma", e) for e in ("loans", "requests", "fines")],
            execution_timeout=LONG_TASK_TIMEOUT,
        )
        def transform_fulfillment(
            extract: RunRef, validated: TableValidation, items: Committed
        ) -> list[Committed]:
            from aleph2alma.phases.transform import transform_fulfillment as run

            return run(phase_context(), extract, validated.excluded_key, items)

        fulfillment = transform_fulfillment(extract, validated, items)

    @task(outlets=[entity_asset("alma", "p2e")], execution_timeout=LONG_TASK_TIMEOUT)
    def p2e(bibs: Committed, holdings: Committed) -> Committed:
        from aleph2alma.phases.validation import write_p2e

        return write_p2e(phase_context(), bibs, holdings)

    p2e_file = p2e(bibs, holdings)

    with validation:

        @task(execution_timeout=LONG_TASK_TIMEOUT)
        def report(
            extract: RunRef,
            bibs: Committed,
            holdings: Committed,
            items: Committed,
            patrons: Committed,
            fulfillment: Iterable[Committed],
            validated: TableValidation,
            p2e_file: Committed,
        ) -> ValidationOutcome:
            from aleph2alma.phases.validation import write_report
            from aleph2alma.state import write_run_summary

            ctx = phase_context()
            stages = [bibs, holdings, items, patrons, *fulfillment, p2e_file]
            outcome = write_report(ctx, extract, stages, [bibs, holdings, validated])
            write_run_summary(
                ctx.store, ctx.scope, [*stages, validated], extra={"validation": outcome.model_dump()}
            )
            return outcome

        @task
        def delivery_gate(outcome: ValidationOutcome) -> ValidationOutcome:
            """Fails at once (a permanent error) when a FIX rule passed its threshold."""
            from aleph2alma.phases.validation import gate

            return gate(outcome)

        delivery_gate(report(extract, bibs, holdings, items, patrons, fulfillment, validated, p2e_file))

    # After every other task, bibs_with_items run or skipped; never after a failure.
    @task(trigger_rule="none_failed")
    def audit(extract: RunRef) -> dict[str, Any]:
        """Last: every manifest of the run balances, and each entity's alma/ stage read in what the
        extract's raw/ stage committed; fails naming the gap."""
        from aleph2alma.audit import audit_step

        ctx = phase_context()
        return audit_step(ctx.store, ctx.scope, reads={ctx.run: extract})

    close_with(audit(extract))


migration_transform()
