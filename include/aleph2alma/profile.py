"""Code inventory: every Aleph code in use, with how often it occurs.

The profile step streams over the extracted Parquet parts (raw Z-tables, values
blank-padded exactly as Aleph holds them) and counts the codes the migration form must
map. It never holds more than one batch of one part in memory.

Code types and where they come from:

========================  ==========================================  =====================
code type                 code (tuple)                                source
========================  ==========================================  =====================
``sub_library``           (Z30_SUB_LIBRARY,)                          Z30 items
``collection``            (Z30_SUB_LIBRARY, Z30_COLLECTION)           Z30 items
``item_status``           (Z30_ITEM_STATUS,)                          Z30 items
``item_process_status``   (Z30_ITEM_PROCESS_STATUS,)                  Z30 items
``material``              (Z30_MATERIAL,)                             Z30 items
``bor_status``            (Z305_BOR_STATUS,)                          Z305 patron locals
``bor_type``              (Z305_BOR_TYPE,)                            Z305 patron locals
``user_group``            (Z305_BOR_STATUS, Z305_BOR_TYPE)            Z305 patron locals
``fine_type``             (Z31_TYPE,)                                 Z31 cash (fines)
========================  ==========================================  =====================

A collection code means something only within its sub-library, so collections are
counted as pairs (the form's locations tab maps pairs); user groups likewise map on the
bor status + bor type pair. Codes are stripped of blank padding; an empty (or NULL) code
counts as ``""`` because it is a finding in itself (items shelved in no collection).
Z305 holds one record per patron per sub-library, so its counts are Z305 records, not
patrons.

Counting is done by pyarrow on the raw column (``value_counts`` / ``group_by``) and only
the few distinct values are trimmed afterwards; values that differ only by padding are
summed together.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aleph2alma.validate.columns import trimmed

# code type -> the Z-table columns that make up its code
ITEM_CODES: dict[str, tuple[str, ...]] = {
    "sub_library": ("Z30_SUB_LIBRARY",),
    "collection": ("Z30_SUB_LIBRARY", "Z30_COLLECTION"),
    "item_status": ("Z30_ITEM_STATUS",),
    "item_process_status": ("Z30_ITEM_PROCESS_STATUS",),
    "material": ("Z30_MATERIAL",),
}
PATRON_LOCAL_CODES: dict[str, tuple[str, ...]] = {
    "bor_status": ("Z305_BOR_STATUS",),
    "bor_type": ("Z305_BOR_TYPE",),
    "user_group": ("Z305_BOR_STATUS", "Z305_BOR_TYPE"),
}
FINE_CODES: dict[str, tuple[str, ...]] = {"fine_type": ("Z31_TYPE",)}
CODE_TYPES: dict[str, tuple[str, ...]] = {**ITEM_CODES, **PATRON_LOCAL_CODES, **FINE_CODES}

JSON_FORMAT = "aleph2alma.code_inventory"
JSON_VERSION = 1
CSV_COLUMNS = ("code_type", "code", "code_2", "count")
BATCH_ROWS = 1_000_000

PartSource = str | os.PathLike[str] | BinaryIO


class ProfileError(ValueError):
    """A part lacks a column the inventory needs, or a saved inventory is malformed."""


def _columns(codes: dict[str, tuple[str, ...]]) -> list[str]:
    return list(dict.fromkeys(col for cols in codes.values() for col in cols))


def _count(table: pa.Table, columns: tuple[str, ...]) -> Counter[tuple[str, ...]]:
    counter: Counter[tuple[str, ...]] = Counter()
    if table.num_rows == 0:
        return counter
    if len(columns) == 1:
        counts = pc.value_counts(table.column(columns[0]))
        keys = [(code,) for code in trimmed(counts.field("values")).to_pylist()]
        numbers = counts.field("counts").to_pylist()
    else:
        grouped = (
            table.select(list(columns))
            .group_by(list(columns), use_threads=True)
            .aggregate([([], "count_all")])
        )
        keys = list(zip(*(trimmed(grouped.column(c)).to_pylist() for c in columns), strict=True))
        numbers = grouped.column("count_all").to_pylist()
    for key, number in zip(keys, numbers, strict=True):
        counter[key] += number
    return counter


@dataclass
class CodeInventory:
    """Counts of every code in use, per code type (see the module docstring)."""

    counts: dict[str, Counter[tuple[str, ...]]] = field(
        default_factory=lambda: {code_type: Counter() for code_type in CODE_TYPES}
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.counts) - set(CODE_TYPES))
        if unknown:
            raise ProfileError(f"unknown code type(s) {', '.join(unknown)}; known: {', '.join(CODE_TYPES)}")
        for code_type in CODE_TYPES:
            self.counts.setdefault(code_type, Counter())

    def _add(self, table: pa.Table, codes: dict[str, tuple[str, ...]], what: str) -> None:
        missing = [c for c in _columns(codes) if c not in table.column_names]
        if missing:
            raise ProfileError(
                f"{what} table has no column {', '.join(missing)}; "
                f"needed: {', '.join(_columns(codes))}; got: {', '.join(table.column_names)}"
            )
        for code_type, columns in codes.items():
            self.counts[code_type].update(_count(table, columns))

    def add_items(self, table: pa.Table) -> None:
        """Count the item codes of a Z30 table (or batch of one)."""
        self._add(table, ITEM_CODES, "Z30 items")

    def add_patron_locals(self, table: pa.Table) -> None:
        """Count the patron codes of a Z305 table (or batch of one)."""
        self._add(table, PATRON_LOCAL_CODES, "Z305 patron locals")

    def add_fines(self, table: pa.Table) -> None:
        """Count the cash types of a Z31 table (or batch of one): every Z31 row, open or not."""
        self._add(table, FINE_CODES, "Z31 fines")

    def merge(self, other: CodeInventory) -> None:
        """Add another inventory's counts to this one (e.g. one per part, merged at the end)."""
        for code_type, counter in other.counts.items():
            self.counts[code_type].update(counter)

    def total(self, code_type: str) -> int:
        """Records counted for a code type (every Z30 row for item codes, every Z305 row for patron codes)."""
        return sum(self.counts[code_type].values())

    def rows(self) -> list[dict[str, Any]]:
        """One row per code: code_type, code, code_2 ("" unless a pair), count.

        Sorted by code type, then most frequent first, then code.
        """
        out: list[dict[str, Any]] = []
        for code_type in sorted(self.counts):
            ordered = sorted(self.counts[code_type].items(), key=lambda kv: (-kv[1], kv[0]))
            out += [
                {
                    "code_type": code_type,
                    "code": code[0],
                    "code_2": code[1] if len(code) > 1 else "",
                    "count": count,
                }
                for code, count in ordered
            ]
        return out

    def to_csv(self, out: TextIO) -> None:
        """The inventory for people: one line per code (see ``rows``)."""
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())

    def to_json(self) -> str:
        """The inventory for machines; ``from_json`` reads it back."""
        payload = {
            "format": JSON_FORMAT,
            "version": JSON_VERSION,
            "counts": {
                code_type: [
                    {"code": list(code), "count": count}
                    for code, count in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
                ]
                for code_type, counter in sorted(self.counts.items())
            },
        }
        return json.dumps(payload, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> CodeInventory:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(f"code inventory is not JSON: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != JSON_FORMAT:
            raise ProfileError(f"not a code inventory: expected an object with format {JSON_FORMAT!r}")
        if payload.get("version") != JSON_VERSION:
            raise ProfileError(
                f"code inventory version {payload.get('version')!r} is not supported; "
                f"this code reads version {JSON_VERSION}"
            )
        counts: dict[str, Counter[tuple[str, ...]]] = {}
        for code_type, entries in payload.get("counts", {}).items():
            arity = len(CODE_TYPES.get(code_type, ()))
            counter: Counter[tuple[str, ...]] = Counter()
            for entry in entries:
                code = tuple(entry.get("code", ()))
                count = entry.get("count")
                if (
                    arity
                    and len(code) != arity
                    or not all(isinstance(c, str) for c in code)
                    or not isinstance(count, int)
                ):
                    raise ProfileError(
                        f"code inventory, {code_type}: bad entry {entry!r}; expected "
                        f'{{"code": [{arity} string(s)], "count": integer}}'
                    )
                counter[code] += count
            counts[code_type] = counter
        return cls(counts)


def _iter_tables(source: PartSource, columns: list[str], what: str) -> Iterable[pa.Table]:
    name = str(source) if isinstance(source, str | os.PathLike) else getattr(source, "name", "<stream>")
    try:
        # read the code columns dictionary-encoded: counting then works on small integers
        parquet = pq.ParquetFile(source, read_dictionary=columns)
    except KeyError:  # pyarrow's way of saying a read_dictionary column is not in the file
        if not isinstance(source, str | os.PathLike):
            source.seek(0)
        names = pq.ParquetFile(source).schema_arrow.names
        missing = [c for c in columns if c not in names]
        raise ProfileError(
            f"{what} part {name}: no column {', '.join(missing)}; "
            f"needed: {', '.join(columns)}; got: {', '.join(names)}"
        ) from None
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        yield pa.Table.from_batches([batch])


def profile_parquet(
    item_parts: Iterable[PartSource],
    patron_local_parts: Iterable[PartSource],
    fine_parts: Iterable[PartSource] = (),
) -> CodeInventory:
    """Count the codes of Z30 item parts, Z305 patron-local parts and Z31 fine parts, one batch
    at a time.

    Parts are paths or binary file objects; only the code columns are read.
    """
    inventory = CodeInventory()
    for part in item_parts:
        for table in _iter_tables(part, _columns(ITEM_CODES), "Z30 items"):
            inventory.add_items(table)
    for part in patron_local_parts:
        for table in _iter_tables(part, _columns(PATRON_LOCAL_CODES), "Z305 patron locals"):
            inventory.add_patron_locals(table)
    for part in fine_parts:
        for table in _iter_tables(part, _columns(FINE_CODES), "Z31 fines"):
            inventory.add_fines(table)
    return inventory
