"""Fix rules applied to the raw Z-tables, before the transform (the rules: ``fixes.config``).

``apply_fixes`` applies the rules of one table to a pyarrow Table of it (a whole table or
one Parquet part), vectorised with pyarrow compute, in a fixed order: drop patrons, remaps
(in file order), barcodes from notes, call numbers. Values keep their CHAR padding: a
changed cell that was blank-padded is padded to its old width again. Codes and conditions
compare trimmed. It returns the fixed table and a ``FixLog``: per rule, how many rows it
changed and their ids (the table's key column, trimmed; kept as Arrow arrays, so a rule
touching millions of items costs bytes per id, not Python objects).

Dropped patrons are never silently lost: ``patrons_to_drop`` decides once, over Z303 and
Z305, who goes; ``apply_fixes`` then removes their Z303, Z304, Z305 and Z308 rows, and the
Z303 log carries one ``Reject`` per patron (reason ``dropped_by_fix_rule``) for the caller
to count with the other rejects. Their loans, requests and fines stay in the extract and
are rejected by validation (``loan_missing_patron`` etc.), so they are counted too.

A rule that names a column the table given does not have, or a call without what a rule
needs, is a ``FixRulesError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aleph2alma.aleph.ztables import Z_TABLES
from aleph2alma.fixes.config import (
    PATRON_KEY_WIDTH,
    PATRON_TABLES,
    BarcodeFromNote,
    DropPatrons,
    FixRules,
    FixRulesError,
    NormaliseCallNumbers,
    Remap,
    Where,
)
from aleph2alma.rejects import Reject
from aleph2alma.validate.columns import trimmed

DROP_REASON = "dropped_by_fix_rule"


# --- the log ------------------------------------------------------------------------------


@dataclass
class FixEntry:
    """What one rule did to one table: the ids (key column, trimmed) of the rows it changed or dropped."""

    rule: str
    table: str
    description: str
    ids: pa.Array
    note: str = ""

    @property
    def count(self) -> int:
        return len(self.ids)

    def id_list(self) -> list[str]:
        return [str(v) for v in self.ids.to_pylist()]


@dataclass
class FixLog:
    """The rules applied to one table (or its parts, merged): one entry per rule, even if it
    changed nothing."""

    table: str
    entries: list[FixEntry] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    """Patrons dropped by a rule (from the Z303 log only, so each is counted once)."""

    @property
    def counts(self) -> dict[str, int]:
        return {e.rule: e.count for e in self.entries}

    def entry(self, rule: str) -> FixEntry:
        return next(e for e in self.entries if e.rule == rule)

    def merge(self, other: FixLog) -> FixLog:
        """This log and ``other`` (the next part of the same table) as one."""
        if other.table != self.table:
            raise ValueError(f"cannot merge the fix log of {other.table} into that of {self.table}")
        mine = {e.rule: e for e in self.entries}
        for e in other.entries:
            if e.rule in mine:
                mine[e.rule] = FixEntry(
                    e.rule, e.table, e.description, pa.concat_arrays([mine[e.rule].ids, e.ids]), e.note
                )
            else:
                mine[e.rule] = e
        return FixLog(self.table, list(mine.values()), [*self.rejects, *other.rejects])

    def to_dict(self, max_ids: int | None = 20) -> dict[str, Any]:
        """Counts per rule with the first ``max_ids`` ids (all of them with None)."""
        return {
            "table": self.table,
            "rejects": len(self.rejects),
            "rules": [
                {
                    "rule": e.rule,
                    "description": e.description,
                    "note": e.note,
                    "count": e.count,
                    "ids": (e.ids if max_ids is None else e.ids[:max_ids]).to_pylist(),
                }
                for e in self.entries
            ],
        }


# --- column helpers -----------------------------------------------------------------------


def _strings(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The column as one plain string array (dictionary decoded, chunks combined)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    if pa.types.is_dictionary(col.type) or not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string())
    return col


def _column_of(table: pa.Table, name: str, rule: str) -> pa.Array:
    if name not in table.column_names:
        raise FixRulesError(
            f"{rule}: column {name} is not in the table given; it has "
            f"{', '.join(table.column_names) or 'no columns'}"
        )
    return _strings(table.column(name))


def _mask(values: pa.Array, codes: Iterable[str]) -> pa.Array:
    return pc.is_in(values, value_set=pa.array(list(codes), pa.string()))


def _all_rows(n: int) -> pa.Array:
    return pa.array(np.ones(n, dtype=bool))


def _where_mask(table: pa.Table, where: Where, rule: str) -> pa.Array:
    mask = _all_rows(table.num_rows)
    for column, accepted in where.items():
        mask = pc.and_(mask, _mask(trimmed(_column_of(table, column, rule)), accepted))
    return mask


def _keep_padding(new: pa.Array | pa.Scalar, old: pa.Array, mask: pa.Array) -> pa.Array:
    """``new`` where ``mask``, else ``old``; a changed cell that was blank-padded is padded to its
    old width."""
    lengths = pc.fill_null(pc.utf8_length(old), 0)
    padded = pc.and_(
        mask, pc.not_equal(lengths, pc.fill_null(pc.utf8_length(pc.utf8_rtrim_whitespace(old)), 0))
    )
    out = pc.if_else(mask, new, old)
    for width in pc.unique(pc.filter(lengths, padded)).to_pylist():
        rows = pc.and_(padded, pc.equal(lengths, width))
        out = pc.if_else(rows, pc.utf8_rpad(new, width=int(width), padding=" "), out)
    return out


def _restore_type(new: pa.Array, original: pa.ChunkedArray) -> pa.Array:
    if pa.types.is_dictionary(original.type):
        return pc.dictionary_encode(new)
    return new if new.type == original.type else pc.cast(new, original.type)


def _set(table: pa.Table, column: str, values: pa.Array) -> pa.Table:
    i = table.column_names.index(column)
    return table.set_column(i, column, _restore_type(values, table.column(i)))


def _key_ids(table: pa.Table, table_name: str, mask: pa.Array) -> pa.Array:
    key = Z_TABLES[table_name].key
    return pc.filter(trimmed(_column_of(table, key, f"{table_name} key")), mask)


# --- the fixes ----------------------------------------------------------------------------


def _remap(table: pa.Table, rule: Remap) -> tuple[pa.Table, pa.Array]:
    old = _column_of(table, rule.column, rule.name)
    mask = pc.and_(_mask(trimmed(old), rule.from_codes), _where_mask(table, rule.where, rule.name))
    new = pa.scalar(rule.to, pa.string())
    ids = _key_ids(table, rule.table, mask)
    return (_set(table, rule.column, _keep_padding(new, old, mask)) if len(ids) else table), ids


SUBFIELD = r"\$\$[0-9A-Za-z]"
SPACES = r"[\s\x{3000}]+"


def normalised_call_numbers(values: pa.Array, style: str) -> pa.Array:
    """Call numbers (trimmed strings) in ``style``:

    - ``strip_subfield_codes``: Aleph's ``$$h``/``$$i``/… markers become blanks, runs of blanks
      (ideographic ones too) one blank, trimmed;
    - ``lc``: the same, and no blanks around ``/``;
    - ``clc`` (中图法: class number / book number): ``$$i`` becomes ``/``, other markers blanks,
      full-width ``／`` becomes ``/``, no blanks around ``/``, one ``/`` at most in a row, none
      at either end.
    """
    text = values
    if style == "clc":
        text = pc.replace_substring_regex(text, pattern=r"\$\$[iI]", replacement="/")
        text = pc.replace_substring(text, pattern="／", replacement="/")
    text = pc.replace_substring_regex(text, pattern=SUBFIELD, replacement=" ")
    text = pc.replace_substring_regex(text, pattern=SPACES, replacement=" ")
    if style in ("lc", "clc"):
        text = pc.replace_substring_regex(text, pattern=r" ?/ ?", replacement="/")
    if style == "clc":
        text = pc.replace_substring_regex(text, pattern=r"/{2,}", replacement="/")
        text = pc.replace_substring_regex(text, pattern=r"^[ /]+|[ /]+$", replacement="")
    return pc.utf8_trim_whitespace(text)


def _call_numbers(table: pa.Table, rule: NormaliseCallNumbers) -> tuple[pa.Table, pa.Array]:
    old = _column_of(table, rule.column, rule.name)
    current = trimmed(old)
    new = normalised_call_numbers(current, rule.style)
    mask = pc.and_(pc.not_equal(new, current), _where_mask(table, rule.where, rule.name))
    ids = _key_ids(table, rule.table, mask)
    return (_set(table, rule.column, _keep_padding(new, old, mask)) if len(ids) else table), ids


def _barcode_from_note(table: pa.Table, rule: BarcodeFromNote) -> tuple[pa.Table, pa.Array]:
    barcode = _column_of(table, rule.barcode_column, rule.name)
    raw_note = _column_of(table, rule.note_column, rule.name)
    note = pc.fill_null(raw_note, "")
    blank = pc.equal(trimmed(barcode), "")
    found = pc.match_substring_regex(note, pattern=rule.pattern)
    mask = pc.and_(pc.and_(blank, found), _where_mask(table, rule.where, rule.name))
    ids = _key_ids(table, "Z30", mask)
    if not len(ids):
        return table, ids
    extracted = pc.fill_null(pc.struct_field(pc.extract_regex(note, pattern=rule.named_pattern), [0]), "")
    table = _set(table, rule.barcode_column, _keep_padding(extracted, barcode, mask))
    if not rule.keep_note:
        rest = pc.replace_substring_regex(note, pattern=rule.pattern, replacement=" ", max_replacements=1)
        rest = pc.utf8_trim_whitespace(pc.replace_substring_regex(rest, pattern=SPACES, replacement=" "))
        table = _set(table, rule.note_column, _keep_padding(rest, raw_note, mask))
    return table, ids


@dataclass
class DroppedPatrons:
    """The patrons the ``drop_patrons`` rules remove: patron id (Z303 key) → the rule that drops it."""

    rules: dict[str, DropPatrons] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return sorted(self.rules)

    def rejects(self, ids: Iterable[str] | None = None) -> list[Reject]:
        """One reject per dropped patron (of ``ids``, if given), reason ``dropped_by_fix_rule``."""
        wanted = self.ids if ids is None else sorted(i for i in ids if i in self.rules)
        return [
            Reject("patrons", i, DROP_REASON, f"{self.rules[i].name}: {self.rules[i].describe()}")
            for i in wanted
        ]


def patrons_to_drop(rules: FixRules, z303: pa.Table, z305: pa.Table | None = None) -> DroppedPatrons:
    """Decide, over the whole Z303 (and Z305 when a rule asks for borrower statuses), which
    patrons the ``drop_patrons`` rules remove. A patron matches a rule when every condition it
    gives holds: its primary id matches the pattern; every one of its Z305 rows (at least one)
    has a listed borrower status. The first matching rule is recorded."""
    out = DroppedPatrons()
    if not rules.drop_patrons:
        return out
    keys = trimmed(_column_of(z303, "Z303_REC_KEY", "drop_patrons"))
    all_status: dict[tuple[str, ...], set[str]] = {}
    for rule in rules.drop_patrons:
        mask = _all_rows(len(keys))
        if rule.where_primary_id_matches is not None:
            primary = trimmed(_column_of(z303, "Z303_PRIMARY_ID", rule.name))
            mask = pc.and_(mask, pc.match_substring_regex(primary, pattern=rule.where_primary_id_matches))
        if rule.bor_status:
            if z305 is None:
                raise FixRulesError(f"{rule.name} ({rule.describe()}) needs the Z305 table")
            if rule.bor_status not in all_status:
                patron = trimmed(_column_of(z305, "Z305_REC_KEY", rule.name), 0, PATRON_KEY_WIDTH)
                status = trimmed(_column_of(z305, "Z305_BOR_STATUS", rule.name))
                grouped = (
                    pa.table({"patron": patron, "match": _mask(status, rule.bor_status)})
                    .group_by("patron")
                    .aggregate([("match", "all")])
                )
                chosen = pc.filter(grouped.column("patron"), grouped.column("match_all"))
                all_status[rule.bor_status] = set(chosen.to_pylist())
            mask = pc.and_(mask, _mask(keys, all_status[rule.bor_status]))
        for patron_id in pc.filter(keys, mask).to_pylist():
            out.rules.setdefault(patron_id, rule)
    return out


def _drop_patrons(
    table: pa.Table, table_name: str, rule: DropPatrons, dropped: DroppedPatrons
) -> tuple[pa.Table, pa.Array]:
    column, width = PATRON_TABLES[table_name]
    values = _column_of(table, column, rule.name)
    mine = [i for i, r in dropped.rules.items() if r.name == rule.name]
    mask = _mask(trimmed(values) if width is None else trimmed(values, 0, width), mine)
    ids = _key_ids(table, table_name, mask)
    return (table.filter(pc.invert(mask)) if len(ids) else table), ids


def apply_fixes(
    table_name: str, table: pa.Table, rules: FixRules, *, dropped: DroppedPatrons | None = None
) -> tuple[pa.Table, FixLog]:
    """Apply the rules for ``table_name`` (``Z30``, ``Z303``, …) to ``table``; see the module docstring.

    For the patron tables (Z303, Z304, Z305, Z308) with ``drop_patrons`` rules, pass
    ``dropped=patrons_to_drop(rules, z303, z305)``, decided once over the whole tables.
    """
    if table_name not in Z_TABLES:
        raise FixRulesError(f"unknown table {table_name!r}; known: {', '.join(Z_TABLES)}")
    log = FixLog(table_name)
    for rule in rules.for_table(table_name):
        if isinstance(rule, DropPatrons):
            if dropped is None:
                raise FixRulesError(
                    f"{rule.name}: dropping patrons from {table_name} needs dropped="
                    "patrons_to_drop(rules, z303, z305)"
                )
            table, ids = _drop_patrons(table, table_name, rule, dropped)
            if table_name == "Z303":
                log.rejects.extend(dropped.rejects(ids.to_pylist()))
        elif isinstance(rule, Remap):
            table, ids = _remap(table, rule)
        elif isinstance(rule, BarcodeFromNote):
            table, ids = _barcode_from_note(table, rule)
        else:
            table, ids = _call_numbers(table, rule)
        log.entries.append(FixEntry(rule.name, table_name, rule.describe(), ids, rule.note))
    return table, log
