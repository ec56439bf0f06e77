"""Rows of the demo Z-tables, dressed from the plan (values unpadded, in column order).

Each generator yields tuples in the column order of its ``ztables`` definition, in key
order; ``replica.py`` pads CHAR values and inserts them in batches.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import date
from functools import cache

import numpy as np

from aleph2alma_dev.demo import codes, text
from aleph2alma_dev.demo.plan import (
    BOR_STATUS_CODES,
    ITEM_STATUS_CODES,
    KINDS,
    PROCESS_CODES,
    UNMAPPED_LOCATIONS,
    Plan,
)

Row = tuple[str | int, ...]
BATCH = 10_000
LOC_PAIRS = [(loc.sub_library, loc.collection) for loc in codes.LOCATIONS] + UNMAPPED_LOCATIONS
STATUS_DUE_DAYS = {"04": 90, "05": 90, "06": 180}  # faculty, retired, postdocs borrow longer
ITEM_FINE_SHARES = {"0003": 0.78, "0004": 0.03, "0005": 0.04, "0040": 0.03, "0041": 0.07, "0042": 0.05}
"""Z31_TYPE of a fine on an item: mostly late returns, then lost-item charges (Aleph's tab18
codes); a fine on no item is a registration fee (0022)."""
LOST_LOAN_SHARE = 0.10
CLAIMED_RETURNED_SHARE = 0.01
"""Z36 rows with Z36_STATUS L (lost) and C (claimed returned): one real Aleph site's Z36 held
55,811 A, 6,581 L and 542 C (Duke University Libraries' loan mapping page, 2023): 10.5 % and
0.9 %. Such loans are long overdue: they were lent 4–14 months before the snapshot."""
VENDORS: tuple[tuple[str, str, str], ...] = (
    ("CNPIEC", "中国图书进出口（集团）总公司", "CNY"),
    ("CEPIEC", "中国教育图书进出口有限公司", "CNY"),
    ("BTIC", "北京中科进出口有限责任公司", "CNY"),
    ("XHBJ", "北京新华书店", "CNY"),
    ("BNUP", "北京师范大学出版社发行部", "CNY"),
    ("ZHSJ", "中华书局发行部", "CNY"),
    ("SPRINGER", "Springer Nature Customer Service", "EUR"),
    ("ELSEVIER", "Elsevier B.V.", "EUR"),
    ("TANDF", "Taylor & Francis Group", "GBP"),
    ("WILEY", "John Wiley & Sons", "USD"),
    ("OUP", "Oxford University Press", "GBP"),
    ("PROQUEST", "ProQuest LLC", "USD"),
)
CITIES = ("北京", "上海", "天津", "广州", "南京", "武汉", "成都", "西安", "杭州", "珠海")
BUDGET_KINDS = (
    ("ZWTS", "中文图书"),
    ("WWTS", "外文图书"),
    ("ZWQK", "中文期刊"),
    ("WWQK", "外文期刊"),
    ("DZZY", "电子资源"),
    ("GJ", "古籍特藏"),
)


@cache
def ymd(ordinal: int) -> int:
    d = date.fromordinal(ordinal)
    return d.year * 10000 + d.month * 100 + d.day


def hms(rng: random.Random) -> str:
    return f"{rng.randrange(8, 20):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"


def patron_key(idx: int) -> str:
    return f"BNU{idx + 1:09d}"


def item_key(adm: int, seq: int) -> str:
    return f"{adm:09d}{seq:06d}"


def vendor(i: int) -> tuple[str, str, str]:
    if i < len(VENDORS):
        return VENDORS[i]
    return f"V{i:05d}", f"{CITIES[i % len(CITIES)]}文苑图书有限公司第{i}分公司", "CNY"


def z103(plan: Plan, adm_library: str, libraries: tuple[str, str]) -> Iterator[Row]:
    """Each ADM record's link to its bib (the ADM → BIB direction only)."""
    for d, b in enumerate(plan.adm_bib.tolist(), start=1):
        yield (
            f"{adm_library}{d:09d}01",
            "ADM",
            f"{libraries[int(plan.bib_lib[b])]}{int(plan.bib_sysno[b]):09d}01",
        )


def z30(plan: Plan) -> Iterator[Row]:
    # the millions of items draw their random values a batch at a time, with numpy
    rng = np.random.default_rng([plan.seed, 30])
    as_of = plan.as_of
    n_known = len(codes.LOCATIONS)
    blank = ""
    last_hol, call = -1, ("", "")
    for start in range(0, len(plan.item_hol), BATCH):
        sl = slice(start, start + BATCH)
        hols = plan.item_hol[sl]
        size = len(hols)
        bibs = plan.hol_bib[hols]
        opened = as_of - rng.integers(20, 9000, size)
        updated = np.minimum(as_of - 1, opened + rng.integers(0, 3000, size))
        stamps = rng.integers(8 * 3600, 20 * 3600, size)
        cols = zip(
            hols.tolist(),
            bibs.tolist(),
            (plan.bib_lib[bibs] == 0).tolist(),
            plan.hol_loc[hols].tolist(),
            plan.item_adm[sl].tolist(),
            plan.item_seq[sl].tolist(),
            plan.item_hol_sysno[sl].tolist(),
            plan.item_loc[sl].tolist(),
            plan.item_status[sl].tolist(),
            plan.item_process[sl].tolist(),
            plan.item_barcode[sl].tolist(),
            opened.tolist(),
            updated.tolist(),
            stamps.tolist(),
            rng.random(size).tolist(),
            rng.integers(15, 400, size).tolist(),
            np.minimum(999, rng.exponential(12.5, size)).astype(int).tolist(),
            strict=True,
        )
        for n, (
            h,
            b,
            chi,
            hol_loc,
            adm,
            seq,
            hol_sysno,
            loc,
            status,
            process,
            barcode,
            open_day,
            update_day,
            stamp,
            r,
            price,
            loans,
        ) in enumerate(cols, start):
            if h != last_hol:
                last_hol = h
                kind, h_part, i_part = text.call_number(
                    chi,
                    int(plan.bib_class[b]),
                    int(plan.bib_cutter[b]),
                    bool(plan.bib_dewey[b]),
                    int(plan.bib_year[b]),
                )
                call = (kind, text.full_call_number(kind, h_part, i_part))
            home = codes.LOCATIONS[loc if loc < n_known else hol_loc]
            sub, coll = LOC_PAIRS[loc]
            desc = enum_a = enum_b = chron_i = chron_j = blank
            if home.material == "ISSUE":
                year, issue = 2025 - seq // 120, (seq // 10) % 12 + 1
                desc, enum_a, enum_b, chron_i, chron_j = (
                    f"{year}年 第{issue}期",
                    str(year - 1980),
                    str(issue),
                    str(year),
                    f"{issue:02d}",
                )
            elif seq > 10 and r < 0.05:
                desc = f"v.{seq // 10}"
            note_opac = ("赠书" if chi else "Gift") if 0.1 < r < 0.12 else blank
            note_circ = "附光盘1张" if chi and r > 0.98 else blank
            note_int = f"{2005 + n % 21}年清点" if 0.5 < r < 0.51 else blank
            status_code = ITEM_STATUS_CODES[status]
            updated_ymd = ymd(update_day)
            h_, rest = divmod(stamp, 3600)
            yield (
                item_key(adm, seq),
                blank if barcode < 0 else str(barcode),
                sub,
                home.material,
                status_code,
                PROCESS_CODES[process],
                coll,
                call[0],
                call[1],
                blank,
                desc,
                note_opac,
                note_circ,
                note_int,
                f"{'ZW' if chi else 'WW'}{n + 1:08d}",
                f"{'CNY' if chi else 'USD'}{price}.00",
                ymd(open_day),
                updated_ymd,
                f"{hol_sysno:09d}" if hol_sysno else blank,
                loans if status_code in codes.LOANABLE_STATUSES else 0,
                enum_a,
                enum_b,
                chron_i,
                chron_j,
                f"{updated_ymd}{h_:02d}{rest // 60:02d}{rest % 60:02d}0",
            )


def _primary_ids(plan: Plan, rng: random.Random) -> list[str]:
    ids = []
    for idx, expiry in enumerate(plan.pat_expiry.tolist()):
        year = min(2026, date.fromordinal(expiry).year - rng.randrange(1, 5))
        ids.append(f"{year}{rng.randrange(1, 40):02d}{idx + 1:06d}")
    return ids


def patrons(plan: Plan, adm_library: str) -> dict[str, list[Row]]:
    """Z303, Z304, Z305 and Z308 rows (tens of thousands: built in memory)."""
    rng = random.Random(f"{plan.seed}:patrons")
    primary_ids = _primary_ids(plan, rng)
    out: dict[str, list[Row]] = {"Z303": [], "Z304": [], "Z305": [], "Z308": []}
    home_libraries = [s.code for s in codes.SUB_LIBRARIES]
    bor_types = list(codes.BOR_TYPES)
    for idx in range(len(plan.pat_expiry)):
        key, status = patron_key(idx), BOR_STATUS_CODES[int(plan.pat_status[idx])]
        ptype = bor_types[int(plan.pat_type[idx])]
        primary = primary_ids[int(plan.pat_primary[idx])]
        expiry = int(plan.pat_expiry[idx])
        opened = expiry - rng.randrange(365, 5 * 365)
        foreign = status in ("07", "08") and rng.random() < 0.7
        name = text.western_name(rng) if foreign else text.chinese_name(rng)
        home = "BNUZH" if ptype == "02" else rng.choice(home_libraries[:4])
        birth = date(
            rng.randrange(1950, 2008) if status in ("04", "05") else rng.randrange(1990, 2008),
            rng.randrange(1, 13),
            rng.randrange(1, 29),
        )
        stamp = f"{ymd(min(plan.as_of - 1, opened + 30))}{hms(rng)}0"
        out["Z303"].append(
            (
                key,
                primary,
                name,
                home,
                ymd(birth.toordinal()),
                ymd(opened),
                ymd(min(plan.as_of - 1, opened + 30)),
                "00",
                "",
                stamp,
            )
        )
        campus = (
            ("广东省珠海市金凤路18号", "519087")
            if ptype == "02"
            else ("北京市海淀区新街口外大街19号", "100875")
        )
        email = (
            f"{primary}@mail.bnu.edu.cn"
            if status in ("01", "02", "03", "07")
            else f"u{idx + 1:06d}@bnu.edu.cn"
        )
        out["Z304"].append(
            (
                f"{key}01",
                name,
                campus[0],
                f"{rng.choice(('西北楼', '西南楼', '学七楼', '曾宪梓楼'))} {rng.randrange(101, 620)}",
                campus[1],
                email,
                f"1{rng.randrange(30, 90)}{rng.randrange(10**8):08d}",
                ymd(opened),
                ymd(expiry),
                "01",
            )
        )
        out["Z305"].append(
            (
                f"{key}{adm_library}",
                ptype,
                status,
                ymd(expiry),
                ymd(min(plan.as_of - 1, opened + rng.randrange(0, 2000))),
            )
        )
        # PINs (Z308_VERIFICATION) marked "PIN" + 6 digits, so that tests can prove none leaves Aleph.
        out["Z308"].append((f"01{8_000_000_000 + idx + 1}", key, f"PIN{rng.randrange(10**6):06d}", "AC"))
        out["Z308"].append((f"02bnu{idx + 1:07d}", key, f"PIN{rng.randrange(10**6):06d}", "AC"))
    out["Z308"].sort()
    return out


def _item_ref(plan: Plan, item: int, adm: int) -> tuple[str, str]:
    """(item key, sub-library) of a real item, or of a missing one (first copy of an unknown ADM doc)."""
    if item < 0:
        return item_key(adm, 10), codes.SUB_LIBRARIES[0].code
    return item_key(adm, int(plan.item_seq[item])), LOC_PAIRS[int(plan.item_loc[item])][0]


def loan_keys(plan: Plan) -> list[str]:
    """Z36_REC_KEY of each planned loan: the key of its item (each loan has its own)."""
    return [
        _item_ref(plan, item, adm)[0]
        for item, adm in zip(plan.loan_item.tolist(), plan.loan_adm.tolist(), strict=True)
    ]


def z36(plan: Plan) -> list[Row]:
    rng = random.Random(f"{plan.seed}:loans")
    statuses = random.Random(f"{plan.seed}:loan-statuses")  # its own stream: active loans stay as they were
    rows: list[Row] = []
    for n, (key, item, adm, patron) in enumerate(
        zip(
            loan_keys(plan),
            plan.loan_item.tolist(),
            plan.loan_adm.tolist(),
            plan.loan_patron.tolist(),
            strict=True,
        )
    ):
        sub = _item_ref(plan, item, adm)[1]
        known = patron < len(plan.pat_status)
        days = STATUS_DUE_DAYS.get(BOR_STATUS_CODES[int(plan.pat_status[patron])], 30) if known else 30
        loaned = plan.as_of - rng.randrange(1, 150)
        note = "续借" if rng.random() < 0.1 else ""
        draw = statuses.random()
        status = (
            "L" if draw < LOST_LOAN_SHARE else "C" if draw < LOST_LOAN_SHARE + CLAIMED_RETURNED_SHARE else "A"
        )
        if status != "A":
            loaned = plan.as_of - statuses.randrange(120, 420)
        rows.append(
            (key, patron_key(patron), f"{n + 1:09d}", sub, status, ymd(loaned), ymd(loaned + days), 0, note)
        )
    rows.sort()
    return rows


def request_keys(plan: Plan) -> list[str]:
    """Z37_REC_KEY of each planned request: item key + its place in the item's queue."""
    seqs: Counter[str] = Counter()
    keys = []
    for item, adm in zip(plan.req_item.tolist(), plan.req_adm.tolist(), strict=True):
        key = _item_ref(plan, item, adm)[0]
        seqs[key] += 1
        keys.append(f"{key}{seqs[key]:04d}")
    return keys


def z37(plan: Plan) -> list[Row]:
    rng = random.Random(f"{plan.seed}:requests")
    rows: list[Row] = []
    for n, (key, item, adm, patron) in enumerate(
        zip(
            request_keys(plan),
            plan.req_item.tolist(),
            plan.req_adm.tolist(),
            plan.req_patron.tolist(),
            strict=True,
        )
    ):
        sub = _item_ref(plan, item, adm)[1]
        opened = plan.as_of - rng.randrange(1, 60)
        on_shelf = rng.random() < 0.2
        rows.append(
            (
                key,
                patron_key(patron),
                "S" if on_shelf else "A",
                "50",
                ymd(opened),
                ymd(opened + 90),
                ymd(plan.as_of + 7) if on_shelf else 0,
                sub,
                f"{n + 1:09d}",
            )
        )
    rows.sort()
    return rows


def fine_keys(plan: Plan) -> list[tuple[str, int]]:
    """(Z31_REC_KEY, date ordinal) of each planned fine: patron + date/time (13) + sequence (4)."""
    rng = random.Random(f"{plan.seed}:fine-keys")
    seqs: Counter[int] = Counter()
    out = []
    for patron in plan.fine_patron.tolist():
        seqs[patron] += 1
        when = plan.as_of - rng.randrange(1, 700)
        stamp = f"{ymd(when)}{rng.randrange(8, 20):02d}{rng.randrange(60):02d}{rng.randrange(10)}"
        out.append((f"{patron_key(patron)}{stamp}{seqs[patron]:04d}", when))
    return out


def z31(plan: Plan) -> list[Row]:
    rng = random.Random(f"{plan.seed}:fines")
    item_types, weights = zip(*ITEM_FINE_SHARES.items(), strict=True)
    rows: list[Row] = []
    for (key, when), item, defect in zip(
        fine_keys(plan), plan.fine_item.tolist(), plan.fine_defect.tolist(), strict=True
    ):
        ftype = rng.choices(item_types, weights)[0] if item >= 0 else "0022"
        amount = {
            "0003": rng.randrange(1, 60) / 2,
            "0004": rng.randrange(1, 6),
            "0005": rng.randrange(1, 4),
            "0022": 10,
            "0040": 20,
            "0041": rng.randrange(30, 300),
            "0042": 10,
        }[ftype]
        status = "O" if defect or rng.random() < 0.85 else "C"
        item_key_ = item_key(int(plan.item_adm[item]), int(plan.item_seq[item])) if item >= 0 else ""
        sub = LOC_PAIRS[int(plan.item_loc[item])][0] if item >= 0 else codes.SUB_LIBRARIES[0].code
        rows.append(
            (
                key,
                status,
                "D",
                f"{amount:.2f}",
                ftype,
                sub,
                codes.FINE_TYPES[ftype].split(" ")[0],
                item_key_,
                ymd(when),
            )
        )
    rows.sort()
    return rows


def z68(plan: Plan) -> list[Row]:
    rng = random.Random(f"{plan.seed}:orders")
    seqs: Counter[int] = Counter()
    statuses = list(codes.ORDER_STATUSES)
    rows: list[Row] = []
    for n, (adm, v) in enumerate(zip(plan.order_adm.tolist(), plan.order_vendor.tolist(), strict=True)):
        seqs[adm] += 1
        b = int(plan.adm_bib[adm - 1])
        serial = KINDS[int(plan.bib_kind[b])] == "serial"
        chi = plan.bib_lib[b] == 0
        opened = plan.as_of - rng.randrange(10, 2500)
        currency = "CNY" if chi else rng.choice(codes.CURRENCIES[1:])
        rows.append(
            (
                f"{adm:09d}{seqs[adm]:05d}",
                f"BNU{date.fromordinal(opened).year}-{n + 1:06d}",
                vendor(v)[0],
                rng.choice(statuses),
                "S" if serial else "M",
                "S" if serial else "M",
                codes.SUB_LIBRARIES[0].code,
                1 if serial else rng.randrange(1, 6),
                f"{rng.randrange(20, 3000)}.00",
                currency,
                ymd(opened),
            )
        )
    rows.sort()
    return rows


def z70(plan: Plan) -> list[Row]:
    return sorted((code, name, "AC", currency) for code, name, currency in map(vendor, range(plan.vendors)))


def z76(plan: Plan) -> list[Row]:
    rng = random.Random(f"{plan.seed}:budgets")
    rows: list[Row] = []
    year = date.fromordinal(plan.as_of).year
    combos = [
        (y, s.code, k) for y in range(year, year - 50, -1) for s in codes.SUB_LIBRARIES for k in BUDGET_KINDS
    ]
    for y, sub, (kind, label) in combos[: plan.budgets]:
        rows.append(
            (
                f"{y}-{sub}-{kind}",
                f"{y}年{label}经费（{sub}）",
                sub,
                f"{rng.randrange(10, 500) * 10000}.00",
                "CNY",
                y,
            )
        )
    return sorted(rows)
