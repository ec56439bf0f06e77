"""The Alma API emulator's data: SQLite tables, Alma-shaped JSON, and the import profiles.

EMULATOR, not Ex Libris Alma. One SQLite file holds bibs (with their 035 other-system
numbers), holdings, items, users (with their unique identifiers), loans, requests and fees.
Ids are shaped like Alma's: a type prefix (99 MMS, 22 holding, 23 item, 71 loan, 72 request,
73 fee), a sequence, and a fake institution suffix ``8521``.

Imports work like Alma import profiles, matching so that a re-import updates:

- :func:`import_bibs`: ISO 2709 → one bib per record, matched on its 035 ``$a`` values
  (``(ALEPH)<library><sysno>``, recorded as other-system numbers);
- :func:`import_holdings`: MARC 21 holdings (ISO 2709) → holdings records on the bib whose 001
  is the record's 004 (Alma rewrites the 004 to the MMS id), matched on the 001, kept in the
  ``originating_system_id`` as Ex Libris' migration names it, ``<sysno>-HOL-<library>``
  (:func:`migrated_holding_id`); the MARCXML in ``anies`` starts with Alma's UTF-16 XML
  declaration; refused (Alma-like reasons) when no bib or more than one has
  that 001, or the 852 has no library (``$b``);
- :func:`import_items`: the transform's items CSV → items attached to the bib whose 035 is
  ``(ALEPH)<bib_library><bib_sysno>``, on the imported holdings record their ``holding_id``
  (the Aleph HOL sysno) names when it is on that bib, else on a holding synthesised per bib +
  library + location (counted apart: ``holdings_synthesised``); matched on barcode; an item
  whose bib is missing is rejected (``no_matching_bib``);
- :func:`import_users`: the transform's ``users.xml`` → users, matched on primary id.

Every method takes the store's lock: one connection serves all threads; SQLite calls are short.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO

import pymarc

from aleph2alma.alma.client_load import read_users_xml

INSTITUTION_SUFFIX = "8521"
PREFIXES = {"mms": "99", "holding": "22", "item": "23", "loan": "71", "request": "72", "fee": "73"}

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS seq (kind TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS bibs (mms_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bib_ids (other_id TEXT PRIMARY KEY, mms_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS bibs_origin ON bibs (json_extract(data, '$.originating_system_id'));
CREATE TABLE IF NOT EXISTS holdings (holding_id TEXT PRIMARY KEY, mms_id TEXT NOT NULL, library TEXT,
    location TEXT, origin TEXT, data TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS holdings_origin ON holdings (origin) WHERE origin IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS holdings_synthesised ON holdings (mms_id, library, location)
    WHERE origin IS NULL;
CREATE INDEX IF NOT EXISTS holdings_bib ON holdings (mms_id);
CREATE TABLE IF NOT EXISTS items (pid TEXT PRIMARY KEY, barcode TEXT UNIQUE, holding_id TEXT NOT NULL,
    data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (primary_id TEXT PRIMARY KEY COLLATE NOCASE, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS user_ids (value TEXT PRIMARY KEY COLLATE NOCASE, id_type TEXT,
    primary_id TEXT NOT NULL COLLATE NOCASE);
CREATE TABLE IF NOT EXISTS loans (loan_id TEXT PRIMARY KEY, primary_id TEXT NOT NULL COLLATE NOCASE,
    item_pid TEXT NOT NULL, status TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS loans_user ON loans (primary_id);
CREATE UNIQUE INDEX IF NOT EXISTS loans_active_item ON loans (item_pid) WHERE status = 'ACTIVE';
CREATE TABLE IF NOT EXISTS requests (request_id TEXT PRIMARY KEY, primary_id TEXT NOT NULL COLLATE NOCASE,
    item_pid TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS requests_user ON requests (primary_id);
CREATE TABLE IF NOT EXISTS fees (fee_id TEXT PRIMARY KEY, primary_id TEXT NOT NULL COLLATE NOCASE,
    data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS fees_user ON fees (primary_id);
CREATE TABLE IF NOT EXISTS renewals (loan_id TEXT NOT NULL, renewed_at TEXT NOT NULL, due_date TEXT NOT NULL);
"""
"""``renewals``: the emulator's own log of renews (Alma keeps only ``last_renew_date`` on a loan), so
that a test can count them."""

