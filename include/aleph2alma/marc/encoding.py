"""Encoding repair: make every field valid UTF-8, convert legacy GBK, report what is lost.

The ALEPHSEQ reader decodes a line that is not valid UTF-8 with ``surrogateescape``, so
its raw bytes come back with ``text.encode("utf-8", "surrogateescape")``, and lists the
line in ``AlephSeqRecord.encoding_errors``. This module decides what those bytes were:

``utf8``
    valid UTF-8 after all (nothing to do);
``gbk``
    legacy GB2312/GBK/GB18030 text (Chinese libraries' pre-Unicode data): converted;
``invalid``
    neither: each byte that is not part of valid UTF-8 becomes U+FFFD (the rest of the
    text is kept) and the bytes are reported in hex, so a cataloguer can retype them.

Deciding "this is GBK" must be strict, because UTF-8 Chinese text with one stray byte is
very often *also* a valid GBK byte sequence (decoding it as GBK gives mojibake). Bytes are
taken as GBK only when all of these hold (see :func:`repair_text`):

1. they decode with the ``gbk`` codec, or failing that ``gb18030``, without error;
2. the text holds no control, unassigned, private-use (GBK's user-defined areas) or
   format characters, nor U+FFFD;
3. at least half of the multi-byte characters sit in the GB2312 region (both bytes
   0xA1-0xFE), where real Chinese text lives; UTF-8 read as GBK lands there about a
   third of the time;
4. the bytes are not mostly valid multi-byte UTF-8: bytes in valid 3- and 4-byte UTF-8
   sequences (CJK in UTF-8) are at most twice the bytes that are invalid UTF-8. GBK text
   forms such sequences only by accident (at most about as many as its invalid bytes).

On 30,000 synthetic GBK title lines all four hold for every line; on the same lines in
UTF-8 with one stray byte, none is taken as GBK. ``b"\\xff\\xfe\\x80"`` fails rule 1
(0xFF is a lead byte in none of these encodings).

Fields are repaired value by value (control-field data, each subfield). That equals
repairing the whole line: ``$`` (0x24) is never part of a GBK or GB18030 multi-byte
character, so a subfield boundary never splits one.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Literal

from pymarc import Field, Subfield

from aleph2alma.validate.issues import Issue

Outcome = Literal["utf8", "gbk", "invalid"]

GBK_CODECS = ("gbk", "gb18030")
"""Tried in this order: GBK first (two-byte only), GB18030 (adds four-byte sequences) next."""
MAX_HEX_BYTES = 32
"""At most this many invalid bytes are spelled out in an issue's detail."""

_SURROGATES = range(0xDC80, 0xDD00)  # surrogateescape maps byte b (>= 0x80) to U+DC00 + b
_BAD_CATEGORIES = frozenset({"Cc", "Cn", "Co", "Cs", "Cf"})


