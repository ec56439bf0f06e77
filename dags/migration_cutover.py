"""
### Cutover: the freezes, the final loads, go / no-go

preflight → **[technical-services freeze in effect?]** → inventory extract → fix rules →
transform (cutover thresholds) → package → deliver (or AutoExtract) → **[cutover environment
accepted?]** → **[fulfillment freeze in effect?]** → final snapshot extract → fix rules →
transform → package → load through the API (or deliver) → changes since the baseline, freeze
violations, reconciliation → **[go live?]** → go-live marker.

1. **preflight**, before anything freezes: a signed-off fix-cycle baseline; every code in use in
   the latest extract mapped by the form as it is now; the baseline's validation passed; the Alma
   libraries and locations the form maps to exist in Alma (its configuration API). A
   failure names each check and what to fix (report under
   `reports/migration_cutover/<run id>/cutover/preflight/`); fix it and *clear* preflight.
2. **technical_services_freeze**: approve once cataloguing, acquisitions and serials have
   stopped in Aleph. **The time you approve is the freeze's start**: records Aleph stamps as
   changed after it are freeze violations.
3. **inventory_extract** → **fix_inventory** (the signed-off fix rules) → **inventory_transform**
   (validation with the cutover thresholds: `rules.cutover.toml` on top of `rules.toml`; a FIX rule
   past its threshold stops here) → **package_inventory** (bibs, holdings, items, P2E) →
   **deliver_inventory** (mode generic) or the **autoextract** steps (mode autoextract).
4. **cutover_environment_accepted**: approve once Ex Libris has loaded the inventory into the
   Alma environment that goes live and you have checked it; paste their statistics workbook's
   `s3://` URI.
5. **fulfillment_freeze**: approve once circulation has stopped in Aleph and the desks record
   loans and returns offline (upload those files to `migration_post_go_live` after go-live).
6. **extract** → **fix_extract** → **transform**: the final snapshot of Aleph (post-go-live reads
   it) → **package_fulfillment** (patrons, loans, requests, fines) → **api_load** (*Fulfillment
   by* = api: patrons, then loans, requests and fees through the Alma API, in the `alma_api`
   pool) or **deliver_fulfillment** (= files, for Ex Libris to load).
7. **changes_since_baseline**: records new, changed and deleted per entity since the signed-off
   baseline's extract, and codes new since (unmapped ones are named).
   **freeze_violations**: bibs, holdings, items and acquisitions records Aleph stamped as changed
   since the technical-services freeze began; more than `[cutover] freeze_violation_threshold`
   (migration.toml, default 0) blocks go-live.
8. **reconcile**: every record of both transforms accounted for in Alma; the freeze windows (each
   freeze gate's approval → its delivery) go into the run summary.
9. **go_no_go**: read the body (reconciliation, changes, violations, windows) and answer.
   *Approve* = Go: **go_live** writes `<migration id>/state/go_live.json` (who, when, which runs);
   `migration_post_go_live` then uses this run as the final one. *Reject* = No-Go: nothing is
   marked live; the run summary records the decision.
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
    extract_run_param,
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
from aleph2alma.runs import CUTOVER_DAG, ChildStep, RunRef
from aleph2alma.settings import AUTOEXTRACT_STEPS

if TYPE_CHECKING:
    from aleph2alma.cutover.changes import ChangesSinceBaseline
    from aleph2alma.cutover.freeze import FreezeViolations
    from aleph2alma.delivery.package import PackageResult
    from aleph2alma.delivery.transfer import Delivered
    from aleph2alma.refs import FixedExtract, Reconciliation

TS_FREEZE_BODY = """\
Approve once the **technical-services freeze** is in effect in Aleph: no cataloguing, no
acquisitions or serials work, no batch job that changes records. Circulation goes on.

**The time you approve is the freeze's start.** Bibs, holdings, items and acquisitions records
that Aleph stamps as changed after it are reported as freeze violations before go / no-go.

{% set pre = ti.xcom_pull(task_ids='preflight') %}
{% set extract = pre.extract.dag_id ~ '/' ~ pre.extract.run_id %}
**Preflight**: READY, {{ pre.checks | length }} checks passed on `{{ extract }}`
— `{{ pre.report_html }}`

After you approve: the inventory extract (bibs, holdings, items, orders, vendors, budgets), the
signed-off fix rules, transform and validation with the cutover thresholds, the package and its
delivery. Reject if the freeze cannot start: nothing is extracted."""

ENVIRONMENT_BODY = """\
Approve once Ex Libris has loaded the inventory into the Alma environment that goes live, and
you have checked it. Paste the s3:// URI of their statistics workbook, if they sent one.

