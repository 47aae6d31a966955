"""flows/reaper.py with real processes: a command killed by SIGKILL or SIGTERM leaves no child
running (the temporary Prefect API used to survive such kills, ~225 MB each)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import REPO

PARENT = """
import subprocess, sys, time
from flows.reaper import start_reaper
start_reaper()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(child.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_children_end_with_the_command(sig):
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    child_pid = int(parent.stdout.readline())
    child = psutil.Process(child_pid)
    time.sleep(1.5)  # the watcher has seen the child
    assert child.is_running()
    parent.send_signal(sig)
    parent.wait(timeout=10)
    gone, _ = psutil.wait_procs([child], timeout=15)
    assert gone, f"child {child_pid} still running after the parent got {sig.name}"


def test_watching_a_process_that_is_gone_returns_at_once():
    from flows.reaper import watch

    assert watch(2**22 + 12345) == []  # no such process: nothing to watch, returns at once
