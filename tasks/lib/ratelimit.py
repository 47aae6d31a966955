"""Per-client token buckets for `tunedex serve`: pure (the clock is injected), thread-safe and
bounded in memory.

Each client has a bucket of `burst` tokens, refilled at `per_minute / 60` tokens a second; a
request takes one token or is refused with the seconds until the next one. A bucket left idle
long enough to refill completely is the same as a new one, so it is dropped: memory holds only
the clients seen within the last refill time (and never more than `max_clients`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_CLIENTS = 10_000  # buckets kept at most; past it the least recently seen client is dropped


class RateLimiter:
    """Token buckets keyed by client (e.g. its IP address)."""

    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_CLIENTS):
        if per_minute < 1 or burst < 1 or max_clients < 1:
            raise ValueError(f"per_minute, burst and max_clients must be >= 1, got {per_minute}, "
                             f"{burst}, {max_clients}")
        self.per_minute, self.burst, self.max_clients = per_minute, burst, max_clients
        self.rate = per_minute / 60.0  # tokens per second
        self.refill_seconds = burst / self.rate  # an empty bucket is full again after this
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def acquire(self, client: str) -> float:
        """Take one token for `client`: 0.0 when the request may go ahead, else the seconds
        until a token is available (nothing is taken then)."""
        with self._lock:
            now = self.clock()
            self._drop_idle(now)
            tokens, at = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[client] = (tokens - 1 if wait == 0 else tokens, now)  # most recent last
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait

    def _drop_idle(self, now: float) -> None:
        # Ordered by last request, oldest first: stop at the first one not idle long enough.
        while self._buckets:
            _, at = next(iter(self._buckets.values()))
            if now - at < self.refill_seconds:
                return
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(wait: float) -> int:
    """A `Retry-After` header value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait))
