"""Steps of the nightly delta (DAG ``aleph_nightly_delta``), one function per task.

A night compares Aleph as it is now with a *baseline*: the last committed night's
``baseline/`` stage, or the latest full extract's ``raw/`` stage before the first night.
Under its own run it writes, per entity,

- ``delta/<entity>/``: the new and changed records in the raw extract's format (Parquet rows,
  ALEPHSEQ lines), ``changes/`` (every new, changed and deleted key, with its stamps) and a
  manifest written last;
- ``baseline/<entity>/``: every record's hash tonight (and the columns the rules read);
- ``issues/delta/``: what the validation rules say about the delta;

then the report, and — only once all of that is committed — the night record under
``<migration>/state/delta/nights/`` that moves the watermark. A night that fails anywhere
before leaves the watermark where it was; the next night starts there and so covers both
windows. The window is recorded under the run (``window/window.json``) the first time it is
resolved, so a retried or cleared night works on the same window.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from aleph2alma import state
from aleph2alma.accounting import Tally
from aleph2alma.aleph import snapshot
from aleph2alma.aleph.delta import (
    DeltaError,
    SourceLayout,
    first_day,
    layout_of,
    parse_instant,
    seq_records,
    sysno_of,
)
from aleph2alma.aleph.extract import PartSpec, seq_sources
from aleph2alma.aleph.landing import Landing
from aleph2alma.aleph.ztables import Z_TABLES
from aleph2alma.phases.context import PhaseContext
from aleph2alma.refs import Committed, DeltaValidation, DeltaWindow, PartResult
from aleph2alma.runs import RunRef
from aleph2alma.stages import planned_results
from aleph2alma.storage import StoredFile, part_name
from aleph2alma.validate.issues import Issue, IssueLog, read_issues

RAW, DELTA, BASELINE, ISSUES, WINDOW = "raw", "delta", "baseline", "issues", "window"
SEQ_ENTITIES = ("bibs", "holdings")
PATRON_KEY_WIDTH = 12


# --- the window ---------------------------------------------------------------------------


def resolve_window(ctx: PhaseContext, asked_from: str, asked_to: str, run_end: datetime) -> DeltaWindow:
    """The night's window: from the last committed night (or the newest at or before the form's
    *from*; before the first night, the latest full extract) to the form's *to*, else the run's
    data interval end. Resolved once per run and kept under it."""
    store, key = ctx.store, ctx.scope.prefix(WINDOW) + "window.json"
    if store.exists(key):
        return DeltaWindow.model_validate_json(store.get_bytes(key))
    zone = ctx.settings.nightly.time_zone
    start_asked = parse_instant(asked_from, zone, "from")
    end_asked = parse_instant(asked_to, zone, "to")
    run_end = run_end.astimezone(UTC)
    end = end_asked or run_end
    if end > run_end:
        raise DeltaError(
            f"to {end.isoformat()} is after this run's date {run_end.isoformat()}: Aleph can only be "
            "read as it is now; leave 'to' empty or give an earlier time"
        )
    night = state.night_at_or_before(store, ctx.migration_id, start_asked, exclude_run=ctx.scope.run_id)
    if night is None:
        window = DeltaWindow(
            start=None,
            end=end,
            baseline=state.extract_to_read(store, ctx.migration_id),
            time_zone=zone,
            asked_from=start_asked,
        )
    else:
        if end <= night.watermark:
            raise DeltaError(
                f"empty window: to {end.isoformat()} is not after {night.watermark.isoformat()}, the "
                f"watermark of the night it starts from ({night.run})"
            )
        window = DeltaWindow(
            start=night.watermark, end=end, baseline=night.run, time_zone=zone, asked_from=start_asked
        )
    store.put_bytes(key, window.model_dump_json(indent=2).encode("utf-8"), content_type="application/json")
    return window


# --- one source at a time -------------------------------------------------------------------


def plan_sources(ctx: PhaseContext) -> list[PartSpec]:
    """One unit of work per source: each BIB/HOL library's export and each Z-table."""
    specs = [
        PartSpec(entity, library, 0, "alephseq", file)
        for entity in SEQ_ENTITIES
        for library, file in seq_sources(ctx.settings, entity)
    ]
    return specs + [PartSpec(t.entity, t.name, 0, "table") for t in Z_TABLES.values()]


