"""File helpers shared by every stage: content digests, atomic publishing, sizes, JSON reports."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def file_md5(path: str | Path) -> str | None:
    """MD5 of a file's bytes (what DVC records for a file), or None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    h = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_md5s(corpus_path: str | Path, qa_path: str | Path) -> dict[str, str | None]:
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


def publish_dir(out: Path, build: Callable[[Path], Any], replace: bool = True) -> Path:
    """Build a directory in a temp dir, then rename it to `out`: readers never see half of it.

    replace=True swaps out an existing `out` (a retrained adapter); replace=False keeps a copy a
    concurrent builder published first (caches of immutable things: converted models, downloads).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = fresh_tmp_dir(out)
    try:
        build(tmp)
        if replace and out.exists():
            old = out.with_name(f"{out.name}.old-{_caller_tag()}")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
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


def write_json(path: Path, data: Any) -> Path:
    """Write indented, key-ordered-as-given JSON with a trailing newline (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def read_json(path: Path, made_by: str) -> Any:
    """Read a JSON artifact; a missing one names the stage that makes it."""
    from tasks.lib.errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found: run `tunedex stage {made_by}` (or the pipeline) first")
    return json.loads(path.read_text(encoding="utf-8"))
