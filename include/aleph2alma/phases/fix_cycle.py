"""Steps of a fix-cycle iteration: apply the fix rules, diff against the previous iteration,
keep the baseline.

An iteration reads a committed extract, applies ``include/config/<migration>/fixes.toml``
to the raw Z-tables it touches (the others are referenced, not copied), and commits the
result as its own ``raw/`` stage; ``migration_transform`` then runs on it with the current
migration form. The diff compares the issues of the new transform with the previous
iteration's, rule by rule: fixed, new, still open.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

from aleph2alma.phases.context import PhaseContext
from aleph2alma.refs import FixedExtract, IterationDiff
from aleph2alma.runs import TRANSFORM_DAG, ChildStep, RunRef
from aleph2alma.stages import ALMA, ISSUES
from aleph2alma.state import baseline_transform, extract_to_read
from aleph2alma.validate.issues import Issue, read_issues


def apply_fixes_step(ctx: PhaseContext, extract_run: str) -> FixedExtract:
    """The extract (the one named, else the latest full one) with the fix rules applied, committed
    under this run as ``raw/``."""
    from aleph2alma.fixes.extract import fix_extract

    return fix_extract(ctx, extract_to_read(ctx.store, ctx.migration_id, extract_run))


def _issues_of(ctx: PhaseContext, transform: RunRef) -> Iterator[Issue]:
    scope = ctx.scope_of(transform)
    for stage, entity in ((ALMA, "bibs"), (ALMA, "holdings"), (ISSUES, "tables")):
        for f in ctx.store.stage_manifest(scope, stage, entity).files:
            if f.kind == "issues":
                yield from read_issues(ctx.store.iter_lines(f.key, f.sha256))


def diff_step(ctx: PhaseContext, previous_transform_run: str) -> IterationDiff:
    """Issues fixed, new and still open per rule, this iteration's transform against the previous
    iteration's (the one the operator named, else the signed-off baseline)."""
    from aleph2alma.fixes.diff import diff_iterations

    current = ctx.run.child(ChildStep.TRANSFORM)
    previous = (
        RunRef.parse(previous_transform_run, TRANSFORM_DAG)
        if previous_transform_run
        else baseline_transform(ctx.store, ctx.migration_id)
    )
    before = _issues_of(ctx, previous) if previous else iter(())
    result = diff_iterations(
        before,
        _issues_of(ctx, current),
        ctx.rules,
        labels=(previous.run_id if previous else "(none)", current.run_id),
    )
    prefix = ctx.scope.report_prefix() + "iteration_diff/"
    html = ctx.store.put_bytes(
        prefix + "diff.html", result.to_html().encode("utf-8"), content_type="text/html"
    )
    ctx.store.put_bytes(
        prefix + "diff.json", result.to_json().encode("utf-8"), content_type="application/json"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for path in result.write_worklists(Path(tmp)).values():
            ctx.store.put_file(prefix + f"worklists/{Path(path).name}", path, kind="report")
    return IterationDiff(previous=previous, report_html=ctx.store.uri(html.key), totals=result.totals)
