"""Bib transform: an Aleph BIB record → an Alma-ready MARC record (ISO 2709, UTF-8, NFC).

What every delivered record gets:

- **001** = the Aleph system number; **035** ``$a(ALEPH)<library><sysno>`` (e.g.
  ``(ALEPH)BNU01000000123``), added once: a record that already has it (a re-run, or an
  export of migrated data) keeps the one it has.
- Aleph-local fields (FMT, CAT, LKR, OWN, SYS, BAS, SID, STA, Z30 …: a listed tag, or any
  3-character tag of upper-case letters and digits with a letter) dropped, unless
  ``keep_local_tags`` names them or ``drop_local_tags`` is off. LDR lines are never fields.
- All text in Unicode NFC; text that was not UTF-8 repaired (``marc.encoding``).
- Fields in ascending tag order (stable: fields of one tag keep their order).
- Leader: MARC 21 position 9 = ``a`` (UTF-8); CNMARC keeps position 9 (undefined in
  UNIMARC) and declares the character set in **100 $a/26-29 = "50  "** (ISO 10646,
  UNIMARC code 50), padding a short 100 $a with blanks and adding a blank 100 $a when
  the record has none. Structural positions (10-11, 20-23) are written anew; see
  :func:`leader_faults` for what makes a leader invalid.

Rules (``Issue`` rule ids; ``record_id = "<library>:<sysno>"``; at most one issue per rule
and record, the details of several fields joined with ``"; "``):

``invalid_leader``  (record rejected)
    no LDR, an LDR that is not 24 characters, a second LDR, or a position holding a value
    the flavour does not allow (table at :data:`LEADER_RULES`).
``missing_title``  (record rejected)
    MARC 21 without 245, CNMARC without 200.
``flavour_mismatch``  (delivered, REVIEW)
    the record's shape (``marc.shape``: CNMARC = 200 and 100 $a fixed data, MARC 21 = 245)
    is not the library's flavour: it is transformed as what it is (with
    ``BibOptions.detect_flavour``; the library's flavour is the default for records whose
    shape says nothing, e.g. one with no title at all).
``invalid_indicators``  (delivered)
    an indicator outside 0-9, a-z and blank (it is written as blank); a tag that is not 3
    digits and not an Aleph-local tag (a 3-character ASCII letter/digit tag is kept, any
    other is dropped: ISO 2709 cannot hold it); a mistyped tag (``2X5``, dropped); text
    before a field's first subfield code (kept as ``$a``); a data field with no subfields
    (dropped); control characters such as ESC (removed: they never reach the UTF-8 output).
    Local tags kept on purpose are exempt. A 066 (MARC-8 character sets) is dropped: the
    output is Unicode.
``invalid_utf8``, ``legacy_gbk``  (delivered)
    see ``marc.encoding``.

Embedded items (``BibOptions.items_field``, e.g. ``949``, for import-profile loads): one
field per item, indicators blank, non-empty values only, subfields in this order:

====  ================   ====  ================
$b    barcode            $n    public_note
$l    library            $f    fulfillment_note
$k    location           $x    internal_note
$p    item_policy        $s    process_type
$h    call_number        $t    material_type
$z    description
====  ================   ====  ================

The transform takes the input record over (fields are changed in place, no copy).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate
from operator import attrgetter, itemgetter
from typing import BinaryIO, Literal

import pyarrow as pa
import pymarc
from pymarc import Field, Indicators, Subfield

from aleph2alma.accounting import Tally
from aleph2alma.aleph.alephseq import ITEM_TAG, LOCAL_TAGS, RAW_CODE, AlephSeqRecord
from aleph2alma.marc.encoding import repair_fields
from aleph2alma.marc.shape import record_flavour
from aleph2alma.rejects import Reject, RejectLog
from aleph2alma.validate.issues import Issue, IssueLog

Flavour = Literal["MARC21", "CNMARC"]
ENTITY = "bibs"

BIB_INDEX_SCHEMA = pa.schema(
    [
        pa.field("library", pa.string()),
        pa.field("sysno", pa.string()),
        pa.field("has_856", pa.bool_()),
        pa.field("rejected", pa.bool_()),
    ]
)

ITEM_SUBFIELDS: tuple[tuple[str, str], ...] = (
    ("b", "barcode"),
    ("l", "library"),
    ("k", "location"),
    ("p", "item_policy"),
    ("h", "call_number"),
    ("z", "description"),
    ("n", "public_note"),
    ("f", "fulfillment_note"),
    ("x", "internal_note"),
    ("s", "process_type"),
    ("t", "material_type"),
)
"""Subfield code → item key of embedded item fields, in output order."""

CNMARC_CHARSET = "50  "
"""100 $a/26-29 of CNMARC output: ISO 10646 (Unicode), no second set."""
VALID_INDICATORS = frozenset(string.digits + string.ascii_lowercase + " ")
MAX_RECORD_BYTES = 99_999
"""ISO 2709 holds at most 5 digits of record length (and 4 of field length)."""


# --- leader -------------------------------------------------------------------------------

_DIGITS_BLANK = frozenset(string.digits + " ")
_ALNUM_BLANK = frozenset(string.digits + string.ascii_letters + " ")
_LeaderRule = dict[int, tuple[frozenset[str], str]]
_CONTENT = (*range(5, 12), *range(17, 24))  # the rest (0-4, 12-16) is digits or blanks


def _leader_rule(status: str, rtype: str, level: str, pos8: tuple[str, str]) -> _LeaderRule:
    values = [
        (status, "record status"),
        (rtype, "type of record"),
        (level, "bibliographic level"),
        pos8,
        (" a", "character coding"),
        ("2 ", "indicator count"),
        ("2 ", "subfield code count"),
        (string.digits + string.ascii_letters + " ", "encoding level"),
        (string.digits + string.ascii_letters + " ", "cataloguing form"),
        (string.digits + string.ascii_letters + " ", "position 19"),
        ("4 ", "entry map"),
        ("5 ", "entry map"),
        ("0 ", "entry map"),
        ("0 ", "entry map"),
    ]
    return {pos: (frozenset(allowed), name) for pos, (allowed, name) in zip(_CONTENT, values, strict=True)}


LEADER_RULES: dict[str, _LeaderRule] = {
    "MARC21": _leader_rule("acdnp", "acdefgijkmoprt", "abcdims", (" a", "type of control")),
    "CNMARC": _leader_rule("cdnop", "abcdefgijklmr", "acims", (" 012", "hierarchical level")),
}
"""Per flavour, leader position → (allowed characters, name); 0-4 and 12-16 take digits or blanks.

