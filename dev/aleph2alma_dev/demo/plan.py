"""The skeleton of a demo library: who links to whom, which record carries which defect.

Everything structural is decided here, once, as numpy arrays (a few bytes per record, so
even the ``bnu`` scale fits in ~190 MB): system numbers, ADM documents, holdings, items,
patrons, loans, requests, fines and orders, and the disjoint defect sets. The writers
(``marc.py`` for ALEPHSEQ, ``rows.py`` + ``replica.py`` for the database) only dress the
skeleton with text, each from its own seeded random stream, so they can run in parallel
and still agree on every link.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from aleph2alma_dev.demo import codes, text
from aleph2alma_dev.demo.defects import DefectPicker, defect_code, defect_count, group_sizes

ELECTRONIC_SHARE = 0.04  # bibs with an 856 and no holdings (P2E candidates)
CHINESE_SHARE = 0.65  # BNU01 (CNMARC) : BNU02 (MARC 21)
EXPIRED_CLEAN_SHARE = 0.12  # clean patrons whose registration lapsed (they have no loans)
ADM_ONLY_ITEM_SHARE = 0.0005  # clean items with no HOL link: their bib comes through ADM → BIB (Z103)
KINDS = ("mono", "serial", "thesis")
ITEM_STATUS_CODES = [*codes.ITEM_STATUSES, *codes.UNMAPPED_CODES["item_statuses"]]
BOR_STATUS_CODES = [*codes.BOR_STATUSES, *codes.UNMAPPED_CODES["bor_statuses"]]
PROCESS_CODES = list(codes.PROCESS_STATUSES)
UNMAPPED_LOCATIONS = [tuple(c.split("/")) for c in codes.UNMAPPED_CODES["collections"]]


@dataclass(frozen=True)
class Scale:
    """Record counts of a demo library (defect records included)."""

    bibs: int
    holdings: int
    items: int
    patrons: int
    loans: int
    requests: int
    fines: int
    orders: int
    vendors: int
    budgets: int


SCALES: dict[str, Scale] = {
    "tiny": Scale(
        bibs=300,
        holdings=320,
        items=1_000,
        patrons=200,
        loans=300,
        requests=60,
        fines=80,
        orders=40,
        vendors=12,
        budgets=10,
    ),
    "small": Scale(
        bibs=20_000,
        holdings=21_500,
        items=64_000,
        patrons=2_000,
        loans=5_000,
        requests=500,
        fines=1_000,
        orders=1_500,
        vendors=40,
        budgets=30,
    ),
    "bnu": Scale(
        bibs=1_500_000,
        holdings=1_600_000,
        items=4_800_000,
        patrons=60_000,
        loans=150_000,
        requests=15_000,
        fines=30_000,
        orders=40_000,
        vendors=600,
        budgets=200,
    ),
}


@dataclass
class Plan:
    seed: int
    as_of: int  # date ordinal
    # bibs: index b, library 0 = Chinese/CNMARC, 1 = Western/MARC 21, sorted by library then sysno
    bib_lib: np.ndarray
    bib_sysno: np.ndarray
    bib_kind: np.ndarray  # index into KINDS
    bib_e: np.ndarray  # electronic: 856, no holdings
    bib_year: np.ndarray
    bib_class: np.ndarray  # index into CLC_CLASSES / WESTERN_CLASSES
    bib_cutter: np.ndarray
    bib_dewey: np.ndarray
    bib_defect: np.ndarray
    adm_bib: np.ndarray  # ADM doc number (i + 1) → bib index
    # holdings, sorted by HOL sysno
    hol_sysno: np.ndarray
    hol_bib: np.ndarray  # -1 for orphans
    hol_lib: np.ndarray  # library of the LKR target
    hol_target: np.ndarray  # LKR target sysno
    hol_loc: np.ndarray  # index into codes.LOCATIONS
    hol_defect: np.ndarray
    # items, sorted by Z30_REC_KEY
    item_hol: np.ndarray
    item_adm: np.ndarray
    item_seq: np.ndarray
    item_hol_sysno: np.ndarray  # 0: no HOL link (Z30_HOL_DOC_NUMBER_X blank)
    item_loc: np.ndarray  # ≥ len(LOCATIONS): UNMAPPED_LOCATIONS
    item_status: np.ndarray  # index into ITEM_STATUS_CODES
    item_process: np.ndarray  # index into PROCESS_CODES
    item_barcode: np.ndarray  # -1 blank
    item_defect: np.ndarray
    # patrons: key BNU + 9 digits of index + 1; index ≥ patrons means "no such patron"
    pat_status: np.ndarray  # index into BOR_STATUS_CODES
    pat_type: np.ndarray
    pat_expiry: np.ndarray  # ordinal
    pat_primary: np.ndarray  # whose primary id this patron carries (itself unless duplicate)
    pat_defect: np.ndarray
    loan_item: np.ndarray  # item index, -1: missing item (then loan_adm is past the last ADM doc)
    loan_adm: np.ndarray
    loan_patron: np.ndarray
    loan_defect: np.ndarray
    req_item: np.ndarray
    req_adm: np.ndarray
    req_patron: np.ndarray
    req_defect: np.ndarray
    fine_patron: np.ndarray
    fine_item: np.ndarray  # -1: not about an item
    fine_defect: np.ndarray
    order_adm: np.ndarray
    order_vendor: np.ndarray
    vendors: int
    budgets: int

    def nbytes(self) -> int:
        return sum(
            getattr(self, f.name).nbytes
            for f in fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        )


def _sysnos(rng: np.random.Generator, n: int, gap_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Ascending system numbers from 1 with gaps (deleted records); also the missing numbers."""
    steps = np.where(rng.random(n) < gap_share, rng.integers(2, 5, n), 1)
    steps[0] = 1
    sysnos = np.cumsum(steps, dtype=np.int64).astype(np.int32)
    gap_after = np.flatnonzero(steps[1:] > 1)
    return sysnos, sysnos[gap_after] + 1


