"""Column helpers for the validation checks: vectorised, so only bad rows become Python objects.

Raw Z-table text is blank-padded CHAR (possibly null, possibly dictionary-encoded);
``trimmed`` gives clean strings. Keys are compared without hashing where possible: on
small machines arrow's and numpy's hash tables cost seconds per million strings, while
sorting int64 costs milliseconds. So all-digit keys (Aleph doc numbers, item keys,
system numbers, numeric barcodes) become exact int64 images (``int_image``) that are
sorted and binary-searched (``KeySet``) or sorted and grouped (``duplicates``); other keys
fall back to arrow's hash kernels. Code columns (sub-library, collection, statuses)
become small int codes (``codes_of``), so a mapping is asked once per distinct
combination (``unmapped_rows``), not once per row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SYSNO_WIDTH = 9
INT_KEY_DIGITS = 17
BLANK, OTHER = -1, -2
"""``int_image`` values of a blank key and of a key that is not all digits."""

Column: TypeAlias = pa.ChunkedArray | pa.Array


def column(table: pa.Table, name: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise KeyError(
            f"column {name} missing; the table has {', '.join(table.column_names) or 'no columns'}"
        )
    return table.column(name)


def trimmed(col: Column, start: int = 0, width: int | None = None, *, ascii_only: bool = False) -> Column:
    """Trimmed strings (null → ""), optionally the code units ``[start, start + width)`` first.

    Oracle pads CHAR columns with ASCII blanks. ``ascii_only`` strips only those and keeps
    non-ASCII whitespace (the ideographic space U+3000 of Chinese data) as Aleph holds it:
    what the transforms deliver. Without it every Unicode whitespace goes: what the checks compare.
    """
    if pa.types.is_dictionary(col.type) or not (
        pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
    ):
        col = pc.cast(col, pa.string())
    if width is not None:
        col = pc.utf8_slice_codeunits(col, start, start + width)
    return pc.fill_null(pc.ascii_trim_whitespace(col) if ascii_only else pc.utf8_trim_whitespace(col), "")


def sysno_text(col: Column) -> Column:
    """System numbers as 9-digit text (integers or strings, zero-padded); blank stays blank."""
    text = pc.cast(col, pa.string()) if pa.types.is_integer(col.type) else trimmed(col)
    text = pc.fill_null(text, "")
    return pc.if_else(pc.equal(text, ""), "", pc.utf8_lpad(text, SYSNO_WIDTH, "0"))


def to_numpy(col: Column) -> np.ndarray:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return np.asarray(col.to_numpy(zero_copy_only=False))


def mask_of(flags: Column) -> np.ndarray:
    """A boolean column as a numpy mask (null → False)."""
    return to_numpy(pc.fill_null(flags, False)).astype(bool, copy=False)


INT_IMAGE_ROWS = 1 << 20
"""Rows imaged at a time: the temporaries (a string copy and four int64 columns) are a slice's,
not the whole column's (4.8M items at bnu: ~300 MB at once, the cross-record task's peak)."""


def int_image(text: Column) -> np.ndarray:
    """Exact int64 images of all-digit keys: ``length·10^17 + value`` (so "0012" ≠ "12").

    Blank → -1; a key with other characters or more than 17 digits → -2.
    """
    image = np.empty(len(text), dtype=np.int64)
    for start in range(0, len(text), INT_IMAGE_ROWS):
        image[start : start + INT_IMAGE_ROWS] = _int_image(text.slice(start, INT_IMAGE_ROWS))
    return image


def _int_image(text: Column) -> np.ndarray:
    lengths = pc.cast(pc.utf8_length(text), pa.int64())
    numeric = pc.and_(pc.ascii_is_decimal(text), pc.less_equal(lengths, INT_KEY_DIGITS))
    values = pc.cast(pc.if_else(numeric, text, "0"), pa.int64())
    image = pc.add(pc.multiply(lengths, 10**INT_KEY_DIGITS), values)
    other = pc.if_else(pc.equal(lengths, 0), BLANK, OTHER)
    return to_numpy(pc.if_else(numeric, image, other)).astype(np.int64, copy=False)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based: ``np.unique`` hashes, and is far slower on big arrays)."""
    ordered = np.sort(values)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered


class KeySet:
    """The keys one table holds (e.g. every Z30_REC_KEY), for membership tests.

    All-digit keys (Aleph doc numbers, item keys, system numbers) are held as a sorted
    int64 array (8 bytes a key) and probed by binary search; other keys (e.g. patron ids)
    as distinct strings, probed by hash. Blank keys are never members.
    """

    def __init__(self, ints: np.ndarray | None, text: pa.Array | None) -> None:
        self.ints, self.text = ints, text

    @classmethod
    def of(cls, text: Column) -> KeySet:
        image = int_image(text)
        if not (image == OTHER).any():
            return cls(sorted_unique(image[image >= 0]), None)
        distinct = pc.unique(text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text)
        return cls(None, distinct.filter(pc.not_equal(distinct, "")))

    @classmethod
    def of_ints(cls, ints: np.ndarray) -> KeySet:
        return cls(sorted_unique(ints[ints >= 0]), None)

    def contains(self, text: Column) -> np.ndarray:
        """Row mask: the (trimmed) key is a member."""
        if self.ints is not None:
            return self.contains_ints(int_image(text))
        assert self.text is not None
        return mask_of(pc.is_in(text, value_set=self.text, skip_nulls=True)) & mask_of(pc.not_equal(text, ""))

    def contains_ints(self, image: np.ndarray) -> np.ndarray:
        assert self.ints is not None
        if len(self.ints) == 0 or len(image) == 0:
            return np.zeros(len(image), dtype=bool)
        order = np.argsort(image)  # probing in key order keeps the binary searches cache-friendly
        probe = image[order]
        pos = np.minimum(np.searchsorted(self.ints, probe), len(self.ints) - 1)
        found = np.empty(len(image), dtype=bool)
        found[order] = self.ints[pos] == probe
        return found & (image >= 0)


def duplicates(text: Column) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose non-blank value occurs more than once, and each row's group size."""
    image = int_image(text)
    if not (image == OTHER).any():
        order = np.argsort(image, kind="stable")
        ordered = image[order]
        group = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1 if len(ordered) else ordered
        sizes = np.empty_like(image)
        sizes[order] = np.bincount(group)[group] if len(ordered) else ordered
        return (sizes > 1) & (image >= 0), sizes
    counts = pc.value_counts(text)
    shared = counts.filter(
        pc.and_(pc.greater(counts.field("counts"), 1), pc.not_equal(counts.field("values"), ""))
    )
    mask = mask_of(pc.is_in(text, value_set=shared.field("values")))
    size_of = dict(zip(shared.field("values").to_pylist(), shared.field("counts").to_pylist(), strict=True))
    sizes = np.zeros(len(image), dtype=np.int64)
    sizes[mask] = [size_of[v] for v in strings_at(text, mask)]
    return mask, sizes


def strings_at(col: Column, mask: np.ndarray) -> list[str]:
    """The trimmed values of the masked rows, as Python strings (only bad rows reach Python)."""
    return [str(v).strip() if v is not None else "" for v in col.filter(pa.array(mask)).to_pylist()]


def codes_of(col: Column) -> tuple[np.ndarray, list[str]]:
    """A code column as int32 codes into a list of distinct trimmed values (null/blank → "")."""
    values: dict[str, int] = {}
    parts = []
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    for chunk in chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = pc.dictionary_encode(chunk)
        dictionary = pc.cast(chunk.dictionary, pa.string()).to_pylist()
        remap = [values.setdefault((v or "").strip(), len(values)) for v in dictionary]
        remap.append(values.setdefault("", len(values)))  # index -1: null
        indices = pc.fill_null(chunk.indices, -1).to_numpy(zero_copy_only=False)
        parts.append(np.asarray(remap, dtype=np.int32)[indices])
    codes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return codes, list(values)


def unmapped_rows(columns: Sequence[Column], is_mapped: Callable[..., bool]) -> np.ndarray:
    """Row mask of rows whose code combination ``is_mapped`` rejects (asked once per combination)."""
    combo = np.zeros(len(columns[0]), dtype=np.int64)
    decoded: list[list[str]] = []
    for col in columns:
        codes, values = codes_of(col)
        combo = combo * max(len(values), 1) + codes
        decoded.append(values)
    if len(combo) == 0:
        return np.zeros(0, dtype=bool)
    bad = np.zeros(int(combo.max()) + 1, dtype=bool)  # a slot per possible combination of codes
    for slot in np.flatnonzero(np.bincount(combo)).tolist():
        rest, parts = slot, []
        for values in reversed(decoded):
            rest, code = divmod(rest, max(len(values), 1))
            parts.append(values[code])
        bad[slot] = not is_mapped(*reversed(parts))
    return bad[combo]