Positions 0-4 and 12-16 (computed by the ISO 2709 writer), 10-11 and 20-23 (fixed for the
format) may also be blank: Aleph does not keep them in LDR and its LDRs are often blank or
shifted there (``00000nam^^^22^^^^Ia^^^^^`` in the shared samples); they are written anew.
Positions 17-19 take any letter or digit: OCLC encoding levels (``I``, ``K``, ``M`` …) are
legal in the wild. Position 9 is blank or ``a`` (CNMARC: undefined, ``a`` tolerated).
MARC 21 entry map ``4500``; UNIMARC ``450 `` (``4500`` accepted).
"""


@lru_cache(maxsize=4096)
def _content_faults(content: str, flavour: Flavour) -> tuple[str, ...]:
    rule = LEADER_RULES[flavour]
    return tuple(
        f"position {pos} ({rule[pos][1]}) {ch!r}"
        for pos, ch in zip(_CONTENT, content, strict=True)
        if ch not in rule[pos][0]
    )


def leader_faults(leader: str, flavour: Flavour) -> tuple[str, ...]:
    """What is wrong with ``leader`` (empty if valid).

    The content positions are checked through a cache (a library's leaders repeat a lot,
    apart from the record length and base address, checked here)."""
    if len(leader) != 24:
        return (f"leader is {len(leader)} characters, not 24",)
    faults = _content_faults(leader[5:12] + leader[17:], flavour)
    if not set(leader[:5] + leader[12:17]) <= _DIGITS_BLANK:
        faults = (f"record length or base address {leader[:5]!r}/{leader[12:17]!r} not digits", *faults)
    return faults


def _ldr_fault(data: str) -> str:
    if len(data) != 24:
        return f"LDR is {len(data)} characters, not 24"
    return "LDR is not at the head of the record"


def output_leader(leader: str, flavour: Flavour) -> str:
    """Structural positions set; MARC 21 position 9 = ``a``; CNMARC entry map ``450 ``."""
    if flavour == "CNMARC":
        return f"{leader[:10]}22{leader[12:20]}450 "
    return f"{leader[:9]}a22{leader[12:20]}4500"


# --- options and results ------------------------------------------------------------------


@dataclass(frozen=True)
class BibOptions:
    library: str = field(metadata={"doc": "Aleph BIB library code, e.g. BNU01 (035 prefix, issue ids)"})
    flavour: Flavour = field(metadata={"doc": "MARC21 or CNMARC: which title field and leader rules apply"})
    drop_local_tags: bool = field(default=True, metadata={"doc": "Drop Aleph-local fields (FMT, CAT, LKR …)"})
    keep_local_tags: tuple[str, ...] = field(
        default=(), metadata={"doc": "Local tags kept even when dropping"}
    )
    items_field: str = field(
        default="", metadata={"doc": "Tag to embed items in (e.g. 949, one the records do not use); '' = off"}
    )
    detect_flavour: bool = field(
        default=True,
        metadata={
            "doc": "Each record's shape decides its flavour (CNMARC: 200 and 100 $a fixed data; "
            "MARC 21: 245); ``flavour`` is the default for records whose shape says nothing"
        },
    )
    report_flavour_mismatch: bool = field(
        default=True,
        metadata={"doc": "A record whose shape differs from ``flavour`` is a flavour_mismatch REVIEW issue"},
    )
    qualified_ids: bool = field(
        default=False,
        metadata={
            "doc": "001 = <library><sysno> (several BIB libraries number their bibs alike); else the sysno"
        },
    )

    def __post_init__(self) -> None:
        if not self.library:
            raise ValueError("BibOptions.library must be an Aleph library code such as BNU01")
        if self.flavour not in LEADER_RULES:
            raise ValueError(f"BibOptions.flavour must be MARC21 or CNMARC, not {self.flavour!r}")
        if self.items_field and not is_data_field_tag(self.items_field):
            raise ValueError(
                f"BibOptions.items_field must be a data-field tag such as 949 or '', not {self.items_field!r}"
            )
        object.__setattr__(self, "keep_local_tags", tuple(self.keep_local_tags))


@dataclass
class BibResult:
    record: pymarc.Record | None
    issues: list[Issue]
    reject: Reject | None
    has_856: bool
    dropped: Counter[str] = field(default_factory=Counter)
    """Fields left out, by kind (:func:`drop_kind`)."""


def drop_kind(tag: str) -> str:
    """What a dropped field was, for the summary: ``CAT history``, ``embedded items (Z30)``,
    ``Aleph-local tags``, ``mistyped tags`` (a digit then a letter: ``2X5``) or ``invalid tags``."""
    if tag == "CAT":
        return "CAT history"
    if tag == ITEM_TAG:
        return "embedded items (Z30)"
    if tag_kind(tag) == BAD_DROPPED:
        return "invalid tags"
    if tag[:1].isdigit():
        return "mistyped tags"
    return "Aleph-local tags"


@dataclass
class BibStats(Tally):
    """In, out and rejected by reason (the ``Tally``), and the issues found, by rule."""

    issues: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    """Fields left out of the delivered records, by kind (:func:`drop_kind`)."""


# --- fields -------------------------------------------------------------------------------

MARC, LOCAL, BAD_KEPT, BAD_DROPPED = range(4)


@lru_cache(maxsize=1024)
def tag_kind(tag: str) -> int:
    """MARC (3 digits), LOCAL (Aleph-local), BAD_KEPT (3 ASCII letters/digits, not
    local: ISO 2709 can hold it) or BAD_DROPPED (anything else)."""
    if len(tag) == 3 and tag.isdigit() and tag.isascii():
        return MARC
    if tag in LOCAL_TAGS or (len(tag) == 3 and tag.isascii() and tag.isalnum() and tag == tag.upper()):
        return LOCAL
    return BAD_KEPT if len(tag) == 3 and tag.isascii() and tag.isalnum() else BAD_DROPPED


def _clean(fld: Field, faults: list[str], nfc: bool) -> None:
    """NFC (if ``nfc``) and the raw-text fix of one field, in one pass over its subfields."""
    if fld.control_field:
        data = fld.data or ""
        if nfc and not data.isascii():
            fld.data = unicodedata.normalize("NFC", data)
        return
    subfields, raw = fld.subfields, False
    if (not nfc or "".join(map(_VALUE, subfields)).isascii()) and RAW_CODE not in map(_CODE, subfields):
        return  # nothing to normalise, no raw text
    for i, (code, value) in enumerate(subfields):
        if code == RAW_CODE:
            raw = True
        elif nfc and not value.isascii():
            normal = unicodedata.normalize("NFC", value)
            if normal is not value:  # the same object when already NFC: no new subfield
                subfields[i] = Subfield(code, normal)
    if raw:
        _fix_subfields(fld, faults)


_CODE = itemgetter(0)  # of a subfield
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")


def _strip_controls(fields: Iterable[Field], faults: list[str]) -> None:
    """Control characters (ESC, C0, DEL, C1) never reach the UTF-8 output: removed, and named."""
    for fld in fields:
        if fld.control_field:
            data = fld.data or ""
            if not data.isprintable() and _CONTROLS.search(data):
                faults.append(f"{fld.tag}: control characters {_named(data)} removed")
                fld.data = _CONTROLS.sub("", data)
            continue
        if "".join(map(_VALUE, fld.subfields)).isprintable():
            continue  # the usual field: no value holds a control character
        for i, (code, value) in enumerate(fld.subfields):
            if not value.isprintable() and _CONTROLS.search(value):
                faults.append(f"{fld.tag} ${code}: control characters {_named(value)} removed")
                fld.subfields[i] = Subfield(code, _CONTROLS.sub("", value))


def _named(text: str) -> str:
    return " ".join(sorted({f"U+{ord(ch):04X}" for ch in _CONTROLS.findall(text)}))


def _fix_subfields(fld: Field, faults: list[str]) -> None:
    """Text before the first subfield code becomes ``$a`` (a fault); a dangling ``$$`` goes."""
    fixed = []
    for code, value in fld.subfields:
        if code != RAW_CODE:
            fixed.append(Subfield(code, value))
        elif value != "$$":
            faults.append(f"{fld.tag}: text before the first subfield code, kept as $a")
            fixed.append(Subfield("a", value))
    fld.subfields = fixed


def _set_charset(fld: Field | None) -> Field:
    """CNMARC 100 $a/26-29 = ``CNMARC_CHARSET``; a new blank 100 if there is none."""
    if fld is None:
        return Field("100", Indicators(" ", " "), [Subfield("a", " " * 26 + CNMARC_CHARSET + " " * 6)])
    for i, (code, value) in enumerate(fld.subfields):
        if code == "a":
            value = value.ljust(30)
            fld.subfields[i] = Subfield("a", value[:26] + CNMARC_CHARSET + value[30:])
            return fld
    fld.subfields.insert(0, Subfield("a", " " * 26 + CNMARC_CHARSET + " " * 6))
    return fld


def bib_id(library: str, sysno: str, qualified: bool) -> str:
    """A delivered bib's 001 (and the 004 of its holdings): ``<library><sysno>`` when qualified.

    Aleph numbers bibs per BIB library, so with several libraries the sysno alone is not unique
    and Alma could not link a holdings record to its bib. The qualified form is the P2E's.
    """
    return f"{library}{sysno}" if qualified else sysno


def is_data_field_tag(tag: str) -> bool:
    """A MARC data-field tag (``010``–``999``): one that can hold subfields."""
    return len(tag) == 3 and tag.isdigit() and tag >= "010"


def item_field(tag: str, item: dict[str, str]) -> Field | None:
    """One embedded item field (see the module docstring); None if the item has no values."""
    subfields = [
        Subfield(code, unicodedata.normalize("NFC", item[key]))
        for code, key in ITEM_SUBFIELDS
        if item.get(key)
    ]
    return Field(tag, Indicators(" ", " "), subfields) if subfields else None


_BY_TAG = attrgetter("tag")
_VALUE = itemgetter(1)  # of a subfield


# --- the transform ------------------------------------------------------------------------


def transform_bib(
    rec: AlephSeqRecord, options: BibOptions, items: list[dict[str, str]] | None = None
) -> BibResult:
    """One record: checks, repairs and the Alma shape (see the module docstring)."""
    record, flavour = rec.record, options.flavour
    record_id = f"{options.library}:{rec.sysno}"
    shape = record_flavour(record) if options.detect_flavour else None
    mismatch = ""
    if shape is not None and shape != flavour:
        if options.report_flavour_mismatch:
            why = "200 and 100 $a fixed data" if shape == "CNMARC" else "245"
            mismatch = f"the record has {shape}'s shape ({why}) in a {flavour} library: read as {shape}"
        flavour = shape
    title_tag = "200" if flavour == "CNMARC" else "245"
    aleph_035 = f"(ALEPH){options.library}{rec.sysno}"
    keep, drop_local = options.keep_local_tags, options.drop_local_tags
    nfc_now = not rec.encoding_errors  # else repair first, then NFC

    bad: list[str] = []
    dropped: Counter[str] = Counter()
    ldr_lines: list[str] = []
    kept: list[Field] = []
    has_title = has_856 = has_035 = False
    f100: Field | None = None
    for fld in record.fields:
        tag = fld.tag
        kind = tag_kind(tag)
        if tag == "LDR":
            ldr_lines.append(fld.data or "")
            continue
        if kind == LOCAL:
            if drop_local and tag not in keep:
                dropped[drop_kind(tag)] += 1
                if tag[:1].isdigit():
                    bad.append(f"tag {tag!r} looks like a mistyped MARC tag; field dropped")
                continue
            _clean(fld, [], nfc_now)  # kept on purpose: exempt from the rules
            kept.append(fld)
            continue
        if kind == BAD_DROPPED:
            dropped[drop_kind(tag)] += 1
            bad.append(f"tag {tag!r} is not 3 digits; field dropped")
            continue
        if tag == "001":
            continue
        if tag == "066":  # MARC-8 character sets present: the output is UTF-8, so it would be false
            dropped["066 (MARC-8 character sets)"] += 1
            continue
        control = fld.control_field
        if not control and not any(map(_VALUE, fld.subfields)):
            dropped["fields with no subfields"] += 1
            bad.append(f"{tag}: no subfields; field dropped")
            continue
        if kind == BAD_KEPT:
            bad.append(f"tag {tag!r} is not 3 digits")
        if not control:
            first, second = fld.indicators or ("", "")
            if first not in VALID_INDICATORS or second not in VALID_INDICATORS:
                bad.append(f"{tag}: indicators {first!r}{second!r}, written as blank")
                fld.indicators = Indicators(
                    first if first in VALID_INDICATORS else " ", second if second in VALID_INDICATORS else " "
                )
            if tag == title_tag:
                has_title = True
            elif tag == "856":
                has_856 = has_856 or any(code == "u" and value.strip() for code, value in fld.subfields)
            elif tag == "035":
                has_035 = has_035 or any(code == "a" and value == aleph_035 for code, value in fld.subfields)
            elif tag == "100" and f100 is None:
                f100 = fld
            subfields = fld.subfields  # _clean's test, inlined: most fields need nothing
            non_ascii = nfc_now and not "".join(map(_VALUE, subfields)).isascii()
            if non_ascii or RAW_CODE in map(_CODE, subfields):
                _clean(fld, bad, nfc_now)
        else:
            _clean(fld, bad, nfc_now)
        kept.append(fld)

    issues: list[Issue] = []
    if rec.encoding_errors:
        issues += repair_fields(
            kept,
            rec.encoding_errors,
            entity=ENTITY,
            record_id=record_id,
            prefer="gbk" if flavour == "CNMARC" else "latin1",
        )
        for fld in kept:
            _clean(fld, [], nfc=True)
    _strip_controls(kept, bad)
    issues += [Issue(rule, ENTITY, record_id, detail=detail) for rule, detail in rec.notes]
    if mismatch:
        issues.append(Issue("flavour_mismatch", ENTITY, record_id, detail=mismatch))
    leader = str(record.leader)
    if not rec.has_leader:
        faults: tuple[str, ...] = (_ldr_fault(ldr_lines[0]) if ldr_lines else "no LDR",)
        leader = ldr_lines[0] if ldr_lines else ""
    elif ldr_lines:
        faults = (f"a second LDR {ldr_lines[0]!r}",)
    else:
        faults = leader_faults(leader, flavour)
    reasons = []
    if faults:
        reasons.append(("invalid_leader", "; ".join(faults)))
    if not has_title:
        reasons.append(("missing_title", f"no {title_tag} field ({flavour})"))
    issues[:0] = [Issue(rule, ENTITY, record_id, detail=detail) for rule, detail in reasons]
    if bad:
        issues.append(Issue("invalid_indicators", ENTITY, record_id, detail="; ".join(bad)))
    if reasons:
        rule, detail = reasons[0]
        reject = Reject(
            ENTITY,
            record_id,
            rule,
            detail=detail,
            source=rec.source,
            line_no=rec.line_no,
            raw=leader if rule == "invalid_leader" else "",
        )
        return BibResult(None, issues, reject, has_856, dropped)

    kept.append(Field("001", data=bib_id(options.library, rec.sysno, options.qualified_ids)))
    if not has_035:
        kept.append(Field("035", Indicators(" ", " "), [Subfield("a", aleph_035)]))
    if flavour == "CNMARC" and f100 is None:
        kept.append(_set_charset(None))
    elif flavour == "CNMARC":
        _set_charset(f100)
    if options.items_field and items:
        kept += [f for f in (item_field(options.items_field, item) for item in items) if f is not None]
    kept.sort(key=_BY_TAG)
    record.fields = kept  # type: ignore[assignment]  # pymarc types it list[Field | RawField]
    record.leader = pymarc.Leader(output_leader(leader, flavour))
    if flavour == "CNMARC":  # keep leader/09 as is, but write UTF-8
        record.to_unicode, record.force_utf8 = False, True
    return BibResult(record, issues, None, has_856, dropped)


# --- ISO 2709 writer ----------------------------------------------------------------------
#
# The records are written here rather than with pymarc's ``Record.as_marc()``, which builds
# the same bytes through per-field f-strings, an encode per directory entry and repeated
# ``bytes +=`` (a fifth of the bib transform's time). The layout is MARC 21's "Record
# Structure" (loc.gov/marc/specifications/specrecstruc.html), i.e. ISO 2709:
#
# - leader, 24 characters: record length (0-4, five digits) and base address of data
#   (12-16, five digits) computed here, the rest as the record's leader;
# - directory, one 12-character entry per field (tag, 3; field length in bytes, 4; starting
#   character position from the base address, 5), then a field terminator (0x1E);
# - the fields: a control field is its data, a data field its two indicators and, per
#   subfield, the delimiter (0x1F), the code and the value; each ends with 0x1E;
# - the record terminator (0x1D).
#
# :func:`iso2709` returns exactly the bytes ``as_marc()`` does, so pymarc stays the reference:
# a record it does not cover (not UTF-8, a ``RawField``, a value that is not text, a tag
# pymarc rewrites, text that does not encode) is handed to ``as_marc()`` itself, which then
# writes it or raises its own error. ``tests/unit/test_marc_bibs.py`` checks both against
# each other and reads the output back with pymarc.

_JOIN = "".join  # of a subfield: its code and value
FIELD_TERMINATOR = "\x1e"
SUBFIELD_DELIMITER = "\x1f"
RECORD_TERMINATOR = b"\x1d"


def _field_text(fld: Field) -> str:
    """One field as ``Field.as_marc`` writes it (before encoding)."""
    if fld.control_field:
        return f"{fld.data}{FIELD_TERMINATOR}"
    ind = fld.indicators
    head = f"{ind[0]}{ind[1]}" if ind else ""
    if not fld.subfields:
        return head + FIELD_TERMINATOR
    # a subfield is a (code, value) tuple: "".join gives code + value (TypeError if not text)
    text = SUBFIELD_DELIMITER.join(map("".join, fld.subfields))
    return f"{head}{SUBFIELD_DELIMITER}{text}{FIELD_TERMINATOR}"


def iso2709(record: pymarc.Record) -> bytes:
    """``record.as_marc()``, faster: the record's ISO 2709 bytes (see the comment above).

    Like ``as_marc()``, sets leader/09 to ``a`` when ``record.to_unicode``."""
    if record.to_unicode:
        if isinstance(record.leader, pymarc.Leader):
            record.leader.coding_scheme = "a"
        else:
            record.leader = record.leader[0:9] + "a" + record.leader[10:]  # type: ignore[unreachable]
    leader, fields = str(record.leader), record.fields
    if len(leader) != 24 or not (leader[9] == "a" or record.force_utf8):
        return record.as_marc()  # not UTF-8: pymarc's Latin-1 path
    tags = [fld.tag for fld in fields]
    if not all(map(_plain_tag, tags)) or any(type(fld) is not Field for fld in fields):
        return record.as_marc()  # a tag pymarc rewrites, or a RawField
    try:
        encoded = [  # _field_text, inlined for the usual data field: this runs for every field
            (
                f"{fld.data}{FIELD_TERMINATOR}"
                if fld.control_field
                else f"{ind[0]}{ind[1]}{SUBFIELD_DELIMITER}"
                f"{SUBFIELD_DELIMITER.join(map(_JOIN, fld.subfields))}{FIELD_TERMINATOR}"
                if fld.subfields and (ind := fld._indicators)
                else _field_text(fld)
            ).encode("utf-8")
            for fld in fields
        ]
    except (UnicodeError, TypeError, AttributeError):
        return record.as_marc()  # pymarc writes it its own way, or raises its own error
    lengths = list(map(len, encoded))
    offsets = accumulate(lengths, initial=0)  # one more than the fields: zip stops at the last field
    directory = "".join(map("%s%04d%05d".__mod__, zip(tags, lengths, offsets, strict=False)))
    base = 24 + len(directory) + 1
    data = b"".join(encoded)
    head = f"{base + len(data) + 1:05d}{leader[5:12]}{base:05d}{leader[17:]}{directory}{FIELD_TERMINATOR}"
    return head.encode("ascii") + data + RECORD_TERMINATOR


@lru_cache(maxsize=1024)
def _plain_tag(tag: str) -> bool:
    """A tag the directory holds as it is: 3 ASCII letters or digits (pymarc rewrites others)."""
    return len(tag) == 3 and tag.isascii() and tag.isalnum()


def marc_bytes(record: pymarc.Record) -> tuple[bytes, str, str]:
    """``(ISO 2709 bytes, "", "")``, or ``(b"", reason, detail)`` when the record cannot be
    written: ``record_too_long`` (over 99,999 bytes, or a field over 9,999: the
    directory would be corrupt) or ``unwritable_record`` (an encoding error)."""
    try:
        data = iso2709(record)
    except (UnicodeError, ValueError) as exc:
        return b"", "unwritable_record", f"{type(exc).__name__}: {exc}"
    if len(data) > MAX_RECORD_BYTES or (int(data[12:17]) - 25) % 12:
        return (
            b"",
            "record_too_long",
            f"{len(data)} bytes, or a field over 9,999 bytes: too long for ISO 2709",
        )
    return data, "", ""


def transform_bibs(
    records: Iterable[AlephSeqRecord],
    options: BibOptions,
    out: BinaryIO,
    rejects: RejectLog,
    issues: IssueLog,
    index: list[dict] | None = None,
    items_for: Callable[[str], list[dict[str, str]]] | None = None,
) -> BibStats:
    """Stream records to ``out`` (ISO 2709); every record ends in ``out`` or ``rejects``.

    ``index`` (if given) gets one row per record (:data:`BIB_INDEX_SCHEMA`), rejected ones
    too. ``items_for(sysno)`` supplies the items to embed when ``options.items_field`` is set.
    A record that cannot be written as ISO 2709 is rejected as ``record_too_long`` (or
    ``unwritable_record``), so that ``records_in == records_out + rejected`` always holds
    (checked: ``UnbalancedError`` otherwise).
    """
    stats = BibStats()
    embed = items_for if options.items_field else None
    for rec in records:
        stats.records_in += 1
        result = transform_bib(rec, options, embed(rec.sysno) if embed else None)
        if result.issues:
            issues.extend(result.issues)
            stats.issues.update(issue.rule for issue in result.issues)
        if result.dropped:
            stats.dropped.update(result.dropped)
        reject = result.reject
        if result.record is not None:
            data, reason, detail = marc_bytes(result.record)
            if data:
                out.write(data)
                stats.records_out += 1
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
        if index is not None:
            index.append(
                {
                    "library": options.library,
                    "sysno": rec.sysno,
                    "has_856": result.has_856,
                    "rejected": reject is not None,
                }
            )
    return stats.check(ENTITY)


@dataclass
class EmbedStats(Tally):
    """Every record in is written (none is rejected); the items that went into them, and the
    bibs that could not take theirs."""

    items_embedded: int = 0
    not_embedded: list[str] = field(default_factory=list)  # bib ids too long for ISO 2709 with their items

    @property
    def records(self) -> int:
        """Records written (all of them: ``records_out == records_in``)."""
        return self.records_out


def embed_items(
    records: Iterable[pymarc.Record],
    library: str,
    tag: str,
    items_for: Callable[[str], list[dict[str, str]]],
    out: BinaryIO,
    qualified_ids: bool = False,
) -> EmbedStats:
    """Add one ``tag`` field per item to delivered bib records (import-profile loads).

    Every record is written: one that would pass ISO 2709's size limit with its items is
    written without them (its id in ``not_embedded``); its items stay in the items file.
    """
    stats = EmbedStats()
    for record in records:
        stats.records_in += 1
        control = record.get("001")
        sysno = (control.data or "") if control is not None else ""
        if qualified_ids:
            sysno = sysno.removeprefix(library)
        fields_ = [f for f in (item_field(tag, item) for item in items_for(sysno)) if f is not None]
        if fields_:
            for fld in fields_:
                record.add_ordered_field(fld)
            data, _, _ = marc_bytes(record)
            if data:
                out.write(data)
                stats.records_out += 1
                stats.items_embedded += len(fields_)
                continue
            stats.not_embedded.append(f"{library}:{sysno}")
            record.remove_field(*fields_)
        out.write(record.as_marc())
        stats.records_out += 1
    return stats.check("bibs_with_items")
