"""The demo library's offline circulation: what two desks recorded during the fulfillment freeze.

Deterministic (scale, seed, as_of): drawn from the demo library's plan (:mod:`.plan`), so the
patrons and items are the generated library's. Patrons are named by their barcode (Z308 key type
01, what a desk scans: ``8000000000 + n``), items by their barcode. The freeze runs ``days`` days
from ``as_of`` (the snapshot day); times are local (Asia/Shanghai), desks open 08:00-22:00.

What the file holds (:data:`MIX`), mostly returns and loans, some renewals:

- returns of items on loan in the snapshot (the patron column left empty, as a desk scans the
  item only);
- new loans of items on the shelf to active patrons, some returned or renewed later in the file;
- renewals of loans from the snapshot;
- one item returned and lent again to another patron in the same second at the same desk (the
  return's line first: equal times keep the file's order);
- the rows of desk ``BNUZG-CIRC`` (English action words) first, then those of ``BNUZH-CIRC``
  (Chinese words: 借出, 归还, 续借): the file as a whole is not in time order.

Malformed rows (:data:`MALFORMED`, one of each, spread through the file; every one is rejected
with this reason): ``bad_time`` (day 32), ``unknown_action`` (预约, a hold, no circulation action),
``missing_item_barcode`` (a loan without barcode), ``missing_patron_id`` (a loan and a renewal
without patron: two rows), ``bad_field_count`` (a note typed into a sixth field).

On an Alma that holds the snapshot's patrons, items and the loans the file names
(:attr:`OfflineCircDemo.snapshot_loans`), every valid transaction applies:
:func:`expected_counts`.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from aleph2alma.postlive.settings import CircDesk, OfflineCircSettings
from aleph2alma_dev.demo import codes
from aleph2alma_dev.demo.plan import ITEM_STATUS_CODES, SCALES, build_plan

HEADER = ("time", "circ_desk", "action", "patron_id", "item_barcode")
DESKS = {"BNUZG-CIRC": CircDesk("BNUZG"), "BNUZH-CIRC": CircDesk("BNUZH")}
WORDS = {
    "BNUZG-CIRC": {"loan": "loan", "return": "return", "renew": "renew"},
    "BNUZH-CIRC": {"loan": "借出", "return": "归还", "renew": "续借"},
}
MIX = {"old_returns": 40, "old_renewals": 10, "new_loans": 40, "new_returned": 10, "new_renewed": 5}
"""Transactions of each kind (the same-second return + loan comes on top)."""
MALFORMED = {
    "bad_time": 1,
    "unknown_action": 1,
    "missing_item_barcode": 1,
    "missing_patron_id": 2,
    "bad_field_count": 1,
}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
TIME_ZONE = "Asia/Shanghai"


def patron_barcode(idx: int) -> str:
    """The patron's Z308 key type 01 value (``rows.patrons``), the barcode a desk scans."""
    return str(8_000_000_000 + idx + 1)


def demo_settings() -> OfflineCircSettings:
    """The ``[post_go_live.offline_circulation]`` settings that read the demo file."""
    return OfflineCircSettings(time_format=TIME_FORMAT, time_zone=TIME_ZONE, desks=dict(DESKS))


@dataclass(frozen=True)
class OfflineCircDemo:
    """The file, and what Alma must hold for it to apply in full."""

    data: bytes
    snapshot_loans: tuple[tuple[str, str], ...]  # (patron barcode, item barcode) on loan before the upload
    patrons: tuple[str, ...]  # patron barcodes the file names
    items: tuple[str, ...]  # item barcodes the file names
    counts: dict[str, Any]


