"""The validation report, twice: JSON for machines, one self-contained HTML page for people;
plus one TSV worklist per rule for the librarians who fix the records in Aleph.

``build_report`` reads the issues as a stream: it keeps per-rule counts and the first
``samples`` issues of each rule, never the whole list, so it runs in constant memory
whatever the size of the library. ``write_worklists`` sorts by record id with bounded
memory (sorted runs spilled to disk, then merged).

Patron privacy: issues carry patron ids (Z303 keys, primary ids in details), never names
or addresses, and nothing here adds any.
"""

from __future__ import annotations

import heapq
import json
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aleph2alma.reporting import (
    GREEN,
    RED,
    SEVERITY_COLOURS,
    Bar,
    Chart,
    Segment,
    bar_chart,
    neutralise,
    render,
    run_info,
)
from aleph2alma.validate.issues import Issue, Severity
from aleph2alma.validate.rules import Breach, Rule, Rules, evaluate, percent_of

REPORT_SCHEMA = "aleph2alma.validation-report/1"
DEFAULT_SAMPLES = 10
WORKLIST_COLUMNS = ("record_id", "entity", "severity", "detail")


@dataclass
class EntityCounts:
    """Records of one entity through a stage: ``records_in == records_out + rejected`` must hold."""

    entity: str
    records_in: int
    records_out: int
    rejected: int
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.records_in == self.records_out + self.rejected

    def to_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "records_in": self.records_in,
            "records_out": self.records_out,
            "rejected": self.rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "balanced": self.balanced,
        }


@dataclass
class RuleResult:
    """What one rule found in this run."""

    rule: Rule
    count: int
    total: int
    breached: bool
    blocking: bool
    samples: list[Issue]
    by_entity: dict[str, int] = field(default_factory=dict)

    @property
    def percent(self) -> float:
        return percent_of(self.count, self.total)

    def to_dict(self) -> dict[str, Any]:
        return {
            "entity": self.rule.entity,
            "severity": str(self.rule.severity),
            "rejects_record": self.rule.rejects_record,
            "count": self.count,
            "by_entity": dict(sorted(self.by_entity.items())),
            "percent": round(self.percent, 4),
            "threshold": self.rule.threshold.to_dict(),
            "breached": self.breached,
            "blocking": self.blocking,
            "description": self.rule.description,
            "samples": [{"record_id": s.record_id, "detail": s.detail} for s in self.samples],
        }


@dataclass
class ValidationReport:
    run: dict[str, str]
    entities: list[EntityCounts]
    rules: list[RuleResult]
    breaches: list[Breach]

    @property
    def blocking(self) -> list[Breach]:
        return [b for b in self.breaches if b.blocking]

    @property
    def status(self) -> str:
        """``BLOCKED`` when a FIX rule passed its threshold, else ``PASS``."""
        return "BLOCKED" if self.blocking else "PASS"

    @property
    def issues_by_severity(self) -> dict[str, int]:
        out = {str(s): 0 for s in Severity}
        for r in self.rules:
            out[str(r.rule.severity)] += r.count
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "run": self.run,
            "status": self.status,
            "blocking_rules": [b.rule for b in self.blocking],
            "breaches": [
                {
                    "rule": b.rule,
                    "severity": str(b.severity),
                    "count": b.count,
                    "total": b.total,
                    "percent": round(b.percent, 4),
                    "blocking": b.blocking,
                    "message": b.describe(),
                }
                for b in self.breaches
            ],
            "issues_by_severity": self.issues_by_severity,
            "entities": [e.to_dict() for e in self.entities],
            "rules": {r.rule.id: r.to_dict() for r in self.rules},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_html(self) -> str:
        hit = [r for r in self.rules if r.count]
        return render(
            "validation.html.j2",
            report=self,
            hit=hit,
            clean=[r for r in self.rules if not r.count],
            entity_chart=_entity_chart(self.entities),
            rule_chart=_rule_chart(hit),
        )


def build_report(
    run: Mapping[str, Any],
    entities: list[EntityCounts],
    issues: Iterable[Issue],
    rules: Rules,
    breaches: list[Breach] | None = None,
    samples: int = DEFAULT_SAMPLES,
) -> ValidationReport:
    """Count ``issues`` (a stream) per rule, keep the first ``samples`` of each, and judge the run.

    ``run`` names the run (``migration_id``, ``dag_id``, ``run_id``, ``as_of``); the rules'
    percentages are of each entity's ``records_in``. ``breaches`` defaults to
    ``rules.evaluate`` over these counts. Raises ``ValueError`` for an issue of a rule
    that is not in ``rules``.
    """
    counts: Counter[str] = Counter()
    by_entity: Counter[tuple[str, str]] = Counter()
    kept: dict[str, list[Issue]] = {rule_id: [] for rule_id in rules}
    for issue in issues:
        if issue.rule not in kept:
            raise ValueError(
                f"issue of unknown rule {issue.rule!r} (record {issue.record_id}); "
                f"known rule ids: {', '.join(rules)}"
            )
        counts[issue.rule] += 1
        by_entity[issue.rule, issue.entity] += 1
        if len(kept[issue.rule]) < samples:
            kept[issue.rule].append(issue)
    totals = {e.entity: e.records_in for e in entities}
    if breaches is None:
        breaches = evaluate(
            counts, {entity: totals.get(entity, 0) for r in rules.values() for entity in r.entities}, rules
        )
    by_rule = {b.rule: b for b in breaches}
    results = [
        RuleResult(
            rule,
            counts[rule.id],
            rule.total(totals),
            rule.id in by_rule,
            by_rule[rule.id].blocking if rule.id in by_rule else False,
            kept[rule.id],
            {e: n for (r, e), n in by_entity.items() if r == rule.id},
        )
        for rule in rules.values()
    ]
    return ValidationReport(run_info(run), list(entities), results, list(breaches))


