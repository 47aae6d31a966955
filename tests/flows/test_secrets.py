"""Secrets never leave: a tracking URI with a password, given on the command line, is found in no
file the run writes (reports, MLflow store and artifacts, Prefect's database, LanceDB, models)
and in no line it prints. Real `mlflow server` on loopback, real CLI runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, SMOKE, sets, tiny_release_dir

PASSWORD = "pw-Zq81-never-log-me"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_containing(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    found.append(str(path.relative_to(root)))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_a_password_in_the_tracking_uri_is_written_nowhere(tmp_path):
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    log = (tmp_path / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination", str(store / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=store, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
                time.sleep(1)
        run_dir = tmp_path / "run"
        overrides = tiny_release_dir(run_dir)
        overrides.pop("tracking.artifact_location")  # the server stores artifacts
        overrides["tracking.tracking_uri"] = f"http://bob:{PASSWORD}@127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect")}
        outputs = []
        for args in (["pipeline"], ["config"]):
            done = subprocess.run([sys.executable, "-m", "flows.cli", *args, "-c", str(SMOKE),
                                   *sets(overrides)], cwd=run_dir, env=env, text=True,
                                  capture_output=True, timeout=900)
            assert done.returncode == 0, done.stderr[-3000:]
            outputs.append(done.stdout + done.stderr)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert "pipeline finished" in outputs[0] and "bob:***@127.0.0.1" in outputs[1]
    assert all(PASSWORD not in out for out in outputs), "the password was printed"
    assert (store / "mlflow.db").is_file() and any((store / "artifacts").rglob("*"))
    assert files_containing(tmp_path, PASSWORD.encode()) == []