def _previous(ctx: PhaseContext, window: DeltaWindow, layout: SourceLayout, tmp: Path) -> pa.Table:
    """The baseline of one source: the night's stored one, or one built from the extract."""
    store, scope = ctx.store, ctx.scope_of(window.baseline)
    if window.from_extract:
        manifest = store.stage_manifest(scope, RAW, layout.entity)
        raw = store.local_copies(manifest.parts(layout.source), tmp / "raw")
        return snapshot.previous_baseline(layout, raw)
    files = store.stage_manifest(scope, BASELINE, layout.entity).parts(layout.source)
    if not files:  # a source this version reads and the baseline's did not: all of it is new
        return layout.schema().empty_table()
    table: pa.Table = store.read_table(files, tmp / "baseline")
    return table


def diff_source(
    ctx: PhaseContext,
    window: DeltaWindow,
    spec: PartSpec,
    *,
    engine: sa.Engine | None,
    landing: Landing | None,
) -> PartResult:
    """Tonight's state of one source against the baseline: its delta part, changes and baseline."""
    layout = layout_of(spec.entity, spec.source, spec.kind)
    nightly = ctx.settings.nightly
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        previous = _previous(ctx, window, layout, tmp)
        if spec.kind == "table":
            if engine is None:
                raise DeltaError(f"{spec.source}: a Z-table needs the aleph_db connection")
            since = (
                None
                if window.start is None
                else first_day(window.start, window.time_zone, nightly.lookback_days)
            )
            found = snapshot.table_delta(engine, ctx.settings, layout, previous, tmp, since=since)
        else:
            if landing is None:
                raise DeltaError(f"{spec.file}: an ALEPHSEQ export needs the landing location")
            export = landing.fetch(spec.file, tmp / spec.file)
            found = snapshot.seq_delta(export, layout, previous, tmp)
        changes, baseline = tmp / "changes.parquet", tmp / "baseline.parquet"
        pq.write_table(found.changes, changes, compression="zstd")
        pq.write_table(found.baseline, baseline, compression="zstd")
        store, scope = ctx.store, ctx.scope
        ext = "seq" if spec.kind == "alephseq" else "parquet"
        files = [
            store.put_file(
                scope.prefix(DELTA, spec.entity) + part_name(spec.source, 0, ext),
                found.delta_file,
                records=found.delta_records,
                source=spec.source,
            ),
            store.put_file(
                scope.prefix(DELTA, spec.entity) + "changes/" + part_name(spec.source, 0, "parquet"),
                changes,
                records=found.changes.num_rows,
                source=spec.source,
                kind="changes",
            ),
            store.put_file(
                scope.prefix(BASELINE, spec.entity) + part_name(spec.source, 0, "parquet"),
                baseline,
                records=found.baseline.num_rows,
                source=spec.source,
                kind="baseline",
            ),
        ]
    return PartResult(
        entity=spec.entity,
        source=spec.source,
        index=0,
        files=files,
        records_in=found.counts.records,
        extra={**found.counts.to_dict(), "mode": found.mode},
    )


_COUNTED = ("previous", "records", "new", "changed", "deleted")


