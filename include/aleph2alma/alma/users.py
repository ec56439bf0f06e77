"""Patrons (Z303 + Z304 + Z305 + Z308) → Alma user XML for an SIS "Import" profile.

The output is the ``<users><user>…</user></users>`` document Alma's SIS loader reads, with
the element names of Alma's REST ``user`` object (rest_user.xsd), written user by user to
a binary stream: the document is never held in memory. Per user:

- ``record_type`` PUBLIC, ``account_type`` EXTERNAL, ``status`` ACTIVE, ``primary_id``
  (Z303_PRIMARY_ID);
- ``first_name`` / ``last_name`` from Z303_NAME (``split_name``);
- ``user_group`` from the Z305 row with the latest expiry (bor status + bor type through
  the form; unmapped → the form's ``default_user_group``);
- ``expiry_date`` the latest Z305_EXPIRY_DATE of the patron's sub-libraries (else the
  form's ``patron_expiry_default``), ``birth_date``; dates as Alma writes them, ``2031-07-31Z``;
- ``purge_date`` (when Alma purges the user; never before ``expiry_date``): only for a
  patron whose Z305 gives no expiry date, the form's ``patron_purge_default``, moved up to
  ``patron_expiry_default`` when the form sets it earlier. A patron with its own expiry gets
  no purge date: a single form date would purge some users before they expire;
- ``contact_info``: one address per Z304 row with address lines (ADDRESS_0 is skipped when
  it repeats the name, as Aleph's mailing label does), its e-mails and phones; the first row
  valid on ``as_of`` is preferred;
- ``user_identifiers`` from Z308: key type 01 → BARCODE, 02 → UNIV_ID (``identifier_types``);
- ``user_notes``: Z303_DELINQ_N_1 as a circulation note.

PINs never leave Aleph: Z308_VERIFICATION is not extracted (``aleph.ztables`` marks it a
secret column, never selected), so no PIN, in clear or hashed, reaches this module or the
user XML; patrons set a new PIN (or sign in through the institution's SSO) in Alma.

Text is NFC-normalised and escaped; characters XML 1.0 cannot hold are removed and counted.
With ``scrub_emails``, every address becomes ``<primary_id>@<scrub_domain>`` so that a test
load can never mail a real patron.

The XML is built column-wise with Arrow compute, a chunk of users at a time: each text
column is cleaned once (and only when a cheap check over all its bytes finds something to
normalise, remove or escape), child rows (Z304/Z305/Z308) are sorted by user and their
fragments joined per user through list offsets. Python runs per distinct code (user
groups, address and identifier types) and per rejected patron.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aleph2alma.accounting import Tally
from aleph2alma.alma.items import (
    FormLookups,
    date_column,
    form_default,
    key_prefix,
    map_codes,
    require_columns,
    text_column,
)
from aleph2alma.rejects import Reject, RejectLog

ENTITY = "patrons"
KEY_WIDTH = 12  # Z303_REC_KEY: the patron id inside the Z304/Z305 keys
USER_COLUMNS: dict[str, list[str]] = {
    "Z303": ["Z303_REC_KEY", "Z303_PRIMARY_ID", "Z303_NAME", "Z303_BIRTH_DATE", "Z303_DELINQ_N_1"],
    "Z304": [
        "Z304_REC_KEY",
        "Z304_ADDRESS_0",
        "Z304_ADDRESS_1",
        "Z304_ADDRESS_2",
        "Z304_ZIP",
        "Z304_EMAIL_ADDRESS",
        "Z304_TELEPHONE",
        "Z304_DATE_FROM",
        "Z304_DATE_TO",
        "Z304_ADDRESS_TYPE",
    ],
    "Z305": ["Z305_REC_KEY", "Z305_BOR_TYPE", "Z305_BOR_STATUS", "Z305_EXPIRY_DATE"],
    "Z308": ["Z308_REC_KEY", "Z308_ID"],
}
"""The only Z303–Z308 columns ``write_users_xml`` reads: the patrons task reads no others."""
CHUNK_USERS = 20_000  # users assembled at a time: bounds memory and keeps string arrays far below 2 GB

DEFAULT_IDENTIFIER_TYPES = {"01": "BARCODE", "02": "UNIV_ID"}
"""Z308 key type → Alma user identifier type; other key types are not migrated (counted)."""

DEFAULT_ADDRESS_TYPES = {"01": "home", "02": "school", "03": "work"}
"""Z304_ADDRESS_TYPE → Alma address type; others become ``alternative``."""

_EMAIL_TYPES = {"home": "personal", "school": "school", "work": "work"}
_PHONE_TYPES = {"home": "home", "school": "office", "work": "office"}

# Arrow's regular expressions are RE2: \d and \s are ASCII there, so Python's classes are spelled out.
_SPACE = r"\t-\r\x{1C}-\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}"
"""The characters of ``str.isspace()`` (what ``str.split()`` splits at), as a class body."""
_MOBILE = r"^(?:\+?86)?1[3-9]\p{Nd}{9}$"  # a mainland China mobile number
_INVALID_XML = r"[^\t\n\r\x{20}-\x{D7FF}\x{E000}-\x{FFFD}\x{10000}-\x{10FFFF}]"
_CJK = r"[\x{3400}-\x{9FFF}\x{F900}-\x{FAFF}\x{20000}-\x{3134F}]"
_NAME_DOTS = "·・•‧"  # separators of transliterated names: 约翰·史密斯
COMPOUND_SURNAMES = frozenset(
    "欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 慕容 长孙 宇文 司徒 夏侯 轩辕 令狐 澹台 端木 呼延 南宫 万俟 "
    "闻人 钟离 申屠 西门 独孤 单于 太史 濮阳 公冶 赫连 百里 东郭 左丘 梁丘 拓跋 第五 歐陽 司馬 諸葛 "
    "長孫 軒轅 鍾離".split()
)
"""Two-character Chinese family names (simplified and traditional); all others have one."""
_COMPOUND = pa.array(sorted(COMPOUND_SURNAMES), pa.string())

# Bytes checks over a whole column, far cheaper than a regular expression per value: deleting
# these bytes leaves only the control characters XML 1.0 cannot hold; U+FFFE/U+FFFF in UTF-8.
_XML_BYTES = bytes(b for b in range(256) if b >= 0x20 or b in (0x09, 0x0A, 0x0D))
_NONCHARACTERS = (b"\xef\xbf\xbe", b"\xef\xbf\xbf")
_NOT_ASCII_SPACE = bytes(b for b in range(256) if not (0x09 <= b <= 0x0D or 0x1C <= b <= 0x1F))
_WIDE_SPACE_BYTES = (b"\xc2\x85", b"\xc2\xa0", b"\xe1\x9a\x80", b"\xe2\x80", b"\xe2\x81\x9f", b"\xe3\x80\x80")
"""Non-ASCII whitespace in UTF-8 (``\xe2\x80``: U+2000–U+203F, spaces and other punctuation)."""
_ENTITIES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))  # xml.sax.saxutils.escape; & first


@dataclass(frozen=True)
class UserOptions:
    """How patrons are written. Defaults suit a test load."""

    scrub_emails: bool = False  # replace every e-mail with <primary_id>@<scrub_domain>
    scrub_domain: str = "example.invalid"
    as_of: date | None = None  # the run's logical date: picks the preferred (current) address
    external_id: str = ""  # the SIS profile's external system code, written when set
    identifier_types: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_IDENTIFIER_TYPES))
    address_types: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ADDRESS_TYPES))


@dataclass
class UserStats(Tally):
    """One part's patrons in, out and rejected by reason (the ``Tally``), and what was done to them."""

    group_fallbacks: int = 0  # users given the form's default_user_group
    invalid_chars_removed: int = 0
    emails_scrubbed: int = 0
    identifiers_skipped: int = 0  # Z308 rows of a key type not in identifier_types
    orphan_rows: int = 0  # Z304/Z305/Z308 rows whose patron is not in this Z303 part


