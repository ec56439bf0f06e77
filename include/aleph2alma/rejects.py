"""Rejected records: every record that cannot go on is written with its id and reason.

A reject is data, not an exception: the stream that produced it goes on. Stages count
rejects so that ``records_in == records_out + rejected`` holds for every entity.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True)
class Reject:
    """One record (or source line) that could not be carried forward.

    ``record_id`` is the Aleph key a librarian can look up (system number, Z30 key,
    patron id); ``source`` and ``line_no`` say where the raw input came from.
    """

    entity: str
    record_id: str
    reason: str
    detail: str = ""
    source: str = ""
    line_no: int | None = None
    raw: str = ""

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in ("", None)}, ensure_ascii=False)


@dataclass
class RejectLog:
    """Collects rejects in memory-bounded fashion: counts always, records to a file if given."""

    sink: IO[str] | None = None
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, reject: Reject) -> None:
        self.counts[reject.reason] += 1
        if self.sink is not None:
            self.sink.write(reject.to_json() + "\n")

    def extend(self, rejects: Iterable[Reject]) -> None:
        for reject in rejects:
            self.add(reject)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def read_rejects(path: str | Path) -> list[dict[str, Any]]:
    """Read a rejects JSON-lines file back (for reports and tests)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