COUNTED = ("bibs", "items", "users", "loans", "requests", "fees")
UPGRADE_HOLDINGS = """
ALTER TABLE holdings RENAME TO holdings_v1;
CREATE TABLE holdings (holding_id TEXT PRIMARY KEY, mms_id TEXT NOT NULL, library TEXT, location TEXT,
    origin TEXT, data TEXT NOT NULL);
INSERT INTO holdings (holding_id, mms_id, library, location, data)
    SELECT holding_id, mms_id, library, location, data FROM holdings_v1;
DROP TABLE holdings_v1;
"""
"""A database of an emulator before MARC holdings: every holding was synthesised (no ``origin``)."""


def now_z() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def today_z() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dZ")


class Store:
    """The emulator's SQLite database (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.lock = threading.RLock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        columns = [r[1] for r in self.db.execute("PRAGMA table_info(holdings)")]
        if columns and "origin" not in columns:
            self.db.executescript(UPGRADE_HOLDINGS)
        self.db.executescript(SCHEMA)
        self.db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        with self.lock:
            self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction under the store's lock."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def new_id(self, kind: str) -> str:
        with self.lock:
            row = self.db.execute(
                "INSERT INTO seq VALUES (?, 1) ON CONFLICT (kind) DO UPDATE SET n = n + 1 RETURNING n",
                (kind,),
            ).fetchone()
        return f"{PREFIXES[kind]}{row[0]:011d}{INSTITUTION_SUFFIX}"

    def one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute(sql, args).fetchone()
        return json.loads(row["data"]) if row else None

    def many(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute(sql, args).fetchall()
        return [json.loads(r["data"]) for r in rows]

    def counts(self) -> dict[str, int]:
        with self.lock:
            out = {
                t: self.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED
            }  # fixed names
            out["loans_active"] = self.db.execute(
                "SELECT count(*) FROM loans WHERE status = 'ACTIVE'"
            ).fetchone()[0]
            out["holdings"], out["holdings_synthesised"] = self.db.execute(
                "SELECT count(origin), count(*) - count(origin) FROM holdings"
            ).fetchone()
        return out

    # -- lookups -----------------------------------------------------------------------

    def user(self, identifier: str) -> dict[str, Any] | None:
        """By primary id, else by any unique identifier (Alma's ``user_id_type=all_unique``)."""
        return self.one("SELECT data FROM users WHERE primary_id = ?", identifier) or self.one(
            "SELECT u.data FROM user_ids i JOIN users u ON u.primary_id = i.primary_id WHERE i.value = ?",
            identifier,
        )

    def bib(self, mms_id: str) -> dict[str, Any] | None:
        return self.one("SELECT data FROM bibs WHERE mms_id = ?", mms_id)

    def bibs_by_other_id(self, other_id: str) -> list[dict[str, Any]]:
        return self.many(
            "SELECT b.data FROM bib_ids i JOIN bibs b ON b.mms_id = i.mms_id WHERE i.other_id = ?", other_id
        )

    def holding(self, holding_id: str) -> dict[str, Any] | None:
        """The stored holding (``anies`` with its MARCXML when imported from MARC) plus ``_mms_id``."""
        with self.lock:
            row = self.db.execute(
                "SELECT data, mms_id FROM holdings WHERE holding_id = ?", (holding_id,)
            ).fetchone()
        return {**json.loads(row["data"]), "_mms_id": row["mms_id"]} if row else None

    def holdings_of(self, mms_id: str) -> list[dict[str, Any]]:
        return self.many("SELECT data FROM holdings WHERE mms_id = ? ORDER BY holding_id", mms_id)

    def item_row(self, *, pid: str | None = None, barcode: str | None = None) -> dict[str, Any] | None:
        """The item's ``item_data`` plus ``_mms_id``/``_holding_id``."""
        column, value = ("pid", pid) if pid is not None else ("barcode", barcode)
        with self.lock:
            row = self.db.execute(
                f"SELECT i.data, h.mms_id, h.holding_id FROM items i JOIN holdings h "
                f"ON h.holding_id = i.holding_id WHERE i.{column} = ?",
                (value,),
            ).fetchone()
        if row is None:
            return None
        return {**json.loads(row["data"]), "_mms_id": row["mms_id"], "_holding_id": row["holding_id"]}

    def item_json(self, row: dict[str, Any], base: str) -> dict[str, Any]:
        """An Alma item object: ``bib_data``, ``holding_data``, ``item_data``, ``link``."""
        mms_id, holding_id = row["_mms_id"], row["_holding_id"]
        bib = self.bib(mms_id) or {}
        holding = {k: v for k, v in (self.holding(holding_id) or {}).items() if k != "anies" and k[0] != "_"}
        item_data = {k: v for k, v in row.items() if not k.startswith("_")}
        link = f"{base}/bibs/{mms_id}/holdings/{holding_id}/items/{row['pid']}"
        return {
            "bib_data": {k: bib.get(k) for k in ("mms_id", "title", "author", "network_number")}
            | {"link": f"{base}/bibs/{mms_id}"},
            "holding_data": {**holding, "link": f"{base}/bibs/{mms_id}/holdings/{holding_id}"},
            "item_data": item_data,
            "link": link,
        }

    def set_item(self, db: sqlite3.Connection, pid: str, **changes: Any) -> None:
        row = db.execute("SELECT data FROM items WHERE pid = ?", (pid,)).fetchone()
        db.execute(
            "UPDATE items SET data = ? WHERE pid = ?",
            (json.dumps({**json.loads(row["data"]), **changes}), pid),
        )

    # -- users -------------------------------------------------------------------------

    def save_user(self, user: dict[str, Any], *, replace: bool) -> tuple[dict[str, Any], bool] | str:
        """Insert (or, with ``replace``, update) a user; a conflicting identifier → its description."""
        primary_id = str(user["primary_id"])
        ids = [
            (str(i.get("value") or ""), str((i.get("id_type") or {}).get("value") or ""))
            for i in user.get("user_identifier") or []
        ]
        user = {
            **user,
            "full_name": " ".join(p for p in (user.get("first_name"), user.get("last_name")) if p),
        }
        with self.tx() as db:
            exists = (
                db.execute("SELECT 1 FROM users WHERE primary_id = ?", (primary_id,)).fetchone() is not None
            )
            if exists and not replace:
                return f"User with identifier {primary_id} of type PRIMARYIDENTIFIER already exists."
            for value, id_type in ids:
                owner = db.execute("SELECT primary_id FROM user_ids WHERE value = ?", (value,)).fetchone()
                if value and owner and owner[0].lower() != primary_id.lower():
                    return f"User with identifier {value} of type {id_type} already exists."
            db.execute(
                "INSERT INTO users VALUES (?, ?) ON CONFLICT (primary_id) DO UPDATE SET data = excluded.data",
                (primary_id, json.dumps(user, ensure_ascii=False)),
            )
            db.execute("DELETE FROM user_ids WHERE primary_id = ?", (primary_id,))
            db.executemany("INSERT INTO user_ids VALUES (?, ?, ?)", [(v, t, primary_id) for v, t in ids if v])
        return user, not exists


# -- import profiles ---------------------------------------------------------------------


def _subfield(record: pymarc.Record, tag: str, code: str) -> str:
    for fld in record.get_fields(tag):
        for value in fld.get_subfields(code):
            return str(value).strip(" /:;,.")
    return ""


def import_bibs(store: Store, source: str | Path | BinaryIO) -> dict[str, int]:
    """ISO 2709 (UTF-8) → bibs, matched on 035 ``$a``; returns created/updated/rejected counts."""
    counts = {"created": 0, "updated": 0, "rejected": 0}
    fh: BinaryIO = open(source, "rb") if isinstance(source, str | Path) else source  # closed below
    try:
        for record in pymarc.MARCReader(fh, to_unicode=True, force_utf8=True, permissive=True):
            if record is None:
                counts["rejected"] += 1
                continue
            other_ids = [
                str(v).strip() for f in record.get_fields("035") for v in f.get_subfields("a") if v.strip()
            ]
            cnmarc = bool(record.get_fields("200")) and not record.get_fields("245")
            bib: dict[str, Any] = {
                "record_format": "cnmarc" if cnmarc else "marc21",
                "title": _subfield(record, "200", "a") if cnmarc else _subfield(record, "245", "a"),
                "author": _subfield(record, "200", "f") if cnmarc else _subfield(record, "100", "a"),
                "network_number": other_ids,
                "originating_system_id": (record["001"].data if record["001"] else ""),
            }
            with store.tx() as db:
                found = next(
                    (
                        r[0]
                        for oid in other_ids
                        for r in [
                            db.execute("SELECT mms_id FROM bib_ids WHERE other_id = ?", (oid,)).fetchone()
                        ]
                        if r
                    ),
                    None,
                )
                mms_id = found or store.new_id("mms")
                bib = {"mms_id": mms_id, **bib, "created_date": today_z()}
                db.execute(
                    "INSERT INTO bibs VALUES (?, ?) ON CONFLICT (mms_id) DO UPDATE SET data = excluded.data",
                    (mms_id, json.dumps(bib, ensure_ascii=False)),
                )
                db.executemany(
                    "INSERT OR REPLACE INTO bib_ids VALUES (?, ?)", [(o, mms_id) for o in other_ids]
                )
            counts["updated" if found else "created"] += 1
    finally:
        if fh is not source:
            fh.close()
    return counts


def _holding_refusal(db: sqlite3.Connection, record: pymarc.Record) -> tuple[str, str] | None:
    """(reason, Alma-like message) when Alma would not load the holdings record, else None."""
    bib_ref = record["004"].data.strip() if record["004"] and record["004"].data else ""
    if not bib_ref:
        return "no_bib_link", "The holdings record has no 004 linking it to a bibliographic record."
    bibs = _bibs_with_001(db, bib_ref)
    if not bibs:
        return "no_matching_bib", f"No bibliographic record with 001 {bib_ref} (the holdings record's 004)."
    if len(bibs) > 1:
        return "ambiguous_bib_link", (
            f"The holdings record's 004 {bib_ref} matches {len(bibs)} bibliographic "
            f"records ({', '.join(bibs)})."
        )
    if not _subfield(record, "852", "b"):
        return "no_library", "The holdings record has no 852 $b (library)."
    return None


def _bibs_with_001(db: sqlite3.Connection, control_number: str) -> list[str]:
    rows = db.execute(
        "SELECT mms_id FROM bibs WHERE json_extract(data, '$.originating_system_id') = ?", (control_number,)
    ).fetchall()
    return [r[0] for r in rows]


ANIES_DECLARATION = '<?xml version="1.0" encoding="UTF-16"?>'
"""What Alma's MARCXML in ``anies`` starts with, although it travels as text in a JSON string."""


def migrated_holding_id(record: pymarc.Record) -> str:
    """``originating_system_id`` as Ex Libris' migration gives it: ``<sysno>-HOL-<library>``, the
    library taken from the ``(ALEPH)<library><sysno>`` 035; the bare 001 when there is none."""
    sysno = (record["001"].data or "").strip()
    for value in (str(v).strip() for f in record.get_fields("035") for v in f.get_subfields("a")):
        if value.startswith("(ALEPH)") and value.endswith(sysno) and len(value) > len(sysno) + 7:
            return f"{sysno}-HOL-{value[7 : -len(sysno)]}"
    return sysno


def holding_data(holding_id: str, record: pymarc.Record, mms_id: str) -> dict[str, Any]:
    """An Alma holding object of a MARC holdings record; its 004 becomes the MMS id, as in Alma.

    ``anies`` holds the MARCXML as Alma sends it: its own XML declaration (UTF-16) first.
    """
    from aleph2alma.marc.holdings import call_number

    record["004"].data = mms_id
    f852 = next(iter(record.get_fields("852")), None)
    return {
        "holding_id": holding_id,
        "originating_system": "ALEPH",
        "originating_system_id": migrated_holding_id(record),
        "library": {"value": _subfield(record, "852", "b")},
        "location": {"value": _subfield(record, "852", "c")},
        "call_number": call_number(f852) if f852 else "",
        "suppress_from_publishing": "false",
        "created_date": today_z(),
        "anies": [ANIES_DECLARATION + pymarc.record_to_xml(record).decode("utf-8")],
    }


def _refuse(counts: dict[str, Any], record_id: str, reason: str, message: str) -> None:
    counts["rejected"] += 1
    counts["rejected_by_reason"][reason] = counts["rejected_by_reason"].get(reason, 0) + 1
    counts["rejected_records"].append([record_id, message])


def import_holdings(store: Store, source: str | Path | BinaryIO) -> dict[str, Any]:
    """MARC 21 holdings (ISO 2709) → holdings on the bib their 004 names, matched on the 001."""
    counts: dict[str, Any] = {
        "created": 0,
        "updated": 0,
        "rejected": 0,
        "rejected_by_reason": {},
        "rejected_records": [],
    }
    fh: BinaryIO = open(source, "rb") if isinstance(source, str | Path) else source  # closed below
    try:
        for n, record in enumerate(
            pymarc.MARCReader(fh, to_unicode=True, force_utf8=True, permissive=True), 1
        ):
            origin = (record["001"].data or "").strip() if record is not None and record["001"] else ""
            if record is None or not origin:
                _refuse(
                    counts,
                    f"record {n}",
                    "unreadable" if record is None else "no_001",
                    "The record cannot be read." if record is None else "The holdings record has no 001.",
                )
                continue
            with store.tx() as db:
                refusal = _holding_refusal(db, record)
                if refusal is not None:
                    _refuse(counts, origin, *refusal)
                    continue
                mms_id = _bibs_with_001(db, record["004"].data.strip())[0]
                old = db.execute("SELECT holding_id FROM holdings WHERE origin = ?", (origin,)).fetchone()
                data = holding_data(old[0] if old else store.new_id("holding"), record, mms_id)
                db.execute(
                    "INSERT INTO holdings VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (holding_id) DO UPDATE SET "
                    "mms_id = excluded.mms_id, library = excluded.library, location = excluded.location, "
                    "data = excluded.data",
                    (
                        data["holding_id"],
                        mms_id,
                        data["library"]["value"],
                        data["location"]["value"],
                        origin,
                        json.dumps(data, ensure_ascii=False),
                    ),
                )
            counts["updated" if old else "created"] += 1
    finally:
        if fh is not source:
            fh.close()
    return counts


def _item_holding(
    store: Store, db: sqlite3.Connection, mms_id: str, row: dict[str, str], library: str, location: str
) -> str:
    """The imported holdings record the item's HOL sysno names on its bib, else a synthesised one."""
    hol = (row.get("holding_id") or "").strip()
    if hol:
        found = db.execute(
            "SELECT holding_id FROM holdings WHERE origin = ? AND mms_id = ?",
            (hol.zfill(9) if hol.isdigit() else hol, mms_id),
        ).fetchone()
        if found:
            return str(found[0])
    found = db.execute(
        "SELECT holding_id FROM holdings WHERE mms_id = ? AND library = ? AND location = ? "
        "AND origin IS NULL",
        (mms_id, library, location),
    ).fetchone()
    if found:
        return str(found[0])
    holding_id = store.new_id("holding")
    data = {
        "holding_id": holding_id,
        "call_number": row.get("call_number") or "",
        "call_number_type": {"value": row.get("call_number_type") or ""},
        "library": {"value": library},
        "location": {"value": location},
    }
    db.execute(
        "INSERT INTO holdings VALUES (?, ?, ?, ?, NULL, ?)",
        (holding_id, mms_id, library, location, json.dumps(data, ensure_ascii=False)),
    )
    return holding_id


_ITEM_TEXT = (
    "barcode",
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
    "alternative_call_number",
    "creation_date",
    "modification_date",
)


def import_items(store: Store, source: str | Path | IO[str]) -> dict[str, Any]:
    """The items CSV (``ITEM_COLUMNS``) → items on the bibs their ``bib_library``+``bib_sysno`` name."""
    counts: dict[str, Any] = {
        "created": 0,
        "updated": 0,
        "rejected": 0,
        "rejected_by_reason": {},
        "rejected_records": [],
    }
    fh = (
        open(source, encoding="utf-8", newline="") if isinstance(source, str | Path) else source
    )  # closed below
    try:
        for row in csv.DictReader(fh):
            sysno = (row.get("bib_sysno") or "").strip()
            bib_library = (row.get("bib_library") or "").strip()
            other_id = f"(ALEPH){bib_library}{sysno.zfill(9) if sysno.isdigit() else sysno}"
            barcode = (row.get("barcode") or "").strip() or None
            with store.tx() as db:
                hit = db.execute("SELECT mms_id FROM bib_ids WHERE other_id = ?", (other_id,)).fetchone()
                if hit is None:
                    counts["rejected"] += 1
                    counts["rejected_by_reason"]["no_matching_bib"] = (
                        counts["rejected_by_reason"].get("no_matching_bib", 0) + 1
                    )
                    counts["rejected_records"].append(
                        [barcode or row.get("aleph_item_key", ""), f"no bib with 035 {other_id}"]
                    )
                    continue
                library, location = row.get("library") or "", row.get("location") or ""
                holding_id = _item_holding(store, db, hit[0], row, library, location)
                old = (
                    db.execute("SELECT pid FROM items WHERE barcode = ?", (barcode,)).fetchone()
                    if barcode
                    else None
                )
                pid = old[0] if old else store.new_id("item")
                item = {
                    "pid": pid,
                    **{k: (row.get(k) or "").strip() for k in _ITEM_TEXT},
                    "barcode": barcode or "",
                    "base_status": {"value": "1", "desc": "Item in place"},
                    "physical_material_type": {"value": row.get("material_type") or ""},
                    "policy": {"value": row.get("item_policy") or ""},
                    "process_type": {"value": row.get("process_type") or ""},
                    "library": {"value": library},
                    "location": {"value": location},
                }
                db.execute(
                    "INSERT INTO items VALUES (?, ?, ?, ?) ON CONFLICT (pid) DO UPDATE SET "
                    "holding_id = excluded.holding_id, data = excluded.data",
                    (pid, barcode, holding_id, json.dumps(item, ensure_ascii=False)),
                )
            counts["updated" if old else "created"] += 1
    finally:
        if fh is not source:
            fh.close()
    return counts


def import_users(store: Store, source: str | Path | IO[bytes], external_id: str = "") -> dict[str, int]:
    """The transform's ``users.xml`` → users (updated when the primary id exists)."""
    counts = {"created": 0, "updated": 0, "rejected": 0}
    for user in read_users_xml(str(source) if isinstance(source, Path) else source, external_id):
        if not user.get("primary_id"):
            counts["rejected"] += 1
            continue
        result = store.save_user(user, replace=True)
        if isinstance(result, str):
            counts["rejected"] += 1
        else:
            counts["created" if result[1] else "updated"] += 1
    return counts


def return_item(store: Store, pid: str, circ_desk: str) -> dict[str, Any] | None:
    """Scan-in of an item on loan: its active loan becomes COMPLETE (``return_date``,
    ``return_circ_desk``) and the item is in place again; the closed loan, or None when the item
    was not on loan (nothing changes)."""
    with store.tx() as db:
        row = db.execute(
            "SELECT loan_id, data FROM loans WHERE item_pid = ? AND status = 'ACTIVE'", (pid,)
        ).fetchone()
        if row is None:
            return None
        loan = {
            **json.loads(row["data"]),
            "loan_status": "COMPLETE",
            "return_date": now_z(),
            "return_circ_desk": {"value": circ_desk},
        }
        db.execute(
            "UPDATE loans SET status = 'COMPLETE', data = ? WHERE loan_id = ?",
            (json.dumps(loan, ensure_ascii=False), row["loan_id"]),
        )
        store.set_item(
            db,
            pid,
            base_status={"value": "1", "desc": "Item in place"},
            process_type={"value": ""},
        )
    return loan


def renew_loan(store: Store, primary_id: str, loan_id: str, loan_days: int) -> dict[str, Any] | None:
    """Renew the user's active loan: the due date moves ``loan_days`` past the later of now and the
    current due date (so every renew extends it), ``last_renew_date`` is now, ``process_status``
    RENEW; logged in ``renewals``. None when the user has no such active loan."""
    with store.tx() as db:
        row = db.execute(
            "SELECT data FROM loans WHERE loan_id = ? AND primary_id = ? AND status = 'ACTIVE'",
            (loan_id, primary_id),
        ).fetchone()
        if row is None:
            return None
        loan = json.loads(row["data"])
        now = datetime.now(UTC)
        try:
            due = datetime.fromisoformat(str(loan.get("due_date") or "").replace("Z", "+00:00"))
        except ValueError:
            due = now
        start = max(now, due if due.tzinfo else due.replace(tzinfo=UTC))
        new_due = (start + timedelta(days=loan_days)).replace(hour=23, minute=59, second=0, microsecond=0)
        loan |= {
            "due_date": new_due.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "last_renew_date": now_z(),
            "process_status": "RENEW",
        }
        db.execute(
            "UPDATE loans SET data = ? WHERE loan_id = ?", (json.dumps(loan, ensure_ascii=False), loan_id)
        )
        db.execute(
            "INSERT INTO renewals VALUES (?, ?, ?)", (loan_id, loan["last_renew_date"], loan["due_date"])
        )
    return loan


def default_due_date(days: int) -> str:
    """A policy due date: ``days`` from now at 23:59 UTC."""
    due = (datetime.now(UTC) + timedelta(days=days)).replace(hour=23, minute=59, second=0, microsecond=0)
    return due.strftime("%Y-%m-%dT%H:%M:%SZ")


def text_stream(data: bytes) -> IO[str]:
    return io.StringIO(data.decode("utf-8-sig"))
