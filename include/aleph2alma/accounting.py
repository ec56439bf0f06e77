"""Nothing lost: for every entity and stage, records in = records out + rejected.

One ``Tally`` per part (or per load) counts what came in, what went on and what was
rejected, by reason. The stages' counts (``BibStats``, ``ItemStats``, ``UserStats`` …) are
Tallies with their own extra counters beside the balance; the balance itself is kept
here, once, and checked before anything is committed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from aleph2alma.errors import PermanentError


class UnbalancedError(PermanentError):
    """Records were lost or counted twice: in ≠ out + rejected. A bug, never a data problem."""


@dataclass
class Tally:
    """In, out and rejected (by reason) of one entity in one part, stage or load."""

    records_in: int = 0
    records_out: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def balanced(self) -> bool:
        return self.records_in == self.records_out + self.rejected

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejected_by_reason[reason] += count

    def add(self, other: Tally) -> Self:
        self.records_in += other.records_in
        self.records_out += other.records_out
        self.rejected_by_reason.update(other.rejected_by_reason)
        return self

    def check(self, what: str) -> Self:
        """Raise ``UnbalancedError`` naming ``what`` when in ≠ out + rejected."""
        if not self.balanced:
            raise UnbalancedError(
                f"{what}: {self.records_in} in ≠ {self.records_out} out + "
                f"{self.rejected} rejected ({dict(self.rejected_by_reason)})"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_in": self.records_in,
            "records_out": self.records_out,
            "rejected": self.rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
        }

    @classmethod
    def of(cls, records_in: int, records_out: int, rejected_by_reason: Mapping[str, int]) -> Tally:
        return cls(records_in, records_out, Counter(rejected_by_reason))

    @classmethod
    def total(cls, tallies: Iterable[Tally]) -> Tally:
        out = cls()
        for t in tallies:
            out.add(t)
        return out
