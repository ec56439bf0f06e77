"""Read bibliographic input in any of the three formats Aleph sites hand over.

:func:`detect_format` sniffs the first bytes of a file:

- ``marcxml``: optional BOM and whitespace, then ``<``, and ``record`` within the first
  4 KB (``<?xml …?><collection …><record>``, or a bare ``<record>``);
- ``alephseq``: the first non-blank line is a valid ALEPHSEQ line (``aleph.alephseq.check_line``);
- ``iso2709``: five digits of record length, then a leader whose base address
  (positions 12-16) is digits.

:func:`read_records` turns each format into the ``AlephSeqRecord`` shape the transforms
take. For ISO 2709 and MARCXML, ``sysno`` is the 001 (stripped) or, without one, the
running number of the record (9 digits); ``line_no`` is the record's position in the file
(1-based) and ``source`` the file name.

ISO 2709 is read permissively, record by record. Each record's directory is checked
against its field terminators (rebuilt from them when that is unambiguous, else the record
is rejected as ``directory_mismatch``) and its character set is decided by evidence, not
by leader/09 alone: leader/09 ``a``, a CNMARC/UNIMARC 100 $a/26-29 ``50``, bytes that are
valid multi-byte UTF-8 with no MARC-8 escapes, and MARC-8 only when nothing says otherwise
(``marc.iso2709``; ``force_utf8=True`` reads every record as UTF-8). What decided, and
evidence that contradicts it, travel with the record as ``notes`` (``encoding_evidence``,
``encoding_conflict``, ``directory_rebuilt``, and pymarc's warnings as ``marc_warning``);
the transform turns them into issues with the record's id. Records are split at the record
terminator (0x1D) rather than trusted to their length field, so one broken record does not
end the stream: it becomes a reject with its position, byte offset and reason (pymarc's
exception, in snake case: ``record_length_invalid``, ``base_address_invalid``,
``record_directory_invalid``, ``truncated_record`` for a record shorter than its leader's
length …) and reading goes on at the next record; the reject keeps an excerpt of the bytes
(``alephseq.EXCERPT``), not the whole chunk. Memory is bounded: bytes with no terminator
are given up as a broken record every ``MAX_RECORD`` bytes. Bytes that are not UTF-8 in a
record read as UTF-8 are kept (``surrogateescape``) and listed in ``encoding_errors``, so
the bib transform repairs them (GBK, Latin-1) or reports them.

MARCXML is streamed (``iterparse``; memory stays flat), namespace or not. A leader that
is not 24 characters is kept as an ``LDR`` field with ``has_leader=False``, like the
ALEPHSEQ reader does, so the transform reports it. An XML syntax error ends the file: it
is one reject (``xml_syntax_error``, with line and column) after the records before it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import BinaryIO, Literal

import pymarc
from pymarc import Field, Indicators, Subfield
from pymarc.exceptions import EndOfRecordNotFound, PymarcException
from pymarc.marc8 import marc8_to_unicode

from aleph2alma.aleph.alephseq import AlephSeqRecord, check_line, control_field, excerpt, read_alephseq
from aleph2alma.marc.encoding import has_undecoded
from aleph2alma.marc.iso2709 import (
    Charset,
    DirectoryMismatch,
    DirectoryRebuilt,
    check_directory,
    decide_charset,
)
from aleph2alma.rejects import Reject, RejectLog

Format = Literal["alephseq", "iso2709", "marcxml"]
FORMATS: tuple[Format, ...] = ("alephseq", "iso2709", "marcxml")
SNIFF_BYTES = 4096
RECORD_END = b"\x1d"
READ_CHUNK = 1 << 20
MAX_RECORD = 99_999
"""ISO 2709 records are at most this long: past it with no terminator, the bytes are a broken record."""

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


class MarcFormatError(ValueError):
    """A file is not ALEPHSEQ, ISO 2709 or MARCXML (or a format name is unknown)."""


def detect_format(path: str | os.PathLike[str]) -> Format:
    """The format of ``path`` from its first bytes; :class:`MarcFormatError` if none fits."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<") and b"record" in text:
        return "marcxml"
    first_line = next((line for line in text.splitlines(keepends=True) if line.strip()), b"")
    if first_line and check_line(first_line) is None:
        return "alephseq"
    if len(head) >= 24 and head[:5].isdigit() and head[12:17].isdigit():
        return "iso2709"
    shown = head[:40].decode("utf-8", "backslashreplace") if head else "nothing: the file is empty"
    raise MarcFormatError(f"{os.fspath(path)}: not ALEPHSEQ, ISO 2709 or MARCXML (starts with {shown!r})")


