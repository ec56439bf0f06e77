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
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

import pymarc
from pymarc import Field, Indicators, Subfield

from aleph2alma.rejects import Reject, RejectLog

MIN_LINE = 18
"""Columns 0-17 hold system number, tag, indicators and ``L``; data starts at 18."""

MAX_LINE = 1 << 20
"""Longest line read (bytes, line end included). A MARC record is at most 99,999 bytes, so an
ALEPHSEQ field line is far shorter; a longer "line" (a NUL-filled or binary file with no line
end) is rejected as ``line_too_long`` and skipped without being held in memory."""

MAX_RECORD_BYTES = 64 << 20
"""Largest record (all its lines) held in memory; past it the file is not an Aleph export and
reading stops with :class:`AlephSeqError`."""

MAX_LINE_REJECTS = 10_000
"""Malformed lines rejected one by one per stream; past it they are counted in one
``too_many_malformed_lines`` reject, so rejects stay small whatever the input."""

CHUNK = 1 << 20
"""Bytes read at a time when skipping the rest of an over-long line."""

EXCERPT = 200
"""Characters of a rejected line kept in the reject (``raw``), never the whole line."""

RAW_CODE = ""
"""Subfield code of text that is not introduced by ``$$ + code`` (see module docstring)."""

LOCAL_TAGS = frozenset({"FMT", "CAT", "SYS", "OWN", "LKR", "SID", "BAS", "STA"})
ITEM_TAG, ITEM_INDICATORS = "Z30", Indicators("-", "1")
DELIMITER = "$$"

TRUNCATED = "truncated_record"
"""Reject reason of the last record of a file that does not end with a line end."""

REASONS: dict[str, str] = {
    "short_line": f"line shorter than {MIN_LINE} characters",
    "bad_sysno": "columns 1-9 are not a 9-digit system number",
    "bad_separator": "columns 10, 16 and 18 must be blanks",
    "bad_tag": "tag (columns 11-13) is not 3 letters or digits",
    "bad_indicator": "indicators (columns 14-15) are not printable ASCII",
    "bad_format_column": "column 17 is not 'L'",
    "control_field_indicators": "control field (FMT, LDR, 00X) with non-blank indicators",
    "line_too_long": f"line longer than {MAX_LINE:,} bytes (not an ALEPHSEQ line; only its start is kept)",
    "too_many_malformed_lines": f"more than {MAX_LINE_REJECTS:,} malformed lines: the rest are only counted",
    "truncated_record": "the file ends inside this record, with no line end after its last line: "
    "the export was cut (transfer stopped, disk full); export the library again",
}
"""Reason codes of :func:`check_line`, with the text a librarian reads in reports."""


class AlephSeqError(ValueError):
    """The input cannot be an ALEPHSEQ export at all (a record larger than any Aleph record)."""


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
    notes: list[tuple[str, str]] = field(default_factory=list)
    """What the reader found about the record as a whole, as ``(rule, detail)``: how its
    character set was decided, a directory rebuilt, pymarc's warnings (ISO 2709 and MARCXML
    readers). The transform turns them into issues with the record's id."""


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
_CONTROL_TAGS = frozenset({b"FMT", b"LDR", *(b"00%d" % i for i in range(10))})
"""The tags of :func:`_is_control_tag`, as bytes: FMT, LDR, 000-009."""


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


@dataclass(frozen=True)
class RawLine:
    """One line as read: where it is, its bytes and what :func:`check_line` says of it.

    ``data`` is the line with its line end; for a ``line_too_long`` line, only its first
    :data:`EXCERPT` bytes (``length`` is the real length). ``reason`` is None for a valid
    line, ``"blank"`` for a blank one, else a key of :data:`REASONS`.
    """

    line_no: int
    offset: int
    data: bytes
    reason: str | None
    length: int

    @property
    def ends(self) -> bool:
        """Whether the line has its line end (the last line of a cut file has none)."""
        return self.data.endswith(b"\n")


def scan_lines(fh: BinaryIO, *, max_line: int = MAX_LINE, offset: int = 0) -> Iterator[RawLine]:
    """The lines of ``fh`` from its current position, each at most ``max_line`` bytes in memory.

    A longer line is read on in chunks to its end and comes out as ``line_too_long`` with an
    excerpt: a 2 GB file of NULs with no line end is one reject, read in bounded memory.
    ``offset`` is the byte offset of the current position (for the offsets reported).
    """
    line_no = 0
    while line := fh.readline(max_line + 1):
        line_no += 1
        length = len(line)
        if length > max_line:
            head = line[:EXCERPT]
            while not line.endswith(b"\n") and (line := fh.readline(CHUNK)):
                length += len(line)
            yield RawLine(line_no, offset, head, "line_too_long", length)
        else:
            yield RawLine(line_no, offset, line, check_line(line) if line.strip() else "blank", length)
        offset += length