# --- charts -------------------------------------------------------------------------------


def _entity_chart(entities: list[EntityCounts]) -> Chart:
    """A bar per entity: delivered, then rejected."""
    return bar_chart(
        [
            Bar(
                e.entity,
                [
                    Segment(e.records_out, GREEN, f"{e.records_out:,} delivered"),
                    Segment(e.rejected, RED, f"{e.rejected:,} rejected"),
                ],
                f"{e.records_in:,} in · {e.rejected:,} rejected",
            )
            for e in entities
        ],
        title="Records per entity",
        legend=[("delivered", GREEN), ("rejected", RED)],
    )


def _rule_chart(hit: list[RuleResult]) -> Chart:
    """A bar per rule hit, coloured by severity."""
    return bar_chart(
        [
            Bar(
                r.rule.id,
                [Segment(r.count, SEVERITY_COLOURS[r.rule.severity], str(r.rule.severity))],
                f"{r.count:,} ({r.percent:.2f}%)",
            )
            for r in hit
        ],
        title="Issues per rule",
        legend=[(str(s), SEVERITY_COLOURS[s]) for s in Severity],
    )


# --- worklists ------------------------------------------------------------------------------

WORKLIST_SORT_BUFFER = 200_000
"""Issues held in memory before a sorted run is spilled to disk."""

_Row = tuple[str, str, str, str]  # record_id, entity, severity, detail


def _clean(value: str) -> str:
    """One TSV cell: tabs and line breaks become blanks, and a cell that a spreadsheet would
    run as a formula (``=``, ``+``, ``-``, ``@`` …) is neutralised (``reporting.neutralise``)."""
    return neutralise(value.replace("\t", " ").replace("\r", " ").replace("\n", " "))


def _tsv(row: _Row) -> str:
    return "\t".join(_clean(v) for v in row) + "\n"


def _read_run(path: Path) -> Iterator[_Row]:
    with open(path, encoding="utf-8", newline="\n") as fh:
        for line in fh:
            record_id, entity, severity, detail = line.rstrip("\n").split("\t", 3)
            yield record_id, entity, severity, detail


def write_worklists(
    issues: Iterable[Issue], rules: Rules, out_dir: Path, buffer_rows: int = WORKLIST_SORT_BUFFER
) -> dict[str, Path]:
    """One TSV per rule with issues, ``<out_dir>/<rule_id>.tsv``, sorted by record id.

    Columns ``record_id, entity, severity, detail`` with a header row; tabs and line breaks
    in details become blanks, and cells a spreadsheet would run as formulas are neutralised.
    Memory is bounded by ``buffer_rows``: beyond it, sorted runs go to a temporary folder in
    ``out_dir`` and are merged at the end. Returns rule id → path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    buffers: dict[str, list[_Row]] = {}
    runs: dict[str, list[Path]] = {}
    buffered = 0
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".worklist-runs-") as tmp:

        def spill() -> None:
            for rule_id, rows in buffers.items():
                path = Path(tmp) / f"{rule_id}-{len(runs.get(rule_id, [])):05d}.tsv"
                rows.sort()
                with open(path, "w", encoding="utf-8", newline="\n") as fh:
                    fh.writelines(_tsv(row) for row in rows)
                runs.setdefault(rule_id, []).append(path)
            buffers.clear()

        for issue in issues:
            rule = rules.get(issue.rule)
            if rule is None:
                raise ValueError(f"issue of unknown rule {issue.rule!r}; known rule ids: {', '.join(rules)}")
            row = (_clean(issue.record_id), _clean(issue.entity), str(rule.severity), _clean(issue.detail))
            buffers.setdefault(issue.rule, []).append(row)
            buffered += 1
            if buffered >= buffer_rows:
                spill()
                buffered = 0

        written: dict[str, Path] = {}
        for rule_id in rules:
            if rule_id not in buffers and rule_id not in runs:
                continue
            in_memory = sorted(buffers.pop(rule_id, []))
            sources: list[Iterable[_Row]] = [_read_run(p) for p in runs.get(rule_id, [])] + [in_memory]
            path = out_dir / f"{rule_id}.tsv"
            with open(path, "w", encoding="utf-8", newline="\n") as fh:
                _write_sorted(fh, heapq.merge(*sources))
            written[rule_id] = path
    return written


def _write_sorted(fh: IO[str], rows: Iterable[_Row]) -> None:
    fh.write("\t".join(WORKLIST_COLUMNS) + "\n")
    fh.writelines(_tsv(row) for row in rows)