{% set package = ti.xcom_pull(task_ids='package_inventory') %}
{% set delivered = ti.xcom_pull(task_ids='inventory_delivered') %}
**Inventory package** `{{ package.uri }}` — {{ '{:,}'.format(package.bytes) }} bytes,
sha256 `{{ package.sha256 }}`; delivered by {{ delivered.by }} at {{ delivered.at }}.

| member | records |
|---|---|
{% for m in package.members if m.records %}| `{{ m.name }}` | {{ '{:,}'.format(m.records) }} |
{% endfor %}

After you approve, the fulfillment freeze gate opens."""

FULFILLMENT_FREEZE_BODY = """\
Approve once the **fulfillment freeze** is in effect: circulation has stopped in Aleph and the
desks record loans, returns and renewals offline (keep their files: `migration_post_go_live`
applies them to Alma after go-live).

The time you approve starts the fulfillment window: the final snapshot of Aleph (patrons,
loans, requests, fines, with everything else) is extracted, transformed and
{% if params.fulfillment_by == 'api' %}loaded through the Alma API{% else %}delivered as files for
Ex Libris to load{% endif %}."""

GO_NO_GO_BODY = """\
**Approve = Go**: Alma is live; the go-live marker is written and `migration_post_go_live`
takes this run as the final one. **Reject = No-Go**: nothing is marked live; the run summary
records the decision. After a No-Go: fix what the reports below name (in Aleph, the form or the
fix rules), then run `migration_cutover` again (the freezes stay in effect) — or lift the freezes
and plan a new cutover date.

{% set rec = ti.xcom_pull(task_ids='reconcile') %}
{% set changes = ti.xcom_pull(task_ids='changes_since_baseline') %}
{% set frozen = ti.xcom_pull(task_ids='freeze_violations') %}
{% set windows = ti.xcom_pull(task_ids='freeze_windows') %}
**Reconciliation:** {% if rec.all_accounted %}every record accounted for{% else %}**NOT every
record accounted for**{% endif %} — `{{ rec.report_html }}`

| entity | accounted | in Alma (from) |
|---|---|---|
{% for name, e in rec.entities.items() -%}
| {{ name }} | {{ 'yes' if e.accounted else '**no**' }} | {{ e.in_alma }} ({{ e.in_alma_from }}) |
{% endfor %}

**Since the signed-off baseline:** {{ changes.totals.new }} new, {{ changes.totals.changed }} changed,
{{ changes.totals.deleted }} deleted records; {{ changes.new_codes | length }} new code(s),
{{ changes.new_codes | rejectattr('mapped') | list | length }} not mapped — `{{ changes.report_html }}`

**Freeze violations:** {{ frozen.total }} record(s) changed since the technical-services freeze began
({{ frozen.threshold }} allowed){{ ' — **BLOCKS GO-LIVE**: an Approve will be refused' if frozen.blocking }}
— `{{ frozen.report_html }}`