def _starts_record(line: RawLine, sysno: str) -> bool:
    return bool(sysno) and (line.data[:9].decode("ascii") != sysno or line.data[10:13] == b"FMT")


def _too_large(sysno: str, line: RawLine) -> AlephSeqError:
    return AlephSeqError(
        f"record {sysno or '(no system number)'} passes {MAX_RECORD_BYTES:,} bytes at line {line.line_no} "
        f"(byte offset {line.offset:,}): no Aleph record is this large; is this an ALEPHSEQ export?"
    )


def grouped_lines(
    fh: BinaryIO, on_invalid: Callable[[RawLine, str], None] | None = None, *, offset: int = 0
) -> Iterator[tuple[str, list[RawLine]]]:
    """Group lines into records: a valid line starts a record when its system number
    differs from the record's or when it is an FMT line.

    Invalid and blank lines never start a record: they stay with the record before them
    (or with the first record, at the top of the file). This rule is what lets
    :func:`split_ranges` find record boundaries from any offset, and keeps
    :func:`iter_raw_records` and :func:`read_alephseq` counting the same records.

    With ``on_invalid``, invalid and blank lines are handed to it as they are read, with the
    system number of the record they follow (``""`` before the first valid line), and not
    kept (a file of garbage lines then costs no memory); without, they are kept in the
    record's lines. A record past :data:`MAX_RECORD_BYTES` raises :class:`AlephSeqError`.
    """
    sysno = ""
    lines: list[RawLine] = []
    size = 0
    for line in scan_lines(fh, offset=offset):
        if line.reason is None:
            if _starts_record(line, sysno):
                yield sysno, lines
                lines, size = [], 0
            sysno = line.data[:9].decode("ascii")
        elif on_invalid is not None:
            on_invalid(line, sysno)
            continue
        lines.append(line)
        size += line.length
        if size > MAX_RECORD_BYTES:
            raise _too_large(sysno, line)
    if lines:
        yield sysno, lines


def _valid_groups(
    fh: BinaryIO, on_invalid: Callable[[RawLine, str], None], *, offset: int = 0
) -> Iterator[tuple[str, list[tuple[int, bytes]], RawLine]]:
    """:func:`grouped_lines` with ``on_invalid``, fused with :func:`scan_lines` for
    :func:`read_alephseq`: the same records at the same points of the stream, the same calls
    to ``on_invalid`` in the same order, the same :class:`AlephSeqError`; but a valid line is
    kept as ``(line_no, bytes)`` and only the last line of a record as a :class:`RawLine`.
    Lines the fast test (:data:`_WELL_FORMED`, and blank indicators or a tag that is not a
    control tag) does not pass go through :func:`check_line` as in :func:`scan_lines`."""
    readline, well_formed = fh.readline, _WELL_FORMED.match
    limit = MAX_LINE + 1
    sysno = b""
    lines: list[tuple[int, bytes]] = []
    size = line_no = last_no = last_offset = 0
    while line := readline(limit):
        line_no += 1
        length = len(line)
        if length > MAX_LINE:
            head = line[:EXCERPT]
            while not line.endswith(b"\n") and (line := readline(CHUNK)):
                length += len(line)
            on_invalid(RawLine(line_no, offset, head, "line_too_long", length), sysno.decode("ascii"))
            offset += length
            continue
        if not (well_formed(line) and (line[13:15] == b"  " or line[10:13] not in _CONTROL_TAGS)):
            reason = check_line(line) if line.strip() else "blank"
            if reason is not None:
                on_invalid(RawLine(line_no, offset, line, reason, length), sysno.decode("ascii"))
                offset += length
                continue
        key = line[:9]
        if sysno and (key != sysno or line[10:13] == b"FMT"):
            end = lines[-1][1]
            yield sysno.decode("ascii"), lines, RawLine(last_no, last_offset, end, None, len(end))
            lines, size = [], 0
        sysno = key
        lines.append((line_no, line))
        size += length
        if size > MAX_RECORD_BYTES:
            raise _too_large(sysno.decode("ascii"), RawLine(line_no, offset, line, None, length))
        last_no, last_offset = line_no, offset
        offset += length
    if lines:
        end = lines[-1][1]
        yield sysno.decode("ascii"), lines, RawLine(last_no, last_offset, end, None, len(end))