def split_name(name: str) -> tuple[str, str]:
    """Z303_NAME → (first name, last name).

    ``Last, First`` (Western, also with a full-width comma) splits at the comma. A Chinese
    name has no comma: its family name is the first character, or the first two for a
    compound surname (欧阳修 → 修, 欧阳); a space after the family name is respected, and a
    transliterated name splits at its middle dot (约翰·史密斯 → 约翰, 史密斯). Any other
    name puts its last word in the last name.
    """
    first, last = split_names(pa.array([name], pa.string()))
    return first[0].as_py(), last[0].as_py()


def split_names(names: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``split_name`` over a string column: (first names, last names).

    Each rule takes the names no earlier rule took, in ``split_name``'s order.
    """
    name = _squeeze(_nfc(names))
    first = last = _constant(len(name), "")
    todo = pc.not_equal(name, "")
    comma = pc.and_(todo, pc.match_substring(name, ","))
    full_width = pc.and_not(pc.and_(todo, pc.match_substring(name, "，")), comma)
    cjk = pc.and_not(pc.and_(todo, pc.match_substring_regex(name, _CJK)), pc.or_(comma, full_width))
    rules: list[tuple[pa.Array, str | int]] = [
        (comma, r"(?s)^(?P<last>.*?),(?P<first>.*)$"),
        (full_width, r"(?s)^(?P<last>.*?)，(?P<first>.*)$"),
    ]
    rest = cjk
    for dot in _NAME_DOTS:
        dotted = pc.and_(rest, pc.match_substring(name, dot))
        rules.append((dotted, rf"(?s)^(?P<first>.*?){dot}(?P<last>.*)$"))
        rest = pc.and_not(rest, dotted)
    spaced = pc.and_(rest, pc.match_substring(name, " "))
    rest = pc.and_not(rest, spaced)
    compound = pc.and_(
        rest,
        pc.and_(
            pc.is_in(pc.utf8_slice_codeunits(name, 0, 2), value_set=_COMPOUND),
            pc.greater(pc.utf8_length(name), 2),
        ),
    )
    western = pc.and_not(todo, pc.or_(pc.or_(comma, full_width), cjk))
    rules += [
        (spaced, r"(?s)^(?P<last>[^ ]*) (?P<first>.*)$"),
        (compound, 2),
        (pc.and_not(rest, compound), 1),
        (western, r"(?s)^(?:(?P<first>.*) )?(?P<last>[^ ]*)$"),
    ]
    for mask, rule in rules:
        if pc.any(mask).as_py():
            some = name.filter(mask)
            if isinstance(rule, int):  # the family name is the first ``rule`` characters
                parts = (pc.utf8_slice_codeunits(some, rule), pc.utf8_slice_codeunits(some, 0, rule))
            else:
                found = pc.extract_regex(some, rule)
                parts = (found.field("first"), found.field("last"))
            first = pc.replace_with_mask(first, mask, pc.ascii_trim(parts[0], " "))
            last = pc.replace_with_mask(last, mask, pc.ascii_trim(parts[1], " "))
    return first, last


def patron_primary_ids(z303: pa.Table, excluded: Mapping[str, str] | None = None) -> dict[str, str]:
    """Z303_REC_KEY → primary id (stripped): what loans, requests and fines link through.

    Patrons in ``excluded`` and patrons without a primary id are left out, so fulfillment
    records of patrons who do not migrate are rejected as ``unknown_patron``.
    """
    excluded = excluded or {}
    pairs = zip(
        text_column(z303, "Z303_REC_KEY").to_pylist(),
        text_column(z303, "Z303_PRIMARY_ID").to_pylist(),
        strict=True,
    )
    return {key: primary for key, primary in pairs if key and primary and key not in excluded}


# --- column helpers -----------------------------------------------------------------------


def _data(values: pa.Array) -> memoryview:
    """The UTF-8 bytes of all ``values``, concatenated: a view of the data buffer's used range."""
    if len(values) == 0:
        return memoryview(b"")
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise TypeError(f"expected a string array, got {values.type}")
    _, offsets, data = values.buffers()
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    start, stop = np.frombuffer(offsets, width)[[values.offset, values.offset + len(values)]]
    return memoryview(b"") if data is None else memoryview(data)[int(start) : int(stop)]


def _chars(values: pa.Array) -> bytes:
    """``_data`` as bytes, for the whole-column checks."""
    return _data(values).tobytes()


def _nfc(values: pa.Array) -> pa.Array:
    """NFC-normalised ``values``; unchanged (and not copied) when all of them already are.

    If the concatenation is normalised so is each value: a value's own non-normal sequence
    stays in the concatenation. The converse may fail (a value starting with a combining mark):
    that only costs the normalisation.
    """
    data = _chars(values)
    if data.isascii() or unicodedata.is_normalized("NFC", data.decode()):
        return values
    return pc.utf8_normalize(values, "NFC")


def _squeeze(values: pa.Array) -> pa.Array:
    """``" ".join(value.split())`` per value: whitespace runs become one space, none at the ends."""
    data = _chars(values)
    if (
        b"  " in data
        or data.translate(None, _NOT_ASCII_SPACE)
        or any(seq in data for seq in _WIDE_SPACE_BYTES)
    ):
        values = pc.replace_substring_regex(values, f"[{_SPACE}]+", " ")
    return pc.ascii_trim(values, " ")


def _is_label(line0: pa.Array, names: pa.Array) -> pa.Array:
    """Which non-blank Z304_ADDRESS_0 values are the patron's name, whitespace and NFC aside."""
    same = pc.equal(line0, names)
    other = pc.and_not(pc.not_equal(line0, ""), same)
    if pc.any(other).as_py():  # the common case, the name itself, needs no normalising
        normalised = pc.equal(_squeeze(_nfc(line0.filter(other))), _squeeze(_nfc(names.filter(other))))
        same = pc.replace_with_mask(same, other, normalised)
    return pc.and_(same, pc.not_equal(line0, ""))


def _lower(values: pa.Array) -> pa.Array:
    """``str.lower()`` per value (Arrow's utf8_lower lacks Python's special cases: İ, final sigma)."""
    if _chars(values).isascii():
        return pc.ascii_lower(values)
    return pa.array([value.lower() for value in values.to_pylist()], pa.string())


def _count(mask: pa.Array) -> int:
    return int(pc.sum(mask).as_py() or 0)


def _constant(n: int, value: str) -> pa.Array:
    return pa.array([value], pa.string()).take(
        np.zeros(n, dtype=np.int32)
    )  # 40× faster than nulls + fill_null


def _scatter(n: int, at: np.ndarray, values: pa.Array, default: str | None) -> pa.Array:
    """A column of ``n`` values: ``values`` at the (ascending) positions ``at``, ``default`` elsewhere."""
    mask = np.zeros(n, dtype=bool)
    mask[at] = True
    base = pa.nulls(n, pa.string()) if default is None else _constant(n, default)
    return pc.replace_with_mask(base, pa.array(mask), values)


# XML is assembled from string columns in which an absent element is null: ``_element``
# propagates nulls, ``_cat`` leaves them out. Nulls come from a validity bitmap laid over
# the same buffers (``_only``): ``if_else`` would copy every string.


def _only(values: pa.Array, keep: pa.Array) -> pa.Array:
    """``values`` where ``keep`` (and not null), null elsewhere."""
    if values.null_count:
        keep = pc.and_(keep, pc.is_valid(values))
    bits = np.zeros(values.offset + len(values), dtype=bool)
    bits[values.offset :] = pc.fill_null(keep, False).to_numpy(zero_copy_only=False)
    validity = pa.py_buffer(np.packbits(bits, bitorder="little"))
    return pa.Array.from_buffers(
        values.type, len(values), [validity, *values.buffers()[1:]], offset=values.offset
    )


def _cat(*parts: pa.Array | str) -> pa.Array:
    """Strings concatenated row by row, null parts left out.

    (``null_handling="skip"`` would do, but pyarrow 26 drops the rows in which every part is
    a null array element: the result is shorter than its inputs.)
    """
    return pc.binary_join_element_wise(*parts, "", null_handling="replace", null_replacement="")


def _element(tag: str, values: pa.Array, present: pa.Array) -> pa.Array:
    """``<tag>value</tag>`` where ``present``, else null.

    ``present`` is decided on the raw value: a value cleaned to nothing still writes its element.
    """
    return pc.binary_join_element_wise(f"<{tag}>", _only(values, present), f"</{tag}>", "")


def _date_element(tag: str, dates: pa.Array) -> pa.Array:
    """A date as Alma's user XML writes it (``<tag>2031-07-31Z</tag>``), null where null."""
    return pc.binary_join_element_wise(f"<{tag}>", dates.cast(pa.string()), f"Z</{tag}>", "")


def _wrap(tag: str, inner: list[pa.Array], present: pa.Array) -> list[pa.Array]:
    """The parts of ``<tag>inner</tag>`` for ``_cat``: the tags only where ``present``.

    Parts rather than one column: each byte of a user is copied once into its ``<user>``.
    """
    n = len(present)
    return [_only(_constant(n, f"<{tag}>"), present), *inner, _only(_constant(n, f"</{tag}>"), present)]


def _filled(values: pa.Array) -> pa.Array:
    return pc.not_equal(values, "")


def _flags(first: np.ndarray) -> pa.Array:
    """``preferred`` attribute values: ``true`` on each user's first row."""
    return pc.if_else(pa.array(first), "true", "false")


def _alma_date(yyyymmdd: str) -> str:
    """A form default date as Alma's user XML writes it (``2031-07-31Z``); ``""`` when unset or invalid."""
    if len(yyyymmdd) == 8 and yyyymmdd.isdigit():
        try:
            return f"{date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:])).isoformat()}Z"
        except ValueError:
            return ""
    return ""


# --- child rows per user ------------------------------------------------------------------


def _first_of_user(user: np.ndarray) -> np.ndarray:
    """Which rows (sorted by user) are their user's first."""
    return np.diff(user, prepend=-1) != 0


def _first_occurrences(user: np.ndarray, values: pa.Array) -> np.ndarray:
    """Which rows (sorted by user) hold the first occurrence of their value within their user."""
    first = _first_of_user(user)
    shared = ~(first & np.append(first[1:], True))  # rows of users with more than one row
    if not shared.any():
        return np.ones(len(user), dtype=bool)
    pos = np.flatnonzero(shared)
    firsts = (
        pa.table({"user": user[pos], "value": values.take(pa.array(pos)), "pos": pos})
        .group_by(["user", "value"], use_threads=False)
        .aggregate([("pos", "min")])
    )
    unique = ~shared
    unique[firsts["pos_min"].to_numpy()] = True
    return unique


def _per_user(n: int, user: np.ndarray, fragments: pa.Array) -> pa.Array:
    """For each of ``n`` users, its ``fragments`` (rows sorted by ``user``) concatenated."""
    offsets = np.searchsorted(user, np.arange(n + 1)).astype(np.int32)
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), fragments), "")