**Freeze windows:** technical services {{ windows.technical_services.seconds }} s,
fulfillment {{ windows.fulfillment.seconds }} s (approval → delivered)."""


@dag(
    dag_id=CUTOVER_DAG,
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    on_failure_callback=dag_failure_alert(),
    doc_md=__doc__,
    tags=["aleph2alma", "cutover"],
    max_active_runs=1,
    user_defined_macros={"AUTOEXTRACT_STEPS": AUTOEXTRACT_STEPS},
    params={
        "migration_id": migration_id_param(),
        "preflight_extract_run_id": extract_run_param(),
        "delivery_targets": delivery_targets_param(),
        "fulfillment_by": Param(
            "api",
            type="string",
            enum=["api", "files"],
            title="Fulfillment by",
            description="api: patrons' loans, requests and fees through the Alma API after the "
            "fulfillment freeze. files: the fulfillment package delivered for Ex Libris to load.",
        ),
        "as_of": as_of_param(),
        "sample_size": sample_size_param(),
    },
)
def migration_cutover() -> None:
    @task
    def preflight() -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import text_param
        from aleph2alma.phases.cutover import preflight_step

        with wiring.alma_client() as alma:
            result = preflight_step(phase_context(), text_param("preflight_extract_run_id"), alma)
        return result.model_dump(mode="json")

    technical_services_freeze = ApprovalGate(
        task_id="technical_services_freeze",
        subject="Technical-services freeze in effect?",
        body=TS_FREEZE_BODY,
    )

    def transform_of(task_id: str, step: ChildStep, extract: ChildStep) -> Any:
        return run_phase(
            task_id,
            step,
            conf={
                "migration_id": "{{ params.migration_id }}",
                "extract_run_id": RunRef.fixed_template(CUTOVER_DAG, extract),
                "as_of": "{{ params.as_of or '' }}",
                "scrub_emails": False,  # the real addresses go live
                "thresholds": "cutover",
            },
        )

    @task(execution_timeout=LONG_TASK_TIMEOUT)
    def fix_rules(extract: str) -> FixedExtract:
        from aleph2alma.phases.cutover import fix_extract_step

        return fix_extract_step(phase_context(), ChildStep(extract))

    @task(execution_timeout=LONG_TASK_TIMEOUT)
    def package(transform: str, which: str) -> PackageResult:
        from aleph2alma.phases.cutover import package_step

        ctx = phase_context()
        return package_step(ctx, ctx.run.child(ChildStep(transform)), which)  # type: ignore[arg-type]

    @task(execution_timeout=LONG_TASK_TIMEOUT)
    def deliver(package: PackageResult, which: str) -> list[Delivered]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import skip_unless
        from aleph2alma.phases.cutover import delivered_elsewhere
        from aleph2alma.phases.test_load import deliver_step

        ctx = phase_context()
        why_not = delivered_elsewhere(ctx, which, params()["fulfillment_by"])  # type: ignore[arg-type]
        skip_unless(not why_not or None, why_not)
        return deliver_step(
            ctx,
            package,
            list_param("delivery_targets"),
            sftp_client=wiring.sftp_client,
            s3_client=wiring.s3_client,
        )

    @task(trigger_rule="none_failed")  # after the delivery that ran, the others skipped
    def delivered(which: str) -> dict[str, str]:
        """The end of a freeze window: what delivered the package, and when."""
        from aleph2alma.phases.cutover import delivered_now

        return delivered_now(phase_context(), which, params()["fulfillment_by"])  # type: ignore[arg-type]

    # --- technical-services freeze: the inventory ---------------------------------------------
    inventory_extract = run_phase(
        "inventory_extract", ChildStep.INVENTORY_EXTRACT, conf={"migration_id": "{{ params.migration_id }}"}
    )
    fix_inventory = fix_rules.override(task_id="fix_inventory")(ChildStep.INVENTORY_EXTRACT.value)
    inventory_transform = transform_of(
        "inventory_transform", ChildStep.INVENTORY_TRANSFORM, ChildStep.INVENTORY_EXTRACT
    )
    inventory_package = package.override(
        task_id="package_inventory", outlets=[entity_asset("package", "inventory")]
    )(ChildStep.INVENTORY_TRANSFORM.value, "inventory")
    inventory_delivery = deliver.override(task_id="deliver_inventory")(inventory_package, "inventory")
    autoextract = autoextract_group()
    inventory_delivered = delivered.override(task_id="inventory_delivered")("inventory")

    cutover_environment_accepted = ApprovalGate(
        task_id="cutover_environment_accepted",
        subject="Cutover environment accepted?",
        body=ENVIRONMENT_BODY,
        params={
            "statistics_workbook_uri": workbook_param(
                "Optional: the s3:// URI of Ex Libris' statistics workbook of the inventory load."
            )
        },
    )
    fulfillment_freeze = ApprovalGate(
        task_id="fulfillment_freeze",
        subject="Fulfillment freeze in effect; offline circulation running?",
        body=FULFILLMENT_FREEZE_BODY,
    )

    # --- fulfillment freeze: the final snapshot ----------------------------------------------
    extract = run_phase("extract", ChildStep.EXTRACT, conf={"migration_id": "{{ params.migration_id }}"})
    fix_extract = fix_rules.override(task_id="fix_extract")(ChildStep.EXTRACT.value)
    transform = transform_of("transform", ChildStep.TRANSFORM, ChildStep.EXTRACT)
    fulfillment_package = package.override(
        task_id="package_fulfillment", outlets=[entity_asset("package", "fulfillment")]
    )(ChildStep.TRANSFORM.value, "fulfillment")
    fulfillment_delivery = deliver.override(task_id="deliver_fulfillment")(fulfillment_package, "fulfillment")

    # the whole pool: one Alma task at a time
    @task(pool=ALMA_POOL, pool_slots=ALMA_POOL_SLOTS, execution_timeout=LONG_TASK_TIMEOUT)
    def api_load(_: PackageResult) -> dict[str, Any]:
        from aleph2alma import wiring
        from aleph2alma.dagkit import skip_unless
        from aleph2alma.phases.cutover import fulfillment_api_load_step

        skip_unless(
            params()["fulfillment_by"] == "api" or None, "Fulfillment by files: delivered for Ex Libris"
        )
        ctx = phase_context()
        with wiring.alma_client() as client:
            return fulfillment_api_load_step(ctx, ctx.run.child(ChildStep.TRANSFORM), client)

    loaded = api_load(fulfillment_package)
    fulfillment_delivered = delivered.override(task_id="fulfillment_delivered")("fulfillment")

    @task(execution_timeout=LONG_TASK_TIMEOUT)
    def changes_since_baseline() -> ChangesSinceBaseline:
        from aleph2alma.phases.cutover import changes_step

        return changes_step(phase_context())

    @task(execution_timeout=LONG_TASK_TIMEOUT)
    def freeze_violations(freeze: Any) -> FreezeViolations:
        from aleph2alma.phases.cutover import freeze_violations_step

        return freeze_violations_step(phase_context(), freeze)

    @task
    def freeze_windows(
        ts: Any, inventory_at: dict[str, str], fulfillment: Any, fulfillment_at: dict[str, str]
    ) -> dict[str, Any]:
        from aleph2alma.phases.cutover import freeze_window

        return {
            "technical_services": freeze_window(ts, inventory_at["at"]),
            "fulfillment": freeze_window(fulfillment, fulfillment_at["at"]),
        }

    @task(pool=ALMA_POOL, pool_slots=ALMA_POOL_SLOTS, trigger_rule="none_failed")  # api_load may be skipped
    def reconcile(
        environment: Any,
        loaded: Any,
        windows: dict[str, Any],
        changes: ChangesSinceBaseline,
        violations: FreezeViolations,
    ) -> Reconciliation:
        from aleph2alma import wiring
        from aleph2alma.reconcile.against_alma import reconcile_step
        from aleph2alma.state import write_run_summary

        ctx = phase_context()
        workbook = str((environment.get("params_input") or {}).get("statistics_workbook_uri") or "").strip()
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
                "freeze_windows": windows,
                "changes_since_baseline": changes.model_dump(mode="json"),
                "freeze_violations": violations.model_dump(mode="json"),
            },
        )
        return result

    go_no_go = ApprovalGate(
        task_id="go_no_go",
        subject="Go live?",
        body=GO_NO_GO_BODY,
        # A No-Go skips go_live only: the decision is recorded and the audit still runs.
        ignore_downstream_trigger_rules=False,
    )

    @task
    def go_live(
        answer: Any, violations: FreezeViolations, reconciliation: Reconciliation, windows: dict[str, Any]
    ) -> dict[str, Any]:
        from aleph2alma.phases.cutover import go_live_step

        return go_live_step(phase_context(), answer, violations, reconciliation, windows)

    @task(trigger_rule="none_failed")  # after go_live, run or skipped by a No-Go
    def decision() -> dict[str, Any]:
        """The go / no-go decision in the run summary, whichever it was."""
        from airflow.sdk import get_current_context

        from aleph2alma.phases.cutover import record_decision

        ti = get_current_context()["ti"]
        return record_decision(
            phase_context(), ti.xcom_pull(task_ids="go_no_go"), ti.xcom_pull(task_ids="go_live")
        )

    @task(trigger_rule="none_failed")  # last; never after a failure
    def audit() -> dict[str, Any]:
        """Every manifest of this run, its four child runs and its two fixed extracts balances; the
        fixed extracts kept what their extract committed, the transforms read them in, and each
        package holds what its transform delivered."""
        from aleph2alma.audit import audit_step

        ctx = phase_context()
        run, children, reads = ctx.run, [], {}
        for extract, transform in (
            (ChildStep.INVENTORY_EXTRACT, ChildStep.INVENTORY_TRANSFORM),
            (ChildStep.EXTRACT, ChildStep.TRANSFORM),
        ):
            children += [run.child(extract), run.fixed(extract), run.child(transform)]
            reads[run.fixed(extract)] = run.child(extract)
            reads[run.child(transform)] = run.fixed(extract)
        audited = audit_step(ctx.store, ctx.scope, children=children, reads=reads)
        return {**audited, "status_report": phase_run_ended(ctx)}

    preflight() >> technical_services_freeze >> inventory_extract >> fix_inventory >> inventory_transform
    inventory_transform >> inventory_package >> autoextract
    [inventory_delivery, autoextract] >> inventory_delivered >> cutover_environment_accepted
    cutover_environment_accepted >> fulfillment_freeze >> extract >> fix_extract >> transform
    transform >> fulfillment_package
    [fulfillment_delivery, loaded] >> fulfillment_delivered
    changes = changes_since_baseline()
    violations = freeze_violations(technical_services_freeze.output)
    extract >> [changes, violations]
    windows = freeze_windows(
        technical_services_freeze.output,
        inventory_delivered,
        fulfillment_freeze.output,
        fulfillment_delivered,
    )
    rec = reconcile(cutover_environment_accepted.output, loaded, windows, changes, violations)
    rec >> go_no_go
    go_live(go_no_go.output, violations, rec, windows) >> decision()
    close_with(audit())


migration_cutover()
