"""`tunedex serve` under load over real HTTP: /search latency, the /ask batching gain, hot swap.

Starts the real server (`tunedex serve`, a subprocess on 127.0.0.1) seven times, timing each
start-up to /health 200: the config as it is (/search at 1, 4, 16 clients; /ask at 8 clients,
batched) and, beside it, serve.max_batch=1 (the one-at-a-time baseline; /ask rounds alternate
between the two); then serve.poll_seconds=1 while 4 clients query and `champion` moves to
another release and back (restored in any case); then index.precision fp32 beside bf16 (/search
at 1 and 4 clients, rounds alternating: what the retriever's bf16 gains per request); then
index.ann_min_rows=1 (every vector query planned by LanceDB, the path before) beside the config
as is (a small table's vectors held in memory; tasks/lib/held_vectors.py), the same way.
--phases picks some of the four. The query log goes to a temporary folder and
nothing is traced, so no bench traffic is left in logs/ or MLflow (and the rate limit is off).

usage: python bench/serve_load.py [--config configs/cpu.yaml] [--seconds 10] [--port 0]
                                  [--questions 16] [--repeats 2] [--phases load swap precision held]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import count, groupby, takewhile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flows.env import set_offline_env  # noqa: E402

set_offline_env()

import httpx  # noqa: E402

from tasks.lib.catalog import Catalog  # noqa: E402
from tasks.lib.config import load_config  # noqa: E402
from tasks.lib.data import read_jsonl  # noqa: E402
from tasks.lib.lock import write_lock  # noqa: E402
from tasks.lib.registry import list_releases, move_release, registry_ref, resolve_release  # noqa: E402


@dataclass(frozen=True)
class Result:
    kind: str  # search | ask
    status: int | str  # HTTP status, or the client error's name
    seconds: float  # client-side latency
    sent: float  # time.monotonic() at the request
    release: tuple[int, int | None] | None  # (retriever_version, generator_version) it names
    server_ms: float | None = None


# ---- the server ---------------------------------------------------------------------------------


def start_server(args: argparse.Namespace, log_path: Path, extra: list[str], port: int):
    """Start `tunedex serve` with `--set` overrides; return it and its URL once /health is 200."""
    with socket.socket() as sock:  # port 0: ask the OS for a free one
        sock.bind(("127.0.0.1", port))
        port = sock.getsockname()[1]
    # No rate limit: the bench measures the server under load, which the limit would refuse.
    sets = [f"paths.logs_dir={log_path.parent}", "serve.traces=false",
            "serve.rate_limit_per_minute=0", *extra]
    cmd = [str(Path(sys.executable).with_name("tunedex")), "serve", "-c", args.config,
           "--host", "127.0.0.1", "--port", str(port)] + [a for s in sets for a in ("--set", s)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log_path.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    while proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                label = " ".join(extra) or "config as is"
                print(f"start-up to /health 200 ({label}): {time.perf_counter() - started:6.1f} s")
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server exited with {proc.returncode}; see {log_path}:\n"
                     + log_path.read_text(errors="replace")[-2000:])


def with_server(args: argparse.Namespace, log_path: Path, extra: list[str], offset: int, run):
    """Run `run(url)` against a fresh server started with `extra` overrides; stop it after."""
    proc, url = start_server(args, log_path, extra, args.port and args.port + offset)
    try:
        return run(url)
    finally:
        proc.terminate()  # uvicorn shuts down gracefully on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- clients ------------------------------------------------------------------------------------


async def call(client: httpx.AsyncClient, kind: str, text: str) -> Result:
    body = {"query": text} if kind == "search" else {"question": text}
    started, sent = time.perf_counter(), time.monotonic()
    try:
        r = await client.post(f"/{kind}", json=body)
        status, data = r.status_code, r.json()
    except (httpx.HTTPError, ValueError) as err:
        return Result(kind, type(err).__name__, time.perf_counter() - started, sent, None)
    rel = data.get("release") or {}
    release = (rel["retriever_version"], rel.get("generator_version")) if rel else None
    return Result(kind, status, time.perf_counter() - started, sent, release, data.get("latency_ms"))


async def load(url: str, kinds: list[str], questions: list[str], tickets,
               results: list[Result] | None = None) -> list[Result]:
    """One client per entry of `kinds`; each sends a request per ticket it draws until none is
    left, appending to `results` as responses come (so a caller can watch them)."""
    results = [] if results is None else results

    async def client_loop(client: httpx.AsyncClient, kind: str) -> None:
        for i in tickets:
            results.append(await call(client, kind, questions[i % len(questions)]))

    limits = httpx.Limits(max_connections=len(kinds))
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        await asyncio.gather(*(client_loop(client, k) for k in kinds))
    return results


def tickets(done):
    """0, 1, 2, ... until done() is true (one iterator shared by the clients of a load)."""
    return takewhile(lambda _: not done(), count())


def for_seconds(seconds: float):
    end = time.monotonic() + seconds
    return tickets(lambda: time.monotonic() > end)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def errors(results: list[Result]) -> int:
    return sum(r.status != 200 for r in results)


# ---- 1. /search latency -------------------------------------------------------------------------


def bench_search(url: str, questions: list[str], seconds: float) -> None:
    asyncio.run(load(url, ["search"], questions, iter(range(5))))  # warm-up
    base_rps = None
    for n in (1, 4, 16):
        started = time.monotonic()
        res = asyncio.run(load(url, ["search"] * n, questions, for_seconds(seconds)))
        ms = [1000 * r.seconds for r in res]
        rps = len(res) / (time.monotonic() - started)
        base_rps = base_rps or rps
        server = pct([r.server_ms for r in res if r.server_ms is not None], 0.5)
        print(f"/search {n:2d} clients: p50 {pct(ms, .5):6.1f} ms  p95 {pct(ms, .95):6.1f} ms  "
              f"p99 {pct(ms, .99):6.1f} ms  {rps:6.1f} req/s ({rps / base_rps:4.2f}x 1 client)  "
              f"errors {errors(res)}/{len(res)}  (server-side search p50 {server:.1f} ms)")
        if n == 4:
            ok = pct(ms, .95) <= 50 and errors(res) == 0
            print(f"/search target p95 <= 50 ms at 4 clients, 0 errors: {'PASS' if ok else 'FAIL'}")


# ---- 2. /ask: batched vs one at a time -----------------------------------------------------------


def ask_round(url: str, questions: list[str], n: int) -> tuple[float, list[Result]]:
    """Answers/s of `n` questions from 8 concurrent clients, and the responses."""
    started = time.monotonic()
    res = asyncio.run(load(url, ["ask"] * 8, questions, iter(range(n))))
    return len(res) / (time.monotonic() - started), res


def bench_ask(arms: dict[str, str], questions: list[str], n: int, repeats: int) -> None:
    """Best answers/s of each arm ("batched" and "max_batch=1" -> URL), rounds alternating so
    drift in the machine's load hits both alike."""
    for url in arms.values():
        asyncio.run(load(url, ["ask"], questions, iter(range(1))))  # warm-up
    rounds: dict[str, list] = {label: [] for label in arms}
    for _ in range(repeats):
        for label, url in arms.items():
            rounds[label].append(ask_round(url, questions, n))
    best = {}
    for label, tries in rounds.items():
        rate, res = max(tries, key=lambda t: t[0])
        ms = [1000 * r.seconds for r in res]
        print(f"/ask 8 clients, {label:<11}: {rate:5.2f} answers/s (best of {repeats}: "
              f"{', '.join(f'{t[0]:.2f}' for t in tries)})  p50 {pct(ms, .5):6.0f} ms  "
              f"p95 {pct(ms, .95):6.0f} ms  errors {sum(errors(t[1]) for t in tries)}/{n * repeats}")
        best[label] = rate
    gain = best["batched"] / best["max_batch=1"]
    print(f"/ask batching gain: {gain:.2f}x one at a time (target >= 3x) {'PASS' if gain >= 3 else 'FAIL'}")


