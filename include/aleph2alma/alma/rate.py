"""The Alma API budget: the connection's per-second limit, and the concurrency it takes to use it.

Alma counts API calls per institution and second (about 25/s; institutions and sandboxes
differ, so it is the ``alma`` connection's ``extra.per_second``). One call takes a round trip
of 150–400 ms to Ex Libris' cloud, so a single thread makes 2.5–7 calls a second: a load
reaches the limit only with enough calls in flight. By Little's law that is
``per_second × latency``; the client's throttle (:mod:`aleph2alma.alma.throttle`) then keeps
the threads together under the limit. :class:`AlmaRate` is the one place that turns the
limit into a number of worker threads; :func:`aleph2alma.alma.client_load.load` takes its
default from the client's rate, so no caller runs single-threaded by forgetting it.

**Airflow pool.** One task at a time talks to Alma, and inside it the workers share the
rate. The pool :data:`ALMA_POOL` has :data:`ALMA_POOL_SLOTS` slots and every task that calls
Alma takes all of them (``pool_slots=ALMA_POOL_SLOTS``): the pool is a mutex, its slot count
is not a rate. A pool created with more slots would let two Alma tasks run at once, each at
the full rate; with fewer, the scheduler never runs them ("Requested pool slots are greater
than total pool slots" in its log). The value stays 25 so that pools created before
(``airflow pools set alma_api 25``) still fit.

No third-party imports: DAG files import this module at parse time for the pool name and size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aleph2alma.errors import ConfigError

ALMA_POOL = "alma_api"
"""The Airflow pool every task that calls the Alma API runs in."""

ALMA_POOL_SLOTS = 25
"""The pool's size, and the ``pool_slots`` every Alma task takes: one Alma task at a time."""

ALMA_POOL_DESCRIPTION = "Alma API: one task at a time; its threads share the connection's per_second"

DEFAULT_PER_SECOND = 25.0
"""Ex Libris' published per-second threshold per institution (governance slides)."""

DEFAULT_LATENCY = 0.4
"""Seconds per Alma call assumed when sizing the workers: the slow end of 150–400 ms."""

MAX_WORKERS = 32
"""Most threads one load runs (and connections the client's HTTP pool keeps)."""


@dataclass(frozen=True)
class AlmaRate:
    """An Alma API budget: ``per_second`` calls (≤ 0: unpaced, tests and emulators) at ``latency`` s each."""

    per_second: float = DEFAULT_PER_SECOND  # the institution's limit (the connection's extra.per_second)
    latency: float = DEFAULT_LATENCY  # expected seconds per call, round trip (extra.latency_ms / 1000)

    def __post_init__(self) -> None:
        if math.isnan(self.per_second):
            raise ConfigError(
                f"Alma per_second must be a number of calls per second, got {self.per_second!r}"
            )
        if not 0 < self.latency < math.inf:
            raise ConfigError(f"Alma latency must be a positive number of seconds, got {self.latency!r}")

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> AlmaRate:
        """From an ``alma`` connection's extra: ``per_second`` (default 25), ``latency_ms`` (default 400)."""
        values: dict[str, float] = {}
        for key, name, scale in (("per_second", "per_second", 1.0), ("latency_ms", "latency", 1000.0)):
            if extra.get(key) in (None, ""):
                continue
            try:
                values[name] = float(extra[key]) / scale
            except (TypeError, ValueError):
                raise ConfigError(
                    f"alma connection extra {key!r} must be a number, got {extra[key]!r}"
                ) from None
        return cls(**values)

    @property
    def paced(self) -> bool:
        """Whether the client paces itself (a finite, positive ``per_second``)."""
        return 0 < self.per_second < math.inf

    @property
    def workers(self) -> int:
        """Threads that keep ``per_second × latency`` calls in flight, 1…:data:`MAX_WORKERS`.

        Unpaced (``per_second`` ≤ 0): 1; there is no rate to reach, pass ``workers=`` to go wider.
        """
        if not self.paced:
            return 1
        return max(1, min(MAX_WORKERS, math.ceil(self.per_second * self.latency - 1e-9)))
