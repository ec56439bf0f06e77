"""What changed in Aleph since a baseline: record hashes, Aleph's own change stamps, the diff.

Between the test load and the cutover the library keeps cataloguing and lending. The nightly
delta finds what changed since the last committed night three ways, each where it applies:

- **Update-date columns.** Z30 and Z303 carry the day a row last changed
  (``ZTable.updated``). With ``[nightly] by_update_date`` on, such a table is read by that
  column (rows stamped on or after the window's first day, ``lookback_days`` earlier) plus a
  key-only scan, which finds inserted and deleted rows; the other rows keep their hashes from
  the baseline.
- **Cataloguing history.** A bib or holdings record's CAT lines (Aleph writes one per save:
  ``$$c`` the day, ``$$h`` the time, as in USP's public export in tests/fixtures/samples/)
  say when it last changed. The export is read whole, so
  the CAT stamp does not select records; it tells a change the library recorded from one it
  did not (a global change, a batch job): the summary's *unstamped* count, for Z30/Z303 too.
  (Z106, the same history as a table, is not read: the CAT lines are in every export.)
- **Record hashes.** Every record of every other table, and every ALEPHSEQ record, is hashed
  and compared with the baseline's hash: that is what finds changes nothing stamps, and
  deletions.

A *baseline* is one row per record: its key, its hash, its stamp and, for the Z-tables the
validation rules read, those columns (``validate.checks.NEEDED_COLUMNS``), so the same rules
can judge the library as it is tonight without reading it twice. Record hashes are
BLAKE2b-128: of the record's raw lines for ALEPHSEQ, of the row's values (each
length-prefixed, null distinct from blank) for Z-tables. The full extract's raw parts hash to
the same values, which is how the first night compares with it and how the tests prove that
the deltas applied to the first extract give the next one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

from aleph2alma.accounting import UnbalancedError
from aleph2alma.aleph.alephseq import check_line, iter_raw_records
from aleph2alma.aleph.extract import arrow_schema
from aleph2alma.aleph.ztables import Z_TABLES
from aleph2alma.errors import PermanentError

HASH = "row_hash"
HASH_SLICE = 4096
"""Rows encoded at once for hashing (bounds the memory of the text being hashed)."""
STAMP = "stamp"
SEQ_KEY = "sysno"
DUPLICATE_MARK = "#"
"""A system number met again in one export: ``<sysno>#2``, ``#3`` … (in file order)."""

NEW, CHANGED, DELETED = "new", "changed", "deleted"
CHANGES_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("change", pa.string()),
        pa.field("stamped", pa.bool_()),
        pa.field("stamp", pa.int64()),
        pa.field("previous_stamp", pa.int64()),
    ]
)
"""One row per new, changed or deleted record; ``stamped``: Aleph's own history shows the change
(a newer CAT line or update date than the baseline's; for a new record, any)."""


class DeltaError(PermanentError):
    """A window or a baseline cannot be used as given; the message says what would be."""


# --- hashes and stamps --------------------------------------------------------------------


def record_hash(raw: bytes) -> bytes:
    """The hash of one ALEPHSEQ record: its lines exactly as exported."""
    return hashlib.blake2b(raw, digest_size=16).digest()


def row_hashes(rows: pa.Table | pa.RecordBatch, columns: Iterable[str]) -> pa.Array:
    """One hash per row over ``columns``: each value as ``<byte length>:<text>``, null as ``-``.

    Rows are encoded a slice at a time: a blank-padded Z30 row is over a kilobyte of text.
    """
    names = list(columns)
    digest = hashlib.blake2b
    hashes: list[bytes] = []
    for at in range(0, rows.num_rows, HASH_SLICE):
        part = rows.slice(at, HASH_SLICE)
        encoded = []
        for name in names:
            col = part.column(name)
            text = col if pa.types.is_string(col.type) else pc.cast(col, pa.string())
            length = pc.cast(pc.binary_length(text), pa.string())
            encoded.append(pc.fill_null(pc.binary_join_element_wise(length, text, ":"), "-"))
        joined = pc.binary_join_element_wise(*encoded, "").cast(pa.binary())
        hashes += [digest(v, digest_size=16).digest() for v in joined.to_pylist()]
    return pa.array(hashes, pa.binary())


def cat_stamp(raw: bytes) -> int:
    """The newest CAT line of a record as ``YYYYMMDDHHMM`` (``$$c`` day, ``$$h`` time); 0 if none."""
    newest = 0
    for line in raw.splitlines():
        if line[10:13] != b"CAT" or check_line(line) is not None:
            continue
        day, hour = _subfield(line, b"c"), _subfield(line, b"h")
        if len(day) == 8 and day.isdigit():
            newest = max(newest, int(day) * 10_000 + (int(hour) if len(hour) == 4 and hour.isdigit() else 0))
    return newest


