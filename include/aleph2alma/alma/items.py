"""Z30 items → Alma item rows: one vectorised pass over one raw part.

The part is read as a pyarrow Table with Aleph's UPPER-CASE column names and blank-padded
values (``aleph.ztables.Z30``). Every column is stripped once; code columns are mapped to
Alma codes by looking up each *distinct* code in the migration form (a part holds a few
dozen distinct codes, not a million), then spread back over the rows with ``take``. No
Python runs per row, except for the few rejected records. ``read_z30`` reads the codes and
the mostly blank text columns dictionary-encoded: those are stripped once per distinct
value, as dates are parsed once per distinct date.

Unmapped codes fall back to the form's defaults tab (``default_library``,
``default_location``, ``default_item_policy``, ``default_material_type``); an unmapped
process status gets no process type. Fallbacks are counted in ``ItemStats.fallbacks``;
reporting the codes is the validation stage's job.

This module also holds the column helpers the other Z-table transforms share
(``users``, ``fulfillment``): ``FormLookups``, ``text_column``, ``key_prefix``,
``iso_date_column``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from aleph2alma.accounting import Tally
from aleph2alma.rejects import Reject, RejectLog
from aleph2alma.validate.columns import trimmed

ENTITY = "items"


class FormLookups(Protocol):
    """What the Z-table transforms need from the migration form (``alma.form.MigrationForm``).

    Each lookup returns the Alma code for an Aleph code (the form applies its ``*`` rows),
    or ``None`` when the form has no answer; ``default`` reads a questionnaire value.
    """

    def location_for(self, sub_library: str, collection: str) -> tuple[str, str] | None: ...
    def item_policy_for(self, item_status: str) -> str | None: ...
    def process_type_for(self, process_status: str) -> str | None: ...
    def material_type_for(self, material: str) -> str | None: ...
    def user_group_for(self, bor_status: str, bor_type: str) -> str | None: ...
    def library_for(self, sub_library: str) -> str | None: ...
    def fee_type_for(self, fine_type: str) -> str | None: ...
    def default(self, key: str) -> str | None: ...


def form_default(form: FormLookups, key: str, fallback: str = "") -> str:
    """``form.default(key)``, or ``fallback`` when the form leaves it blank."""
    return form.default(key) or fallback


# --- column helpers shared by the Z-table transforms -------------------------------------


def require_columns(table: pa.Table, names: list[str], what: str) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise ValueError(
            f"{what}: missing column(s) {', '.join(missing)}; got {', '.join(table.column_names)}"
        )


def text_column(table: pa.Table, name: str) -> pa.Array:
    """A CHAR column stripped of Aleph's blank padding; Oracle NULL becomes ``""``.

    The stripped column is combined into one array. A dictionary-encoded column
    (``read_z30``) is stripped once per distinct value.
    """
    col = table.column(name)
    if pa.types.is_dictionary(col.type):
        codes = code_column(table, name)
        return codes.dictionary.take(codes.indices)
    return _stripped(col)


def key_prefix(table: pa.Table, name: str, width: int) -> pa.Array:
    """The leading key inside a composite key (the patron id in ``Z305_REC_KEY``, the item key
    in ``Z37_REC_KEY``): its first ``width`` characters, sliced before the padding is stripped."""
    return _stripped(table.column(name), 0, width)


def _stripped(col: pa.Array | pa.ChunkedArray, start: int = 0, width: int | None = None) -> pa.Array:
    """``validate.columns.trimmed`` as the transforms trim: ASCII whitespace only, into one ``string`` array.

    Only ASCII blanks are stripped (Aleph pads CHAR columns with them): non-ASCII whitespace
    at either end of a value, such as the ideographic space U+3000 of Chinese data, is
    delivered as Aleph holds it, where ``trimmed`` (the validation checks, the code
    inventory) strips all Unicode whitespace. ASCII trimming is also safe on UTF-8 (no byte
    of a multi-byte character is ASCII) and five times faster.
    """
    stripped = trimmed(col, start, width, ascii_only=True)
    if isinstance(stripped, pa.ChunkedArray):
        stripped = stripped.combine_chunks()
    return stripped.cast(pa.string()) if pa.types.is_large_string(stripped.type) else stripped


def code_column(table: pa.Table, name: str) -> pa.DictionaryArray:
    """``text_column`` as a dictionary array with no null index (Oracle NULL → ``""``).

    The dictionary may hold a value twice (``"A "`` and ``"A"`` both strip to ``"A"``);
    a lookup per dictionary value then spreads over the rows with ``take`` of the indices.
    """
    col = table.column(name)
    if not pa.types.is_dictionary(col.type):
        return pc.dictionary_encode(_stripped(col))
    combined = col.unify_dictionaries().combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    values, indices = _stripped(combined.dictionary), combined.indices
    if indices.null_count:
        indices = indices.fill_null(len(values))
        values = pa.concat_arrays([values, pa.array([""], pa.string())])
    return pa.DictionaryArray.from_arrays(indices, values)


def date_column(table: pa.Table, name: str) -> pa.Array:
    """A YYYYMMDD column as Arrow ``date32``; 0, NULL and impossible dates (20230231) become null."""
    return _dates(table.column(name).combine_chunks())


def _dates(col: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(col.type):
        col = col.dictionary.take(col.indices)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = pc.ascii_trim_whitespace(col)
        col = pc.if_else(pc.utf8_is_digit(col), col, None)
    digits = col.cast(pa.int64())
    plausible = pc.and_(pc.greater_equal(digits, 10000101), pc.less_equal(digits, 99991231))
    parsed = pc.strptime(
        pc.if_else(plausible, digits.cast(pa.string()), None), format="%Y%m%d", unit="s", error_is_null=True
    )
    # strptime is lenient (20230231 → 2023-03-03): keep only dates whose day survived.
    real = pc.equal(pc.day(parsed), pc.remainder(digits, 100))
    return pc.if_else(real, parsed.cast(pa.date32()), None)


def iso_date_column(table: pa.Table, name: str) -> pa.Array:
    """A YYYYMMDD column as ISO ``yyyy-mm-dd``; 0, NULL and impossible dates become ``""``.

    A part holds a few thousand distinct dates: each is parsed once, then spread with ``take``.
    """
    col = table.column(name).combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary.take(col.indices)
    encoded = pc.dictionary_encode(col)
    return _dates(encoded.dictionary).cast(pa.string()).take(encoded.indices).fill_null("")


def excluded_mask(keys: pa.Array, excluded: Mapping[str, str]) -> pa.Array:
    """Boolean mask of the rows whose key is in ``excluded``."""
    return pc.is_in(keys, value_set=pa.array(list(excluded), pa.string()))


def drop_rows(table: pa.Table, mask: pa.Array, max_runs: int = 1000) -> pa.Table:
    """``table`` without the rows where ``mask`` is true.

    Rejected rows are few, so the kept rows are taken as zero-copy slices between them;
    with many scattered rejects, a plain (copying) filter.
    """
    gone = pc.indices_nonzero(mask).to_pylist()
    if not gone:
        return table
    if len(gone) > max_runs:
        return table.filter(pc.invert(mask))
    pieces, start = [], 0
    for at in gone:
        if at > start:
            pieces.append(table.slice(start, at - start))
        start = at + 1
    pieces.append(table.slice(start))
    return pa.concat_tables(pieces)


def map_codes(
    codes: pa.Array, lookup: Callable[[str], str | None], fallback: str
) -> tuple[pa.Array, pa.Array]:
    """Map every code through ``lookup`` once per distinct value; ``None`` → ``fallback``.

    Returns the mapped column and a boolean column: which rows fell back. ``codes`` may come
    dictionary-encoded (``code_column``); its indices must then have no nulls.
    """
    encoded = codes if isinstance(codes, pa.DictionaryArray) else pc.dictionary_encode(codes)
    answers = [lookup(code) for code in encoded.dictionary.to_pylist()]
    values = pa.array([fallback if a is None else a for a in answers], pa.string())
    fell_back = pa.array([a is None for a in answers], pa.bool_())
    return values.take(encoded.indices), fell_back.take(encoded.indices)


# --- items ------------------------------------------------------------------------------

ITEM_COLUMNS: list[str] = [
    "aleph_item_key",
    "barcode",
    "library",
    "location",
    "item_policy",
    "material_type",
    "process_type",
    "call_number_type",
    "call_number",
    "alternative_call_number",
    "description",
    "enumeration_a",
    "enumeration_b",
    "chronology_i",
    "chronology_j",
    "public_note",
    "fulfillment_note",
    "internal_note_1",
    "inventory_number",
    "inventory_price",
    "creation_date",
    "modification_date",
    "holding_id",
    "bib_library",
    "bib_sysno",
    "no_loans",
]
"""Alma item fields, in output order. All are strings except ``no_loans`` (int32, 0–999)."""

ITEM_SCHEMA = pa.schema([(c, pa.int32() if c == "no_loans" else pa.string()) for c in ITEM_COLUMNS])

# Alma field ← Z30 column, for the fields copied as they are (stripped).
_COPIED = {
    "barcode": "Z30_BARCODE",
    "call_number_type": "Z30_CALL_NO_TYPE",
    "description": "Z30_DESCRIPTION",
    "enumeration_a": "Z30_ENUMERATION_A",
    "enumeration_b": "Z30_ENUMERATION_B",
    "chronology_i": "Z30_CHRONOLOGICAL_I",
    "chronology_j": "Z30_CHRONOLOGICAL_J",
    "public_note": "Z30_NOTE_OPAC",
    "fulfillment_note": "Z30_NOTE_CIRCULATION",
    "internal_note_1": "Z30_NOTE_INTERNAL",
    "inventory_number": "Z30_INVENTORY_NUMBER",
    "inventory_price": "Z30_PRICE",
}
_CALL_NUMBERS = {"call_number": "Z30_CALL_NO", "alternative_call_number": "Z30_CALL_NO_2"}
_CODES = ["Z30_SUB_LIBRARY", "Z30_COLLECTION", "Z30_ITEM_STATUS", "Z30_ITEM_PROCESS_STATUS", "Z30_MATERIAL"]
Z30_INPUT = [
    "Z30_REC_KEY",
    *_COPIED.values(),
    *_CALL_NUMBERS.values(),
    *_CODES,
    "Z30_OPEN_DATE",
    "Z30_UPDATE_DATE",
    "Z30_HOL_DOC_NUMBER_X",
    "Z30_NO_LOANS",
]
Z30_DICTIONARY = [
    *_CODES,
    "Z30_CALL_NO_TYPE",
    "Z30_CALL_NO_2",
    "Z30_DESCRIPTION",
    "Z30_NOTE_OPAC",
    "Z30_NOTE_CIRCULATION",
    "Z30_NOTE_INTERNAL",
    "Z30_PRICE",
    "Z30_ENUMERATION_A",
    "Z30_ENUMERATION_B",
    "Z30_CHRONOLOGICAL_I",
    "Z30_CHRONOLOGICAL_J",
]
"""Z30 columns ``read_z30`` reads dictionary-encoded: codes and mostly blank text, a few hundred
distinct values per part. Keys, barcodes, inventory numbers, holdings and call numbers are
(nearly) unique: hashing them into a dictionary would cost more than stripping every row."""
ADM_LINK_COLUMNS = ["adm", "bib_library", "bib_sysno"]
HOL_LINK_COLUMNS = ["sysno", "bib_library", "bib_sysno"]
HOL_LINK_DICTIONARY = ["bib_library"]
"""The holdings index columns ``transform_items`` needs (its ``hol_links``), and those best read
dictionary-encoded. Validation cuts them per Z30 part (``part_hol_links``): each items task reads
only its own part's links, not the library's 1.6M at bnu."""
MAX_NO_LOANS = 999

ITEMS_BY_BIB_KEYS = (
    "barcode",
    "library",
    "location",
    "item_policy",
    "call_number",
    "description",
    "public_note",
    "fulfillment_note",
    "internal_note",
    "process_type",
    "material_type",
)
"""Keys of each item dict from ``items_by_bib`` (the item subfields of a bib's embedded-item field)."""


@dataclass
class ItemStats(Tally):
    """One part's in, out and rejected by reason (the ``Tally``), and what the form filled in."""

    fallbacks: dict[str, int] = field(default_factory=dict)  # Alma field → rows given the form default
    unlinked_to_bib: int = (
        0  # delivered rows with no holdings link (only counted when ``hol_links`` is given)
    )
    linked_through_adm: int = 0  # delivered rows with no HOL link, linked to their bib through Z103


def call_number_text(col: pa.Array) -> pa.Array:
    """Aleph call numbers may carry 852 subfields (``$$hTP312$$iC123``): join the parts with a space."""
    if not pc.any(pc.match_substring(col, "$$")).as_py():
        return col
    spaced = pc.replace_substring_regex(col, pattern=r"\$\$.", replacement=" ")
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(spaced, pattern=r"\s{2,}", replacement=" "))