def commit_delta(
    ctx: PhaseContext, window: DeltaWindow, entity: str, results: Iterable[PartResult | None]
) -> Committed:
    """The entity's ``baseline/`` and ``delta/`` manifests, once every source of it is in.

    A planned source without a result is a ``MissingPartError``; before any manifest is
    written, each source's baseline must hold every record read tonight and its delta file
    the new and changed ones."""
    mine = planned_results(entity, results, [(s.source, 0) for s in plan_sources(ctx) if s.entity == entity])
    for r in mine:
        kept = {kind: sum(f.records for f in r.files if f.kind == kind) for kind in ("baseline", "part")}
        Tally.of(r.records_in, kept["baseline"], {}).check(f"{entity} {r.source} baseline")
        Tally.of(int(r.extra["new"]) + int(r.extra["changed"]), kept["part"], {}).check(
            f"{entity} {r.source} delta"
        )
    counts: dict[str, Any] = {key: sum(int(r.extra[key]) for r in mine) for key in _COUNTED}
    stamped = [r.extra["unstamped"] for r in mine if r.extra["unstamped"] is not None]
    counts["unstamped"] = sum(stamped) if stamped else None
    counts["modes"] = {r.source: r.extra["mode"] for r in sorted(mine, key=lambda r: r.source)}
    store, scope = ctx.store, ctx.scope
    baseline_uri = store.commit(
        scope,
        BASELINE,
        entity,
        [replace(f, kind="part") for r in mine for f in r.files if f.kind == "baseline"],
        extra={
            "watermark": window.end.isoformat(),
            "records_by_source": {r.source: r.extra["records"] for r in mine},
        },
    )
    delta_files = [f for r in mine for f in r.files if f.kind in ("part", "changes")]
    extra = {**counts, "baseline_manifest": baseline_uri}
    uri = store.commit(
        scope,
        DELTA,
        entity,
        delta_files,
        extra={**extra, "window": window.describe(), "by_source": {r.source: r.extra for r in mine}},
    )
    return Committed(
        entity=entity, stage=DELTA, manifest=uri, records=counts["new"] + counts["changed"], extra=extra
    )


# --- validation -----------------------------------------------------------------------------


def _stage_files(
    ctx: PhaseContext, run: RunRef, stage: str, entity: str, source: str, tmp: Path
) -> list[Path]:
    manifest = ctx.store.stage_manifest(ctx.scope_of(run), stage, entity)
    return ctx.store.local_copies(manifest.parts(source), tmp / f"{run.run_id}-{stage}-{source}")


def _seq_keys(ctx: PhaseContext, run: RunRef, stage: str, entity: str, tmp: Path) -> dict[str, list[str]]:
    """Library → system numbers of every record of ``entity`` in a baseline or raw stage."""
    libraries = [library for library, _ in seq_sources(ctx.settings, entity)]
    found: dict[str, list[str]] = {}
    for library in libraries:
        paths = _stage_files(ctx, run, stage, entity, library, tmp)
        if stage == RAW:
            found[library] = [sysno for sysno, _ in seq_records(paths)]
        else:
            found[library] = [
                sysno_of(k) for p in paths for k in pq.read_table(p, columns=["sysno"])["sysno"].to_pylist()
            ]
    return found


def _library_tables(ctx: PhaseContext, run: RunRef, stage: str, tmp: Path) -> Any:
    """The columns the table rules read, of the whole library as a baseline (or extract) holds it."""
    from aleph2alma.validate.checks import TableInputs, read_parts

    def table(entity: str, name: str) -> pa.Table:
        return read_parts(_stage_files(ctx, run, stage, entity, name, tmp), name)

    bibs = _seq_keys(ctx, run, stage, "bibs", tmp)
    holdings = _seq_keys(ctx, run, stage, "holdings", tmp)
    z30 = table("items", "Z30")
    return TableInputs(
        z30=z30,
        z303=table("patrons", "Z303"),
        z305=table("patrons", "Z305"),
        z36=table("loans", "Z36"),
        z37=table("requests", "Z37"),
        z31=table("fines", "Z31"),
        bib_index=pa.table(
            {
                "library": [lib for lib, sysnos in bibs.items() for _ in sysnos],
                "sysno": [s for sysnos in bibs.values() for s in sysnos],
            }
        ),
        holdings_index=pa.table({"sysno": [s for sysnos in holdings.values() for s in sysnos]}),
        adm_links=_adm_links(ctx, run, stage, z30, tmp),
    )


def _adm_links(ctx: PhaseContext, run: RunRef, stage: str, z30: pa.Table, tmp: Path) -> pa.Table:
    """The ADM → BIB links (Z103) of the items with no HOL link; none when Z103 is not in the stage."""
    from aleph2alma.aleph.links import (
        ADM_LINKS_SCHEMA,
        Z103_COLUMNS,
        adms_without_holdings,
        read_adm_bib_links,
    )

    adms = adms_without_holdings(z30)
    if len(adms) == 0 or not ctx.store.stage_committed(ctx.scope_of(run), stage, "links"):
        return ADM_LINKS_SCHEMA.empty_table()
    sources = _stage_files(ctx, run, stage, "links", "Z103", tmp)
    if any(not set(Z103_COLUMNS) <= set(pq.read_schema(p).names) for p in sources):
        return ADM_LINKS_SCHEMA.empty_table()  # a baseline from before Z103's columns were kept
    return read_adm_bib_links(sources, ctx.settings.adm_library, adms)


