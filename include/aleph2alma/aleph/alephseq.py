"""ALEPHSEQ (Aleph sequential) reader and writer.

One field per line, fixed columns::

    000000002 24510 L $$aPropositional structure ...$$cJerrold J. Katz.
    ^sysno    ^tag ^ind ^L ^data (column 18 on)

The reader streams a file line by line (binary), groups lines into records and turns
each record into a ``pymarc.Record``; malformed lines go to a ``RejectLog`` and the
stream goes on. The writer gives the lines back, so that reading and writing an
export reproduces it byte for byte. Conventions that keep the round trip lossless:

- Data in a data field before its first ``$$`` (or a whole data field without ``$$``)
  is kept as a subfield with code ``""`` (:data:`RAW_CODE`), written back verbatim;
  so is a dangling ``$$`` at the end of a line (as ``Subfield("", "$$")``).
- Control fields (FMT, LDR, 000-009) keep their data verbatim, even when it holds
  ``$$`` (Aleph 004 often does); ``^`` is read as a blank in LDR and 00X and written
  back as ``^``. FMT is kept as a control field (pymarc only knows numeric ones).
- The LDR line at the head of a record (first, or right after FMT) becomes
  ``record.leader``; any other LDR line (a second one, one after other fields, one not
  24 characters long) stays an ``LDR`` control field in its place.
- Lines that are not valid UTF-8 are decoded with ``surrogateescape``: the original
  bytes come back with ``.encode("utf-8", "surrogateescape")``; open the writer's
  output with ``errors="surrogateescape"`` to write them back.

Normalised, not kept: CRLF line ends (written as LF), a missing final newline, a
literal blank in LDR/00X data (written as ``^``, which means the same), and lines
skipped by the reader (blank lines; malformed lines, which are rejected).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

import pymarc
from pymarc import Field, Indicators, Subfield

from aleph2alma.rejects import Reject, RejectLog

MIN_LINE = 18
"""Columns 0-17 hold system number, tag, indicators and ``L``; data starts at 18."""

RAW_CODE = ""
"""Subfield code of text that is not introduced by ``$$ + code`` (see module docstring)."""

LOCAL_TAGS = frozenset({"FMT", "CAT", "SYS", "OWN", "LKR", "SID", "BAS", "STA"})
ITEM_TAG, ITEM_INDICATORS = "Z30", Indicators("-", "1")
DELIMITER = "$$"

REASONS: dict[str, str] = {
    "short_line": f"line shorter than {MIN_LINE} characters",
    "bad_sysno": "columns 1-9 are not a 9-digit system number",
    "bad_separator": "columns 10, 16 and 18 must be blanks",
    "bad_tag": "tag (columns 11-13) is not 3 letters or digits",
    "bad_indicator": "indicators (columns 14-15) are not printable ASCII",
    "bad_format_column": "column 17 is not 'L'",
    "control_field_indicators": "control field (FMT, LDR, 00X) with non-blank indicators",
}
"""Reason codes of :func:`check_line`, with the text a librarian reads in reports."""


@dataclass
class AlephSeqRecord:
    """One ALEPHSEQ record: the MARC record plus where it came from."""

    sysno: str
    record: pymarc.Record
    items: list[dict[str, str]] = field(default_factory=list)
    source: str = ""
    line_no: int = 0
    encoding_errors: list[tuple[int, str]] = field(default_factory=list)
    has_leader: bool = True
    """False when the record had no LDR line at its head: the writer then writes none."""


# --- line level -------------------------------------------------------------------------

def _strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith(b"\n") else line


def _is_control_tag(tag: str) -> bool:
    return tag in ("FMT", "LDR") or (tag.isdigit() and tag < "010")


def _uses_caret(tag: str) -> bool:
    """LDR and 00X write a blank as ``^``; FMT is kept as read."""
    return tag != "FMT" and _is_control_tag(tag)


def is_local_tag(tag: str) -> bool:
    """Aleph-local tag (FMT, CAT, LKR, Z30 ...): a listed one or any tag with a non-digit.

    LDR is the MARC leader, not a local tag.
    """
    return tag != "LDR" and (tag in LOCAL_TAGS or not tag.isdigit())


_WELL_FORMED = re.compile(rb"[0-9]{9} [0-9A-Za-z]{3}[\x20-\x7e]{2} L ")


def check_line(line: bytes) -> str | None:
    """None if ``line`` (end of line allowed) is structurally valid, else a reason code."""
    if _WELL_FORMED.match(line):  # fast path for the usual line
        return _control_indicators(line)
    body = _strip_eol(line)
    if len(body) < MIN_LINE:
        return "short_line"
    if not body[:9].isdigit():
        return "bad_sysno"
    if body[9] != 0x20 or body[15] != 0x20 or body[17] != 0x20:
        return "bad_separator"
    tag = body[10:13]
    if not tag.isalnum():
        return "bad_tag"
    if not all(0x20 <= b < 0x7F for b in body[13:15]):
        return "bad_indicator"
    if body[16] != ord("L"):
        return "bad_format_column"
    return _control_indicators(body)


def _control_indicators(body: bytes) -> str | None:
    if body[13:15] != b"  " and _is_control_tag(body[10:13].decode("ascii")):
        return "control_field_indicators"
    return None


# --- grouping ---------------------------------------------------------------------------

_Line = tuple[int, bytes, str | None]  # (line_no, raw line incl. end of line, check_line reason)


def _grouped_lines(fh: BinaryIO) -> Iterator[tuple[str, list[_Line]]]:
    """Group lines into records: a valid line starts a record when its system number
    differs from the record's or when it is an FMT line.

    Invalid and blank lines never start a record: they stay with the record before them
    (or with the first record, at the top of the file). This rule is what lets
    :func:`split_ranges` find record boundaries from any offset, and keeps
    :func:`iter_raw_records` and :func:`read_alephseq` counting the same records.
    """
    sysno = ""
    lines: list[_Line] = []
    for line_no, line in enumerate(fh, start=1):
        reason = check_line(line) if line.strip() else "blank"
        if reason is None:
            line_sysno = line[:9].decode("ascii")
            if sysno and (line_sysno != sysno or line[10:13] == b"FMT"):
                yield sysno, lines
                lines = []
            sysno = line_sysno
        lines.append((line_no, line, reason))
    if lines:
        yield sysno, lines


def iter_raw_records(fh: BinaryIO) -> Iterator[tuple[str, int, bytes]]:
    """(sysno, first line_no, raw bytes incl. newlines) per record, without parsing fields.

    Line numbers count from 1 at the current position of ``fh``. Malformed lines are
    included in the bytes of the record they follow. A stretch with no valid line at
    all (a file of garbage) comes out as one record with sysno ``""``.
    """
    for sysno, lines in _grouped_lines(fh):
        yield sysno, lines[0][0], b"".join(line for _, line, _ in lines)


# --- fields -----------------------------------------------------------------------------

def parse_subfields(data: str) -> list[Subfield]:
    """Split data-field text at ``$$`` + code; text that no code introduces gets :data:`RAW_CODE`."""
    subfields: list[Subfield] = []
    pos = data.find(DELIMITER)
    if pos == -1:
        return [Subfield(RAW_CODE, data)] if data else []
    if pos > 0:
        subfields.append(Subfield(RAW_CODE, data[:pos]))
    while pos != -1:
        if pos + 2 == len(data):
            subfields.append(Subfield(RAW_CODE, DELIMITER))
            break
        nxt = data.find(DELIMITER, pos + 3)
        end = len(data) if nxt == -1 else nxt
        subfields.append(Subfield(data[pos + 2], data[pos + 3:end]))
        pos = nxt
    return subfields


def subfields_text(subfields: Iterable[tuple[str, str]]) -> str:
    return "".join(value if code == RAW_CODE else f"{DELIMITER}{code}{value}" for code, value in subfields)


def control_field(tag: str, data: str) -> Field:
    """A control field, also for tags pymarc does not see as one (FMT, LDR)."""
    result = Field(tag, data=data)
    if not result.control_field:
        result.control_field, result.data, result.subfields = True, data, []
        result._indicators = None  # pymarc's setter cannot clear them
    return result


def _item(subfields: list[Subfield]) -> dict[str, str]:
    item: dict[str, str] = {}
    for code, value in subfields:
        item[code] = f"{item[code]} ; {value}" if code in item else value
    return item


# --- reader -----------------------------------------------------------------------------

def _decode(data: bytes) -> tuple[str, bool]:
    """(text, ok): invalid UTF-8 keeps its bytes as surrogates for a later GBK attempt."""
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape"), False


class _RecordBuilder:
    def __init__(self, sysno: str, source: str, line_no: int, keep_local: bool) -> None:
        self.result = AlephSeqRecord(sysno, pymarc.Record(), [], source, line_no, [], has_leader=False)
        self.keep_local = keep_local
        self.at_head = True  # no field but FMT yet: an LDR here is the record's leader

    def add(self, line_no: int, body: bytes) -> None:
        tag, ind = body[10:13].decode("ascii"), Indicators(chr(body[13]), chr(body[14]))
        data, ok = _decode(body[MIN_LINE:])
        if not ok:
            self.result.encoding_errors.append((line_no, tag))
        if _uses_caret(tag):
            data = data.replace("^", " ")
        if tag == "LDR" and self.at_head and not self.result.has_leader and len(data) == 24:
            self.result.record.leader = pymarc.Leader(data)
            self.result.has_leader = True
            return
        self.at_head = self.at_head and tag == "FMT"
        if _is_control_tag(tag):
            new = control_field(tag, data)
        else:
            new = Field(tag, ind, parse_subfields(data))
            if tag == ITEM_TAG and ind == ITEM_INDICATORS:
                self.result.items.append(_item(new.subfields))
        if self.keep_local or not is_local_tag(tag):
            self.result.record.add_field(new)


def _reject(entity: str, source: str, line_no: int, line: bytes, reason: str) -> Reject:
    sysno = line[:9].decode("ascii") if line[:9].isdigit() else "?"
    raw = _strip_eol(line).decode("utf-8", "backslashreplace")
    return Reject(entity, sysno, reason, detail=REASONS[reason], source=source, line_no=line_no, raw=raw)


def _source_label(source: str | os.PathLike[str] | BinaryIO) -> str:
    if isinstance(source, str | os.PathLike):
        return os.path.basename(os.fspath(source))
    name = getattr(source, "name", None)
    return os.path.basename(name) if isinstance(name, str) else "<stream>"


def read_alephseq(source: str | os.PathLike[str] | BinaryIO, *, keep_local: bool = True,
                  source_name: str | None = None, rejects: RejectLog | None = None,
                  entity: str = "bibs") -> Iterator[AlephSeqRecord]:
    """Stream the records of an ALEPHSEQ file (path or binary file object).

    ``keep_local=False`` drops Aleph-local fields (Z30-1 items still fill ``.items``).
    Malformed lines are rejected (``rejects``, if given) and skipped; blank lines are
    skipped silently.
    """
    label = source_name or _source_label(source)
    with ExitStack() as stack:
        fh = stack.enter_context(open(source, "rb")) if isinstance(source, str | os.PathLike) else source
        for sysno, lines in _grouped_lines(fh):
            builder: _RecordBuilder | None = None
            for line_no, line, reason in lines:
                if reason is None:
                    builder = builder or _RecordBuilder(sysno, label, line_no, keep_local)
                    builder.add(line_no, _strip_eol(line))
                elif reason != "blank" and rejects is not None:
                    rejects.add(_reject(entity, label, line_no, line, reason))
            if builder is not None:
                yield builder.result


# --- writer -----------------------------------------------------------------------------

def _line(sysno: str, tag: str, ind1: str, ind2: str, data: str) -> str:
    if len(tag) != 3 or "\n" in data:
        raise ValueError(f"record {sysno}: cannot write field {tag!r} as one ALEPHSEQ line: {data[:60]!r}")
    return f"{sysno} {tag}{ind1}{ind2} L {data}"


def field_line(sysno: str, fld: Field) -> str:
    """The ALEPHSEQ line of one field (no newline)."""
    if _is_control_tag(fld.tag) and not fld.control_field:
        # Field("FMT", data=...) drops the data: pymarc only knows numeric control tags.
        raise ValueError(f"record {sysno}: {fld.tag} is not a control field; build it with control_field()")
    if fld.control_field:
        data = fld.data or ""
        return _line(sysno, fld.tag, " ", " ", data.replace(" ", "^") if _uses_caret(fld.tag) else data)
    ind1, ind2 = fld.indicators or (" ", " ")
    return _line(sysno, fld.tag, ind1, ind2, subfields_text(fld.subfields))


def record_lines(sysno: str, record: pymarc.Record, items: list[dict[str, str]] | None = None,
                 *, leader: bool = True) -> list[str]:
    """ALEPHSEQ lines (no newlines) of a record: fields in order, the leader after a
    leading FMT (``leader=False`` writes none), then one Z30-1 line per item in ``items``.
    """
    if len(sysno) != 9 or not (sysno.isascii() and sysno.isdigit()):
        raise ValueError(f"system number must be 9 digits, got {sysno!r}")
    fields = record.fields
    head = 1 if fields and fields[0].tag == "FMT" else 0
    lines = [field_line(sysno, fld) for fld in fields[:head]]
    if leader:
        lines.append(_line(sysno, "LDR", " ", " ", str(record.leader).replace(" ", "^")))
    lines += [field_line(sysno, fld) for fld in fields[head:]]
    lines += [_line(sysno, ITEM_TAG, *ITEM_INDICATORS, subfields_text(item.items())) for item in items or []]
    return lines


def write_alephseq(records: Iterable[AlephSeqRecord], out: TextIO) -> int:
    """Write records as ALEPHSEQ lines; returns the number of records written.

    ``.items`` are written as Z30-1 lines only when the record holds no Z30-1 field
    (read with ``keep_local=False``), so items are never written twice.
    """
    count = 0
    for rec in records:
        has_items = any(f.tag == ITEM_TAG and f.indicators == ITEM_INDICATORS for f in rec.record.fields)
        lines = record_lines(rec.sysno, rec.record, None if has_items else rec.items, leader=rec.has_leader)
        out.writelines(line + "\n" for line in lines)
        count += 1
    return count


# --- splitting --------------------------------------------------------------------------

def _next_boundary(fh: BinaryIO, target: int, size: int) -> int:
    """Offset of the first record start at or after ``target`` that is a change of
    system number (always a boundary under the rule of :func:`_grouped_lines`)."""
    if target >= size:
        return size
    fh.seek(target - 1)
    fh.readline()  # finish the line that holds byte target-1
    pos, previous = fh.tell(), b""
    for line in iter(fh.readline, b""):
        if check_line(line) is None:
            if previous and line[:9] != previous:
                return pos
            previous = line[:9]
        pos += len(line)
    return size


def split_ranges(path: str | os.PathLike[str], part_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` of about ``part_bytes`` that cover the file, each
    ending at a record boundary; found by seeking. An empty file gives ``[(0, 0)]``."""
    if part_bytes <= 0:
        raise ValueError(f"part_bytes must be positive, got {part_bytes}")
    size = os.path.getsize(path)
    ranges: list[tuple[int, int]] = []
    start = 0
    with open(path, "rb") as fh:
        while start < size:
            end = _next_boundary(fh, start + part_bytes, size)
            ranges.append((start, end))
            start = end
    return ranges or [(0, 0)]
