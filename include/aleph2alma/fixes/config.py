"""Fix rules: the ``fixes.toml`` of a migration, as pydantic models that check it.

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

Each block is one model below (``Remap``, ``NormaliseCallNumbers``, ``DropPatrons``,
``BarcodeFromNote``) whose fields describe its keys. ``load_fix_rules`` checks the file:
unknown sections and keys, missing keys, tables and columns that are not Aleph's
(``aleph.ztables``), codes wider than their CHAR column, unknown styles, and patterns that
do not compile or (for barcodes) have not exactly one capture group. Every problem is
listed at once in one ``FixRulesError`` (a ``ConfigError``: the task fails at once),
one line each, naming the file, the key path and what is allowed, e.g.::

    include/config/demo/fixes.toml: remap[2].column: "Z30_COLECTION" is not a column of Z30; its columns: …

Blocks are counted from 1, as the rules are named in the fix log: ``remap#2``.

Patterns are RE2 syntax (Arrow's regex engine, which applies them): as Python's, without
look-arounds and back-references; ``\\d`` and ``\\s`` are ASCII. ``fixes.apply`` applies
the rules to the Z-tables.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)

from aleph2alma import config
from aleph2alma.aleph.ztables import Z_TABLES, ZTable
from aleph2alma.errors import ConfigError
from aleph2alma.settings import CONFIG_ROOT

CallNumberStyle = Literal["clc", "lc", "strip_subfield_codes"]
STYLES: tuple[str, ...] = get_args(CallNumberStyle)
PATRON_KEY_WIDTH = 12
PATRON_TABLES: dict[str, tuple[str, int | None]] = {
    "Z303": ("Z303_REC_KEY", None),
    "Z304": ("Z304_REC_KEY", PATRON_KEY_WIDTH),
    "Z305": ("Z305_REC_KEY", PATRON_KEY_WIDTH),
    "Z308": ("Z308_ID", None),
}
"""The tables ``drop_patrons`` removes rows from → (column holding the patron id, its width
when it is a key prefix)."""


class FixRulesError(ConfigError):
    """A fixes.toml is malformed, or a rule cannot be applied to the table given."""


def _codes(value: Any) -> tuple[str, ...]:
    """A string or a non-empty array of strings as a tuple of trimmed codes."""
    if isinstance(value, str):
        return (value.strip(),)
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value)
    raise ValueError(f"expected a string or a non-empty array of strings, got {config.show(value)}")


Codes = Annotated[tuple[str, ...], BeforeValidator(_codes)]
"""One code or several: ``"LSCK"`` or ``["LSCK", "LSCK2"]``, compared trimmed."""
Where = dict[str, Codes]
"""Row conditions: column → accepted values; a row must match all of them."""

_WHERE = (
    "Only the rows whose columns hold one of the given values (all conditions must hold): "
    "a table of column = value or [values]"
)


def describe_where(where: Where) -> str:
    return " and ".join(f"{c} in {list(v)}" if len(v) > 1 else f"{c} = {v[0]}" for c, v in where.items())


def _columns_text(table: ZTable) -> str:
    return f"its columns: {', '.join(table.column_names)}"


def check_pattern(pattern: str) -> str:
    """``pattern`` if both Python and Arrow (RE2) compile it; ``ValueError`` saying why not."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        re.compile(pattern)
        pc.match_substring_regex(pa.array([""], pa.string()), pattern=pattern)
    except (re.error, pa.ArrowInvalid) as exc:
        raise ValueError(
            f"{config.show(pattern)} does not compile: {exc}; allowed: an RE2 regular expression "
            "(Python syntax without look-arounds and back-references)"
        ) from None
    return pattern