def count_records(fh: BinaryIO, on_invalid: Callable[[RawLine, str], None], *, offset: int = 0) -> int:
    """The records :func:`grouped_lines` finds in ``fh``, with the same calls to ``on_invalid``
    (blank lines included) and the same :class:`AlephSeqError`; ``offset`` as in
    :func:`scan_lines`. The extraction counts each part with it: valid lines are only
    matched against :data:`_WELL_FORMED`, not checked one by one in Python."""
    return sum(1 for _ in _valid_groups(fh, on_invalid, offset=offset))


def iter_raw_records(fh: BinaryIO) -> Iterator[tuple[str, int, bytes]]:
    """(sysno, first line_no, raw bytes incl. newlines) per record, without parsing fields.

    Line numbers count from 1 at the current position of ``fh``. Malformed lines are
    included in the bytes of the record they follow (a ``line_too_long`` line by its
    excerpt). A stretch with no valid line at all (a file of garbage) comes out as one
    record with sysno ``""``.
    """
    for sysno, lines in grouped_lines(fh):
        yield sysno, lines[0].line_no, b"".join(line.data for line in lines)


# --- fields -----------------------------------------------------------------------------


_new_tuple = tuple.__new__
"""``_new_tuple(Subfield, (code, value))`` is ``Subfield(code, value)`` without the named
tuple's Python-level ``__new__`` (the reader makes one per subfield of the whole export)."""


def parse_subfields(data: str) -> list[Subfield]:
    """Split data-field text at ``$$`` + code; text that no code introduces gets :data:`RAW_CODE`."""
    if "$$$" not in data:
        # No run of three ``$``: the ``$$`` are disjoint, so ``str.split`` finds the same
        # delimiters as the scan below, at C speed. An empty piece can then only be the last
        # (a dangling ``$$``).
        pieces = data.split(DELIMITER)
        head = pieces[0]
        if pieces[-1] or len(pieces) == 1:
            subfields = [_new_tuple(Subfield, (piece[0], piece[1:])) for piece in pieces[1:]]
        else:
            subfields = [_new_tuple(Subfield, (piece[0], piece[1:])) for piece in pieces[1:-1]]
            subfields.append(_new_tuple(Subfield, (RAW_CODE, DELIMITER)))
        if head:
            subfields.insert(0, _new_tuple(Subfield, (RAW_CODE, head)))
        return subfields
    subfields = []
    pos = data.find(DELIMITER)
    if pos > 0:
        subfields.append(Subfield(RAW_CODE, data[:pos]))
    while pos != -1:
        if pos + 2 == len(data):
            subfields.append(Subfield(RAW_CODE, DELIMITER))
            break
        nxt = data.find(DELIMITER, pos + 3)
        end = len(data) if nxt == -1 else nxt
        subfields.append(Subfield(data[pos + 2], data[pos + 3 : end]))
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


_new_field = Field.__new__
"""The reader makes its fields with ``_new_field(Field)`` and sets pymarc's own attributes
(``tag``, ``data``, ``_indicators``, ``subfields``, ``control_field``) to what
``Field(tag, indicators, subfields)`` or :func:`control_field` would: for the 3-character
ASCII tags of ALEPHSEQ lines, ``Field.__init__`` only normalises and checks its arguments,
which cost more than the rest of reading a line (tested equal in ``tests/unit/test_alephseq.py``)."""


def _item(subfields: list[Subfield]) -> dict[str, str]:
    item: dict[str, str] = {}
    for code, value in subfields:
        item[code] = f"{item[code]} ; {value}" if code in item else value
    return item


# --- reader -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _TagInfo:
    tag: str
    control: bool
    caret: bool
    local: bool


_TAG_INFO: dict[str, _TagInfo] = {}
_INDICATORS: dict[str, Indicators] = {}


def _tag_info(tag: str) -> _TagInfo:
    info = _TAG_INFO.get(tag)
    if info is None:
        info = _TAG_INFO[tag] = _TagInfo(tag, _is_control_tag(tag), _uses_caret(tag), is_local_tag(tag))
    return info


def _indicators(text: str) -> Indicators:
    ind = _INDICATORS.get(text)
    if ind is None:
        ind = _INDICATORS[text] = Indicators(text[0], text[1])
    return ind


