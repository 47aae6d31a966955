"""Real `dvc repro` on a fresh copy of the repository: the stages DVC runs are the flow's."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def sh(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "DVC_SITE_CACHE_DIR": str(cwd.parent / "dvc-site"), "PYTHONPATH": str(cwd)}
    done = subprocess.run(args, cwd=cwd, env=env, text=True, capture_output=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"{args} failed:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Path:
    """A git repo holding exactly the files git tracks here (what a fresh clone has)."""
    clone = tmp_path / "clone"
    files = sh("git", "ls-files", cwd=REPO).stdout.splitlines()
    for name in files:
        src = REPO / name
        if src.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / name)
    sh("git", "init", "-q", cwd=clone)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=clone)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "clone", cwd=clone)
    return clone


@pytest.mark.slow
def test_dvc_repro_on_fresh_clone_then_corrupted_data_fails(fresh_clone):
    # validate + prepare only: the training stages take minutes on the cpu profile and run
    # under the flow test with the smoke profile (same stage functions).
    sh("dvc", "repro", "prepare", cwd=fresh_clone)
    assert (fresh_clone / "data" / "prepared" / "chunks.jsonl").is_file()
    assert "up to date" in sh("dvc", "status", "prepare", cwd=fresh_clone).stdout.lower()
    metrics = sh("dvc", "metrics", "show", cwd=fresh_clone).stdout
    assert "failed_expectations" in metrics

    corpus = fresh_clone / "data" / "demo" / "corpus.jsonl"
    lines = corpus.read_text(encoding="utf-8").splitlines()
    corpus.write_text("\n".join([*lines, lines[0]]) + "\n", encoding="utf-8")  # duplicate doc
    done = sh("dvc", "repro", "prepare", cwd=fresh_clone, check=False)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "expect_column_values_to_be_unique on column 'doc_id'" in output
    assert f"lines 1, {len(lines) + 1}" in output
