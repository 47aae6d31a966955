"""Index throughput vs raw encode, and incremental re-index cost, measured in one run.

usage: python bench/index_throughput.py [--config configs/cpu.yaml] [--repeats 2]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flows.env import set_offline_env  # noqa: E402

set_offline_env()

from tasks.lib.catalog import Catalog  # noqa: E402
from tasks.lib.config import load_config  # noqa: E402
from tasks.lib.data import read_jsonl  # noqa: E402
from tasks.lib.models import load_retriever, retriever_base_dir  # noqa: E402
from tasks.lib.search import connect  # noqa: E402
from tasks.lib.tables import encode, update_table  # noqa: E402
from tasks.lib.text import content_hash, passage_text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/cpu.yaml")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each side")
    args = parser.parse_args()
    cfg = load_config(args.config)
    chunks = read_jsonl(Catalog(cfg.paths).chunks_path)
    model = load_retriever(retriever_base_dir(cfg.models, cfg.paths.models_dir), device=cfg.index.device)
    texts = [passage_text(c) for c in chunks]
    encode(model, texts[:64], cfg.index.batch_size)  # warm-up

    raw, full = [], []
    for i in range(args.repeats):
        started = time.perf_counter()
        model.encode(texts, batch_size=cfg.index.batch_size, normalize_embeddings=True)
        raw.append(time.perf_counter() - started)
        with tempfile.TemporaryDirectory() as tmp:
            db = connect(tmp)
            started = time.perf_counter()
            update_table(db, f"bench_{i}", model, chunks, cfg.index)
            full.append(time.perf_counter() - started)
    ratio = min(raw) / min(full)
    print(f"chunks: {len(chunks)}, batch {cfg.index.batch_size}")
    print(f"raw encode      : {min(raw):7.2f} s  ({len(chunks) / min(raw):6.1f} chunks/s)")
    print(f"full re-index   : {min(full):7.2f} s  ({len(chunks) / min(full):6.1f} chunks/s)")
    print(f"throughput ratio: {ratio:.3f}  (target >= 0.95) {'PASS' if ratio >= 0.95 else 'FAIL'}")

    with tempfile.TemporaryDirectory() as tmp:
        db = connect(tmp)
        started = time.perf_counter()
        update_table(db, "bench", model, chunks, cfg.index)
        full_s = time.perf_counter() - started
        docs = sorted({c["doc_id"] for c in chunks})
        edited = set(docs[:: max(1, len(docs) // math.ceil(len(docs) / 100))][
            : math.ceil(len(docs) / 100)])  # 1% of the documents, spread over the corpus
        changed = [dict(c) for c in chunks]
        for c in changed:
            if c["doc_id"] in edited:
                c["text"] = c["text"] + " (updated)"
                c["content_hash"] = content_hash(c.get("title"), c["text"])
        started = time.perf_counter()
        stats = update_table(db, "bench", model, changed, cfg.index)
        inc_s = time.perf_counter() - started
    share = inc_s / full_s
    print(f"incremental     : {inc_s:7.2f} s for {len(edited)} of {len(docs)} documents changed "
          f"({stats['embedded']} chunks) = {share:.1%} of full ({full_s:.2f} s) "
          f"(target <= 5%) {'PASS' if share <= 0.05 else 'FAIL'}")


if __name__ == "__main__":
    main()
