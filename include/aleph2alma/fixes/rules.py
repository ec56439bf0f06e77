"""Fix rules: declarative repairs of the raw Z-tables, applied before the transform.

The fix cycle (DOMAIN.md) repairs what the test load showed either in Aleph or "by changing
the mapping". Some repairs are better made on the extract than in Aleph: a code to merge
into another, call numbers that carry Aleph's subfield markers, barcodes typed into a note,
test patrons Ex Libris cannot exclude by group. They live in one file per migration,
``include/config/<migration_id>/fixes.toml``, reviewed like code::

    [[remap]]                      # replace a code (compared trimmed; CHAR width kept)
    table = "Z30"
    column = "Z30_COLLECTION"
    from = "LSCK"                  # or a list: ["LSCK", "LSCK2"]
    to = "ZWSK"
    where = { Z30_SUB_LIBRARY = "BNUZG" }   # optional; values a string or a list
    note = "temporary stack merged back into the Chinese stacks"   # optional, in the log

    [[normalise_call_numbers]]     # style: clc | lc | strip_subfield_codes
    table = "Z30"
    column = "Z30_CALL_NO"
    style = "clc"
    where = { Z30_CALL_NO_TYPE = "8" }

    [[drop_patrons]]               # all given conditions must hold; several blocks: any
    where_primary_id_matches = "^TEST"
    bor_status = ["99"]            # every Z305 row of the patron has one of these

    [[barcode_from_note]]          # only into a blank Z30_BARCODE
    note_column = "Z30_NOTE_INTERNAL"
    pattern = "条码[:：]\\s*(\\d{8,})"  # exactly one capture group: the barcode
    keep_note = false              # default: the matched text is removed from the note

``load_fix_rules`` checks the file: unknown sections and keys, missing keys, tables and
columns that are not Aleph's (``aleph.ztables``), codes wider than their CHAR column,
unknown styles, and patterns that do not compile are errors naming the rule
(``[[remap]] #2``) and what is wrong, all at once.

``apply_fixes`` applies the rules of one table to a pyarrow Table of it (a whole table or
one Parquet part), vectorised with pyarrow compute, in a fixed order: drop patrons, remaps
(in file order), barcodes from notes, call numbers. Values keep their CHAR padding: a
changed cell that was blank-padded is padded to its old width again. Codes and conditions
compare trimmed. It returns the fixed table and a ``FixLog``: per rule, how many rows it
changed and their ids (the table's key column, trimmed; kept as Arrow arrays, so a rule
touching millions of items costs bytes per id, not Python objects).

Patterns are RE2 syntax (Arrow's regex engine): as Python's, without look-arounds and
back-references; ``\\d`` and ``\\s`` are ASCII.

Dropped patrons are never silently lost: ``patrons_to_drop`` decides once, over Z303 and
Z305, who goes; ``apply_fixes`` then removes their Z303, Z304, Z305 and Z308 rows, and the
Z303 log carries one ``Reject`` per patron (reason ``dropped_by_fix_rule``) for the caller
to count with the other rejects. Their loans, requests and fines stay in the extract and
are rejected by validation (``loan_missing_patron`` etc.), so they are counted too.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aleph2alma.aleph.ztables import Z_TABLES, ZTable
from aleph2alma.rejects import Reject
from aleph2alma.settings import CONFIG_ROOT

DROP_REASON = "dropped_by_fix_rule"
PATRON_KEY_WIDTH = 12
CallNumberStyle = Literal["clc", "lc", "strip_subfield_codes"]
STYLES: tuple[str, ...] = ("clc", "lc", "strip_subfield_codes")

PATRON_TABLES: dict[str, tuple[str, int | None]] = {
    "Z303": ("Z303_REC_KEY", None),
    "Z304": ("Z304_REC_KEY", PATRON_KEY_WIDTH),
    "Z305": ("Z305_REC_KEY", PATRON_KEY_WIDTH),
    "Z308": ("Z308_ID", None),
}
"""Patron tables → (column holding the patron id, its width when it is a key prefix)."""


class FixRulesError(ValueError):
    """A fixes.toml is malformed, or a rule cannot be applied to the table given."""


# --- the rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Row conditions: each column's trimmed value is one of the listed values (all must hold)."""

    conditions: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def describe(self) -> str:
        return " and ".join(f"{c} in {list(v)}" if len(v) > 1 else f"{c} = {v[0]}" for c, v in self.conditions)


