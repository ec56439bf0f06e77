"""Steps of validation: cross-record checks, the P2E file, the report and the delivery gate."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from aleph2alma.errors import PermanentError
from aleph2alma.phases.context import PhaseContext
from aleph2alma.refs import Committed, TableValidation, ValidationOutcome
from aleph2alma.runs import RunRef
from aleph2alma.stages import ISSUES, index_table, rejected_sysnos
from aleph2alma.storage import ArtifactStore
from aleph2alma.validate.issues import Issue, IssueLog, read_issues

ENTITIES = ("bibs", "holdings", "items", "patrons", "loans", "requests", "fines")


class DeliveryBlocked(PermanentError):
    """A FIX rule passed its threshold: the files must not be delivered."""


def validate_tables(
    ctx: PhaseContext, extract: RunRef, bibs: Committed, holdings: Committed
) -> TableValidation:
    """Cross-record rules over the raw Z-tables and the MARC indexes → issues + records to exclude."""
    from aleph2alma.aleph.links import with_bib_rejected
    from aleph2alma.alma.items import HOL_LINK_COLUMNS, HOL_LINK_DICTIONARY
    from aleph2alma.marc.bibs import BIB_INDEX_SCHEMA
    from aleph2alma.marc.holdings import HOLDINGS_INDEX_SCHEMA
    from aleph2alma.validate.checks import TableInputs, check_tables, read_parts, rejected_ids

    store, rules = ctx.store, ctx.rules
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)

        def copies(entity: str, name: str) -> list[Path]:
            manifest = store.stage_manifest(ctx.scope_of(extract), "raw", entity)
            return store.local_copies(manifest.parts(name), tmp / name)

        def table(entity: str, name: str) -> Any:
            # Only the needed columns, code columns dictionary-encoded: the largest task's memory.
            return read_parts(copies(entity, name), name)

        z30_parts = copies("items", "Z30")
        z30 = read_parts(z30_parts, "Z30")
        bib_index = index_table(
            store,
            bibs,
            tmp / "bibs",
            BIB_INDEX_SCHEMA,
            columns=BIB_INDEX_COLUMNS,
            read_dictionary=["library"],
        )
        holdings_links = index_table(
            store,
            holdings,
            tmp / "holdings",
            HOLDINGS_INDEX_SCHEMA,
            columns=HOL_LINK_COLUMNS,
            read_dictionary=HOL_LINK_DICTIONARY,
        )
        _put_hol_links(ctx, holdings_links, z30_parts, tmp)
        adm_links = _adm_links(ctx, extract, z30, tmp)
        inputs = TableInputs(
            z30=z30,
            z303=table("patrons", "Z303"),
            z305=table("patrons", "Z305"),
            z36=table("loans", "Z36"),
            z37=table("requests", "Z37"),
            z31=table("fines", "Z31"),
            bib_index=bib_index,
            holdings_index=holdings_links,
            withheld_holdings=tuple(rejected_sysnos(store, holdings, "bib_rejected")),
            adm_links=adm_links,
        )
        _put_adm_links(ctx, with_bib_rejected(adm_links, bib_index), tmp)
        issues_path = tmp / "tables.jsonl"
        found: list[Issue] = []
        with open(issues_path, "w", encoding="utf-8") as sink:
            log = IssueLog(sink)
            for issue in check_tables(inputs, ctx.form, ctx.as_of, rules):
                log.add(issue)
                if rules[issue.rule].rejects_record:
                    found.append(issue)
        excluded = rejected_ids(found, rules)
        issues_file = store.put_file(
            ctx.scope.prefix(ISSUES, "tables") + "tables.jsonl",
            issues_path,
            records=sum(log.counts.values()),
            source="tables",
            kind="issues",
        )
    excluded_key = ctx.scope.prefix("validate") + "excluded.json"
    store.put_bytes(
        excluded_key, json.dumps(excluded, sort_keys=True).encode("utf-8"), content_type="application/json"
    )
    uri = store.commit(
        ctx.scope, ISSUES, "tables", [issues_file], extra={"by_rule": dict(sorted(log.counts.items()))}
    )
    return TableValidation(
        entity="tables",
        stage=ISSUES,
        manifest=uri,
        records=sum(log.counts.values()),
        excluded_key=excluded_key,
        by_rule=dict(log.counts),
    )


BIB_INDEX_COLUMNS = ["library", "sysno", "rejected"]
"""What the checks and the ADM → BIB links read of the bib index."""


def _put_hol_links(ctx: PhaseContext, links: Any, z30_parts: list[Path], tmp: Path) -> None:
    """Per Z30 part (numbered as the items tasks number them), the holdings links its items name."""
    import pyarrow.parquet as pq

    from aleph2alma.aleph.links import hol_links_key
    from aleph2alma.alma.items import part_hol_links

    for index, part in enumerate(z30_parts):
        holdings = pq.read_table(part, columns=["Z30_HOL_DOC_NUMBER_X"]).column(0)
        own = part_hol_links(links, holdings)
        path = tmp / "hol_links.parquet"
        pq.write_table(own, path)
        ctx.store.put_file(
            hol_links_key(ctx.scope, index), path, records=own.num_rows, source="holdings", kind="index"
        )


def _adm_links(ctx: PhaseContext, extract: RunRef, z30: Any, tmp: Path) -> Any:
    """The ADM → BIB links of the extract's items with no HOL link (none when Z103 was not extracted)."""
    from aleph2alma.aleph.links import ADM_LINKS_SCHEMA, adms_without_holdings, read_adm_bib_links

    adms = adms_without_holdings(z30)
    scope = ctx.scope_of(extract)
    if len(adms) == 0 or not ctx.store.stage_committed(scope, "raw", "links"):
        return ADM_LINKS_SCHEMA.empty_table()
    parts = ctx.store.stage_manifest(scope, "raw", "links").parts("Z103")
    sources = ctx.store.local_copies(parts, tmp / "Z103")
    return read_adm_bib_links(sources, ctx.settings.adm_library, adms)