class _Owners:
    """Finds the written user of a child row by its patron key; counts the rows of patrons not in Z303."""

    def __init__(self, keys: pa.Array, written: pa.Array, stats: UserStats) -> None:
        self.keys, self.stats = keys, stats
        self.users = keys.filter(written)
        mask = written.to_numpy(zero_copy_only=False)
        # Z303 row → user index, -1 for a rejected row; the last entry (-1) for a key not in Z303
        self.user_of_row = np.append(np.where(mask, np.cumsum(mask) - 1, -1), -1)
        self.unique = pc.count_distinct(keys).as_py() == len(keys)

    def attach(self, rows: pa.Table) -> pa.Table:
        """The ``rows`` of written users, with the index of their user in a ``user`` column."""
        if self.unique:  # the usual case, one Z303 row per key: a lookup
            at = pc.fill_null(pc.index_in(rows["patron"], value_set=self.keys), -1).to_numpy()
            self.stats.orphan_rows += int((at < 0).sum())
            user = self.user_of_row[at]
            return rows.append_column("user", pa.array(user)).filter(pa.array(user >= 0))
        # A repeated key (validation normally excludes it): each written user of the key gets the rows.
        self.stats.orphan_rows += rows.num_rows - _count(pc.is_in(rows["patron"], value_set=self.keys))
        index = pa.table({"patron": self.users, "user": pa.array(np.arange(len(self.users)))})
        return rows.join(index, "patron", join_type="inner", use_threads=False)