def _line_texts(lines: list[tuple[int, bytes]], encoding_errors: list[tuple[int, str]]) -> list[str]:
    """The lines as text, without their ``\\n``. Decoded all at once when the record is valid
    UTF-8 (the line ends are ASCII, so it is exactly when every line is); else line by line,
    invalid UTF-8 kept as surrogates (``surrogateescape``) for a later GBK attempt and listed
    in ``encoding_errors`` as ``(line_no, tag)``. Columns 0-17 are ASCII (:func:`check_line`):
    a line is valid UTF-8 exactly when its data is."""
    try:
        return b"".join([line for _, line in lines]).decode("utf-8").split("\n")
    except UnicodeDecodeError:
        pass
    texts = []
    for line_no, line in lines:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = line.decode("utf-8", "surrogateescape")
            encoding_errors.append((line_no, text[10:13]))
        texts.append(text[:-1] if text.endswith("\n") else text)
    return texts


def _build_record(
    sysno: str, source: str, lines: list[tuple[int, bytes]], keep_local: bool
) -> AlephSeqRecord:
    """One record from its valid lines ``(line_no, line with its line end)``."""
    result = AlephSeqRecord(sysno, pymarc.Record(), [], source, lines[0][0], [], has_leader=False)
    fields = result.record.fields
    at_head = True  # no field but FMT yet: an LDR here is the record's leader
    texts = _line_texts(lines, result.encoding_errors)
    for (_, line), text in zip(lines, texts, strict=False):  # texts: one more ("") after a last line end
        if text[-1:] == "\r" and line.endswith(b"\r\n"):
            text = text[:-1]  # CRLF
        info = _TAG_INFO.get(text[10:13]) or _tag_info(text[10:13])
        tag, data = info.tag, text[MIN_LINE:]
        if info.control:
            if info.caret:
                data = data.replace("^", " ")
            if tag == "LDR" and at_head and not result.has_leader and len(data) == 24:
                result.record.leader = pymarc.Leader(data)
                result.has_leader = True
                continue
            at_head = at_head and tag == "FMT"
            new = _new_field(Field)  # = control_field(tag, data)
            new.tag, new.data, new._indicators, new.subfields, new.control_field = tag, data, None, [], True
        else:
            at_head = False
            ind = _INDICATORS.get(text[13:15]) or _indicators(text[13:15])
            new = _new_field(Field)  # = Field(tag, ind, parse_subfields(data))
            new.tag, new.data, new._indicators, new.subfields = tag, None, ind, parse_subfields(data)
            new.control_field = False
            if tag == ITEM_TAG and ind == ITEM_INDICATORS:
                result.items.append(_item(new.subfields))
        if keep_local or not info.local:
            fields.append(new)
    return result


def excerpt(data: bytes) -> str:
    """At most :data:`EXCERPT` characters of a line, as text a report can show."""
    text = _strip_eol(data)[:EXCERPT].decode("utf-8", "backslashreplace")[:EXCERPT]
    return text + "…" if len(_strip_eol(data)) > EXCERPT else text


def line_reject(entity: str, record_id: str, source: str, line: RawLine, *, detail: str = "") -> Reject:
    """The reject of one malformed line: its reason, where it is and an excerpt, never the whole line."""
    reason = line.reason or "blank"
    text = REASONS.get(reason, reason)
    if line.reason == "line_too_long":
        text += f"; the line has {line.length:,} bytes"
    if detail:
        text += f"; {detail}"
    return Reject(
        entity, record_id, reason, detail=text, source=source, line_no=line.line_no, raw=excerpt(line.data)
    )


