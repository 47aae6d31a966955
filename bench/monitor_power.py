"""How often does the monitor's drift test fire, and how long does a run take?

Usage (after `make pipeline`, so a champion release exists):
    .venv/bin/python bench/monitor_power.py                    # power / false alarms, 40 draws each
    .venv/bin/python bench/monitor_power.py --runtime 10000    # one monitor flow over 10k requests
    .venv/bin/python bench/monitor_power.py --raw-embeddings   # the same test on raw embeddings

1. Power and false alarms: the monitor's own drift test (tasks/lib/question_space.py:drift_test, the
   release's retriever, its pinned table as anchors) on repeated seeded draws of n questions:
   - off-domain: PubMedQA and CovidFAQ questions (../shared/datasets) against the demo release;
   - in-domain, exchangeable: the release's own questions split 70/30 at random, the 30% drawn
     against a reference of the 70% (the test's null hypothesis: same distribution);
   - a new topic: the questions of one topic of the corpus left out of the reference, drawn
     alone and half-and-half with known questions (users start asking about a part of the
     corpus the release was not trained on);
   - in-domain, other register: train + half the eval questions as reference, the other half of
     the eval questions drawn (the demo's eval questions are written as customers write).
   The flag rate is the share of draws with p below the drift rule's threshold.
2. Run time: a query log of N requests (questions drawn from the demo, PubMedQA and CovidFAQ
   pools, with repeats as real logs have) written to a temp dir, then the monitor flow, timed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "datasets"


def off_domain_pools() -> dict[str, list[str]]:
    pools = {}
    pubmed = SHARED / "pubmedqa" / "pqal_dev.json"
    if pubmed.is_file():
        pools["PubMedQA"] = [v["QUESTION"] for v in json.loads(pubmed.read_text()).values()]
    covid = SHARED / "covidfaq" / "query_answer_pairs.json"
    if covid.is_file():
        pools["CovidFAQ"] = sorted({r["question"].strip() for r in json.loads(covid.read_text())
                                    if r.get("query_type") == "user_query"})
    return pools


def open_champion(config: str):
    from tasks.lib.catalog import Catalog
    from tasks.lib.config import load_config
    from tasks.lib.reference import load_reference
    from tasks.lib.registry import registry_ref
    from tasks.lib.serving import ServingSections, open_release

    cfg = load_config(config)
    cat = Catalog(cfg.paths)
    loaded = open_release(registry_ref(cfg), cat, ServingSections(cfg.models, cfg.generate,
                                                                  cfg.evaluate, cfg.index))
    return cfg, loaded, load_reference(cfg.tracking.tracking_uri, loaded.served.tags, cat)


def one_topic(cfg) -> tuple[str, list[str]]:
    """The questions of the alphabetically first topic (doc_id prefix before '-') of the QA data:
    a part of the corpus users start asking about that the release was never trained on."""
    from tasks.lib.data import read_jsonl

    rows = read_jsonl(cfg.paths.qa_path)
    topics = sorted({r["doc_ids"][0].split("-")[0] for r in rows if "-" in r["doc_ids"][0]})
    if not topics:
        return "", []
    return topics[0], [r["question"] for r in rows if r["doc_ids"][0].split("-")[0] == topics[0]]


def flag_rate(section, model, anchors, reference, pool, n, draws, threshold, seed,
              profiles=True) -> tuple[float, float]:
    """(share of draws flagged, mean seconds per test) for n questions drawn from pool."""
    from tasks.lib.question_space import drift_test, encode, reference_sample

    rng = random.Random(seed)
    pool_emb = encode(model, pool)
    ref_emb = encode(model, reference_sample(section, reference, seed))
    flagged, seconds = 0, 0.0
    for d in range(draws):
        idx = rng.sample(range(len(pool)), min(n, len(pool)))
        started = time.perf_counter()
        result = drift_test(section, anchors, ref_emb, pool_emb[idx], seed + d, profiles)[0]
        seconds += time.perf_counter() - started
        flagged += result["p_value"] < threshold
    return flagged / draws, seconds / draws


def power(config: str, draws: int, sizes: list[int], profiles: bool = True) -> None:
    from tasks.lib.question_space import anchors_of, chunk_vectors

    cfg, loaded, reference = open_champion(config)
    section = cfg.monitor
    threshold = next((r.below for r in section.rules if r.metric == "drift.p_value"), 0.01)
    model, table = loaded.retriever(), loaded.table()
    anchors = anchors_of(table, chunk_vectors(table), cfg.project.seed)
    rng = random.Random(cfg.project.seed)
    every = reference["train"] + reference["eval"]
    shuffled = rng.sample(every, len(every))
    cut = int(0.7 * len(shuffled))
    evals = rng.sample(reference["eval"], len(reference["eval"]))
    half = len(evals) // 2
    cases = [(name, reference, pool) for name, pool in off_domain_pools().items()]
    topic, topic_qs = one_topic(cfg)
    if topic_qs:
        rest = {"train": [q for q in reference["train"] if q not in topic_qs],
                "eval": [q for q in reference["eval"] if q not in topic_qs]}
        others = rest["train"] + rest["eval"]
        mixed = topic_qs + rng.sample(others, len(topic_qs))
        cases += [(f"new topic '{topic}' (its questions left out of the reference)", rest, topic_qs),
                  (f"half new topic '{topic}', half known questions", rest, mixed)]
    cases += [("in-domain (random 30% held out)", {"train": shuffled[:cut], "eval": []}, shuffled[cut:]),
              ("in-domain (other register: eval half)", {"train": reference["train"],
                                                          "eval": evals[:half]}, evals[half:])]
    print(f"release v{loaded.served.release}: {len(reference['train'])} train + "
          f"{len(reference['eval'])} eval reference questions; drift fires at p < {threshold}; "
          f"{section.permutations} permutations; {draws} draws per cell; features: "
          f"{'corpus profiles' if profiles else 'raw embeddings (comparison only)'}")
    print("| questions drawn from | pool | " + " | ".join(f"n={n}" for n in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for name, ref, pool in cases:
        cells = []
        for n in sizes:
            if n > len(pool):
                cells.append("–")
                continue
            share, secs = flag_rate(section, model, anchors, ref, pool, n, draws, threshold,
                                    cfg.project.seed, profiles)
            cells.append(f"{share:.2f} ({secs:.2f} s)")
        print(f"| {name} | {len(pool)} | " + " | ".join(cells) + " |", flush=True)


def runtime(config: str, requests: int) -> None:
    from flows.monitor import monitor
    from tasks.lib.querylog import QueryLog

    _, loaded, reference = open_champion(config)
    pool = reference["train"] + reference["eval"] + [q for p in off_domain_pools().values() for q in p]
    rng = random.Random(0)
    release = {"retriever_version": loaded.served.release, "table": loaded.served.table,
               "table_version": loaded.served.table_version}
    with tempfile.TemporaryDirectory() as tmp:
        log = QueryLog(Path(tmp) / "logs" / "queries", retention_days=0)
        now = time.time()
        for i in range(requests):
            log.append({"kind": "search", "request_id": f"bench-{i}", "release": release,
                        "question": rng.choice(pool), "mode": "vector", "doc_ids": [],
                        "scores": [], "latency_ms": 1.0, "ts": now - requests + i})
        log.close()
        # Its own experiment: the bench's monitor series stay out of the release's real one.
        overrides = {"paths.logs_dir": f"{tmp}/logs", "paths.reports_dir": f"{tmp}/reports",
                     "project.name": "tunedex-monitor-bench"}
        started = time.perf_counter()
        report = monitor(config_path=config, overrides=overrides)
        total = time.perf_counter() - started
    print(f"monitor flow over {requests} logged requests ({report['volume']['distinct']} distinct "
          f"questions): {total:.1f} s wall, of which measuring {report['seconds']:.1f} s; drift p = "
          f"{report['drift'].get('p_value')}; decision {report['decision']['action']}")


def main() -> None:
    from flows.env import set_offline_env

    set_offline_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", default="configs/cpu.yaml")
    parser.add_argument("--draws", type=int, default=40)
    parser.add_argument("--sizes", default="25,50,100,200")
    parser.add_argument("--runtime", type=int, default=0, help="time one monitor run over N requests")
    parser.add_argument("--raw-embeddings", action="store_true",
                        help="test raw question embeddings instead of corpus profiles (comparison)")
    args = parser.parse_args()
    if args.runtime:
        runtime(args.config, args.runtime)
    else:
        power(args.config, args.draws, [int(n) for n in args.sizes.split(",")],
              not args.raw_embeddings)


if __name__ == "__main__":
    main()
