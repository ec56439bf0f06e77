"""Concurrency from the rate: real threads on a virtual clock, calls counted per 1-second window.

The workers are real threads sharing one :class:`AlmaClient` (its throttle, its HTTP session);
only time is simulated. :class:`VirtualTime` moves the clock when every worker is asleep (in
the throttle, or in the fake Alma's latency), to the earliest wake-up. Nothing waits on the
real clock and every assertion counts calls: at most ``per_second`` in any window of one
second, at most the throttle's cap in any wall-clock second (how Alma counts), and at least
90 % of ``per_second`` at steady state with the workers :class:`AlmaRate` derives.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest

from aleph2alma.alma.client import AlmaClient
from aleph2alma.alma.client_load import load
from aleph2alma.alma.rate import ALMA_POOL, ALMA_POOL_SLOTS, MAX_WORKERS, AlmaRate
from aleph2alma.alma.throttle import tuned
from aleph2alma.errors import ConfigError
from aleph2alma.rejects import RejectLog

WORKER = "alma-load-"  # the loader's thread names; the simulation's own workers use them too
WALL_OFFSET = 1_700_000_000.37  # wall clock = virtual monotonic time + this (an arbitrary phase)
STALL = 30.0  # real seconds before a stuck simulation fails instead of hanging


class VirtualTime:
    """A clock for real threads: it advances only when every live worker thread sleeps.

    Worker threads are the live threads whose name starts with ``WORKER``; a worker that is
    not in :meth:`sleep` (running, waiting on a lock or a queue) holds the clock still.
    Reading the clock yields the processor, so threads interleave inside the throttle's
    critical section (without its lock, workers woken together take the same slot).
    """

    def __init__(self) -> None:
        self._now = 0.0
        self._cond = threading.Condition()
        self._sleeping: dict[int, tuple[float, int]] = {}  # thread id → (wake-up, ticket)
        self._woken: set[int] = set()
        self._tickets = itertools.count()

    def now(self) -> float:
        os.sched_yield()  # let other threads run here: the throttle reads its clocks under its lock
        return self._now

    def wall(self) -> float:
        os.sched_yield()
        return self._now + WALL_OFFSET

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        me = threading.get_ident()
        with self._cond:
            ticket = next(self._tickets)
            self._sleeping[me] = (self._now + seconds, ticket)
            while ticket not in self._woken:
                self._advance_if_all_asleep()
                if ticket in self._woken:
                    break
                if not self._cond.wait(timeout=STALL):
                    raise RuntimeError(f"virtual time stalled at {self._now:.3f}: a worker never slept")
            self._woken.discard(ticket)

    def _advance_if_all_asleep(self) -> None:
        workers = [t.ident for t in threading.enumerate() if t.name.startswith(WORKER) and t.is_alive()]
        if not self._sleeping or any(ident not in self._sleeping for ident in workers):
            return
        wake = min(at for at, _ in self._sleeping.values())
        self._now = max(self._now, wake)
        for ident, (at, ticket) in list(self._sleeping.items()):
            if at <= wake:
                del self._sleeping[ident]
                self._woken.add(ticket)
        self._cond.notify_all()

    def poll(self) -> None:
        """Called by the test's main thread while it waits: a worker that ended may free the clock."""
        with self._cond:
            self._advance_if_all_asleep()


@dataclass
class FakeAlma:
    """Alma's users API behind an ``httpx.MockTransport``: each call takes ``latency`` virtual seconds."""

    time: VirtualTime
    latency: float
    calls: list[tuple[float, str]] = field(default_factory=list)  # (virtual time, thread name)
    users: set[str] = field(default_factory=set)
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.calls.append((self.time.now(), threading.current_thread().name))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.time.sleep(self.latency)
        finally:
            with self._lock:
                self.in_flight -= 1
        if request.method == "POST":
            user = json.loads(request.content)
            with self._lock:
                self.users.add(user["primary_id"])
            return httpx.Response(200, json=user)
        primary_id = request.url.path.rsplit("/", 1)[-1]
        if primary_id in self.users:
            return httpx.Response(200, json={"primary_id": primary_id})
        return httpx.Response(
            400,
            json={
                "errorsExist": True,
                "errorList": {
                    "error": [
                        {
                            "errorCode": "401861",
                            "errorMessage": f"User with identifier {primary_id} was not found.",
                        }
                    ]
                },
            },
        )

    def client(self, rate: AlmaRate) -> AlmaClient:
        throttle = replace(
            tuned(rate.per_second), clock=self.time.now, wall=self.time.wall, sleep=self.time.sleep
        )
        session = httpx.Client(transport=httpx.MockTransport(self.handle))
        return AlmaClient(
            "https://alma.example/almaws/v1",
            "key",
            per_second=rate.per_second,
            latency=rate.latency,
            session=session,
            throttle=throttle,
            quota_floor=0,
        )

    def times(self) -> list[float]:
        return sorted(t for t, _ in self.calls)


def most_in_any_second(times: list[float]) -> int:
    """The most calls in any half-open window ``[t, t + 1)`` (windows starting at a call suffice)."""
    most, j = 0, 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < start + 1:
            j += 1
        most = max(most, j - i)
    return most


def most_in_a_wall_second(times: list[float]) -> int:
    return max(Counter(int(t + WALL_OFFSET) for t in times).values())


def steady_rate(times: list[float], start: float, end: float) -> float:
    """Calls per second in ``[start, end)``."""
    return sum(1 for t in times if start <= t < end) / (end - start)