def _changed_ids(ctx: PhaseContext, committed: dict[str, Committed], tmp: Path) -> dict[str, set[str]]:
    """Entity → ids (as the table rules name records) of the night's new and changed records."""
    ids: dict[str, set[str]] = {}
    for entity in ("items", "patrons", "loans", "requests", "fines"):
        found = ids.setdefault(entity, set())
        for f in ctx.store.manifest(committed[entity].manifest).parts():
            column = "Z308_ID" if f.source == "Z308" else Z_TABLES[f.source].key
            (path,) = ctx.store.local_copies([f], tmp / "ids" / f.source)
            values = pq.read_table(path, columns=[column])[column].to_pylist()
            width = PATRON_KEY_WIDTH if f.source in ("Z304", "Z305") else None
            found.update((v or "")[:width].strip() for v in values)
    return ids


def _marc_issues(ctx: PhaseContext, committed: dict[str, Committed], tmp: Path) -> list[Issue]:
    """The bib and holdings rules over the night's new and changed records, as the transform
    judges them (a holdings record's bib must exist tonight and not be rejected)."""
    from aleph2alma.aleph.alephseq import read_alephseq
    from aleph2alma.marc import bibs, holdings
    from aleph2alma.rejects import RejectLog
    from aleph2alma.validate.attachment import Withheld, attachable_holdings

    settings, store = ctx.settings, ctx.store
    sink = io.StringIO()
    issues, rejects = IssueLog(sink), RejectLog()
    known: dict[tuple[str, str], bool] = {
        (library, sysno): False
        for library, sysnos in _seq_keys(ctx, ctx.run, BASELINE, "bibs", tmp).items()
        for sysno in sysnos
    }
    flavours = {lib.code: lib.flavour for lib in settings.bib_libraries}
    for f in store.manifest(committed["bibs"].manifest).parts():
        (path,) = store.local_copies([f], tmp / "marc" / f.source)
        options = bibs.BibOptions(
            library=f.source, flavour=flavours[f.source], qualified_ids=settings.qualified_bib_ids
        )
        index: list[dict[str, Any]] = []
        with open(tmp / "marc" / "bibs.mrc", "wb") as out:
            records = read_alephseq(path, source_name=Path(f.key).name, entity="bibs")
            bibs.transform_bibs(records, options, out, rejects, issues, index=index)
        known.update({(row["library"], row["sysno"]): bool(row["rejected"]) for row in index})
    for f in store.manifest(committed["holdings"].manifest).parts():
        (path,) = store.local_copies([f], tmp / "marc" / f.source)
        records = read_alephseq(path, source_name=Path(f.key).name, entity="holdings")
        attachable = attachable_holdings(records, f.source, known, rejects, issues, Withheld())
        with open(tmp / "marc" / "holdings.mrc", "wb") as out:
            holdings.transform_holdings(
                attachable,
                holdings.HoldingsOptions(library=f.source, qualified_bib_ids=settings.qualified_bib_ids),
                out,
                rejects,
                issues=issues,
            )
    return read_issues(sink.getvalue().splitlines())


