"""Alma API EMULATOR for demos and tests — not Ex Libris Alma.

``aleph2alma-dev demo alma --port 8765`` serves, under ``/almaws/v1``, exactly the endpoints
:class:`aleph2alma.alma.client.AlmaClient` uses, with Alma's JSON shapes, error codes and
limits. Every response carries ``X-Aleph2alma-Emulator: true``; ``/`` says what this is.

========================================  ====================================================
endpoint                                  errors (HTTP 400 unless noted; Alma's codes)
========================================  ====================================================
GET  /users/{id}                          401861 user not found
POST /users                               401664 mandatory field missing, 401857 bad account
                                          type, 401854 external user without external_id,
                                          401853 internal user with one, 401851 user (or one
                                          of its identifiers) already exists
GET  /users/{id}/loans                    401890 user not found
POST /users/{id}/loans?item_barcode=      401890, 401672 no barcode/pid, 401689* no item
                                          with the barcode, 401664 circ_desk/library missing,
                                          401651* item not loanable (already on loan)
PUT  /users/{id}/loans/{loan_id}          401823 no such loan, 401824 no due date, 401681
                                          due date in the past
GET  /users/{id}/requests                 401890
POST /users/{id}/requests?item_pid=|mms_id=  401890, 401129 nothing can fulfil it, 401136
                                          patron has an active request for the item, 401664
GET  /users/{id}/fees                     401861
POST /users/{id}/fees                     401861, 4019991/4019992 fee type missing/invalid,
                                          4019994 amount missing, 4019996 owner missing
GET  /items?item_barcode=                 302 to /bibs/{mms}/holdings/{hid}/items/{pid} (as Alma
                                          does); 401689 no items found for the barcode
GET  /bibs/{mms}/holdings/{hid}/items/{pid}  401652
GET  /bibs?other_system_id=|mms_id=       (an empty list when nothing matches)
GET  /bibs/{mms}/holdings                 402203* no bib with the MMS id (an empty list when the
                                          bib has no holdings)
GET  /bibs/{mms}/holdings/{hid}           402203*, 402204* no such holding on the bib
GET  /conf/libraries                      —
GET  /conf/libraries/{code}/locations     402221* no such library
========================================  ====================================================

Codes and messages are those of Alma's API documentation for each endpoint, except the
starred ones, where the documentation lists none for the case: 401689 is what Alma answers
for an unknown barcode on ``GET /items``, 401651 is its generic "Item is not loanable";
402203/402204 are the emulator's for an unknown MMS id / holding id, 402221 for an unknown
library. The configured libraries and locations are those the demo's cutover form maps to
(:mod:`.alma_emulator_conf`).

Every Alma call needs ``Authorization: apikey <key>`` (or ``?apikey=``; ``--api-key`` pins
one) else 400 ``UNAUTHORIZED``; it counts against a daily quota (``--daily-quota``; past it
429 ``DAILY_THRESHOLD``) reported in ``X-Exl-Api-Remaining``; more than ``--per-second`` calls
in one wall-clock second get 429 ``PER_SECOND_THRESHOLD`` (rejected calls use no quota). These
three come as Alma's gateway sends them, XML ``web_service_result`` whatever the client asked
for; the endpoints' own errors are JSON. ``--latency-ms`` makes every call take that long
(default 0; ``bench/alma_api.py`` runs at Alma's ~250 ms).

Fulfilment rules on ``POST /users/{id}/loans`` (``Limits``): a patron whose ``expiry_date`` has
passed, a patron with an active ``user_block``, a patron at ``--loan-limit`` active loans, and an
item whose policy is in ``--not-loanable-policy`` or whose process type is missing, lost or in
technical services are refused with 401651 "Item is not loanable." and the reason. Alma's
documentation for the call lists 401651 as its one loan refusal (with 401153, the desk); which
code Alma gives for an expired or blocked patron or a loan limit is not published (unverified).
Injected faults, drawn from a seeded RNG: bursts of 429 (``--fault-429-rate``, burst length
``--fault-429-burst``), 500s (``--fault-500-rate``; half before the handler, half after it ran
and committed, as a real outage can), slow calls (``--slow-ms`` for ``--slow-rate`` of the
calls; ``--slow-phase after``, the default: the call commits, then answers late, so a client
that timed out has still written; ``before``: the call waits, then commits, after such a client
gave up). ``make_app`` takes the clock and the sleep, so tests run on virtual time.

Admin endpoints, not Alma's (no key, no quota):
``POST /_emulator/import/{bibs|holdings|items|users}`` (body: ISO 2709 bibs / ISO 2709 MARC 21
holdings / items CSV / users XML, in that order; :mod:`.alma_emulator_store` has the import
profiles), ``GET /_emulator/counts`` (records per kind, for reconciliation: ``holdings`` are
the imported MARC holdings, ``holdings_synthesised`` those made for items with no HOL
record), ``GET /_emulator/stats``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from flask import Flask, Response, g, redirect, request

from aleph2alma_dev.demo import alma_emulator_conf, alma_emulator_routes
from aleph2alma_dev.demo.alma_emulator_config import Faults, Limits
from aleph2alma_dev.demo.alma_emulator_routes import alma_error, gateway_error
from aleph2alma_dev.demo.alma_emulator_store import (
    Store,
    import_bibs,
    import_holdings,
    import_items,
    import_users,
    text_stream,
)

API = "/almaws/v1"
HEADER = "X-Aleph2alma-Emulator"
PER_SECOND_MESSAGE = "HTTP requests are more than allowed per second"
DAILY_MESSAGE = (
    "Daily API Request Threshold has been reached. For details see: "
    "https://developers.exlibrisgroup.com/alma/apis#threshold"
)


@dataclass
class _Gate:
    """Quota, per-second threshold and faults; counters for ``/_emulator/stats``."""

    limits: Limits
    faults: Faults
    clock: Callable[[], float] = time.time  # wall-clock seconds: the per-second threshold's windows
    lock: threading.Lock = field(default_factory=threading.Lock)
    day: date = field(default_factory=date.today)
    used: int = 0
    second: int = -1
    in_second: int = 0
    burst_left: int = 0
    stats: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.faults.seed)

    def count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    @property
    def remaining(self) -> int:
        return max(0, self.limits.daily_quota - self.used)

    def admit(self) -> tuple[Response | None, str | None, bool]:
        """(refusal, 500 phase "before"/"after"/None, slow?) for one Alma call."""
        with self.lock:
            self.count("calls")
            if date.today() != self.day:
                self.day, self.used = date.today(), 0
            if self.used >= self.limits.daily_quota:
                self.count("429_daily")
                return gateway_error("DAILY_THRESHOLD", DAILY_MESSAGE, 429), None, False
            now = int(self.clock())
            if now != self.second:
                self.second, self.in_second = now, 0
            if self.limits.per_second and self.in_second >= self.limits.per_second:
                self.count("429_per_second")
                return gateway_error("PER_SECOND_THRESHOLD", PER_SECOND_MESSAGE, 429), None, False
            if self.burst_left or (self.faults.rate_429 and self.rng.random() < self.faults.rate_429):
                self.burst_left = (self.burst_left or self.faults.burst_429) - 1
                self.count("429_injected")
                refusal = gateway_error("PER_SECOND_THRESHOLD", PER_SECOND_MESSAGE, 429)
                if self.faults.retry_after is not None:
                    refusal.headers["Retry-After"] = f"{self.faults.retry_after:g}"
                return refusal, None, False
            self.in_second += 1
            self.used += 1
            phase = None
            if self.faults.rate_500 and self.rng.random() < self.faults.rate_500:
                phase = "before" if self.rng.random() < 0.5 else "after"
                self.count(f"500_{phase}")
            slow = bool(self.faults.slow_ms) and self.rng.random() < self.faults.slow_rate
            if slow:
                self.count("slow")
            return None, phase, slow


def _server_error() -> Response:
    return alma_error(
        "INTERNAL_SERVER_ERROR", "The server encountered an internal error (emulator fault).", 500
    )


def make_app(
    db_path: str | Path,
    faults: Faults | None = None,
    *,
    limits: Limits | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Flask:
    """The emulator as a WSGI app over the SQLite file ``db_path``.

    ``clock`` (wall-clock seconds: the per-second threshold) and ``sleep`` (slow faults) are
    injectable: a test on virtual time waits for nothing.
    """
    limits, faults = limits or Limits(), faults or Faults()
    store, gate = Store(db_path), _Gate(limits, faults, clock)
    app = Flask("alma_emulator")
    app.config["STORE"], app.config["GATE"], app.config["LIMITS"] = store, gate, limits

    @app.before_request
    def _admit() -> Response | None:
        if not request.path.startswith(API + "/"):
            return None
        header = request.headers.get("Authorization", "")
        key = header[7:].strip() if header.lower().startswith("apikey ") else request.args.get("apikey", "")
        if not key or (limits.api_key is not None and key != limits.api_key):
            return gateway_error("UNAUTHORIZED", "API-key not defined or not configured to allow this API.")
        if limits.latency_ms:
            sleep(limits.latency_ms / 1000)  # every call takes Alma's time (bench: --latency-ms 250)
        refusal, phase, slow = gate.admit()
        g.phase, g.slow = phase, slow
        if refusal is None and phase == "before":
            return _server_error()
        if refusal is None and slow and faults.slow_phase == "before":
            sleep(faults.slow_ms / 1000)  # the write commits late
        return refusal

    @app.after_request
    def _label(response: Response) -> Response:
        if getattr(g, "phase", None) == "after":
            response = _server_error()
        if getattr(g, "slow", False) and faults.slow_phase == "after":
            sleep(faults.slow_ms / 1000)  # committed, the answer comes late
        response.headers[HEADER] = "true"
        response.headers["X-Exl-Api-Remaining"] = str(gate.remaining)
        return response

    @app.get("/")
    def _root() -> Response:
        counts = store.counts()
        return Response(
            "<!doctype html><title>Alma API emulator</title>"
            "<h1>Alma API emulator — not Ex Libris Alma</h1>"
            "<p>aleph2alma's stand-in for Alma's REST API, for demos and tests. "
            f"Base URL: <code>{API}</code>. "
            f"Limits: {limits.per_second or 'no'} calls/s, {limits.daily_quota} calls/day "
            f"({gate.remaining} left). Records: {counts}.</p>"
            "<p>Admin: POST /_emulator/import/{bibs,holdings,items,users}, "
            "GET /_emulator/counts, GET /_emulator/stats.</p>",
            mimetype="text/html",
        )

    @app.get("/_emulator/counts")
    def _counts() -> Response:
        return _json({"emulator": True, **store.counts()})

    @app.get("/_emulator/stats")
    def _stats() -> Response:
        with gate.lock:
            return _json(
                {
                    "emulator": True,
                    "remaining": gate.remaining,
                    **gate.stats,
                    "limits": {
                        k: sorted(v) if isinstance(v, frozenset) else v
                        for k, v in asdict(limits).items()
                        if k != "api_key"
                    },
                    "faults": asdict(faults),
                }
            )

    @app.post("/_emulator/import/<kind>")
    def _import(kind: str) -> Response:
        data = request.get_data()
        if kind == "bibs":
            return _json({"emulator": True, "bibs": import_bibs(store, io.BytesIO(data))})
        if kind == "holdings":
            return _json({"emulator": True, "holdings": import_holdings(store, io.BytesIO(data))})
        if kind == "items":
            return _json({"emulator": True, "items": import_items(store, text_stream(data))})
        if kind == "users":
            result = import_users(store, io.BytesIO(data), request.args.get("external_id", ""))
            return _json({"emulator": True, "users": result})
        return _json(
            {"emulator": True, "error": f"unknown import {kind!r}; expected bibs, holdings, items or users"},
            404,
        )

    @app.get(f"{API}/items")
    def _item_by_barcode() -> Response:
        barcode = request.args.get("item_barcode", "")
        row = store.item_row(barcode=barcode) if barcode else None
        if row is None:
            return alma_error("401689", f"No items found for barcode {barcode}.")
        target = f"{API}/bibs/{row['_mms_id']}/holdings/{row['_holding_id']}/items/{row['pid']}"
        return redirect(request.host_url.rstrip("/") + target, 302)  # type: ignore[return-value]

    alma_emulator_routes.register(app, API, store, limits)
    alma_emulator_conf.register(app, API, alma_emulator_conf.demo_configuration(), _json, alma_error)

    @app.errorhandler(404)
    def _not_found(_exc: Exception) -> Response:
        return alma_error(
            "404",
            f"{request.method} {request.path} is not an endpoint of this emulator (see / for the list).",
            404,
        )

    return app


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=False), status, mimetype="application/json")


class _KeepAliveHandler(BaseHTTPRequestHandler):
    """WSGI over ``http.server`` with HTTP/1.1 keep-alive (werkzeug's dev server closes every connection).

    Request bodies need a Content-Length (as httpx sends them); responses always carry one.
    """

    protocol_version = "HTTP/1.1"
    server_version = "aleph2alma-alma-emulator"  # not Ex Libris Alma
    timeout = 60  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed-ACK stall)
    app: Any = None

    def _run(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.send_error(411, "send a Content-Length")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path, _, query = self.path.partition("?")
        host, port = self.connection.getsockname()[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "QUERY_STRING": query,
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "SERVER_PROTOCOL": self.request_version,
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return lambda data: None

        result = self.app(environ, start_response)
        try:
            payload = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        status, headers = started
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):  # the client gave up (e.g. its timeout was shorter)
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _run

    def log_message(self, format: str, *args: Any) -> None:  # http.server's signature
        logging.getLogger("alma_emulator").debug(format, *args)


def make_server(host: str, port: int, app: Any) -> ThreadingHTTPServer:
    """A threaded HTTP server (keep-alive) running the WSGI ``app``."""
    handler = type("AlmaEmulatorHandler", (_KeepAliveHandler,), {"app": staticmethod(app)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(
    port: int,
    db_path: str | Path,
    faults: Faults | None = None,
    *,
    limits: Limits | None = None,
    host: str = "127.0.0.1",
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Start the emulator on ``host:port`` (0: a free port, see ``server.server_port``) in a thread.

    Stop it with ``server.shutdown()`` then ``server.server_close()``.
    """
    server = make_server(host, port, make_app(db_path, faults, limits=limits))
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"alma-emulator-{server.server_port}",
        daemon=True,
    )
    thread.start()
    return server, thread


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aleph2alma-dev demo alma",
        description="Alma API EMULATOR (not Ex Libris Alma) for demos and tests.",
    )
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--db", type=Path, default=Path("alma-emulator.sqlite"), help="SQLite file (created if missing)"
    )
    p.add_argument("--per-second", type=int, default=25, help="per-second threshold; 0 = off")
    p.add_argument("--daily-quota", type=int, default=100_000)
    p.add_argument("--api-key", help="accept only this key (default: any non-empty key)")
    p.add_argument("--loan-days", type=int, default=28)
    p.add_argument("--latency-ms", type=int, default=0, help="every call takes this long (Alma: ~250)")
    p.add_argument("--loan-limit", type=int, default=0, help="active loans per patron; 0 = none")
    p.add_argument(
        "--not-loanable-policy", action="append", default=[], help="item policy code that cannot loan"
    )
    p.add_argument("--fault-429-rate", type=float, default=0.0)
    p.add_argument("--fault-429-burst", type=int, default=3)
    p.add_argument("--fault-500-rate", type=float, default=0.0)
    p.add_argument("--slow-ms", type=int, default=0)
    p.add_argument("--slow-rate", type=float, default=1.0)
    p.add_argument(
        "--slow-phase",
        choices=("after", "before"),
        default="after",
        help="after: commit, then answer late; before: wait, then commit (after a client's timeout)",
    )
    p.add_argument("--retry-after", type=float, help="Retry-After seconds on injected 429s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--import-bibs", type=Path, action="append", default=[], help="ISO 2709 file, before serving"
    )
    p.add_argument("--import-items", type=Path, action="append", default=[], help="items CSV, before serving")
    p.add_argument("--import-users", type=Path, action="append", default=[], help="users XML, before serving")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = Store(args.db)
    for kind, paths, importer in (
        ("bibs", args.import_bibs, import_bibs),
        ("items", args.import_items, import_items),
        ("users", args.import_users, import_users),
    ):
        for path in paths:
            print(f"imported {kind} from {path}: {importer(store, path)}")
    store.close()
    limits = Limits(
        args.per_second,
        args.daily_quota,
        args.api_key,
        args.loan_days,
        latency_ms=args.latency_ms,
        loan_limit=args.loan_limit,
        not_loanable_policies=frozenset(args.not_loanable_policy),
    )
    faults = Faults(
        args.fault_429_rate,
        args.fault_429_burst,
        args.fault_500_rate,
        args.slow_ms,
        args.slow_rate,
        args.slow_phase,
        args.retry_after,
        args.seed,
    )
    server = make_server(args.host, args.port, make_app(args.db, faults, limits=limits))
    print(
        f"Alma API EMULATOR (not Ex Libris Alma): http://{args.host}:{server.server_port}{API} "
        f"— {args.per_second or 'no'} calls/s, {args.daily_quota} calls/day, data in {args.db}",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
