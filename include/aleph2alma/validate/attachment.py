"""What hangs off a record that is not delivered is not delivered either.

A holdings record whose LKR names a bib that does not exist is an orphan (rule
``orphan_holdings``, an issue and a reject); one whose bib the transform rejected is
withheld (``bib_rejected``): Alma could not attach it, so sending it would only move the
rejection into Alma's load report. The transform DAG and ``aleph2alma validate`` both
call this, so both count the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from aleph2alma.rejects import Reject, RejectLog
from aleph2alma.validate.issues import Issue

BibKey = tuple[str, str]  # (BIB library, sysno)
RULES = ("orphan_holdings",)  # the rules judged here, not in validate.checks


class Withheld:
    """Counts the holdings kept back while the stream goes on."""

    def __init__(self) -> None:
        self.count = 0


def attachable_holdings(
    records: Iterator[Any],
    library: str,
    bibs: Mapping[BibKey, bool],
    rejects: RejectLog,
    issues: Any,
    withheld: Withheld,
) -> Iterator[Any]:
    """The holdings records whose bib exists and was delivered; ``bibs`` maps each bib of the
    extract to whether the transform rejected it. The others become rejects (and, for an
    orphan, an issue)."""
    from aleph2alma.marc.holdings import bib_link

    for rec in records:
        link = bib_link(rec.record)
        rejected = None if link is None else bibs.get(link)
        if link is None or rejected is False:
            yield rec  # no LKR at all is the holdings transform's own reject (missing_bib_link)
            continue
        withheld.count += 1
        record_id, bib = f"{library}:{rec.sysno}", f"{link[0]}:{link[1]}"
        if rejected is None:
            reason, detail = "orphan_holdings", f"LKR to {bib}, which does not exist"
            issues.add(Issue(reason, "holdings", record_id, detail))
        else:
            reason, detail = "bib_rejected", f"its bib {bib} was rejected (see the bib rejects)"
        rejects.add(
            Reject("holdings", record_id, reason, detail=detail, source=rec.source, line_no=rec.line_no)
        )
