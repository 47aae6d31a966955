"""Shared fixtures: tiny contract-conforming data, a smoke config in a temp dir, one Prefect
harness, the tiny models, the `tunedex` command, and the two expensive runs several test modules
share (the DVC stages once, a released pipeline flow once)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from flows.env import set_offline_env

set_offline_env()  # before anything imports prefect/mlflow

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"

TINY_DOCS = [
    {"doc_id": "plan-01", "title": "Choosing a plan",
     "text": "The Basic plan costs 4 euros a month and includes 10 GB of storage. The Pro plan "
             "costs 9 euros a month, includes 200 GB of storage and priority support by chat.",
     "metadata": {"topic": "plans"}},
    {"doc_id": "pay-01", "title": "Paying by card",
     "text": "We accept Visa and Mastercard. Cards are charged on the first working day of each "
             "month. A failed payment is retried twice, three days apart, before the account is "
             "paused."},
    {"doc_id": "sec-01", "title": "Two-step sign-in",
     "text": "Two-step sign-in sends a six-digit code by text message. Codes expire after ten "
             "minutes. Lost your phone? Use one of the eight backup codes printed at set-up."},
]
TINY_QA = [
    {"qid": "q1", "question": "How much is the Basic plan?", "answer": "4 euros a month.",
     "doc_ids": ["plan-01"], "split": "train"},
    {"qid": "q2", "question": "How much storage comes with Pro?", "answer": "200 GB.",
     "doc_ids": ["plan-01"], "split": "train"},
    {"qid": "q3", "question": "Which cards do you take?", "answer": "Visa and Mastercard.",
     "doc_ids": ["pay-01"], "split": "train"},
    {"qid": "q4", "question": "When is my card charged?",
     "answer": "On the first working day of each month.", "doc_ids": ["pay-01"], "split": "train"},
    {"qid": "q5", "question": "How long does a sign-in code last?", "answer": "Ten minutes.",
     "doc_ids": ["sec-01"], "split": "train"},
    {"qid": "q6", "question": "my payment bounced, what happens now?",
     "answer": "It is retried twice, three days apart, then the account is paused.",
     "doc_ids": ["pay-01"], "split": "eval"},
    {"qid": "q7", "question": "phone gone, how do I get into my account?",
     "answer": "Use one of the eight backup codes.", "doc_ids": ["sec-01"], "split": "eval"},
    {"qid": "q8", "question": "Is chat support part of the cheap plan?",
     "answer": "No, priority chat support comes with Pro.", "doc_ids": ["plan-01"]},
]

# Personal data for the PII gate's tests: a document (corpus line 4) and two questions (qa lines
# 9 and 10) holding each kind; what a redacted output must not contain.
PII_DOC = {"doc_id": "sup-01", "title": "Refunds",
           "text": "Refunds go to DE89 3704 0044 0532 0130 00 within five days. Questions? Write "
                   "to refunds@kestrel.example or call +44 20 7946 0958."}
PII_QA = [
    {"qid": "p1", "question": "I paid with 4111 1111 1111 1111, mail me at jo.doe@example.org",
     "answer": "We will call you on (212) 555-0123.", "doc_ids": ["pay-01"], "split": "train"},
    {"qid": "p2", "question": "refund to DE89 3704 0044 0532 0130 00 please?",
     "answer": "Within five days.", "doc_ids": ["sup-01"], "split": "eval"},
]
PII_VALUES = ("DE89 3704", "refunds@kestrel.example", "7946 0958", "4111 1111", "jo.doe@example.org",
              "555-0123")


def write_pii_data(corpus_path: str | Path, qa_path: str | Path) -> None:
    """Overwrite the tiny data with its PII-holding version (corpus line 4, qa lines 9-10)."""
    write_jsonl_lines(Path(corpus_path), [*TINY_DOCS, PII_DOC])
    write_jsonl_lines(Path(qa_path), [*TINY_QA, *PII_QA])


MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextmanager
def clean_mlflow_env() -> Iterator[None]:
    """No MLflow URI in the environment for the block (restored afterwards).

    mlflow.set_tracking_uri / set_registry_uri export these variables into os.environ, and
    load_config fills unset tracking URIs from them: without this, one test's store or registry
    would become the next test's."""
    with pytest.MonkeyPatch.context() as mp:
        for name in MLFLOW_URI_VARS:
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(autouse=True)
def _isolated_mlflow_env() -> Iterator[None]:
    with clean_mlflow_env():
        yield


