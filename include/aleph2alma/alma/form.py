"""The migration form: Aleph codes → Alma codes, as the library fills them in.

One form per migration, kept in ``include/config/<migration_id>/form/`` either as one
CSV per tab or as one ``.xlsx`` workbook with one sheet per tab (see ``form_io`` for the
formats and ``form_spec`` for the tabs, columns and conventions). It is data, not code:
librarians edit it, ``load_form`` checks its structure, ``generate_form`` (re)builds it
from the code inventory without ever overwriting what was filled in.

Lookups resolve exact rows first, then ``*`` fallback rows (``form_spec.candidates``);
a row with a blank Alma code is "not mapped yet" and falls through. Each resolved code is
memoised, so per-row calls cost a dict lookup; the ``map_*`` methods map whole pandas
columns by resolving each distinct code once. The ``defaults`` tab holds questionnaire
answers for Ex Libris; lookups never fall back to them, so an unmapped code stays visible.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from aleph2alma.alma import form_io
from aleph2alma.alma.fee_types import DEFAULT_FEE_TYPES
from aleph2alma.alma.form_spec import (
    COUNT,
    DEFAULT_KEYS,
    DEFAULTS_TAB,
    IN_DATA,
    MAPPING_TABS,
    NO_VALUE,
    TABS,
    WILDCARD,
    FormError,
    TabSpec,
    candidates,
    check_tabs,
)
from aleph2alma.profile import CodeInventory
from aleph2alma.settings import CONFIG_ROOT

__all__ = ["FormError", "MigrationForm", "form_dir", "generate_form", "load_form", "write_form"]

Key = tuple[str, ...]


def _code(value: Any) -> str:
    """An Aleph code as the form holds it: blank padding trimmed, missing as ``""``."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    return str(value).strip()


