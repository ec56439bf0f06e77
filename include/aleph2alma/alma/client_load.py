"""Loading the transforms' records into Alma through :class:`~aleph2alma.alma.client.AlmaClient`.

Kinds and what one record becomes (records as :mod:`aleph2alma.alma.fulfillment` writes them;
users as :func:`read_users_xml` reads the transform's ``users.xml``):

- ``users``: ``POST /users`` with the Alma user JSON, unless the primary id exists;
- ``loans``: ``POST /users/{id}/loans?item_barcode=`` at ``library``/``circ_desk``, then the
  Aleph ``due_date`` with ``PUT`` (body: ``due_date`` only). The loan date cannot be set
  through the API: Alma stamps the call's time (``rest_item_loan.xsd``: "In the POST loan
  action, Alma populate this field with the current date and time"), so every loan created
  here carries the load's date; a past due date is refused, 401681, counted as a warning;
- ``requests``: the item by barcode, then ``POST /users/{id}/requests?item_pid=`` with
  ``request_type``, ``pickup_location_type``/``_library``, ``last_interest_date`` (the Aleph
  expiry date) and the ``[aleph:<key>]`` comment; Aleph's status and hold-shelf date cannot be
  set (Alma starts every request afresh);
- ``fees`` (the ``fines`` records): ``POST /users/{id}/fees`` with ``type``,
  ``original_amount``, ``owner``, ``creation_time``, the item's ``barcode`` when the record
  has one, and the comment with the marker; the
  amount is in the institution's currency (a fee has no currency of its own); a fee found
  twice in Alma (a write committed after the client stopped looking) is the warning
  ``fee_twins_in_alma``.

**Concurrency.** ``load`` runs ``workers`` threads, by default ``client.rate.workers``
(:class:`~aleph2alma.alma.rate.AlmaRate`: enough calls in flight to reach the connection's
``per_second`` at Alma's latency); the client's throttle keeps them together under the limit.
One user's records stay on one thread, in order.

Records without the fields a call needs are rejected (``missing_<field>``); Alma's refusals
are rejected as ``alma_<errorCode>`` with Alma's message. Rejects use the transforms' entity
names (patrons, loans, requests, fines) and ids (primary id, Aleph key).
"""

from __future__ import annotations

import logging
import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Literal
from xml.etree import ElementTree as ET

from aleph2alma.accounting import Tally
from aleph2alma.alma.client import (
    AlmaApiError,
    AlmaAuthError,
    AlmaQuotaExhausted,
    AlmaRedirectRefused,
    AlmaUnavailable,
)
from aleph2alma.rejects import Reject, RejectLog

if TYPE_CHECKING:
    from aleph2alma.alma.client import AlmaClient

log = logging.getLogger(__name__)

Kind = Literal["users", "loans", "requests", "fees"]

ENTITIES: dict[str, str] = {"users": "patrons", "loans": "loans", "requests": "requests", "fees": "fines"}
"""Load kind → the reject entity the transforms use for the same records."""

FATAL = (AlmaQuotaExhausted, AlmaUnavailable, AlmaAuthError, AlmaRedirectRefused)
"""Errors that stop a load instead of rejecting one record (a refused redirect: a wrong base_url)."""


@dataclass
class LoadStats(Tally):
    """One load: ``records_in == records_out + rejected`` when it ran to the end.

    ``records_out`` (in Alma after the load) = ``created`` + ``existing``.
    """

    kind: str = field(default="", kw_only=True)
    created: int = 0
    existing: int = 0  # already in Alma (a re-run, or a write that had gone through)
    warnings: dict[str, int] = field(default_factory=dict)  # e.g. loans kept at the policy due date
    api_calls: int = 0
    retries: int = 0
    workers: int = 1  # threads the load ran on

    def loaded(self, created: bool) -> None:
        """One record is in Alma: created by this load, or found there already."""
        self.records_out += 1
        if created:
            self.created += 1
        else:
            self.existing += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "kind": self.kind,
            "created": self.created,
            "existing": self.existing,
            "warnings": dict(self.warnings),
            "api_calls": self.api_calls,
            "retries": self.retries,
            "workers": self.workers,
            "balanced": self.balanced,
        }


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _need(record: dict, *names: str) -> list[str]:
    values = []
    for name in names:
        value = record.get(name)
        if value in (None, ""):
            raise _Invalid(f"missing_{name}")
        values.append(str(value))
    return values


def _alma_date(day: Any) -> str | None:
    return f"{day}Z" if day else None


def _user(client: AlmaClient, record: dict) -> tuple[bool, str | None]:
    _need(record, "primary_id")
    return client.ensure_user(record)[1], None


