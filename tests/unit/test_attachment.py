"""Holdings that hang off a missing or rejected bib are withheld, with id and reason (validate.attachment)."""

from __future__ import annotations

import pymarc
import pytest

from aleph2alma.aleph.alephseq import AlephSeqRecord
from aleph2alma.rejects import RejectLog
from aleph2alma.validate.attachment import Withheld, attachable_holdings

BIBS = {("BNU01", "000000001"): False, ("BNU01", "000000002"): True, ("BNU02", "000000003"): False}


class Issues:
    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []

    def add(self, issue) -> None:
        self.found.append((issue.rule, issue.record_id))


def holding(sysno: str, lkr: dict[str, str] | None) -> AlephSeqRecord:
    record = pymarc.Record()
    if lkr is not None:
        record.add_field(
            pymarc.Field(
                tag="LKR", indicators=[" ", " "], subfields=[pymarc.Subfield(k, v) for k, v in lkr.items()]
            )
        )
    return AlephSeqRecord(sysno=sysno, record=record, source="BNU60.seq", line_no=1)


@pytest.mark.parametrize(
    ("lkr", "passed", "reason", "issue"),
    [
        ({"a": "HOL", "b": "000000001", "l": "BNU01"}, True, None, None),
        ({"a": "HOL", "b": "1", "l": "BNU01"}, True, None, None),
        ({"a": "HOL", "b": "000000077", "l": "BNU01"}, False, "orphan_holdings", "orphan_holdings"),
        ({"a": "HOL", "b": "000000001", "l": "BNU02"}, False, "orphan_holdings", "orphan_holdings"),
        ({"a": "HOL", "b": "000000002", "l": "BNU01"}, False, "bib_rejected", None),
        (None, True, None, None),
    ],
    ids=[
        "delivered bib",
        "unpadded sysno",
        "deleted bib",
        "same sysno, other bib library",
        "rejected bib",
        "no LKR: the holdings transform's own reject",
    ],
)
def test_holdings_follow_their_bib(lkr, passed, reason, issue) -> None:
    rejects, issues, withheld = RejectLog(), Issues(), Withheld()
    out = list(
        attachable_holdings(iter([holding("000000009", lkr)]), "BNU60", BIBS, rejects, issues, withheld)
    )
    assert bool(out) == passed
    assert withheld.count == (0 if passed else 1)
    assert dict(rejects.counts) == ({reason: 1} if reason else {})
    assert issues.found == ([(issue, "BNU60:000000009")] if issue else [])
