"""A full disk as a named error (tasks/lib/diskfull.py) and publish_dir under it: the message,
what counts as "disk full", and that a failed publish leaves the published folder as it was.
Real full filesystems (a tmpfs): tests/flows/test_disk_full.py."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tasks.lib.diskfull import disk_full_as_error, free_bytes, is_disk_full
from tasks.lib.errors import ConfigError, DiskFull
from tasks.lib.files import publish_dir

LANCE_ENOSPC = ("lance error: LanceError(IO): No space left on device (os error 28), "
                "/root/.cargo/registry/src/lance-file-13.0.0/src/writer/structural.rs:258:9")


def test_what_counts_as_a_full_disk():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(RuntimeError(LANCE_ENOSPC))  # LanceDB's own error type
    assert is_disk_full(RuntimeError("IO error: os error 122"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)  # the cause counts
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("lance error: os error 280"))
    assert not is_disk_full(None)


def test_the_message_names_what_where_free_space_and_the_key():
    err = DiskFull("the retriever adapter", "/mnt/models/retriever", 12_345_678, "paths.adapters_dir")
    assert str(err) == ("no space left on device while writing the retriever adapter to "
                        "/mnt/models/retriever (12.3 MB free): free space or point "
                        "paths.adapters_dir elsewhere; nothing was published")
    assert "(48 KB free)" in str(DiskFull("x", "/p", 48_000))
    assert "(free space unknown): free space or write elsewhere" in str(DiskFull("x", "s3://b", None))
    assert err.exit_code == 2


def test_only_a_full_disk_is_translated(tmp_path):
    with pytest.raises(DiskFull, match=r"writing LanceDB table t to .*db \(.* free\): free space or "
                                       r"point paths.index_uri elsewhere") as caught:
        with disk_full_as_error("LanceDB table t", tmp_path / "db", "paths.index_uri"):
            raise RuntimeError(LANCE_ENOSPC)
    assert isinstance(caught.value.__cause__, RuntimeError) and caught.value.free_bytes > 0
    with pytest.raises(ValueError, match="other"):
        with disk_full_as_error("x", tmp_path):
            raise ValueError("other")
    with pytest.raises(ConfigError, match="no space left"):  # a TunedexError passes unchanged
        with disk_full_as_error("x", tmp_path):
            raise ConfigError("no space left on device, but a config error")


def test_free_bytes_of_a_missing_path_is_its_nearest_folders(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    asked: list[Path] = []
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: asked.append(p) or usage(9, 2, 7))
    assert free_bytes(tmp_path / "lancedb" / "not" / "yet") == 7 and asked == [tmp_path]
    assert free_bytes("s3://bucket/lancedb") is None and len(asked) == 1


def write_adapter(tmp: Path, text: str) -> None:
    tmp.mkdir()  # as save_pretrained does
    (tmp / "adapter.bin").write_text(text)


def published(tmp_path: Path) -> Path:
    out = tmp_path / "adapters" / "retriever"
    publish_dir(out, lambda tmp: write_adapter(tmp, "old"))
    return out


def test_a_build_that_fills_the_disk_leaves_the_published_dir(tmp_path):
    out = published(tmp_path)

    def build(tmp: Path) -> None:
        write_adapter(tmp, "new, half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFull, match=r"writing the retriever adapter to .*adapters/retriever "
                                       r"\(.*\): free space or point paths.adapters_dir elsewhere"):
        publish_dir(out, build, what="the retriever adapter", key="paths.adapters_dir")
    assert (out / "adapter.bin").read_text() == "old"
    assert [p.name for p in out.parent.iterdir()] == ["retriever"]  # no temp dir left


def test_a_failed_swap_puts_the_published_dir_back(tmp_path, monkeypatch):
    out = published(tmp_path)
    rename = Path.rename

    def full_on_swap(self: Path, target):
        if ".tmp-" in self.name:  # the new dir into place
            raise OSError(errno.ENOSPC, "No space left on device")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", full_on_swap)
    with pytest.raises(DiskFull, match="while writing retriever to"):  # default: the folder name
        publish_dir(out, lambda tmp: write_adapter(tmp, "new"))
    assert (out / "adapter.bin").read_text() == "old"
    assert [p.name for p in out.parent.iterdir()] == ["retriever"]
