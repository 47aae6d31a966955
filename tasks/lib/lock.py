"""One writer at a time: a file lock around runs that write the index or the registry.

Prefect's deployment concurrency limit keeps two *scheduled* runs apart; this lock also keeps a
manual run (`make pipeline`, `tunedex stage index`, `tunedex rollback`) from interleaving with a
scheduled one. The OS releases the lock when a holder dies, so a crash never leaves it stuck.
Re-entrant for its owner: the flow holds it and its stages (in Prefect's task threads, which
copy the caller's context) take it again for free; any other thread or process waits or fails.
One host only: on shared object storage and a remote registry, use the deployments' concurrency
limit (server-side) to keep hosts apart.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from tasks.lib.errors import TunedexError

log = logging.getLogger(__name__)
_LOCKS: dict[str, Any] = {}  # one FileLock per path; thread-local: each thread its own handle
_OWNED: ContextVar[frozenset[str]] = ContextVar("tunedex_owned_locks", default=frozenset())


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
def write_lock(lock_cfg: Any, what: str, on_busy: str | None = None) -> Iterator[None]:
    """Hold the write lock `lock_cfg` (the `lock` section) names for the block; wait or fail as
    configured (`on_busy` overrides lock_cfg.on_busy, e.g. "fail" for a rollback that must not queue)."""
    from filelock import FileLock, Timeout

    path = Path(lock_cfg.path).resolve()
    if str(path) in _OWNED.get():  # this caller (or the flow it runs in) holds it already
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _LOCKS.setdefault(str(path), FileLock(str(path), thread_local=True))
    mode = on_busy or lock_cfg.on_busy
    timeout = 0 if mode == "fail" else lock_cfg.wait_seconds
    if mode == "wait":
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
    token = _OWNED.set(_OWNED.get() | {str(path)})
    try:
        holder = {"what": what, "pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        path.with_name(path.name + ".holder").write_text(json.dumps(holder) + "\n")
        yield
    finally:
        _OWNED.reset(token)
        lock.release()
