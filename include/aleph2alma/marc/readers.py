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

ISO 2709 is read permissively, record by record, with pymarc's decoder
(``to_unicode=True``; leader/09 ``a`` means UTF-8, anything else MARC-8, converted to
Unicode; ``force_utf8=True`` for files whose leader/09 lies, e.g. UNIMARC). Records are
split at the record terminator (0x1D) rather than trusted to their length field, so one
broken record does not end the stream: it becomes a reject with its position, byte offset
and reason (pymarc's exception, in snake case: ``record_length_invalid``,
``base_address_invalid``, ``record_directory_invalid`` …) and reading goes on at the next
record. Bytes that are not UTF-8 in a UTF-8 record are kept (``surrogateescape``) and
listed in ``encoding_errors``, so the bib transform repairs them (GBK) or reports them.

MARCXML is streamed (``iterparse``; memory stays flat), namespace or not. A leader that
is not 24 characters is kept as an ``LDR`` field with ``has_leader=False``, like the
ALEPHSEQ reader does, so the transform reports it. An XML syntax error ends the file: it
is one reject (``xml_syntax_error``, with line and column) after the records before it.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import BinaryIO, Literal

import pymarc
from pymarc import Field, Indicators, Subfield
from pymarc.exceptions import EndOfRecordNotFound, PymarcException

from aleph2alma.aleph.alephseq import AlephSeqRecord, check_line, control_field, read_alephseq
from aleph2alma.marc.encoding import has_undecoded
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


def read_records(path: str | os.PathLike[str], fmt: Format | None = None, *, rejects: RejectLog,
                 library: str = "", entity: str = "bibs", force_utf8: bool = False) -> Iterator[AlephSeqRecord]:
    """Stream the records of ``path`` (format sniffed unless ``fmt`` is given).

    ``library`` prefixes reject ids (``<library>:<sysno or #position>``). An empty file
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
            chunk = buffer[start:end + 1]
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


def _encoding_errors(record: pymarc.Record, position: int) -> list[tuple[int, str]]:
    errors = []
    for fld in record.fields:
        values = [fld.data or ""] if fld.control_field else [v for sf in fld.subfields for v in sf]
        if any(has_undecoded(v) for v in values):
            errors.append((position, fld.tag))
    return errors


def _undecodable(chunk: bytes, record: pymarc.Record, force_utf8: bool) -> bool:
    """A UTF-8 record holding bytes that are not UTF-8 (one C-speed check of the whole chunk)."""
    if not (force_utf8 or record.leader[9] == "a"):
        return False
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _read_iso2709(fh: BinaryIO, source: str, rejects: RejectLog, library: str, entity: str,
                  force_utf8: bool) -> Iterator[AlephSeqRecord]:
    for position, (offset, chunk) in enumerate(iter_chunks(fh), start=1):
        try:
            if not chunk.endswith(RECORD_END):
                raise EndOfRecordNotFound()
            record = pymarc.Record(chunk, to_unicode=True, force_utf8=force_utf8, utf8_handling="surrogateescape",
                                   hide_utf8_warnings=True)
        except (PymarcException, UnicodeDecodeError, ValueError, IndexError) as exc:
            detail = f"record {position} at byte offset {offset}: {type(exc).__name__}"
            if str(exc):
                detail += f": {exc}"
            rejects.add(Reject(entity, f"{library}:#{position}", _reason(exc), detail=detail, source=source,
                               line_no=position, raw=chunk.decode("utf-8", "backslashreplace")))
            continue
        yield AlephSeqRecord(_sysno(record, position), record, [], source, position,
                             _encoding_errors(record, position) if _undecodable(chunk, record, force_utf8) else [])


# --- MARCXML ------------------------------------------------------------------------------

def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_record(elem: ET.Element) -> tuple[pymarc.Record, bool]:
    record = pymarc.Record()
    has_leader = False
    for child in elem:
        name, text = _local(child.tag), child.text or ""
        if name == "leader":
            if len(text) == 24 and not has_leader and not record.fields:
                record.leader = pymarc.Leader(text)
                has_leader = True
            else:
                record.add_field(control_field("LDR", text))
        elif name == "controlfield":
            record.add_field(control_field(child.get("tag", ""), text))
        elif name == "datafield":
            subfields = [Subfield(sf.get("code", ""), sf.text or "") for sf in child if _local(sf.tag) == "subfield"]
            indicators = Indicators(child.get("ind1", " ")[:1] or " ", child.get("ind2", " ")[:1] or " ")
            record.add_field(Field(child.get("tag", ""), indicators, subfields))
    return record, has_leader


def _read_marcxml(path: str | os.PathLike[str], rejects: RejectLog, library: str,
                  entity: str) -> Iterator[AlephSeqRecord]:
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
            yield AlephSeqRecord(_sysno(record, position), record, [], source, position, [], has_leader=has_leader)
    except ET.ParseError as exc:
        line, column = exc.position
        rejects.add(Reject(entity, f"{library}:#{position + 1}", "xml_syntax_error",
                           detail=f"after record {position}, line {line} column {column}: {exc}; "
                                  "the rest of the file is not read", source=source, line_no=line))