def _deleted(rng: np.random.Generator, gaps: np.ndarray, last: int, count: int) -> np.ndarray:
    """``count`` distinct numbers of deleted records: gaps first, then numbers past the last."""
    if len(gaps) >= count:
        return np.sort(rng.choice(gaps, size=count, replace=False)).astype(np.int32)
    return np.concatenate([gaps, np.arange(last + 1, last + 1 + count - len(gaps))]).astype(np.int32)


def _by_weights(rng: np.random.Generator, choices: list[int], weights: list[int], size: int) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    return np.asarray(choices)[rng.choice(len(choices), size=size, p=w / w.sum())]


def _bibs(rng: np.random.Generator, scale: Scale) -> dict[str, np.ndarray]:
    n = scale.bibs
    n_chi = round(n * CHINESE_SHARE)
    lib = np.repeat(np.array([0, 1], dtype=np.int8), [n_chi, n - n_chi])
    sysno = np.empty(n, dtype=np.int32)
    gaps = []
    for lo, hi in ((0, n_chi), (n_chi, n)):
        sysno[lo:hi], g = _sysnos(rng, hi - lo, 0.03)
        gaps.append(g)
    u = rng.random(n)
    kind = np.where(u < 0.035, 1, 0).astype(np.int8)
    kind[(lib == 0) & (u > 0.96)] = 2
    e = np.zeros(n, dtype=bool)
    for lb in (0, 1):
        pool = np.flatnonzero((lib == lb) & (kind != 2))
        e[rng.choice(pool, size=max(2, round(len(pool) * ELECTRONIC_SHARE)), replace=False)] = True
    age = np.minimum(rng.exponential(10, n), 70).astype(np.int16)
    year = (2026 - age).astype(np.int16)
    year[kind == 2] = rng.integers(2003, 2027, int((kind == 2).sum()))
    n_cls = np.where(lib == 0, len(text.CLC_CLASSES), len(text.WESTERN_CLASSES))
    cls = (rng.random(n) * n_cls).astype(np.int16)
    return {
        "bib_lib": lib,
        "bib_sysno": sysno,
        "bib_kind": kind,
        "bib_e": e,
        "bib_year": year,
        "bib_class": cls,
        "bib_cutter": rng.integers(1, 10_000, n).astype(np.int32),
        "bib_dewey": (lib == 1) & (rng.random(n) < 0.2),
        "gaps0": gaps[0],
        "gaps1": gaps[1],
    }


