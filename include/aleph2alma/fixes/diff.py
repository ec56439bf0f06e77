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

from aleph2alma.validate.issues import Issue
from aleph2alma.validate.rules import Rules

REPORT_SCHEMA = "aleph2alma.iteration-diff/1"
UNKNOWN_SEVERITY = "UNKNOWN"
"""Severity shown for a rule that is not in the registry (renamed or removed between iterations)."""
WORKLIST_COLUMNS = ("record_id", "entity", "severity", "status", "detail")
HTML_SAMPLES = 10
SEVERITY_COLOURS = {"FIX": "#c62828", "REVIEW": "#ef8f00", "INFO": "#1565c0", UNKNOWN_SEVERITY: "#757575"}


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
        return {"rule": self.rule, "severity": self.severity, "entity": self.entity, "previous": self.previous,
                "current": self.current, "fixed": self.fixed, "new": self.new, "still_open": self.still_open,
                "fixed_ids": self.fixed_ids, "new_ids": self.new_ids, "open_ids": self.open_ids}


@dataclass
class IterationDiff:
    previous_label: str
    current_label: str
    rules: list[RuleDiff]
    """Rules with issues in either iteration: registry order, then unknown rules by id."""
    _current: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict, repr=False)

    @property
    def totals(self) -> dict[str, int]:
        return {k: sum(getattr(r, k) for r in self.rules)
                for k in ("previous", "current", "fixed", "new", "still_open")}

    @property
    def status(self) -> str:
        return "NEW ISSUES" if any(r.new for r in self.rules) else "NO NEW ISSUES"

    def to_dict(self) -> dict[str, Any]:
        return {"schema": REPORT_SCHEMA, "previous": self.previous_label, "current": self.current_label,
                "status": self.status, "totals": self.totals, "rules": {r.rule: r.to_dict() for r in self.rules}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_html(self) -> str:
        from jinja2 import Environment, select_autoescape

        env = Environment(autoescape=select_autoescape(default_for_string=True), trim_blocks=True,
                          lstrip_blocks=True)
        env.filters["num"] = lambda n: f"{n:,}"
        return env.from_string(HTML_TEMPLATE).render(diff=self, totals=self.totals, chart=_chart(self.rules),
                                                     colours=SEVERITY_COLOURS, samples=HTML_SAMPLES)

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
                        fh.write("\t".join(_clean(v) for v in (record_id, entity, r.severity, status, detail)) + "\n")
            written[r.rule] = path
        return written


def _clean(value: str) -> str:
    return value.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def diff_iterations(previous: Iterable[Issue], current: Iterable[Issue], rules: Rules, *,
                    labels: tuple[str, str] = ("previous", "current")) -> IterationDiff:
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
        diffs.append(RuleDiff(rule_id, str(rule.severity) if rule else UNKNOWN_SEVERITY, len(fixed), len(new),
                              len(still), fixed, new, still, rule.entity if rule else "",
                              rule.description if rule else "not in the rule registry (renamed or removed?)"))
    return IterationDiff(labels[0], labels[1], diffs, after)


# --- HTML ---------------------------------------------------------------------------------

CHART_WIDTH = 640
LABEL_WIDTH = 200
VALUE_WIDTH = 170
BAR_HEIGHT = 16
BAR_GAP = 8
COLOURS = {"fixed": "#43a047", "still_open": "#9e9e9e", "new": "#c62828"}


def _chart(rules: list[RuleDiff]) -> dict[str, Any]:
    """One stacked bar per rule: fixed, still open, new; length ∝ records (common scale)."""
    span = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH
    largest = max((r.fixed + r.still_open + r.new for r in rules), default=0)
    bars = []
    for i, r in enumerate(rules):
        x, segments = float(LABEL_WIDTH), []
        for kind, n in (("fixed", r.fixed), ("still_open", r.still_open), ("new", r.new)):
            if n and largest:
                w = round(max(2.0, span * n / largest), 1)
                segments.append({"x": round(x, 1), "w": w, "colour": COLOURS[kind],
                                 "title": f"{n:,} {kind.replace('_', ' ')}"})
                x += w
        bars.append({"label": r.rule, "y": i * (BAR_HEIGHT + BAR_GAP), "segments": segments,
                     "text_x": round(x + 6, 1), "text": f"{r.previous:,} → {r.current:,}"})
    return {"width": CHART_WIDTH, "height": max(1, len(bars)) * (BAR_HEIGHT + BAR_GAP), "bar_height": BAR_HEIGHT,
            "bars": bars, "colours": COLOURS}


HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fix cycle · {{ diff.previous_label }} → {{ diff.current_label }}</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif;
         margin: 2rem auto; max-width: 1100px; padding: 0 1rem; color: #212121; line-height: 1.45; }
  h1 { font-size: 1.5rem; margin-bottom: .2rem; }
  h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
  .meta { color: #555; font-size: .9rem; }
  .banner { padding: .9rem 1.2rem; border-radius: 6px; margin: 1.2rem 0; color: #fff; }
  .banner.ok { background: #2e7d32; }
  .banner.attention { background: #ef8f00; }
  .banner strong { font-size: 1.3rem; letter-spacing: .05em; }
  table { border-collapse: collapse; width: 100%; font-size: .9rem; }
  th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #e0e0e0; vertical-align: top; }
  th { background: #f5f5f5; }
  td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
  .badge { display: inline-block; padding: .05rem .45rem; border-radius: 3px; color: #fff; font-size: .75rem; font-weight: 600; }
  .fixed { color: #2e7d32; font-weight: 600; }
  .new { color: #c62828; font-weight: 600; }
  code { font-size: .8rem; background: #f5f5f5; padding: 0 .2rem; margin-right: .2rem; display: inline-block; }
  svg text { font-size: 12px; fill: #212121; }
  .legend span { margin-right: 1rem; font-size: .85rem; }
  .legend i { display: inline-block; width: .8rem; height: .8rem; vertical-align: -1px; margin-right: .3rem; }
</style>
</head>
<body>
<h1>Fix cycle: {{ diff.previous_label }} → {{ diff.current_label }}</h1>
<p class="meta">Records with issues, rule by rule: fixed (only in {{ diff.previous_label }}), new (only in {{ diff.current_label }}), still open (in both).</p>

<div class="banner {{ 'attention' if totals.new else 'ok' }}" id="status">
  <strong>{{ diff.status }}</strong> — {{ totals.fixed | num }} fixed · {{ totals.new | num }} new · {{ totals.still_open | num }} still open
  ({{ totals.previous | num }} → {{ totals.current | num }} records with issues).
</div>

{% if diff.rules %}
{% set c = chart %}
<svg xmlns="http://www.w3.org/2000/svg" width="{{ c.width }}" height="{{ c.height }}" viewBox="0 0 {{ c.width }} {{ c.height }}" role="img" aria-label="Issues per rule between iterations">
  {% for bar in c.bars %}
  <text x="0" y="{{ bar.y + 12 }}">{{ bar.label }}</text>
  {% for s in bar.segments %}
  <rect x="{{ s.x }}" y="{{ bar.y }}" width="{{ s.w }}" height="{{ c.bar_height }}" fill="{{ s.colour }}"><title>{{ s.title }}</title></rect>
  {% endfor %}
  <text x="{{ bar.text_x }}" y="{{ bar.y + 12 }}">{{ bar.text }}</text>
  {% endfor %}
</svg>
<p class="legend">{% for kind, colour in c.colours.items() %}<span><i style="background: {{ colour }}"></i>{{ kind | replace("_", " ") }}</span>{% endfor %}</p>

<h2>Rules</h2>
<table id="rules">
  <thead><tr><th>rule</th><th>severity</th><th class="n">{{ diff.previous_label }}</th><th class="n">{{ diff.current_label }}</th>
    <th class="n">fixed</th><th class="n">new</th><th class="n">still open</th><th>new record ids</th><th>still open record ids</th></tr></thead>
  <tbody>
  {% for r in diff.rules %}
  <tr id="rule-{{ r.rule }}">
    <td title="{{ r.description }}"><b>{{ r.rule }}</b>{% if r.entity %}<br><small>{{ r.entity }}</small>{% endif %}</td>
    <td><span class="badge" style="background: {{ colours[r.severity] }}">{{ r.severity }}</span></td>
    <td class="n">{{ r.previous | num }}</td>
    <td class="n">{{ r.current | num }}</td>
    <td class="n{{ ' fixed' if r.fixed }}">{{ r.fixed | num }}</td>
    <td class="n{{ ' new' if r.new }}">{{ r.new | num }}</td>
    <td class="n">{{ r.still_open | num }}</td>
    <td>{% for i in r.new_ids[:samples] %}<code>{{ i }}</code>{% endfor %}{% if r.new > samples %} … {{ (r.new - samples) | num }} more{% endif %}</td>
    <td>{% for i in r.open_ids[:samples] %}<code>{{ i }}</code>{% endfor %}{% if r.still_open > samples %} … {{ (r.still_open - samples) | num }} more{% endif %}</td>
  </tr>
  {% endfor %}
  </tbody>
</table>
<p class="meta">The full lists are in the JSON report and in the worklists (one TSV per rule: new and still-open records).</p>
{% else %}
<p>Neither iteration has any issue.</p>
{% endif %}
</body>
</html>
"""
