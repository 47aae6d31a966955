"""Token buckets with a fake clock: exact allow/deny sequences, refill, burst, idle eviction."""

from __future__ import annotations

import threading

import pytest

from tasks.lib.ratelimit import RateLimiter, retry_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limiter(per_minute: int = 60, burst: int = 3, **kw) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(per_minute, burst, clock=clock, **kw), clock


def test_a_burst_goes_through_then_the_rate_holds():
    rl, clock = limiter()  # 1 token a second, 3 at once
    assert [rl.acquire("a") for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]
    clock.now = 0.5
    assert rl.acquire("a") == 0.5  # half a token back: a refusal takes nothing
    clock.now = 1.0
    assert [rl.acquire("a"), rl.acquire("a")] == [0.0, 1.0]
    clock.now = 3.0
    assert [rl.acquire("a") for _ in range(3)] == [0.0, 0.0, 1.0]  # 2 s refilled 2 tokens


def test_an_idle_client_gets_its_burst_back_never_more():
    rl, clock = limiter()
    for _ in range(3):
        rl.acquire("a")
    clock.now = 1000.0
    assert [rl.acquire("a") for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]


def test_clients_have_their_own_buckets():
    rl, _ = limiter(burst=1)
    assert [rl.acquire("a"), rl.acquire("a")] == [0.0, 1.0]
    assert rl.acquire("b") == 0.0


def test_a_slower_rate_waits_longer():
    rl, _ = limiter(per_minute=6, burst=1)  # one token every 10 s
    assert [rl.acquire("a"), rl.acquire("a")] == [0.0, 10.0]


def test_buckets_idle_for_a_full_refill_are_dropped():
    rl, clock = limiter()  # refilled from empty after 3 s
    assert rl.refill_seconds == 3.0
    rl.acquire("a")
    clock.now = 2.0
    rl.acquire("b")
    clock.now = 3.5
    rl.acquire("c")
    assert len(rl) == 2  # a (idle 3.5 s) dropped; b (1.5 s) kept
    assert [rl.acquire("a") for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]  # as full as it would be


def test_memory_is_bounded_by_max_clients_least_recently_seen_first():
    rl, _ = limiter(burst=1, max_clients=2)
    rl.acquire("a")
    rl.acquire("b")
    rl.acquire("a")  # a seen last now
    rl.acquire("c")
    assert len(rl) == 2
    assert rl.acquire("b") == 0.0  # b was dropped: a fresh bucket (and a dropped now)
    assert rl.acquire("c") == 1.0 and len(rl) == 2  # c, seen after a, was kept


def test_concurrent_requests_never_get_more_than_the_burst():
    rl, _ = limiter(burst=50)  # the fake clock stands still: nothing refills
    allowed: list[float] = []

    def hammer() -> None:
        for _ in range(100):
            allowed.append(rl.acquire("a"))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(allowed) == 800 and allowed.count(0.0) == 50


def test_retry_after_is_whole_seconds_rounded_up():
    assert [retry_after(w) for w in (0.01, 1.0, 1.01, 59.5)] == [1, 1, 2, 60]


def test_limits_below_one_are_refused():
    with pytest.raises(ValueError, match="must be >= 1, got 0, 3, 10000"):
        RateLimiter(0, 3)
