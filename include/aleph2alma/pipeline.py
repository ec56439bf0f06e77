"""The extract and transform phases, and a nightly delta, run in one process, in the DAGs' order.

The DAGs run these same steps as Airflow tasks (mapped over parts, in parallel); this module
runs them one after another, for the command line (``aleph2alma validate``), the benchmarks
and the tests. Same steps, same rules, same withholding: the counts are the DAG's counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from aleph2alma.aleph.extract import all_entities
from aleph2alma.aleph.landing import Landing
from aleph2alma.phases import delta, extraction, transform, validation
from aleph2alma.phases.context import PhaseContext
from aleph2alma.refs import Committed, DeltaValidation, DeltaWindow, TableValidation, ValidationOutcome
from aleph2alma.runs import RunRef
from aleph2alma.stages import commit_alma
from aleph2alma.state import record_latest


def extract(ctx: PhaseContext, engine: sa.Engine, landing: Landing) -> dict[str, Committed]:
    """A full extract into ``ctx``'s run, recorded as the latest good one."""
    entities = all_entities()
    plan = extraction.plan_extraction(ctx, entities, engine=engine, landing=landing)
    results = [extraction.extract_part(ctx, p, engine=engine, landing=landing) for p in plan]
    committed = {e: extraction.commit_entity(ctx, e, results, plan) for e in entities}
    record_latest(ctx.store, ctx.scope)
    return {e: c for e, c in committed.items() if c is not None}


@dataclass
class Transformed:
    stages: dict[str, Committed]
    validated: TableValidation
    outcome: ValidationOutcome


def transform_and_validate(ctx: PhaseContext, extract_run: RunRef, scrub_emails: bool = True) -> Transformed:
    """Every stage of ``migration_transform`` on ``extract_run``, the report included (not the gate)."""
    source = transform.extract_of(ctx, str(extract_run))
    stages: dict[str, Committed] = {}
    plan = transform.parts_of(ctx, source, "bibs")
    stages["bibs"] = commit_alma(
        ctx, "bibs", [transform.transform_marc_part(ctx, p) for p in plan], planned=plan
    )
    plan = transform.parts_of(ctx, source, "holdings")
    stages["holdings"] = commit_alma(
        ctx, "holdings", [transform.transform_marc_part(ctx, p, stages["bibs"]) for p in plan], planned=plan
    )
    validated = validation.validate_tables(ctx, source, stages["bibs"], stages["holdings"])
    plan = transform.parts_of(ctx, source, "items", "Z30")
    stages["items"] = commit_alma(
        ctx,
        "items",
        [transform.transform_items_part(ctx, p, validated.excluded_key) for p in plan],
        planned=plan,
    )
    if ctx.settings.items_in_bib_field:
        plan = transform.bib_parts(ctx, stages["bibs"])
        stages["bibs_with_items"] = transform.commit_bibs_with_items(
            ctx, [transform.embed_items_part(ctx, p, stages["items"]) for p in plan], planned=plan
        )
    stages["patrons"] = transform.transform_patrons(ctx, source, validated.excluded_key, scrub_emails)
    for stage in transform.transform_fulfillment(ctx, source, validated.excluded_key, stages["items"]):
        stages[stage.entity] = stage
    stages["p2e"] = validation.write_p2e(ctx, stages["bibs"], stages["holdings"])
    reported = [s for e, s in stages.items() if e != "bibs_with_items"]
    outcome = validation.write_report(ctx, source, reported, [stages["bibs"], stages["holdings"], validated])
    return Transformed(stages, validated, outcome)


@dataclass
class Night:
    window: DeltaWindow
    stages: dict[str, Committed]
    validation: DeltaValidation
    summary: str
    night: str | None
    """The night record's URI; None when a later night was already recorded (no advance)."""


def nightly_delta(
    ctx: PhaseContext,
    engine: sa.Engine,
    landing: Landing,
    run_end: datetime,
    *,
    window_from: str = "",
    window_to: str = "",
) -> Night:
    """Every step of ``aleph_nightly_delta`` for the run ``ctx``, the watermark last."""
    window = delta.resolve_window(ctx, window_from, window_to, run_end)
    sources = delta.plan_sources(ctx)
    results = [
        delta.diff_source(
            ctx,
            window,
            s,
            engine=engine if s.kind == "table" else None,
            landing=landing if s.kind == "alephseq" else None,
        )
        for s in sources
    ]
    entities = list(dict.fromkeys(s.entity for s in sources))
    stages = {e: delta.commit_delta(ctx, window, e, results) for e in entities}
    validated = delta.validate_delta(ctx, window, stages.values())
    summary = delta.summarise(ctx, window, stages.values(), validated)
    return Night(
        window, stages, validated, summary, delta.advance_watermark(ctx, window, stages.values(), summary)
    )
