"""The `tunedex` command as a user runs it: exit codes and the messages on stderr."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SMOKE, TINY_QA, write_jsonl_lines


def tunedex(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(SMOKE.parents[1])})


def sets(overrides: dict) -> list[str]:
    return [arg for k, v in overrides.items() for arg in ("--set", f"{k}={v}")]


def test_help_lists_commands(tmp_path):
    done = tunedex("--help", cwd=tmp_path)
    assert done.returncode == 0
    for command in ("pipeline", "stage", "config", "setup", "schedule", "search", "ask"):
        assert command in done.stdout
    assert "--config" in tunedex("stage", "--help", cwd=tmp_path).stdout


def test_unknown_config_key_exits_non_zero_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("prepare:\n  chunk_tokns: 10\n")
    done = tunedex("stage", "validate", "--config", str(bad), cwd=tmp_path)
    assert done.returncode == 2
    assert "prepare.chunk_tokns: unknown key" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_config_prints_resolved_values(tmp_path):
    done = tunedex("config", "-c", str(SMOKE), "--set", "prepare.chunk_tokens=48", cwd=tmp_path)
    assert done.returncode == 0
    assert json.loads(done.stdout)["prepare"]["chunk_tokens"] == 48


@pytest.mark.slow
def test_truncated_json_exits_non_zero_naming_file_and_line(smoke_overrides, tmp_path):
    qa_path = Path(smoke_overrides["paths.qa_path"])
    write_jsonl_lines(qa_path, [TINY_QA[0], '{"qid": "q2", "question": "trunc'])
    done = tunedex("stage", "validate", "-c", str(SMOKE), *sets(smoke_overrides), cwd=tmp_path)
    assert done.returncode == 2
    assert f"{qa_path}, line 2: not valid JSON" in done.stderr
    assert not Path(smoke_overrides["paths.prepared_dir"]).exists()
    summary = Path(smoke_overrides["paths.reports_dir"]) / "validation" / "summary.json"
    assert "not valid JSON" in json.loads(summary.read_text())["error"]


@pytest.mark.slow
def test_leaked_eval_question_fails_prepare(smoke_overrides, tmp_path):
    leaked = {**TINY_QA[0], "qid": "leak", "question": "how much is the BASIC plan",
              "split": "eval"}
    write_jsonl_lines(Path(smoke_overrides["paths.qa_path"]), [*TINY_QA, leaked])
    args = ("-c", str(SMOKE), *sets(smoke_overrides))
    assert tunedex("stage", "validate", *args, cwd=tmp_path).returncode == 0
    done = tunedex("stage", "prepare", *args, cwd=tmp_path)
    assert done.returncode == 3
    assert "1 eval question(s) also appear in train" in done.stderr
    assert "leak (line 9)" in done.stderr
    assert not Path(smoke_overrides["paths.prepared_dir"]).exists()


@pytest.mark.slow
def test_prepare_refuses_data_changed_since_validation(smoke_overrides, tmp_path):
    args = ("-c", str(SMOKE), *sets(smoke_overrides))
    assert tunedex("stage", "validate", *args, cwd=tmp_path).returncode == 0
    write_jsonl_lines(Path(smoke_overrides["paths.qa_path"]), TINY_QA[:5])
    done = tunedex("stage", "prepare", *args, cwd=tmp_path)
    assert done.returncode == 3
    assert "raw data changed since it was validated" in done.stderr