def has_undecoded(text: str) -> bool:
    """True if ``text`` still holds bytes kept by ``surrogateescape`` (not valid UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def invalid_utf8_bytes(raw: bytes) -> bytes:
    """The bytes of ``raw`` that are not part of a valid UTF-8 sequence, in order."""
    return bytes(ord(ch) - 0xDC00 for ch in raw.decode("utf-8", "surrogateescape") if ord(ch) in _SURROGATES)


def _plausible(text: str) -> bool:
    for ch in text:
        code = ord(ch)
        if code < 0x80:
            if code < 0x20 or code == 0x7F:
                return False
        elif code == 0xFFFD or unicodedata.category(ch) in _BAD_CATEGORIES:
            return False
    return True


def _gb2312_share(raw: bytes) -> float:
    """Share of multi-byte characters whose two bytes both lie in 0xA1-0xFE (GB2312)."""
    i, total, gb2312, size = 0, 0, 0, len(raw)
    while i < size:
        lead = raw[i]
        if lead < 0x80:
            i += 1
            continue
        trail = raw[i + 1] if i + 1 < size else 0
        total += 1
        if 0x30 <= trail <= 0x39:  # GB18030 four-byte sequence
            i += 4
            continue
        if 0xA1 <= lead <= 0xFE and 0xA1 <= trail <= 0xFE:
            gb2312 += 1
        i += 2
    return gb2312 / total if total else 1.0


def _mostly_utf8(raw: bytes) -> bool:
    """More than twice as many bytes in valid 3/4-byte UTF-8 sequences as invalid bytes."""
    text = raw.decode("utf-8", "surrogateescape")
    invalid = valid_wide = 0
    for ch in text:
        code = ord(ch)
        if code in _SURROGATES:
            invalid += 1
        elif code >= 0x10000:
            valid_wide += 4
        elif code >= 0x800:
            valid_wide += 3
    return valid_wide > 2 * invalid


def _as_gbk(raw: bytes) -> str | None:
    for codec in GBK_CODECS:
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError:
            continue
        if _plausible(text) and _gb2312_share(raw) >= 0.5 and not _mostly_utf8(raw):
            return text
        return None  # a superset codec would only add more doubtful readings
    return None


def repair_text(raw: bytes) -> tuple[str, Outcome]:
    """``(text, outcome)`` for bytes of unknown encoding; see the module docstring.

    >>> repair_text("中文".encode("gbk"))
    ('中文', 'gbk')
    >>> repair_text(b"ab\\xff\\xfe\\x80")
    ('ab\\ufffd\\ufffd\\ufffd', 'invalid')
    """
    try:
        return raw.decode("utf-8"), "utf8"
    except UnicodeDecodeError:
        pass
    text = _as_gbk(raw)
    if text is not None:
        return text, "gbk"
    return raw.decode("utf-8", "replace"), "invalid"


def _repair_value(value: str, bad: bytearray) -> tuple[str, Outcome]:
    if not has_undecoded(value):
        return value, "utf8"
    raw = value.encode("utf-8", "surrogateescape")
    text, outcome = repair_text(raw)
    if outcome == "invalid":
        bad += invalid_utf8_bytes(raw)
    return text, outcome


def repair_field(field: Field) -> tuple[Outcome, bytes]:
    """Repair one field in place; ``(outcome, invalid bytes)``.

    The outcome is ``invalid`` if any value of the field was, else ``gbk`` if any was
    converted, else ``utf8``. A subfield code that is not UTF-8 is repaired together with
    its value (the first character of the result becomes the code).
    """
    bad = bytearray()
    outcomes: set[Outcome] = set()
    if field.control_field:
        field.data, outcome = _repair_value(field.data or "", bad)
        outcomes.add(outcome)
    else:
        subfields: list[Subfield] = []
        for code, value in field.subfields:
            if has_undecoded(code):
                text, outcome = _repair_value(code + value, bad)
                code, value = text[:1], text[1:]
            else:
                value, outcome = _repair_value(value, bad)
            outcomes.add(outcome)
            subfields.append(Subfield(code, value))
        field.subfields = subfields
    if "invalid" in outcomes:
        return "invalid", bytes(bad)
    return ("gbk" if "gbk" in outcomes else "utf8"), b""


def _hex(raw: bytes) -> str:
    shown = raw[:MAX_HEX_BYTES].hex()
    return shown + ("…" if len(raw) > MAX_HEX_BYTES else "")


def repair_fields(fields: Iterable[Field], encoding_errors: Iterable[tuple[int, str]], *,
                  entity: str, record_id: str) -> list[Issue]:
    """Repair every field that holds undecoded bytes; at most one issue per rule.

    ``encoding_errors`` (``(line_no, tag)`` from the reader) give the line numbers: the
    n-th repaired field of a tag is matched with the n-th listed line of that tag. Fields
    not passed in (dropped local tags) are neither repaired nor reported.

    - ``legacy_gbk`` (detail ``"<tag>: converted from GBK"``) when fields were converted;
    - ``invalid_utf8`` (detail ``"<tag> line <n>: bytes <hex>"``) when bytes were lost.

    Details of several fields are joined with ``"; "``.
    """
    lines: dict[str, deque[int]] = defaultdict(deque)
    for line_no, tag in encoding_errors:
        lines[tag].append(line_no)
    converted: list[str] = []
    invalid: list[str] = []
    for fld in fields:
        values = [fld.data or ""] if fld.control_field else [v for sf in fld.subfields for v in sf]
        if not any(has_undecoded(v) for v in values):
            continue
        line = lines[fld.tag].popleft() if lines[fld.tag] else None
        outcome, bad = repair_field(fld)
        if outcome == "gbk":
            converted.append(f"{fld.tag}: converted from GBK")
        elif outcome == "invalid":
            where = f"line {line}" if line is not None else "line ?"
            invalid.append(f"{fld.tag} {where}: bytes {_hex(bad)}")
    issues = []
    if invalid:
        issues.append(Issue("invalid_utf8", entity, record_id, detail="; ".join(invalid)))
    if converted:
        issues.append(Issue("legacy_gbk", entity, record_id, detail="; ".join(converted)))
    return issues
