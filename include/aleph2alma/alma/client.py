"""Alma REST client: the same code talks to Ex Libris Alma and to the demo emulator.

Endpoints (Alma's own paths under ``base_url``, e.g.
``https://api-ap.hosted.exlibrisgroup.com/almaws/v1``): ``GET/POST /users``,
``GET /users/{id}``, ``GET/POST /users/{id}/loans`` (``?item_barcode=``),
``PUT /users/{id}/loans/{loan_id}`` (due date), ``GET/POST /users/{id}/requests``
(``?item_pid=`` or ``?mms_id=``), ``GET/POST /users/{id}/fees``,
``GET /items?item_barcode=`` (Alma answers with a redirect to
``/bibs/{mms_id}/holdings/{holding_id}/items/{pid}``, followed here, throttled like any call),
``GET /bibs?other_system_id=`` and ``GET /bibs/{mms_id}/holdings[/{holding_id}]``
(reconciliation); for offline circulation ``POST /users/{id}/loans/{loan_id}?op=renew`` and
``POST /bibs/{mms_id}/holdings/{holding_id}/items/{pid}?op=scan`` (scan-in: a return).
The key travels in ``Authorization: apikey <key>``; bodies are JSON.

**The key goes to the configured host only.** ``base_url`` must be ``https://`` (plain
``http://`` only for ``localhost``, ``127.0.0.1`` and ``::1``, where the emulator runs): a
plain-http URL to any other host is a :class:`~aleph2alma.errors.ConfigError`, the key would
cross the network in clear. Redirects (the ``/items?item_barcode=`` alias) are followed only
to the same scheme, host and port as ``base_url``; any other target is
:class:`AlmaRedirectRefused` (nothing is sent there, the load stops). Ex Libris' developer
network (https://developers.exlibrisgroup.com/alma/apis/, "Calling Alma APIs") has the key
sent with every call, as the ``apikey`` query parameter or the ``Authorization: apikey``
header, to the institution's regional ``https://api-<region>.hosted.exlibrisgroup.com``
gateway; the client uses the header so that the key is in no URL. Not verified against
Alma: whether its gateways ever redirect to another host (none is documented; the item alias
redirects within the gateway).

**Logs.** Alma's URLs carry patron ids and barcodes (``/users/{id}``, ``?item_barcode=``).
httpx logs every request at INFO with its URL; a filter on the ``httpx`` logger rewrites the
URLs of every Alma client's origin to their resource names (``/almaws/v1/users/*/fees``, no
query). Errors name the call the same way.

**Errors.** A 429 ``PER_SECOND_THRESHOLD``, a 5xx, a timeout or a connection error is
transient: retried up to ``max_retries`` times with exponential backoff and jitter
(``Retry-After`` honoured), then :class:`AlmaUnavailable`. A 429 ``DAILY_THRESHOLD`` is
:class:`AlmaQuotaExhausted`; so is ``X-Exl-Api-Remaining`` (tracked in ``remaining``, Alma's
count for the whole institution) reaching ``quota_floor``: the client stops before the
institution's other integrations run dry. A missing or refused key is :class:`AlmaAuthError`.
Any other 4xx is :class:`AlmaApiError` with Alma's ``errorCode``, ``errorMessage`` and
``trackingId``. Error bodies are read as JSON or as Alma's XML ``web_service_result``
(:func:`parse_error`): Alma's gateway answers a refused key (400 ``UNAUTHORIZED``, "API-key not
defined or not configured to allow this API.") and its thresholds in XML even to a JSON client,
so an XML ``UNAUTHORIZED`` stops the load like a JSON one, and an XML ``DAILY_THRESHOLD`` is
quota, not an outage. The XML shape is Alma's ``web_service_result.xsd`` (as vendored by the
``kb-dk/alma-client`` repository, ``src/main/resources/alma_xsd/web_service_result.xsd``:
``errorsExist``, ``errorList/error`` with ``errorCode``, ``errorMessage``, ``trackingId``);
the gateway sometimes leaves ``trackingId`` out. Which status codes the gateway pairs with
each code is not published: the codes decide here, not the status.
The thresholds and their error codes are Ex Libris' API governance thresholds
(https://developers.exlibrisgroup.com/alma/apis/#threshold).

**Idempotency.** Every create looks first (user by primary id, the user's loans for the item
barcode, the user's requests and fees for the marker ``[aleph:<key>]`` the client writes into
their ``comment``) and returns what is there. A write that may have reached Alma without an
answer (timeout, 5xx) is never blindly repeated: the client looks again, then re-posts. A
write Alma may still be working on (our timeout, a gateway's 502-504) can commit after the
client gave up: the client keeps looking for ``settle`` seconds (default ``timeout``) before it
writes again. Alma's own "already exists" answers (401851 user, 401651 item on loan, 401136
request) resolve to the existing record. Re-running a load after a failure therefore resumes it.
Left open: a fee (Alma keeps no unique key on one) that Alma commits more than ``settle``
seconds after the client timed out is there twice; the next look names it (``ensure_fee``'s
warning ``fee_twins_in_alma``). Loans, requests and users are unique in Alma, so a late twin of
those is refused. How late Alma can commit a write it was still working on is not published.

**Time.** ``sleep`` (backoff, settling) and ``clock`` (the settle window) are injectable, as are
the throttle's: tests run on virtual time and count attempts instead of timing them.

**Rate.** Alma allows about 25 calls per second per institution. Each client paces itself
(:mod:`aleph2alma.alma.throttle`: ``per_second`` × ``headroom``, at most ``per_second`` − 1
calls per wall-clock second), shared by every thread that uses it. ``rate``
(:class:`~aleph2alma.alma.rate.AlmaRate`) turns ``per_second`` and the expected ``latency``
of a call into the number of threads that reach it. In Airflow one Alma task runs at a time
(the pool :data:`~aleph2alma.alma.rate.ALMA_POOL`, all its slots per task).

The loader (:func:`aleph2alma.alma.client_load.load`) loads the records of the transforms
through a client, on ``rate.workers`` threads unless told otherwise; a permanent error
rejects the record (``alma_<errorCode>``) and the load goes on.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree as ET

import httpx

from aleph2alma.alma.rate import DEFAULT_LATENCY, DEFAULT_PER_SECOND, MAX_WORKERS, AlmaRate
from aleph2alma.alma.throttle import DEFAULT_HEADROOM, Throttle, tuned
from aleph2alma.errors import ConfigError

log = logging.getLogger(__name__)

USER_NOT_FOUND = frozenset({"401861", "401890"})
ITEM_NOT_FOUND = "401689"
BIB_OR_HOLDING_NOT_FOUND = frozenset({"402203", "402204"})  # invalid mmsId / holdingId
USER_EXISTS = "401851"
ITEM_ON_LOAN = "401651"  # "Item is not loanable": the item has an active loan
REQUEST_EXISTS = "401136"
AUTH_CODES = frozenset({"UNAUTHORIZED", "INVALID_API_KEY"})
DAILY_THRESHOLD, PER_SECOND_THRESHOLD = "DAILY_THRESHOLD", "PER_SECOND_THRESHOLD"
PAGE = 100  # Alma's largest page


class AlmaApiError(Exception):
    """An Alma API call failed for good: HTTP status, Alma's errorCode/errorMessage/trackingId."""

    def __init__(self, status: int, code: str, message: str, tracking_id: str = "", where: str = "") -> None:
        self.status, self.code, self.message, self.tracking_id = status, code, message, tracking_id
        text = f"Alma API {where + ': ' if where else ''}HTTP {status} {code}: {message}"
        super().__init__(text + (f" (tracking id {tracking_id})" if tracking_id else ""))