# ---- 4. /search served two ways: fp32 vs bf16, LanceDB vs held vectors ---------------------------


def bench_search_arms(arms: dict[str, str], questions: list[str], seconds: float,
                      repeats: int) -> None:
    """/search latency of the same release served two ways (label -> URL; the first is the
    baseline), at 1 and 4 clients, rounds alternating so drift hits both alike."""
    for url in arms.values():
        asyncio.run(load(url, ["search"], questions, iter(range(5))))  # warm-up
    base, other = arms
    for n in (1, 4):
        ms: dict[str, list[float]] = {label: [] for label in arms}
        failed = 0
        for _ in range(repeats):
            for label, url in arms.items():
                res = asyncio.run(load(url, ["search"] * n, questions,
                                       for_seconds(seconds / repeats)))
                ms[label] += [1000 * r.seconds for r in res]
                failed += errors(res)
        p95 = {label: pct(v, .95) for label, v in ms.items()}
        print(f"/search {n} client{'s' if n > 1 else ' '} " + "  ".join(
            f"{label}: p50 {pct(v, .5):5.1f} ms p95 {p95[label]:5.1f} ms ({len(v)} req)"
            for label, v in ms.items())
            + f"  -> p95 {base}/{other} x{p95[base] / p95[other]:.2f}, errors {failed}")


