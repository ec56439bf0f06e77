"""ISO 2709 records read by what they are: the directory checked, the character set by evidence.

**Directory against terminators.** ISO 2709 (and MARC 21's "Record Structure", loc.gov/marc/
specifications/specrecstruc.html) locate each field twice: by the directory entry's length
and offset, and by the field terminator (0x1E) that ends it. Exports that count characters
instead of bytes, or edit a field without its entry, break the first and not the second;
pymarc trusts the directory, so such a record came out with cut fields (a 245 $c
``Eric T. Jenn``, a 260 with indicators ``ng``). :func:`check_directory` compares them:

- every entry ends on a terminator and holds no other: the record is read as it is;
- otherwise, when the data holds exactly as many terminated fields as the directory has
  entries and no two entries claim one offset, the directory is rebuilt from the
  terminators (the n-th entry by offset gets the n-th field) and the record is read with it
  (:class:`DirectoryRebuilt`: a ``directory_rebuilt`` REVIEW issue names the entries);
- otherwise nothing says which bytes belong to which tag: :class:`DirectoryMismatch`, the
  record is rejected (``directory_mismatch``) with the counts.

**Character set by evidence** (:func:`decide_charset`), first that applies:

1. leader/09 ``a``: UTF-8 (MARC 21 leader/09 "Character coding scheme", loc.gov/marc/bibliographic/
   bdleader.html: ``#`` MARC-8, ``a`` UCS/Unicode);
2. a record of CNMARC/UNIMARC shape (:func:`aleph2alma.marc.shape.cnmarc_shape`) whose 100 $a
   positions 26-29 (UNIMARC Bibliographic, field 100 "General processing data", character
   sets: 26-27 the G0 set, 28-29 the G1 set) hold ``50`` (ISO 10646, Unicode): UTF-8;
3. bytes that are valid UTF-8 with multi-byte sequences and no ESC (0x1B, which starts every
   MARC-8 escape sequence, loc.gov/marc/specifications/speccharmarc8.html): UTF-8;
4. a CNMARC/UNIMARC record that declares another set: UNIMARC is never MARC-8; the bytes are
   read as UTF-8 and what is not UTF-8 goes to the legacy repair (GBK, Latin-1) or is
   reported (``marc.encoding``);
5. otherwise MARC-8 (converted with pymarc's ``marc8_to_unicode``).

A record with non-ASCII bytes decided by anything but leader/09 gets an ``encoding_evidence``
INFO issue naming the evidence; evidence that contradicts the decision (100 declaring a
non-Unicode set in a UTF-8 record, MARC-8 escapes in a UTF-8 one, a 066 "character sets
present" in a record read as UTF-8, multi-byte UTF-8 beside MARC-8 escapes) is an
``encoding_conflict`` REVIEW issue.
"""

from __future__ import annotations

from dataclasses import dataclass

from aleph2alma.marc.shape import cnmarc_shape

FIELD_END = 0x1E
RECORD_END = b"\x1d"
ENTRY = 12
LEADER = 24

UNIMARC_CHARSETS: dict[str, str] = {
    "01": "ISO 646 IRV (basic Latin)",
    "02": "ISO Registration #37 (basic Cyrillic)",
    "03": "ISO 5426 (extended Latin)",
    "04": "ISO DIS 5427 (extended Cyrillic)",
    "05": "ISO 5428 (Greek)",
    "06": "ISO 6438 (African)",
    "07": "ISO 10586 (Georgian)",
    "08": "ISO 8957 (Hebrew) table 1",
    "09": "ISO 8957 (Hebrew) table 2",
    "11": "ISO 5426-2 (Latin, further)",
    "50": "ISO 10646 (Unicode)",
}
"""UNIMARC 100 $a/26-29 character-set codes (UNIMARC Bibliographic, field 100)."""


class DirectoryMismatch(ValueError):
    """The directory disagrees with the field terminators and cannot be rebuilt from them."""


@dataclass(frozen=True)
class DirectoryRebuilt:
    """The directory was rebuilt from the terminators: ``chunk`` is the record with the new one."""

    chunk: bytes
    detail: str


def _entries(chunk: bytes) -> tuple[int, list[tuple[bytes, int, int]]] | None:
    """(base address, [(tag, length, offset)]) or None when the leader or directory is not
    even readable (pymarc then rejects the record with its own reason)."""
    base = chunk[12:17]
    if len(chunk) < LEADER or not base.isdigit():
        return None
    base_address = int(base)
    directory = chunk[LEADER : base_address - 1]
    if base_address >= len(chunk) or len(directory) % ENTRY:
        return None
    entries = []
    for i in range(0, len(directory), ENTRY):
        entry = directory[i : i + ENTRY]
        if not (entry[3:7].isdigit() and entry[7:12].isdigit()):
            return None
        entries.append((entry[:3], int(entry[3:7]), int(entry[7:12])))
    return base_address, entries


def _agrees(data: bytes, length: int, offset: int) -> bool:
    end = offset + length
    return (
        length > 0
        and end <= len(data)
        and data[end - 1] == FIELD_END
        and data.find(FIELD_END, offset, end - 1) == -1
    )


