"""Encoding repair: make every field valid UTF-8, convert legacy GBK or Latin-1, report what is lost.

The ALEPHSEQ reader decodes a line that is not valid UTF-8 with ``surrogateescape``, so
its raw bytes come back with ``text.encode("utf-8", "surrogateescape")``, and lists the
line in ``AlephSeqRecord.encoding_errors``. This module decides what those bytes were:

``utf8``
    valid UTF-8 after all (nothing to do);
``gbk``
    legacy GB2312/GBK/GB18030 text (Chinese libraries' pre-Unicode data): converted;
``latin1``
    legacy ISO 8859-1 / Windows-1252 text (Western libraries' pre-Unicode data, e.g.
    ``execu\xe7\xe3o``): converted with the ``cp1252`` codec (a superset of ISO 8859-1's
    printable characters);
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

Latin-1/CP1252 is the other legacy encoding a value may be in (a MARC 21 library's
pre-Unicode data). Its reading is *plausible* (:func:`_latin_plausible`) when the bytes
decode with ``cp1252`` (0x81, 0x8D, 0x8F, 0x90, 0x9D are undefined there), are not mostly
valid multi-byte UTF-8 (rule 4), hold no control character, and every non-ASCII character is

- a Latin letter (Unicode name ``LATIN …``: ``ç``, ``ã``, ``ß``, ``ø``) that is not glued to
  digits (``2024ÿ`` is not a word); a run of two or more such letters needs an ASCII letter
  next to it (``execução``, ``Müller``; ``ÖÐÎÄ`` standing alone is GBK's ``中文`` read as
  Latin-1: GBK's byte pairs in 0xC0-0xFE are all Latin-1 letters);
- CP1252 typographic punctuation (:data:`LATIN_PUNCTUATION`: quotes, dashes, ``…``, ``«»``,
  ``·``, ``§``);
- ``€``, ``£`` or ``°`` next to a digit, a blank or a bracket (``€Includes`` is not text).

When both the GBK and the Latin reading are plausible, :func:`decide` chooses:

- a GBK reading that puts an ideograph *inside* a Latin word (an ASCII letter on each side,
  ``execu玢o``) loses: Chinese is not written inside Latin words;
- otherwise the choice is ambiguous (``ção`` on its own): the library's flavour decides
  (``prefer``: GBK for a CNMARC library, Latin-1 for MARC 21) and the field is reported
  (``encoding_ambiguous``, REVIEW) with both readings.

On 30,000 synthetic GBK title lines all four hold for every line; on the same lines in
UTF-8 with one stray byte, none is taken as GBK. ``b"\\xff\\xfe\\x80"`` fails rule 1
(0xFF is a lead byte in none of these encodings).

Fields are repaired value by value (control-field data, each subfield). That equals
repairing the whole line: ``$`` (0x24) is never part of a GBK or GB18030 multi-byte
character, so a subfield boundary never splits one.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pymarc import Field, Subfield

from aleph2alma.validate.issues import Issue

Outcome = Literal["utf8", "gbk", "latin1", "invalid"]
Legacy = Literal["gbk", "latin1"]

GBK_CODECS = ("gbk", "gb18030")
"""Tried in this order: GBK first (two-byte only), GB18030 (adds four-byte sequences) next."""
MAX_HEX_BYTES = 32
"""At most this many invalid bytes are spelled out in an issue's detail."""

LATIN_PUNCTUATION = frozenset("\u2018\u2019\u201a\u201c\u201d\u201e\u2013\u2014\u2026\xab\xbb\xb7\xa7")
"""CP1252/Latin-1 punctuation a Western catalogue record plausibly holds: quotes, dashes, …, «», ·, §."""
CURRENCY_DEGREE = frozenset("\u20ac\xa3\xb0")
"""€, £ and °: plausible next to a digit, a blank or a bracket, not glued to a letter (``€Bib``)."""

_SURROGATES = range(0xDC80, 0xDD00)  # surrogateescape maps byte b (>= 0x80) to U+DC00 + b
_BAD_CATEGORIES = frozenset({"Cc", "Cn", "Co", "Cs", "Cf"})
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")


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


def _is_latin_letter(ch: str) -> bool:
    return ch.isalpha() and unicodedata.name(ch, "").startswith("LATIN")