def write_jsonl_lines(path: Path, rows: list) -> Path:
    """Write rows (dicts, or raw strings written as-is) one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture
def tiny_data(tmp_path: Path) -> dict[str, Path]:
    """A valid three-document corpus and eight-question QA file in tmp_path/raw."""
    return {"corpus": write_jsonl_lines(tmp_path / "raw" / "corpus.jsonl", TINY_DOCS),
            "qa": write_jsonl_lines(tmp_path / "raw" / "qa.jsonl", TINY_QA)}


def isolated_overrides(root: Path, corpus: Path, qa: Path) -> dict[str, str]:
    """Config overrides putting every output (and the MLflow store, artifacts, lock) under root."""
    return {"paths.corpus_path": str(corpus), "paths.qa_path": str(qa),
            "paths.prepared_dir": str(root / "prepared"),
            "paths.reports_dir": str(root / "reports"),
            "paths.models_dir": str(root / "model-cache"),
            "paths.adapters_dir": str(root / "adapters"),
            "paths.index_uri": str(root / "lancedb"),
            "tracking.tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "tracking.artifact_location": str(root / "artifacts"),
            "lock.path": str(root / "tunedex.lock"), "paths.logs_dir": str(root / "logs")}


def tiny_release_dir(root: Path) -> dict[str, str]:
    """Tiny raw data written under root, and isolated overrides for a module-scoped run."""
    return isolated_overrides(root, write_jsonl_lines(root / "raw" / "corpus.jsonl", TINY_DOCS),
                              write_jsonl_lines(root / "raw" / "qa.jsonl", TINY_QA))


@pytest.fixture
def smoke_overrides(tmp_path: Path, tiny_data: dict[str, Path], monkeypatch) -> dict[str, str]:
    """Config overrides pointing every path and the MLflow store into tmp_path (also the cwd)."""
    monkeypatch.chdir(tmp_path)
    overrides = isolated_overrides(tmp_path, tiny_data["corpus"], tiny_data["qa"])
    del overrides["tracking.artifact_location"]  # the default: ./mlruns in the cwd (tmp_path)
    return overrides


@pytest.fixture
def smoke_cfg(smoke_overrides):
    """The smoke profile with all paths in a temp dir."""
    from tasks.lib.config import load_config

    return load_config(SMOKE, smoke_overrides)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole session (a fresh DB takes ~15 s to migrate)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# ---- the `tunedex` command -------------------------------------------------------------------


def tunedex(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the CLI as a user does (a fresh process, the repository on PYTHONPATH)."""
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def sets(overrides: dict) -> list[str]:
    """Config overrides as repeated `--set key=value` arguments."""
    return [arg for k, v in overrides.items() for arg in ("--set", f"{k}={v}")]


# ---- stages without Prefect ------------------------------------------------------------------