@dataclass(frozen=True)
class Remap:
    name: str
    table: str
    column: str
    from_codes: tuple[str, ...]
    to: str
    where: Where = Where()
    note: str = ""

    def describe(self) -> str:
        text = f"{self.table}.{self.column} {'/'.join(self.from_codes)} → {self.to}"
        return text + (f" where {self.where.describe()}" if self.where.conditions else "")


@dataclass(frozen=True)
class NormaliseCallNumbers:
    name: str
    table: str
    column: str
    style: CallNumberStyle
    where: Where = Where()
    note: str = ""

    def describe(self) -> str:
        text = f"{self.table}.{self.column} normalised ({self.style})"
        return text + (f" where {self.where.describe()}" if self.where.conditions else "")


@dataclass(frozen=True)
class DropPatrons:
    name: str
    primary_id_pattern: str | None = None
    bor_statuses: tuple[str, ...] = ()
    note: str = ""

    def describe(self) -> str:
        parts = []
        if self.primary_id_pattern is not None:
            parts.append(f"primary id matches {self.primary_id_pattern}")
        if self.bor_statuses:
            parts.append(f"every borrower status in {list(self.bor_statuses)}")
        return "drop patrons: " + " and ".join(parts)


@dataclass(frozen=True)
class BarcodeFromNote:
    name: str
    note_column: str
    pattern: str
    group: str
    """Name of the pattern's capture group (an unnamed group is named ``barcode``)."""
    named_pattern: str
    keep_note: bool = False
    where: Where = Where()
    note: str = ""
    table: str = "Z30"
    barcode_column: str = "Z30_BARCODE"

    def describe(self) -> str:
        text = f"Z30_BARCODE from {self.note_column} ({self.pattern})"
        return text + (f" where {self.where.describe()}" if self.where.conditions else "")


Rule = Remap | NormaliseCallNumbers | DropPatrons | BarcodeFromNote


@dataclass(frozen=True)
class FixRules:
    """The fix rules of one migration, by kind, each kind in file order."""

    remap: tuple[Remap, ...] = ()
    normalise_call_numbers: tuple[NormaliseCallNumbers, ...] = ()
    drop_patrons: tuple[DropPatrons, ...] = ()
    barcode_from_note: tuple[BarcodeFromNote, ...] = ()
    source: str = ""

    @property
    def empty(self) -> bool:
        return not (self.remap or self.normalise_call_numbers or self.drop_patrons or self.barcode_from_note)

    def for_table(self, table_name: str) -> list[Rule]:
        """The rules that change ``table_name``, in the order they are applied."""
        out: list[Rule] = []
        if table_name in PATRON_TABLES:
            out.extend(self.drop_patrons)
        out.extend(r for r in self.remap if r.table == table_name)
        out.extend(r for r in self.barcode_from_note if r.table == table_name)
        out.extend(r for r in self.normalise_call_numbers if r.table == table_name)
        return out


# --- loading ------------------------------------------------------------------------------

_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "remap": (("table", "column", "from", "to"), ("where", "note")),
    "normalise_call_numbers": (("table", "column", "style"), ("where", "note")),
    "drop_patrons": ((), ("where_primary_id_matches", "bor_status", "note")),
    "barcode_from_note": (("note_column", "pattern"), ("keep_note", "where", "note", "table")),
}
"""Section → (required keys, optional keys)."""


class _Problems(list[str]):
    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.append(message)
        return ok


def _codes(value: Any) -> tuple[str, ...] | None:
    """A string or a non-empty list of strings as a tuple of trimmed codes; None if neither."""
    if isinstance(value, str):
        return (value.strip(),)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value)
    return None


def _table(name: Any, where: str, problems: _Problems) -> ZTable | None:
    if not isinstance(name, str) or name not in Z_TABLES:
        problems.append(f"{where}: table {name!r} is not an Aleph table; known: {', '.join(Z_TABLES)}")
        return None
    return Z_TABLES[name]


def _column(table: ZTable, name: Any, where: str, problems: _Problems, key: str = "column") -> str | None:
    if not isinstance(name, str) or name not in table.column_names:
        problems.append(f"{where}: {key} {name!r} is not a column of {table.name}; "
                        f"its columns: {', '.join(table.column_names)}")
        return None
    return name


def _where(table: ZTable, value: Any, where: str, problems: _Problems) -> Where:
    if value is None:
        return Where()
    if not isinstance(value, Mapping):
        problems.append(f"{where}: where must be a table of column = value(s), e.g. "
                        "where = { Z30_SUB_LIBRARY = \"BNUZG\" }")
        return Where()
    conditions = []
    for column, accepted in value.items():
        if _column(table, column, where, problems, "where column") is None:
            continue
        codes = _codes(accepted)
        if problems.check(codes is not None, f"{where}: where {column} must be a string or a list of strings"):
            assert codes is not None
            conditions.append((column, codes))
    return Where(tuple(conditions))