@dataclass(frozen=True)
class _Rows:
    """Child rows (Z304/Z305/Z308) of the written users, sorted by user; ``user`` is its index."""

    table: pa.Table
    user: np.ndarray

    @classmethod
    def of_users(cls, rows: pa.Table, owners: _Owners, order: list[tuple[str, str]]) -> _Rows:
        """``rows`` (with a ``patron`` column) of the written users, sorted by user, ``order`` and
        input order."""
        rows = owners.attach(rows.append_column("row", pa.array(np.arange(rows.num_rows))))
        rows = rows.sort_by([("user", "ascending"), *order, ("row", "ascending")]).combine_chunks()
        return cls(rows, rows["user"].to_numpy())

    def slice(self, start: int, stop: int) -> _Rows:
        """The rows of users ``start``..``stop``, their index rebased to 0."""
        lo, hi = np.searchsorted(self.user, [start, stop])
        return _Rows(self.table.slice(lo, hi - lo), self.user[lo:hi] - start)

    def where(self, mask: pa.Array) -> _Rows:
        return _Rows(self.table.filter(mask), self.user[mask.to_numpy(zero_copy_only=False)])

    def having(self, columns: dict[str, pa.Array]) -> _Rows:
        """The same rows with (only) these columns: filtering carries no more than it needs."""
        return _Rows(pa.table(columns), self.user)

    def __getitem__(self, name: str) -> pa.Array:
        column = self.table.column(name)
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