def read_records(
    path: str | os.PathLike[str],
    fmt: Format | None = None,
    *,
    rejects: RejectLog,
    library: str = "",
    entity: str = "bibs",
    force_utf8: bool = False,
) -> Iterator[AlephSeqRecord]:
    """Stream the records of ``path`` (format sniffed unless ``fmt`` is given).

    ``library`` prefixes reject ids: ``<library>:<file>@<byte offset>`` for an unreadable ISO 2709
    record, ``<library>:#<position>`` after an XML syntax error. An empty file
    yields nothing.
    """
    if fmt is None:
        if os.path.getsize(path) == 0:
            return
        fmt = detect_format(path)
    if fmt == "alephseq":
        yield from read_alephseq(path, rejects=rejects, entity=entity)
    elif fmt == "iso2709":
        with open(path, "rb") as fh:
            yield from _read_iso2709(fh, os.path.basename(path), rejects, library, entity, force_utf8)
    elif fmt == "marcxml":
        yield from _read_marcxml(path, rejects, library, entity)
    else:
        raise MarcFormatError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")


# --- ISO 2709 -----------------------------------------------------------------------------


def iter_chunks(fh: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(byte offset, record bytes incl. terminator) split at 0x1D; line ends between
    records are skipped; trailing bytes with no terminator come last, as they are."""
    offset, buffer = 0, b""
    while True:
        block = fh.read(READ_CHUNK)
        if not block:
            break
        buffer += block
        start = 0
        while (end := buffer.find(RECORD_END, start)) != -1:
            chunk = buffer[start : end + 1]
            skip = len(chunk) - len(chunk.lstrip(b"\r\n"))
            yield offset + start + skip, chunk[skip:]
            start = end + 1
        offset += start
        buffer = buffer[start:]
        if len(buffer) > MAX_RECORD:  # no terminator in sight: give the bytes up as one broken record
            yield offset, buffer
            offset, buffer = offset + len(buffer), b""
    rest = buffer.lstrip(b"\r\n")
    if rest.strip():
        yield offset + len(buffer) - len(rest), rest


def _reason(exc: Exception) -> str:
    return _CAMEL.sub("_", type(exc).__name__).lower()


def _sysno(record: pymarc.Record, position: int) -> str:
    fields = record.get_fields("001")
    value = (fields[0].data or "").strip() if fields else ""
    return value or f"{position:09d}"


def _ascii_100a(raw: pymarc.Record) -> str:
    for fld in raw.get_fields("100"):
        if not fld.control_field:
            for code, value in fld.subfields:
                if code == "a":
                    return value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return ""


class _Decoder:
    """Turns the raw (bytes) fields of one record into text, by its :class:`Charset`;
    pymarc's MARC-8 complaints (written to stderr) are kept as notes."""

    def __init__(self, utf8: bool) -> None:
        self.utf8 = utf8
        self.warnings: list[str] = []

    def text(self, value: bytes) -> str:
        if self.utf8:
            return value.decode("utf-8", "surrogateescape")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            text = marc8_to_unicode(value)
        self.warnings += [line for line in err.getvalue().splitlines() if line.strip()]
        return text


def _decoded(raw: pymarc.Record, charset: Charset, position: int) -> tuple[pymarc.Record, list, list[str]]:
    """(record in Unicode, encoding_errors, MARC-8 warnings)."""
    decoder = _Decoder(charset.utf8)
    record = pymarc.Record(leader=str(raw.leader))
    errors: list[tuple[int, str]] = []
    for fld in raw.fields:
        if fld.control_field:
            data = fld.data
            new = control_field(fld.tag, decoder.text(data) if isinstance(data, bytes) else data or "")
            values = [new.data or ""]
        else:
            subfields = [
                Subfield(code, decoder.text(value) if isinstance(value, bytes) else value)
                for code, value in fld.subfields
            ]
            new = Field(fld.tag, fld.indicators or Indicators(" ", " "), subfields)
            values = [sf.value for sf in subfields]
        if charset.utf8 and any(has_undecoded(v) for v in values):
            errors.append((position, fld.tag))
        record.add_field(new)
    return record, errors, decoder.warnings


@contextlib.contextmanager
def _pymarc_warnings() -> Iterator[list[str]]:
    """pymarc's warnings while parsing one record (its logger and ``warnings.warn``), as text."""
    caught: list[str] = []

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record.getMessage())

    handler = _Handler(logging.WARNING)
    logger = logging.getLogger("pymarc")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            yield caught
        caught += [f"{w.category.__name__}: {w.message}" for w in warned]
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _parse(chunk: bytes, force_utf8: bool, position: int) -> AlephSeqRecord:
    """One record's bytes → an ``AlephSeqRecord`` with its reader notes (see :mod:`marc.iso2709`).

    Raises what pymarc raises for a broken record, or :class:`DirectoryMismatch`."""
    notes: list[tuple[str, str]] = []
    if not chunk.endswith(RECORD_END):
        raise EndOfRecordNotFound()
    checked = check_directory(chunk)
    if isinstance(checked, DirectoryRebuilt):
        notes.append(("directory_rebuilt", checked.detail))
        chunk = checked.chunk
    with _pymarc_warnings() as caught:
        raw = pymarc.Record(chunk, to_unicode=False)
    leader = str(raw.leader)
    has_200 = any(not f.control_field for f in raw.get_fields("200"))
    tags = {f.tag for f in raw.fields}
    charset = decide_charset(leader, chunk[24:], tags, has_200, _ascii_100a(raw), force_utf8)
    record, errors, marc8_warnings = _decoded(raw, charset, position)
    if charset.evidence:
        notes.append(
            ("encoding_evidence", f"read as {'UTF-8' if charset.utf8 else 'MARC-8'}: {charset.evidence}")
        )
    if charset.conflicts:
        notes.append(("encoding_conflict", "; ".join(charset.conflicts)))
    found = caught + marc8_warnings
    if found:
        notes.append(("marc_warning", "; ".join(dict.fromkeys(found))[:500]))
    return AlephSeqRecord(_sysno(record, position), record, [], "", position, errors, notes=notes)