def _loan(client: AlmaClient, record: dict) -> tuple[bool, str | None]:
    key, user, barcode, library, desk = _need(
        record, "aleph_key", "user_primary_id", "item_barcode", "library", "circ_desk"
    )
    _, created, warning = client.ensure_loan(
        user, barcode, library, desk, aleph_key=key, due_date=record.get("due_date")
    )
    return created, warning


def _request(client: AlmaClient, record: dict) -> tuple[bool, str | None]:
    key, user, barcode = _need(record, "aleph_key", "user_primary_id", "item_barcode")
    item = client.find_item_by_barcode(barcode)
    if item is None:
        raise _Invalid("alma_401689", f"No items found for barcode {barcode}.")
    body = {
        k: v
        for k, v in {
            "request_type": record.get("request_type") or "HOLD",
            "pickup_location_type": record.get("pickup_location_type") or "LIBRARY",
            "pickup_location_library": record.get("pickup_location_library"),
            "last_interest_date": _alma_date(record.get("expiry_date")),
        }.items()
        if v
    }
    pid = str((item.get("item_data") or {}).get("pid") or "")
    mms_id = str((item.get("bib_data") or {}).get("mms_id") or "")
    return client.ensure_request(user, body, aleph_key=key, item_pid=pid or None, mms_id=mms_id or None)[
        1
    ], None


def _fee(client: AlmaClient, record: dict) -> tuple[bool, str | None]:
    key, user, fee_type, amount, owner = _need(
        record, "aleph_key", "user_primary_id", "type", "amount", "owner"
    )
    # in rest_fee.xsd's order (an xs:sequence); barcode is tagged "get post"
    fee: dict[str, Any] = {"type": {"value": fee_type}, "original_amount": float(amount)}
    if record.get("creation_date"):
        fee["creation_time"] = f"{record['creation_date']}T00:00:00Z"
    fee["comment"] = record.get("comment") or ""
    fee["owner"] = {"value": owner}
    if record.get("item_barcode"):
        fee["barcode"] = {"value": str(record["item_barcode"])}
    _, created, warning = client.ensure_fee(user, fee, aleph_key=key)
    return created, warning


@dataclass(frozen=True)
class _Loader:
    run: Callable[[AlmaClient, dict], tuple[bool, str | None]]
    id_field: str  # what names the record in rejects
    user_field: str  # records of one user go to one worker


LOADERS: dict[str, _Loader] = {
    "users": _Loader(_user, "primary_id", "primary_id"),
    "loans": _Loader(_loan, "aleph_key", "user_primary_id"),
    "requests": _Loader(_request, "aleph_key", "user_primary_id"),
    "fees": _Loader(_fee, "aleph_key", "user_primary_id"),
}


def load(
    client: AlmaClient, kind: Kind, records: Iterable[dict], rejects: RejectLog, *, workers: int | None = None
) -> LoadStats:
    """Load records of one kind on ``workers`` threads (one user's records stay on one thread).

    ``workers`` defaults to ``client.rate.workers``: the threads that reach the client's
    ``per_second`` (one when it is unpaced). Its throttle is shared by all of them.

    Quota, key and outage errors (``FATAL``) stop the load: raised once the workers have
    finished their current record. Every create is idempotent, so re-running the load resumes it.
    """
    if kind not in LOADERS:
        raise ValueError(f"unknown load kind {kind!r}; expected one of {', '.join(sorted(LOADERS))}")
    loader, entity = LOADERS[kind], ENTITIES[kind]
    workers = client.rate.workers if workers is None else max(1, workers)
    stats = LoadStats(kind=kind, workers=workers)
    log.info(
        "loading %s on %d thread(s), %s",
        kind,
        workers,
        f"together under {client.per_second:g} calls/s" if client.rate.paced else "unpaced",
    )
    lock = threading.Lock()
    calls, retries = client.stats.requests, client.stats.retries

    def handle(record: dict) -> None:
        record_id = str(record.get(loader.id_field) or "")
        warning: str | None = None
        outcome: bool | Reject
        try:
            outcome, warning = loader.run(client, record)
        except FATAL:
            raise
        except AlmaApiError as exc:
            outcome = Reject(entity, record_id, f"alma_{exc.code}", detail=exc.message)
        except _Invalid as exc:
            outcome = Reject(entity, record_id, exc.reason, detail=exc.detail)
        except (TypeError, ValueError) as exc:
            outcome = Reject(entity, record_id, "invalid_record", detail=str(exc))
        with lock:
            if isinstance(outcome, Reject):
                rejects.add(outcome)
                stats.reject(outcome.reason)
            else:
                stats.loaded(created=bool(outcome))
            if warning:
                stats.warnings[warning] = stats.warnings.get(warning, 0) + 1

    def counted() -> Iterator[dict]:
        for record in records:
            stats.records_in += 1
            yield record

    try:
        run_lanes(counted(), handle, workers, lambda r: str(r.get(loader.user_field) or ""))
    finally:
        stats.api_calls = client.stats.requests - calls
        stats.retries = client.stats.retries - retries
    return stats.check(f"{kind} load")


