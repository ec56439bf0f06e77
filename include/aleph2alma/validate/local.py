"""Validation of an Aleph library on local files, outside Airflow (``aleph2alma validate``).

Reads ALEPHSEQ exports and the Z-tables of a database (the demo replica or a real Aleph),
runs the same record-level and cross-record rules as the transform DAG, and writes the
same report and worklists to a local folder.
"""

from __future__ import annotations

import io
import tempfile
from collections import Counter
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aleph2alma.aleph.alephseq import read_alephseq
from aleph2alma.aleph.extract import PartSpec, extract_table_part
from aleph2alma.aleph.ztables import Z_TABLES
from aleph2alma.marc import bibs, holdings
from aleph2alma.rejects import RejectLog
from aleph2alma.settings import MigrationSettings
from aleph2alma.validate.checks import NEEDED_COLUMNS, TableInputs, check_tables, rejected_ids
from aleph2alma.validate.issues import Issue
from aleph2alma.validate.report import EntityCounts, ValidationReport, build_report, write_worklists

TABLE_ENTITIES = {"Z30": "items", "Z303": "patrons", "Z36": "loans", "Z37": "requests", "Z31": "fines"}


def _marc_issues(settings: MigrationSettings, seq_dir: Path) -> tuple[list[Issue], list[EntityCounts], pa.Table, pa.Table]:
    issues: list[Issue] = []
    counts: list[EntityCounts] = []
    bib_rows: list[dict] = []
    hol_rows: list[dict] = []

    bib_stats: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    for lib in settings.bib_libraries:
        log = RejectLog()
        sink = _IssueCollector(issues)
        stats = bibs.transform_bibs(read_alephseq(seq_dir / lib.file), bibs.BibOptions(lib.code, lib.flavour, qualified_ids=settings.qualified_bib_ids),
                                    io.BytesIO(), log, sink, index=bib_rows)  # type: ignore[arg-type]
        bib_stats.update({"in": stats.records_in, "out": stats.records_out, "rejected": stats.rejected})
        by_reason.update(log.counts)
    counts.append(EntityCounts("bibs", bib_stats["in"], bib_stats["out"], bib_stats["rejected"], dict(by_reason)))
    log = RejectLog()
    hstats = holdings.transform_holdings(read_alephseq(seq_dir / settings.hol_file, entity="holdings"),
                                         holdings.HoldingsOptions(settings.hol_library, qualified_bib_ids=settings.qualified_bib_ids), io.BytesIO(), log,
                                         index=hol_rows, issues=_IssueCollector(issues))  # type: ignore[arg-type]
    counts.append(EntityCounts("holdings", hstats.records_in, hstats.records_out, hstats.rejected, dict(log.counts)))
    return (issues, counts, pa.Table.from_pylist(bib_rows, schema=bibs.BIB_INDEX_SCHEMA),
            pa.Table.from_pylist(hol_rows, schema=holdings.HOLDINGS_INDEX_SCHEMA))


class _IssueCollector:
    """IssueLog's interface, collecting into a list (local runs are small enough)."""

    def __init__(self, into: list[Issue]) -> None:
        self.into = into
        self.counts: Counter[str] = Counter()

    def add(self, issue: Issue) -> None:
        self.counts[issue.rule] += 1
        self.into.append(issue)

    def extend(self, issues: Any) -> None:
        for issue in issues:
            self.add(issue)


def _tables(engine: Any, settings: MigrationSettings, tmp: Path) -> dict[str, pa.Table]:
    out = {}
    one_part = replace(settings, part_rows=10**12)
    for name in NEEDED_COLUMNS:
        path = tmp / f"{name}.parquet"
        extract_table_part(engine, one_part, PartSpec(Z_TABLES[name].entity, name, 0, "table"), path)
        out[name] = pq.read_table(path, columns=list(NEEDED_COLUMNS[name]))
    return out


def validate_library(seq_dir: Path, engine: Any, settings: MigrationSettings, form: Any, rules: Any,
                     as_of: date, out_dir: Path) -> ValidationReport:
    issues, counts, bib_index, hol_index = _marc_issues(settings, seq_dir)
    with tempfile.TemporaryDirectory() as tmp:
        t = _tables(engine, settings, Path(tmp))
    inputs = TableInputs(z30=t["Z30"], z303=t["Z303"], z305=t["Z305"], z36=t["Z36"], z37=t["Z37"], z31=t["Z31"],
                         bib_index=bib_index, holdings_index=hol_index)
    table_issues = list(check_tables(inputs, form, as_of, rules))
    excluded = rejected_ids(table_issues, rules)
    for name, entity in TABLE_ENTITIES.items():
        rows = t[name].num_rows
        gone = excluded.get(entity, {})
        counts.append(EntityCounts(entity, rows, rows - len(gone), len(gone), dict(Counter(gone.values()))))
    issues += table_issues
    run = {"migration_id": settings.migration_id, "dag_id": "aleph2alma validate", "run_id": "local",
           "as_of": as_of.isoformat()}
    report = build_report(run, counts, issues, rules)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.html").write_text(report.to_html(), encoding="utf-8")
    (out_dir / "report.json").write_text(report.to_json(), encoding="utf-8")
    write_worklists(issues, rules, out_dir / "worklists")
    return report