def validate_delta(ctx: PhaseContext, window: DeltaWindow, committed: Iterable[Committed]) -> DeltaValidation:
    """The validation rules over the night: the bib and holdings rules on its new and changed
    records; the table rules on the whole library tonight (the night's records' issues) and
    against the baseline (issues gained and lost)."""
    from aleph2alma.validate.checks import check_tables

    by_entity = {c.entity: c for c in committed}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        in_delta = _marc_issues(ctx, by_entity, tmp)
        changed = _changed_ids(ctx, by_entity, tmp)
        tonight = list(
            check_tables(_library_tables(ctx, ctx.run, BASELINE, tmp), ctx.form, ctx.as_of, ctx.rules)
        )
        before_stage = RAW if window.from_extract else BASELINE
        before_tables = _library_tables(ctx, window.baseline, before_stage, tmp)
        before = list(check_tables(before_tables, ctx.form, ctx.as_of, ctx.rules))
    in_delta += [i for i in tonight if i.record_id in changed.get(i.entity, ())]
    had = {(i.rule, i.entity, i.record_id) for i in before}
    has = {(i.rule, i.entity, i.record_id) for i in tonight}
    new = [i for i in tonight if (i.rule, i.entity, i.record_id) not in had]
    resolved = [i for i in before if (i.rule, i.entity, i.record_id) not in has]
    store, prefix = ctx.store, ctx.scope.prefix(ISSUES, DELTA)
    logs: dict[str, IssueLog] = {}
    files: list[StoredFile] = []
    for name, found in (("in_delta", in_delta), ("new", new), ("resolved", resolved), ("tonight", tonight)):
        sink = io.StringIO()
        logs[name] = IssueLog(sink)
        logs[name].extend(found)
        files.append(
            store.put_bytes(
                f"{prefix}{name}.jsonl",
                sink.getvalue().encode("utf-8"),
                content_type="application/x-ndjson",
                records=len(found),
                source=name,
                kind="issues",
            )
        )
    counts = {name: dict(sorted(log.counts.items())) for name, log in logs.items()}
    uri = store.commit(ctx.scope, ISSUES, DELTA, files, extra={"by_rule": counts})
    return DeltaValidation(
        manifest=uri,
        in_delta=counts["in_delta"],
        new=counts["new"],
        resolved=counts["resolved"],
        totals={rule: counts["tonight"].get(rule, 0) for rule in _table_rules(ctx)},
    )


def _table_rules(ctx: PhaseContext) -> list[str]:
    from aleph2alma.validate.checks import CHECKS

    return [rule for rule in ctx.rules if rule in CHECKS]


# --- the summary and the watermark ------------------------------------------------------------


def summarise(
    ctx: PhaseContext, window: DeltaWindow, committed: Iterable[Committed], validation: DeltaValidation
) -> str:
    """The night's report (HTML + JSON) and ``run_summary.json``; returns the summary's URI."""
    from aleph2alma.validate.delta_report import build_night_report

    stages = list(committed)
    run = {
        "migration_id": ctx.migration_id,
        "dag_id": ctx.scope.dag_id,
        "run_id": ctx.scope.run_id,
        "as_of": ctx.as_of.isoformat(),
    }
    entity_counts = {c.entity: c.extra for c in stages}
    report = build_night_report(
        run,
        window.describe(),
        entity_counts,
        validation.in_delta,
        validation.new,
        validation.resolved,
        validation.totals,
        ctx.rules,
    )
    store, prefix = ctx.store, ctx.scope.report_prefix() + "delta/"
    html = store.put_bytes(prefix + "report.html", report.to_html().encode("utf-8"), content_type="text/html")
    body = report.to_json().encode("utf-8")
    data = store.put_bytes(prefix + "report.json", body, content_type="application/json")
    return state.write_run_summary(
        store,
        ctx.scope,
        stages,
        extra={
            "window": window.describe(),
            "delta": {c.entity: {k: c.extra[k] for k in (*_COUNTED, "unstamped", "modes")} for c in stages},
            "rule_hits": json.loads(body)["rules"],
            "report_html": store.uri(html.key),
            "report_json": store.uri(data.key),
            "issues_manifest": validation.manifest,
        },
    )


def advance_watermark(
    ctx: PhaseContext, window: DeltaWindow, committed: Iterable[Committed], summary: str
) -> str | None:
    """Record the night (the watermark moves to its end), unless a later night is already recorded:
    then this night's delta stays readable under its run, and the watermark stays. Returns the
    night record's URI, or None when the watermark did not move."""
    current = state.watermark(ctx.store, ctx.migration_id)
    if current is not None and window.end <= current:
        return None
    night = state.Night(
        watermark=window.end,
        run=ctx.run,
        window_start=window.start,
        baselines={c.entity: str(c.extra["baseline_manifest"]) for c in committed},
        summary=summary,
    )
    return state.record_night(ctx.store, ctx.migration_id, night)
