"""Data issues: what validation finds, record by record.

An issue names a rule, the entity and the Aleph record id a librarian can look up. Rules
have a severity:

- ``FIX``: must be fixed before delivery once the rule's threshold is passed;
- ``REVIEW``: a librarian should look at it;
- ``INFO``: recorded for the reconciliation (e.g. text converted from GBK).

An issue is not a reject: a record with an issue may still be delivered. Whether a rule
also rejects the record is part of the rule's definition (see ``validate.rules``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import IO, Any


class Severity(StrEnum):
    FIX = "FIX"
    REVIEW = "REVIEW"
    INFO = "INFO"


@dataclass(frozen=True)
class Issue:
    rule: str
    entity: str
    record_id: str
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Issue:
        return cls(data["rule"], data["entity"], data["record_id"], data.get("detail", ""))


@dataclass
class IssueLog:
    """Counts issues per rule and streams them to a JSON-lines sink."""

    sink: IO[str] | None = None
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, issue: Issue) -> None:
        self.counts[issue.rule] += 1
        if self.sink is not None:
            self.sink.write(issue.to_json() + "\n")

    def extend(self, issues: Iterable[Issue]) -> None:
        for issue in issues:
            self.add(issue)


def read_issues(lines: Iterable[str | bytes]) -> list[Issue]:
    return [Issue.from_dict(json.loads(line)) for line in lines if line.strip()]