class _Rule(BaseModel):
    """What every block shares: no unknown keys, a note, a name given by its place in the file,
    and the checks of the keys that name Aleph tables, columns and patterns."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _name: str = PrivateAttr(default="")

    @property
    def name(self) -> str:
        """``<kind>#<n>``: the n-th block of its kind in the file, as the fix log names it."""
        return self._name

    @field_validator("table", check_fields=False)
    @classmethod
    def _known_table(cls, name: str) -> str:
        if name not in Z_TABLES:
            raise ValueError(
                f"{config.show(name)} is not an Aleph table; known tables: {', '.join(Z_TABLES)}"
            )
        return name

    @field_validator("column", "note_column", check_fields=False)
    @classmethod
    def _known_column(cls, name: str, info: ValidationInfo) -> str:
        table = Z_TABLES.get(info.data.get("table", ""))
        if table is not None and name not in table.column_names:
            raise ValueError(f"{config.show(name)} is not a column of {table.name}; {_columns_text(table)}")
        return name

    @field_validator("where", check_fields=False)
    @classmethod
    def _known_where_columns(cls, where: Where, info: ValidationInfo) -> Where:
        table = Z_TABLES.get(info.data.get("table", ""))
        unknown = [c for c in where if table is not None and c not in table.column_names]
        if table is not None and unknown:
            raise ValueError(
                f"{', '.join(config.show(c) for c in unknown)} is not a column of {table.name}; "
                f"{_columns_text(table)}"
            )
        return where

    @field_validator("pattern", "where_primary_id_matches", check_fields=False)
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        return None if pattern is None else check_pattern(pattern)

    def _where_text(self, where: Where) -> str:
        return f" where {describe_where(where)}" if where else ""


class Remap(_Rule):
    """``[[remap]]``: replace a code by another (compared trimmed; the CHAR width is kept)."""

    table: str = Field(description="The Aleph Z-table, e.g. Z30")
    column: str = Field(description="The column whose codes are replaced, e.g. Z30_COLLECTION")
    from_codes: Codes = Field(
        alias="from", description="The code(s) replaced: a string or an array of strings"
    )
    to: str = Field(description="The code they become (at most the column's CHAR width)")
    where: Where = Field(default_factory=dict, description=_WHERE, examples=['{ Z30_SUB_LIBRARY = "BNUZG" }'])
    note: str = Field(default="", description="Why: shown in the fix log next to the rule's counts")

    @field_validator("to")
    @classmethod
    def _fits(cls, to: str, info: ValidationInfo) -> str:
        table, column = Z_TABLES.get(info.data.get("table", "")), info.data.get("column")
        width = next((c.width for c in table.columns if c.name == column), 0) if table is not None else 0
        if width and len(to.strip()) > width:
            raise ValueError(
                f"{config.show(to)} is wider than {column} (CHAR {width}); "
                f"allowed: a code of at most {width} characters"
            )
        return to.strip()

    def describe(self) -> str:
        return f"{self.table}.{self.column} {'/'.join(self.from_codes)} → {self.to}" + self._where_text(
            self.where
        )


class NormaliseCallNumbers(_Rule):
    """``[[normalise_call_numbers]]``: rewrite call numbers in one style
    (``fixes.apply.normalised_call_numbers``)."""

    table: str = Field(description="The Aleph Z-table, e.g. Z30")
    column: str = Field(description="The column holding the call numbers, e.g. Z30_CALL_NO")
    style: CallNumberStyle = Field(
        description="clc: 中图法 class/book number with one '/'; lc: subfield markers to blanks, no blanks "
        "around '/'; strip_subfield_codes: subfield markers to blanks only"
    )
    where: Where = Field(default_factory=dict, description=_WHERE, examples=['{ Z30_CALL_NO_TYPE = "8" }'])
    note: str = Field(default="", description="Why: shown in the fix log next to the rule's counts")

    def describe(self) -> str:
        return f"{self.table}.{self.column} normalised ({self.style})" + self._where_text(self.where)


class DropPatrons(_Rule):
    """``[[drop_patrons]]``: leave patrons out of the migration; every condition given must hold."""

    where_primary_id_matches: str | None = Field(
        default=None,
        description="An RE2 pattern the patron's primary id (Z303_PRIMARY_ID) matches, e.g. ^TEST",
    )
    bor_status: Codes = Field(
        default=(), description="Borrower status(es): every Z305 row of the patron has one of them"
    )
    note: str = Field(default="", description="Why: shown in the fix log and the rejects")

    @model_validator(mode="after")
    def _some_condition(self) -> DropPatrons:
        if self.where_primary_id_matches is None and not self.bor_status:
            raise ValueError("no condition; give where_primary_id_matches, bor_status or both")
        return self

    def describe(self) -> str:
        parts = []
        if self.where_primary_id_matches is not None:
            parts.append(f"primary id matches {self.where_primary_id_matches}")
        if self.bor_status:
            parts.append(f"every borrower status in {list(self.bor_status)}")
        return "drop patrons: " + " and ".join(parts)


