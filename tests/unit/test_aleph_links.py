"""ADM → BIB links read from Z103: only ADM links out of the ADM library, only the ADM records asked for."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from aleph2alma.aleph.links import (
    ADM_LINKS_SCHEMA,
    adms_without_holdings,
    read_adm_bib_links,
    with_bib_rejected,
)
from aleph2alma.validate.checks import CheckContext, TableInputs, check_orphan_item


def z103(*rows: tuple[str, str, str]) -> pa.Table:
    """Rows as extracted: CHAR values blank-padded to their width."""
    keys, types, linked = zip(*rows, strict=True)
    return pa.table(
        {
            "Z103_REC_KEY": [k.ljust(16) for k in keys],
            "Z103_LKR_TYPE": [t.ljust(5) for t in types],
            "Z103_REC_KEY_1": [k.ljust(16) for k in linked],
        }
    )


LINKS = z103(
    ("BNU50000000001" + "01", "ADM", "BNU01000000111" + "01"),
    ("BNU01000000111" + "01", "ADM", "BNU50000000001" + "01"),  # the same link the other way round
    ("BNU50000000002" + "01", "ADM", "BNU02000000222" + "01"),
    ("BNU50000000002" + "02", "ADM", "BNU01000000999" + "01"),  # a second link: the first one counts
    ("BNU50000000003" + "01", "ADM", "BNU01000000333" + "01"),  # not asked for
    ("BNU60000000004" + "01", "HOL", "BNU01000000444" + "01"),  # a HOL record's link
    ("BNU50000000005" + "01", "ITM", "BNU01000000555" + "01"),  # another link type
)


def test_only_the_adm_links_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "z103.parquet"
    pq.write_table(LINKS, path, row_group_size=2)
    asked = pa.array(["000000001", "000000002", "000000004", "000000005", "000000006"])
    links = read_adm_bib_links([path], "BNU50", asked)
    assert links.schema == ADM_LINKS_SCHEMA
    assert links.to_pylist() == [
        {"adm": "000000001", "bib_library": "BNU01", "bib_sysno": "000000111"},
        {"adm": "000000002", "bib_library": "BNU02", "bib_sysno": "000000222"},
    ]


def test_nothing_asked_reads_nothing(tmp_path: Path) -> None:
    assert (
        read_adm_bib_links([tmp_path / "not-there.parquet"], "BNU50", pa.array([], pa.string())).num_rows == 0
    )


def test_the_adm_records_of_items_with_no_hol_link() -> None:
    z30 = pa.table(
        {
            "Z30_REC_KEY": ["000000001000010", "000000002000010", "000000003000010"],
            "Z30_HOL_DOC_NUMBER_X": ["000000077", "         ", None],
        }
    )
    assert adms_without_holdings(z30).to_pylist() == ["000000002", "000000003"]


def test_links_to_rejected_bibs_are_marked() -> None:
    links = pa.Table.from_pylist(
        [
            {"adm": "000000001", "bib_library": "BNU01", "bib_sysno": "000000111"},
            {"adm": "000000002", "bib_library": "BNU02", "bib_sysno": "000000111"},
        ],
        schema=ADM_LINKS_SCHEMA,
    )
    bib_index = pa.table(
        {"library": ["BNU01", "BNU02"], "sysno": ["111", "000000111"], "rejected": [True, False]}
    )
    assert with_bib_rejected(links, bib_index).column("bib_rejected").to_pylist() == [True, False]


def test_orphan_details_name_the_adm_record_and_its_link() -> None:
    z30 = pa.table(
        {
            "Z30_REC_KEY": ["000000001000010", "000000002000010", "000000003000010"],
            "Z30_HOL_DOC_NUMBER_X": ["", "", "000000099"],
        }
    )
    links = pa.Table.from_pylist(
        [{"adm": "000000002", "bib_library": "BNU01", "bib_sysno": "000000404"}], schema=ADM_LINKS_SCHEMA
    )
    empty = pa.table({"Z303_REC_KEY": pa.array([], pa.string())})
    inputs = TableInputs(
        z30=z30,
        z303=empty,
        z305=empty,
        z36=empty,
        z37=empty,
        z31=empty,
        bib_index=pa.table({"library": ["BNU01"], "sysno": ["000000001"]}),
        holdings_index=pa.table({"sysno": pa.array([], pa.string())}),
        adm_links=links,
    )
    ctx = CheckContext(inputs, form=None, as_of=date(2026, 3, 1))  # type: ignore[arg-type]
    assert {i.record_id: i.detail for i in check_orphan_item(ctx)} == {
        "000000001000010": "Z30_HOL_DOC_NUMBER_X is blank and ADM record 000000001 has no Z103 link to a bib",
        "000000002000010": "Z30_HOL_DOC_NUMBER_X is blank and ADM record 000000002 links (Z103) to "
        "BNU01:000000404: no such bib record",
        "000000003000010": "Z30_HOL_DOC_NUMBER_X 000000099: no such holdings record",
    }
