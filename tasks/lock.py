"""One writer at a time: a file lock around runs that write the index or the registry.

Prefect's deployment concurrency limit keeps two *scheduled* runs apart; this lock also keeps a
manual run (`make pipeline`, `tunedex stage index`, `tunedex rollback`) from interleaving with a
scheduled one. The OS releases the lock when a holder dies, so a crash never leaves it stuck.
Re-entrant within a process: the flow holds it and its stages take it again for free.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.errors import TunedexError

log = logging.getLogger(__name__)
_LOCKS: dict[str, Any] = {}  # one FileLock object per path: its counter makes it re-entrant


class LockBusy(TunedexError):
    """Another tunedex run holds the write lock."""

    exit_code = 4


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.with_name(path.name + ".holder").read_text())
    except (OSError, ValueError):
        return "another process"
    return f"{info.get('what')} (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"


@contextmanager
def write_lock(cfg: Any, what: str) -> Iterator[None]:
    """Hold the write lock named in cfg.lock for the block; wait or fail as configured."""
    from filelock import FileLock, Timeout

    path = Path(cfg.lock.path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _LOCKS.setdefault(str(path), FileLock(str(path), thread_local=False))
    nested = lock.is_locked
    timeout = 0 if cfg.lock.on_busy == "fail" else cfg.lock.wait_seconds
    if not nested and cfg.lock.on_busy == "wait":
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("waiting up to %.0f s for the write lock %s, held by %s", timeout, path,
                     _holder(path))
            started = time.monotonic()
            try:
                lock.acquire(timeout=timeout)
            except Timeout:
                raise LockBusy(f"{what}: gave up after {timeout:.0f} s waiting for the write lock "
                               f"{path}, held by {_holder(path)} (lock.wait_seconds)") from None
            log.info("write lock acquired after %.1f s", time.monotonic() - started)
    else:
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise LockBusy(f"{what}: another tunedex run holds the write lock {path}: "
                           f"{_holder(path)}. Try again when it ends (or set lock.on_busy: wait)"
                           ) from None
    try:
        if not nested:
            holder = {"what": what, "pid": os.getpid(), "host": socket.gethostname(),
                      "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
            path.with_name(path.name + ".holder").write_text(json.dumps(holder) + "\n")
        yield
    finally:
        lock.release()
