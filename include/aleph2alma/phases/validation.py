"""Steps of validation: cross-record checks, the P2E file, the report and the delivery gate."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from aleph2alma.phases.transform import (
    ISSUES,
    download_parts,
    index_table,
    issue_keys,
    raw_manifest,
    rejected_sysnos,
)
from aleph2alma.storage import ArtifactStore, RunScope
from aleph2alma.validate.issues import Issue, IssueLog, read_issues

ENTITIES = ("bibs", "holdings", "items", "patrons", "loans", "requests", "fines")


class DeliveryBlocked(RuntimeError):
    """A FIX rule passed its threshold: the files must not be delivered."""


def validate_tables(store: ArtifactStore, scope: RunScope, migration_id: str, extract_run_id: str, form: Any,
                    as_of: date, rules: Any, bibs_manifest: str, holdings_manifest: str) -> dict[str, Any]:
    """Cross-record rules over the raw Z-tables and the MARC indexes → issues + records to exclude."""
    from aleph2alma.marc.bibs import BIB_INDEX_SCHEMA
    from aleph2alma.marc.holdings import HOLDINGS_INDEX_SCHEMA
    from aleph2alma.validate.checks import TableInputs, check_tables, read_parts, rejected_ids

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)

        def table(entity: str, name: str) -> Any:
            # Only the needed columns, code columns dictionary-encoded: the largest task's memory.
            manifest = raw_manifest(store, migration_id, extract_run_id, entity)
            (tmp / name).mkdir()
            return read_parts(download_parts(store, manifest, name, tmp / name), name)

        inputs = TableInputs(
            z30=table("items", "Z30"), z303=table("patrons", "Z303"), z305=table("patrons", "Z305"),
            z36=table("loans", "Z36"), z37=table("requests", "Z37"), z31=table("fines", "Z31"),
            bib_index=index_table(store, bibs_manifest, tmp / "bibs", BIB_INDEX_SCHEMA),
            holdings_index=index_table(store, holdings_manifest, tmp / "holdings", HOLDINGS_INDEX_SCHEMA),
            withheld_holdings=tuple(rejected_sysnos(store, holdings_manifest, "bib_rejected")),
        )
        issues_path = tmp / "tables.jsonl"
        found: list[Issue] = []
        with open(issues_path, "w", encoding="utf-8") as sink:
            log = IssueLog(sink)
            for issue in check_tables(inputs, form, as_of, rules):
                log.add(issue)
                if rules[issue.rule].rejects_record:
                    found.append(issue)
        excluded = rejected_ids(found, rules)
        issues_file = store.put_file(scope.prefix(ISSUES, "tables") + "tables.jsonl", issues_path,
                                     records=sum(log.counts.values()), source="tables", kind="issues")
    excluded_key = scope.prefix("validate") + "excluded.json"
    store.put_bytes(excluded_key, json.dumps(excluded, sort_keys=True).encode("utf-8"),
                    content_type="application/json")
    uri = store.commit(scope, ISSUES, "tables", [issues_file], extra={"by_rule": dict(sorted(log.counts.items()))})
    return {"entity": "tables", "stage": ISSUES, "manifest": uri, "records": sum(log.counts.values()),
            "excluded_key": excluded_key, "by_rule": dict(log.counts)}


def write_p2e(store: ArtifactStore, scope: RunScope, form: Any, bibs_manifest: str,
              holdings_manifest: str) -> dict[str, Any]:
    """The P2E file: bibs that become electronic resources in Alma."""
    from aleph2alma.marc.bibs import BIB_INDEX_SCHEMA
    from aleph2alma.marc.holdings import HOLDINGS_INDEX_SCHEMA
    from aleph2alma.marc.p2e import P2ERule, p2e_lines

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        bib_index = index_table(store, bibs_manifest, tmp / "b", BIB_INDEX_SCHEMA)
        holdings_index = index_table(store, holdings_manifest, tmp / "h", HOLDINGS_INDEX_SCHEMA)
        locations = form.tabs["locations"]
        electronic = frozenset(zip(locations.loc[locations["electronic"] == "Y", "aleph_sub_library"],
                                   locations.loc[locations["electronic"] == "Y", "aleph_collection"], strict=True))
        path = tmp / "p2e.txt"
        with open(path, "w", encoding="utf-8") as fh:
            count = 0
            for line in p2e_lines(bib_index, holdings_index, P2ERule(electronic_locations=electronic)):
                fh.write(line + "\n")
                count += 1
        stored = store.put_file(scope.prefix("alma", "p2e") + "p2e.txt", path, records=count, source="p2e")
    uri = store.commit(scope, "alma", "p2e", [stored], extra={"records_in": count, "rejected_by_reason": {}})
    return {"entity": "p2e", "stage": "alma", "manifest": uri, "records": count}


def _all_issues(store: ArtifactStore, keys: Iterable[str]) -> Iterator[Issue]:
    for key in keys:
        yield from read_issues(store.iter_lines(key))


def write_report(store: ArtifactStore, scope: RunScope, run: dict[str, Any], committed: list[dict[str, Any]],
                 issue_manifests: list[str], rules: Any) -> dict[str, Any]:
    """The validation report (HTML + JSON) and one worklist TSV per rule, in the run's reports prefix."""
    from aleph2alma.validate.report import EntityCounts, build_report, write_worklists

    entities = []
    for stage in committed:
        if stage["entity"] not in ENTITIES:
            continue
        manifest = store.manifest(stage["manifest"])
        entities.append(EntityCounts(stage["entity"], manifest.extra["records_in"], manifest.records,
                                     manifest.rejected, dict(manifest.extra.get("rejected_by_reason", {}))))
    keys = issue_keys(store, issue_manifests)
    report = build_report(run, entities, _all_issues(store, keys), rules)
    prefix = scope.report_prefix() + "validation/"
    html = store.put_bytes(prefix + "report.html", report.to_html().encode("utf-8"), content_type="text/html")
    store.put_bytes(prefix + "report.json", report.to_json().encode("utf-8"), content_type="application/json")
    with tempfile.TemporaryDirectory() as tmp_dir:
        worklists = write_worklists(_all_issues(store, keys), rules, Path(tmp_dir))
        for rule_id, path in worklists.items():
            store.put_file(prefix + f"worklists/{rule_id}.tsv", path, kind="report")
    by_rule = {r.rule.id: r.count for r in report.rules if r.count}
    return {"status": report.status, "report_html": store.uri(html.key), "report_json": store.uri(prefix + "report.json"),
            "by_rule": by_rule, "blocking": [b.describe() for b in report.blocking],
            "entities": [e.to_dict() for e in entities]}


def gate(report: dict[str, Any]) -> None:
    """Stop before delivery when a FIX rule passed its threshold, naming the rules and the report."""
    if report["status"] != "PASS":
        raise DeliveryBlocked("delivery blocked: " + "; ".join(report["blocking"]) +
                              f". Read the report: {report['report_html']}")
