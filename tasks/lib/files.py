"""File helpers shared by every stage: content digests, atomic publishing, sizes, JSON reports."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.lib.failpoints import failpoint


def file_md5(path: str | Path | None) -> str | None:
    """MD5 of a file's bytes (what DVC records for a file), or None when it does not exist."""
    if path is None or not Path(path).is_file():
        return None
    h = hashlib.md5()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_md5s(corpus_path: str | Path, qa_path: str | Path | None) -> dict[str, str | None]:
    """MD5s of the raw corpus and QA files: the data version (what DVC and releases record)."""
    return {"corpus": file_md5(corpus_path), "qa": file_md5(qa_path)}


def _caller_tag() -> str:
    # Process and thread: two serving threads publishing the same download must not share a temp dir.
    return f"{os.getpid()}-{threading.get_ident()}"


def fresh_tmp_dir(out: Path) -> Path:
    """An empty per-caller temp dir beside `out` (same filesystem, so the rename is atomic)."""
    tmp = out.with_name(f"{out.name}.tmp-{_caller_tag()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def publish_dir(out: Path, build: Callable[[Path], Any], replace: bool = True, *,
                what: str | None = None, key: str | None = None) -> Path:
    """Build a directory in a temp dir, then rename it to `out`: readers never see half of it.

    replace=True swaps out an existing `out` (a retrained adapter); replace=False keeps a copy a
    concurrent builder published first (caches of immutable things: converted models, downloads).
    A full disk ends in a DiskFull naming `what` (default: the folder name) and the config `key`
    that places `out`; the temp dir is removed and an existing `out` stays as it was.
    """
    from tasks.lib.diskfull import disk_full_as_error

    out = Path(out)
    tmp = fresh_tmp_dir(out)
    try:
        with disk_full_as_error(what or out.name, out, key):
            out.parent.mkdir(parents=True, exist_ok=True)
            build(tmp)
            failpoint(f"publish.{out.name}")  # crash tests: built, not yet renamed
            if replace and out.exists():
                old = out.with_name(f"{out.name}.old-{_caller_tag()}")
                shutil.rmtree(old, ignore_errors=True)
                out.rename(old)
                try:
                    tmp.rename(out)
                except BaseException:
                    old.rename(out)  # the published one back: `out` is never missing
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                try:
                    tmp.rename(out)
                except OSError:
                    if not out.exists():
                        raise
                    shutil.rmtree(tmp, ignore_errors=True)  # a concurrent builder won; keep theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write a file through a per-caller temp file and a rename (creating the folder): a reader,
    or a crash at any instant, sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{_caller_tag()}")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """write_bytes_atomic for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> Path:
    """Write indented, key-ordered-as-given JSON with a trailing newline, atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


LEFTOVER = re.compile(r"\.(?:tmp|old)-(\d+)-\d+$")  # what fresh_tmp_dir / write_bytes_atomic name


def clean_leftovers(*roots: str | Path) -> list[Path]:
    """Remove temp files and dirs a killed process left under `roots` (one level of nesting
    below each root is searched too); only those whose process is gone. Return what went."""
    removed = []
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        for item in [*root.glob("*"), *root.glob("*/*")]:
            match = LEFTOVER.search(item.name)
            if match is None or pid_alive(int(match.group(1))):
                continue
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
            removed.append(item)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (this one counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def read_json(path: Path, made_by: str) -> Any:
    """Read a JSON artifact; a missing one names the stage that makes it."""
    from tasks.lib.errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found: run `tunedex stage {made_by}` (or the pipeline) first")
    return json.loads(path.read_text(encoding="utf-8"))