# --- the document -------------------------------------------------------------------------


def write_users_xml(
    z303: pa.Table,
    z304: pa.Table,
    z305: pa.Table,
    z308: pa.Table,
    form: FormLookups,
    out: BinaryIO,
    excluded: Mapping[str, str],
    rejects: RejectLog,
    options: UserOptions,
) -> UserStats:
    """Write one part's patrons as an Alma users XML document to ``out``.

    ``z304``/``z305``/``z308`` hold (at least) the rows of the patrons in ``z303``; rows of
    other patrons are ignored and counted. Patrons in ``excluded`` (Z303 key → reason), with
    a blank key or primary id, or repeating a primary id already written are rejected.
    Rejects carry the patron id only: no names or addresses leave for reports.
    """
    for name, table in (("Z303", z303), ("Z304", z304), ("Z305", z305), ("Z308", z308)):
        require_columns(table, USER_COLUMNS[name], name)
    stats = UserStats(records_in=z303.num_rows)
    patrons = pa.table(
        {
            "key": text_column(z303, "Z303_REC_KEY"),
            "primary_id": text_column(z303, "Z303_PRIMARY_ID"),
            "name": text_column(z303, "Z303_NAME"),
            "birth": date_column(z303, "Z303_BIRTH_DATE"),
            "delinq": text_column(z303, "Z303_DELINQ_N_1"),
        }
    )
    accepted = _accepted(patrons, excluded, rejects, stats)
    users = patrons.filter(accepted)
    stats.records_out = users.num_rows
    owners = _Owners(patrons["key"].combine_chunks(), accepted, stats)
    addresses = _Rows.of_users(
        _address_rows(z304, options.as_of), owners, [("stale", "ascending"), ("key", "ascending")]
    )
    expiry = date_column(z305, "Z305_EXPIRY_DATE")
    locals_ = _Rows.of_users(
        pa.table(
            {
                "patron": key_prefix(z305, "Z305_REC_KEY", KEY_WIDTH),
                "key": text_column(z305, "Z305_REC_KEY"),
                "bor_status": text_column(z305, "Z305_BOR_STATUS"),
                "bor_type": text_column(z305, "Z305_BOR_TYPE"),
                "expiry": expiry,
                "undated": pc.is_null(expiry),
            }
        ),
        owners,
        [("undated", "ascending"), ("expiry", "descending"), ("key", "ascending")],
    )
    identifiers = _Rows.of_users(
        pa.table(
            {
                "patron": text_column(z308, "Z308_ID"),
                "key": text_column(z308, "Z308_REC_KEY"),
            }
        ),
        owners,
        [("key", "ascending")],
    )

    writer = _UserWriter(form, options, stats)
    out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<users>\n')
    for start in range(0, users.num_rows, CHUNK_USERS):
        stop = min(start + CHUNK_USERS, users.num_rows)
        xml = writer.users(
            users.slice(start, stop - start),
            addresses.slice(start, stop),
            locals_.slice(start, stop),
            identifiers.slice(start, stop),
        )
        out.write(_data(xml))
    out.write(b"</users>\n")
    return stats.check(ENTITY)