# ---- 3. hot swap under load ---------------------------------------------------------------------


def move_champion(cfg, version: int) -> None:
    rel = resolve_release(registry_ref(cfg), str(version))
    with write_lock(cfg.lock, "bench serve_load", "fail"):
        move_release(registry_ref(cfg), "champion", rel.retriever_version, rel.generator_version,
                     rel.tags.get("release.rag_version"))


async def wait_seen(results: list[Result], version: int, since: float, timeout: float) -> dict:
    """Seconds from `since` until a request of each kind sent after it was served by `version`
    (an /ask sent before keeps its release however long it takes, so only later ones count)."""
    seen: dict[str, float] = {}
    while len(seen) < 2 and time.monotonic() - since < timeout:
        for r in results:
            if r.sent > since and r.release and r.release[0] == version and r.kind not in seen:
                seen[r.kind] = r.sent + r.seconds - since
        await asyncio.sleep(0.1)
    return seen


async def swap_under_load(cfg, url: str, questions: list[str], plan: list[int], seconds: float):
    stop, live = asyncio.Event(), []
    task = asyncio.create_task(load(url, ["search", "search", "ask", "ask"], questions,
                                    tickets(stop.is_set), live))
    await asyncio.sleep(seconds / 3)
    for version in plan:
        moved = time.monotonic()
        await asyncio.to_thread(move_champion, cfg, version)
        seen = await wait_seen(live, version, moved, timeout=120)
        print(f"champion -> v{version}: first response from it after " + ", ".join(
            f"/{k} {seen[k]:5.1f} s" if k in seen else f"/{k} NOT SEEN in 120 s" for k in ("search", "ask")))
        await asyncio.sleep(seconds / 3)
    stop.set()
    return await task


def runs(results: list[Result]) -> str:
    """The releases that served `results` in the order they were sent: "v1 x40 -> v4 x38"."""
    labels = [f"v{r.release[0]}" if r.release else "none" for r in sorted(results, key=lambda r: r.sent)]
    return " -> ".join(f"{label} x{len(list(run))}" for label, run in groupby(labels))


def swap_target(rows: list[dict]) -> tuple[int, int] | None:
    """(champion, the newest other release still servable), or None with one release only."""
    champion = next(r["version"] for r in rows if "champion" in r["aliases"])
    others = [r["version"] for r in rows if r["version"] != champion and not r["gc"]]
    return (champion, max(others)) if others else None