def _width(table: ZTable, column: str) -> int:
    return next(c.width for c in table.columns if c.name == column)


def _re2(pattern: str, where: str, problems: _Problems) -> bool:
    try:
        re.compile(pattern)
        pc.match_substring_regex(pa.array([""], pa.string()), pattern=pattern)
    except (re.error, pa.ArrowInvalid) as exc:
        problems.append(f"{where}: pattern {pattern!r} does not compile: {exc}")
        return False
    return True


def _named_group(pattern: str) -> tuple[str, str] | None:
    """(pattern with its one capture group named, the name), or None if it has not exactly one."""
    compiled = re.compile(pattern)
    if compiled.groups != 1:
        return None
    if compiled.groupindex:
        return pattern, next(iter(compiled.groupindex))
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 2 if pattern[i + 1:i + 2] == "]" or pattern[i + 1:i + 3] == "^]" else 1
            continue
        elif c == "(" and pattern[i + 1:i + 2] != "?":
            return pattern[:i + 1] + "?P<barcode>" + pattern[i + 1:], "barcode"
        i += 1
    return None


def _parse_rule(kind: str, n: int, data: Any, problems: _Problems) -> Rule | None:
    where_ = f"[[{kind}]] #{n}"
    name = f"{kind}#{n}"
    if not isinstance(data, Mapping):
        problems.append(f"{where_}: must be a table of keys")
        return None
    required, optional = _KEYS[kind]
    unknown = sorted(set(data) - set(required) - set(optional))
    missing = [k for k in required if k not in data]
    if unknown:
        problems.append(f"{where_}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(required + optional)}")
    if missing:
        problems.append(f"{where_}: missing key(s) {', '.join(missing)}")
    if unknown or missing:
        return None
    note = data.get("note", "")
    if not problems.check(isinstance(note, str), f"{where_}: note must be a string"):
        return None
    before = len(problems)
    if kind == "drop_patrons":
        pattern, statuses = data.get("where_primary_id_matches"), data.get("bor_status")
        problems.check(pattern is not None or statuses is not None,
                       f"{where_}: give where_primary_id_matches, bor_status or both")
        if pattern is not None and problems.check(isinstance(pattern, str),
                                                  f"{where_}: where_primary_id_matches must be a string"):
            _re2(pattern, where_, problems)
        codes = _codes(statuses) if statuses is not None else ()
        problems.check(codes is not None, f"{where_}: bor_status must be a string or a list of strings")
        if len(problems) > before:
            return None
        return DropPatrons(name, pattern, codes or (), note)
    if kind == "barcode_from_note":
        table_name = data.get("table", "Z30")
        if not problems.check(table_name == "Z30", f"{where_}: table must be Z30 (barcodes are items'), "
                                                   f"not {table_name!r}"):
            return None
        table = Z_TABLES["Z30"]
        column = _column(table, data["note_column"], where_, problems, "note_column")
        pattern, keep = data["pattern"], data.get("keep_note", False)
        problems.check(isinstance(keep, bool), f"{where_}: keep_note must be true or false")
        named = None
        if problems.check(isinstance(pattern, str), f"{where_}: pattern must be a string") \
                and _re2(pattern, where_, problems):
            named = _named_group(pattern)
            problems.check(named is not None, f"{where_}: pattern {pattern!r} must have exactly one capture "
                                              "group, the barcode")
        condition = _where(table, data.get("where"), where_, problems)
        if len(problems) > before or column is None or named is None:
            return None
        return BarcodeFromNote(name, column, pattern, named[1], named[0], keep, condition, note)
    ztable = _table(data["table"], where_, problems)
    if ztable is None:
        return None
    table = ztable
    column = _column(table, data["column"], where_, problems)
    condition = _where(table, data.get("where"), where_, problems)
    if kind == "normalise_call_numbers":
        style = data["style"]
        problems.check(style in STYLES, f"{where_}: style {style!r} is not one of {', '.join(STYLES)}")
        if len(problems) > before or column is None:
            return None
        return NormaliseCallNumbers(name, table.name, column, style, condition, note)
    from_codes, to = _codes(data["from"]), data["to"]
    problems.check(from_codes is not None, f"{where_}: from must be a string or a list of strings")
    if problems.check(isinstance(to, str), f"{where_}: to must be a string") and column is not None:
        width = _width(table, column)
        problems.check(width == 0 or len(to.strip()) <= width,
                       f"{where_}: to {to!r} is wider than {column} (CHAR {width})")
    if len(problems) > before or column is None or from_codes is None:
        return None
    return Remap(name, table.name, column, from_codes, to.strip(), condition, note)


