"""flows/head_start.py: which runs start the temporary Prefect API early, and that the early
start leaves a real API answering for the flow's client (in a child process, so this session's
Prefect harness is not touched)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flows.head_start import cannot_skip, head_start
from tests.conftest import REPO, SMOKE


def _cfg(overrides):
    from tasks.lib.config import load_config

    return load_config(SMOKE, overrides)


def test_only_runs_that_must_train_start_early(smoke_overrides, tmp_path):
    store = tmp_path / "early.db"
    fresh = _cfg({**smoke_overrides, "tracking.tracking_uri": f"sqlite:///{store}"})
    assert cannot_skip(fresh, force=False)  # nothing registered yet: nothing to skip
    store.write_bytes(b"")
    assert not cannot_skip(fresh, force=False)  # a store exists: the registry decides
    assert cannot_skip(fresh, force=True)
    no_skip = _cfg({**smoke_overrides, "tracking.tracking_uri": f"sqlite:///{store}",
                    "schedule.skip_unchanged": False})
    assert cannot_skip(no_skip, force=False)
    remote = _cfg({**smoke_overrides, "tracking.tracking_uri": "http://127.0.0.1:9"})
    assert not cannot_skip(remote, force=False)  # a server's registry may hold the release


def test_a_configured_prefect_server_is_never_started(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    api = head_start()
    assert api.thread is None
    api.wait()  # nothing to wait for


CHILD = """
import httpx
from flows.env import set_offline_env
set_offline_env()
from flows.head_start import head_start
api = head_start()
assert api.thread is not None
api.wait()
from prefect.server.api.server import SubprocessASGIServer
server = SubprocessASGIServer()
print(server.running, httpx.get(server.api_url + "/health").status_code, flush=True)
"""


@pytest.mark.slow
def test_the_early_api_answers_before_the_flow_asks(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PYTHONPATH=str(REPO), PREFECT_HOME=str(tmp_path / ".prefect"))
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "200"]
