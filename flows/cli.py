"""The `tunedex` command line: parses, calls flows and stage functions, prints. Nothing else."""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from flows.env import set_offline_env

app = typer.Typer(help="tunedex: fine-tune the model, embed the data, or both? Measured on your data.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

ConfigOpt = typer.Option("configs/cpu.yaml", "--config", "-c", help="Profile YAML (configs/*.yaml).")
SetOpt = typer.Option(None, "--set", "-s", metavar="KEY=VALUE",
                      help="Override a config key, e.g. --set prepare.chunk_tokens=128 (repeatable).")


class Stage(str, Enum):
    validate = "validate"
    prepare = "prepare"
    train_retriever = "train_retriever"
    index = "index"
    train_generator = "train_generator"
    evaluate = "evaluate"
    promote = "promote"


def stage_functions():
    """Stage name -> the stage function (the flow's tasks wrap the same functions)."""
    from tasks.evaluate import evaluate_stage
    from tasks.index import index_stage
    from tasks.prepare import prepare_stage
    from tasks.promote import promote_stage
    from tasks.train_generator import train_generator_stage
    from tasks.train_retriever import train_retriever_stage
    from tasks.validate import validate_stage

    return {Stage.validate: validate_stage, Stage.prepare: prepare_stage,
            Stage.train_retriever: train_retriever_stage, Stage.index: index_stage,
            Stage.train_generator: train_generator_stage, Stage.evaluate: evaluate_stage,
            Stage.promote: promote_stage}


def _overrides(pairs: list[str] | None) -> dict[str, Any]:
    from tasks.config import parse_override

    return dict(parse_override(p) for p in pairs or [])


def _run(fn, *args, **kwargs):
    """Call fn; turn a TunedexError into a one-paragraph message and a non-zero exit."""
    from tasks.errors import TunedexError

    try:
        return fn(*args, **kwargs)
    except TunedexError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(err.exit_code) from None


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    """Set offline defaults and logging before any library is imported."""
    set_offline_env()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "alembic", "urllib3", "great_expectations", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def pipeline(config: str = ConfigOpt, set_: list[str] = SetOpt,
             force: bool = typer.Option(False, "--force", help="Retrain even when data, config "
                                        "and code match a registered release.")) -> None:
    """Run the whole pipeline as a Prefect flow, ending with the gated promotion.

    One MLflow parent run with a nested run per stage. Skipped, in seconds, when data, config
    and code are those of a registered release (--force retrains)."""
    from flows.pipeline import pipeline as pipeline_flow

    result = _run(pipeline_flow, config_path=config, overrides=_overrides(set_), force=force)
    if result["skipped"]:
        typer.echo(f"pipeline skipped: {result['reason']}")
        return
    typer.echo(f"pipeline finished: MLflow run {result['run_id']}; {result['promote']['summary']}")


@app.command()
def reindex(config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Refresh the champion's index from the corpus, without training.

    The new table version is pinned on the champion only if retrieval metrics hold. This is
    what the `reindex` deployment runs."""
    from flows.reindex import reindex as reindex_flow

    result = _run(reindex_flow, config_path=config, overrides=_overrides(set_))
    typer.echo(f"reindex finished: MLflow run {result['run_id']}; {result['pin']['summary']}")


@app.command()
def serve(config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Serve the `retrain` and `reindex` deployments on their schedules (Ctrl-C stops).

    Uses PREFECT_API_URL when set (a Prefect server: runs show in its UI); otherwise a local
    API started for this process."""
    from flows.deployments import serve_deployments

    _run(serve_deployments, config, _overrides(set_))


@app.command()
def stage(name: Stage = typer.Argument(..., help="Stage to run (the dvc.yaml key)."),
          config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Run one stage without Prefect (what `dvc repro` calls); same code as the flow's step.

    `promote` is not a DVC stage: run it after `dvc repro` to register and gate the release."""
    from tasks.config import load_config

    cfg = _run(load_config, config, _overrides(set_))
    _run(stage_functions()[name], cfg)
    typer.echo(f"stage {name.value} finished")


@app.command("config")
def show_config(config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Print the resolved config (defaults filled in) as JSON, or the error naming the key."""
    from tasks.config import load_config

    cfg = _run(load_config, config, _overrides(set_))
    typer.echo(json.dumps(cfg.to_dict(), indent=2))


@app.command()
def setup(config: str = ConfigOpt) -> None:
    """Check that every model the profile names resolves offline (run by `make setup`)."""
    from tasks.config import load_config
    from tasks.models import retriever_base_dir
    from tasks.train_generator import generator_base_dir

    cfg = _run(load_config, config)
    path = _run(retriever_base_dir, cfg)
    typer.echo(f"retriever {cfg.models.retriever_id}: {path}")
    path = _run(generator_base_dir, cfg)
    typer.echo(f"generator {cfg.models.generator_id}: {path}")


class Dataset(str, Enum):
    pubmedqa = "pubmedqa"
    covidfaq = "covidfaq"


@app.command()
def convert(name: Dataset = typer.Argument(..., help="Which public dataset SOURCE holds."),
            source: str = typer.Argument(..., help="Its JSON file, e.g. pqal_dev.json or "
                                                   "query_answer_pairs.json."),
            out: str | None = typer.Option(None, "--out", "-o",
                                           help="Output folder (default: data/<name>).")
            ) -> None:
    """Convert a public dataset to corpus.jsonl + qa.jsonl (the data contract); print the counts."""
    from tasks.convert import convert_dataset

    out_dir = Path(out) if out else Path("data") / name.value
    stats = _run(convert_dataset, name.value, Path(source), out_dir)
    typer.echo(json.dumps(stats, indent=2))
    typer.echo(f"wrote {out_dir / 'corpus.jsonl'} and {out_dir / 'qa.jsonl'}")


class Mode(str, Enum):
    hybrid = "hybrid"
    vector = "vector"
    bm25 = "bm25"


class Role(str, Enum):
    candidate = "candidate"
    base = "base"


ReleaseOpt = typer.Option("champion", "--release", "-r",
                          help="What to serve: a registry alias (champion, challenger), a "
                               "tunedex-retriever version number, or 'local' for the tables and "
                               "adapters of the last pipeline run (before promotion).")


def _serving(cfg, release: str, role: str = "candidate") -> dict[str, Any]:
    """Table info, retriever adapter and generator adapter/base for a release (or 'local')."""
    from tasks.search import load_index_info
    from tasks.train_generator import generator_adapter_dir

    if release == "local":
        info = _run(load_index_info, cfg)
        role = role if role in info["tables"] else "base"
        table = info["tables"][role]
        return {"label": f"{role} retriever (last index run)", "index_uri": info["index_uri"],
                "table": table, "release": None, "retriever_base": cfg.models.retriever_id,
                "retriever_adapter": Path(table["adapter_dir"]) if table["adapter_dir"] else None,
                "generator_base": cfg.models.generator_id,
                "generator_adapter": generator_adapter_dir(cfg)}
    from tasks.registry import adapter_dir, resolve_release

    rel = _run(resolve_release, cfg, release)
    return {"label": f"release {release} (tunedex-retriever v{rel.retriever_version}, "
                     f"generator v{rel.generator_version})",
            "index_uri": rel.index_uri, "release": rel.retriever_version,
            "table": {"table": rel.table, "version": rel.table_version},
            "retriever_base": rel.retriever_base, "generator_base": rel.generator_base,
            "retriever_adapter": _run(adapter_dir, cfg, cfg.promote.retriever_model,
                                      rel.retriever_version),
            "generator_adapter": _run(adapter_dir, cfg, cfg.promote.generator_model,
                                      rel.generator_version)}


def _open_serving_table(serving: dict[str, Any]):
    from tasks.search import connect, open_pinned

    db = _run(connect, serving["index_uri"], False)
    return _run(open_pinned, db, serving["table"], serving["release"])


def _retriever(cfg, serving: dict[str, Any]):
    from tasks.models import load_retriever, resolve_model_dir

    base_dir = _run(resolve_model_dir, serving["retriever_base"], cfg.models.allow_download,
                    cfg.paths.models_dir)
    return load_retriever(base_dir, serving["retriever_adapter"], cfg.index.device)


@app.command("search")
def search_cmd(query: str = typer.Argument(..., help="The question or keywords."),
               k: int = typer.Option(5, "-k", help="Documents to show."),
               mode: Mode = typer.Option(Mode.hybrid, help="hybrid (BM25 + vectors, RRF), "
                                                           "vector or bm25."),
               release: str = ReleaseOpt,
               retriever: Role = typer.Option(Role.candidate, help="With --release local: "
                                              "candidate (LoRA) or base."),
               config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Top-k documents for a query from the champion release's pinned table (or --release)."""
    from tasks.config import load_config
    from tasks.search import best_per_doc, search

    cfg = _run(load_config, config, _overrides(set_))
    serving = _serving(cfg, release, retriever.value)
    table = _open_serving_table(serving)
    model = None if mode == Mode.bm25 else _retriever(cfg, serving)
    hits = search(table, query, mode.value, cfg.evaluate.chunk_k, model, cfg.evaluate.rrf_k,
                  cfg.index)
    typer.echo(f"{mode.value} search, {serving['label']}, table {serving['table']['table']} "
               f"v{serving['table']['version']}")
    for rank, hit in enumerate(best_per_doc(hits, k), start=1):
        snippet = " ".join(hit["text"].split())[:110]
        typer.echo(f"{rank:>2}. {hit['doc_id']:<16} {hit['score']:.4f}  {snippet}")


class Setup(str, Enum):
    hybrid = "hybrid"
    rag = "rag"
    finetuned = "finetuned"
    base = "base"


@app.command()
def ask(question: str = typer.Argument(..., help="The question to answer."),
        setup: Setup = typer.Option(Setup.hybrid, help="hybrid (LoRA LM + retrieved context), rag "
                                    "(base LM + context), finetuned (LoRA LM), base."),
        release: str = ReleaseOpt,
        config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Answer a question with the champion release (or --release), citing the retrieved doc_ids."""
    from tasks.config import load_config
    from tasks.generator import (
        build_messages,
        generate_answers,
        load_generator,
        render_prompt,
        resolve_generator_dir,
    )
    from tasks.scoreboard import SETUPS
    from tasks.search import retrieve_contexts
    from tasks.sft import cut_chunks

    cfg = _run(load_config, config, _overrides(set_))
    uses_lora, uses_context = SETUPS[setup.value]
    serving = _serving(cfg, release)
    typer.echo(f"{setup.value} answer, {serving['label']}", err=True)
    hits: list = []
    if uses_context:
        table = _open_serving_table(serving)
        hits = retrieve_contexts(table, _retriever(cfg, serving), [question],
                                 cfg.generate.context_k, cfg.index)[0]
    adapter = serving["generator_adapter"] if uses_lora else None
    if adapter is not None and not adapter.is_dir():
        typer.secho(f"error: {adapter} not found: run `tunedex stage train_generator` first",
                    err=True, fg=typer.colors.RED)
        raise typer.Exit(2)
    base_dir = _run(resolve_generator_dir, serving["generator_base"], cfg.models.allow_download,
                    Path(cfg.paths.models_dir))
    model, tok = _run(load_generator, base_dir, adapter, cfg.generate.device,
                      serving["generator_base"])
    chunks = cut_chunks(tok, [h["text"] for h in hits], cfg.generate.max_context_tokens) or None
    prompt = render_prompt(tok, build_messages(question, chunks))
    answer = generate_answers(model, tok, [prompt], cfg.generate.max_new_tokens, 1)[0]
    typer.echo(answer["text"])
    if hits:
        typer.echo("sources: " + ", ".join(dict.fromkeys(h["doc_id"] for h in hits)))


@app.command()
def releases(config: str = ConfigOpt, set_: list[str] = SetOpt,
             as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")
             ) -> None:
    """List registered releases (newest first) with aliases, pinned table, gate and metrics.

    gate: promoted / rejected by the release gate; (rb): rolled back since; (gc): table dropped."""
    from datetime import UTC, datetime

    from tasks.config import load_config
    from tasks.registry import check_registry, list_releases

    cfg = _run(load_config, config, _overrides(set_))
    _run(check_registry, cfg)
    rows = list_releases(cfg)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no releases in {cfg.promote.retriever_model}: run the pipeline first")
        return
    metric_names = list(dict.fromkeys(m for r in rows for m in r["metrics"]))
    typer.echo(f"{'ver':>4} {'gen':>4}  {'aliases':<20} {'created (UTC)':<17} {'gate':<14} "
               f"{'table':<26} " + " ".join(f"{m:>24}" for m in metric_names))
    for r in rows:
        created = datetime.fromtimestamp(r["created"] / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        table = r["table"] + (" (gc)" if r["gc"] else "")
        typer.echo(f"{r['version']:>4} {r['generator_version'] or '?':>4}  "
                   f"{','.join(r['aliases']) or '-':<20} {created:<17} "
                   f"{r['gate'] + (' (rb)' if r['rolled_back'] else ''):<14} {table:<26} "
                   + " ".join(f"{r['metrics'].get(m, '-'):>24}" for m in metric_names))


@app.command()
def rollback(to: int | None = typer.Option(None, "--to", help="Retriever version to serve "
                                           "(default: the release before the champion)."),
             wait: bool = typer.Option(False, "--wait", help="Wait for a running pipeline's "
                                       "write lock instead of failing at once."),
             config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Move `champion` (both models) back to the previous release; nothing is rebuilt."""
    from tasks.config import load_config
    from tasks.registry import rollback as rollback_release

    cfg = _run(load_config, config, _overrides(set_))
    old, new = _run(rollback_release, cfg, to, wait)
    typer.echo(f"champion: retriever v{old.retriever_version} -> v{new.retriever_version}, "
               f"generator v{old.generator_version} -> v{new.generator_version}, "
               f"table {new.table} v{new.table_version}")


@app.command()
def gc(dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be dropped."),
       wait: bool = typer.Option(False, "--wait", help="Wait for a running writer's lock."),
       config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Drop LanceDB tables that no kept release pins.

    Kept: the tables of the newest promote.keep_releases versions, of champion and challenger
    and their previous releases, and of the last index run."""
    from tasks.config import load_config
    from tasks.registry import gc as gc_tables

    cfg = _run(load_config, config, _overrides(set_))
    plan = _run(gc_tables, cfg, dry_run, wait)
    for table, users in plan["keep"].items():
        typer.echo(f"keep {table}: " + ", ".join(f"v{u}" if isinstance(u, int) else u for u in users))
    verb = "would drop" if dry_run else "dropped"
    for table in plan["drop"]:
        typer.echo(f"{verb} {table}")
    if not plan["drop"]:
        typer.echo("nothing to drop")


if __name__ == "__main__":
    app()
