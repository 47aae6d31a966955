"""The `tunedex` command line: parses, calls flows and stage functions, prints. Nothing else."""

from __future__ import annotations

import json
import logging
import signal
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


def _stage_enum() -> type[Enum]:
    from tasks.lib.stages import FLOW_STAGES

    return Enum("Stage", {name: name for name in FLOW_STAGES}, type=str)


Stage = _stage_enum()  # the flow's steps: the dvc.yaml keys plus promote


def run_one_stage(cfg: Any, name: str, parent_run_id: str) -> Any:
    """Call one stage function with the config sections it reads (the flow's step, no Prefect)."""
    import importlib

    from tasks.lib.context import StageContext

    ctx = StageContext.of(cfg, parent_run_id)
    if name == "promote":
        from tasks.lib.release_skip import release_inputs
        from tasks.promote import promote_stage

        return promote_stage(cfg.promote, cfg.prepare, cfg.generate, cfg.index, cfg.evaluate,
                             ctx, release_inputs(cfg))
    from tasks.lib.stages import BY_NAME

    fn = getattr(importlib.import_module(BY_NAME[name].module), f"{name}_stage")
    return fn(*(cfg.section(key) for key in BY_NAME[name].sections), ctx)


def _overrides(pairs: list[str] | None) -> dict[str, Any]:
    """The --set overrides; those carrying secrets (a token, a URI with a password) are kept in
    this process's environment instead, so they never become Prefect flow parameters."""
    from tasks.lib.config import hide_secret_overrides, parse_override

    return hide_secret_overrides(dict(parse_override(p) for p in pairs or []))


def _run(fn, *args, **kwargs):
    """Call fn; turn a TunedexError into a one-paragraph message and a non-zero exit."""
    from tasks.lib.errors import TunedexError

    try:
        return fn(*args, **kwargs)
    except TunedexError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM outside a flow (see main)
        sig = getattr(err, "signal", signal.SIGINT)
        typer.secho(f"cancelled by signal {sig}; the write lock is released", err=True)
        raise typer.Exit(128 + sig) from None
    except Exception as err:
        if type(err).__name__ != "CancelledRun":  # a flow that ended Cancelled (tasks/lib/runtime.py)
            raise
        typer.secho(f"cancelled: {err}", err=True)
        raise typer.Exit(128 + signal.SIGTERM) from None


def _on_sigterm(signum: int, _frame: Any) -> None:
    from tasks.lib.errors import Terminated

    raise Terminated(signum)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    """Set offline defaults and logging before any library is imported."""
    set_offline_env()
    # SIGTERM (a timeout, a worker's cancellation) unwinds like Ctrl-C instead of killing at once;
    # inside a flow Prefect's own handler takes over and the flow ends Cancelled.
    signal.signal(signal.SIGTERM, _on_sigterm)
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
    from flows.head_start import cannot_skip, head_start
    from flows.reaper import start_reaper
    from tasks.lib.config import load_config
    from tasks.lib.registry import check_registry, registry_ref
    from tasks.lib.release_skip import skip_reason

    overrides = _overrides(set_)
    cfg = _run(load_config, config, overrides)
    if cannot_skip(cfg, force):  # a run that must train: the temporary API starts meanwhile
        start_reaper()  # the temporary Prefect API and other children end with this command
        api = head_start()
    else:
        api = None
    _run(check_registry, registry_ref(cfg))  # an unreachable registry: named before any work
    # Read-only, so it is decided here: nothing to train needs no Prefect server (~7 s saved).
    # The flow decides again under the write lock (deployments run it without this command).
    skip = _run(skip_reason, cfg, force)
    if skip is not None:
        typer.echo(f"pipeline skipped: {skip['reason']}")
        return
    from flows.pipeline import pipeline as pipeline_flow

    if api is None:
        start_reaper()
    else:
        api.wait()
    result = _run(pipeline_flow, config_path=config, overrides=overrides, force=force)
    if result["skipped"]:
        typer.echo(f"pipeline skipped: {result['reason']}")
        return
    typer.echo(f"pipeline finished: MLflow run {result['run_id']}; {result['promote']['summary']}")