def _iso_id(library: str, source: str, offset: int) -> str:
    """The id of an ISO 2709 record that could not be read: no 001 to trust, so where it is
    (``<library>:<file>@<byte offset>``, e.g. ``BNU02:bibs.mrc@77``)."""
    return f"{library}:{source}@{offset}"


def _read_iso2709(
    fh: BinaryIO, source: str, rejects: RejectLog, library: str, entity: str, force_utf8: bool
) -> Iterator[AlephSeqRecord]:
    for position, (offset, chunk) in enumerate(iter_chunks(fh), start=1):
        try:
            rec = _parse(chunk, force_utf8, position)
        except DirectoryMismatch as exc:
            rejects.add(
                Reject(
                    entity,
                    _iso_id(library, source, offset),
                    "directory_mismatch",
                    detail=f"record {position} at byte offset {offset}: {exc}",
                    source=source,
                    line_no=position,
                    raw=excerpt(chunk),
                )
            )
            continue
        except (PymarcException, UnicodeDecodeError, ValueError, IndexError) as exc:
            detail = f"record {position} at byte offset {offset}: {type(exc).__name__}"
            if str(exc):
                detail += f": {exc}"
            rejects.add(
                Reject(
                    entity,
                    _iso_id(library, source, offset),
                    _reason(exc),
                    detail=detail,
                    source=source,
                    line_no=position,
                    raw=excerpt(chunk),
                )
            )
            continue
        rec.source = source
        yield rec


# --- MARCXML ------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_record(elem: ET.Element) -> tuple[pymarc.Record, bool]:
    record = pymarc.Record()
    has_leader = False
    for child in elem:
        name, text = _local(child.tag), child.text or ""
        if name == "leader":
            if len(text) == 24 and not has_leader:  # MARCXML puts it first; accepted after the fields too
                record.leader = pymarc.Leader(text)
                has_leader = True
            else:
                record.add_field(control_field("LDR", text))
        elif name == "controlfield":
            record.add_field(control_field(child.get("tag", ""), text))
        elif name == "datafield":
            subfields = [
                Subfield(sf.get("code", ""), sf.text or "") for sf in child if _local(sf.tag) == "subfield"
            ]
            indicators = Indicators(child.get("ind1", " ")[:1] or " ", child.get("ind2", " ")[:1] or " ")
            record.add_field(Field(child.get("tag", ""), indicators, subfields))
    return record, has_leader


def _read_marcxml(
    path: str | os.PathLike[str], rejects: RejectLog, library: str, entity: str
) -> Iterator[AlephSeqRecord]:
    source = os.path.basename(path)
    position = 0
    root: ET.Element | None = None
    try:
        for event, elem in ET.iterparse(os.fspath(path), events=("start", "end")):
            if root is None:
                root = elem
            if event != "end" or _local(elem.tag) != "record":
                continue
            position += 1
            record, has_leader = _xml_record(elem)
            if elem is not root:
                root.clear()  # drop the records read so far: memory stays flat
            yield AlephSeqRecord(
                _sysno(record, position), record, [], source, position, [], has_leader=has_leader
            )
    except ET.ParseError as exc:
        line, column = exc.position
        rejects.add(
            Reject(
                entity,
                f"{library}:#{position + 1}",
                "xml_syntax_error",
                detail=f"after record {position}, line {line} column {column}: {exc}; "
                "the rest of the file is not read",
                source=source,
                line_no=line,
            )
        )
