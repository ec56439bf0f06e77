"""Sustained Alma API rate against the emulator: what the per-second limit costs, and how close we get.

    .venv/bin/python bench/alma_api.py [--seconds 15] [--threads N] [--limit 25] [--latency-ms 250]
                                       [--json out.json]
    .venv/bin/python bench/alma_api.py --latency-ms 200 --scenarios one_thread,tuned   # Alma-like round trips

Starts the Alma API emulator (a subprocess, so the server does not share the client's
interpreter) over a database with 500 users, answering every call ``--latency-ms`` late
(Alma's own round trip is 150–400 ms), then runs, each with ``--threads`` threads (default:
``AlmaRate(limit).workers``, what the loader runs) calling ``GET /users/{id}``
through :class:`AlmaClient` for a fixed time:

- ``baseline``: no server limit, no client throttle — the emulator's raw throughput;
- ``bucket_burst``: the textbook token bucket at the limit (25/s, depth 25);
- ``even_at_limit``: even spacing at exactly the limit (25/s, depth 1, no whole-second cap);
- ``tuned``: the client's default (``throttle.tuned``: 96 % of the limit, evenly spaced, at most
  limit − 1 calls per wall-clock second);
- ``one_thread`` (not run by default): ``tuned`` on a single thread, as the loader ran before
  its workers came from the rate — at ``--latency-ms 200`` it makes about 5 calls/s.

Per scenario: successful calls/s at steady state (after the first second, so a bucket's
opening burst does not count), % of the limit, 429s (all, and after the first second),
p50/p95 latency of the HTTP round trip (to the response headers). The machine's load average
is printed above the table: latencies depend on it, the rates should not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from aleph2alma.alma.client import AlmaApiError, AlmaClient
from aleph2alma.alma.rate import AlmaRate
from aleph2alma.alma.throttle import Throttle, tuned
from aleph2alma_dev.demo.alma_emulator import API
from aleph2alma_dev.demo.alma_emulator_store import Store

N_USERS = 500


@dataclass
class Result:
    scenario: str
    server_limit: str
    client: str
    threads: int
    seconds: float
    calls_per_s: float
    pct_of_limit: float | None
    http_429: int
    http_429_steady: int
    p50_ms: float
    p95_ms: float


def seed(db: Path) -> None:
    store = Store(db)
    for i in range(N_USERS):
        store.save_user(
            {
                "primary_id": f"U{i:05d}",
                "record_type": {"value": "PUBLIC"},
                "user_group": {"value": "UG"},
                "first_name": "Bench",
                "last_name": str(i),
            },
            replace=True,
        )
    store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_emulator(db: Path, per_second: int, latency_ms: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aleph2alma_dev.demo.alma_emulator",
            "--port",
            str(port),
            "--db",
            str(db),
            "--per-second",
            str(per_second),
            "--daily-quota",
            str(10**9),
            "--latency-ms",
            str(latency_ms),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(root + "/", timeout=1).headers.get("X-Aleph2alma-Emulator") == "true":
                return proc, root + API
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the emulator did not start on port {port}")


def run(
    name: str,
    base: str,
    throttle: Throttle,
    limit: int | None,
    client_label: str,
    threads: int,
    seconds: float,
) -> Result:
    events: list[tuple[float, int, float]] = []  # (time of answer, status, latency)

    def on_request(request: httpx.Request) -> None:
        request.extensions["t0"] = time.perf_counter()

    def on_response(response: httpx.Response) -> None:
        now = time.perf_counter()
        events.append((now, response.status_code, now - response.request.extensions["t0"]))

    session = httpx.Client(
        event_hooks={"request": [on_request], "response": [on_response]},
        limits=httpx.Limits(max_connections=threads * 2),
    )
    client = AlmaClient(base, "bench-key", session=session, throttle=throttle, quota_floor=0, max_retries=20)
    start = time.perf_counter()
    stop_at = start + seconds

    def worker(seed_: int) -> None:
        rng = random.Random(seed_)
        while time.perf_counter() < stop_at:
            try:
                client.get_user(f"U{rng.randrange(N_USERS):05d}")
            except AlmaApiError as exc:
                print(f"  {name}: {exc}", file=sys.stderr)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    session.close()
    steady = [e for e in events if start + 1 <= e[0] <= stop_at and e[1] < 400]  # after the first second
    latencies = sorted(e[2] * 1000 for e in events if e[1] < 400)
    rate = len(steady) / (seconds - 1)
    return Result(
        scenario=name,
        server_limit=f"{limit}/s" if limit else "none",
        client=client_label,
        threads=threads,
        seconds=seconds,
        calls_per_s=round(rate, 2),
        pct_of_limit=round(100 * rate / limit, 1) if limit else None,
        http_429=sum(1 for e in events if e[1] == 429),
        http_429_steady=sum(1 for e in events if e[1] == 429 and e[0] >= start + 1),
        p50_ms=round(statistics.median(latencies), 1) if latencies else float("nan"),
        p95_ms=round(latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else float("nan"),
    )


def table(results: list[Result]) -> str:
    head = [
        "scenario",
        "server limit",
        "client throttle",
        "threads",
        "secs",
        "calls/s steady",
        "% of limit",
        "429s",
        "429s after 1st s",
        "p50 ms",
        "p95 ms",
    ]
    rows = [
        [
            r.scenario,
            r.server_limit,
            r.client,
            str(r.threads),
            f"{r.seconds:g}",
            f"{r.calls_per_s:.1f}",
            "—" if r.pct_of_limit is None else f"{r.pct_of_limit:.1f} %",
            str(r.http_429),
            str(r.http_429_steady),
            f"{r.p50_ms:.1f}",
            f"{r.p95_ms:.1f}",
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    line = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    return "\n".join(
        [
            line.format(*head),
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *(line.format(*row) for row in rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="per throttled scenario")
    parser.add_argument("--baseline-seconds", type=float, default=5.0, help="at least 2")
    parser.add_argument("--threads", type=int, help="default: AlmaRate(limit).workers, as the loader")
    parser.add_argument("--limit", type=int, default=25, help="the emulator's per-second threshold")
    parser.add_argument(
        "--latency-ms", type=int, default=250, help="every emulator call takes this long (Alma: ~250 ms)"
    )
    parser.add_argument("--scenarios", default="baseline,bucket_burst,even_at_limit,tuned")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    wanted = args.scenarios.split(",")
    threads = args.threads or AlmaRate(args.limit).workers  # the loader's default (expects 400 ms calls)
    work = Path(tempfile.mkdtemp(prefix="alma-bench-"))
    results: list[Result] = []
    try:
        seed(work / "seed.sqlite")
        tuned_label = f"{tuned(args.limit).rate:g}/s even, ≤{tuned(args.limit).cap}/wall s"
        scenarios: list[tuple[str, Throttle, str, int, int]] = [
            ("baseline", Throttle(float("inf")), "none", 0, threads),
            (
                "bucket_burst",
                Throttle(args.limit, burst=args.limit),
                f"{args.limit}/s, depth {args.limit}",
                args.limit,
                threads,
            ),
            ("even_at_limit", Throttle(args.limit), f"{args.limit}/s even", args.limit, threads),
            ("tuned", tuned(args.limit), tuned_label, args.limit, threads),
            ("one_thread", tuned(args.limit), tuned_label, args.limit, 1),
        ]
        for name, throttle, label, limit, n_threads in scenarios:
            if name not in wanted:
                continue
            db = work / f"{name}.sqlite"
            shutil.copy(work / "seed.sqlite", db)
            proc, base = start_emulator(db, limit, args.latency_ms)
            try:
                time.sleep(1.1)  # a fresh wall-clock second for the server's counter
                seconds = args.baseline_seconds if name == "baseline" else args.seconds
                results.append(run(name, base, throttle, limit or None, label, n_threads, seconds))
                print(f"  {name}: {results[-1].calls_per_s:.1f} calls/s", file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; emulator in a subprocess, "
        f"answering {args.latency_ms} ms late"
    )
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