def _sysno(col: pa.Array) -> pa.Array:
    """System numbers compare as 9-digit zero-padded strings (``123`` == ``000000123``)."""
    length = pc.utf8_length(col)
    if not pc.any(pc.and_(pc.greater(length, 0), pc.less(length, 9))).as_py():
        return col  # as extracted: already padded (or blank)
    return pc.if_else(pc.equal(col, ""), col, pc.utf8_lpad(col, width=9, padding="0"))


def _reject_rows(
    z30: pa.Table,
    keys: pa.Array,
    mask: pa.Array,
    reasons: Mapping[str, str] | str,
    rejects: RejectLog,
    stats: ItemStats,
) -> None:
    """Log one Reject per masked row (a handful per part: a plain loop is fine here)."""
    where = pc.indices_nonzero(mask)
    positions = where.to_pylist()
    # A few rows: zero-copy slices; many: one take (its fixed cost is a pass over the part).
    raws = (
        z30.take(where).to_pylist()
        if len(positions) > 64
        else [z30.slice(at, 1).to_pylist()[0] for at in positions]
    )
    for at, key, raw in zip(positions, keys.take(where).to_pylist(), raws, strict=True):
        reason = reasons if isinstance(reasons, str) else reasons[key]
        clean = {k: (v.strip() if isinstance(v, str) else v) for k, v in raw.items()}
        detail = "" if key else f"row {at} of the part"
        rejects.add(Reject(ENTITY, key, reason, detail=detail, raw=_compact_json(clean)))
        stats.reject(reason)