def run_workers(time: VirtualTime, n: int, work: Callable[[int], None]) -> None:
    """``work(i)`` on ``n`` worker threads that start together (waiting at the barrier holds the clock)."""
    ready = threading.Barrier(n)

    def start(i: int) -> None:
        ready.wait()
        work(i)

    threads = [threading.Thread(target=start, args=(i,), name=f"{WORKER}sim-{i}") for i in range(n)]
    for thread in threads:
        thread.start()
    join(time, threads)


def join(time: VirtualTime, threads: list[threading.Thread]) -> None:
    for thread in threads:
        while thread.is_alive():
            time.poll()
            thread.join(timeout=0.01)


# -- the budget ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per_second", "latency", "workers"),
    [
        pytest.param(25, 0.4, 10, id="25/s at 400 ms: 10"),
        pytest.param(25, 0.2, 5, id="25/s at 200 ms: 5"),
        pytest.param(25, 0.15, 4, id="25/s at 150 ms: 4"),
        pytest.param(2, 0.15, 1, id="at least 1"),
        pytest.param(500, 0.4, MAX_WORKERS, id="at most MAX_WORKERS"),
        pytest.param(0, 0.4, 1, id="unpaced: 1"),
    ],
)
def test_workers_keep_per_second_times_latency_in_flight(
    per_second: float, latency: float, workers: int
) -> None:
    assert AlmaRate(per_second, latency).workers == workers


def test_rate_comes_from_the_connection_extra() -> None:
    assert AlmaRate.from_extra({}) == AlmaRate(25, 0.4)
    assert AlmaRate.from_extra({"per_second": "50", "latency_ms": 250}) == AlmaRate(50, 0.25)
    with pytest.raises(ConfigError, match="'per_second' must be a number, got 'fast'"):
        AlmaRate.from_extra({"per_second": "fast"})
    with pytest.raises(ConfigError, match="latency must be a positive number"):
        AlmaRate.from_extra({"latency_ms": 0})


def test_the_client_carries_its_rate() -> None:
    with AlmaClient("https://alma.example/almaws/v1", "key", per_second=40, latency=0.3) as client:
        assert client.rate == AlmaRate(40, 0.3) and client.rate.workers == 12
    with AlmaClient("https://alma.example/almaws/v1", "key") as client:
        assert client.rate.workers == 10
    with pytest.raises(ConfigError):
        AlmaClient("https://alma.example/almaws/v1", "key", latency=-1)


def test_one_alma_task_takes_the_whole_pool() -> None:
    assert ALMA_POOL == "alma_api" and ALMA_POOL_SLOTS == 25


# -- threads on the virtual clock -------------------------------------------------------------


@pytest.mark.parametrize("per_second", [25, 10])
@pytest.mark.parametrize("expected_latency", [0.4, 0.2], ids=["sized for 400 ms", "sized for 200 ms"])
def test_derived_workers_reach_the_rate_and_never_pass_it(per_second: float, expected_latency: float) -> None:
    """Alma answers in 200 ms; the workers AlmaRate derives keep ≥ 90 % of per_second, never more."""
    time = VirtualTime()
    alma = FakeAlma(time, latency=0.2)
    rate = AlmaRate(per_second, expected_latency)
    client = alma.client(rate)
    end = 30.0

    def work(i: int) -> None:
        while time.now() < end:
            client.get_user(f"U{i}")

    run_workers(time, rate.workers, work)

    times = alma.times()
    assert len({name for _, name in alma.calls}) == rate.workers
    assert most_in_any_second(times) <= per_second
    assert most_in_a_wall_second(times) <= per_second - 1  # the throttle's cap: one call of slack
    assert steady_rate(times, 1.0, end) >= 0.9 * per_second
    assert client.stats.requests == len(times) and client.stats.throttled == 0


def test_one_worker_makes_one_call_per_round_trip() -> None:
    """What the review measured: one thread at 200 ms makes 5 calls/s, whatever the limit."""
    time = VirtualTime()
    alma = FakeAlma(time, latency=0.2)
    client = alma.client(AlmaRate(25))

    def work(_: int) -> None:
        while time.now() < 10:
            client.get_user("U1")

    run_workers(time, 1, work)
    assert steady_rate(alma.times(), 1.0, 10.0) == pytest.approx(5, abs=0.2)


def users(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"primary_id": f"P{i:05d}", "user_group": {"value": "UG"}}


def test_load_runs_the_rates_workers_by_default_and_stays_under_the_limit() -> None:
    """The production entry point: ``load`` without ``workers`` runs ``client.rate.workers`` threads."""
    time = VirtualTime()
    alma = FakeAlma(time, latency=0.2)
    client = alma.client(AlmaRate(25))  # 400 ms expected: 10 workers
    done: dict[str, Any] = {}
    # 200 users, 2 calls each (look, then create); about 20 per worker, under the lanes' queue of 64
    feeder = threading.Thread(
        target=lambda: done.update(stats=load(client, "users", users(200), RejectLog()))
    )
    feeder.start()
    join(time, [feeder])

    stats = done["stats"]
    assert stats.workers == client.rate.workers == 10
    assert (stats.created, stats.records_in, stats.balanced, stats.api_calls) == (200, 200, True, 400)
    assert len({name for _, name in alma.calls}) == 10
    assert (
        alma.max_in_flight >= 4
    )  # 24 calls/s × 200 ms: about 5 in flight, the other workers in the throttle
    times = alma.times()
    assert most_in_any_second(times) <= 25
    assert most_in_a_wall_second(times) <= 24
    assert steady_rate(times, 1.0, 10.0) >= 0.9 * 25  # every worker still has records in the first 10 s