def _accepted(
    patrons: pa.Table, excluded: Mapping[str, str], rejects: RejectLog, stats: UserStats
) -> pa.Array:
    """Which Z303 rows are written; the others are rejected, in Z303 order."""
    key, primary = patrons["key"], patrons["primary_id"]
    failed = pc.or_(
        pc.or_(pc.equal(key, ""), pc.is_in(key, value_set=pa.array(list(excluded), pa.string()))),
        pc.equal(primary, ""),
    )
    # A repeated primary id: only the first of the otherwise accepted rows is written.
    candidates = pc.indices_nonzero(pc.invert(failed))
    unique = _first_occurrences(np.zeros(len(candidates), dtype=np.int64), primary.take(candidates))
    written = np.zeros(len(key), dtype=bool)
    written[candidates.to_numpy()[unique]] = True
    accepted = pa.array(written)
    rejected = pc.indices_nonzero(pc.invert(accepted))
    for key_, primary_id in zip(
        key.take(rejected).to_pylist(), primary.take(rejected).to_pylist(), strict=True
    ):
        reason = _reject_reason(key_, primary_id, excluded)
        rejects.add(
            Reject(ENTITY, key_, reason, detail="" if key_ else f"Z303 row with primary id {primary_id!r}")
        )
        stats.reject(reason)
    return accepted


def _reject_reason(key: str, primary_id: str, excluded: Mapping[str, str]) -> str:
    """Why a rejected Z303 row was rejected (``_accepted`` found a reason)."""
    if not key:
        return "missing_patron_key"
    if key in excluded:
        return excluded[key]
    if not primary_id:
        return "missing_primary_id"
    return "duplicate_primary_id"  # a safety net: validation normally excludes the whole group


def _address_rows(z304: pa.Table, as_of: date | None) -> pa.Table:
    """Z304 columns; ``stale`` marks addresses not valid on ``as_of`` (sorted after the current ones)."""
    start, end = date_column(z304, "Z304_DATE_FROM"), date_column(z304, "Z304_DATE_TO")
    if as_of is None:
        stale = pa.array(np.zeros(z304.num_rows, dtype=bool))
    else:
        day = pa.scalar(as_of, pa.date32())
        stale = pc.or_(pc.fill_null(pc.greater(start, day), False), pc.fill_null(pc.less(end, day), False))
    return pa.table(
        {
            "patron": key_prefix(z304, "Z304_REC_KEY", KEY_WIDTH),
            "key": text_column(z304, "Z304_REC_KEY"),
            **{f"line{i}": text_column(z304, f"Z304_ADDRESS_{i}") for i in range(3)},
            "zip": text_column(z304, "Z304_ZIP"),
            "email": text_column(z304, "Z304_EMAIL_ADDRESS"),
            "phone": text_column(z304, "Z304_TELEPHONE"),
            "type": text_column(z304, "Z304_ADDRESS_TYPE"),
            "start": start,
            "end": end,
            "stale": stale,
        }
    )


class _Text:
    """Cleans text columns for XML: NFC, characters XML 1.0 cannot hold removed (and counted), escaped.

    Each step runs only where a check over the column's bytes finds something to do.
    """

    def __init__(self, stats: UserStats) -> None:
        self.stats = stats

    def __call__(self, values: pa.Array) -> pa.Array:
        values = _nfc(values)
        data = _chars(values)
        if data.translate(None, _XML_BYTES) or (
            _NONCHARACTERS[0][:2] in data and any(bad in data for bad in _NONCHARACTERS)
        ):
            cleaned = pc.replace_substring_regex(values, _INVALID_XML, "")
            self.stats.invalid_chars_removed += _count(pc.utf8_length(values)) - _count(
                pc.utf8_length(cleaned)
            )
            values = cleaned
        for char, entity in _ENTITIES:
            if char.encode() in data:
                values = pc.replace_substring(values, char, entity)
        return values