def _compact_json(row: Mapping[str, object]) -> str:
    return json.dumps({k: v for k, v in row.items() if v not in ("", None, 0)}, ensure_ascii=False)


def transform_items(
    z30: pa.Table,
    form: FormLookups,
    excluded: Mapping[str, str],
    rejects: RejectLog,
    hol_links: pa.Table | None = None,
    adm_links: pa.Table | None = None,
) -> tuple[pa.Table, ItemStats]:
    """One Z30 part → Alma item rows (``ITEM_SCHEMA``), in input order.

    ``excluded`` maps Z30 keys (stripped) to the reason a validation rule rejected them;
    those rows and rows with a blank key go to ``rejects``. ``hol_links`` (columns
    ``sysno``, ``bib_library``, ``bib_sysno``: a HOL record's bib, system numbers as the
    9-digit strings of ALEPHSEQ) fills ``bib_library`` and ``bib_sysno`` through
    ``Z30_HOL_DOC_NUMBER_X`` (zero-padded to 9 digits); a row naming a holdings record that is
    not in ``hol_links`` (not delivered) is rejected as ``holdings_not_delivered``, a row
    with no holdings link is delivered without a bib link, unless ``adm_links`` (columns
    ``adm``, ``bib_library``, ``bib_sysno``, optionally ``bib_rejected``: ``aleph.links``)
    links its ADM record to a bib; one whose bib the bib transform rejected is then
    rejected as ``bib_not_delivered``. ``hol_links`` may cover the whole HOL library
    (each call then scans it once, ~60 ms per million links); a part's own links are faster.

    Every column is computed over the whole part and the rejected rows are dropped at the
    end: filtering the small, stripped output is far cheaper than the blank-padded input.
    """
    require_columns(z30, Z30_INPUT, "Z30")
    stats = ItemStats(records_in=z30.num_rows)
    keys = text_column(z30, "Z30_REC_KEY")
    blank = pc.equal(keys, "")
    gone = pc.and_(excluded_mask(keys, excluded), pc.invert(blank))
    if pc.any(blank).as_py():
        _reject_rows(z30, keys, blank, "missing_item_key", rejects, stats)
    if pc.any(gone).as_py():
        _reject_rows(z30, keys, gone, excluded, rejects, stats)

    cols: dict[str, pa.Array] = {"aleph_item_key": keys}
    for out, src in _COPIED.items():
        cols[out] = text_column(z30, src)
    for out, src in _CALL_NUMBERS.items():
        cols[out] = call_number_text(text_column(z30, src))
    fell_back = _mapped_codes(z30, form, cols)
    cols["creation_date"] = iso_date_column(z30, "Z30_OPEN_DATE")
    cols["modification_date"] = iso_date_column(z30, "Z30_UPDATE_DATE")
    holding = _sysno(text_column(z30, "Z30_HOL_DOC_NUMBER_X"))
    cols["holding_id"] = holding
    cols["bib_library"], cols["bib_sysno"], unlinked = _bib_links(holding, hol_links)
    through_adm = bib_rejected = pa.repeat(False, len(keys))
    if adm_links is not None:
        linked = _adm_bib_links(keys, pc.equal(holding, ""), adm_links)
        through_adm, bib_rejected = linked.column("through"), linked.column("bib_rejected")
        for name in ("bib_library", "bib_sysno"):
            cols[name] = pc.if_else(through_adm, linked.column(name), cols[name])
        unlinked = pc.and_(unlinked, pc.invert(through_adm))
    # An item whose holdings record was not delivered (rejected, or its bib was) has no bib in
    # Alma either: withhold it here, so that the worklist names it, not Alma's load report.
    kept = pc.invert(pc.or_(blank, gone))
    withheld = pc.and_(pc.and_(unlinked, pc.not_equal(holding, "")), kept)
    if pc.any(withheld).as_py():
        _reject_rows(z30, keys, withheld, "holdings_not_delivered", rejects, stats)
    bib_withheld = pc.and_(bib_rejected, kept)
    if pc.any(bib_withheld).as_py():
        _reject_rows(z30, keys, bib_withheld, "bib_not_delivered", rejects, stats)
    no_loans = z30.column("Z30_NO_LOANS").combine_chunks().cast(pa.int64()).fill_null(0)
    cols["no_loans"] = pc.max_element_wise(pc.min_element_wise(no_loans, MAX_NO_LOANS), 0).cast(pa.int32())

    table = pa.Table.from_arrays([cols[c] for c in ITEM_COLUMNS], schema=ITEM_SCHEMA)
    flags = pa.table(
        {f"fallback:{k}": v for k, v in fell_back.items()}
        | {"unlinked": unlinked, "through_adm": through_adm}
    )
    if stats.rejected:
        dropped = pc.or_(pc.or_(pc.or_(blank, gone), withheld), bib_withheld)
        table, flags = drop_rows(table, dropped), drop_rows(flags, dropped)
    stats.fallbacks = {k: pc.sum(flags.column(f"fallback:{k}")).as_py() or 0 for k in fell_back}
    stats.unlinked_to_bib = pc.sum(flags.column("unlinked")).as_py() or 0
    stats.linked_through_adm = pc.sum(flags.column("through_adm")).as_py() or 0
    stats.records_out = table.num_rows
    return table, stats.check(ENTITY)