class LineRejects:
    """The malformed lines of one stream, sent to ``add``: the first ``limit`` one by one, the
    rest counted and reported by :meth:`close` as one ``too_many_malformed_lines`` reject."""

    def __init__(
        self, add: Callable[[Reject], None], entity: str, source: str, limit: int = MAX_LINE_REJECTS
    ) -> None:
        self._add, self.entity, self.source, self.limit = add, entity, source, limit
        self.count = 0
        """Malformed lines seen."""
        self.written = 0
        """Rejects sent to ``add`` (one per line up to ``limit``, then the summary)."""
        self._skipped: list[tuple[RawLine, str]] = []  # (first, its record id), (last, …) past the limit
        self._closed = False

    def _emit(self, reject: Reject) -> None:
        self.written += 1
        self._add(reject)

    def reject(self, line: RawLine, record_id: str, detail: str = "") -> None:
        self.count += 1
        if self.count <= self.limit:
            self._emit(line_reject(self.entity, record_id, self.source, line, detail=detail))
        else:
            self._skipped[1:] = [(line, record_id)]
            if len(self._skipped) == 1:
                self._skipped.append((line, record_id))

    def close(self) -> None:
        """Send the summary of the lines past the limit, if any (once)."""
        if self._closed or not self._skipped:
            return
        self._closed = True
        (first, record_id), (last, _) = self._skipped[0], self._skipped[-1]
        self._emit(
            Reject(
                self.entity,
                record_id,
                "too_many_malformed_lines",
                detail=f"{REASONS['too_many_malformed_lines']}: {self.count - self.limit:,} more, "
                f"lines {first.line_no:,} to {last.line_no:,} "
                f"(byte offsets {first.offset:,} to {last.offset:,})",
                source=self.source,
                line_no=first.line_no,
                raw=excerpt(first.data),
            )
        )


def _line_sysno(line: RawLine) -> str:
    return line.data[:9].decode("ascii") if line.data[:9].isdigit() else "?"


def _source_label(source: str | os.PathLike[str] | BinaryIO) -> str:
    if isinstance(source, str | os.PathLike):
        return os.path.basename(os.fspath(source))
    name = getattr(source, "name", None)
    return os.path.basename(name) if isinstance(name, str) else "<stream>"


def _cut(last: RawLine | None) -> bool:
    """Whether the file's last line was cut: it has no line end (and is not blank)."""
    return last is not None and not last.ends and last.reason != "blank"


def read_alephseq(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    keep_local: bool = True,
    source_name: str | None = None,
    rejects: RejectLog | None = None,
    entity: str = "bibs",
    malformed: Callable[[Reject], None] | None = None,
) -> Iterator[AlephSeqRecord]:
    """Stream the records of an ALEPHSEQ file (path or binary file object).

    ``keep_local=False`` drops Aleph-local fields (Z30-1 items still fill ``.items``).
    Malformed lines are rejected and skipped (to ``malformed`` if given, else to
    ``rejects``; past :data:`MAX_LINE_REJECTS` they are counted in one reject); blank lines
    are skipped silently. Lines are read in bounded memory (:func:`scan_lines`).

    When the file does not end with a line end, its last line was cut and the last record is
    incomplete: it is not yielded but rejected (``truncated_record``, to ``rejects``) with
    its system number. (A file cut exactly at a line end cannot be told from a whole one:
    ALEPHSEQ has no record length or trailer.)
    """
    label = source_name or _source_label(source)
    sink = malformed or (rejects.add if rejects is not None else None)
    bad = LineRejects(sink, entity, label) if sink is not None else None
    last: list[RawLine] = []

    def on_invalid(line: RawLine, _sysno: str) -> None:
        last[:] = [line]
        if bad is not None and line.reason != "blank":
            bad.reject(line, _line_sysno(line))

    pending: AlephSeqRecord | None = None
    with ExitStack() as stack:
        fh = stack.enter_context(open(source, "rb")) if isinstance(source, str | os.PathLike) else source
        for sysno, lines, last_line in _valid_groups(fh, on_invalid):
            record = _build_record(sysno, label, lines, keep_local)
            if pending is not None:
                yield pending
            pending = record
            if not last or last[0].line_no < last_line.line_no:
                last[:] = [last_line]
    if bad is not None:
        bad.close()
    if pending is not None and _cut(last[0] if last else None):
        if rejects is not None:
            cut = last[0]
            rejects.add(
                Reject(
                    entity,
                    pending.sysno,
                    "truncated_record",
                    detail=f"{REASONS['truncated_record']}; line {cut.line_no:,} has no line end",
                    source=label,
                    line_no=pending.line_no,
                    raw=excerpt(cut.data),
                )
            )
    elif pending is not None:
        yield pending


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


def record_lines(
    sysno: str, record: pymarc.Record, items: list[dict[str, str]] | None = None, *, leader: bool = True
) -> list[str]:
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
    system number (always a boundary under the rule of :func:`grouped_lines`)."""
    if target >= size:
        return size
    fh.seek(target - 1)
    while (chunk := fh.readline(CHUNK)) and not chunk.endswith(b"\n"):
        pass  # finish the line that holds byte target-1, in bounded reads
    previous = b""
    for line in scan_lines(fh, offset=fh.tell()):
        if line.reason is None:
            if previous and line.data[:9] != previous:
                return line.offset
            previous = line.data[:9]
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