def _factorize(columns: Sequence[pd.Series]) -> tuple[np.ndarray, list[Key]]:
    """Row → index into the distinct code tuples, and those tuples (codes trimmed)."""
    codes: np.ndarray | None = None
    uniques: list[Key] = []
    for column in columns:
        col_codes, col_uniques = pd.factorize(column, use_na_sentinel=False)
        values = [_code(v) for v in col_uniques]
        if codes is None:
            codes, uniques = col_codes, [(v,) for v in values]
            continue
        combined = codes.astype(np.int64) * len(values) + col_codes
        codes, picked = pd.factorize(combined)
        uniques = [(*uniques[x // len(values)], values[x % len(values)]) for x in picked]
    assert codes is not None, "at least one column"
    return codes, uniques


def _strings(values: list[str | None], codes: np.ndarray, index: pd.Index) -> pd.Series:
    """``values[codes]`` as a pandas str Series (None → NaN), taken in Arrow: no Python objects per row."""
    taken = pa.array(values, type=pa.string()).take(pa.array(codes))
    return pd.Series(pd.array(taken, dtype="str"), index=index)


@dataclass(eq=False)
class MigrationForm:
    """The tabs of a migration form (all str columns), checked and indexed on creation.

    Treat a form as a value: to change it, build a new one (the indexes are built once).
    """

    tabs: dict[str, pd.DataFrame]
    _rows: dict[str, dict[Key, dict[str, str]]] = field(init=False, repr=False)
    _memo: dict[str, dict[Key, Key | None]] = field(init=False, repr=False)
    _results: dict[tuple[Any, ...], Any] = field(init=False, repr=False)
    _value_fns: dict[str, Callable[[Key], str | None]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.tabs = check_tabs(self.tabs)
        self._rows = {}
        for name, spec in TABS.items():
            frame = self.tabs[name]
            keys = zip(*(frame[c].tolist() for c in spec.keys), strict=True)
            values = (
                dict(zip(spec.values, v, strict=True))
                for v in zip(*(frame[c].tolist() for c in spec.values), strict=True)
            )
            self._rows[name] = dict(zip(keys, values, strict=True))
        self._memo = {name: {} for name in TABS}
        self._results = {}
        self._value_fns = {name: functools.partial(self._value, name) for name in TABS}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MigrationForm):
            return NotImplemented
        return self.tabs.keys() == other.tabs.keys() and all(
            self.tabs[n].equals(other.tabs[n]) and list(self.tabs[n].columns) == list(other.tabs[n].columns)
            for n in self.tabs
        )

    # --- resolution -----------------------------------------------------------------------

    def _is_mapped(self, spec: TabSpec, row: dict[str, str], key: Key) -> bool:
        if not row[spec.mapped_by]:
            return False
        if spec.name == "locations" and not row["alma_library_code"]:
            return self._value("libraries", key[:1]) is not None
        return True

    def _resolve_key(self, tab: str, key: Key) -> Key | None:
        """The key of the row that maps ``key`` (exact or ``*``), or None if none is mapped."""
        memo = self._memo[tab]
        if key in memo:
            return memo[key]
        spec, rows = TABS[tab], self._rows[tab]
        found = next((c for c in candidates(key) if c in rows and self._is_mapped(spec, rows[c], key)), None)
        memo[key] = found
        return found

    def _value_of(self, tab: str) -> Callable[[Key], str | None]:
        return self._value_fns[tab]

    def _row(self, tab: str, key: Key) -> dict[str, str] | None:
        found = self._resolve_key(tab, key)
        return None if found is None else self._rows[tab][found]

    def _value(self, tab: str, key: Key) -> str | None:
        row = self._row(tab, key)
        if row is None:
            return None
        value = row[TABS[tab].mapped_by]
        return "" if value == NO_VALUE else value

    def _location(self, key: Key) -> tuple[str, str] | None:
        row = self._row("locations", key)
        if row is None:
            return None
        library = row["alma_library_code"] or self._value("libraries", key[:1])
        return (library, row["alma_location_code"]) if library else None

    def _electronic(self, key: Key) -> bool:
        row = self._row("locations", key)
        return row is not None and row["electronic"] == "Y"

    def _lookup(self, what: str, compute: Callable[[Key], Any], *codes: Any) -> Any:
        """``compute`` of the trimmed codes, cached on the raw codes when they are strings."""
        raw = (what, *codes)
        try:
            return self._results[raw]
        except KeyError:
            result = compute(tuple(_code(c) for c in codes))
            if all(isinstance(c, str) for c in codes):
                self._results[raw] = result
            return result

    # --- per-code lookups (codes as Aleph holds them; blank padding and None are fine) ---

    def library_for(self, sub_library: Any) -> str | None:
        """Alma library code of an Aleph sub-library."""
        return self._lookup("libraries", self._value_of("libraries"), sub_library)

    def location_for(self, sub_library: Any, collection: Any) -> tuple[str, str] | None:
        """(Alma library, Alma location) of a sub-library + collection; the library is the
        libraries tab's when the location row leaves it blank."""
        return self._lookup("location", self._location, sub_library, collection)

    def is_electronic(self, sub_library: Any, collection: Any) -> bool:
        """Whether the location row that maps the pair is flagged electronic (False if unmapped)."""
        return bool(self._lookup("electronic", self._electronic, sub_library, collection))

    def item_policy_for(self, item_status: Any) -> str | None:
        return self._lookup("item_policies", self._value_of("item_policies"), item_status)

    def process_type_for(self, process_status: Any) -> str | None:
        """Alma process type; ``""`` when the form says none (``-``), None when unmapped."""
        return self._lookup("process_types", self._value_of("process_types"), process_status)

    def material_type_for(self, material: Any) -> str | None:
        return self._lookup("material_types", self._value_of("material_types"), material)

    def user_group_for(self, bor_status: Any, bor_type: Any) -> str | None:
        return self._lookup("user_groups", self._value_of("user_groups"), bor_status, bor_type)

    def fee_type_for(self, fine_type: Any) -> str | None:
        """Alma fine/fee type of an Aleph cash type (Z31_TYPE)."""
        return self._lookup("fee_types", self._value_of("fee_types"), fine_type)

    def default(self, key: str) -> str | None:
        """A questionnaire answer of the defaults tab; None when blank or absent."""
        if key not in DEFAULT_KEYS:
            raise KeyError(f"unknown migration form default {key!r}; known: {', '.join(DEFAULT_KEYS)}")
        row = self._rows["defaults"].get((key,))
        return (row["value"] or None) if row else None

    # --- vectorised lookups ---------------------------------------------------------------

    @staticmethod
    def _map(columns: Sequence[pd.Series], resolve: Callable[[Key], str | None]) -> pd.Series:
        codes, uniques = _factorize(columns)
        return _strings([resolve(u) for u in uniques], codes, columns[0].index)

    def map_codes(self, tab: str, *columns: pd.Series) -> pd.Series:
        """Map whole columns of Aleph codes (one per key column of ``tab``) to the tab's Alma code.

        Unmapped codes give NaN; each distinct code is resolved once.
        """
        spec = TABS[tab]
        if spec is DEFAULTS_TAB or len(columns) != len(spec.keys):
            raise ValueError(f"map_codes({tab!r}) takes {len(spec.keys)} column(s): {', '.join(spec.keys)}")
        return self._map(columns, self._value_of(tab))

    def map_libraries(self, sub_library: pd.Series) -> pd.Series:
        return self.map_codes("libraries", sub_library)

    def map_item_policies(self, item_status: pd.Series) -> pd.Series:
        return self.map_codes("item_policies", item_status)

    def map_user_groups(self, df: pd.DataFrame, status_col: str, type_col: str) -> pd.Series:
        return self.map_codes("user_groups", df[status_col], df[type_col])

    def map_locations(self, df: pd.DataFrame, sub_col: str, coll_col: str) -> pd.DataFrame:
        """Columns alma_library, alma_location (NaN where unmapped) and electronic (bool), aligned
        to ``df``."""
        codes, uniques = _factorize([df[sub_col], df[coll_col]])
        located = [self._location(u) for u in uniques]
        electronic = np.array([self._electronic(u) for u in uniques], dtype=bool)
        return pd.DataFrame(
            {
                "alma_library": _strings([loc[0] if loc else None for loc in located], codes, df.index),
                "alma_location": _strings([loc[1] if loc else None for loc in located], codes, df.index),
                "electronic": pd.Series(electronic[codes], index=df.index, dtype="bool"),
            }
        )

    # --- against the data -----------------------------------------------------------------

    def unmapped(self, inventory: CodeInventory) -> dict[str, list[Key]]:
        """Per tab, the codes in the data that no row maps (after fallbacks), most frequent first.

        Only tabs with unmapped codes appear: an empty result means the form covers the data.
        """
        return {tab: [code for code, _ in rows] for tab, rows in self.unmapped_counts(inventory).items()}

    def unmapped_counts(self, inventory: CodeInventory) -> dict[str, list[tuple[Key, int]]]:
        """As ``unmapped``, with how many records carry each code."""
        out: dict[str, list[tuple[Key, int]]] = {}
        for spec in MAPPING_TABS:
            assert spec.code_type is not None
            counter = inventory.counts[spec.code_type]
            missing = [
                (code, n)
                for code, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
                if self._resolve_key(spec.name, code) is None
            ]
            if missing:
                out[spec.name] = missing
        return out

    def _served(self, spec: TabSpec, counter: Counter[Key]) -> Counter[Key]:
        """Records per row key: each code goes to the row that maps it, or to its most specific row."""
        served: Counter[Key] = Counter()
        rows = self._rows[spec.name]
        for code, n in counter.items():
            key = self._resolve_key(spec.name, code) or next((c for c in candidates(code) if c in rows), None)
            if key is not None:
                served[key] += n
        return served

    def with_counts(self, inventory: CodeInventory) -> MigrationForm:
        """This form with ``count`` and ``in_data`` refreshed from the inventory.

        An exact row counts the records with its code; a ``*`` row counts the records that
        fall back to it.
        """
        tabs = dict(self.tabs)
        for spec in MAPPING_TABS:
            assert spec.code_type is not None
            counter = inventory.counts[spec.code_type]
            served = self._served(spec, counter)
            frame = tabs[spec.name].copy()
            keys = list(zip(*(frame[c] for c in spec.keys), strict=True))
            counts = [served[k] if WILDCARD in k else counter.get(k, 0) for k in keys]
            frame[COUNT] = pd.Series([str(n) for n in counts], index=frame.index, dtype="str")
            frame[IN_DATA] = pd.Series(["Y" if n else "N" for n in counts], index=frame.index, dtype="str")
            tabs[spec.name] = frame
        return MigrationForm(tabs)


# --- building and files -----------------------------------------------------------------


def _empty(spec: TabSpec) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="str") for c in spec.columns})