def _pools(scale: str, seed: int, as_of: date) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(snapshot loans, items on the shelf, active patrons) of the demo library, all clean."""
    plan = build_plan(SCALES[scale], seed, as_of)
    n_pat = len(plan.pat_defect)
    active = (plan.pat_defect == 0) & (plan.pat_expiry >= plan.as_of)
    barcodes = plan.item_barcode
    clean_item = (plan.item_defect == 0) & (barcodes >= 0)
    loans = [
        (patron_barcode(int(p)), str(int(barcodes[i])))
        for i, p, d in zip(
            plan.loan_item.tolist(), plan.loan_patron.tolist(), plan.loan_defect.tolist(), strict=True
        )
        if d == 0 and i >= 0 and p < n_pat and active[p] and clean_item[i]
    ]
    loanable = np.isin(plan.item_status, [ITEM_STATUS_CODES.index(s) for s in codes.LOANABLE_STATUSES])
    on_loan = set(plan.loan_item.tolist())
    shelf = [
        str(int(barcodes[i]))
        for i in np.flatnonzero(clean_item & loanable & (plan.item_process == 0)).tolist()
        if i not in on_loan
    ]
    patrons = [patron_barcode(int(p)) for p in np.flatnonzero(active).tolist()]
    return loans, shelf, patrons


def offline_circulation(
    scale: str = "tiny", seed: int = 1, as_of: date = date(2026, 11, 1), days: int = 3
) -> OfflineCircDemo:
    """The demo's offline circulation file (UTF-8 CSV, ``HEADER``) and what it needs of Alma."""
    rng = random.Random(f"{seed}:offline_circ")
    loans, shelf, patrons = _pools(scale, seed, as_of)
    need_old = MIX["old_returns"] + MIX["old_renewals"] + 1
    if len(loans) < need_old or len(shelf) < MIX["new_loans"] + 1:
        raise ValueError(f"the {scale} demo library has too few clean loans or shelved items for the file")
    old = rng.sample(loans, need_old)
    fresh = rng.sample(shelf, MIX["new_loans"])
    opened = datetime.combine(as_of, time(8))
    span = days * 24 * 3600

    def at(lo: float = 0.0, hi: float = 1.0) -> datetime:
        """A time while the desks are open, within [lo, hi] of the freeze."""
        while True:
            moment = opened + timedelta(seconds=int(span * rng.uniform(lo, hi)))
            if 8 <= moment.hour < 22:
                return moment

    rows: list[tuple[datetime, str, str, str, str]] = []  # (time, desk, action, patron, barcode)

    def desk() -> str:
        return rng.choice(list(DESKS))

    for _, barcode in old[: MIX["old_returns"]]:
        rows.append((at(), desk(), "return", "", barcode))
    for patron, barcode in old[MIX["old_returns"] : need_old - 1]:
        rows.append((at(), desk(), "renew", patron, barcode))
    for n, barcode in enumerate(fresh):
        patron, when = rng.choice(patrons), at(0.0, 0.6)
        rows.append((when, desk(), "loan", patron, barcode))
        if n < MIX["new_returned"]:
            rows.append((at(0.65, 1.0), desk(), "return", "", barcode))
        elif n < MIX["new_returned"] + MIX["new_renewed"]:
            rows.append((at(0.65, 1.0), desk(), "renew", patron, barcode))
    _, relent = old[-1]  # returned and lent again in the same second
    when, borrower = at(), rng.choice(patrons)
    rows += [(when, "BNUZG-CIRC", "return", "", relent), (when, "BNUZG-CIRC", "loan", borrower, relent)]

    lines = [
        [t.strftime(TIME_FORMAT), d, WORDS[d][a], p, b]
        for d in DESKS
        for t, _, a, p, b in sorted((r for r in rows if r[1] == d), key=lambda r: r[0])
    ]
    day = opened.strftime("%Y-%m")
    spare_patron = rng.choice(patrons)
    bad = [
        [f"{day}-32 10:15:00", "BNUZG-CIRC", "return", "", fresh[0]],
        [at().strftime(TIME_FORMAT), "BNUZH-CIRC", "预约", spare_patron, shelf[-1]],
        [at().strftime(TIME_FORMAT), "BNUZG-CIRC", "loan", spare_patron, ""],
        [at().strftime(TIME_FORMAT), "BNUZG-CIRC", "loan", "", shelf[-1]],
        [at().strftime(TIME_FORMAT), "BNUZH-CIRC", "续借", "", old[0][1]],
        [at().strftime(TIME_FORMAT), "BNUZG-CIRC", "loan", spare_patron, shelf[-1], "读者说明天再来"],
    ]
    for row in bad:  # spread through the file
        lines.insert(rng.randrange(len(lines) + 1), row)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows(lines)

    actions = {a: sum(1 for r in rows if r[2] == a) for a in ("loan", "return", "renew")}
    counts = {
        "rows": len(lines),
        "transactions": len(rows),
        "actions": actions,
        "rejected_input": dict(MALFORMED),
    }
    return OfflineCircDemo(
        out.getvalue().encode("utf-8"),
        tuple(old),
        tuple(sorted({r[3] for r in rows if r[3]})),
        tuple(sorted({r[4] for r in rows})),
        counts,
    )


def expected_counts(
    scale: str = "tiny", seed: int = 1, as_of: date = date(2026, 11, 1), days: int = 3
) -> dict:
    """What an upload of the file gives on an Alma holding :attr:`OfflineCircDemo.snapshot_loans`:
    rows, input rejects by reason, and every valid transaction applied (per action)."""
    counts = offline_circulation(scale, seed, as_of, days).counts
    return {
        "records_in": counts["rows"],
        "records_out": counts["transactions"],
        "rejected_input": counts["rejected_input"],
        "applied": counts["actions"],
    }


def write_offline_circulation(path: Path, **kwargs: Any) -> dict[str, Any]:
    """Write the file to ``path``; returns its counts."""
    demo = offline_circulation(**kwargs)
    Path(path).write_bytes(demo.data)
    return demo.counts
