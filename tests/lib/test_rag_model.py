"""tunedex-rag: the release as one models-from-code pyfunc — loads with pickle off, answers with
sources, stores no machine paths, and `mlflow models serve` answers /invocations."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import SMOKE, promote_release

FLOOR_ONLY = [{"metric": "retrieval.fusion.ndcg@10", "floor": 0.0}]


@pytest.fixture
def rag(registry_overrides, monkeypatch):
    """A promoted smoke release; (config, local copy of tunedex-rag@champion)."""
    import mlflow

    from tasks.lib.config import load_config

    assert promote_release(registry_overrides, **{"promote.gate": FLOOR_ONLY})["promoted"]
    cfg = load_config(SMOKE, registry_overrides)
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts("models:/tunedex-rag@champion"))
    return cfg, local


@pytest.mark.slow
def test_loads_from_code_with_pickle_off_and_answers_with_sources(rag, monkeypatch):
    import mlflow

    cfg, local = rag
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    requirements = (local / "requirements.txt").read_text()
    assert "tunedex" not in requirements and "torch" in requirements
    conf = mlmodel["flavors"]["python_function"]["config"]
    # Paths as configured (relative by default), never resolved on the training machine.
    assert (conf["index_uri"], conf["models_dir"]) == (cfg.paths.index_uri, cfg.paths.models_dir)
    assert conf["setup"] == "hybrid" and conf["table_version"] >= 1
    for adapter in (local / "artifacts").rglob("adapter_config.json"):
        assert json.loads(adapter.read_text())["base_model_name_or_path"].startswith("tunedex/")
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    model = mlflow.pyfunc.load_model("models:/tunedex-rag@champion",
                                     model_config={"index_uri": cfg.paths.index_uri,
                                                   "models_dir": cfg.paths.models_dir})
    out = model.predict(["Which cards do you take?", "How long does a sign-in code last?"])
    assert [set(o) for o in out] == [{"answer", "sources", "setup", "release"}] * 2
    assert all(o["sources"] and o["setup"] == "hybrid" and o["release"] == 1 for o in out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations(rag, tmp_path):
    cfg, _ = rag
    port, bindir = free_port(), Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": cfg.tracking.tracking_uri}
    cwd = Path(cfg.paths.index_uri).parent  # relative paths in the model resolve from here
    proc = subprocess.Popen([str(bindir / "mlflow"), "models", "serve", "-m",
                             "models:/tunedex-rag@champion", "--env-manager", "local", "-h",
                             "127.0.0.1", "-p", str(port)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not come up"
            time.sleep(1)
        response = httpx.post(f"http://127.0.0.1:{port}/invocations", timeout=120,
                              json={"inputs": ["Which cards do you take?"]})
        assert response.status_code == 200, response.text
        prediction = response.json()["predictions"][0]
        assert prediction["sources"] and prediction["release"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)
