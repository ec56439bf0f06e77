"""BIB and HOL records of the demo library, written as ALEPHSEQ.

Records are built with pymarc and turned into lines by the ALEPHSEQ writer
(``aleph.alephseq.record_lines``); the lines of
defect records whose fault is below the MARC level (a broken leader, a wrong indicator,
bytes that are not UTF-8) are then replaced by their raw bytes, which is why files are
written in binary.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import numpy as np
from pymarc import Field, Indicators, Leader, Record, Subfield

from aleph2alma.aleph.alephseq import control_field, record_lines
from aleph2alma_dev.demo import codes, text
from aleph2alma_dev.demo.defects import INVALID_BYTES, defect_names, gbk_bytes
from aleph2alma_dev.demo.plan import KINDS, Plan
from aleph2alma_dev.demo.rows import ymd

BIB_DEFECTS = ["", *defect_names("bibs")]
CNMARC_LEADER = {
    "mono": "00000nam0 2200000   450 ",
    "serial": "00000nas0 2200000   450 ",
    "thesis": "00000nam0 2200000   450 ",
}
MARC21_LEADER = {"mono": "00000nam a2200000 i 4500", "serial": "00000nas a2200000 i 4500"}
HOL_LEADER = "00000nx  a22000001n 4500"
BAD_INDICATORS = "?*!%@"
WRITE_BATCH = 2_000


def _lines(sysno: str, record: Record, fmt: str) -> list[str]:
    """ALEPHSEQ lines of one record: FMT, LDR, then its fields in order."""
    record.fields.insert(0, control_field("FMT", fmt))
    return record_lines(sysno, record)


def _ymd(ordinal: int) -> str:
    return str(ymd(ordinal))


def _cat_date(rng: random.Random, year: int, as_of: int) -> int:
    start = date(max(year, 1998), 1, 1).toordinal()
    return min(as_of - 1, start + rng.randrange(1, 900))


def _record(leader: str) -> Record:
    """A record with exactly this leader (pymarc's constructor rewrites positions 9-11 and 20-23)."""
    record = Record()
    record.leader = Leader(leader)
    return record


def _hms(rng: random.Random) -> str:
    return f"{rng.randrange(8, 20):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"


_INDICATORS: dict[str, Indicators] = {}


def _field(tag: str, ind: str, *pairs: str) -> Field:
    """A data field; ``pairs`` alternate subfield code and value, empty values are left out."""
    indicators = _INDICATORS.get(ind) or _INDICATORS.setdefault(ind, Indicators(ind[0], ind[1]))
    return Field(
        tag=tag,
        indicators=indicators,
        subfields=[Subfield(c, v) for c, v in zip(pairs[::2], pairs[1::2], strict=True) if v],
    )


def _cnmarc(rng: random.Random, p: Plan, b: int, sysno: str, library: str, defect: str) -> Record:
    kind = KINDS[int(p.bib_kind[b])]
    cls = text.CLC_CLASSES[int(p.bib_class[b])]
    year = int(p.bib_year[b])
    cat = _cat_date(rng, year, p.as_of)
    record = _record(CNMARC_LEADER[kind])
    author, role = text.chinese_name(rng), rng.choice(text.ZH_ROLES)
    if kind == "serial":
        title, subtitle = rng.choice(text.CHINESE_SERIALS), ""
        ident = _field("011", "  ", "a", text.issn(int(p.bib_cutter[b]) * 7919 + b))
    else:
        title, subtitle = text.chinese_title(rng, cls)
        isbn = text.isbn13("9787", b * 7919 + 1)
        ident = _field("010", "  ", "a", isbn, "d", f"CNY{rng.randrange(18, 160)}.00")
    if kind == "thesis":
        place, publisher = "北京", text.ZH_UNIVERSITY
        subtitle = rng.choice(text.ZH_DEGREES)
    else:
        place, publisher = rng.choice(text.ZH_PUBLISHERS)
    general = f"{_ymd(cat)}{'a' if kind == 'serial' else 'd'}{year}    em y0chiy50      ea"
    record.add_field(
        Field(tag="001", data=sysno),
        Field(tag="005", data=f"{_ymd(cat)}{_hms(rng)}.0"),
        ident,
        _field("100", "  ", "a", general),
        _field("101", "0 ", "a", "chi"),
        _field("102", "  ", "a", "CN", "b", "110000"),
    )
    if defect != "missing_title":
        record.add_field(
            _field("200", "1 ", "a", title, "e", subtitle, "f", "" if kind == "serial" else author + role)
        )
    if kind == "mono" and rng.random() < 0.1:
        record.add_field(_field("205", "  ", "a", f"第{rng.randrange(2, 6)}版"))
    record.add_field(
        _field("210", "  ", "a", place, "c", publisher, "d", str(year)),
        _field(
            "215", "  ", "a", f"{rng.randrange(80, 800)}页", "c", "图", "d", f"{rng.choice((21, 23, 26))}cm"
        ),
    )
    if kind == "serial":
        record.add_field(_field("326", "  ", "a", rng.choice(text.SERIAL_FREQUENCIES)[0]))
    if defect == "invalid_utf8" or rng.random() < 0.15:
        record.add_field(
            _field("300", "  ", "a", rng.choice(("本书为教育部重点项目成果", "附录：参考文献", "据原版影印")))
        )
    if kind == "thesis":
        record.add_field(
            _field("328", "  ", "b", subtitle[:2], "c", cls.heading, "e", text.ZH_UNIVERSITY, "d", str(year))
        )
    record.add_field(
        _field("606", "0 ", "a", cls.heading, "x", rng.choice(("研究", "教材", "文集", ""))),
        _field("690", "  ", "a", cls.code, "v", "5"),
    )
    if kind != "serial":
        record.add_field(_field("701", " 0", "a", author, "4", role))
    record.add_field(_field("801", " 0", "a", "CN", "b", "BNU", "c", _ymd(cat)))
    if p.bib_e[b]:
        record.add_field(
            _field("856", "4 ", "u", f"https://e.lib.bnu.edu.cn/{library.lower()}/{sysno}", "z", "电子资源")
        )
    record.add_field(
        _field(
            "CAT",
            "  ",
            "a",
            rng.choice(("BATCH", "CATZH01", "CATZH02")),
            "b",
            "00",
            "c",
            _ymd(cat),
            "l",
            library,
            "h",
            f"{rng.randrange(800, 1800):04d}",
        )
    )
    return record


def _marc21(rng: random.Random, p: Plan, b: int, sysno: str, library: str, defect: str) -> Record:
    kind = KINDS[int(p.bib_kind[b])]
    cls = text.WESTERN_CLASSES[int(p.bib_class[b])]
    year = int(p.bib_year[b])
    cat = _cat_date(rng, year, p.as_of)
    place, publisher, country = rng.choice(text.WESTERN_PUBLISHERS)
    record = _record(MARC21_LEADER[kind])
    date_type = "c" if kind == "serial" else "s"
    fixed = (
        f"{_ymd(cat)[2:]}{date_type}{year}{'9999' if kind == 'serial' else '    '}{country:<3}"
        f"           000 0 eng d"
    )
    if kind == "serial":
        title, subtitle = rng.choice(text.WESTERN_SERIALS), ""
        ident = _field("022", "  ", "a", text.issn(int(p.bib_cutter[b]) * 7919 + b))
    else:
        title, subtitle = text.western_title(rng, cls)
        ident = _field("020", "  ", "a", text.isbn13(rng.choice(("9780", "9781")), b * 7919 + 1))
    surname, given = text.western_name_parts(rng)
    author = f"{surname}, {given}"
    record.add_field(
        Field(tag="001", data=sysno),
        Field(tag="005", data=f"{_ymd(cat)}{_hms(rng)}.0"),
        Field(tag="008", data=fixed),
        ident,
        _field("040", "  ", "a", "DLC", "b", "eng", "c", "DLC", "d", "BNU"),
    )
    if p.bib_dewey[b]:
        record.add_field(_field("082", "04", "a", cls.ddc, "2", "23"))
    else:
        record.add_field(_field("050", " 4", "a", cls.lc, "b", f".{author[0]}{rng.randrange(10, 99)} {year}"))
    if kind != "serial":
        record.add_field(_field("100", "1 ", "a", author + ",", "e", "author."))
    if defect != "missing_title":
        nonfiling = "4" if title.startswith("The ") else "0"
        record.add_field(
            _field(
                "245",
                ("1" if kind != "serial" else "0") + nonfiling,
                "a",
                title + (" :" if subtitle else "" if kind == "serial" else " /"),
                "b",
                f"{subtitle} /" if subtitle else "",
                "c",
                "" if kind == "serial" else f"{given} {surname}.",
            )
        )
    if kind == "mono" and rng.random() < 0.1:
        record.add_field(_field("250", "  ", "a", f"{rng.choice(('2nd', '3rd', '4th'))} ed."))
    if year >= 2012:
        record.add_field(_field("264", " 1", "a", place + " :", "b", publisher + ",", "c", f"[{year}]"))
    else:
        record.add_field(_field("260", "  ", "a", place + " :", "b", publisher + ",", "c", f"{year}."))
    record.add_field(
        _field("300", "  ", "a", f"{rng.randrange(90, 900)} pages :", "b", "illustrations ;", "c", "24 cm")
    )
    if kind == "serial":
        record.add_field(_field("310", "  ", "a", rng.choice(text.SERIAL_FREQUENCIES)[1]))
    if defect == "invalid_utf8" or rng.random() < 0.4:
        record.add_field(_field("504", "  ", "a", "Includes bibliographical references and index."))
    record.add_field(_field("650", " 0", "a", cls.heading, "x", rng.choice(text.WESTERN_SUBDIVISIONS) + "."))
    if kind == "mono" and rng.random() < 0.3:
        record.add_field(_field("700", "1 ", "a", text.western_name(rng) + ",", "e", "author."))
    if p.bib_e[b]:
        record.add_field(
            _field(
                "856", "40", "u", f"https://e.lib.bnu.edu.cn/{library.lower()}/{sysno}", "z", "Online access"
            )
        )
    record.add_field(
        _field(
            "CAT",
            "  ",
            "a",
            rng.choice(("BATCH", "CATWW01")),
            "b",
            "00",
            "c",
            _ymd(cat),
            "l",
            library,
            "h",
            f"{rng.randrange(800, 1800):04d}",
        )
    )
    return record


def _replace(lines: list[str], tag: str, make: Callable[[str], bytes | str]) -> list[bytes | str]:
    """Swap the first line of ``tag`` for the result of ``make(line)``."""
    out: list[bytes | str] = list(lines)
    for n, line in enumerate(lines):
        if line[10:13] == tag:
            out[n] = make(line)
            return out
    raise AssertionError(f"no {tag} line to make a defect of")


def _apply_defect(rng: random.Random, lines: list[str], defect: str, cnmarc: bool) -> list[bytes | str]:
    title_tag = "200" if cnmarc else "245"
    if defect == "invalid_leader":

        def bad_leader(line: str) -> str:
            data = line[18:]
            return line[:18] + (data[: rng.randrange(12, 23)] if rng.random() < 0.5 else data + "^^")

        return _replace(lines, "LDR", bad_leader)
    if defect == "invalid_indicators":
        return _replace(lines, title_tag, lambda line: line[:13] + rng.choice(BAD_INDICATORS) + line[14:])
    if defect == "invalid_utf8":
        note = "300" if cnmarc else "504"
        return _replace(lines, note, lambda line: line[:21].encode() + INVALID_BYTES + line[21:].encode())
    if defect == "legacy_gbk":
        return _replace(lines, "200", gbk_bytes)
    return list(lines)


def _encode(lines: list[bytes | str]) -> bytes:
    return b"".join((ln if isinstance(ln, bytes) else ln.encode("utf-8")) + b"\n" for ln in lines)


def _batches(rows: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), WRITE_BATCH):
        yield rows[start : start + WRITE_BATCH]


