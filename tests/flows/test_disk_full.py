"""Disk full: the index and train_retriever stages writing to a filesystem with no space left (a
size-limited tmpfs mounted by the test, needs root or CAP_SYS_ADMIN: skipped with the reason
where mounting is refused) end with a named error and a non-zero exit; what was published
before (the release's pinned LanceDB table, the retriever adapter) stays intact and readable,
and no half-written output is visible."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import SMOKE, promote_release, sets, tunedex

FLOOR_ONLY = [{"metric": "retrieval.fusion.ndcg@10", "floor": 0.0}]  # passes whatever changed
PAGE = 4096  # tmpfs counts whole pages


def used_kb(root: Path) -> int:
    return sum(-(-f.stat().st_size // PAGE) * PAGE for f in root.rglob("*") if f.is_file()) // 1024


def fill(root: Path) -> None:
    """Write zeros into root/.filler until the filesystem refuses: nothing more fits."""
    fd = os.open(root / ".filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(1 << 16))
    except OSError as err:
        assert err.errno == 28, err  # ENOSPC
    finally:
        os.close(fd)
    assert shutil.disk_usage(root).free < PAGE


@contextmanager
def full_tmpfs_over(path: Path) -> Iterator[Path]:
    """Mount a tmpfs at `path` holding a copy of what is there, then fill it. On exit it is
    unmounted (even after a failure), and the original folder, never written, shows again."""
    path.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.name}.staging")
    shutil.copytree(path, staging)
    size_kb = used_kb(staging) + 256  # room for the copy; the rest is filled
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs",
                                  str(path)], capture_output=True, text=True)
    except FileNotFoundError:
        mounted = subprocess.CompletedProcess([], 127, "", "no mount command")
    if mounted.returncode != 0:
        shutil.rmtree(staging)
        pytest.skip(f"cannot mount a tmpfs at {path} ({mounted.stderr.strip()}): the disk-full "
                    "tests need root or CAP_SYS_ADMIN (e.g. not in an unprivileged container)")
    try:
        shutil.copytree(staging, path, dirs_exist_ok=True)
        fill(path)
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)  # busy: detach it anyway
        shutil.rmtree(staging)


def md5s(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.md5(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


def isolated(overrides: dict[str, str], root: Path) -> dict[str, str]:
    """`overrides` with this test's reports, lock and MLflow store: a failed run touches no
    shared fixture's files."""
    return {**overrides, "paths.reports_dir": str(root / "reports"),
            "lock.path": str(root / "tunedex.lock"),
            "tracking.tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "tracking.artifact_location": str(root / "artifacts")}


def changed_chunks(prepared_dir: Path, out_dir: Path) -> Path:
    """A copy of the prepared data with one chunk's text changed: the index must write."""
    from tasks.lib.text import content_hash

    shutil.copytree(prepared_dir, out_dir)
    lines = (out_dir / "chunks.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["text"] += " Changed after the release."
    first["content_hash"] = content_hash(first.get("title"), first["text"])
    (out_dir / "chunks.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n",
                                          encoding="utf-8")
    return out_dir


def table_versions(index_uri: str) -> dict[str, tuple[int, int]]:
    """table -> (latest version, rows) of every table in a LanceDB directory."""
    from tasks.lib.search import connect

    db = connect(index_uri, create=False)
    return {name: (db.open_table(name).version, db.open_table(name).count_rows())
            for name in db.list_tables().tables}


@pytest.mark.slow
def test_index_on_a_full_disk_names_it_and_keeps_the_release_table(registry_overrides, tmp_path):
    from tasks.lib.catalog import Catalog
    from tasks.lib.config import load_config
    from tasks.lib.registry import registry_ref
    from tasks.lib.serving import open_table, resolve_served

    assert promote_release(registry_overrides, **{"promote.gate": FLOOR_ONLY})["promoted"]
    cfg = load_config(SMOKE, registry_overrides)
    served = resolve_served(registry_ref(cfg), Catalog(cfg.paths), cfg.models)
    pinned_rows = open_table(served).count_rows()
    index_dir = Path(cfg.paths.index_uri)
    before = table_versions(str(index_dir))
    overrides = isolated({**registry_overrides, "paths.prepared_dir": str(changed_chunks(
        Path(cfg.paths.prepared_dir), tmp_path / "prepared"))}, tmp_path)

    with full_tmpfs_over(index_dir):
        done = tunedex("stage", "index", "-c", str(SMOKE), *sets(overrides), cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert ("error: no space left on device while writing LanceDB table chunks_"
                in done.stderr), done.stderr
        assert (f" to {index_dir} (0 KB free): free space or point paths.index_uri elsewhere; "
                "nothing was published") in done.stderr
        assert "Traceback" not in done.stderr
        # The release still serves its pinned table; no table gained a version or appeared.
        table = open_table(served)
        assert table.version == served.table_version and table.count_rows() == pinned_rows
        assert table_versions(str(index_dir)) == before
        assert not (tmp_path / "reports" / "index" / "index.json").exists()


@pytest.mark.slow
def test_train_retriever_on_a_full_disk_keeps_the_published_adapter(built, tmp_path):
    from peft import PeftConfig

    adapters = Path(built["paths.adapters_dir"])
    before, listing = md5s(adapters / "retriever"), sorted(p.name for p in adapters.iterdir())
    with full_tmpfs_over(adapters):
        done = tunedex("stage", "train_retriever", "-c", str(SMOKE),
                       *sets(isolated(built, tmp_path)), cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert (f"error: no space left on device while writing the retriever adapter to "
                f"{adapters / 'retriever'} (0 KB free): free space or point paths.adapters_dir "
                "elsewhere; nothing was published") in done.stderr, done.stderr
        assert md5s(adapters / "retriever") == before  # not a byte changed
        assert sorted(p.name for p in adapters.iterdir()) == sorted([*listing, ".filler"])
        assert PeftConfig.from_pretrained(str(adapters / "retriever")).peft_type == "LORA"


@pytest.mark.slow
def test_a_new_table_on_a_full_disk_is_not_left_half_created(tiny_retriever, tmp_path):
    from tasks.lib.config import IndexConfig
    from tasks.lib.errors import DiskFull
    from tasks.lib.search import connect
    from tasks.lib.tables import update_table
    from tests.conftest import RETRIEVER_CHUNKS

    with full_tmpfs_over(tmp_path / "full") as full:
        (full / "db").mkdir()
        db = connect(str(full / "db"))
        with pytest.raises(DiskFull, match=r"writing LanceDB table t to .*full/db \(0 KB free\)"):
            update_table(db, "t", tiny_retriever[1], RETRIEVER_CHUNKS, IndexConfig(batch_size=8))
        assert db.list_tables().tables == [] and list((full / "db").iterdir()) == []