def _note(note_type: str, text: pa.Array, present: pa.Array) -> pa.Array:
    """A note element where ``present``, else null."""
    return pc.binary_join_element_wise(
        f'<user_note segment_type="External"><note_type>{note_type}</note_type>',
        _element("note_text", text, present),
        "<user_viewable>false</user_viewable><popup_note>false</popup_note></user_note>",
        "",
    )


class _UserWriter:
    """Builds the ``<user>`` elements of a chunk of users, one string per user."""

    def __init__(self, form: FormLookups, options: UserOptions, stats: UserStats) -> None:
        self.form, self.options, self.stats, self.text = form, options, stats, _Text(stats)
        self.default_group = form_default(form, "default_user_group")
        self.default_expiry = _alma_date(form_default(form, "patron_expiry_default"))
        purge = _alma_date(form_default(form, "patron_purge_default"))
        if purge and self.default_expiry:  # 'YYYY-MM-DDZ' strings order as the dates do
            purge = max(purge, self.default_expiry)
        self.default_purge = purge

    def users(self, users: pa.Table, addresses: _Rows, locals_: pa.Table, identifiers: _Rows) -> pa.Array:
        n = users.num_rows
        primary, name = users["primary_id"].combine_chunks(), users["name"].combine_chunks()
        first, last = split_names(name)
        group, expiry, undated = self._group_and_expiry(n, locals_)
        purge = _constant(n, self.default_purge)
        external = _constant(n, self.options.external_id)
        return _cat(
            "<user><record_type>PUBLIC</record_type><primary_id>",
            self.text(primary),
            "</primary_id>",
            _element("first_name", self.text(first), _filled(first)),
            _element("last_name", self.text(last), _filled(last)),
            _element("user_group", self.text(group), _filled(group)),
            _date_element("birth_date", users["birth"].combine_chunks()),
            _element("expiry_date", expiry, _filled(expiry)),
            _element("purge_date", purge, pc.and_(undated, _filled(purge))),
            "<account_type>EXTERNAL</account_type>",
            _element("external_id", self.text(external), _filled(external))
            if self.options.external_id
            else "",
            "<status>ACTIVE</status>",
            *self._contact_info(primary, name, addresses),
            *self._identifiers(n, identifiers),
            *self._notes(users["delinq"].combine_chunks()),
            "</user>\n",
        )

    def _group_and_expiry(self, n: int, rows: _Rows) -> tuple[pa.Array, pa.Array, pa.Array]:
        """User group of the Z305 row that expires last (first such row on ties), that expiry,
        and whether the patron has no Z305 expiry (the form's default expiry stands in).

        ``rows`` are sorted so that this row comes first: dated before undated, latest expiry, key.
        """
        best = rows.where(pa.array(_first_of_user(rows.user)))
        codes = pc.binary_join_element_wise(best["bor_status"], best["bor_type"], "\x1f")
        groups, fell_back = map_codes(
            codes, lambda code: self.form.user_group_for(*code.split("\x1f", 1)), self.default_group
        )
        self.stats.group_fallbacks += n - len(best.user) + _count(fell_back)
        own = pc.binary_join_element_wise(best["expiry"].cast(pa.string()), "Z", "")
        own = _scatter(n, best.user, own, None)
        return (
            _scatter(n, best.user, groups, self.default_group),
            own.fill_null(self.default_expiry),
            pc.is_null(own),
        )

    def _contact_info(self, primary: pa.Array, name: pa.Array, rows: _Rows) -> list[pa.Array]:
        """Addresses, e-mails and phones in row order: current rows first, then by key."""
        n = len(primary)
        kind, _ = map_codes(rows["type"], self.options.address_types.get, "alternative")
        addresses = self._addresses(n, rows, kind, name.take(pa.array(rows.user)))
        emails = self._emails(n, rows.having({"email": rows["email"], "kind": kind}), primary)
        phones = self._phones(n, rows.having({"phone": rows["phone"], "kind": kind}))
        inner = [
            *_wrap("addresses", [addresses], _filled(addresses)),
            *_wrap("emails", [emails], _filled(emails)),
            *_wrap("phones", [phones], _filled(phones)),
        ]
        present = pc.or_(pc.or_(_filled(addresses), _filled(emails)), _filled(phones))
        return _wrap("contact_info", inner, present)

    def _addresses(self, n: int, rows: _Rows, kind: pa.Array, names: pa.Array) -> pa.Array:
        """Address lines, numbered from 1 over the non-blank ones; rows without any line write no address."""
        line0 = rows["line0"]
        line0 = pc.if_else(_is_label(line0, names), "", line0)  # the name on Aleph's mailing label
        present = [pc.not_equal(line0, "")] + [pc.not_equal(rows[f"line{i}"], "") for i in (1, 2)]
        rows = rows.having(
            {
                "line0": line0,
                "line1": rows["line1"],
                "line2": rows["line2"],
                "zip": rows["zip"],
                "start": rows["start"],
                "end": rows["end"],
                "kind": kind,
            }
        )
        rows = rows.where(pc.or_(pc.or_(present[0], present[1]), present[2]))
        lines, number = [], pa.array(np.ones(len(rows.user), dtype=np.int8))
        for i in range(3):
            line = rows[f"line{i}"]
            there = pc.not_equal(line, "")
            tag = number.cast(pa.string())
            lines.append(
                pc.binary_join_element_wise(
                    "<line", tag, ">", _only(self.text(line), there), "</line", tag, ">", ""
                )
            )
            number = pc.add(number, there.cast(pa.int8()))
        fragments = _cat(
            '<address preferred="',
            _flags(_first_of_user(rows.user)),
            '" segment_type="External">',
            *lines,
            _element("postal_code", self.text(rows["zip"]), _filled(rows["zip"])),
            _date_element("start_date", rows["start"]),
            _date_element("end_date", rows["end"]),
            "<address_types><address_type>",
            rows["kind"],
            "</address_type></address_types></address>",
        )
        return _per_user(n, rows.user, fragments)

    def _emails(self, n: int, rows: _Rows, primary: pa.Array) -> pa.Array:
        """E-mails, each once per user (ignoring case); scrubbed ones all become the user's one address."""
        email = rows["email"]
        present = pc.not_equal(email, "")
        if self.options.scrub_emails:
            self.stats.emails_scrubbed += _count(present)
            owner = pc.replace_substring_regex(primary, "[^A-Za-z0-9._-]", "_").take(pa.array(rows.user))
            email = pc.binary_join_element_wise(
                owner, f"@{self.options.scrub_domain}", ""
            )  # blank ones dropped below
        rows = rows.having({"address": email, "kind": rows["kind"]}).where(present)
        rows = rows.where(pa.array(_first_occurrences(rows.user, _lower(rows["address"]))))
        types, _ = map_codes(rows["kind"], _EMAIL_TYPES.get, "alternative")
        fragments = _cat(
            '<email preferred="',
            _flags(_first_of_user(rows.user)),
            '" segment_type="External"><email_address>',
            self.text(rows["address"]),
            "</email_address><email_types><email_type>",
            types,
            "</email_type></email_types></email>",
        )
        return _per_user(n, rows.user, fragments)

    def _phones(self, n: int, rows: _Rows) -> pa.Array:
        """Phones, each once per user; a mainland mobile number is typed ``mobile``."""
        rows = rows.where(pc.not_equal(rows["phone"], ""))
        rows = rows.where(pa.array(_first_occurrences(rows.user, rows["phone"])))
        phone = rows["phone"]
        mobile = pc.match_substring_regex(pc.replace_substring_regex(phone, f"[{_SPACE}-]", ""), _MOBILE)
        kinds, _ = map_codes(rows["kind"], _PHONE_TYPES.get, "home")
        fragments = _cat(
            '<phone preferred="',
            _flags(_first_of_user(rows.user)),
            '" preferred_sms="false" segment_type="External"><phone_number>',
            self.text(phone),
            "</phone_number><phone_types><phone_type>",
            pc.if_else(mobile, "mobile", kinds),
            "</phone_type></phone_types></phone>",
        )
        return _per_user(n, rows.user, fragments)

    def _identifiers(self, n: int, rows: _Rows) -> list[pa.Array]:
        """Z308 keys of a known type (the first two characters) with a value; others counted as skipped."""
        key = rows["key"]
        id_type, unknown = map_codes(
            pc.utf8_slice_codeunits(key, 0, 2), self.options.identifier_types.get, ""
        )
        value = pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(key, 2))
        kept = pc.and_not(pc.not_equal(value, ""), unknown)
        self.stats.identifiers_skipped += len(key) - _count(kept)
        user = rows.user[kept.to_numpy(zero_copy_only=False)]
        fragments = _cat(
            '<user_identifier segment_type="External"><id_type>',
            self.text(id_type.filter(kept)),
            "</id_type><value>",
            self.text(value.filter(kept)),
            "</value><status>ACTIVE</status></user_identifier>",
        )
        identifiers = _per_user(n, user, fragments)
        return _wrap("user_identifiers", [identifiers], _filled(identifiers))

    def _notes(self, delinquency: pa.Array) -> list[pa.Array]:
        note = _note("CIRCULATION", self.text(delinquency), _filled(delinquency))
        return _wrap("user_notes", [note], pc.is_valid(note))
