"""Dynamic batching: requests within the window share a batch, keys never mix, errors reach all."""

from __future__ import annotations

import asyncio

import pytest

from tasks.lib.batching import DynamicBatcher


def run(coro):
    return asyncio.run(coro)


def test_requests_in_one_window_run_as_one_batch_and_get_their_own_results():
    calls = []

    def run_batch(key, items):
        calls.append((key, list(items)))
        return [f"{key}:{i * 2}" for i in items]

    async def main():
        batcher = DynamicBatcher(run_batch, window_s=0.05, max_batch=8)
        out = await asyncio.gather(*(batcher.submit("a", i) for i in range(5)))
        batcher.close()
        return out, batcher.batches

    out, batches = run(main())
    assert out == ["a:0", "a:2", "a:4", "a:6", "a:8"]
    assert list(batches) == [5] and calls == [("a", [0, 1, 2, 3, 4])]


def test_the_cap_flushes_early_and_keys_never_share_a_batch():
    seen = []

    def run_batch(key, items):
        seen.append((key, len(items)))
        return [key] * len(items)

    async def main():
        batcher = DynamicBatcher(run_batch, window_s=0.05, max_batch=3)
        out = await asyncio.gather(*[batcher.submit(k, i) for i, k in enumerate("aaaab")])
        batcher.close()
        return out

    assert run(main()) == list("aaaab")
    assert sorted(seen) == [("a", 1), ("a", 3), ("b", 1)]


def test_a_failing_batch_raises_in_every_caller():
    def run_batch(key, items):
        raise RuntimeError("generator fell over")

    async def main():
        batcher = DynamicBatcher(run_batch, window_s=0.01, max_batch=4)
        results = await asyncio.gather(batcher.submit("k", 1), batcher.submit("k", 2),
                                       return_exceptions=True)
        batcher.close()
        return results

    results = run(main())
    assert [str(r) for r in results] == ["generator fell over"] * 2


def test_a_lone_request_waits_only_the_window():
    async def main():
        batcher = DynamicBatcher(lambda key, items: items, window_s=0.01, max_batch=8)
        loop = asyncio.get_running_loop()
        started = loop.time()
        out = await batcher.submit("k", "x")
        batcher.close()
        return out, loop.time() - started

    out, waited = run(main())
    assert out == "x" and waited < 1.0
    with pytest.raises(ValueError):
        run(DynamicBatcher(lambda k, i: [], 0.01, 2).submit("k", "x"))  # wrong result count
