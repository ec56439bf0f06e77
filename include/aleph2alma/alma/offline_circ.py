"""Offline circulation: the loans, returns and renewals desks recorded during the fulfillment freeze,
applied to Alma after go-live, in time order.

During the freeze the desks keep lending on paper or in a spreadsheet; after go-live every
transaction must reach Alma once, in the order it happened (a return before the next loan of the
same item). The input is one or more CSV files (``time``, circulation desk, action, patron id,
item barcode); their layout is :class:`OfflineCircSettings`, the ``[post_go_live.offline_circulation]``
table. Each row goes through Alma's REST API (Ex Libris Developer Network, Alma REST APIs):

- loan: ``POST /almaws/v1/users/{user_id}/loans?item_barcode=…`` with ``circ_desk`` and
  ``library`` (Users > Loans, "Create user loan"; :meth:`AlmaClient.ensure_loan`);
- return: the item by ``GET /almaws/v1/items?item_barcode=…``, then the scan-in
  ``POST /almaws/v1/bibs/{mms_id}/holdings/{holding_id}/items/{item_pid}?op=scan&library=…&circ_desk=…``
  (Bibs > Items, "Scan-in operation on an item"; :meth:`AlmaClient.scan_in_item`);
- renew: the patron's loan of the item (``GET /users/{user_id}/loans``), then
  ``POST /almaws/v1/users/{user_id}/loans/{loan_id}?op=renew`` (Users > Loans, "Renew loan";
  :meth:`AlmaClient.renew_loan`).

``user_id`` is what the desk scanned (usually the patron's barcode): Alma resolves any unique
identifier. Alma stamps a loan made through the API with the call's time and sets the due date by
policy (``rest_item_loan.xsd``: ``loan_date`` is output only), so the offline time orders the
transactions but does not travel; returns and renewals likewise happen "now" in Alma.

**Errors.** A row that cannot be read (bad time, unknown action word, no barcode, no patron on a
loan or renew, an unknown desk, a wrong number of fields, undecodable bytes, a broken quote) is a
reject with the file, its line and the reason, counted; the file goes on. A file whose header
lacks a configured column is :class:`OfflineCircFileError`: nothing is applied. A transaction Alma
refuses is a reject ``alma_<errorCode>`` with Alma's message (as :mod:`~aleph2alma.alma.client_load` does);
quota, key and outage errors stop the upload (``FATAL``): the task fails and its retry resumes.

**Once only.** Every transaction has a stable id: sha256 of its normalised content (UTC time,
action, desk, patron, barcode) and its ordinal among identical rows (32 hex digits of it). A
:class:`Checkpoint` in the artifact store holds the outcome of every finished transaction (about
50 bytes each, the whole object rewritten each time); it is written every
``checkpoint_every`` transactions, at the end, and whenever a transaction touches an item already
touched since the last write, so between two writes every item appears once at most. A retry skips
what the checkpoint names (and counts it as before) and checks Alma's state for the rest, which
covers the window between applying and checkpointing:

- loan: the patron's active loan of the item is found, not made again (``ensure_loan``);
- return: an item not on loan is "already returned" (``already_applied``), not scanned again;
- renew: the one write that changes what is already there. Before the call its *intent* (the
  loan's ``due_date`` and ``last_renew_date`` as they were) is written to the checkpoint; on a
  retry a loan whose dates differ from the intent's has been renewed (``already_applied``). A renew
  Alma answered without changing either date would be sent again (unverified whether Alma ever
  does that). A renew of an item the patron has no active loan of is refused, ``no_active_loan``.

Ids are scoped by the checkpoint's key (the run, :meth:`Checkpoint.for_run`): uploading the same
file again in another run is guarded by the state checks alone, so renewals would be repeated.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import zoneinfo
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aleph2alma.accounting import Tally
from aleph2alma.alma.client import AlmaApiError
from aleph2alma.alma.client_load import FATAL
from aleph2alma.errors import PermanentError
from aleph2alma.postlive.settings import ACTIONS, Action, OfflineCircSettings
from aleph2alma.rejects import Reject, RejectLog

if TYPE_CHECKING:
    from aleph2alma.alma.client import AlmaClient
    from aleph2alma.storage import RunScope

log = logging.getLogger(__name__)

ENTITY = "offline_circulation"
CHECKPOINT_NAME = "checkpoint.json"
CHECKPOINT_VERSION = 1
NO_ACTIVE_LOAN = "no_active_loan"


class OfflineCircFileError(PermanentError, ValueError):
    """A file cannot be read as offline circulation at all (its header lacks a configured column)."""


class CheckpointError(PermanentError, ValueError):
    """The checkpoint in the artifact store is not one this module wrote."""


@dataclass(frozen=True)
class Transaction:
    """One valid row: what a desk did, when (UTC), where it came from, and its stable id."""

    txn_id: str
    time: datetime
    action: Action
    desk: str  # as the file names it
    library: str
    circ_desk: str
    patron_id: str
    item_barcode: str
    source: str
    line_no: int


@dataclass
class Parsed:
    """The transactions of every file, in time order (file order for equal times), and what was rejected."""

    transactions: list[Transaction] = field(default_factory=list)
    rows: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


class _Bad(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _records(
    data: bytes, source: str, settings: OfflineCircSettings
) -> Iterable[tuple[int, list[str], str, _Bad | None]]:
    """(first line, fields, raw text, problem) of every CSV record; lines decoded one by one, so
    that bytes of another encoding spoil their own line only."""
    raw_lines = data.splitlines(keepends=True)
    lines: list[str] = []
    bad: set[int] = set()
    for n, raw in enumerate(raw_lines, 1):
        try:
            lines.append(raw.decode(settings.encoding))
        except UnicodeDecodeError:
            bad.add(n)
            lines.append(raw.decode(settings.encoding, "replace"))
    reader = csv.reader(iter(lines), delimiter=settings.delimiter, strict=True)
    end = 0
    while True:
        start = end + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            end = max(reader.line_num, start)
            yield start, [], "".join(lines[start - 1 : end]).rstrip("\r\n"), _Bad("bad_csv", str(exc))
            continue
        end = reader.line_num
        text = "".join(lines[start - 1 : end]).rstrip("\r\n")
        undecodable = bad.intersection(range(start, end + 1))
        problem = _Bad("undecodable", f"bytes that are not {settings.encoding}") if undecodable else None
        yield start, fields, text, problem


def _parse_file(
    source: str, data: bytes, settings: OfflineCircSettings, rejects: RejectLog, parsed: Parsed
) -> list[tuple[tuple[str, ...], Transaction]]:
    words = {w.casefold(): a for a, ws in settings.actions.items() for w in ws}
    zone = zoneinfo.ZoneInfo(settings.time_zone)
    names = (
        settings.time_column,
        settings.desk_column,
        settings.action_column,
        settings.patron_column,
        settings.barcode_column,
    )
    header: list[str] | None = None
    index: list[int] = []
    out: list[tuple[tuple[str, ...], Transaction]] = []
    for line_no, fields, raw, problem in _records(data, source, settings):
        if header is None:
            if not any(f.strip() for f in fields):
                continue
            header = [f.strip().lstrip("\ufeff") for f in fields]
            missing = [n for n in names if n not in header]
            if missing:
                raise OfflineCircFileError(
                    f"{source} line {line_no}: no column {', '.join(map(repr, missing))}; the header has "
                    f"{', '.join(map(repr, header))} (delimiter {settings.delimiter!r}); set the "
                    "[post_go_live.offline_circulation] *_column keys to the file's headers"
                )
            index = [header.index(n) for n in names]
            continue
        if problem is None and not any(f.strip() for f in fields):
            continue  # a blank line
        parsed.rows += 1
        barcode = fields[index[4]].strip() if len(fields) == len(header) else ""
        try:
            if problem is not None:
                raise problem
            key, txn = _transaction(fields, len(header), index, words, zone, settings)
        except _Bad as bad:
            parsed.rejected[bad.reason] += 1
            rejects.add(
                Reject(ENTITY, barcode or f"{source}:{line_no}", bad.reason, bad.detail, source, line_no, raw)
            )
            continue
        out.append((key, replace(txn, source=source, line_no=line_no)))
    return out


def _transaction(
    fields: list[str],
    width: int,
    index: list[int],
    words: dict[str, Action],
    zone: zoneinfo.ZoneInfo,
    settings: OfflineCircSettings,
) -> tuple[tuple[str, ...], Transaction]:
    """(normalised content, transaction without id/source) of one row, or ``_Bad``."""
    if len(fields) != width:
        raise _Bad("bad_field_count", f"{len(fields)} fields, the header has {width}")
    when, desk_name, word, patron, barcode = (fields[i].strip() for i in index)
    if not when:
        raise _Bad("missing_time")
    try:
        parsed = datetime.strptime(when, settings.time_format)
        at = (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise _Bad("bad_time", f"{when!r} does not match {settings.time_format!r}: {exc}") from None
    if not word:
        raise _Bad("missing_action")
    action = words.get(word.casefold())
    if action is None:
        known = ", ".join(repr(w) for ws in settings.actions.values() for w in ws)
        raise _Bad("unknown_action", f"{word!r} is none of {known}")
    if not desk_name:
        raise _Bad("missing_circ_desk")
    desk = settings.desk(desk_name)
    if desk is None:
        raise _Bad("unknown_circ_desk", f"{desk_name!r} is not in [post_go_live.offline_circulation.desks]")
    if not barcode:
        raise _Bad("missing_item_barcode")
    if not patron and action != "return":
        raise _Bad("missing_patron_id", f"a {action} needs the patron")
    key = (at.isoformat(), action, desk_name, patron, barcode)
    return key, Transaction("", at, action, desk_name, desk.library, desk.circ_desk, patron, barcode, "", 0)


def read_transactions(
    files: Iterable[tuple[str, bytes]], settings: OfflineCircSettings, rejects: RejectLog
) -> Parsed:
    """Every valid row of ``files`` (name, bytes) as a :class:`Transaction`, sorted by time (stable:
    file order, then line order, for equal times); every other row a reject with its line."""
    parsed = Parsed()
    rows: list[tuple[tuple[str, ...], Transaction]] = []
    for source, data in files:
        rows.extend(_parse_file(source, data, settings, rejects, parsed))
    seen: Counter[tuple[str, ...]] = Counter()
    for key, txn in rows:
        ordinal = seen[key]
        seen[key] += 1
        digest = hashlib.sha256("\x1f".join((*key, str(ordinal))).encode()).hexdigest()[:32]
        parsed.transactions.append(replace(txn, txn_id=digest))
    parsed.transactions.sort(key=lambda t: t.time)
    return parsed


# -- checkpoint ----------------------------------------------------------------------------


class ObjectStore(Protocol):
    """What the checkpoint needs of :class:`~aleph2alma.storage.ArtifactStore`."""

    def put_bytes(self, key: str, data: bytes, *, content_type: str = ...) -> object: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...


Outcome = Literal["applied", "already_applied", "refused"]
Done = tuple[Outcome, str, str]
"""A transaction's outcome, and for a refusal the code (Alma's, or ``no_active_loan``) and message."""


@dataclass
class Checkpoint:
    """The outcome of every finished transaction, and the renew intents, in one JSON object.

    ``done``: transaction id → ``"applied"``, ``"already_applied"`` or ``["refused", code,
    message]`` (a retry counts and rejects it again without asking Alma). ``renew_intents``:
    transaction id → the loan's ``loan_id``, ``due_date`` and ``last_renew_date`` before the renew
    was sent. Written whole each time (overwrite, never append).
    """

    store: ObjectStore
    key: str
    done: dict[str, Any] = field(default_factory=dict)
    renew_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: int = 0

    @classmethod
    def for_run(cls, store: ObjectStore, scope: RunScope) -> Checkpoint:
        """The run's checkpoint (``<run>/offline_circ/applied/checkpoint.json``), read if there is one."""
        return cls(store, scope.prefix("offline_circ", "applied") + CHECKPOINT_NAME).load()

    @classmethod
    def for_migration(cls, store: ObjectStore, migration_id: str) -> Checkpoint:
        """The migration's checkpoint (``<migration>/state/offline_circulation/checkpoint.json``):
        a file uploaded again in a later run finds its transactions done and applies none twice."""
        return cls(store, f"{migration_id}/state/{ENTITY}/{CHECKPOINT_NAME}").load()

    def load(self) -> Checkpoint:
        if not self.store.exists(self.key):
            return self
        try:
            data = json.loads(self.store.get_bytes(self.key))
            if data.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {CHECKPOINT_VERSION}")
            done, intents = dict(data["done"]), dict(data["renew_intents"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"checkpoint {self.key} is not an offline circulation checkpoint ({exc}); "
                "delete it only if no transaction of this run has reached Alma"
            ) from None
        self.done, self.renew_intents = done, intents
        return self

    def record(self, txn_id: str, done: Done) -> None:
        outcome, code, message = done
        self.done[txn_id] = [outcome, code, message] if outcome == "refused" else outcome

    def outcome(self, txn_id: str) -> Done:
        """What :meth:`record` recorded for ``txn_id``."""
        known = self.done[txn_id]
        if known in ("applied", "already_applied"):
            return known, "", ""
        if isinstance(known, list) and len(known) == 3 and known[0] == "refused":
            return "refused", str(known[1]), str(known[2])
        raise CheckpointError(
            f"checkpoint {self.key}: transaction {txn_id} has no outcome this module writes"
        )

    def save(self) -> None:
        body = {"version": CHECKPOINT_VERSION, "done": self.done, "renew_intents": self.renew_intents}
        self.store.put_bytes(
            self.key, json.dumps(body, ensure_ascii=False).encode(), content_type="application/json"
        )
        self.writes += 1


# -- applying ------------------------------------------------------------------------------


@dataclass
class ActionCounts:
    applied: int = 0  # written to Alma by this upload
    already_applied: int = 0  # found done: in the checkpoint's outcome, or in Alma's state
    refused: Counter[str] = field(default_factory=Counter)  # Alma's errorCode (or no_active_loan) → count

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "already_applied": self.already_applied,
            "refused": dict(sorted(self.refused.items())),
        }


