"""ADM → BIB links (Z103): the bib of an item that has no HOL record.

An item names its HOL record in Z30_HOL_DOC_NUMBER_X, and the HOL record's LKR names the
bib. Sites that do not keep a HOL record for every item leave that column blank: such an
item reaches its bib through its ADM record (the first 9 digits of Z30_REC_KEY), whose
``LKR $$aADM`` link Aleph keeps in Z103 (``ztables.Z103``).

Z103 holds every link type, each link once per direction: an ADM → BIB link is a row of
type ADM whose Z103_REC_KEY starts with the ADM library. Z103 has a row per ADM record
(1.6M at BNU) while the items with no HOL link are usually few, so it is read batch by
batch and only the links of the ADM records asked for are kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aleph2alma.storage import RunScope
from aleph2alma.validate.columns import Column, KeySet, trimmed

ADM_LINK_TYPE = "ADM"
LIBRARY_WIDTH = 5
DOC_WIDTH = 9
Z103_COLUMNS = ["Z103_REC_KEY", "Z103_LKR_TYPE", "Z103_REC_KEY_1"]
ADM_LINKS_SCHEMA = pa.schema([("adm", pa.string()), ("bib_library", pa.string()), ("bib_sysno", pa.string())])
"""ADM doc number → its bib (BIB library code, 9-digit system number)."""


def adm_links_key(scope: RunScope) -> str:
    """Where a transform run's validation leaves the ADM → BIB links of the items with no HOL link,
    for its items transform (with ``bib_rejected``: ``with_bib_rejected``)."""
    return scope.prefix("validate") + "adm_links.parquet"


def hol_links_key(scope: RunScope, part_index: int) -> str:
    """Where a transform run's validation leaves the HOL → BIB links one Z30 part's items name, for
    that part's items task (``alma.items.part_hol_links``)."""
    return scope.prefix("validate", "hol_links") + f"{part_index:05d}.parquet"


BATCH_ROWS = 262_144


def adm_numbers(item_keys: Column) -> Column:
    """The ADM doc number (first 9 characters) of each Z30_REC_KEY."""
    return trimmed(item_keys, 0, DOC_WIDTH, ascii_only=True)


def adm_bib_links(z103: pa.Table, adm_library: str, adms: KeySet) -> pa.Table:
    """The ADM → BIB links in ``z103`` (``Z103_COLUMNS``) of the ADM records in ``adms``."""
    rec_key = trimmed(z103.column("Z103_REC_KEY"), ascii_only=True)
    adm = pc.utf8_slice_codeunits(rec_key, LIBRARY_WIDTH, LIBRARY_WIDTH + DOC_WIDTH)
    keep = pc.and_(
        pc.equal(trimmed(z103.column("Z103_LKR_TYPE")), ADM_LINK_TYPE),
        pc.equal(pc.utf8_slice_codeunits(rec_key, 0, LIBRARY_WIDTH), adm_library),
    )
    keep = pc.and_(keep, pa.array(adms.contains(adm)))
    linked = trimmed(z103.column("Z103_REC_KEY_1"), ascii_only=True).filter(keep)
    links = pa.table(
        {
            "adm": adm.filter(keep),
            "bib_library": pc.utf8_slice_codeunits(linked, 0, LIBRARY_WIDTH),
            "bib_sysno": pc.utf8_slice_codeunits(linked, LIBRARY_WIDTH, LIBRARY_WIDTH + DOC_WIDTH),
        }
    )
    return links.filter(pc.not_equal(links.column("bib_sysno"), "")).cast(ADM_LINKS_SCHEMA)


def read_adm_bib_links(sources: Iterable[str | Path], adm_library: str, adms: Column) -> pa.Table:
    """The ADM → BIB links of the ADM doc numbers ``adms`` (9-digit text) in the Z103 Parquet parts
    ``sources``: ``ADM_LINKS_SCHEMA``, one row per ADM record (the first link, should there be two)."""
    wanted = KeySet.of(adms)
    members = wanted.ints if wanted.ints is not None else wanted.text
    if members is None or len(members) == 0:
        return ADM_LINKS_SCHEMA.empty_table()
    found = [ADM_LINKS_SCHEMA.empty_table()]
    for source in sources:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=BATCH_ROWS, columns=Z103_COLUMNS):
            found.append(adm_bib_links(pa.Table.from_batches([batch]), adm_library, wanted))
    links = pa.concat_tables(found).combine_chunks()
    adm = links.column("adm")
    return links.take(pc.index_in(pc.unique(adm), value_set=adm))


def adms_without_holdings(z30: pa.Table) -> Column:
    """The ADM doc numbers of the Z30 rows whose Z30_HOL_DOC_NUMBER_X is blank."""
    no_hol = pc.equal(trimmed(z30.column("Z30_HOL_DOC_NUMBER_X")), "")
    return adm_numbers(z30.column("Z30_REC_KEY")).filter(no_hol)


def with_bib_rejected(links: pa.Table, bib_index: pa.Table) -> pa.Table:
    """``links`` with ``bib_rejected``: whether the bib transform rejected the linked bib (its
    ``rejected`` column in the bib index, ``library`` + ``sysno``)."""
    rejected = bib_index.filter(pc.fill_null(bib_index.column("rejected"), False))
    sysno = pc.utf8_lpad(pc.cast(rejected.column("sysno"), pa.string()), DOC_WIDTH, "0")
    known = pc.binary_join_element_wise(pc.cast(rejected.column("library"), pa.string()), sysno, ":")
    bib = pc.binary_join_element_wise(links.column("bib_library"), links.column("bib_sysno"), ":")
    return links.append_column("bib_rejected", pc.is_in(bib, value_set=known.combine_chunks()))