class AlmaQuotaExhausted(AlmaApiError):
    """The daily API quota is used up, or down to the floor: stop for today, do not retry."""


class AlmaUnavailable(AlmaApiError):
    """Transient failures (429 per second, 5xx, timeouts) outlasted every retry."""


class AlmaAuthError(AlmaApiError):
    """The API key is missing, unknown or lacks permission: nothing will work until it is fixed."""


class AlmaRedirectRefused(AlmaApiError):
    """Alma (or something posing as it) redirected to another scheme, host or port: not followed."""


LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
"""Hosts a plain-http ``base_url`` may name (the emulator); anything else needs https."""

ALMA_WORDS = frozenset({"almaws", "v1", "users", "loans", "requests", "fees", "items", "bibs", "holdings"})
"""Path segments kept when a URL is logged; every other segment (ids, barcodes) becomes ``*``."""


def origin(url: str | httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host.lower(), parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)


def checked_base_url(base_url: str) -> str:
    """``base_url`` when the API key may go there: https, or plain http to this machine only."""
    shown = base_url.split("?", 1)[0]
    try:
        scheme, host, _port = origin(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"Alma base_url {shown!r} is not a URL: {exc}") from None
    if not host or scheme not in ("https", "http"):
        raise ConfigError(f"Alma base_url {shown!r} must be an https:// URL with a host")
    if scheme == "http" and host not in LOOPBACK:
        raise ConfigError(
            f"Alma base_url {shown!r} is plain http to {host}: the API key would travel in clear; "
            "use https:// (plain http only for localhost, 127.0.0.1 or ::1)"
        )
    return base_url