def _subfield(line: bytes, code: bytes) -> bytes:
    at = line.find(b"$$" + code, 18)
    if at < 0:
        return b""
    end = line.find(b"$$", at + 3)
    return line[at + 3 : end if end >= 0 else len(line)].strip()


# --- what a source's baseline holds --------------------------------------------------------


@dataclass(frozen=True)
class SourceLayout:
    """How one source (a Z-table, or a library's ALEPHSEQ export) is keyed, stamped and kept."""

    entity: str
    source: str
    kind: str  # "table" | "alephseq"
    key: str
    stamped: bool
    """Whether the source carries Aleph's own change stamp (an update date, CAT lines)."""
    kept: tuple[str, ...] = ()
    """Columns besides the key the baseline keeps: those the validation rules read."""

    def schema(self) -> pa.Schema:
        """The baseline's schema: key, kept columns (as extracted), hash, stamp."""
        if self.kind == "alephseq":
            fields = [pa.field(SEQ_KEY, pa.string())]
        else:
            raw = arrow_schema(Z_TABLES[self.source])
            fields = [raw.field(name) for name in (self.key, *self.kept)]
        return pa.schema([*fields, pa.field(HASH, pa.binary()), pa.field(STAMP, pa.int64())])

    def fits(self, baseline: pa.Table) -> bool:
        """Whether a stored baseline has every column this layout keeps (the rules may have grown)."""
        return set(self.schema().names) <= set(baseline.schema.names)


def layout_of(entity: str, source: str, kind: str) -> SourceLayout:
    if kind == "alephseq":
        return SourceLayout(entity, source, kind, SEQ_KEY, stamped=True)
    from aleph2alma.validate.checks import NEEDED_COLUMNS

    ztable = Z_TABLES[source]
    kept = tuple(c for c in NEEDED_COLUMNS.get(source, ()) if c != ztable.key)
    return SourceLayout(entity, source, kind, ztable.key, stamped=bool(ztable.updated), kept=kept)


def baseline_rows(rows: pa.Table | pa.RecordBatch, layout: SourceLayout) -> pa.Table:
    """Baseline rows of extracted Z-table rows (the extract's columns, blank-padded)."""
    ztable = Z_TABLES[layout.source]
    stamp = (
        pc.fill_null(pc.cast(rows.column(ztable.updated), pa.int64()), 0)
        if ztable.updated
        else pa.array([0] * rows.num_rows, pa.int64())
    )
    columns = [rows.column(name) for name in (layout.key, *layout.kept)]
    return pa.Table.from_arrays(
        [*columns, row_hashes(rows, arrow_schema(ztable).names), stamp], schema=layout.schema()
    )


# --- ALEPHSEQ records -----------------------------------------------------------------------


def seq_records(files: Iterable[Path | BinaryIO]) -> Iterator[tuple[str, bytes]]:
    """(system number, raw bytes) of every record of ``files`` read as one export, in order."""
    for f in files:
        if isinstance(f, Path):
            with open(f, "rb") as fh:
                for sysno, _, raw in iter_raw_records(fh):
                    yield sysno, raw
        else:
            for sysno, _, raw in iter_raw_records(f):
                yield sysno, raw


class DuplicateKeys:
    """Gives a system number met again in one export its own key (``<sysno>#2``), the same way
    in every pass over the export (``repeated``: the system numbers that occur more than once)."""

    def __init__(self, repeated: Iterable[str] = ()) -> None:
        self.repeated = frozenset(repeated)
        self._seen: dict[str, int] = {}

    @classmethod
    def among(cls, sysnos: pa.Array) -> DuplicateKeys:
        counts = pc.value_counts(sysnos)
        return cls(counts.field("values").filter(pc.greater(counts.field("counts"), 1)).to_pylist())

    def key(self, sysno: str) -> str:
        if sysno not in self.repeated:
            return sysno
        n = self._seen[sysno] = self._seen.get(sysno, 0) + 1
        return sysno if n == 1 else f"{sysno}{DUPLICATE_MARK}{n}"

    def keys(self, sysnos: pa.Array) -> pa.Array:
        if not self.repeated:
            return sysnos
        return pa.array([self.key(s) for s in sysnos.to_pylist()], pa.string())


def seq_baseline(
    files: Iterable[Path | BinaryIO], layout: SourceLayout, sizes: list[int] | None = None
) -> pa.Table:
    """Baseline rows of an ALEPHSEQ export (or of an extract's parts of it), in file order;
    ``sizes`` (if given) gets each record's length in bytes: the records cover the file, one
    after the other, so a record can be read again by seeking."""
    sysnos: list[str] = []
    hashes: list[bytes] = []
    stamps: list[int] = []
    for sysno, raw in seq_records(files):
        sysnos.append(sysno)
        hashes.append(record_hash(raw))
        stamps.append(cat_stamp(raw))
        if sizes is not None:
            sizes.append(len(raw))
    raw_keys = pa.array(sysnos, pa.string())
    keys = DuplicateKeys.among(raw_keys).keys(raw_keys)
    return pa.Table.from_arrays(
        [keys, pa.array(hashes, pa.binary()), pa.array(stamps, pa.int64())], schema=layout.schema()
    )