@dataclass
class OfflineCircResult(Tally):
    """One upload: ``records_in`` (rows read) = ``records_out`` (applied or already applied) + rejected
    (input rejects and refusals, by reason). A re-run counts the checkpoint's outcomes again, so its
    result describes the whole upload; ``resumed`` says how many came from the checkpoint."""

    actions: dict[str, ActionCounts] = field(default_factory=lambda: {a: ActionCounts() for a in ACTIONS})
    rejected_input: Counter[str] = field(default_factory=Counter)
    resumed: int = 0
    checkpoint_writes: int = 0
    api_calls: int = 0

    def count(self, action: str, outcome: Outcome, code: str = "") -> None:
        counts = self.actions[action]
        if outcome == "refused":
            counts.refused[code] += 1
            self.reject(code if code == NO_ACTIVE_LOAN else f"alma_{code}")
            return
        self.records_out += 1
        if outcome == "applied":
            counts.applied += 1
        else:
            counts.already_applied += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "actions": {a: c.to_dict() for a, c in self.actions.items()},
            "rejected_input": dict(sorted(self.rejected_input.items())),
            "resumed": self.resumed,
            "checkpoint_writes": self.checkpoint_writes,
            "api_calls": self.api_calls,
            "balanced": self.balanced,
        }


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code, self.message = code, message


