"""Client-side pacing for Alma's per-second API threshold.

Alma counts API calls per institution and second; past about 25 in a second it answers
HTTP 429 ``PER_SECOND_THRESHOLD``. :class:`Throttle` keeps one client under a rate with
two rules, both thread-safe (threads reserve their slot under a lock and sleep outside it):

- **even pacing**: one call every ``1 / rate`` seconds (a token bucket of depth one, run as
  GCRA: each call reserves the next free slot), so calls never arrive in bursts;
- **whole-second cap**: at most ``cap`` calls whose slot falls in the same wall-clock second
  (``int(time.time())``) — the window Alma's counter is taken to use. A call whose second is
  full moves to the start of the next one.

Pacing alone at exactly the limit puts 25 or 26 calls in some wall-clock seconds (the
phase of the spacing against the second boundary decides), and network jitter can carry a
call over the boundary; so :func:`tuned` paces slightly under the limit (``headroom``, 0.96:
24/s for 25/s) and caps each second at one call less than the limit. One late call is then
absorbed by the slack; ``bench/alma_api.py`` measures the result (≥ 95 % of the limit with no
429 at steady state).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_HEADROOM = 0.96
"""Fraction of the per-second limit the client paces at (25/s → 24/s)."""


@dataclass
class Throttle:
    """Paces calls at ``rate`` per second, at most ``cap`` per wall-clock second (``None``: no cap).

    ``burst`` lets that many calls through at once after a pause (a token bucket of that
    depth; 1 = even spacing). ``rate`` of ``inf`` (or ≤ 0) disables pacing.
    ``clock``/``wall``/``sleep`` are injectable so that the arithmetic can be checked without waiting.
    """

    rate: float
    cap: int | None = None
    burst: int = 1
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _tat: float = field(default=-math.inf, init=False, repr=False)  # next free slot (monotonic)
    _second: int = field(default=-1, init=False, repr=False)  # wall-clock second being filled
    _count: int = field(default=0, init=False, repr=False)

    @property
    def enabled(self) -> bool:
        return 0 < self.rate < math.inf

    def acquire(self) -> float:
        """Wait for this call's slot; returns the seconds waited."""
        if not self.enabled:
            return 0.0
        interval = 1.0 / self.rate
        with self._lock:
            now = self.clock()
            tat = max(self._tat, now)
            slot = max(now, tat - (self.burst - 1) * interval)
            if self.cap is not None:
                offset = self.wall() - now  # wall-clock time = monotonic time + offset
                second = math.floor(slot + offset)
                if second == self._second and self._count >= self.cap:
                    second += 1
                    slot = max(slot, second - offset + 1e-4)
                if second != self._second:
                    self._second, self._count = second, 0
                self._count += 1
            self._tat = max(tat, slot) + interval
        delay = slot - self.clock()
        if delay > 0:
            self.sleep(delay)
            return delay
        return 0.0


def tuned(per_second: float, headroom: float = DEFAULT_HEADROOM) -> Throttle:
    """A throttle that keeps a client under ``per_second`` as Alma counts it (see module doc)."""
    if not 0 < per_second < math.inf:
        return Throttle(math.inf)
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom!r}")
    cap = max(1, math.ceil(per_second) - 1) if per_second >= 2 else 1
    return Throttle(rate=per_second * headroom, cap=cap)
