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

from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from aleph2alma.dagkit import (
    DEFAULT_ARGS,
    as_of_param,
    entity_asset,
    extract_run_param,
    migration_id_param,
    run_scope,
)


@dag(
    dag_id="migration_transform",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["aleph2alma", "test-load"],
    max_active_runs=1,
    params={
        "migration_id": migration_id_param(),
        "extract_run_id": extract_run_param(),
        "scrub_emails": Param(True, type="boolean", title="Scrub patron e-mails",
                              description="Replace every e-mail with <primary id>@example.invalid (keep on until go-live)."),
        "as_of": as_of_param(),
    },
)
def migration_transform() -> None:
    @task
    def plan() -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.phases.transform import plan_transform

        params = get_current_context()["params"]
        return plan_transform(wiring.artifact_store(), params["migration_id"], params["extract_run_id"])

    @task
    def parts_of(plan: dict[str, Any], entity: str) -> list[dict[str, Any]]:
        return list(plan[entity])

    @task(max_active_tis_per_dagrun=4)
    def transform_marc(part: dict[str, Any], bibs: dict[str, Any] | None = None) -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import settings_from_params
        from aleph2alma.phases.transform import transform_marc_part

        params = get_current_context()["params"]
        return transform_marc_part(wiring.artifact_store(), run_scope(), settings_from_params(params), part,
                                   bibs["manifest"] if bibs else None)

    def commit_task(entity: str) -> Any:
        @task(task_id=f"commit_{entity}", outlets=[entity_asset("alma", entity)])
        def commit(results: list[dict[str, Any]]) -> dict[str, Any]:
            from aleph2alma import wiring
            from aleph2alma.phases.transform import commit_alma

            return commit_alma(wiring.artifact_store(), run_scope(), entity, results)

        return commit

    the_plan = plan()
    committed_marc = {}
    bib_results = transform_marc.override(task_id="transform_bibs").expand(
        part=parts_of.override(task_id="bibs_parts")(the_plan, "bibs"))
    committed_marc["bibs"] = commit_task("bibs")(bib_results)
    # Holdings follow the bibs: a holdings record whose bib does not exist is not delivered.
    holdings_results = transform_marc.override(task_id="transform_holdings").partial(
        bibs=committed_marc["bibs"]).expand(part=parts_of.override(task_id="holdings_parts")(the_plan, "holdings"))
    committed_marc["holdings"] = commit_task("holdings")(holdings_results)

    @task
    def validate_tables(plan: dict[str, Any], bibs: dict[str, Any], holdings: dict[str, Any]) -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import as_of_date, form_and_rules
        from aleph2alma.phases.validation import validate_tables as run

        params = get_current_context()["params"]
        form, rules = form_and_rules(params["migration_id"])
        return run(wiring.artifact_store(), run_scope(), params["migration_id"], plan["extract_run_id"], form,
                   as_of_date(), rules, bibs["manifest"], holdings["manifest"])

    validated = validate_tables(the_plan, committed_marc["bibs"], committed_marc["holdings"])

    @task(max_active_tis_per_dagrun=4)
    def transform_items(part: dict[str, Any], validated: dict[str, Any], holdings: dict[str, Any]) -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import form_and_rules
        from aleph2alma.phases.transform import transform_items_part

        form, _ = form_and_rules(get_current_context()["params"]["migration_id"])
        return transform_items_part(wiring.artifact_store(), run_scope(), part, form, validated["excluded_key"],
                                    holdings["manifest"])

    item_results = transform_items.partial(validated=validated, holdings=committed_marc["holdings"]).expand(
        part=parts_of.override(task_id="items_parts")(the_plan, "items"))
    committed_items = commit_task("items")(item_results)

    @task
    def bib_parts_to_embed_items_in(bibs: dict[str, Any]) -> list[dict[str, Any]]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import settings_from_params, skip_unless
        from aleph2alma.phases.transform import bib_parts

        settings = settings_from_params(get_current_context()["params"])
        skip_unless(settings.items_in_bib_field or None,
                    "items_in_bib_field is not set in migration.toml: items are delivered as their own file only")
        return bib_parts(wiring.artifact_store(), bibs["manifest"])

    @task(max_active_tis_per_dagrun=4)
    def embed_items(part: dict[str, Any], items: dict[str, Any]) -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import settings_from_params
        from aleph2alma.phases.transform import embed_items_part

        settings = settings_from_params(get_current_context()["params"])
        return embed_items_part(wiring.artifact_store(), run_scope(), settings, part, items["manifest"])

    @task(outlets=[entity_asset("alma", "bibs_with_items")])
    def commit_bibs_with_items(results: list[dict[str, Any]]) -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.phases.transform import commit_bibs_with_items as commit

        return commit(wiring.artifact_store(), run_scope(), results)

    commit_bibs_with_items(embed_items.partial(items=committed_items).expand(
        part=bib_parts_to_embed_items_in(committed_marc["bibs"])))

    @task(outlets=[entity_asset("alma", "patrons")])
    def transform_patrons(plan: dict[str, Any], validated: dict[str, Any]) -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import as_of_date, form_and_rules
        from aleph2alma.phases.transform import transform_patrons as run

        params = get_current_context()["params"]
        form, _ = form_and_rules(params["migration_id"])
        return run(wiring.artifact_store(), run_scope(), params["migration_id"], plan["extract_run_id"], form,
                   validated["excluded_key"], bool(params["scrub_emails"]), as_of_date())

    @task(outlets=[entity_asset("alma", e) for e in ("loans", "requests", "fines")])
    def transform_fulfillment(plan: dict[str, Any], validated: dict[str, Any], items: dict[str, Any]) -> list[dict]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import form_and_rules
        from aleph2alma.phases.transform import transform_fulfillment as run

        params = get_current_context()["params"]
        form, _ = form_and_rules(params["migration_id"])
        return run(wiring.artifact_store(), run_scope(), params["migration_id"], plan["extract_run_id"], form,
                   validated["excluded_key"], items["manifest"])

    @task(outlets=[entity_asset("alma", "p2e")])
    def p2e(bibs: dict[str, Any], holdings: dict[str, Any]) -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import form_and_rules
        from aleph2alma.phases.validation import write_p2e

        form, _ = form_and_rules(get_current_context()["params"]["migration_id"])
        return write_p2e(wiring.artifact_store(), run_scope(), form, bibs["manifest"], holdings["manifest"])

    patrons = transform_patrons(the_plan, validated)
    fulfillment = transform_fulfillment(the_plan, validated, committed_items)
    p2e_file = p2e(committed_marc["bibs"], committed_marc["holdings"])

    @task
    def report(bibs: dict, holdings: dict, items: dict, patrons: dict, fulfillment: list[dict],
               validated: dict, p2e_file: dict, plan: dict) -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import as_of_date, form_and_rules
        from aleph2alma.phases.extraction import write_run_summary
        from aleph2alma.phases.validation import write_report

        params = get_current_context()["params"]
        _, rules = form_and_rules(params["migration_id"])
        scope, store = run_scope(), wiring.artifact_store()
        stages = [bibs, holdings, items, patrons, *fulfillment, p2e_file]
        run = {"migration_id": scope.migration_id, "dag_id": scope.dag_id, "run_id": scope.run_id,
               "as_of": as_of_date().isoformat(), "extract_run_id": plan["extract_run_id"]}
        result = write_report(store, scope, run, stages, [bibs["manifest"], holdings["manifest"],
                                                          validated["manifest"]], rules)
        write_run_summary(store, scope, [*stages, validated], extra={"validation": result})
        return result

    @task  # AirflowFailException: a breach fails at once, without retries
    def delivery_gate(report: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from aleph2alma.phases.validation import DeliveryBlocked, gate

        try:
            gate(report)
        except DeliveryBlocked as exc:
            raise AirflowFailException(str(exc)) from exc
        return report

    delivery_gate(report(committed_marc["bibs"], committed_marc["holdings"], committed_items, patrons,
                         fulfillment, validated, p2e_file, the_plan))


migration_transform()
