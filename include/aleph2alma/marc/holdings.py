"""Holdings transform: an Aleph HOL record → an Alma-ready MARC 21 holdings record.

An Aleph HOL record (library e.g. BNU60) is tied to its bib by ``LKR $$aHOL$$b<bib
sysno>$$l<BIB library>``; its 852 holds the location ($b sub-library, $c collection) and
call number ($h class part, $i item part, $j shelving control number). The output:

- **001** = the HOL system number; **004** = the linked bib's 001 in the bib output (its
  system number, or ``<BIB library><sysno>`` with ``qualified_bib_ids``); any 004 the HOL
  record had (Aleph often keeps a legacy id there) is replaced; **035**
  ``$a(ALEPH)<HOL library><sysno>``, added once;
- 852 and every other MARC field kept, in Unicode NFC, in ascending tag order; text that
  was not UTF-8 repaired as in the bib transform (``marc.encoding``; the issues, entity
  ``holdings``, are in ``HoldingsResult.issues``);
- Aleph-local fields (LKR, OWN, FMT, CAT …) dropped (``drop_local_tags``);
- a valid holdings leader: positions the record has right are kept (type ``x``/``y``/``v``/``u``
  as given); a wrong or blank position gets the value of :data:`DEFAULT_LEADER` (type
  ``x``, single-part item holdings, Aleph's usual HOL); 9 = ``a`` (UTF-8) and the
  structural positions are set.

A HOL record with no ``LKR $$aHOL`` carrying a ``$$b`` is rejected (``missing_bib_link``).
Whether the linked bib exists is not checked here: a later cross-record rule joins the
holdings index (:data:`HOLDINGS_INDEX_SCHEMA`) with the bib index for that.

Index columns: ``sub_library`` = 852 $b, ``collection`` = 852 $c (first 852), and
``call_number`` = its $h, $i and $j joined by a blank, except for first indicator ``8``
("other scheme": the CLC call numbers of Chinese libraries, 分类号/书次号), where $h and
$i are joined by ``/`` (``G40/123``), as Aleph displays them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

import pyarrow as pa
import pymarc
from pymarc import Field, Indicators, Subfield

from aleph2alma.accounting import Tally
from aleph2alma.aleph.alephseq import RAW_CODE, AlephSeqRecord, is_local_tag
from aleph2alma.marc.bibs import bib_id, marc_bytes
from aleph2alma.marc.encoding import repair_fields
from aleph2alma.rejects import Reject, RejectLog
from aleph2alma.validate.issues import Issue, IssueLog

ENTITY = "holdings"

HOLDINGS_INDEX_SCHEMA = pa.schema(
    [
        pa.field(name, pa.string())
        for name in (
            "library",
            "sysno",
            "bib_library",
            "bib_sysno",
            "sub_library",
            "collection",
            "call_number",
        )
    ]
)

DEFAULT_LEADER = "00000nx  a2200000un 4500"
"""Values for leader positions a HOL record lacks: new, single-part item holdings,
encoding level unknown, no item information."""
_VALID = {5: "cdn", 6: "uvxy", 7: " ", 8: " ", 17: "12345muz", 18: "in", 19: " "}
"""Leader position → allowed values (MARC 21 holdings); others are set by the writer."""


@dataclass(frozen=True)
class HoldingsOptions:
    library: str = field(metadata={"doc": "Aleph HOL library code, e.g. BNU60 (035 prefix, reject ids)"})
    drop_local_tags: bool = field(default=True, metadata={"doc": "Drop Aleph-local fields (LKR, OWN, FMT …)"})
    qualified_bib_ids: bool = field(
        default=False,
        metadata={
            "doc": "004 = <bib library><bib sysno>, as the bibs' 001 when there are several BIB libraries"
        },
    )

    def __post_init__(self) -> None:
        if not self.library:
            raise ValueError("HoldingsOptions.library must be an Aleph library code such as BNU60")


@dataclass
class HoldingsResult:
    record: pymarc.Record | None
    bib_library: str
    bib_sysno: str
    reject: Reject | None
    issues: list[Issue] = field(default_factory=list)


class HoldingsStats(Tally):
    """In, out and rejected by reason of one HOL part."""


def holdings_leader(leader: str) -> str:
    """A valid MARC 21 holdings leader from whatever the record had (see module docstring)."""
    leader = leader if len(leader) == 24 else DEFAULT_LEADER
    chars = [ch if i not in _VALID or ch in _VALID[i] else DEFAULT_LEADER[i] for i, ch in enumerate(leader)]
    return f"{''.join(chars[:9])}a22{''.join(chars[12:20])}4500"


def bib_link(record: pymarc.Record) -> tuple[str, str] | None:
    """(BIB library, bib sysno) of the first ``LKR $$aHOL`` with a ``$$b``; None if there is none."""
    for lkr in record.get_fields("LKR"):
        if lkr.get("a", "").strip() == "HOL" and lkr.get("b", "").strip():
            sysno = lkr.get("b", "").strip()
            return lkr.get("l", "").strip(), sysno.zfill(9) if sysno.isdigit() else sysno
    return None


def call_number(f852: Field) -> str:
    """The call number of an 852 (see the module docstring for the joining rule)."""
    parts = [value.strip() for code, value in f852.subfields if code in ("h", "i", "j") and value.strip()]
    if f852.indicator1 == "8" and len(parts) >= 2:
        return "/".join(parts[:2]) + "".join(f" {p}" for p in parts[2:])
    return " ".join(parts)


def _nfc(fld: Field) -> None:
    if fld.control_field:
        if not (fld.data or "").isascii():
            fld.data = unicodedata.normalize("NFC", fld.data or "")
        return
    fld.subfields = [
        Subfield(
            "a" if code == RAW_CODE else code,
            value if value.isascii() else unicodedata.normalize("NFC", value),
        )
        for code, value in fld.subfields
        if not (code == RAW_CODE and value == "$$")
    ]


def transform_holding(rec: AlephSeqRecord, options: HoldingsOptions) -> HoldingsResult:
    """One HOL record: link, identifiers, leader, cleaned fields (see the module docstring)."""
    record = rec.record
    record_id = f"{options.library}:{rec.sysno}"
    link = bib_link(record)
    if link is None:
        reject = Reject(
            ENTITY,
            record_id,
            "missing_bib_link",
            detail="no LKR $$aHOL with a bib system number ($$b)",
            source=rec.source,
            line_no=rec.line_no,
        )
        return HoldingsResult(None, "", "", reject)
    bib_library, bib_sysno = link
    aleph_035 = f"(ALEPH){options.library}{rec.sysno}"
    kept: list[Field] = []
    has_035 = False
    for fld in record.fields:
        tag = fld.tag
        if tag in ("001", "004", "LDR") or (options.drop_local_tags and is_local_tag(tag)):
            continue
        if tag == "035":
            has_035 = has_035 or any(code == "a" and value == aleph_035 for code, value in fld.subfields)
        kept.append(fld)
    issues = (
        repair_fields(kept, rec.encoding_errors, entity=ENTITY, record_id=record_id)
        if rec.encoding_errors
        else []
    )
    for fld in kept:
        _nfc(fld)
    kept += [
        Field("001", data=rec.sysno),
        Field("004", data=bib_id(bib_library, bib_sysno, options.qualified_bib_ids)),
    ]
    if not has_035:
        kept.append(Field("035", Indicators(" ", " "), [Subfield("a", aleph_035)]))
    kept.sort(key=lambda f: f.tag)
    record.fields = kept  # type: ignore[assignment]  # pymarc types it list[Field | RawField]
    record.leader = pymarc.Leader(holdings_leader(str(record.leader) if rec.has_leader else ""))
    return HoldingsResult(record, bib_library, bib_sysno, None, issues)


def index_row(library: str, sysno: str, result: HoldingsResult) -> dict[str, str]:
    """The holdings index row of a delivered record (:data:`HOLDINGS_INDEX_SCHEMA`)."""
    assert result.record is not None
    f852 = next(iter(result.record.get_fields("852")), None)
    return {
        "library": library,
        "sysno": sysno,
        "bib_library": result.bib_library,
        "bib_sysno": result.bib_sysno,
        "sub_library": f852.get("b", "").strip() if f852 else "",
        "collection": f852.get("c", "").strip() if f852 else "",
        "call_number": call_number(f852) if f852 else "",
    }


def transform_holdings(
    records: Iterable[AlephSeqRecord],
    options: HoldingsOptions,
    out: BinaryIO,
    rejects: RejectLog,
    index: list[dict] | None = None,
    issues: IssueLog | None = None,
) -> HoldingsStats:
    """Stream HOL records to ``out`` (ISO 2709); every record ends in ``out`` or ``rejects``.

    ``index`` gets one row per *delivered* record (a rejected one has no bib link to
    index). ``issues`` receives encoding issues (entity ``holdings``), if given.
    """
    stats = HoldingsStats()
    for rec in records:
        stats.records_in += 1
        result = transform_holding(rec, options)
        if issues is not None:
            issues.extend(result.issues)
        reject = result.reject
        if result.record is not None:
            data, reason, detail = marc_bytes(result.record)
            if data:
                out.write(data)
                stats.records_out += 1
                if index is not None:
                    index.append(index_row(options.library, rec.sysno, result))
            else:
                reject = Reject(
                    ENTITY,
                    f"{options.library}:{rec.sysno}",
                    reason,
                    detail=detail,
                    source=rec.source,
                    line_no=rec.line_no,
                )
        if reject is not None:
            rejects.add(reject)
            stats.reject(reject.reason)
    return stats.check(ENTITY)