def run_stages(cfg: Any, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Call the DVC stages' functions in order, each with its sections (what `tunedex stage` does)."""
    from tasks.evaluate import evaluate_stage
    from tasks.index import index_stage
    from tasks.lib.context import StageContext
    from tasks.lib.stages import DVC_STAGES
    from tasks.prepare import prepare_stage
    from tasks.synthesize import synthesize_stage
    from tasks.train_generator import train_generator_stage
    from tasks.train_retriever import train_retriever_stage
    from tasks.validate import validate_stage

    ctx = StageContext.of(cfg)
    calls = {"validate": lambda: validate_stage(cfg.validate_, cfg.pii, ctx),
             "synthesize": lambda: synthesize_stage(cfg.synthesize, cfg.prepare, cfg.pii,
                                                    cfg.validate_, ctx),
             "prepare": lambda: prepare_stage(cfg.prepare, cfg.pii, cfg.synthesize, ctx),
             "train_retriever": lambda: train_retriever_stage(cfg.train_retriever, ctx),
             "index": lambda: index_stage(cfg.index, ctx),
             "train_generator": lambda: train_generator_stage(cfg.train_generator, cfg.index, ctx),
             "evaluate": lambda: evaluate_stage(cfg.evaluate, cfg.generate, cfg.index, ctx)}
    return {name: calls[name]() for name in (names or DVC_STAGES)}


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict[str, str]:
    """Overrides of a smoke run through every DVC stage (validate .. evaluate), done once."""
    from tasks.lib.config import load_config

    overrides = tiny_release_dir(tmp_path_factory.mktemp("built"))
    with clean_mlflow_env():
        run_stages(load_config(SMOKE, overrides))
    return overrides


@pytest.fixture
def registry_overrides(built, tmp_path, monkeypatch) -> dict[str, str]:
    """The built run, with a fresh, empty MLflow store and registry for this test (cwd: tmp_path)."""
    monkeypatch.chdir(tmp_path)
    return {**built, "tracking.tracking_uri": f"sqlite:///{tmp_path / 'registry.db'}",
            "tracking.artifact_location": str(tmp_path / "artifacts")}


def promote_release(overrides: dict[str, str], **extra: Any) -> dict[str, Any]:
    """The promote stage alone (no parent run), as `tunedex stage promote` runs it."""
    from tasks.lib.config import load_config
    from tasks.lib.context import StageContext
    from tasks.lib.release_skip import release_inputs
    from tasks.promote import promote_stage

    cfg = load_config(SMOKE, {**overrides, **extra})
    return promote_stage(cfg.promote, cfg.prepare, cfg.generate, cfg.index, cfg.evaluate,
                         StageContext.of(cfg), release_inputs(cfg))


def champion_versions(reg: Any) -> tuple[int, int]:
    """(retriever, generator) versions the two `champion` aliases point at."""
    from tasks.lib.registry import alias_version, client

    c = client(reg)
    return (int(alias_version(c, reg.retriever_model, "champion").version),
            int(alias_version(c, reg.generator_model, "champion").version))


@pytest.fixture(scope="session")
def released(tmp_path_factory, prefect_harness) -> dict[str, str]:
    """A smoke pipeline flow run whose release is champion, in its own directory, done once."""
    from flows.pipeline import pipeline

    overrides = tiny_release_dir(tmp_path_factory.mktemp("released"))
    with clean_mlflow_env():
        result = pipeline(config_path=str(SMOKE), overrides=overrides)
    assert result["promote"]["promoted"]
    return overrides


# ---- tiny models (random weights, real tokenizers) -------------------------------------------


def retriever_chunk(cid: str, text: str) -> dict:
    """One prepared chunk (as chunks.jsonl holds it) for table and retriever tests."""
    from tasks.lib.text import content_hash

    doc = cid.split("#")[0]
    return {"chunk_id": cid, "doc_id": doc, "chunk_index": 0, "title": None, "text": text,
            "content_hash": content_hash(None, text)}


RETRIEVER_CHUNKS = [
    retriever_chunk("meter#0", "Submit a meter reading in the app before the 5th of the month."),
    retriever_chunk("battery#0", "Error E07 on the battery means the inverter lost contact."),
    retriever_chunk("tariff#0", "Night Owl is cheap between 00:30 and 05:30.")]


@pytest.fixture(scope="session")
def tiny_retriever(tmp_path_factory):
    """(model dir, loaded model) of the tiny 32-d retriever."""
    from tasks.lib.models import load_retriever
    from tasks.lib.resolve import TINY_RETRIEVER_ID, resolve_model_dir

    model_dir = resolve_model_dir(TINY_RETRIEVER_ID, cache_dir=tmp_path_factory.mktemp("m"))
    return model_dir, load_retriever(model_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_generator_dir(tmp_path_factory) -> Path:
    from tasks.lib.resolve import TINY_GENERATOR_ID, resolve_model_dir

    return resolve_model_dir(TINY_GENERATOR_ID, cache_dir=tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="session")
def tiny_generator(tiny_generator_dir):
    """(model, tokenizer) of the tiny random Llama with SmolLM2's tokenizer."""
    from tasks.lib.generator import load_generator

    return load_generator(tiny_generator_dir, device="cpu")


@pytest.fixture(scope="session")
def generator_tokenizer(tiny_generator):
    return tiny_generator[1]


@pytest.fixture(scope="session")
def trained_generator(tiny_generator_dir, generator_tokenizer, tmp_path_factory) -> dict[str, Any]:
    """Two LoRA steps on the tiny generator, the adapter saved: base weights, model, history, dir."""
    from transformers import AutoModelForCausalLM

    from tasks.lib.config import TrainGeneratorConfig
    from tasks.lib.generator import save_adapter
    from tasks.lib.resolve import TINY_GENERATOR_ID
    from tasks.lib.sft import build_sft_example, train_lora_generator

    tok = generator_tokenizer
    model = AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir))
    base = {k: v.clone() for k, v in model.state_dict().items()}
    rows = [("How much is Basic?", "4 euros a month."), ("When is my card charged?", "On the 1st.")] * 2
    examples = [build_sft_example(tok, q, a, None, 64) for q, a in rows]
    cfg = TrainGeneratorConfig(batch_size=2, max_steps=2, learning_rate=1e-2, warmup_ratio=0.0,
                               precision="fp32")
    peft_model, history = train_lora_generator(model, tok, examples, cfg, seed=0, device="cpu")
    out = save_adapter(peft_model, tmp_path_factory.mktemp("adapters") / "generator",
                       TINY_GENERATOR_ID, tiny_generator_dir, {"steps": len(history)})
    return {"base": base, "peft": peft_model, "history": history, "adapter_dir": out}


# ---- a real browser ------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")  # Debian's, driven by Playwright: no browser download
# root in a container needs --no-sandbox; nothing else may reach the network
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def needs_chromium(what: str) -> Any:
    """Skip a browser test, saying why, where Debian's chromium is not installed."""
    return pytest.mark.skipif(CHROMIUM is None, reason=f"no `chromium` on PATH: {what} drives "
                              "Debian's chromium (apt-get install chromium; .ci/run installs it)")


# ---- a real HTTP server -------------------------------------------------------------------


@contextmanager
def uvicorn_app(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on a free loopback port; yield its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 180  # the lifespan loads the release (models warm) first
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped during startup (see the log above)"
        assert time.monotonic() < deadline, "uvicorn did not start in 180 s"
        time.sleep(0.1)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        assert not thread.is_alive(), "uvicorn did not shut down in 60 s"