@app.command()
def reindex(config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Refresh the champion's index from the corpus, without training.

    The new table version is pinned on the champion only if retrieval metrics hold. This is
    what the `reindex` deployment runs."""
    from flows.reaper import start_reaper
    from flows.reindex import reindex as reindex_flow

    start_reaper()
    result = _run(reindex_flow, config_path=config, overrides=_overrides(set_))
    typer.echo(f"reindex finished: MLflow run {result['run_id']}; {result['pin']['summary']}")


@app.command()
def monitor(config: str = ConfigOpt, set_: list[str] = SetOpt,
            retrain_here: bool = typer.Option(False, "--retrain-here", help="Without a Prefect "
                                              "server: when a rule fires, run the pipeline in this "
                                              "process (the cooldown applies).")) -> None:
    """Check the served release once: query drift, retrieval confidence, feedback, volume.

    Reads the query log of `tunedex serve`, writes reports/monitor/report.html (and .json),
    starts the `retrain` deployment when a rule in monitor.rules fires (once per cooldown; without
    a Prefect server it says what it would have started) and proposes helpful served questions
    for review (`tunedex accept-queries`). The `monitor` deployment runs this hourly."""
    from flows.monitor import monitor as monitor_flow
    from flows.reaper import start_reaper
    from tasks.lib.monitor_report import test_line

    start_reaper()
    report = _run(monitor_flow, config_path=config, overrides=_overrides(set_),
                  retrain_here=retrain_here)
    d, v = report["decision"], report["volume"]
    typer.echo(f"monitor: release v{report['release']}, {v['questions']} new questions "
               f"({v['feedback']} rated)" + ("" if v["enough"] else
                                             f": not enough data for the tests (need {v['min_questions']})"))
    for name in ("drift", "confidence"):
        typer.echo(f"  {name}: {test_line(report[name])}")
    down = report["feedback"].get("down")
    typer.echo("  feedback: " + (f"thumbs-down {down['rate']:.2f} [{down['low']:.2f}, {down['high']:.2f}]"
                                 if down else report["feedback"]["status"]))
    typer.echo(f"decision: {d['action']}: {d['reason']}" + (f"; {d['detail']}" if d.get("detail") else ""))
    h = report["harvest"]
    typer.echo(f"review: {h['added']} new candidate questions, {h['pending']} pending in {h['review_path']}")
    typer.echo(f"report: {report['paths']['html']}")


@app.command("accept-queries")
def accept_queries(config: str = ConfigOpt, set_: list[str] = SetOpt,
                   all_: bool = typer.Option(False, "--all", help="Accept every pending row "
                                             "(after reading them), not only those marked accept.")
                   ) -> None:
    """Add reviewed served questions to the QA data (paths.qa_path) for the next retrain.

    Edit reports/monitor/review.jsonl: set "review" to "accept" or "reject" on each line (a
    /search question needs an answer written in). Accepted rows are checked against the data
    contract and appended as train questions; nothing is written if one is invalid."""
    from tasks.lib.catalog import Catalog
    from tasks.lib.config import load_config
    from tasks.lib.harvest import accept_queries as accept

    cfg = _run(load_config, config, _overrides(set_))
    cat = Catalog(cfg.paths)
    result = _run(accept, cat.review_path, cat.qa_path, cat.corpus_path, all_)
    typer.echo(f"accepted {len(result['accepted'])} question(s) into {result['qa_path']}; "
               f"{result['pending']} still pending in {cat.review_path}")
    if result["incomplete"]:
        typer.echo(f"left pending (no answer or unknown document): review lines "
                   f"{', '.join(map(str, result['incomplete']))}")
    if result["accepted"]:
        dvc_file = Path(f"{cat.qa_path}.dvc")
        hint = f"dvc add {cat.qa_path} && git add {dvc_file}" if dvc_file.is_file() else \
            f"git add {cat.qa_path}"
        typer.echo(f"next: {hint}, then `tunedex pipeline` retrains with them")


@app.command()
def schedule(config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Run the `retrain`, `reindex` and `monitor` deployments on their schedules (Ctrl-C stops).

    Uses PREFECT_API_URL when set (a Prefect server: runs show in its UI); otherwise a local
    API started for this process."""
    from flows.deployments import serve_deployments
    from flows.reaper import start_reaper

    start_reaper()
    _run(serve_deployments, config, _overrides(set_))


@app.command()
def serve(config: str = ConfigOpt, set_: list[str] = SetOpt,
          host: str | None = typer.Option(None, "--host", help="Address to bind (default "
                                           "serve.host, 127.0.0.1); off loopback a token is needed."),
          port: int | None = typer.Option(None, "--port", "-p", help="Port (default serve.port, 8000)."),
          release: str = typer.Option("champion", "--release", "-r", help="What to serve: an "
                                      "alias (followed as it moves), a version number, or 'local'.")
          ) -> None:
    """Serve the release over HTTP: /search, /ask, /feedback, /release, /health, a page at /.

    Loads the release once, follows @champion (swapping releases whole, in the background),
    batches concurrent /ask requests and logs every request (OpenAPI docs at /docs)."""
    from flows.serve import serve as serve_http
    from tasks.lib.config import load_config

    cfg = _run(load_config, config, _overrides(set_))
    _run(serve_http, cfg, host or cfg.serve.host, port or cfg.serve.port, release)


@app.command()
def stage(name: Stage = typer.Argument(..., help="Stage to run (the dvc.yaml key)."),
          config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Run one stage without Prefect (what `dvc repro` calls); same code as the flow's step.

    `promote` is not a DVC stage: run it after `dvc repro` to register and gate the release."""
    from tasks.lib.config import load_config
    from tasks.lib.tracking import pipeline_run

    cfg = _run(load_config, config, _overrides(set_))

    def run() -> None:
        with pipeline_run(cfg, f"stage-{name.value}") as parent_id:  # the resolved config, once
            run_one_stage(cfg, name.value, parent_id)

    _run(run)
    typer.echo(f"stage {name.value} finished")


@app.command()
def synthesize(config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Write training questions from the corpus alone (the synthesize stage), then say how many.

    Run `tunedex stage validate` first. synthesize.method lm asks the generator, ict takes
    sentences (seconds); each filter's count is in reports/synthesize/summary.json. Example:
    tunedex synthesize --set synthesize.mode=only --set synthesize.method=ict"""
    from tasks.lib.config import load_config
    from tasks.lib.tracking import pipeline_run

    cfg = _run(load_config, config, _overrides(set_))

    def run() -> dict[str, Any]:
        with pipeline_run(cfg, "stage-synthesize") as parent_id:
            return run_one_stage(cfg, "synthesize", parent_id)

    result = _run(run)
    removed = ", ".join(f"{k} {v}" for k, v in result["removed"].items() if v) or "none"
    typer.echo(f"synthesize ({result['resolved_mode']}, {result['method']}): "
               f"{result['questions']} questions from {result['chunks_questioned']} chunks -> "
               f"{result['synthetic_path']}; removed: {removed}")


@app.command("config")
def show_config(config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Print the resolved config (defaults filled in) as JSON, or the error naming the key.

    Secrets are masked: serve.token, *_password/*_secret keys, passwords inside URIs."""
    from tasks.lib.config import load_config
    from tasks.lib.tracking import redact_secrets

    cfg = _run(load_config, config, _overrides(set_))
    typer.echo(json.dumps(redact_secrets(cfg.to_dict()), indent=2))  # tokens, URI passwords: ***


@app.command()
def setup(config: str = ConfigOpt) -> None:
    """Check that every model the profile names resolves offline (run by `make setup`)."""
    from tasks.lib.config import load_config
    from tasks.lib.generator import generator_base_dir
    from tasks.lib.models import retriever_base_dir

    cfg = _run(load_config, config)
    path = _run(retriever_base_dir, cfg.models, cfg.paths.models_dir)
    typer.echo(f"retriever {cfg.models.retriever_id}: {path}")
    path = _run(generator_base_dir, cfg.models, cfg.paths.models_dir)
    typer.echo(f"generator {cfg.models.generator_id}: {path}")


@app.command("dvc-yaml")
def dvc_yaml(config: str = ConfigOpt,
             check: bool = typer.Option(False, "--check", help="Exit 1 if dvc.yaml differs "
                                        "instead of writing it.")) -> None:
    """Render dvc.yaml from the stage table for CONFIG: each stage's data, code closure, params.

    Run it after adding a stage, an import or a config key a stage reads; the flow reuses
    up-to-date stages only while dvc.yaml is current for the config it runs."""
    import yaml

    from tasks.lib.catalog import Catalog
    from tasks.lib.config import load_config
    from tasks.lib.stages import ROOT, render_dvc_yaml

    cfg = _run(load_config, config)
    raw = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    text = render_dvc_yaml(Catalog(cfg.paths), config, raw, ROOT)
    path = ROOT / "dvc.yaml"
    if check:
        same = path.is_file() and path.read_text(encoding="utf-8") == text
        typer.echo(f"{path}: {'current' if same else 'differs from the stage table'}")
        raise typer.Exit(0 if same else 1)
    path.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {path} for {config}")


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
    from tasks.lib.convert import convert_dataset

    out_dir = Path(out) if out else Path("data") / name.value
    stats = _run(convert_dataset, name.value, Path(source), out_dir)
    typer.echo(json.dumps(stats, indent=2))
    typer.echo(f"wrote {out_dir / 'corpus.jsonl'} and {out_dir / 'qa.jsonl'}")


class Mode(str, Enum):
    fusion = "fusion"
    fusion_native = "fusion_native"
    vector = "vector"
    bm25 = "bm25"
    hybrid = "hybrid"  # deprecated name of fusion (a warning says so)


class Role(str, Enum):
    candidate = "candidate"
    base = "base"


ReleaseOpt = typer.Option("champion", "--release", "-r",
                          help="What to serve: a registry alias (champion, challenger), a "
                               "tunedex-retriever version number, or 'local' for the tables and "
                               "adapters of the last pipeline run (before promotion).")


def _nonblank(text: str, what: str) -> str:
    from tasks.lib.errors import ConfigError

    if not text.strip():
        raise ConfigError(f"the {what} is empty (or only whitespace): nothing to "
                          f"{'search for' if what == 'query' else 'answer'}")
    return text


def _open_release(cfg, release: str, role: str = "candidate"):
    """The release to query (the one place search/ask take the config apart)."""
    from tasks.lib.catalog import Catalog
    from tasks.lib.registry import registry_ref
    from tasks.lib.serving import ServingSections, open_release

    sections = ServingSections(cfg.models, cfg.generate, cfg.evaluate, cfg.index)
    return _run(open_release, registry_ref(cfg), Catalog(cfg.paths), sections, release, role)


@app.command("search")
def search_cmd(query: str = typer.Argument(..., help="The question or keywords."),
               k: int = typer.Option(5, "-k", help="Documents to show."),
               mode: Mode | None = typer.Option(None, help="fusion (BM25 + vectors, RRF), "
                                                "fusion_native (LanceDB's hybrid query), vector "
                                                "or bm25; default: the release's chosen method."),
               release: str = ReleaseOpt,
               retriever: Role = typer.Option(Role.candidate, help="With --release local: "
                                              "candidate (LoRA) or base."),
               config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Top-k documents for a query from the champion release's pinned table (or --release)."""
    from tasks.lib.config import load_config

    cfg = _run(load_config, config, _overrides(set_))
    _run(_nonblank, query, "query")
    loaded = _open_release(cfg, release, retriever.value)
    hits = _run(loaded.search, query, mode.value if mode else None, k)
    served = loaded.served
    from tasks.lib.choice import release_mode

    shown = mode.value if mode else release_mode(served.tags, "fusion")  # what search() used
    typer.echo(f"{shown} search, {served.label}, table {served.table} v{served.table_version}")
    for rank, hit in enumerate(hits, start=1):
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
    from tasks.lib.config import load_config

    cfg = _run(load_config, config, _overrides(set_))
    _run(_nonblank, question, "question")
    loaded = _open_release(cfg, release)
    typer.echo(f"{setup.value} answer, {loaded.served.label}", err=True)
    answer = _run(loaded.ask, question, setup.value)
    typer.echo(answer.text)
    if answer.sources:
        typer.echo("sources: " + ", ".join(answer.sources))


def _release_line(row: dict[str, Any], metric_names: list[str]) -> str:
    """One row of the `releases` table."""
    from datetime import UTC, datetime

    created = datetime.fromtimestamp(row["created"] / 1000, UTC).strftime("%Y-%m-%d %H:%M")
    table = row["table"] + (" (gc)" if row["gc"] else "")
    gate = row["gate"] + (" (rb)" if row["rolled_back"] else "")
    return (f"{row['version']:>4} {row['generator_version'] or '?':>4}  "
            f"{','.join(row['aliases']) or '-':<20} {created:<17} {gate:<14} {table:<26} "
            + " ".join(f"{row['metrics'].get(m, '-'):>24}" for m in metric_names))


@app.command()
def releases(config: str = ConfigOpt, set_: list[str] = SetOpt,
             as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")
             ) -> None:
    """List registered releases (newest first) with aliases, pinned table, gate and metrics.

    gate: promoted / rejected by the release gate; (rb): rolled back since; (gc): table dropped."""
    from tasks.lib.config import load_config
    from tasks.lib.registry import check_registry, list_releases, registry_ref

    reg = registry_ref(_run(load_config, config, _overrides(set_)))
    _run(check_registry, reg)
    rows = _run(list_releases, reg)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no releases in {reg.retriever_model}: run the pipeline first")
        return
    metric_names = list(dict.fromkeys(m for r in rows for m in r["metrics"]))
    typer.echo(f"{'ver':>4} {'gen':>4}  {'aliases':<20} {'created (UTC)':<17} {'gate':<14} "
               f"{'table':<26} " + " ".join(f"{m:>24}" for m in metric_names))
    for row in rows:
        typer.echo(_release_line(row, metric_names))


@app.command()
def rollback(to: int | None = typer.Option(None, "--to", help="Retriever version to serve "
                                           "(default: the release before the champion)."),
             wait: bool = typer.Option(False, "--wait", help="Wait for a running pipeline's "
                                       "write lock instead of failing at once."),
             config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Move `champion` (all three models) back to the previous release; nothing is rebuilt."""
    from tasks.lib.config import load_config
    from tasks.lib.registry import registry_ref
    from tasks.lib.registry import rollback as rollback_release

    cfg = _run(load_config, config, _overrides(set_))
    old, new = _run(rollback_release, registry_ref(cfg), to, wait)
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
    from tasks.lib.config import load_config
    from tasks.lib.registry import gc as gc_tables
    from tasks.lib.registry import registry_ref

    cfg = _run(load_config, config, _overrides(set_))
    plan = _run(gc_tables, registry_ref(cfg), dry_run, wait)
    for table, users in plan["keep"].items():
        typer.echo(f"keep {table}: " + ", ".join(f"v{u}" if isinstance(u, int) else u for u in users))
    verb = "would drop" if dry_run else "dropped"
    for table in plan["drop"]:
        typer.echo(f"{verb} {table}")
    if not plan["drop"]:
        typer.echo("nothing to drop")


if __name__ == "__main__":
    app()