def _ascii_letter(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


def _latin_plausible(text: str) -> bool:
    """The CP1252 reading reads like Western text (rules in the module docstring)."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        return False
    for match in _NON_ASCII_RUN.finditer(text):
        start, end = match.span()
        before = text[start - 1] if start else ""
        after = text[end] if end < len(text) else ""
        run = match.group()
        for i, ch in enumerate(run):
            prev = run[i - 1] if i else before
            nxt = run[i + 1] if i + 1 < len(run) else after
            if ch in CURRENCY_DEGREE:
                if not (
                    prev.isdigit() or nxt.isdigit() or (prev and prev in " (") or (nxt and nxt in " ).,")
                ):
                    return False
            elif ch in LATIN_PUNCTUATION:
                continue
            elif not _is_latin_letter(ch):
                return False
            elif not (prev.isalpha() or nxt.isalpha()) and (prev.isdigit() or nxt.isdigit()):
                return False  # a letter glued to digits (``2024ÿ``), not a word
        letters = sum(_is_latin_letter(ch) for ch in run)
        if letters >= 2 and not (_ascii_letter(before) or _ascii_letter(after)):
            return False  # ``ÖÐÎÄ`` standing alone: GBK pairs, not a Latin word
    return True


def _as_latin(raw: bytes) -> str | None:
    try:
        text = raw.decode("cp1252")
    except UnicodeDecodeError:
        return None
    if _mostly_utf8(raw) or not _latin_plausible(text):
        return None
    return text


def _ideograph_inside_word(text: str) -> bool:
    """An ideograph with an ASCII letter right before and right after it (``execu玢o``)."""
    return any(
        0 < i < len(text) - 1
        and unicodedata.name(ch, "").startswith("CJK")
        and text[i - 1].isascii()
        and text[i - 1].isalpha()
        and text[i + 1].isascii()
        and text[i + 1].isalpha()
        for i, ch in enumerate(text)
    )


@dataclass(frozen=True)
class Decision:
    """What bytes of unknown encoding were taken for: the text, the outcome and, when both
    legacy readings were plausible and nothing told them apart, the reading not taken."""

    text: str
    outcome: Outcome
    other: str = ""

    @property
    def ambiguous(self) -> bool:
        return bool(self.other)


def decide(raw: bytes, prefer: Legacy = "gbk") -> Decision:
    """UTF-8, else GBK or Latin-1/CP1252 by plausibility (module docstring), else invalid.

    >>> decide("execução".encode("latin-1")).outcome
    'latin1'
    >>> decide("中文".encode("gbk"), prefer="latin1").outcome
    'gbk'
    """
    try:
        return Decision(raw.decode("utf-8"), "utf8")
    except UnicodeDecodeError:
        pass
    gbk, latin = _as_gbk(raw), _as_latin(raw)
    if gbk is not None and latin is not None:
        if _ideograph_inside_word(gbk):
            gbk = None
        elif prefer == "gbk":
            return Decision(gbk, "gbk", latin)
        else:
            return Decision(latin, "latin1", gbk)
    if gbk is not None:
        return Decision(gbk, "gbk")
    if latin is not None:
        return Decision(latin, "latin1")
    return Decision(raw.decode("utf-8", "replace"), "invalid")


def repair_text(raw: bytes, prefer: Legacy = "gbk") -> tuple[str, Outcome]:
    """``(text, outcome)`` for bytes of unknown encoding; see :func:`decide`.

    >>> repair_text("中文".encode("gbk"))
    ('中文', 'gbk')
    >>> repair_text(b"ab\\xff\\xfe\\x80")
    ('ab\\ufffd\\ufffd\\ufffd', 'invalid')
    """
    decision = decide(raw, prefer)
    return decision.text, decision.outcome


def _repair_value(
    value: str, bad: bytearray, prefer: Legacy, ambiguous: list[Decision]
) -> tuple[str, Outcome]:
    if not has_undecoded(value):
        return value, "utf8"
    raw = value.encode("utf-8", "surrogateescape")
    decision = decide(raw, prefer)
    if decision.outcome == "invalid":
        bad += invalid_utf8_bytes(raw)
    if decision.ambiguous:
        ambiguous.append(decision)
    return decision.text, decision.outcome


@dataclass
class FieldRepair:
    """What :func:`repair_field` did to one field."""

    outcome: Outcome
    invalid: bytes = b""
    ambiguous: tuple[Decision, ...] = ()


def repair_field(field: Field, prefer: Legacy = "gbk") -> FieldRepair:
    """Repair one field in place.

    The outcome is ``invalid`` if any value of the field was, else ``gbk`` or ``latin1`` if
    any was converted (``gbk`` first), else ``utf8``. A subfield code that is not UTF-8 is
    repaired together with its value (the first character of the result becomes the code).
    ``ambiguous`` lists the values whose legacy reading was a choice between two plausible ones.
    """
    bad = bytearray()
    ambiguous: list[Decision] = []
    outcomes: set[Outcome] = set()
    if field.control_field:
        field.data, outcome = _repair_value(field.data or "", bad, prefer, ambiguous)
        outcomes.add(outcome)
    else:
        subfields: list[Subfield] = []
        for code, value in field.subfields:
            if has_undecoded(code):
                text, outcome = _repair_value(code + value, bad, prefer, ambiguous)
                code, value = text[:1], text[1:]
            else:
                value, outcome = _repair_value(value, bad, prefer, ambiguous)
            outcomes.add(outcome)
            subfields.append(Subfield(code, value))
        field.subfields = subfields
    for outcome in ("invalid", "gbk", "latin1"):
        if outcome in outcomes:
            return FieldRepair(outcome, bytes(bad), tuple(ambiguous))  # type: ignore[arg-type]
    return FieldRepair("utf8")


def _hex(raw: bytes) -> str:
    shown = raw[:MAX_HEX_BYTES].hex()
    return shown + ("…" if len(raw) > MAX_HEX_BYTES else "")


_NAMES: dict[str, str] = {"gbk": "GBK", "latin1": "Latin-1/CP1252"}


def repair_fields(
    fields: Iterable[Field],
    encoding_errors: Iterable[tuple[int, str]],
    *,
    entity: str,
    record_id: str,
    prefer: Legacy = "gbk",
) -> list[Issue]:
    """Repair every field that holds undecoded bytes; at most one issue per rule.

    ``encoding_errors`` (``(line_no, tag)`` from the reader) give the line numbers: the
    n-th repaired field of a tag is matched with the n-th listed line of that tag. Fields
    not passed in (dropped local tags) are neither repaired nor reported. ``prefer`` is the
    legacy encoding of the library's flavour (``gbk`` for CNMARC, ``latin1`` for MARC 21),
    taken when GBK and Latin-1 are equally plausible.

    - ``legacy_gbk`` (detail ``"<tag>: converted from GBK"``) when fields were converted
      from GBK;
    - ``legacy_latin1`` (detail ``"<tag>: converted from Latin-1/CP1252"``) likewise;
    - ``encoding_ambiguous`` (REVIEW; detail ``"<tag> line <n>: read as <chosen> 'text',
      not <other> 'text'"``) when both were plausible and the flavour chose;
    - ``invalid_utf8`` (detail ``"<tag> line <n>: bytes <hex>"``) when bytes were lost.

    Details of several fields are joined with ``"; "``.
    """
    lines: dict[str, deque[int]] = defaultdict(deque)
    for line_no, tag in encoding_errors:
        lines[tag].append(line_no)
    converted: dict[str, list[str]] = {"gbk": [], "latin1": []}
    invalid: list[str] = []
    ambiguous: list[str] = []
    for fld in fields:
        values = [fld.data or ""] if fld.control_field else [v for sf in fld.subfields for v in sf]
        if not any(has_undecoded(v) for v in values):
            continue
        line = lines[fld.tag].popleft() if lines[fld.tag] else None
        where = f"line {line}" if line is not None else "line ?"
        repair = repair_field(fld, prefer)
        if repair.outcome in converted:
            converted[repair.outcome].append(f"{fld.tag}: converted from {_NAMES[repair.outcome]}")
        elif repair.outcome == "invalid":
            invalid.append(f"{fld.tag} {where}: bytes {_hex(repair.invalid)}")
        for decision in repair.ambiguous:
            other = "latin1" if decision.outcome == "gbk" else "gbk"
            ambiguous.append(
                f"{fld.tag} {where}: read as {_NAMES[decision.outcome]} {decision.text[:60]!r}, "
                f"not {_NAMES[other]} {decision.other[:60]!r} (the library's flavour decided)"
            )
    issues = []
    if invalid:
        issues.append(Issue("invalid_utf8", entity, record_id, detail="; ".join(invalid)))
    if converted["gbk"]:
        issues.append(Issue("legacy_gbk", entity, record_id, detail="; ".join(converted["gbk"])))
    if converted["latin1"]:
        issues.append(Issue("legacy_latin1", entity, record_id, detail="; ".join(converted["latin1"])))
    if ambiguous:
        issues.append(Issue("encoding_ambiguous", entity, record_id, detail="; ".join(ambiguous)))
    return issues