def _bib_defects(rng: np.random.Generator, b: dict[str, np.ndarray]) -> np.ndarray:
    picker = DefectPicker.for_entity("bibs", len(b["bib_lib"]), rng)
    physical = ~b["bib_e"]
    chi = np.flatnonzero(physical & (b["bib_lib"] == 0))
    wes = np.flatnonzero(physical & (b["bib_lib"] == 1))
    total = len(b["bib_lib"])
    picker.pick("legacy_gbk", defect_count("bibs", "legacy_gbk", total), chi)
    for defect in ("missing_title", "invalid_leader", "invalid_indicators", "invalid_utf8"):
        k = defect_count("bibs", defect, total)
        k_chi = round(k * CHINESE_SHARE)
        picker.pick(defect, k_chi, chi)
        picker.pick(defect, k - k_chi, wes)
    return picker.codes


def _locations(rng: np.random.Generator, lang: np.ndarray, kind: np.ndarray) -> np.ndarray:
    loc = np.zeros(len(lang), dtype=np.int16)
    for lb, language in enumerate(("chi", "wes")):
        for kd, kind_name in enumerate(KINDS):
            rows = np.flatnonzero((lang == lb) & (kind == kd))
            options = [
                i for i, x in enumerate(codes.LOCATIONS) if x.language == language and x.kind == kind_name
            ]
            if len(rows) and options:
                loc[rows] = _by_weights(rng, options, [codes.LOCATIONS[i].weight for i in options], len(rows))
    return loc