def sysno_of(key: str) -> str:
    """The system number of an ALEPHSEQ baseline key (``000000123#2`` → ``000000123``)."""
    return key.partition(DUPLICATE_MARK)[0]


# --- the diff -------------------------------------------------------------------------------


def compare(previous: pa.Table, current: pa.Table, key: str) -> pa.Table:
    """New, changed and deleted records between two baselines of one source (``CHANGES_SCHEMA``,
    sorted by key); unchanged records are left out."""
    prev = pa.table(
        {
            "key": previous.column(key),
            "previous_hash": previous.column(HASH),
            "previous_stamp": previous.column(STAMP),
        }
    )
    cur = pa.table({"key": current.column(key), "hash": current.column(HASH), "stamp": current.column(STAMP)})
    joined = cur.join(prev, "key", join_type="full outer")
    new = pc.is_null(joined["previous_hash"])
    deleted = pc.is_null(joined["hash"])
    changed = pc.and_kleene(
        pc.invert(pc.or_kleene(new, deleted)), pc.not_equal(joined["hash"], joined["previous_hash"])
    )
    stamp = pc.fill_null(joined["stamp"], 0)
    stamped = pc.or_kleene(
        pc.and_kleene(new, pc.greater(stamp, 0)),
        pc.and_kleene(changed, pc.greater(stamp, pc.fill_null(joined["previous_stamp"], 0))),
    )
    kind = pc.if_else(new, NEW, pc.if_else(deleted, DELETED, CHANGED))
    out = pa.table(
        {
            "key": joined["key"],
            "change": kind,
            "stamped": stamped,
            "stamp": joined["stamp"],
            "previous_stamp": joined["previous_stamp"],
        },
        schema=CHANGES_SCHEMA,
    )
    return out.filter(pc.or_kleene(pc.or_kleene(new, deleted), changed)).sort_by("key")


@dataclass(frozen=True)
class ChangeCounts:
    """What one source's night found; ``previous - deleted + new == records`` always holds."""

    previous: int
    records: int
    new: int
    changed: int
    deleted: int
    unstamped: int | None
    """Changed records Aleph's history does not show (None: the source has no stamp)."""

    @classmethod
    def of(cls, changes: pa.Table, previous: int, records: int, stamped_source: bool) -> ChangeCounts:
        kinds = changes.column("change")
        counted = {k: int(pc.sum(pc.equal(kinds, k)).as_py() or 0) for k in (NEW, CHANGED, DELETED)}
        unstamped = None
        if stamped_source:
            mask = pc.and_(pc.equal(kinds, CHANGED), pc.invert(changes.column("stamped")))
            unstamped = int(pc.sum(mask).as_py() or 0)
        return cls(previous, records, counted[NEW], counted[CHANGED], counted[DELETED], unstamped)

    def check(self, what: str) -> ChangeCounts:
        """Raise ``UnbalancedError`` unless the baseline went from ``previous`` to ``records`` by
        exactly the records found new and deleted."""
        if self.previous - self.deleted + self.new != self.records:
            raise UnbalancedError(
                f"{what}: {self.previous} records before - {self.deleted} deleted + {self.new} new "
                f"≠ {self.records} now"
            )
        return self

    def to_dict(self) -> dict[str, int | None]:
        return {
            "previous": self.previous,
            "records": self.records,
            "new": self.new,
            "changed": self.changed,
            "deleted": self.deleted,
            "unstamped": self.unstamped,
        }


def wanted_keys(changes: pa.Table) -> pa.Array:
    """Keys of the new and changed records: those the delta carries in full."""
    return changes.filter(pc.not_equal(changes.column("change"), DELETED)).column("key").combine_chunks()


# --- windows --------------------------------------------------------------------------------


def parse_instant(text: str, time_zone: str, what: str) -> datetime | None:
    """An ISO date or date-time from a trigger form ('' → None); without an offset it is read
    in ``time_zone`` (the library's). Returned in UTC."""
    text = text.strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise DeltaError(
            f"{what} {text!r} is not a date or date-time; allowed: e.g. 2026-11-02, 2026-11-02T02:00 "
            f"(read in {time_zone}) or 2026-11-01T18:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(time_zone))
    return when.astimezone(ZoneInfo("UTC"))


def first_day(start: datetime, time_zone: str, lookback_days: int) -> date:
    """The first Aleph day (a local date) whose update-date stamps a window from ``start`` reads."""
    return start.astimezone(ZoneInfo(time_zone)).date() - timedelta(days=lookback_days)


def ymd(day: date) -> int:
    return day.year * 10_000 + day.month * 100 + day.day