def write_bibs(plan: Plan, lib: int, library: str, cnmarc: bool, path: Path) -> int:
    """Write the BIB library ``lib`` (0 Chinese, 1 Western) as ALEPHSEQ; returns the record count."""
    rng = random.Random(f"{plan.seed}:bibs:{library}")
    build = _cnmarc if cnmarc else _marc21
    rows = np.flatnonzero(plan.bib_lib == lib)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for batch in _batches(rows):
            chunk = []
            for b, sysno_int, code in zip(
                batch.tolist(), plan.bib_sysno[batch].tolist(), plan.bib_defect[batch].tolist(), strict=True
            ):
                sysno = f"{sysno_int:09d}"
                defect = BIB_DEFECTS[code]
                lines = _lines(
                    sysno,
                    build(rng, plan, b, sysno, library, defect),
                    "BK" if KINDS[plan.bib_kind[b]] != "serial" else "SE",
                )
                chunk.append(_encode(_apply_defect(rng, lines, defect, cnmarc)))
            fh.write(b"".join(chunk))
    return len(rows)


def _holding(rng: random.Random, plan: Plan, h: int, libraries: tuple[str, str]) -> list[str]:
    sysno = f"{int(plan.hol_sysno[h]):09d}"
    loc = codes.LOCATIONS[int(plan.hol_loc[h])]
    b = int(plan.hol_bib[h])
    lib = int(plan.hol_lib[h])
    if b >= 0:
        kind, h_part, i_part = text.call_number(
            lib == 0,
            int(plan.bib_class[b]),
            int(plan.bib_cutter[b]),
            bool(plan.bib_dewey[b]),
            int(plan.bib_year[b]),
        )
    else:  # orphan: the bib it belonged to was deleted; its call number survives
        kind, h_part, i_part = text.call_number(
            lib == 0, rng.randrange(len(text.WESTERN_CLASSES)), rng.randrange(1, 10_000), False, 2010
        )
    entered = _ymd(plan.as_of - rng.randrange(30, 9000))[2:]
    lang = "chi" if lib == 0 else "eng"
    record = _record(HOL_LEADER)
    record.add_field(
        Field(tag="001", data=sysno),
        Field(tag="008", data=f"{entered}0u    8   4001uu{lang}0{entered}"),
        _field("LKR", "  ", "a", "HOL", "b", f"{int(plan.hol_target[h]):09d}", "l", libraries[lib]),
        _field("852", kind + " ", "b", loc.sub_library, "c", loc.collection, "h", h_part, "i", i_part),
    )
    if loc.kind == "serial":
        record.add_field(_field("866", " 0", "a", f"{rng.randrange(1985, 2015)}-"))
    return _lines(sysno, record, "HO")


def write_holdings(plan: Plan, libraries: tuple[str, str], hol_library: str, path: Path) -> int:
    """Write the HOL library as ALEPHSEQ; ``libraries`` = (Chinese BIB library, Western BIB library)."""
    rng = random.Random(f"{plan.seed}:holdings:{hol_library}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for batch in _batches(np.arange(len(plan.hol_sysno))):
            fh.write(b"".join(_encode(list(_holding(rng, plan, h, libraries))) for h in batch.tolist()))
    return len(plan.hol_sysno)
