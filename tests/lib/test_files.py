"""File helpers (tasks/lib/files.py): content digests, atomic directory publishing, JSON reports."""

import hashlib
import json

import pytest

from tasks.lib.errors import ConfigError
from tasks.lib.files import data_md5s, file_md5, fresh_tmp_dir, publish_dir, read_json, write_json


def writer(**files: str):
    """A build step writing the given files into the temp dir it is handed."""
    def build(tmp):
        tmp.mkdir()
        for name, text in files.items():
            (tmp / name).write_text(text)
    return build


def listing(root):
    return sorted(p.name for p in root.iterdir())


def test_file_md5_is_what_dvc_records(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"abc\n")
    assert file_md5(path) == hashlib.md5(b"abc\n").hexdigest()
    assert file_md5(tmp_path / "missing.jsonl") is None
    assert file_md5(tmp_path) is None  # a directory is not a file
    assert data_md5s(path, tmp_path / "missing.jsonl") == {"corpus": file_md5(path), "qa": None}


def test_publish_dir_builds_aside_then_renames(tmp_path):
    out = tmp_path / "models" / "retriever"
    seen = []

    def build(tmp):
        seen.append(tmp)
        assert not out.exists()  # readers see nothing until the rename
        writer(a="1")(tmp)

    assert publish_dir(out, build) == out
    assert listing(out) == ["a"] and seen[0].parent == out.parent and seen[0] != out
    assert listing(out.parent) == ["retriever"]  # no temp dir left behind


def test_replace_swaps_in_the_new_directory_whole(tmp_path):
    out = tmp_path / "adapter"
    publish_dir(out, writer(a="old", stale="x"))
    publish_dir(out, writer(a="new"))
    assert listing(out) == ["a"] and (out / "a").read_text() == "new"  # nothing of the old one
    assert listing(tmp_path) == ["adapter"]


def test_keep_leaves_an_existing_copy(tmp_path):
    out = tmp_path / "model"
    publish_dir(out, writer(a="first"), replace=False)
    publish_dir(out, writer(a="second"), replace=False)  # a concurrent builder came first
    assert (out / "a").read_text() == "first"
    assert listing(tmp_path) == ["model"]


@pytest.mark.parametrize("replace", [True, False])
def test_a_failing_build_leaves_nothing(tmp_path, replace):
    out = tmp_path / "adapter"

    def half_then_fail(tmp):
        writer(a="half")(tmp)
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError, match="killed mid-build"):
        publish_dir(out, half_then_fail, replace=replace)
    assert listing(tmp_path) == []  # no `out`, no temp dir

    publish_dir(out, writer(a="good"))
    with pytest.raises(RuntimeError, match="killed mid-build"):
        publish_dir(out, half_then_fail, replace=replace)
    assert listing(tmp_path) == ["adapter"] and (out / "a").read_text() == "good"  # untouched


def test_fresh_tmp_dir_is_beside_the_output_and_empty(tmp_path):
    out = tmp_path / "x"
    tmp = fresh_tmp_dir(out)
    assert tmp.parent == tmp_path and tmp.name.startswith("x.tmp-")
    tmp.mkdir()
    (tmp / "left-over").write_text("from a crashed run")
    assert fresh_tmp_dir(out) == tmp and not tmp.exists()  # the same caller starts clean


def test_write_and_read_json(tmp_path):
    path = write_json(tmp_path / "reports" / "index" / "metrics.json", {"b": 1, "a": [1.5]})
    assert path.read_text() == '{\n  "b": 1,\n  "a": [\n    1.5\n  ]\n}\n'  # order as given
    assert read_json(path, "index") == {"b": 1, "a": [1.5]}
    assert json.loads(write_json(tmp_path / "p.json", {"p": tmp_path}).read_text()) == {
        "p": str(tmp_path)}
    with pytest.raises(ConfigError) as err:
        read_json(tmp_path / "reports" / "evaluate" / "metrics.json", "evaluate")
    assert str(err.value) == (f"{tmp_path / 'reports' / 'evaluate' / 'metrics.json'} not found: run "
                              "`tunedex stage evaluate` (or the pipeline) first")
