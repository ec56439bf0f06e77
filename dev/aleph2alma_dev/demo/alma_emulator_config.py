"""The Alma API EMULATOR's settings: Alma's call limits and the faults it injects.

Its own module because both the app (:mod:`.alma_emulator`, which enforces the limits and
injects the faults) and the entity endpoints (:mod:`.alma_emulator_routes`, which read the
loan policy) need them, and the app imports the endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    per_second: int = 25  # Alma's per-second threshold; 0 = off
    daily_quota: int = 100_000
    api_key: str | None = None  # None: any non-empty key is accepted
    loan_days: int = 28  # the loan policy's period
    latency_ms: int = 0  # every Alma call takes this long (slept on the app's injectable sleep)
    loan_limit: int = 0  # active loans a patron may have; 0 = no limit
    not_loanable_policies: frozenset[str] = frozenset()  # item policies that cannot be loaned


@dataclass(frozen=True)
class Faults:
    rate_429: float = 0.0  # chance that a call starts a burst of 429s
    burst_429: int = 3
    rate_500: float = 0.0
    slow_ms: int = 0
    slow_rate: float = 1.0  # share of calls delayed by slow_ms
    # "after": the call runs and commits, then its answer comes slow_ms late (a client that timed out
    # has written); "before": the call waits slow_ms, then runs (the write commits after such a client
    # gave up, as a busy Alma can)
    slow_phase: str = "after"
    retry_after: float | None = None  # sent with injected 429s when set
    seed: int = 0

    def __post_init__(self) -> None:
        if self.slow_phase not in ("after", "before"):
            raise ValueError(f"slow_phase must be 'after' or 'before', got {self.slow_phase!r}")
