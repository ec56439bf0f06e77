"""Validation issues about the ALEPHSEQ export files themselves, not their records.

Extraction copies a BIB or HOL export byte for byte and lists its malformed lines in the raw
stage's rejects; the MARC transform reads the same lines again (``alephseq.read_alephseq``,
the same line check) and turns each into a ``malformed_line`` issue, so that they reach the
validation report and, past the rule's threshold, block delivery. A library whose export
holds no record at all gives one ``empty_export`` issue (threshold: none allowed): an empty
or garbage file must not pass as a library with 0 bibs.
"""

from __future__ import annotations

from collections.abc import Callable

from aleph2alma.rejects import Reject
from aleph2alma.validate.issues import Issue, IssueLog

MALFORMED_LINE = "malformed_line"
EMPTY_EXPORT = "empty_export"


def malformed_line_issues(issues: IssueLog, library: str) -> Callable[[Reject], None]:
    """A sink for the malformed-line rejects of ``read_alephseq`` that logs them as issues
    (``<library>:<sysno>``, ``?`` when the line has no system number)."""

    def add(reject: Reject) -> None:
        where = f"{reject.source} line {reject.line_no:,}" if reject.line_no else reject.source
        detail = f"{where}: {reject.reason}: {reject.detail}"
        if reject.raw:
            detail += f"; the line starts {reject.raw!r}"
        issues.add(Issue(MALFORMED_LINE, reject.entity, f"{library}:{reject.record_id}", detail))

    return add


def empty_export_issue(entity: str, library: str, file: str, size: int) -> Issue:
    """The issue of an export of ``library`` with no record (``size`` bytes read)."""
    what = "is empty (0 bytes)" if size == 0 else f"has {size:,} bytes but no ALEPHSEQ record"
    return Issue(EMPTY_EXPORT, entity, library, f"{file} {what}")