def _value(obj: Any) -> str:
    return str((obj.get("value") if isinstance(obj, dict) else obj) or "")


def _return(client: AlmaClient, txn: Transaction) -> bool:
    item = client.find_item_by_barcode(txn.item_barcode)
    if item is None:  # as client_load's requests: Alma's code for an unknown barcode
        raise _Refused("401689", f"No items found for barcode {txn.item_barcode}.")
    mms_id = _value((item.get("bib_data") or {}).get("mms_id"))
    holding_id = _value((item.get("holding_data") or {}).get("holding_id"))
    pid = _value((item.get("item_data") or {}).get("pid"))
    _, scanned = client.scan_in_item(
        mms_id, holding_id, pid, library=txn.library, circ_desk=txn.circ_desk, item=item
    )
    return scanned


def _renew(client: AlmaClient, txn: Transaction, checkpoint: Checkpoint) -> bool:
    loan = next(
        (x for x in client.user_loans(txn.patron_id) if x.get("item_barcode") == txn.item_barcode), None
    )
    intent = checkpoint.renew_intents.get(txn.txn_id)
    if loan is None:
        raise _Refused(
            NO_ACTIVE_LOAN, f"patron {txn.patron_id} has no active loan of item {txn.item_barcode}"
        )
    if intent is None or intent.get("loan_id") != loan.get("loan_id"):
        intent = {k: loan.get(k) for k in ("loan_id", "due_date", "last_renew_date")}
        checkpoint.renew_intents[txn.txn_id] = intent
        checkpoint.save()  # the intent is stored before the renew is sent
    _, renewed = client.renew_loan(txn.patron_id, str(loan.get("loan_id")), before=intent, loan=loan)
    return renewed


