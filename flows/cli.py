"""The `tunedex` command line: parses, calls flows and stage functions, prints. Nothing else."""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
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


def stage_functions():
    """Stage name -> the stage function (the flow's tasks wrap the same functions)."""
    from tasks.evaluate import evaluate_stage
    from tasks.index import index_stage
    from tasks.prepare import prepare_stage
    from tasks.train_generator import train_generator_stage
    from tasks.train_retriever import train_retriever_stage
    from tasks.validate import validate_stage

    return {Stage.validate: validate_stage, Stage.prepare: prepare_stage,
            Stage.train_retriever: train_retriever_stage, Stage.index: index_stage,
            Stage.train_generator: train_generator_stage, Stage.evaluate: evaluate_stage}


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
def pipeline(config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Run the whole pipeline as a Prefect flow (one MLflow parent run, a nested run per stage)."""
    from flows.pipeline import pipeline as pipeline_flow

    result = _run(pipeline_flow, config_path=config, overrides=_overrides(set_))
    typer.echo(f"pipeline finished: MLflow run {result['run_id']}")


@app.command()
def stage(name: Stage = typer.Argument(..., help="Stage to run (the dvc.yaml key)."),
          config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Run one stage without Prefect (what `dvc repro` calls); same code as the flow's step."""
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
    from pathlib import Path

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


@app.command("search")
def search_cmd(query: str = typer.Argument(..., help="The question or keywords."),
               k: int = typer.Option(5, "-k", help="Documents to show."),
               mode: Mode = typer.Option(Mode.hybrid, help="hybrid (BM25 + vectors, RRF), "
                                                           "vector or bm25."),
               retriever: Role = typer.Option(Role.candidate, help="Which indexed retriever: "
                                              "candidate (LoRA) or base."),
               config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Top-k documents for a query from the table the last index run recorded."""
    from pathlib import Path

    from tasks.config import load_config
    from tasks.models import load_retriever, retriever_base_dir
    from tasks.search import best_per_doc, connect, load_index_info, open_pinned, search

    cfg = _run(load_config, config, _overrides(set_))
    info = _run(load_index_info, cfg)
    role = retriever.value if retriever.value in info["tables"] else "base"
    table_info = info["tables"][role]
    table = _run(open_pinned, connect(info["index_uri"]), table_info)
    model = None
    if mode != Mode.bm25:
        base_dir = _run(retriever_base_dir, cfg)
        adapter = Path(table_info["adapter_dir"]) if table_info["adapter_dir"] else None
        model = load_retriever(base_dir, adapter, cfg.index.device)
    hits = search(table, query, mode.value, cfg.evaluate.chunk_k, model, cfg.evaluate.rrf_k,
                  cfg.index)
    typer.echo(f"{mode.value} search, {role} retriever, table {table_info['table']} "
               f"v{table_info['version']}")
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
        config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Answer a question with the chosen setup, citing the retrieved doc_ids."""
    from tasks.config import load_config
    from tasks.generator import build_messages, generate_answers, load_generator, render_prompt
    from tasks.scoreboard import SETUPS
    from tasks.search import load_index_info, open_retriever, retrieve_contexts
    from tasks.sft import cut_chunks
    from tasks.train_generator import generator_adapter_dir, generator_base_dir

    cfg = _run(load_config, config, _overrides(set_))
    uses_lora, uses_context = SETUPS[setup.value]
    hits: list = []
    if uses_context:
        info = _run(load_index_info, cfg)
        role = "candidate" if "candidate" in info["tables"] else "base"
        table, retriever = _run(open_retriever, cfg, info, role)
        hits = retrieve_contexts(table, retriever, [question], cfg.generate.context_k, cfg.index)[0]
    adapter = generator_adapter_dir(cfg) if uses_lora else None
    if adapter is not None and not adapter.is_dir():
        typer.secho(f"error: {adapter} not found: run `tunedex stage train_generator` first",
                    err=True, fg=typer.colors.RED)
        raise typer.Exit(2)
    model, tok = _run(load_generator, _run(generator_base_dir, cfg), adapter, cfg.generate.device,
                      cfg.models.generator_id)
    chunks = cut_chunks(tok, [h["text"] for h in hits], cfg.generate.max_context_tokens) or None
    prompt = render_prompt(tok, build_messages(question, chunks))
    answer = generate_answers(model, tok, [prompt], cfg.generate.max_new_tokens, 1)[0]
    typer.echo(answer["text"])
    if hits:
        typer.echo("sources: " + ", ".join(dict.fromkeys(h["doc_id"] for h in hits)))


if __name__ == "__main__":
    app()
