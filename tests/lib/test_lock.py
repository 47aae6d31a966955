"""The write lock (tasks/lib/lock.py): re-entrant for its owner, fail or wait for anyone else."""

import threading
import time

import pytest

from tasks.lib.config import LockConfig
from tasks.lib.lock import LockBusy, write_lock


def hold_in_thread(cfg, what, release: threading.Event, held: threading.Event):
    def run():
        with write_lock(cfg, what):
            held.set()
            release.wait(10)
    thread = threading.Thread(target=run)
    thread.start()
    assert held.wait(10)
    return thread


def test_reentrant_for_its_owner(tmp_path):
    cfg = LockConfig(path=str(tmp_path / "lock"), on_busy="fail")
    with write_lock(cfg, "pipeline"), write_lock(cfg, "stage index"):  # the flow, then its stage
        pass
    with write_lock(cfg, "again"):  # released on exit
        pass


def test_another_holder_fails_with_who_holds_it(tmp_path):
    cfg = LockConfig(path=str(tmp_path / "lock"), on_busy="fail")
    release, held = threading.Event(), threading.Event()
    thread = hold_in_thread(cfg, "scheduled retrain", release, held)
    try:
        with pytest.raises(LockBusy, match=r"rollback: another tunedex run holds the write lock .*: "
                                           r"scheduled retrain \(pid \d+ on "), write_lock(cfg, "rollback"):
            pass
    finally:
        release.set()
        thread.join()


def test_wait_gives_up_after_wait_seconds(tmp_path):
    cfg = LockConfig(path=str(tmp_path / "lock"), on_busy="wait", wait_seconds=1)
    release, held = threading.Event(), threading.Event()
    thread = hold_in_thread(cfg, "pipeline", release, held)
    try:
        started = time.monotonic()
        with pytest.raises(LockBusy, match="gc: gave up after 1 s waiting for the write lock"), \
                write_lock(cfg, "gc"):
            pass
        assert time.monotonic() - started >= 1
        with pytest.raises(LockBusy, match="another tunedex run holds"), \
                write_lock(cfg, "gc", on_busy="fail"):  # the caller's override wins
            pass
    finally:
        release.set()
        thread.join()
    with write_lock(cfg, "gc"):  # free again
        pass