def check_directory(chunk: bytes) -> bytes | DirectoryRebuilt:
    """``chunk`` itself when its directory agrees with its terminators; a rebuilt record
    (:class:`DirectoryRebuilt`) when that is unambiguous; else :class:`DirectoryMismatch`."""
    parsed = _entries(chunk)
    if parsed is None:
        return chunk
    base_address, entries = parsed
    if chunk[:5].isdigit() and len(chunk) < int(chunk[:5]):
        return chunk  # shorter than its leader says: pymarc rejects it as truncated
    data = chunk[base_address:]
    if data.endswith(RECORD_END):
        data = data[:-1]
    if all(_agrees(data, length, offset) for _, length, offset in entries):
        return chunk
    spans, start = [], 0
    while (end := data.find(FIELD_END, start)) != -1:
        spans.append((start, end + 1 - start))
        start = end + 1
    bad = [
        f"{tag.decode('ascii', 'replace')} at {offset} length {length}"
        for tag, length, offset in entries
        if not _agrees(data, length, offset)
    ]
    offsets = [offset for _, _, offset in entries]
    if len(spans) != len(entries) or data[start:].strip() or len(set(offsets)) != len(offsets):
        raise DirectoryMismatch(
            f"the directory has {len(entries)} entries and disagrees with the field terminators "
            f"({', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}), and the data holds {len(spans)} "
            "terminated fields: which bytes belong to which tag cannot be told"
        )
    by_offset = sorted(range(len(entries)), key=lambda i: entries[i][2])
    rebuilt: list[tuple[bytes, int, int]] = list(entries)
    for span, i in zip(spans, by_offset, strict=True):
        rebuilt[i] = (entries[i][0], span[1], span[0])
    if any(length > 9999 or offset > 99999 for _, length, offset in rebuilt):
        raise DirectoryMismatch("the directory disagrees with the field terminators and a field is too long")
    directory = b"".join(b"%s%04d%05d" % entry for entry in rebuilt)
    body = directory + chunk[base_address - 1 : base_address] + data + RECORD_END
    length = LEADER + len(body)
    if length > 99999:
        raise DirectoryMismatch("the directory disagrees with the field terminators; the record is too long")
    fixed = b"%05d" % length + chunk[5:LEADER] + body
    detail = (
        f"the directory disagreed with the field terminators in {len(bad)} of {len(entries)} fields "
        f"({', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}); rebuilt from the terminators"
    )
    return DirectoryRebuilt(fixed, detail)


# --- character set ------------------------------------------------------------------------


@dataclass(frozen=True)
class Charset:
    """How a record's bytes are read: ``utf8`` or MARC-8, the evidence that decided and the
    evidence against it. ``evidence`` is empty when nothing needs recording (leader/09 ``a``,
    or ASCII only)."""

    utf8: bool
    evidence: str = ""
    conflicts: tuple[str, ...] = ()


def _declared(a100: str) -> str:
    return a100[26:30] if len(a100) >= 28 else ""


def decide_charset(
    leader: str, body: bytes, tags: set[str], has_200: bool, a100: str, force_utf8: bool = False
) -> Charset:
    """The character set of one record (rules in the module docstring).

    ``body`` is the record's bytes after the leader; ``tags`` its field tags; ``a100`` the
    first 100 $a as ASCII text (``""`` if none).
    """
    non_ascii = not body.isascii()
    has_esc = b"\x1b" in body
    try:
        body.decode("utf-8")
        valid_utf8 = True
    except UnicodeDecodeError:
        valid_utf8 = False
    multibyte = valid_utf8 and non_ascii
    unimarc = cnmarc_shape(has_200, a100)
    declared = _declared(a100) if unimarc else ""
    g0 = declared[:2]
    conflicts: list[str] = []
    if has_esc and multibyte:
        conflicts.append("ESC bytes (MARC-8 escape sequences) beside valid multi-byte UTF-8")
    named = f"100 $a/26-29 {declared!r}" + (f" ({UNIMARC_CHARSETS[g0]})" if g0 in UNIMARC_CHARSETS else "")

    if leader[9:10] == "a" or force_utf8:
        if has_esc and not multibyte:
            conflicts.append("ESC bytes (MARC-8 escape sequences) in a record that says UTF-8")
        if g0.strip() and g0 != "50":
            conflicts.append(f"{named} declares another character set")
        evidence = "" if leader[9:10] == "a" else "read as UTF-8 on request (force_utf8)"
        return Charset(True, evidence if non_ascii else "", tuple(conflicts))
    if unimarc and g0 == "50":
        if has_esc:
            conflicts.append("ESC bytes in a record that declares Unicode")
        return Charset(True, f"{named}" if non_ascii else "", tuple(conflicts))
    if multibyte and not has_esc:
        if g0.strip():
            conflicts.append(f"{named} declares another character set, but the bytes are UTF-8")
        if "066" in tags:
            conflicts.append("066 (character sets present, MARC-8) in a record whose bytes are UTF-8")
        why = "leader/09 blank, but the bytes are valid multi-byte UTF-8 with no MARC-8 escapes"
        return Charset(True, why, tuple(conflicts))
    if unimarc:
        what = f"{named}" if g0.strip() else "100 $a/26-29 blank"
        why = f"CNMARC/UNIMARC record ({what}): never MARC-8; read as UTF-8, legacy bytes repaired"
        return Charset(True, why if non_ascii else "", tuple(conflicts))
    if not non_ascii and not has_esc:
        return Charset(False)
    return Charset(False, "leader/09 blank and nothing says otherwise: MARC-8", tuple(conflicts))