class BarcodeFromNote(_Rule):
    """``[[barcode_from_note]]``: move a barcode typed into a note into the blank Z30_BARCODE."""

    barcode_column: ClassVar[str] = "Z30_BARCODE"

    table: Literal["Z30"] = Field(default="Z30", description="Z30: barcodes are items'")
    note_column: str = Field(description="The Z30 column holding the note, e.g. Z30_NOTE_INTERNAL")
    pattern: str = Field(description="An RE2 pattern with exactly one capture group: the barcode")
    keep_note: StrictBool = Field(
        default=False, description="true: leave the note as it is; false: remove the matched text from it"
    )
    where: Where = Field(default_factory=dict, description=_WHERE, examples=['{ Z30_SUB_LIBRARY = "BNUZG" }'])
    note: str = Field(default="", description="Why: shown in the fix log next to the rule's counts")

    @field_validator("pattern")
    @classmethod
    def _one_group(cls, pattern: str) -> str:
        if _named_group(pattern) is None:
            raise ValueError(f"{config.show(pattern)} must have exactly one capture group, the barcode")
        return pattern

    def _named(self) -> tuple[str, str]:
        named = _named_group(self.pattern)
        assert named is not None  # checked by _one_group
        return named

    @property
    def named_pattern(self) -> str:
        """The pattern with its capture group named (an unnamed one is named ``barcode``)."""
        return self._named()[0]

    @property
    def group(self) -> str:
        """The name of the pattern's capture group."""
        return self._named()[1]

    def describe(self) -> str:
        return f"Z30_BARCODE from {self.note_column} ({self.pattern})" + self._where_text(self.where)


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
            i += 2 if pattern[i + 1 : i + 2] == "]" or pattern[i + 1 : i + 3] == "^]" else 1
            continue
        elif c == "(" and pattern[i + 1 : i + 2] != "?":
            return pattern[: i + 1] + "?P<barcode>" + pattern[i + 1 :], "barcode"
        i += 1
    return None


Rule = Remap | NormaliseCallNumbers | DropPatrons | BarcodeFromNote


class FixRules(BaseModel):
    """The fix rules of one migration (the whole ``fixes.toml``), by kind, each kind in file order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    remap: tuple[Remap, ...] = Field(default=(), description="[[remap]] blocks: codes replaced by others")
    normalise_call_numbers: tuple[NormaliseCallNumbers, ...] = Field(
        default=(), description="[[normalise_call_numbers]] blocks: call numbers rewritten in one style"
    )
    drop_patrons: tuple[DropPatrons, ...] = Field(
        default=(), description="[[drop_patrons]] blocks: patrons left out (any block that matches)"
    )
    barcode_from_note: tuple[BarcodeFromNote, ...] = Field(
        default=(), description="[[barcode_from_note]] blocks: barcodes moved from a note into Z30_BARCODE"
    )
    _source: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _name_rules(self) -> FixRules:
        for kind in type(self).model_fields:
            for n, rule in enumerate(getattr(self, kind), start=1):
                rule._name = f"{kind}#{n}"
        return self

    @property
    def source(self) -> str:
        """The file the rules were read from ("" if none)."""
        return self._source

    @property
    def empty(self) -> bool:
        return not (self.remap or self.normalise_call_numbers or self.drop_patrons or self.barcode_from_note)

    def for_table(self, table_name: str) -> list[Rule]:
        """The rules that change ``table_name``, in the order they are applied: drop patrons,
        remaps (in file order), barcodes from notes, call numbers."""
        out: list[Rule] = []
        if table_name in PATRON_TABLES:
            out.extend(self.drop_patrons)
        out.extend(r for r in self.remap if r.table == table_name)
        out.extend(r for r in self.barcode_from_note if r.table == table_name)
        out.extend(r for r in self.normalise_call_numbers if r.table == table_name)
        return out


def _from(rules: FixRules, source: str) -> FixRules:
    rules._source = source
    return rules


def parse_fix_rules(data: dict[str, Any], source: str = "fixes.toml") -> FixRules:
    """Fix rules from a parsed ``fixes.toml``; ``FixRulesError`` names every problem."""
    return _from(config.validate(FixRules, data, source, FixRulesError), source)


def load_fix_rules(path: Path | None) -> FixRules:
    """The rules of a ``fixes.toml``; no rules when ``path`` is None or does not exist."""
    if path is None or not path.exists():
        return _from(FixRules(), "" if path is None else str(path))
    return _from(config.load_toml(path, FixRules, FixRulesError), str(path))


def fix_rules_for_migration(migration_id: str, root: Path | None = None) -> FixRules:
    """``<config root>/<migration_id>/fixes.toml``, or no rules if the migration has none."""
    return load_fix_rules((root or CONFIG_ROOT) / migration_id / "fixes.toml")