def parse_fix_rules(data: Mapping[str, Any], source: str = "fixes.toml") -> FixRules:
    """Fix rules from a parsed ``fixes.toml``; ``FixRulesError`` names every problem."""
    problems = _Problems()
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        problems.append(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(f'[[{k}]]' for k in _KEYS)}")
    parsed: dict[str, list[Any]] = {kind: [] for kind in _KEYS}
    for kind in _KEYS:
        blocks = data.get(kind, [])
        if not isinstance(blocks, list):
            problems.append(f"{kind} must be an array of tables: write [[{kind}]], not [{kind}]")
            continue
        for n, block in enumerate(blocks, start=1):
            rule = _parse_rule(kind, n, block, problems)
            if rule is not None:
                parsed[kind].append(rule)
    if problems:
        raise FixRulesError(f"{source}: " + "; ".join(problems))
    return FixRules(tuple(parsed["remap"]), tuple(parsed["normalise_call_numbers"]), tuple(parsed["drop_patrons"]),
                    tuple(parsed["barcode_from_note"]), source)


def load_fix_rules(path: Path | None) -> FixRules:
    """The rules of a ``fixes.toml``; no rules when ``path`` is None or does not exist."""
    if path is None or not path.exists():
        return FixRules(source="" if path is None else str(path))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise FixRulesError(f"{path}: {exc}") from exc
    return parse_fix_rules(data, source=str(path))


def fix_rules_for_migration(migration_id: str, root: Path | None = None) -> FixRules:
    """``<config root>/<migration_id>/fixes.toml``, or no rules if the migration has none."""
    return load_fix_rules((root or CONFIG_ROOT) / migration_id / "fixes.toml")


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
    """The rules applied to one table (or its parts, merged): one entry per rule, even if it changed nothing."""

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
                mine[e.rule] = FixEntry(e.rule, e.table, e.description, pa.concat_arrays([mine[e.rule].ids, e.ids]),
                                        e.note)
            else:
                mine[e.rule] = e
        return FixLog(self.table, list(mine.values()), [*self.rejects, *other.rejects])

    def to_dict(self, max_ids: int | None = 20) -> dict[str, Any]:
        """Counts per rule with the first ``max_ids`` ids (all of them with None)."""
        return {"table": self.table, "rejects": len(self.rejects),
                "rules": [{"rule": e.rule, "description": e.description, "note": e.note, "count": e.count,
                           "ids": (e.ids if max_ids is None else e.ids[:max_ids]).to_pylist()}
                          for e in self.entries]}


# --- column helpers -----------------------------------------------------------------------


def _strings(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The column as one plain string array (dictionary decoded, chunks combined)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    if pa.types.is_dictionary(col.type) or not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string())
    return col


