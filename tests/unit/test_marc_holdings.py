"""Holdings transform (004 link, leader, rejects, index) and the P2E file."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pymarc
import pytest
from pymarc import Field, Indicators, Subfield

from aleph2alma.aleph.alephseq import read_alephseq
from aleph2alma.marc.bibs import BIB_INDEX_SCHEMA
from aleph2alma.marc.holdings import (
    HOLDINGS_INDEX_SCHEMA,
    HoldingsOptions,
    call_number,
    holdings_leader,
    transform_holding,
    transform_holdings,
)
from aleph2alma.marc.p2e import LINE_FORMAT, P2ERule, electronic_bibs, p2e_lines
from aleph2alma.rejects import RejectLog

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "marc"
SAMPLES = Path(
    os.environ.get("ALEPH2ALMA_SAMPLES", Path(__file__).resolve().parents[1] / "fixtures" / "samples")
)
OPTIONS = HoldingsOptions("BNU60")


def _run(paths: list[Path], options: HoldingsOptions = OPTIONS):
    out, rej = io.BytesIO(), io.StringIO()
    index: list[dict] = []
    records = (rec for path in paths for rec in read_alephseq(path, entity="holdings"))
    stats = transform_holdings(records, options, out, RejectLog(rej), index)
    written = list(pymarc.MARCReader(io.BytesIO(out.getvalue())))
    return stats, written, [json.loads(line) for line in rej.getvalue().splitlines()], index


def test_with_several_bib_libraries_the_004_names_the_bib_library() -> None:
    _, [record], _, _ = _run([FIXTURES / "hol_clean.seq"], HoldingsOptions("BNU60", qualified_bib_ids=True))
    assert record["004"].data == "BNU01000000001"  # the bib's qualified 001


def test_holdings_output_links_to_the_bib() -> None:
    stats, [record], rejects, [row] = _run([FIXTURES / "hol_clean.seq"])
    assert (stats.records_in, stats.records_out, rejects) == (1, 1, [])
    assert [f.tag for f in record.fields] == ["001", "004", "008", "035", "852"]
    assert record["001"].data == "000000101"
    assert record["004"].data == "000000001"  # LKR $$b, padded; the legacy 004 is replaced
    assert record["035"]["a"] == "(ALEPH)BNU60000000101"
    assert str(record.leader)[5:12] == "nx  a22" and str(record.leader)[17:] == "1n 4500"
    assert row == {
        "library": "BNU60",
        "sysno": "000000101",
        "bib_library": "BNU01",
        "bib_sysno": "000000001",
        "sub_library": "BNUZG",
        "collection": "ZWSK",
        "call_number": "G40/123",
    }


def test_a_blank_leader_becomes_a_valid_holdings_leader() -> None:
    _, [record], _, _ = _run([FIXTURES / "hol_blank_leader.seq"])
    assert str(record.leader)[5:] == "nx  a22" + str(record.leader)[12:17] + "un 4500"


@pytest.mark.parametrize(
    ("leader", "expected"),
    [
        pytest.param("00281nx  a22001214n 4500", "00281nx  a22001214n 4500", id="sample-kept"),
        pytest.param("00000ny  a22000003i 4500", "00000ny  a22000003i 4500", id="type-y-kept"),
        pytest.param("00000cv   2200000   4500", "00000cv  a2200000un 4500", id="type-v-filled"),
        pytest.param(" " * 24, "00000nx  a22     un 4500", id="blank"),
        pytest.param("", "00000nx  a2200000un 4500", id="none"),
        pytest.param("00000nam a2200000 i 4500", "00000nx  a2200000ui 4500", id="bib-leader"),
    ],
)
def test_holdings_leader(leader: str, expected: str) -> None:
    assert holdings_leader(leader)[5:] == expected[5:]


def test_holdings_without_lkr_is_rejected() -> None:
    stats, written, [reject], index = _run([FIXTURES / "hol_missing_lkr.seq"])
    assert (stats.records_in, stats.records_out, stats.rejected, written, index) == (1, 0, 1, [], [])
    assert stats.rejected_by_reason == {"missing_bib_link": 1}
    assert (reject["entity"], reject["record_id"], reject["reason"]) == (
        "holdings",
        "BNU60:000000101",
        "missing_bib_link",
    )


def test_in_equals_out_plus_rejected() -> None:
    paths = sorted(FIXTURES.glob("hol_*.seq"))
    stats, written, rejects, index = _run(paths)
    assert stats.records_in == len(paths) == stats.records_out + stats.rejected
    assert (len(written), len(rejects), len(index)) == (stats.records_out, stats.rejected, stats.records_out)
    assert pa.Table.from_pylist(index, schema=HOLDINGS_INDEX_SCHEMA).num_rows == stats.records_out


def test_local_fields_dropped_and_kept() -> None:
    [rec] = read_alephseq(FIXTURES / "hol_clean.seq")
    assert {f.tag for f in transform_holding(rec, OPTIONS).record.fields} & {"LKR", "OWN", "FMT"} == set()  # type: ignore[union-attr]
    [rec] = read_alephseq(FIXTURES / "hol_clean.seq")
    kept = transform_holding(rec, HoldingsOptions("BNU60", drop_local_tags=False)).record
    assert kept is not None and {"LKR", "OWN"} <= {f.tag for f in kept.fields}


@pytest.mark.parametrize(
    ("ind1", "subfields", "expected"),
    [
        pytest.param("8", [("h", "G40"), ("i", "123")], "G40/123", id="clc"),
        pytest.param("0", [("h", "LB1060"), ("i", ".A12 2020")], "LB1060 .A12 2020", id="lc"),
        pytest.param("1", [("b", "X"), ("j", "781.1 B285ea B")], "781.1 B285ea B", id="shelving-number"),
        pytest.param("8", [("h", "G40")], "G40", id="clc-class-only"),
    ],
)
def test_call_number(ind1: str, subfields: list[tuple[str, str]], expected: str) -> None:
    f852 = Field("852", Indicators(ind1, " "), [Subfield(c, v) for c, v in subfields])
    assert call_number(f852) == expected


@pytest.mark.skipif(
    not (SAMPLES / "usp_2_holdings.seq").exists(),
    reason=f"no shared sample usp_2_holdings.seq in {SAMPLES} (set ALEPH2ALMA_SAMPLES)",
)
def test_sample_holdings() -> None:
    stats, written, rejects, index = _run([SAMPLES / "usp_2_holdings.seq"], HoldingsOptions("FCL60"))
    assert (stats.records_out, rejects) == (2, [])
    assert [r["004"].data for r in written] == ["000001662", "000006904"]
    assert [(row["bib_library"], row["sub_library"], row["collection"]) for row in index] == [
        ("FCL01", "ACMUS", "AMSCO"),
        ("FCL01", "ACDEP", "ACDPM"),
    ]


# --- P2E ----------------------------------------------------------------------------------


def _bibs(*rows: tuple[str, bool, bool]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"library": "BNU02", "sysno": s, "has_856": e, "rejected": r} for s, e, r in rows],
        schema=BIB_INDEX_SCHEMA,
    )


def _holdings(*rows: tuple[str, str, str]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "library": "BNU60",
                "sysno": f"{n:09d}",
                "bib_library": "BNU02",
                "bib_sysno": b,
                "sub_library": sub,
                "collection": coll,
                "call_number": "",
            }
            for n, (b, sub, coll) in enumerate(rows, start=1)
        ],
        schema=HOLDINGS_INDEX_SCHEMA,
    )


BIBS = _bibs(
    ("000000001", True, False),  # 856, no holdings: electronic
    ("000000002", True, False),  # 856, print holdings: physical
    ("000000003", False, False),  # no 856, all holdings in the e-location: electronic by location
    ("000000004", True, True),  # 856, no holdings, but rejected: never
    ("000000005", False, False),  # no 856, no holdings: only without require_856
    ("000000006", True, False),
)  # 856, one e-location holding and one print: physical
HOLDINGS = _holdings(
    ("000000002", "BNUZG", "WWSK"),
    ("000000003", "BNUZG", "DZZY"),
    ("000000003", "BNUZG", "DZZY"),
    ("000000006", "BNUZG", "DZZY"),
    ("000000006", "BNUZG", "WWSK"),
)
E_LOCATION = frozenset({("BNUZG", "DZZY")})

P2E_CASES = [
    ("default", P2ERule(), ["000000001"]),
    ("electronic-location", P2ERule(electronic_locations=E_LOCATION), ["000000001", "000000003"]),
    ("no-856-needed", P2ERule(require_856=False), ["000000001", "000000005"]),
    ("holdings-allowed", P2ERule(without_holdings=False), ["000000001", "000000002", "000000006"]),
]


@pytest.mark.parametrize(("rule", "sysnos"), [c[1:] for c in P2E_CASES], ids=[c[0] for c in P2E_CASES])
def test_electronic_bibs(rule: P2ERule, sysnos: list[str]) -> None:
    assert electronic_bibs(BIBS, HOLDINGS, rule)["sysno"].to_pylist() == sysnos


def test_p2e_line_format() -> None:
    assert LINE_FORMAT == "{library}{sysno},{type}"
    assert list(p2e_lines(BIBS, HOLDINGS, P2ERule())) == ["BNU02000000001,portfolio"]
    assert list(p2e_lines(BIBS, HOLDINGS, P2ERule(resource_type="database"))) == ["BNU02000000001,database"]


def test_p2e_with_no_holdings_at_all() -> None:
    assert list(p2e_lines(BIBS, HOLDINGS_INDEX_SCHEMA.empty_table(), P2ERule())) == [
        "BNU02000000001,portfolio",
        "BNU02000000002,portfolio",
        "BNU02000000006,portfolio",
    ]


def test_p2e_keys_include_the_bib_library() -> None:
    other = pa.Table.from_pylist(
        [{"library": "BNU01", "sysno": "000000002", "has_856": True, "rejected": False}],
        schema=BIB_INDEX_SCHEMA,
    )
    # BNU02's holdings of 000000002 do not make BNU01's 000000002 physical
    assert list(p2e_lines(other, HOLDINGS, P2ERule())) == ["BNU01000000002,portfolio"]


def test_p2e_rule_checks_its_type() -> None:
    with pytest.raises(ValueError, match="portfolio or database"):
        P2ERule(resource_type="package")  # type: ignore[arg-type]