def _new_row(spec: TabSpec, code: Key) -> dict[str, str]:
    row = dict(zip(spec.keys, code, strict=True))
    if "electronic" in spec.flags:
        row["electronic"] = "N"
    if spec.none_allowed and code == ("",):
        row[spec.mapped_by] = NO_VALUE  # a blank process status is an item in place
    if spec.name == "fee_types" and code[0] in DEFAULT_FEE_TYPES:
        row[spec.mapped_by] = DEFAULT_FEE_TYPES[code[0]]  # Aleph's standard cash type: a suggestion
    return row


def _merged(old: pd.DataFrame, new_rows: list[dict[str, str]]) -> pd.DataFrame:
    if not new_rows:
        return old
    added = pd.DataFrame(new_rows, columns=old.columns, dtype="str").fillna("")
    return pd.concat([old, added], ignore_index=True).astype("str")


def generate_form(inventory: CodeInventory, existing: MigrationForm | None = None) -> MigrationForm:
    """A form with a row for every code in the inventory, merged into ``existing`` if given.

    Rows of ``existing`` keep their place and every filled cell, including ``*`` rows, extra
    columns and codes no longer in the data (those get ``in_data`` N); new codes are
    appended in code order with blank Alma columns (except: ``electronic`` N, ``-`` for
    the blank process status, and the suggested Alma fee type of Aleph's standard cash types,
    ``fee_types.DEFAULT_FEE_TYPES``). ``count`` and ``in_data`` are recomputed.
    """
    tabs: dict[str, pd.DataFrame] = {}
    for spec in MAPPING_TABS:
        assert spec.code_type is not None
        old = existing.tabs[spec.name] if existing else _empty(spec)
        have = set(zip(*(old[c] for c in spec.keys), strict=True))
        fresh = sorted(code for code in inventory.counts[spec.code_type] if code not in have)
        tabs[spec.name] = _merged(old, [_new_row(spec, code) for code in fresh])
    defaults = (existing.tabs[DEFAULTS_TAB.name] if existing else _empty(DEFAULTS_TAB)).copy()
    blank = defaults["description"] == ""
    defaults.loc[blank, "description"] = [DEFAULT_KEYS[k].doc for k in defaults.loc[blank, "key"]]
    have_keys = set(defaults["key"])
    tabs[DEFAULTS_TAB.name] = _merged(
        defaults,
        [
            {"key": k, "value": "", "description": d.doc}
            for k, d in DEFAULT_KEYS.items()
            if k not in have_keys
        ],
    )
    return MigrationForm(tabs).with_counts(inventory)


def form_dir(migration_id: str, root: Path | None = None) -> Path:
    """Where a migration's form lives: ``<config root>/<migration_id>/form``."""
    return (root or CONFIG_ROOT) / migration_id / "form"


def load_form(path: Path) -> MigrationForm:
    """Read and check a form: a directory of ``<tab>.csv`` files, an ``.xlsx`` workbook, or a
    directory holding exactly one workbook. Raises FormError naming file/sheet, row and column."""
    return MigrationForm(form_io.read_form(Path(path)))


def write_form(form: MigrationForm, path: Path) -> None:
    """Write a form: an ``.xlsx`` workbook if ``path`` ends so, else a directory of UTF-8 (BOM) CSVs.

    Each file is replaced atomically; a README (sheet or file) explains the conventions.
    """
    form_io.write_form_tabs(form.tabs, Path(path))
