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
    from tasks.prepare import prepare_stage
    from tasks.validate import validate_stage

    functions = {Stage.validate: validate_stage, Stage.prepare: prepare_stage}
    cfg = _run(load_config, config, _overrides(set_))
    _run(functions[name], cfg)
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
    from tasks.models import resolve_model_dir

    cfg = _run(load_config, config)
    path = _run(resolve_model_dir, cfg.models.retriever_id, cfg.models.allow_download)
    typer.echo(f"retriever {cfg.models.retriever_id}: {path}")


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


if __name__ == "__main__":
    app()