def _mapped_codes(z30: pa.Table, form: FormLookups, cols: dict[str, pa.Array]) -> dict[str, pa.Array]:
    """Fill the code columns of ``cols``; return, per Alma field, which rows took the form default."""
    sub = code_column(z30, "Z30_SUB_LIBRARY")
    coll = code_column(z30, "Z30_COLLECTION")
    fell_back: dict[str, pa.Array] = {}

    # Location: the (sub-library, collection) pair; unmapped → the sub-library's library + default location.
    # A pair is numbered by the two dictionary positions, so each distinct pair is looked up once.
    width = len(coll.dictionary)
    encoded = pc.dictionary_encode(
        pc.add(pc.multiply(sub.indices.cast(pa.int64()), width), coll.indices.cast(pa.int64()))
    )
    sub_codes, coll_codes = sub.dictionary.to_pylist(), coll.dictionary.to_pylist()
    libraries, locations, missed = [], [], []
    default_library = form_default(form, "default_library")
    default_location = form_default(form, "default_location")
    for pair in encoded.dictionary.to_pylist():
        sub_code, coll_code = sub_codes[pair // width], coll_codes[pair % width]
        hit = form.location_for(sub_code, coll_code)
        missed.append(hit is None)
        if hit is None:
            libraries.append(form.library_for(sub_code) or default_library)
            locations.append(default_location)
        else:
            libraries.append(hit[0])
            locations.append(hit[1])
    cols["library"] = pa.array(libraries, pa.string()).take(encoded.indices)
    cols["location"] = pa.array(locations, pa.string()).take(encoded.indices)
    fell_back["location"] = pa.array(missed, pa.bool_()).take(encoded.indices)

    cols["item_policy"], fell_back["item_policy"] = map_codes(
        code_column(z30, "Z30_ITEM_STATUS"), form.item_policy_for, form_default(form, "default_item_policy")
    )
    cols["material_type"], fell_back["material_type"] = map_codes(
        code_column(z30, "Z30_MATERIAL"), form.material_type_for, form_default(form, "default_material_type")
    )

    def process_type(code: str) -> str | None:
        # Blank process status = in place: no Alma process type, unless the form maps blank.
        found = form.process_type_for(code)
        return "" if found is None and code == "" else found

    cols["process_type"], fell_back["process_type"] = map_codes(
        code_column(z30, "Z30_ITEM_PROCESS_STATUS"), process_type, ""
    )
    return fell_back


def part_hol_links(hol_links: pa.Table, z30_holdings: pa.Array | pa.ChunkedArray) -> pa.Table:
    """The ``hol_links`` rows named by a Z30 part's ``Z30_HOL_DOC_NUMBER_X`` column: all that
    ``transform_items`` needs of the holdings index for that part."""
    holding = _sysno(_stripped(z30_holdings))
    return hol_links.filter(pc.is_in(hol_links.column("sysno"), value_set=pc.unique(holding)))


def _bib_links(holding: pa.Array, hol_links: pa.Table | None) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(bib_library, bib_sysno, rows with no link) through ``hol_links``; empty when it is not given."""
    if hol_links is None:
        empty = pa.repeat("", len(holding))
        return empty, empty, pa.repeat(False, len(holding))
    require_columns(hol_links, ["sysno", "bib_library", "bib_sysno"], "hol_links")
    wanted = pc.unique(holding)
    if hol_links.num_rows > 2 * len(wanted):
        # The map may cover the whole HOL library: keep only this part's holdings before hashing it.
        hol_links = hol_links.filter(pc.is_in(hol_links.column("sysno"), value_set=wanted))
    at = pc.index_in(holding, value_set=text_column(hol_links, "sysno"))
    bib_library = text_column(hol_links, "bib_library").take(at).fill_null("")
    bib_sysno = _sysno(text_column(hol_links, "bib_sysno")).take(at).fill_null("")
    return bib_library, bib_sysno, pc.is_null(at)


def _adm_bib_links(keys: pa.Array, no_holding: pa.Array, adm_links: pa.Table) -> pa.Table:
    """Per row: whether ``adm_links`` links the item's ADM record to a bib (only rows with
    ``no_holding``), that bib, and whether the bib transform rejected it."""
    require_columns(adm_links, ADM_LINK_COLUMNS, "adm_links")
    adm = pc.if_else(no_holding, pc.utf8_slice_codeunits(keys, 0, 9), pa.scalar(None, pa.string()))
    wanted = pc.unique(adm.drop_null())
    if adm_links.num_rows > 2 * len(wanted):
        adm_links = adm_links.filter(pc.is_in(adm_links.column("adm"), value_set=wanted))
    at = pc.index_in(adm, value_set=text_column(adm_links, "adm"))
    rejected = (
        adm_links.column("bib_rejected").combine_chunks()
        if "bib_rejected" in adm_links.column_names
        else pa.repeat(False, adm_links.num_rows)
    )
    return pa.table(
        {
            "through": pc.is_valid(at),
            "bib_library": text_column(adm_links, "bib_library").take(at).fill_null(""),
            "bib_sysno": _sysno(text_column(adm_links, "bib_sysno")).take(at).fill_null(""),
            "bib_rejected": rejected.take(at).fill_null(False),
        }
    )


def read_z30(source: str | Path) -> pa.Table:
    """A Z30 Parquet part as ``transform_items`` wants it: the ``Z30_DICTIONARY`` columns dictionary-encoded.

    Their blank-padded CHAR values (990 of the 1,159 bytes of a row's CHAR columns: ~250 MB
    per 250k-row part) are then neither copied out nor stripped row by row. Every column is
    read: a rejected row's raw values name them all.
    """
    present = set(pq.read_schema(source).names)
    return pq.read_table(source, read_dictionary=[c for c in Z30_DICTIONARY if c in present])


def item_barcodes(items: pa.Table) -> dict[str, str]:
    """``aleph_item_key`` → barcode of transformed items (what loans and requests link through)."""
    return dict(
        zip(items.column("aleph_item_key").to_pylist(), items.column("barcode").to_pylist(), strict=True)
    )


def write_items_csv(table: pa.Table, out: str | Path | IO[bytes], header: bool = True) -> None:
    """Items as UTF-8 CSV (``ITEM_COLUMNS``, header first unless ``header=False`` for later parts)."""
    options = pacsv.WriteOptions(include_header=header, quoting_style="needed")
    pacsv.write_csv(table.select(ITEM_COLUMNS), out, write_options=options)


ITEM_DICTIONARY = [
    "library",
    "location",
    "item_policy",
    "material_type",
    "process_type",
    "call_number_type",
    "alternative_call_number",
    "description",
    "enumeration_a",
    "enumeration_b",
    "chronology_i",
    "chronology_j",
    "public_note",
    "fulfillment_note",
    "internal_note_1",
    "inventory_price",
    "creation_date",
    "modification_date",
    "bib_library",
    "no_loans",
]
"""Item columns with few distinct values per part: dictionary pages in Parquet. The others are
(nearly) unique, and hashing them for a dictionary that Parquet then drops is wasted work."""


def write_items_parquet(table: pa.Table, out: str | Path) -> None:
    """Items as Parquet (the items index: ``ITEM_SCHEMA``). Statistics only for ``bib_library``,
    the column readers filter on; computing min/max of every string column is a fifth of the write."""
    pq.write_table(table, out, use_dictionary=ITEM_DICTIONARY, write_statistics=["bib_library"])


def items_by_bib(table: pa.Table) -> dict[tuple[str, str], list[dict[str, str]]]:
    """Items grouped by ``(bib_library, bib_sysno)``, for embedding into the bib's item field.

    Each item is a dict with ``ITEMS_BY_BIB_KEYS``; items with no bib link are left out.
    """
    source = {k: ("internal_note_1" if k == "internal_note" else k) for k in ITEMS_BY_BIB_KEYS}
    linked = table.filter(pc.not_equal(table.column("bib_sysno"), ""))
    columns = {k: linked.column(src).to_pylist() for k, src in source.items()}
    grouped: dict[tuple[str, str], list[dict[str, str]]] = {}
    libs = linked.column("bib_library").to_pylist()
    sysnos = linked.column("bib_sysno").to_pylist()
    for i, bib in enumerate(zip(libs, sysnos, strict=True)):
        grouped.setdefault(bib, []).append({k: columns[k][i] for k in ITEMS_BY_BIB_KEYS})
    return grouped