def _put_adm_links(ctx: PhaseContext, links: Any, tmp: Path) -> None:
    import pyarrow.parquet as pq

    from aleph2alma.aleph.links import adm_links_key

    path = tmp / "adm_links.parquet"
    pq.write_table(links, path)
    ctx.store.put_file(adm_links_key(ctx.scope), path, records=links.num_rows, source="Z103", kind="index")


def write_p2e(ctx: PhaseContext, bibs: Committed, holdings: Committed) -> Committed:
    """The P2E file: bibs that become electronic resources in Alma."""
    from aleph2alma.marc.bibs import BIB_INDEX_SCHEMA
    from aleph2alma.marc.holdings import HOLDINGS_INDEX_SCHEMA
    from aleph2alma.marc.p2e import P2ERule, p2e_lines

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        bib_index = index_table(ctx.store, bibs, tmp / "b", BIB_INDEX_SCHEMA)
        holdings_index = index_table(ctx.store, holdings, tmp / "h", HOLDINGS_INDEX_SCHEMA)
        locations = ctx.form.tabs["locations"]
        electronic = frozenset(
            zip(
                locations.loc[locations["electronic"] == "Y", "aleph_sub_library"],
                locations.loc[locations["electronic"] == "Y", "aleph_collection"],
                strict=True,
            )
        )
        path = tmp / "p2e.txt"
        with open(path, "w", encoding="utf-8") as fh:
            count = 0
            for line in p2e_lines(bib_index, holdings_index, P2ERule(electronic_locations=electronic)):
                fh.write(line + "\n")
                count += 1
        stored = ctx.store.put_file(
            ctx.scope.prefix("alma", "p2e") + "p2e.txt", path, records=count, source="p2e"
        )
    uri = ctx.store.commit(
        ctx.scope, "alma", "p2e", [stored], extra={"records_in": count, "rejected_by_reason": {}}
    )
    return Committed(entity="p2e", stage="alma", manifest=uri, records=count)


def _all_issues(store: ArtifactStore, stages: Iterable[Committed]) -> Iterator[Issue]:
    for stage in stages:
        files = [f for f in store.manifest(stage.manifest).files if f.kind == "issues"]
        for f in files:
            yield from read_issues(store.iter_lines(f.key, f.sha256))


def write_report(
    ctx: PhaseContext, extract: RunRef, committed: list[Committed], issue_stages: list[Committed]
) -> ValidationOutcome:
    """The validation report (HTML + JSON) and one worklist TSV per rule, in the run's reports prefix."""
    from aleph2alma.validate.report import EntityCounts, build_report, write_worklists

    store, rules, scope = ctx.store, ctx.rules, ctx.scope
    entities = []
    for stage in committed:
        if stage.entity not in ENTITIES:
            continue
        manifest = store.manifest(stage.manifest)
        entities.append(
            EntityCounts(
                stage.entity,
                manifest.extra["records_in"],
                manifest.records,
                manifest.rejected,
                dict(manifest.extra.get("rejected_by_reason", {})),
            )
        )
    run = {
        "migration_id": scope.migration_id,
        "dag_id": scope.dag_id,
        "run_id": scope.run_id,
        "as_of": ctx.as_of.isoformat(),
        "extract_run_id": extract.run_id,
    }
    report = build_report(run, entities, _all_issues(store, issue_stages), rules)
    prefix = scope.report_prefix() + "validation/"
    html = store.put_bytes(prefix + "report.html", report.to_html().encode("utf-8"), content_type="text/html")
    store.put_bytes(prefix + "report.json", report.to_json().encode("utf-8"), content_type="application/json")
    with tempfile.TemporaryDirectory() as tmp_dir:
        worklists = write_worklists(_all_issues(store, issue_stages), rules, Path(tmp_dir))
        for rule_id, path in worklists.items():
            store.put_file(prefix + f"worklists/{rule_id}.tsv", path, kind="report")
    return ValidationOutcome(
        status=report.status,
        report_html=store.uri(html.key),
        report_json=store.uri(prefix + "report.json"),
        by_rule={r.rule.id: r.count for r in report.rules if r.count},
        blocking=[b.describe() for b in report.blocking],
        entities=[e.to_dict() for e in entities],
    )


def gate(outcome: ValidationOutcome) -> ValidationOutcome:
    """Stop before delivery when a FIX rule passed its threshold, naming the rules and the report."""
    if outcome.status != "PASS":
        raise DeliveryBlocked(
            "delivery blocked: " + "; ".join(outcome.blocking) + f". Read the report: {outcome.report_html}"
        )
    return outcome