def _holdings(rng: np.random.Generator, scale: Scale, b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    physical = np.flatnonzero(~b["bib_e"])
    lib = b["bib_lib"]
    # ADM documents follow cataloguing time: both libraries interleaved, each roughly in order
    n_lib = np.bincount(lib[physical], minlength=2)
    rank = np.empty(len(physical))
    for lb in (0, 1):
        mine = lib[physical] == lb
        rank[mine] = (np.arange(n_lib[lb]) + 0.5) / n_lib[lb]
    adm_bib = physical[np.argsort(rank + rng.normal(0, 0.01, len(physical)), kind="stable")].astype(np.int32)
    n_orphan = defect_count("holdings", "orphan_holdings", scale.holdings)
    extra = scale.holdings - n_orphan - len(adm_bib)
    if extra < 0:
        raise ValueError(
            f"{scale.holdings} holdings cannot cover {len(adm_bib)} physical bibs and {n_orphan} orphans"
        )
    per_adm = 1 + np.bincount(rng.integers(0, len(adm_bib), extra), minlength=len(adm_bib))
    hol_adm = np.repeat(np.arange(len(adm_bib), dtype=np.int32), per_adm)
    hol_bib = adm_bib[hol_adm]
    at = np.sort(rng.integers(0, len(hol_bib) + 1, n_orphan))
    hol_bib = np.insert(hol_bib, at, -1)
    orphan = hol_bib < 0
    sysno, gaps = _sysnos(rng, len(hol_bib), 0.02)
    hol_lib = np.where(orphan, 0, lib[hol_bib]).astype(np.int8)
    hol_lib[orphan] = rng.integers(0, 2, n_orphan)
    target = np.where(orphan, 0, b["bib_sysno"][hol_bib]).astype(np.int32)
    for lb in (0, 1):
        rows = np.flatnonzero(orphan & (hol_lib == lb))
        last = int(b["bib_sysno"][lib == lb].max())
        target[rows] = _deleted(rng, b[f"gaps{lb}"], last, len(rows))
    kind = np.where(orphan, 0, b["bib_kind"][hol_bib])
    loc = _locations(rng, hol_lib, kind)
    defect = np.where(orphan, defect_code("holdings", "orphan_holdings"), 0).astype(np.int8)
    return {
        "hol_sysno": sysno,
        "hol_bib": hol_bib,
        "hol_lib": hol_lib,
        "hol_target": target,
        "hol_loc": loc,
        "hol_defect": defect,
        "adm_bib": adm_bib,
        "hol_adm": np.insert(hol_adm, at, -1),
        "hol_gaps": gaps,
    }


def _items(
    rng: np.random.Generator, scale: Scale, b: dict[str, np.ndarray], h: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    regular = np.flatnonzero(h["hol_bib"] >= 0)
    extra = scale.items - len(regular)
    if extra < 0:
        raise ValueError(f"{scale.items} items cannot give each of {len(regular)} holdings one item")
    kind = b["bib_kind"][h["hol_bib"][regular]]
    weight = rng.lognormal(0, 0.8, len(regular)) * np.choose(kind, [1.0, 6.0, 0.05])
    per_hol = 1 + np.bincount(
        rng.choice(len(regular), size=extra, p=weight / weight.sum()), minlength=len(regular)
    )
    item_hol = np.repeat(regular, per_hol).astype(np.int32)
    n = len(item_hol)
    item_adm = h["hol_adm"][item_hol] + 1  # ADM doc numbers start at 1
    first = np.flatnonzero(np.r_[True, item_adm[1:] != item_adm[:-1]])
    seq = (np.arange(n) - np.repeat(first, np.diff(np.r_[first, n])) + 1) * 10
    loc = h["hol_loc"][item_hol].astype(np.int16)
    status = np.zeros(n, dtype=np.int8)
    for li, location in enumerate(codes.LOCATIONS):
        rows = np.flatnonzero(loc == li)
        if len(rows):
            options = [ITEM_STATUS_CODES.index(s) for s, _ in location.statuses]
            status[rows] = _by_weights(rng, options, [w for _, w in location.statuses], len(rows))
    process = np.where(rng.random(n) < 0.05, rng.integers(1, len(PROCESS_CODES), n), 0).astype(np.int8)
    barcode = rng.permutation(n).astype(np.int64) + np.where(
        b["bib_lib"][h["hol_bib"][item_hol]] == 0, 1_000_000_000, 2_000_000_000
    )
    hol_sysno = h["hol_sysno"][item_hol].copy()

    picker = DefectPicker.for_entity("items", n, rng)
    # an orphan item is the last of a holding with others left, so no clean holding loses all its items
    last_of_many = np.cumsum(per_hol)[per_hol >= 2] - 1
    rows = picker.pick("orphan_item", defect_count("items", "orphan_item", n), last_of_many)
    hol_sysno[rows] = _deleted(rng, h["hol_gaps"], int(h["hol_sysno"][-1]), len(rows))
    dup = picker.pick("duplicate_barcode", defect_count("items", "duplicate_barcode", n))
    dup = dup[rng.permutation(len(dup))]
    start = 0
    for size in group_sizes(len(dup)):
        barcode[dup[start + 1 : start + size]] = barcode[dup[start]]
        start += size
    barcode[picker.pick("missing_barcode", defect_count("items", "missing_barcode", n))] = -1
    rows = picker.pick("unmapped_location", defect_count("items", "unmapped_location", n))
    loc[rows] = len(codes.LOCATIONS) + rng.integers(0, len(UNMAPPED_LOCATIONS), len(rows))
    rows = picker.pick("unmapped_item_status", defect_count("items", "unmapped_item_status", n))
    status[rows] = len(codes.ITEM_STATUSES) + rng.integers(0, 2, len(rows))
    return {
        "item_hol": item_hol,
        "item_adm": item_adm.astype(np.int32),
        "item_seq": seq.astype(np.int32),
        "item_hol_sysno": hol_sysno,
        "item_loc": loc,
        "item_status": status,
        "item_process": process,
        "item_barcode": barcode,
        "item_defect": picker.codes,
    }


def _adm_only_items(rng: np.random.Generator, i: dict[str, np.ndarray]) -> None:
    """Blank the HOL link of a few clean items, as sites that keep no HOL record for every item
    do: they reach their bib through their ADM record's Z103 link. Each is the first item of a
    holding with at least three, so no holding is left without linked items, even with an orphan.

    Its own random stream, so the rest of the library is drawn as without it."""
    hol, n = i["item_hol"], len(i["item_hol"])
    first = np.flatnonzero(np.r_[True, hol[1:] != hol[:-1]])
    sizes = np.diff(np.r_[first, n])
    pool = first[sizes >= 3]
    pool = pool[i["item_defect"][pool] == 0]
    count = min(len(pool), max(2, round(ADM_ONLY_ITEM_SHARE * n)))
    i["item_hol_sysno"][np.sort(rng.choice(pool, size=count, replace=False))] = 0


def _patrons(rng: np.random.Generator, scale: Scale, as_of: int) -> dict[str, np.ndarray]:
    n = scale.patrons
    profile = codes.BOR_STATUS_PROFILE
    status = _by_weights(rng, list(range(len(profile))), [w for w, _ in profile.values()], n).astype(np.int8)
    years = np.asarray([y for _, y in profile.values()])[status]
    ptype = np.where(rng.random(n) < 0.15, 1, 0).astype(np.int8)
    ptype[status == BOR_STATUS_CODES.index("09")] = 2
    valid_days = (rng.random(n) * years * 365).astype(np.int32) + 1
    expired_days = (rng.random(n) * 3 * 365).astype(np.int32) + 1
    expired = rng.random(n) < EXPIRED_CLEAN_SHARE
    picker = DefectPicker.for_entity("patrons", n, rng)
    primary = np.arange(n, dtype=np.int32)
    dup = picker.pick("duplicate_patron_id", defect_count("patrons", "duplicate_patron_id", n))
    dup = dup[rng.permutation(len(dup))]
    start = 0
    for size in group_sizes(len(dup)):
        primary[dup[start + 1 : start + size]] = dup[start]
        start += size
    rows = picker.pick("unmapped_user_group", defect_count("patrons", "unmapped_user_group", n))
    status[rows] = len(codes.BOR_STATUSES) + rng.integers(0, 2, len(rows))
    rows = picker.pick("expired_patron_with_loans", defect_count("patrons", "expired_patron_with_loans", n))
    expired[picker.codes != 0] = False
    expired[rows] = True
    expiry = np.where(expired, as_of - expired_days, as_of + valid_days).astype(np.int32)
    return {
        "pat_status": status,
        "pat_type": ptype,
        "pat_expiry": expiry,
        "pat_primary": primary,
        "pat_defect": picker.codes,
    }


def _skewed(rng: np.random.Generator, pool: np.ndarray, size: int) -> np.ndarray:
    w = rng.lognormal(0, 1.0, len(pool))
    return pool[rng.choice(len(pool), size=size, p=w / w.sum())]


def _circulation(
    rng: np.random.Generator, scale: Scale, i: dict[str, np.ndarray], p: dict[str, np.ndarray], as_of: int
) -> dict[str, np.ndarray]:
    n_pat, n_adm = len(p["pat_defect"]), int(i["item_adm"].max())
    clean_items = np.flatnonzero(i["item_defect"] == 0)
    loanable_status = [ITEM_STATUS_CODES.index(s) for s in codes.LOANABLE_STATUSES]
    loanable = clean_items[
        np.isin(i["item_status"][clean_items], loanable_status) & (i["item_process"][clean_items] == 0)
    ]
    clean_pat = p["pat_defect"] == 0
    active = np.flatnonzero(clean_pat & (p["pat_expiry"] >= as_of))
    expired_with_loans = np.flatnonzero(
        p["pat_defect"] == defect_code("patrons", "expired_patron_with_loans")
    )
    missing_patron = iter(range(n_pat + 1000, n_pat + 10**6))
    missing_adm = iter(range(n_adm + 1, n_adm + 10**6))

    # loans: each on its own item
    n = scale.loans
    picker = DefectPicker.for_entity("loans", n, rng)
    no_item = picker.pick("loan_missing_item", defect_count("loans", "loan_missing_item", n))
    no_patron = picker.pick("loan_missing_patron", defect_count("loans", "loan_missing_patron", n))
    with_item = np.flatnonzero(picker.codes != defect_code("loans", "loan_missing_item"))
    if len(loanable) < len(with_item):
        raise ValueError(f"{len(loanable)} loanable items cannot carry {len(with_item)} loans")
    loan_item = np.full(n, -1, dtype=np.int32)
    loan_item[with_item] = rng.choice(loanable, size=len(with_item), replace=False)
    loan_adm = np.where(loan_item >= 0, i["item_adm"][loan_item], 0).astype(np.int32)
    loan_adm[no_item] = [next(missing_adm) for _ in no_item]
    loan_patron = _skewed(rng, active, n).astype(np.int32)
    loan_patron[no_patron] = [next(missing_patron) for _ in no_patron]
    clean_loans = picker.clean()
    extra = rng.integers(1, 3, len(expired_with_loans))
    if len(clean_loans) < extra.sum():
        raise ValueError("too few loans for the expired patrons that must have them")
    loan_patron[rng.choice(clean_loans, size=int(extra.sum()), replace=False)] = np.repeat(
        expired_with_loans, extra
    )
    loans = {
        "loan_item": loan_item,
        "loan_adm": loan_adm,
        "loan_patron": loan_patron,
        "loan_defect": picker.codes,
    }

    n = scale.requests
    picker = DefectPicker.for_entity("requests", n, rng)
    no_item = picker.pick("request_missing_item", defect_count("requests", "request_missing_item", n))
    no_patron = picker.pick("request_missing_patron", defect_count("requests", "request_missing_patron", n))
    req_item = _skewed(rng, clean_items, n).astype(np.int32)
    req_item[no_item] = -1
    req_adm = np.where(req_item >= 0, i["item_adm"][req_item], 0).astype(np.int32)
    req_adm[no_item] = [next(missing_adm) for _ in no_item]
    req_patron = _skewed(rng, active, n).astype(np.int32)
    req_patron[no_patron] = [next(missing_patron) for _ in no_patron]
    requests = {
        "req_item": req_item,
        "req_adm": req_adm,
        "req_patron": req_patron,
        "req_defect": picker.codes,
    }

    n = scale.fines
    picker = DefectPicker.for_entity("fines", n, rng)
    no_patron = picker.pick("fine_missing_patron", defect_count("fines", "fine_missing_patron", n))
    fine_patron = _skewed(rng, np.flatnonzero(clean_pat), n).astype(np.int32)
    fine_patron[no_patron] = [next(missing_patron) for _ in no_patron]
    fine_item = np.where(rng.random(n) < 0.8, rng.choice(clean_items, size=n), -1).astype(np.int32)
    fines = {"fine_patron": fine_patron, "fine_item": fine_item, "fine_defect": picker.codes}
    return loans | requests | fines


def build_plan(scale: Scale, seed: int, as_of: date) -> Plan:
    rng = np.random.default_rng(seed)
    day = as_of.toordinal()
    b = _bibs(rng, scale)
    b["bib_defect"] = _bib_defects(rng, b)
    h = _holdings(rng, scale, b)
    i = _items(rng, scale, b, h)
    _adm_only_items(np.random.default_rng([seed, 103]), i)
    p = _patrons(rng, scale, day)
    c = _circulation(rng, scale, i, p, day)
    clean_adm = np.flatnonzero(b["bib_defect"][h["adm_bib"]] == 0) + 1
    order_adm = np.sort(rng.choice(clean_adm, size=scale.orders)).astype(np.int32)
    order_vendor = rng.integers(0, scale.vendors, scale.orders).astype(np.int32)
    arrays = {**b, **h, **i, **p, **c}
    names = {f.name for f in fields(Plan)}
    return Plan(
        seed=seed,
        as_of=day,
        order_adm=order_adm,
        order_vendor=order_vendor,
        vendors=scale.vendors,
        budgets=scale.budgets,
        **{k: v for k, v in arrays.items() if k in names},
    )


_SCALARS = ("seed", "as_of", "vendors", "budgets")


def save_plan(plan: Plan, path: Path) -> None:
    """Write the plan to ``path`` (.npz) for worker processes."""
    arrays = {f.name: getattr(plan, f.name) for f in fields(plan) if f.name not in _SCALARS}
    np.savez(path, scalars=np.asarray([getattr(plan, s) for s in _SCALARS], dtype=np.int64), **arrays)


def load_plan(path: Path) -> Plan:
    with np.load(path) as data:
        values: dict[str, Any] = {name: data[name] for name in data.files if name != "scalars"}
        values.update(zip(_SCALARS, (int(v) for v in data["scalars"]), strict=True))
    return Plan(**values)
