"""Stop a command's child processes when it dies, however it dies (SIGTERM, SIGKILL, OOM).

Prefect's temporary local API runs as a child process (uvicorn, ~225 MB) of the command that
started it; a pipeline killed by a timeout or a worker's cancellation used to leave it running.
`start_reaper()` spawns this module as a small watcher: it notes the command's descendants every
half second and, once the command is gone, terminates them (SIGKILL after a grace period).

Usage (flows/cli.py, before a flow starts): start_reaper()
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

POLL_SECONDS = 0.5
GRACE_SECONDS = 5.0


def start_reaper() -> subprocess.Popen | None:
    """Watch this process; its children are stopped when it ends (None where psutil is missing)."""
    try:
        import psutil  # noqa: F401 - the watcher needs it
    except ImportError:
        return None
    return subprocess.Popen([sys.executable, "-m", "flows.reaper", str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def watch(parent_pid: int) -> list[int]:
    """Track parent_pid's descendants until it exits; stop those still running; return them."""
    import psutil

    try:
        parent = psutil.Process(parent_pid)
    except psutil.NoSuchProcess:
        return []
    me, seen = os.getpid(), {}
    while True:
        try:
            if not parent.is_running() or parent.status() == psutil.STATUS_ZOMBIE:
                break
            for child in parent.children(recursive=True):
                if child.pid != me:
                    seen[child.pid] = child
        except psutil.NoSuchProcess:
            break
        time.sleep(POLL_SECONDS)
    alive = [p for p in seen.values() if p.is_running()]
    for proc in alive:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, still = psutil.wait_procs(alive, timeout=GRACE_SECONDS)
    for proc in still:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in alive]


if __name__ == "__main__":
    watch(int(sys.argv[1]))
