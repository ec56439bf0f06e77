"""A night's report: what changed in Aleph, entity by entity, and what the rules say about it.

For people (HTML, through ``aleph2alma.reporting``) and for machines (JSON, the same numbers):
per entity the new, changed and deleted records (and the changes Aleph's own history does not
show), per rule the issues of the night's new and changed records and, for the rules over
the Z-tables, the issues the library gained and lost since the baseline.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from aleph2alma.reporting import BLUE, GREEN, RED, Bar, Chart, Segment, bar_chart, render, run_info
from aleph2alma.validate.issues import Severity
from aleph2alma.validate.rules import Rule


@dataclass(frozen=True)
class EntityChanges:
    entity: str
    previous: int
    records: int
    new: int
    changed: int
    deleted: int
    unstamped: int | None
    modes: dict[str, str]
    """Source → how it was read: ``update_date`` or ``hash``."""

    @classmethod
    def of(cls, entity: str, counts: Mapping[str, Any]) -> EntityChanges:
        return cls(
            entity,
            int(counts["previous"]),
            int(counts["records"]),
            int(counts["new"]),
            int(counts["changed"]),
            int(counts["deleted"]),
            None if counts.get("unstamped") is None else int(counts["unstamped"]),
            dict(counts.get("modes", {})),
        )

    @property
    def touched(self) -> int:
        return self.new + self.changed + self.deleted


@dataclass(frozen=True)
class RuleHits:
    rule: str
    entity: str
    severity: str
    description: str
    in_delta: int
    new: int | None
    """None for a rule judged only on the delta's records (the MARC rules)."""
    resolved: int | None
    total: int | None


@dataclass
class NightReport:
    run: dict[str, str]
    window: dict[str, Any]
    entities: list[EntityChanges]
    rules: list[RuleHits]

    @property
    def needs_attention(self) -> list[RuleHits]:
        """FIX and REVIEW rules that the night's records hit, or that gained issues."""
        return [
            r
            for r in self.rules
            if r.severity in (Severity.FIX, Severity.REVIEW) and (r.in_delta or (r.new or 0))
        ]

    @property
    def status(self) -> str:
        return "ATTENTION" if self.needs_attention else "OK"

    def totals(self) -> dict[str, int]:
        return {
            key: sum(getattr(e, key) for e in self.entities)
            for key in ("new", "changed", "deleted", "records")
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "window": self.window,
            "status": self.status,
            "totals": self.totals(),
            "entities": [asdict(e) for e in self.entities],
            "rules": [asdict(r) for r in self.rules],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"

    def to_html(self) -> str:
        return render(
            "nightly_delta.html.j2",
            run=self.run,
            window=self.window,
            status=self.status,
            totals=self.totals(),
            entities=self.entities,
            rules=[r for r in self.rules if r.in_delta or r.new or r.resolved],
            attention=self.needs_attention,
            chart=_chart(self.entities),
        )


def _chart(entities: list[EntityChanges]) -> Chart:
    return bar_chart(
        [
            Bar(
                e.entity,
                [
                    Segment(e.new, GREEN, f"{e.new:,} new"),
                    Segment(e.changed, BLUE, f"{e.changed:,} changed"),
                    Segment(e.deleted, RED, f"{e.deleted:,} deleted"),
                ],
                f"{e.new:,} new · {e.changed:,} changed · {e.deleted:,} deleted",
            )
            for e in entities
        ],
        title="Records changed per entity",
        legend=[("new", GREEN), ("changed", BLUE), ("deleted", RED)],
    )


def build_night_report(
    run: Mapping[str, Any],
    window: Mapping[str, Any],
    entity_counts: Mapping[str, Mapping[str, Any]],
    in_delta: Mapping[str, int],
    new: Mapping[str, int],
    resolved: Mapping[str, int],
    totals: Mapping[str, int],
    rules: Mapping[str, Rule],
) -> NightReport:
    """``in_delta``, ``new``, ``resolved``, ``totals``: rule id → issues (``validate_delta``);
    only the table rules have ``totals`` (and so new and resolved counts)."""
    hits = []
    for rule_id, rule in rules.items():
        judged_whole = rule_id in totals
        hits.append(
            RuleHits(
                rule_id,
                rule.entity,
                rule.severity.value,
                rule.description,
                int(in_delta.get(rule_id, 0)),
                int(new.get(rule_id, 0)) if judged_whole else None,
                int(resolved.get(rule_id, 0)) if judged_whole else None,
                int(totals[rule_id]) if judged_whole else None,
            )
        )
    return NightReport(
        run_info(run),
        dict(window),
        [EntityChanges.of(entity, counts) for entity, counts in entity_counts.items()],
        hits,
    )