def redacted(url: str | httpx.URL) -> str:
    """``url`` without patron ids, barcodes or query: Alma's resource names only."""
    parsed = httpx.URL(url)
    path = "/".join(s if s in ALMA_WORDS or not s else "*" for s in parsed.path.split("/"))
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}{path}" if parsed.host else path


class _RedactAlmaUrls(logging.Filter):
    """Rewrites the URLs httpx logs (``HTTP Request: GET <url> ...``, INFO) for Alma origins."""

    def __init__(self) -> None:
        super().__init__("")
        self.origins: set[tuple[str, str, int | None]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and self.origins:
            record.args = tuple(
                redacted(arg) if isinstance(arg, httpx.URL) and origin(arg) in self.origins else arg
                for arg in record.args
            )
        return True


_HTTPX_LOG_FILTER = _RedactAlmaUrls()


def _redact_httpx_log(base_url: str) -> None:
    """From now on, httpx's log lines name ``base_url``'s origin's URLs without ids."""
    _HTTPX_LOG_FILTER.origins.add(origin(base_url))
    logger = logging.getLogger("httpx")
    if _HTTPX_LOG_FILTER not in logger.filters:
        logger.addFilter(_HTTPX_LOG_FILTER)


class _AmbiguousWrite(Exception):
    """A write failed in a way that may still have reached Alma (timeout, 5xx).

    ``in_flight``: Alma may still be working on it (our timeout, a gateway's 502/503/504).
    """

    def __init__(self, error: AlmaUnavailable, retry_after: float | None, in_flight: bool) -> None:
        super().__init__(str(error))
        self.error, self.retry_after, self.in_flight = error, retry_after, in_flight


WEB_SERVICE_RESULT_NS = "http://com/exlibris/urm/general/xmlbeans"
"""Namespace of Alma's XML error document ``web_service_result`` (``web_service_result.xsd``)."""
ERROR_BODY_LIMIT = 64 * 1024
"""Bytes of an error body that are parsed; Alma's error documents are a few hundred bytes."""


def _json_error(response: httpx.Response) -> tuple[str, str, str] | None:
    try:
        errors = response.json()["errorList"]["error"]
        first = errors[0] if isinstance(errors, list) else errors
        return (
            str(first.get("errorCode", "")),
            str(first.get("errorMessage", "")).strip(),
            str(first.get("trackingId", "") or ""),
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _xml_error(body: bytes) -> tuple[str, str, str] | None:
    """The first ``error`` of a ``web_service_result`` (namespaced or not); None when it is not one.

    A document with a DTD is not parsed (no entity expansion from an error body).
    """
    head = body[:ERROR_BODY_LIMIT]
    if b"<!DOCTYPE" in head.upper() or b"<!ENTITY" in head.upper():
        return None
    try:
        root = ET.fromstring(head)
    except ET.ParseError:
        return None

    def local(elem: ET.Element) -> str:
        return elem.tag.rsplit("}", 1)[-1]

    if local(root) != "web_service_result":
        return None
    error = next((e for e in root.iter() if local(e) == "error"), None)
    if error is None:
        return None
    fields = {local(child): (child.text or "").strip() for child in error}
    if not fields.get("errorCode"):
        return None
    return fields["errorCode"], fields.get("errorMessage", ""), fields.get("trackingId", "")


def parse_error(response: httpx.Response) -> tuple[str, str, str]:
    """(errorCode, errorMessage, trackingId) of an Alma error body; ``HTTP_<status>`` when it has none.

    Alma answers errors as JSON (``errorList.error[]``) or, whatever the ``Accept`` header asked
    for, as XML: the ``web_service_result`` document (namespace :data:`WEB_SERVICE_RESULT_NS`,
    Alma's ``web_service_result.xsd``; its gateway sends the key and threshold errors that way).
    Both are read; the first error counts.
    """
    parsed = _json_error(response) or _xml_error(response.content)
    if parsed is not None:
        return parsed
    return f"HTTP_{response.status_code}", response.text[:200].strip(), ""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def with_marker(comment: str | None, aleph_key: str) -> str:
    """``comment`` carrying ``[aleph:<key>]``, the marker that makes requests and fees idempotent."""
    marker = f"[aleph:{aleph_key}]"
    comment = (comment or "").strip()
    return comment if marker in comment else f"{comment} {marker}".strip()


@dataclass
class ClientStats:
    requests: int = 0  # HTTP requests sent (redirect hops included)
    retries: int = 0
    throttled: int = 0  # 429 PER_SECOND_THRESHOLD answers
    server_errors: int = 0
    transport_errors: int = 0  # timeouts and connection errors
    ambiguous_writes: int = 0  # writes re-checked before being sent again


@dataclass
class AlmaClient:
    """Alma REST client; ``session`` is injectable (an ``httpx.Client``), thread-safe."""

    base_url: str  # e.g. https://api-ap.hosted.exlibrisgroup.com/almaws/v1, or the emulator's
    api_key: str = field(repr=False)
    per_second: float = DEFAULT_PER_SECOND  # the institution's limit this client stays under; <= 0: no pacing
    latency: float = DEFAULT_LATENCY  # expected seconds per call: sizes the loader's threads (``rate``)
    session: httpx.Client | None = None  # injectable; default: one made (and closed) by the client
    max_retries: int = 6  # per call, for 429 per second, 5xx, timeouts, connection errors
    backoff_base: float = 0.5  # seconds before the first retry; doubles each time, with jitter
    backoff_max: float = 30.0
    timeout: float = 30  # seconds per HTTP request
    settle: float | None = None  # seconds a timed-out write is looked for before re-sending; None: timeout
    quota_floor: int = 1000  # calls left for the institution's other integrations
    headroom: float = DEFAULT_HEADROOM
    throttle: Throttle | None = None  # injectable (e.g. one shared by several clients); default tuned()
    rng: random.Random = field(default_factory=random.Random, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)  # backoff and settling
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)  # the settle window
    remaining: int | None = field(default=None, init=False)
    stats: ClientStats = field(default_factory=ClientStats, init=False)

    def __post_init__(self) -> None:
        checked_base_url(self.base_url)
        self._origin = origin(self.base_url)
        _redact_httpx_log(self.base_url)
        self._own_session = self.session is None
        rate = self.rate  # a NaN per_second or a latency <= 0 is a ConfigError here
        self._http = self.session or httpx.Client(limits=httpx.Limits(max_connections=MAX_WORKERS))
        self._throttle: Throttle = self.throttle or tuned(rate.per_second, self.headroom)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._headers = {"Authorization": f"apikey {self.api_key}", "Accept": "application/json"}

    @property
    def rate(self) -> AlmaRate:
        """This client's budget: the threads a load needs to reach ``per_second`` (``rate.workers``)."""
        return AlmaRate(self.per_second, self.latency)

    def close(self) -> None:
        if self._own_session:
            self._http.close()

    def __enter__(self) -> AlmaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    def _send_once(self, method: str, url: str, params: dict[str, str] | None, body: Any) -> httpx.Response:
        with self._lock:
            if self.remaining is not None and self.remaining - self._in_flight <= self.quota_floor:
                raise AlmaQuotaExhausted(
                    0,
                    "QUOTA_FLOOR",
                    f"X-Exl-Api-Remaining is {self.remaining} with {self._in_flight} call(s) in flight, "
                    f"at the floor of {self.quota_floor} calls kept for the institution's other "
                    "integrations; stopped before the daily quota runs out. Alma resets it at midnight: "
                    "re-run then (loads resume).",
                )
        self._throttle.acquire()
        with self._lock:
            self._in_flight += 1
            self.stats.requests += 1
        try:
            response = self._http.request(
                method,
                url,
                params=params,
                json=body,
                headers=self._headers,
                timeout=self.timeout,
                follow_redirects=False,
            )
        finally:
            with self._lock:
                self._in_flight -= 1
        left = response.headers.get("X-Exl-Api-Remaining", "")
        if left.strip().isdigit():
            with self._lock:
                self.remaining = int(left)
        return response

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter; a server's ``Retry-After`` wins (capped at ``backoff_max``)."""
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        return min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)) * (0.5 + self.rng.random() / 2)

    def _request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        body: Any = None,
        write: bool = False,
    ) -> httpx.Response:
        """One call with retries; ``write``: a timeout or 5xx raises ``_AmbiguousWrite`` instead."""
        url = path if path.startswith("http") else self.base_url.rstrip("/") + path
        where = f"{method} {redacted(path)}"
        attempt = hops = 0
        while True:
            retry_after: float | None = None
            if origin(url) != self._origin:
                there, ours = (f"{o[0]}://{o[1]}:{o[2]}" for o in (origin(url), self._origin))
                raise AlmaRedirectRefused(
                    0,
                    "REDIRECT_REFUSED",
                    f"{'redirected' if hops else 'asked'} to {there}, not the configured {ours}; "
                    "not followed, the API key is not sent there (check the alma connection's base_url)",
                    where=where,
                )
            try:
                response = self._send_once(method, url, params, body)
            except httpx.TransportError as exc:
                self._count(transport_errors=1)
                failure = AlmaUnavailable(0, type(exc).__name__, str(exc) or "no answer", where=where)
                if write and not isinstance(
                    exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
                ):
                    raise _AmbiguousWrite(failure, None, in_flight=True) from exc
            else:
                status = response.status_code
                if status in (301, 302, 303, 307, 308) and method == "GET" and hops < 5:
                    # checked against base_url's origin at the top of the loop, before anything is sent
                    url, params, hops = str(response.url.join(response.headers["Location"])), None, hops + 1
                    continue
                if status < 300:
                    return response
                code, message, tracking = parse_error(response)
                if code == DAILY_THRESHOLD:  # 429 from the gateway; by its code whatever the status
                    raise AlmaQuotaExhausted(
                        status,
                        code,
                        f"{message} Stopped for today; re-run after "
                        "Alma resets the quota at midnight (loads resume).",
                        tracking,
                        where,
                    )
                if status in (401, 403) or code in AUTH_CODES:
                    raise AlmaAuthError(status, code, message, tracking, where)
                throttled = status == 429 or code == PER_SECOND_THRESHOLD
                if not throttled and status < 500:
                    raise AlmaApiError(status, code, message, tracking, where)
                self._count(**({"throttled": 1} if throttled else {"server_errors": 1}))
                failure = AlmaUnavailable(status, code, message, tracking, where)
                retry_after = _retry_after(response)
                if write and status >= 500:
                    raise _AmbiguousWrite(failure, retry_after, in_flight=status in (502, 503, 504))
            if attempt >= self.max_retries:
                raise AlmaUnavailable(
                    failure.status,
                    failure.code,
                    f"{failure.message} (gave up after {attempt + 1} attempts)",
                    failure.tracking_id,
                    where,
                )
            attempt += 1
            self._count(retries=1)
            self.sleep(self._delay(attempt, retry_after))

    def _json(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        body: Any = None,
        write: bool = False,
    ) -> dict[str, Any]:
        response = self._request(method, path, params, body, write)
        if not response.content:
            return {}
        data = response.json()
        return data if isinstance(data, dict) else {"value": data}

    def _list(
        self, path: str, key: str, params: dict[str, str] | None = None, paged: bool = True
    ) -> list[dict]:
        out: list[dict] = []
        while True:
            query = {**(params or {}), **({"limit": str(PAGE), "offset": str(len(out))} if paged else {})}
            page = self._json("GET", path, query)
            rows = page.get(key) or []
            out.extend(rows if isinstance(rows, list) else [rows])
            if not paged or not rows or len(out) >= int(page.get("total_record_count") or 0):
                return out

    def _create_once(
        self,
        find: Callable[[], dict | None],
        post: Callable[[], dict],
        exists_codes: frozenset[str] = frozenset(),
    ) -> tuple[dict, bool]:
        """Look, then write; after an ambiguous write look again before writing again.

        A write Alma may still be processing (timeout, 502-504) is looked for during ``settle``
        seconds (:meth:`_settle`) before it is sent again; after a plain 500 one look follows the
        backoff. Alma refusing the write (an "exists" code, or any code after an ambiguous
        attempt: an earlier attempt may have gone through) resolves to the record when the look
        finds it. Write attempts are bounded by ``max_retries + 1``.
        """
        last: AlmaUnavailable | None = None
        found = find()
        for attempt in range(self.max_retries + 1):
            if found is not None:
                return found, False
            try:
                return post(), True
            except AlmaApiError as exc:
                if (exc.code in exists_codes or last is not None) and (found := find()) is not None:
                    return found, False
                raise
            except _AmbiguousWrite as exc:
                last = exc.error
                self._count(retries=1, ambiguous_writes=1)
                if exc.in_flight:
                    found = self._settle(find, self._delay(attempt + 1, exc.retry_after))
                else:
                    self.sleep(self._delay(attempt + 1, exc.retry_after))
                    found = find()
        if found is not None:
            return found, False
        assert last is not None
        raise last

    def _settle(self, find: Callable[[], dict | None], first: float) -> dict | None:
        """Look for a write that may still commit, until ``settle`` seconds have passed (4 looks or more).

        ``first``: the backoff before the first look. The last look comes at or after the end of
        the window, so a write that commits within it is found, however the time is spent.
        """
        window = self.timeout if self.settle is None else self.settle
        deadline = self.clock() + window
        step = max(window / 4, 1e-3)
        self.sleep(min(first, window) if window > 0 else first)
        while True:
            found = find()
            if found is not None or self.clock() >= deadline:
                return found
            self.sleep(min(step, max(deadline - self.clock(), 1e-3)))

    # -- entities ----------------------------------------------------------------------

    @staticmethod
    def _user_path(primary_id: str, tail: str = "") -> str:
        return f"/users/{quote(primary_id, safe='')}{tail}"

    def get_user(self, primary_id: str) -> dict | None:
        try:
            return self._json("GET", self._user_path(primary_id))
        except AlmaApiError as exc:
            if exc.code in USER_NOT_FOUND:
                return None
            raise

    def ensure_user(self, user: dict) -> tuple[dict, bool]:
        """The user with ``user['primary_id']``, created from ``user`` if Alma has none; (user, created)."""
        primary_id = str(user.get("primary_id") or "")
        return self._create_once(
            lambda: self.get_user(primary_id) if primary_id else None,
            lambda: self._json("POST", "/users", body=user, write=True),
            frozenset({USER_EXISTS}),
        )

    # Configuration (Alma's conf API: GET /conf/libraries → {"library": [{"code", …}]}, GET
    # /conf/libraries/{code}/locations → {"location": [{"code", …}]}, as the public alma_rb client's
    # fixtures show them); read by the cutover's preflight.
    def libraries(self) -> list[dict]:
        return self._list("/conf/libraries", "library", paged=False)

    def locations(self, library: str) -> list[dict]:
        return self._list(f"/conf/libraries/{quote(library, safe='')}/locations", "location", paged=False)

    def find_item_by_barcode(self, barcode: str) -> dict | None:
        try:
            return self._json("GET", "/items", {"item_barcode": barcode})
        except AlmaApiError as exc:
            if exc.code == ITEM_NOT_FOUND:
                return None
            raise

    def find_bib_by_other_system_number(self, number: str) -> dict | None:
        bibs = self._list("/bibs", "bib", {"other_system_id": number}, paged=False)
        return bibs[0] if bibs else None

    def get_bib(self, mms_id: str) -> dict | None:
        bibs = self._list("/bibs", "bib", {"mms_id": mms_id}, paged=False)
        return bibs[0] if bibs else None

    def bib_holdings(self, mms_id: str) -> list[dict]:
        """The bib's holdings (Alma's short form: no MARC); [] when there is no such bib."""
        try:
            return self._list(f"/bibs/{quote(mms_id, safe='')}/holdings", "holding", paged=False)
        except AlmaApiError as exc:
            if exc.code in BIB_OR_HOLDING_NOT_FOUND:
                return []
            raise

    def get_holding(self, mms_id: str, holding_id: str) -> dict | None:
        """One holding with its MARC record (MARCXML in ``anies``); None when the bib has no such holding."""
        try:
            return self._json("GET", f"/bibs/{quote(mms_id, safe='')}/holdings/{quote(holding_id, safe='')}")
        except AlmaApiError as exc:
            if exc.code in BIB_OR_HOLDING_NOT_FOUND:
                return None
            raise

    def user_loans(self, primary_id: str) -> list[dict]:
        return self._list(self._user_path(primary_id, "/loans"), "item_loan")

    def ensure_loan(
        self,
        primary_id: str,
        item_barcode: str,
        library: str,
        circ_desk: str,
        *,
        aleph_key: str,
        due_date: str | None = None,
    ) -> tuple[dict, bool, str | None]:
        """(loan, created, warning): the user's active loan of the item, made if missing.

        A loan has no field for the Aleph key; one active loan per item is its natural key.
        The POST carries ``circ_desk`` and ``library`` only (``rest_item_loan.xsd``: the
        item_loan elements tagged ``post``). Alma sets the loan date to the call's time (the
        Aleph loan date cannot be sent) and the due date by policy; a ``due_date`` from Aleph is
        then applied with ``PUT`` whose body is ``due_date`` alone, the one element tagged
        ``put`` (never the loan read back: its ``loan_status`` is the code ``ACTIVE``, which a
        JSON PUT must not send, and ``link`` and the rest are output only). Alma refuses past
        dates (401681): the warning, the loan stays.
        """

        def find() -> dict | None:
            return next(
                (loan for loan in self.user_loans(primary_id) if loan.get("item_barcode") == item_barcode),
                None,
            )

        body = {"circ_desk": {"value": circ_desk}, "library": {"value": library}}
        loan, created = self._create_once(
            find,
            lambda: self._json(
                "POST",
                self._user_path(primary_id, "/loans"),
                {"item_barcode": item_barcode},
                body,
                write=True,
            ),
            frozenset({ITEM_ON_LOAN}),
        )
        log.debug("loan %s (%s): %s", aleph_key, item_barcode, "created" if created else "exists")
        warning = None
        if due_date and loan.get("loan_id") and not _same_instant(loan.get("due_date"), due_date):
            try:
                loan = self._json(
                    "PUT",
                    self._user_path(primary_id, f"/loans/{loan['loan_id']}"),
                    body={"due_date": _utc(due_date)},
                )
            except AlmaApiError as exc:
                if isinstance(exc, AlmaQuotaExhausted | AlmaUnavailable | AlmaAuthError):
                    raise
                warning = f"due_date_not_set_alma_{exc.code}"
        return loan, created, warning

    @staticmethod
    def _item_path(mms_id: str, holding_id: str, item_pid: str) -> str:
        ids = (quote(x, safe="") for x in (mms_id, holding_id, item_pid))
        return "/bibs/{}/holdings/{}/items/{}".format(*ids)

    def scan_in_item(
        self,
        mms_id: str,
        holding_id: str,
        item_pid: str,
        *,
        library: str,
        circ_desk: str,
        item: dict | None = None,
    ) -> tuple[dict, bool]:
        """(item, scanned): the item scanned in at ``circ_desk`` of ``library``, which returns its loan.

        ``POST /bibs/{mms_id}/holdings/{holding_id}/items/{item_pid}?op=scan&library=&circ_desk=``
        (Alma's "Scan-in operation on an item", Bibs > Items). Looks first, like every write here:
        an item not on loan (``item_data.process_type`` other than ``LOAN``) is not scanned, it comes
        back as it is (``scanned`` False): a scan-in of an item in place is not a no-op in Alma (it
        can register in-house use, or send the item in transit). A scan-in whose answer was lost is
        looked for the same way (the item is no longer on loan) before it is sent again. ``item``:
        the item as the caller just read it, which serves as the first look.
        """
        path = self._item_path(mms_id, holding_id, item_pid)
        read = [item] if item is not None else []

        def returned() -> dict | None:
            current = read.pop() if read else self._json("GET", path)
            process = (current.get("item_data") or {}).get("process_type")
            code = process.get("value") if isinstance(process, dict) else process
            return None if code == "LOAN" else current

        params = {"op": "scan", "library": library, "circ_desk": circ_desk}
        return self._create_once(returned, lambda: self._json("POST", path, params, write=True))

    def renew_loan(
        self, user_id: str, loan_id: str, *, before: dict | None = None, loan: dict | None = None
    ) -> tuple[dict, bool]:
        """(loan, renewed): the user's active loan ``loan_id`` renewed by Alma's loan policy.

        ``POST /users/{user_id}/loans/{loan_id}?op=renew`` (Alma's "Renew loan", Users > Loans; no
        body). A renew is not idempotent in Alma (each one extends the due date and counts against
        the policy's renewals), so it is recognised by its effect: ``before`` is the loan as it was
        before this renew was first attempted (``due_date``, ``last_renew_date``; default: read
        now). When the loan's ``last_renew_date`` or ``due_date`` differs from ``before``, the
        renew has happened (``renewed`` False, nothing is sent); the same look follows a renew
        whose answer was lost. ``user_id`` may be any of the user's unique identifiers. ``loan``: the
        loan as the caller just read it, which serves as the first look.
        """
        loans_path = self._user_path(user_id, "/loans")
        read = [loan] if loan is not None else []

        def current() -> dict | None:
            if read:
                return read.pop()
            return next((x for x in self.user_loans(user_id) if x.get("loan_id") == loan_id), None)

        if before is None:
            before = current() or {}
            read = [before] if before else []
        marks = (before.get("last_renew_date"), before.get("due_date"))

        def renewed() -> dict | None:
            now = current()
            return (
                now
                if now is not None and (now.get("last_renew_date"), now.get("due_date")) != marks
                else None
            )

        return self._create_once(
            renewed,
            lambda: self._json(
                "POST", f"{loans_path}/{quote(loan_id, safe='')}", {"op": "renew"}, write=True
            ),
        )

    def user_requests(self, primary_id: str) -> list[dict]:
        return self._list(self._user_path(primary_id, "/requests"), "user_request")

    def ensure_request(
        self,
        primary_id: str,
        body: dict,
        *,
        aleph_key: str,
        item_pid: str | None = None,
        mms_id: str | None = None,
    ) -> tuple[dict, bool]:
        """(request, created): an item-level (``item_pid``) or title-level (``mms_id``) request."""
        if not (item_pid or mms_id):
            raise ValueError("a request needs item_pid (item level) or mms_id (title level)")
        body = {**body, "comment": with_marker(body.get("comment"), aleph_key)}
        marker = f"[aleph:{aleph_key}]"

        def find() -> dict | None:
            for request in self.user_requests(primary_id):
                if marker in (request.get("comment") or "") or (
                    item_pid and request.get("item_id") == item_pid
                ):
                    return request
            return None

        params = {"item_pid": item_pid} if item_pid else {"mms_id": str(mms_id)}
        return self._create_once(
            find,
            lambda: self._json("POST", self._user_path(primary_id, "/requests"), params, body, write=True),
            frozenset({REQUEST_EXISTS}),
        )

    def user_fees(self, primary_id: str) -> list[dict]:
        return self._list(self._user_path(primary_id, "/fees"), "fee", paged=False)

    def ensure_fee(self, primary_id: str, fee: dict, *, aleph_key: str) -> tuple[dict, bool, str | None]:
        """(fee, created, warning): Alma keeps no external id on a fee, so its comment carries the marker.

        ``warning`` is ``fee_twins_in_alma`` when more than one active fee carries the marker: a
        write Alma committed after the client had stopped looking for it (see the module doc).
        Alma's API cannot delete a fee; waiving the twin needs one of the institution's
        transaction reasons, so it is left to the operator.
        """
        fee = {**fee, "comment": with_marker(fee.get("comment"), aleph_key)}
        marker = f"[aleph:{aleph_key}]"
        twins: list[dict] = []

        def find() -> dict | None:
            twins[:] = [f for f in self.user_fees(primary_id) if marker in (f.get("comment") or "")]
            return twins[0] if twins else None

        found, created = self._create_once(
            find,
            lambda: self._json("POST", self._user_path(primary_id, "/fees"), body=fee, write=True),
        )
        return found, created, "fee_twins_in_alma" if len(twins) > 1 else None


def _instant(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def _same_instant(a: Any, b: Any) -> bool:
    x, y = _instant(a), _instant(b)
    return x is not None and y is not None and x.tzinfo is not None and y.tzinfo is not None and x == y


def _utc(value: str) -> str:
    """An ISO 8601 time with an offset as Alma writes it (UTC, ``Z``); other text unchanged."""
    instant = _instant(value)
    if instant is None or instant.tzinfo is None:
        return value
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