def _apply_one(client: AlmaClient, txn: Transaction, checkpoint: Checkpoint) -> bool:
    """True when this call wrote to Alma, False when Alma already had it."""
    if txn.action == "loan":
        _, created, _ = client.ensure_loan(
            txn.patron_id, txn.item_barcode, txn.library, txn.circ_desk, aleph_key=txn.txn_id
        )
        return created
    if txn.action == "return":
        return _return(client, txn)
    return _renew(client, txn, checkpoint)


def apply_transactions(
    client: AlmaClient,
    parsed: Parsed,
    checkpoint: Checkpoint,
    rejects: RejectLog,
    *,
    checkpoint_every: int = 100,
) -> OfflineCircResult:
    """Apply ``parsed`` in its order, one transaction at a time (order matters: no threads).

    Transactions the checkpoint names are counted as it recorded them; the others are applied
    (or found applied). The checkpoint is written every ``checkpoint_every`` transactions, before a
    transaction whose item an unsaved one touched, before each renew (its intent), and at the end.
    ``FATAL`` errors (quota, key, outage) are raised after the checkpoint is written.
    """
    result = OfflineCircResult(records_in=parsed.rows, rejected_input=Counter(parsed.rejected))
    for reason, n in parsed.rejected.items():
        result.reject(reason, n)
    calls, writes = client.stats.requests, checkpoint.writes
    unsaved: set[str] = set()  # item barcodes touched since the last write

    def save() -> None:
        checkpoint.save()
        unsaved.clear()

    try:
        for txn in parsed.transactions:
            if txn.txn_id in checkpoint.done:
                result.resumed += 1
                _record(result, rejects, txn, checkpoint.outcome(txn.txn_id))
                continue
            if txn.item_barcode in unsaved or len(unsaved) >= checkpoint_every:
                save()
            writes_before = checkpoint.writes
            done: Done
            try:
                done = ("applied" if _apply_one(client, txn, checkpoint) else "already_applied", "", "")
            except FATAL:
                raise
            except AlmaApiError as exc:
                done = ("refused", exc.code, exc.message)
            except _Refused as exc:
                done = ("refused", exc.code, exc.message)
            if checkpoint.writes != writes_before:
                unsaved.clear()  # a renew intent wrote everything done so far
            checkpoint.record(txn.txn_id, done)
            unsaved.add(txn.item_barcode)
            _record(result, rejects, txn, done)
    finally:
        if unsaved:
            save()
        result.checkpoint_writes = checkpoint.writes - writes
        result.api_calls = client.stats.requests - calls
    log.info(
        "offline circulation: %d rows, %s; %d rejected (%s), %d from the checkpoint",
        result.records_in,
        ", ".join(f"{a} {c.applied}+{c.already_applied}" for a, c in result.actions.items()),
        result.rejected,
        dict(result.rejected_by_reason),
        result.resumed,
    )
    return result.check("offline circulation upload")


def _record(result: OfflineCircResult, rejects: RejectLog, txn: Transaction, done: Done) -> None:
    outcome, code, message = done
    result.count(txn.action, outcome, code)
    if outcome == "refused":
        reason = code if code == NO_ACTIVE_LOAN else f"alma_{code}"
        rejects.add(
            Reject(ENTITY, txn.item_barcode, reason, f"{txn.action}: {message}", txn.source, txn.line_no)
        )


def upload(
    client: AlmaClient,
    files: Iterable[tuple[str, bytes]],
    settings: OfflineCircSettings,
    checkpoint: Checkpoint,
    rejects: RejectLog,
) -> OfflineCircResult:
    """Read ``files`` (name, bytes) with ``settings`` and apply them through ``client``; re-running
    it with the same checkpoint resumes (see the module doc)."""
    parsed = read_transactions(files, settings, rejects)
    return apply_transactions(client, parsed, checkpoint, rejects, checkpoint_every=settings.checkpoint_every)
