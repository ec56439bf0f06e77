"""What a fix-cycle iteration changed: per rule, the records fixed, newly found and still open.

Each iteration of the fix cycle validates a new extract (fixed in Aleph, or through
``fixes.toml``). ``diff_iterations`` compares the issues of iteration N-1 with those of
iteration N, record by record: an issue is identified by ``(rule, record_id)`` (record ids
carry their library where that matters, e.g. ``BNU01:000000123``), so several issues of one
rule on one record count once, as one record.

- **fixed**: in N-1, not in N;
- **new**: in N, not in N-1 (a regression, or a record added to Aleph since);
- **still open**: in both.

Both streams are read once. Memory: the previous iteration is held as one set of record
ids per rule, the current one as a dict of id → (entity, first detail) per rule. At BNU
scale an iteration has at most a few hundred thousand issues (the defect rates of
``demo.defects`` over 4.8M items, 1.6M bibs and ~100k patrons give ~60k), i.e. tens of
MB: sets are fine and simpler than an external sort.

Output, twice (STYLE.md 11): ``to_json`` and ``to_html`` (one self-contained page), plus
``write_worklists``: one TSV per rule with its new and still-open records, for the
librarians who fix them in Aleph.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aleph2alma.reporting import GREEN, GREY, RED, Bar, Chart, Segment, bar_chart, neutralise, render
from aleph2alma.validate.issues import Issue
from aleph2alma.validate.rules import Rules

REPORT_SCHEMA = "aleph2alma.iteration-diff/1"
UNKNOWN_SEVERITY = "UNKNOWN"
"""Severity shown for a rule that is not in the registry (renamed or removed between iterations)."""
WORKLIST_COLUMNS = ("record_id", "entity", "severity", "status", "detail")
HTML_SAMPLES = 10


@dataclass
class RuleDiff:
    """One rule between two iterations; the id lists are sorted."""

    rule: str
    severity: str
    fixed: int
    new: int
    still_open: int
    fixed_ids: list[str] = field(default_factory=list)
    new_ids: list[str] = field(default_factory=list)
    open_ids: list[str] = field(default_factory=list)
    entity: str = ""
    description: str = ""

    @property
    def previous(self) -> int:
        return self.fixed + self.still_open

    @property
    def current(self) -> int:
        return self.new + self.still_open

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "entity": self.entity,
            "previous": self.previous,
            "current": self.current,
            "fixed": self.fixed,
            "new": self.new,
            "still_open": self.still_open,
            "fixed_ids": self.fixed_ids,
            "new_ids": self.new_ids,
            "open_ids": self.open_ids,
        }


@dataclass
class IterationDiff:
    previous_label: str
    current_label: str
    rules: list[RuleDiff]
    """Rules with issues in either iteration: registry order, then unknown rules by id."""
    _current: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict, repr=False)

    @property
    def totals(self) -> dict[str, int]:
        return {
            k: sum(getattr(r, k) for r in self.rules)
            for k in ("previous", "current", "fixed", "new", "still_open")
        }

    @property
    def status(self) -> str:
        return "NEW ISSUES" if any(r.new for r in self.rules) else "NO NEW ISSUES"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "previous": self.previous_label,
            "current": self.current_label,
            "status": self.status,
            "totals": self.totals,
            "rules": {r.rule: r.to_dict() for r in self.rules},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_html(self) -> str:
        return render(
            "iteration_diff.html.j2",
            diff=self,
            totals=self.totals,
            chart=_chart(self.rules),
            samples=HTML_SAMPLES,
        )

    def write_worklists(self, out_dir: Path) -> dict[str, Path]:
        """``<out_dir>/<rule>.tsv`` for each rule with new or still-open records: columns
        ``record_id, entity, severity, status, detail`` (new first, then still open, each by
        record id; detail of the current iteration). Returns rule id → path."""
        out_dir.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        for r in self.rules:
            if not r.current:
                continue
            details = self._current.get(r.rule, {})
            path = out_dir / f"{r.rule}.tsv"
            with open(path, "w", encoding="utf-8", newline="\n") as fh:
                fh.write("\t".join(WORKLIST_COLUMNS) + "\n")
                for status, ids in (("new", r.new_ids), ("still_open", r.open_ids)):
                    for record_id in ids:
                        entity, detail = details.get(record_id, (r.entity, ""))
                        fh.write(
                            "\t".join(_clean(v) for v in (record_id, entity, r.severity, status, detail))
                            + "\n"
                        )
            written[r.rule] = path
        return written


def _clean(value: str) -> str:
    """One TSV cell: no tab or line break, and no formula a spreadsheet would run (OWASP CSV injection)."""
    return neutralise(value.replace("\t", " ").replace("\r", " ").replace("\n", " "))


def diff_iterations(
    previous: Iterable[Issue],
    current: Iterable[Issue],
    rules: Rules,
    *,
    labels: tuple[str, str] = ("previous", "current"),
) -> IterationDiff:
    """Compare the issues of two iterations (streams, each read once) rule by rule; see the module docstring.

    Rules not in ``rules`` (renamed or removed between iterations) are kept, with severity
    ``UNKNOWN``, so nothing disappears from the comparison unseen.
    """
    before: dict[str, set[str]] = {}
    for issue in previous:
        before.setdefault(issue.rule, set()).add(issue.record_id)
    after: dict[str, dict[str, tuple[str, str]]] = {}
    for issue in current:
        after.setdefault(issue.rule, {}).setdefault(issue.record_id, (issue.entity, issue.detail))
    seen = set(before) | set(after)
    order = [r for r in rules if r in seen] + sorted(seen - set(rules))
    diffs = []
    for rule_id in order:
        old, now = before.get(rule_id, set()), after.get(rule_id, {})
        fixed = sorted(old.difference(now))
        new = sorted(i for i in now if i not in old)
        still = sorted(i for i in now if i in old)
        rule = rules.get(rule_id)
        diffs.append(
            RuleDiff(
                rule_id,
                str(rule.severity) if rule else UNKNOWN_SEVERITY,
                len(fixed),
                len(new),
                len(still),
                fixed,
                new,
                still,
                rule.entity if rule else "",
                rule.description if rule else "not in the rule registry (renamed or removed?)",
            )
        )
    return IterationDiff(labels[0], labels[1], diffs, after)


# --- the chart ----------------------------------------------------------------------------

COLOURS = {"fixed": GREEN, "still_open": GREY, "new": RED}


def _chart(rules: list[RuleDiff]) -> Chart:
    """One bar per rule: fixed, still open, new (one scale for all rules)."""
    return bar_chart(
        [
            Bar(
                r.rule,
                [
                    Segment(n, COLOURS[kind], f"{n:,} {kind.replace('_', ' ')}")
                    for kind, n in (("fixed", r.fixed), ("still_open", r.still_open), ("new", r.new))
                ],
                f"{r.previous:,} → {r.current:,}",
            )
            for r in rules
        ],
        title="Issues per rule between iterations",
        legend=[(kind.replace("_", " "), colour) for kind, colour in COLOURS.items()],
    )
