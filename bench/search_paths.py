"""Served /search with the vector half from held chunk vectors against LanceDB's own search,
at each retriever precision, in one run (in process, one query at a time).

Opens a release the way `tunedex search` does, twice per precision: as configured (a table
under `index.ann_min_rows` rows is held in memory; tasks/lib/held_vectors.py) and with
`index.ann_min_rows=1` (every query planned by LanceDB: the path before). Times per eval
question the query encode alone and a whole search in the release's mode, arms alternating
question by question so drift hits all alike; the hits of the two paths are compared. Prints
p50/p95 per arm and the factors issue 15 asks about: search before (fp32, LanceDB) / now (the
precision `auto` picks on this CPU, held), which should be at least the encode's fp32 / auto.

usage: python bench/search_paths.py [--config configs/cpu.yaml] [--release champion]
                                    [--repeats 3] [--precisions fp32 bf16] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flows.env import set_offline_env  # noqa: E402

set_offline_env()

from tasks.lib.catalog import Catalog  # noqa: E402
from tasks.lib.config import load_config, parse_override  # noqa: E402
from tasks.lib.data import read_jsonl  # noqa: E402
from tasks.lib.metrics import latency_summary  # noqa: E402
from tasks.lib.precision import cpu_has_bf16, resolve_precision  # noqa: E402
from tasks.lib.registry import registry_ref  # noqa: E402
from tasks.lib.search import encode_query  # noqa: E402
from tasks.lib.serving import NOT_HELD, ServingSections, open_release  # noqa: E402


def opened(args: argparse.Namespace, precision: str, held: bool):
    """The release with the retriever at `precision`, warmed up (held: as configured; else
    every vector query by LanceDB)."""
    sets = {**dict(parse_override(s) for s in args.sets), "index.precision": precision}
    if not held:
        sets["index.ann_min_rows"] = 1
    cfg = load_config(args.config, sets)
    sections = ServingSections(cfg.models, cfg.generate, cfg.evaluate, cfg.index)
    release = open_release(registry_ref(cfg), Catalog(cfg.paths), sections, args.release).warm(())
    if held and release.held_vectors() is NOT_HELD:
        raise SystemExit(f"release {args.release}: its table is not held (an ANN index, or "
                         f"index.ann_min_rows={cfg.index.ann_min_rows} rows or more)")
    for query in ("warm up", "a second warm-up query"):
        release.search(query)
    return release


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cpu.yaml")
    parser.add_argument("--release", default="champion", help="an alias or a release version")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the eval questions")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        help="index.precision of each arm; the first is the baseline")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = load_config(args.config, dict(parse_override(s) for s in args.sets))
    questions = [q["question"] for q in read_jsonl(Catalog(cfg.paths).eval_qa_path)]
    arms = {(p, held): opened(args, p, held) for p in args.precisions for held in (False, True)}
    mode = next(iter(arms.values())).served.tags.get("retrieval.method", "the default")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{len(questions)} eval questions x {args.repeats} passes, release {args.release} "
          f"(retrieval {mode})")
    seconds: dict[str, list[float]] = {}
    differ = searches = 0
    for _ in range(args.repeats):
        for query in questions:
            for precision in args.precisions:
                model = arms[(precision, True)].retriever()
                started = time.perf_counter()
                encode_query(model, query)
                seconds.setdefault(f"{precision} encode", []).append(time.perf_counter() - started)
                hits = {}
                for held in (False, True):
                    started = time.perf_counter()
                    hits[held] = arms[(precision, held)].search(query)
                    label = f"{precision} search {'held' if held else 'lancedb'}"
                    seconds.setdefault(label, []).append(time.perf_counter() - started)
                differ += [h["chunk_id"] for h in hits[False]] != [h["chunk_id"] for h in hits[True]]
                searches += 1
    p95 = {}
    for label, values in seconds.items():
        summary = latency_summary(values)
        p95[label] = summary["p95_ms"]
        print(f"{label:22s} p50 {summary['p50_ms']:6.2f} ms  p95 {summary['p95_ms']:6.2f} ms "
              f"({len(values)} calls)")
    base = args.precisions[0]

    def factors(precision: str) -> tuple[float, float]:
        """p95 of the encode and of search before (base, LanceDB) / now (`precision`, held)."""
        return (p95[f"{base} encode"] / p95[f"{precision} encode"],
                p95[f"{base} search lancedb"] / p95[f"{precision} search held"])

    for precision in args.precisions:
        print(f"{precision}: search p95 lancedb / held x"
              f"{p95[f'{precision} search lancedb'] / p95[f'{precision} search held']:.2f}")
    for precision in args.precisions[1:]:
        encode, gain = factors(precision)
        print(f"encode p95 {base} / {precision} x{encode:.2f}; search p95 before ({base}, "
              f"lancedb) / {precision}, held x{gain:.2f}")
    auto = resolve_precision("auto", "cpu")
    print(f"index.precision auto is {auto} on this CPU (native bf16: "
          f"{'yes' if cpu_has_bf16() else 'no'})")
    if auto in args.precisions:  # what a server here runs, against the path before at fp32
        encode, gain = factors(auto)
        print(f"search p95 before ({base}, lancedb) / now ({auto}, held) x{gain:.2f} against the "
              f"encode's {base} / {auto} x{encode:.2f} (target: at least the encode's) "
              f"{'PASS' if gain >= encode else 'FAIL'}")
    print(f"searches whose held hits differ from LanceDB's: {differ} of {searches} "
          "(only equal scores may swap places)")


if __name__ == "__main__":
    main()