def bench_swap(cfg, url: str, questions: list[str], seconds: float) -> None:
    rows = list_releases(registry_ref(cfg))
    champion, other = swap_target(rows)
    pairs = {(r["version"], int(r["generator_version"])) for r in rows if r["generator_version"]}
    try:
        res = asyncio.run(swap_under_load(cfg, url, questions, [other, champion], seconds))
    finally:
        if resolve_release(registry_ref(cfg), "champion").retriever_version != champion:
            move_champion(cfg, champion)
    mixed = sum(r.release is not None and r.release not in pairs for r in res)
    unnamed = sum(r.status == 200 and r.release is None for r in res)
    for kind in ("search", "ask"):
        print(f"swap {kind:<6}: {runs([r for r in res if r.kind == kind])}")
    print(f"swap: {len(res)} requests, failed {errors(res)}, without a release {unnamed}, naming a "
          f"release the registry does not have {mixed}  (target 0 failed) "
          f"{'PASS' if errors(res) == 0 and unnamed == 0 and mixed == 0 else 'FAIL'}")
    ms = [1000 * r.seconds for r in res if r.kind == "search"]
    print(f"swap /search (2 clients, poll 1 s, /ask alongside): p50 {pct(ms, .5):.1f} ms  "
          f"p95 {pct(ms, .95):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/cpu.yaml")
    parser.add_argument("--seconds", type=float, default=10, help="length of each load phase (s)")
    parser.add_argument("--port", type=int, default=0, help="servers on P, P+1, ... P+6 (0: free ports)")
    parser.add_argument("--questions", type=int, default=16, help="/ask questions per arm and round")
    parser.add_argument("--repeats", type=int, default=2, help="/ask rounds per arm (best of N)")
    parser.add_argument("--phases", nargs="+", default=["load", "swap", "precision", "held"],
                        choices=["load", "swap", "precision", "held"],
                        help="load: /search and /ask batching; swap: champion moved under load; "
                             "precision: /search with the retriever in fp32 vs bf16; held: "
                             "/search with every vector query by LanceDB vs from held vectors")
    args = parser.parse_args()
    cfg = load_config(args.config)
    questions = [q["question"] for q in read_jsonl(Catalog(cfg.paths).eval_qa_path)]
    print(f"machine: {os.cpu_count()} cores, load average before {os.getloadavg()[0]:.1f} "
          "(other processes share the cores with the server and the clients)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"

        def two_servers(batched: str, one: str) -> None:
            bench_search(batched, questions, args.seconds)
            bench_ask({"batched": batched, "max_batch=1": one}, questions, args.questions, args.repeats)

        if "load" in args.phases:
            with_server(args, log_path, [], 0, lambda batched: with_server(
                args, log_path, ["serve.max_batch=1"], 1, lambda one: two_servers(batched, one)))
        if "swap" in args.phases and swap_target(list_releases(registry_ref(cfg))) is None:
            print("swap: skipped: the registry holds one servable release, and the phase moves "
                  "`champion` to another one and back (a second `make pipeline` after a change "
                  "registers one)")
        elif "swap" in args.phases:
            with_server(args, log_path, ["serve.poll_seconds=1"], 2,
                        lambda url: bench_swap(cfg, url, questions, args.seconds))
        if "precision" in args.phases:
            with_server(args, log_path, ["index.precision=fp32"], 3, lambda fp32: with_server(
                args, log_path, ["index.precision=bf16"], 4, lambda bf16: bench_search_arms(
                    {"fp32": fp32, "bf16": bf16}, questions, 2 * args.seconds, args.repeats)))
        if "held" in args.phases:
            with_server(args, log_path, ["index.ann_min_rows=1"], 5, lambda lancedb: with_server(
                args, log_path, [], 6, lambda held: bench_search_arms(
                    {"lancedb": lancedb, "held": held}, questions, 2 * args.seconds,
                    args.repeats)))
        bad = [line for line in log_path.read_text(errors="replace").splitlines()
               if "ERROR" in line or "Traceback" in line]
        print(f"server log: {len(bad)} error lines" + "".join(f"\n  {line}" for line in bad[:10]))
    print(f"bench wall time: {time.perf_counter() - started:.0f} s, load average after "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