def _trimmed(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pc.fill_null(pc.utf8_trim_whitespace(_strings(col)), "")


def _column_of(table: pa.Table, name: str, rule: str) -> pa.Array:
    if name not in table.column_names:
        raise FixRulesError(f"{rule}: column {name} is not in the table given; it has "
                            f"{', '.join(table.column_names) or 'no columns'}")
    return _strings(table.column(name))


def _mask(values: pa.Array, codes: Iterable[str]) -> pa.Array:
    return pc.is_in(values, value_set=pa.array(list(codes), pa.string()))


def _all_rows(n: int) -> pa.Array:
    return pa.array(np.ones(n, dtype=bool))


def _where_mask(table: pa.Table, where: Where, rule: str) -> pa.Array:
    mask = _all_rows(table.num_rows)
    for column, accepted in where.conditions:
        mask = pc.and_(mask, _mask(_trimmed(_column_of(table, column, rule)), accepted))
    return mask


def _keep_padding(new: pa.Array | pa.Scalar, old: pa.Array, mask: pa.Array) -> pa.Array:
    """``new`` where ``mask``, else ``old``; a changed cell that was blank-padded is padded to its old width."""
    lengths = pc.fill_null(pc.utf8_length(old), 0)
    padded = pc.and_(mask, pc.not_equal(lengths, pc.fill_null(pc.utf8_length(pc.utf8_rtrim_whitespace(old)), 0)))
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
    return pc.filter(_trimmed(_column_of(table, key, f"{table_name} key")), mask)


# --- the fixes ----------------------------------------------------------------------------


def _remap(table: pa.Table, rule: Remap) -> tuple[pa.Table, pa.Array]:
    old = _column_of(table, rule.column, rule.name)
    mask = pc.and_(_mask(pc.fill_null(pc.utf8_trim_whitespace(old), ""), rule.from_codes),
                   _where_mask(table, rule.where, rule.name))
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
    current = pc.fill_null(pc.utf8_trim_whitespace(old), "")
    new = normalised_call_numbers(current, rule.style)
    mask = pc.and_(pc.not_equal(new, current), _where_mask(table, rule.where, rule.name))
    ids = _key_ids(table, rule.table, mask)
    return (_set(table, rule.column, _keep_padding(new, old, mask)) if len(ids) else table), ids


def _barcode_from_note(table: pa.Table, rule: BarcodeFromNote) -> tuple[pa.Table, pa.Array]:
    barcode = _column_of(table, rule.barcode_column, rule.name)
    raw_note = _column_of(table, rule.note_column, rule.name)
    note = pc.fill_null(raw_note, "")
    blank = pc.equal(pc.fill_null(pc.utf8_trim_whitespace(barcode), ""), "")
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
        return [Reject("patrons", i, DROP_REASON, f"{self.rules[i].name}: {self.rules[i].describe()}")
                for i in wanted]


def patrons_to_drop(rules: FixRules, z303: pa.Table, z305: pa.Table | None = None) -> DroppedPatrons:
    """Decide, over the whole Z303 (and Z305 when a rule asks for borrower statuses), which
    patrons the ``drop_patrons`` rules remove. A patron matches a rule when every condition it
    gives holds: its primary id matches the pattern; every one of its Z305 rows (at least one)
    has a listed borrower status. The first matching rule is recorded."""
    out = DroppedPatrons()
    if not rules.drop_patrons:
        return out
    keys = _trimmed(_column_of(z303, "Z303_REC_KEY", "drop_patrons"))
    all_status: dict[tuple[str, ...], set[str]] = {}
    for rule in rules.drop_patrons:
        mask = _all_rows(len(keys))
        if rule.primary_id_pattern is not None:
            primary = _trimmed(_column_of(z303, "Z303_PRIMARY_ID", rule.name))
            mask = pc.and_(mask, pc.match_substring_regex(primary, pattern=rule.primary_id_pattern))
        if rule.bor_statuses:
            if z305 is None:
                raise FixRulesError(f"{rule.name} ({rule.describe()}) needs the Z305 table")
            if rule.bor_statuses not in all_status:
                patron = _trimmed(pc.utf8_slice_codeunits(_column_of(z305, "Z305_REC_KEY", rule.name), 0,
                                                          PATRON_KEY_WIDTH))
                status = _trimmed(_column_of(z305, "Z305_BOR_STATUS", rule.name))
                grouped = pa.table({"patron": patron, "match": _mask(status, rule.bor_statuses)}) \
                    .group_by("patron").aggregate([("match", "all")])
                chosen = pc.filter(grouped.column("patron"), grouped.column("match_all"))
                all_status[rule.bor_statuses] = set(chosen.to_pylist())
            mask = pc.and_(mask, _mask(keys, all_status[rule.bor_statuses]))
        for patron_id in pc.filter(keys, mask).to_pylist():
            out.rules.setdefault(patron_id, rule)
    return out


def _drop_patrons(table: pa.Table, table_name: str, rule: DropPatrons,
                  dropped: DroppedPatrons) -> tuple[pa.Table, pa.Array]:
    column, width = PATRON_TABLES[table_name]
    values = _column_of(table, column, rule.name)
    if width is not None:
        values = pc.utf8_slice_codeunits(values, 0, width)
    mine = [i for i, r in dropped.rules.items() if r.name == rule.name]
    mask = _mask(pc.fill_null(pc.utf8_trim_whitespace(values), ""), mine)
    ids = _key_ids(table, table_name, mask)
    return (table.filter(pc.invert(mask)) if len(ids) else table), ids


def apply_fixes(table_name: str, table: pa.Table, rules: FixRules, *,
                dropped: DroppedPatrons | None = None) -> tuple[pa.Table, FixLog]:
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
                raise FixRulesError(f"{rule.name}: dropping patrons from {table_name} needs dropped="
                                    "patrons_to_drop(rules, z303, z305)")
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
