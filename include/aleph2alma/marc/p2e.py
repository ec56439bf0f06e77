"""The P2E (physical to electronic) file: which bibs Alma's migration turns into e-resources.

Ex Libris' migration treats all Aleph inventory as physical; the P2E input file lists the
bib records that should become electronic resources instead, one bib per line with its
resource type, portfolio or database ("Physical to Electronic (P2E) processing", Alma
Implementation and Migration guides). The e-locations themselves are flagged in the
migration form, and P2E_LINK (the URL field, usually 856 $u) in its questionnaire.

The documentation we could check describes the content (ILS bib number, one per line,
with its type), not the exact byte layout, so the layout is one constant,
:data:`LINE_FORMAT` (``<library><sysno>,<type>``, e.g. ``BNU02000001234,portfolio``:
Aleph bib numbers are only unique together with their BIB library); change it there if
the Ex Libris migration analyst asks for another one.

A bib is electronic when it was not rejected, and either

- it has an 856 $u (unless ``require_856`` is off) and, when ``without_holdings``, no
  holdings at all; or
- it has holdings and every one of them sits in an electronic location, a (sub-library,
  collection) pair of ``electronic_locations``.

All of it is pyarrow compute and a hash join: no Python loop over the rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

LINE_FORMAT = "{library}{sysno},{type}"
"""One P2E line; ``type`` is ``P2ERule.resource_type``. Built column-wise by :func:`p2e_lines`
(library and sysno joined with nothing, then :data:`TYPE_SEPARATOR` and the type)."""
TYPE_SEPARATOR = ","
_KEY_SEPARATOR = "\x1f"  # cannot occur in an Aleph code


@dataclass(frozen=True)
class P2ERule:
    require_856: bool = field(default=True, metadata={"doc": "Only bibs with an 856 $u are electronic"})
    without_holdings: bool = field(default=True, metadata={"doc": "Only bibs with no holdings (856 branch)"})
    electronic_locations: frozenset[tuple[str, str]] = field(
        default=frozenset(),
        metadata={"doc": "(sub-library, collection) pairs flagged electronic in the form"},
    )
    resource_type: Literal["portfolio", "database"] = field(
        default="portfolio", metadata={"doc": "Type written on every line"}
    )

    def __post_init__(self) -> None:
        if self.resource_type not in ("portfolio", "database"):
            raise ValueError(
                f"P2ERule.resource_type must be portfolio or database, not {self.resource_type!r}"
            )
        object.__setattr__(self, "electronic_locations", frozenset(self.electronic_locations))


def _holdings_per_bib(holdings: pa.Table, rule: P2ERule) -> pa.Table:
    """bib_library, bib_sysno, n_holdings, n_electronic."""
    keys = pc.binary_join_element_wise(holdings["sub_library"], holdings["collection"], _KEY_SEPARATOR)
    wanted = pa.array(
        [f"{sub}{_KEY_SEPARATOR}{coll}" for sub, coll in sorted(rule.electronic_locations)], type=pa.string()
    )
    electronic = pc.cast(pc.is_in(keys, value_set=wanted), pa.int64())
    table = pa.table(
        {"bib_library": holdings["bib_library"], "bib_sysno": holdings["bib_sysno"], "electronic": electronic}
    )
    grouped = table.group_by(["bib_library", "bib_sysno"]).aggregate(
        [("electronic", "count"), ("electronic", "sum")]
    )
    return grouped.rename_columns(["bib_library", "bib_sysno", "n_holdings", "n_electronic"])


def electronic_bibs(bib_index: pa.Table, holdings_index: pa.Table, rule: P2ERule) -> pa.Table:
    """The electronic bibs (library, sysno), sorted; see the module docstring for the rule."""
    bibs = bib_index.select(["library", "sysno", "has_856", "rejected"])
    per_bib = _holdings_per_bib(holdings_index, rule)
    joined = bibs.join(
        per_bib, keys=["library", "sysno"], right_keys=["bib_library", "bib_sysno"], join_type="left outer"
    )
    n_holdings = pc.fill_null(joined["n_holdings"], 0)
    n_electronic = pc.fill_null(joined["n_electronic"], 0)
    has_holdings = pc.greater(n_holdings, 0)
    link_branch = pc.fill_null(joined["has_856"], False) if rule.require_856 else pa.scalar(True)
    if rule.without_holdings:
        link_branch = pc.and_(link_branch, pc.invert(has_holdings))
    location_branch = pc.and_(has_holdings, pc.equal(n_electronic, n_holdings))
    keep = pc.and_(pc.invert(pc.fill_null(joined["rejected"], False)), pc.or_(link_branch, location_branch))
    result = joined.filter(keep).select(["library", "sysno"])
    return result.sort_by([("library", "ascending"), ("sysno", "ascending")])


def p2e_lines(bib_index: pa.Table, holdings_index: pa.Table, rule: P2ERule) -> Iterator[str]:
    """The lines of the P2E file (no newlines), in library, sysno order."""
    bibs = electronic_bibs(bib_index, holdings_index, rule)
    for batch in bibs.to_batches(max_chunksize=65_536):
        ids = pc.binary_join_element_wise(batch.column(0), batch.column(1), "")
        yield from pc.binary_join_element_wise(ids, pa.scalar(rule.resource_type), TYPE_SEPARATOR).to_pylist()