_END = object()


def run_lanes(
    items: Iterable[Any], handle: Callable[[Any], None], workers: int, lane_key: Callable[[Any], str]
) -> None:
    """``handle`` every item on ``workers`` threads; items with one lane key share a thread, in order.

    Memory stays bounded (small queues). The first exception stops the feeding, is raised
    in the caller's thread after every worker has finished its current item.
    """
    if workers <= 1:
        for item in items:
            handle(item)
        return
    lanes: list[queue.Queue[Any]] = [queue.Queue(maxsize=64) for _ in range(workers)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def lane(q: queue.Queue[Any]) -> None:
        while (item := q.get()) is not _END:
            if stop.is_set():
                continue
            try:
                handle(item)
            except BaseException as exc:  # handed over to the caller's thread below
                errors.append(exc)
                stop.set()

    threads = [
        threading.Thread(target=lane, args=(q,), name=f"alma-load-{i}", daemon=True)
        for i, q in enumerate(lanes)
    ]
    for thread in threads:
        thread.start()
    try:
        for item in items:
            if stop.is_set():
                break
            lanes[zlib.crc32(lane_key(item).encode()) % workers].put(item)
    finally:
        for q in lanes:
            q.put(_END)
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


# -- the transform's users.xml → Alma user JSON ---------------------------------------------

_CODE_FIELDS = frozenset(
    {
        "record_type",
        "user_group",
        "account_type",
        "status",
        "gender",
        "preferred_language",
        "user_title",
        "job_category",
        "campus_code",
        "address_type",
        "email_type",
        "phone_type",
        "id_type",
        "note_type",
        "statistic_category",
        "category_type",
        "block_type",
        "block_description",
        "role_type",
        "scope",
    }
)
"""Elements whose JSON form is a code-table reference, ``{"value": …}``."""
_BOOLEANS = frozenset({"preferred", "preferred_sms", "user_viewable", "popup_note", "is_researcher"})
_WRAPPERS = {
    "addresses": "address",
    "emails": "email",
    "phones": "phone",
    "user_identifiers": "user_identifier",
    "user_notes": "user_note",
    "address_types": "address_type",
    "email_types": "email_type",
    "phone_types": "phone_type",
    "user_statistics": "user_statistic",
    "user_roles": "user_role",
    "user_blocks": "user_block",
}
"""XML list wrapper → the JSON key of its list (``<addresses><address>`` → ``"address": [...]``)."""


_PLAIN = frozenset({("user_identifier", "status")})
"""(parent, element) pairs that are plain text although the element name is a code field elsewhere."""


def _xml_value(tag: str, elem: ET.Element, parent: str = "") -> Any:
    text = (elem.text or "").strip()
    if tag in _CODE_FIELDS and (parent, tag) not in _PLAIN:
        return {"value": text, **({"desc": elem.attrib["desc"]} if "desc" in elem.attrib else {})}
    if len(elem) or elem.attrib:
        obj: dict[str, Any] = {k: (v == "true") if k in _BOOLEANS else v for k, v in elem.attrib.items()}
        for child in elem:
            if child.tag in _WRAPPERS:
                obj[_WRAPPERS[child.tag]] = [_xml_value(_WRAPPERS[child.tag], c, tag) for c in child]
            else:
                obj[child.tag] = _xml_value(child.tag, child, tag)
        return obj
    return text == "true" if tag in _BOOLEANS else text


def user_xml_to_json(elem: ET.Element, external_id: str = "") -> dict[str, Any]:
    """One ``<user>`` of Alma's user XML → the JSON the users API takes.

    Alma's API requires ``external_id`` on an EXTERNAL account (401854); on an SIS load the
    profile supplies it, so ``external_id`` fills it in when the XML has none.
    """
    user: dict[str, Any] = _xml_value("user", elem)
    account = user.get("account_type") or {}
    if external_id and not user.get("external_id") and account.get("value") == "EXTERNAL":
        user["external_id"] = external_id
    return user


def read_users_xml(source: str | IO[bytes], external_id: str = "") -> Iterator[dict[str, Any]]:
    """Stream the users of a ``<users>`` document (a path or a binary stream) as Alma user JSON."""
    for _event, elem in ET.iterparse(source, events=("end",)):
        if elem.tag == "user":
            yield user_xml_to_json(elem, external_id)
            elem.clear()
