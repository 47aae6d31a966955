"""Does training the retriever on synthetic questions help? LoRA(real) vs LoRA(synthetic lm / ict).

For one corpus + real QA file, each variant runs the real stages as `tunedex stage` subprocesses
(validate -> synthesize -> prepare -> train_retriever -> index) in its own folder under --workdir,
with the same seed, so the real eval split is the same for all (checked):
  real           synthesize.mode=off: trained on the real train questions
  synthetic-lm   synthesize.mode=only, method lm: trained on generator-written questions
  synthetic-ict  synthesize.mode=only, method ict: trained on inverse-cloze sentences
Then scores vector retrieval on the real eval questions with evaluate's own code (run_queries,
ndcg_at_k, bootstrap and paired intervals): the base retriever once (the baseline, on the first
variant's base table) and each variant's LoRA on the candidate table it indexed. No answers.

usage: python bench/synthetic_questions.py --corpus data/demo/corpus.jsonl --qa data/demo/qa.jsonl
         [--config configs/cpu.yaml] [--variants real synthetic-ict] [--set synthesize.max_chunks=0]
         [--variant-set synthetic-lm:synthesize.max_chunks=16] [--workdir /tmp/synthbench]
         [--out synthbench.json] [--skip-stages]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from flows.env import set_offline_env  # noqa: E402

set_offline_env()

from tasks.lib.catalog import Catalog  # noqa: E402
from tasks.lib.config import load_config, parse_override  # noqa: E402
from tasks.lib.data import read_jsonl  # noqa: E402
from tasks.lib.metrics import bootstrap_ci, paired_diff_ci  # noqa: E402
from tasks.lib.models import retriever_base_dir  # noqa: E402
from tasks.lib.retrieval_eval import run_queries  # noqa: E402
from tasks.lib.search import load_index_info, open_retriever  # noqa: E402

# "off" quoted: a --set value is read as YAML, where a bare off is the boolean False
VARIANTS = {"real": ['synthesize.mode="off"'],  # cheapest first: real and ict are done early
            "synthetic-ict": ["synthesize.mode=only", "synthesize.method=ict"],
            "synthetic-lm": ["synthesize.mode=only", "synthesize.method=lm"]}
STAGES = ("validate", "synthesize", "prepare", "train_retriever", "index")
SCORED = ("ndcg@10", "recall@10")


def variant_sets(args: argparse.Namespace, name: str, vdir: Path) -> list[str]:
    """The --set overrides of one variant: its own output folders, the seed, the data, the
    caller's overrides, then the variant's synthesize mode/method (which win)."""
    return [f"paths.corpus_path={Path(args.corpus).resolve()}",
            f"paths.qa_path={Path(args.qa).resolve()}",
            f"paths.prepared_dir={vdir / 'prepared'}", f"paths.reports_dir={vdir / 'reports'}",
            f"paths.adapters_dir={vdir / 'adapters'}", f"paths.index_uri={vdir / 'lancedb'}",
            f"paths.logs_dir={vdir / 'logs'}", f"lock.path={vdir / '.tunedex.lock'}",
            f"tracking.artifact_location={vdir / 'mlartifacts'}",
            f"project.seed={args.seed}", *args.set, *VARIANTS[name],
            *[v.split(":", 1)[1] for v in args.variant_set if v.split(":", 1)[0] == name]]


def run_stage(config: str, stage: str, sets: list[str], vdir: Path) -> float:
    """Run one stage as `tunedex stage`; seconds taken. A failure stops the bench with its log."""
    cmd = [sys.executable, "-m", "flows.cli", "stage", stage, "-c", config]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{vdir / 'mlflow.db'}"}
    log_path = vdir / f"{stage}.log"
    started = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc:
        tail = log_path.read_text().splitlines()[-25:]
        sys.exit(f"stage {stage} failed (exit {rc}); last lines of {log_path}:\n" + "\n".join(tail))
    return time.perf_counter() - started


def run_variant(args: argparse.Namespace, name: str) -> Any:
    """All stages of one variant; its resolved config (for the catalog and the eval sections)."""
    vdir = Path(args.workdir).resolve() / name
    vdir.mkdir(parents=True, exist_ok=True)
    sets = variant_sets(args, name, vdir)
    for i, stage in enumerate(STAGES, 1):
        print(f"[{name}] {i}/{len(STAGES)} {stage} ...", flush=True)
        print(f"[{name}] {stage} done in {run_stage(args.config, stage, sets, vdir):.0f} s",
              flush=True)
    return load_config(args.config, dict(parse_override(s) for s in sets))


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def check_same_eval(cats: dict[str, Catalog]) -> list[dict[str, Any]]:
    """The real eval questions, identical in every variant (else the comparison is not paired)."""
    evals = {name: read_jsonl(cat.eval_qa_path) for name, cat in cats.items()}
    qids = {name: [q["qid"] for q in rows] for name, rows in evals.items()}
    first = next(iter(qids))
    for name, ids in qids.items():
        if ids != qids[first]:
            sys.exit(f"eval_qa.jsonl differs: {name} has {len(ids)} questions, {first} "
                     f"{len(qids[first])} ({len(set(ids) ^ set(qids[first]))} qids not shared); "
                     "the variants did not split the real questions alike")
        if any((q.get("metadata") or {}).get("synthetic") for q in evals[name]):
            sys.exit(f"{name}: eval_qa.jsonl holds synthetic questions; the eval must be real")
    chunks = {name: file_digest(cat.chunks_path) for name, cat in cats.items()}
    if len(set(chunks.values())) != 1:
        sys.exit(f"chunks.jsonl differs between variants: {chunks}")
    return evals[first]


def score(cfg: Any, info: dict[str, Any], role: str, questions: list[dict[str, Any]]
          ) -> list[dict[str, Any]]:
    """Per-question retrieval scores of one indexed role (vector search, as evaluate's base/lora)."""
    base_dir = retriever_base_dir(cfg.models, cfg.paths.models_dir)
    table, model = open_retriever(info, role, base_dir, cfg.index.device, cfg.index.precision)
    rows, _ = run_queries(questions, table, "vector", model, cfg.evaluate, cfg.index)
    return rows


def synth_stats(cat: Catalog) -> dict[str, Any]:
    """What the synthesize stage reported: kept, removed per filter, time, tokens/s."""
    summary = json.loads(cat.synthesize_summary_path.read_text())
    metrics = json.loads(cat.stage_metrics_path("synthesize").read_text())
    keys = ("seconds", "generate_seconds", "tokens_per_second", "generated_tokens",
            "reused_chunks", "generated_chunks", "chunks", "chunks_questioned")
    return {"questions_kept": summary["questions"], "candidates": summary["candidates"],
            "removed": summary["removed"], **{k: metrics[k] for k in keys if k in metrics}}


def evaluate_variants(cfgs: dict[str, Any], resamples: int) -> dict[str, Any]:
    """Base once, each variant's LoRA; intervals and paired differences (vs base, vs real)."""
    cats = {name: Catalog(cfg.paths) for name, cfg in cfgs.items()}
    questions = check_same_eval(cats)
    first = next(iter(cfgs))
    seed = cfgs[first].project.seed
    print(f"scoring base on {len(questions)} real eval questions ...", flush=True)
    per = {"base": score(cfgs[first], load_index_info(cats[first]), "base", questions)}
    for name, cfg in cfgs.items():
        print(f"scoring LoRA({name}) ...", flush=True)
        per[name] = score(cfg, load_index_info(cats[name]), "candidate", questions)

    def paired(a: str, b: str) -> dict[str, Any]:
        return {m: paired_diff_ci([q[m] for q in per[a]], [q[m] for q in per[b]], resamples, seed)
                for m in SCORED}

    rows = {}
    for name in ["base", *cfgs]:
        row = {m: bootstrap_ci([q[m] for q in per[name]], resamples, seed) for m in SCORED}
        if name != "base":
            row["trained_on"] = len(read_jsonl(cats[name].train_qa_path))
            row["vs_base"] = paired(name, "base")
            if "real" in cfgs and name != "real":
                row["vs_real"] = paired(name, "real")
            if name != "real":
                row["synthesize"] = synth_stats(cats[name])
        rows[name] = row
    return {"eval_questions": len(questions), "seed": seed, "resamples": resamples,
            "methods": rows}


def ci(c: dict[str, float] | None, sign: str = "") -> str:
    if c is None:
        return "—"
    return f"{c['mean']:{sign}.3f} [{c['lo']:{sign}.3f}, {c['hi']:{sign}.3f}]"


def print_report(report: dict[str, Any]) -> None:
    print(f"\nretrieval on {report['eval_questions']} real eval questions (vector search, "
          f"bootstrap 95% CI, {report['resamples']} resamples)")
    print(f"{'method':<20} {'trained on':>10}  {'nDCG@10':<22} {'Recall@10':<22} "
          f"{'Δ nDCG vs base':<25} {'Δ nDCG vs LoRA(real)':<25}")
    for name, r in report["methods"].items():
        label = "base" if name == "base" else f"LoRA({name})"
        print(f"{label:<20} {r.get('trained_on', '—'):>10}  {ci(r['ndcg@10']):<22} "
              f"{ci(r['recall@10']):<22} {ci(r.get('vs_base', {}).get('ndcg@10'), '+'):<25} "
              f"{ci(r.get('vs_real', {}).get('ndcg@10'), '+'):<25}")
    for name, r in report["methods"].items():
        s = r.get("synthesize")
        if not s:
            continue
        removed = ", ".join(f"{k} {v}" for k, v in s["removed"].items() if v) or "none"
        speed = (f"generated {s['generated_chunks']} chunks in {s['generate_seconds']:.0f} s, "
                 f"{s['tokens_per_second']:.1f} tokens/s" if "generate_seconds" in s
                 else "no model (ict)" if name == "synthetic-ict"
                 else f"no generation ({s.get('reused_chunks', 0)} chunks reused from the cache)")
        print(f"\n{name}: {s['questions_kept']} kept of {s['candidates']} candidates from "
              f"{s.get('chunks_questioned', '?')}/{s.get('chunks', '?')} chunks; removed: {removed}")
        print(f"{name}: stage {s['seconds']:.0f} s; {speed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="data/demo/corpus.jsonl", help="corpus.jsonl (data contract)")
    parser.add_argument("--qa", default="data/demo/qa.jsonl", help="real qa.jsonl; its eval split scores")
    parser.add_argument("--config", default="configs/cpu.yaml", help="profile YAML")
    parser.add_argument("--seed", type=int, default=13, help="project.seed for every variant")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="which to run (default: all three; real first if named)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every variant, e.g. synthesize.max_chunks=0 "
                             "or paths.models_dir=/abs/.models (repeatable)")
    parser.add_argument("--variant-set", action="append", default=[], metavar="VARIANT:KEY=VALUE",
                        help="override for one variant only, e.g. synthetic-lm:synthesize.max_chunks=16 "
                             "(LM synthesis on CPU: the stage logs its estimate after one batch)")
    parser.add_argument("--workdir", default="/tmp/synthbench",
                        help="one folder per variant: prepared data, reports, adapters, LanceDB, "
                             "mlflow.db, stage logs")
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    parser.add_argument("--skip-stages", action="store_true",
                        help="score what an earlier run left in --workdir, run no stage")
    args = parser.parse_args()
    names = sorted(args.variants, key=list(VARIANTS).index)
    cfgs = {}
    for name in names:
        vdir = Path(args.workdir).resolve() / name
        cfgs[name] = (load_config(args.config, dict(parse_override(s) for s in
                                                    variant_sets(args, name, vdir)))
                      if args.skip_stages else run_variant(args, name))
    report = evaluate_variants(cfgs, cfgs[names[0]].evaluate.bootstrap)
    report["command"] = " ".join(sys.argv)
    print_report(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
