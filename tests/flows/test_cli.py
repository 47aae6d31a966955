"""The `tunedex` command as a user runs it (flows/cli.py): exit codes and the messages on
stderr; `convert`; `dvc-yaml`; and `dvc repro`, which runs `tunedex stage <name>` per stage."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.lib.data import load_qa
from tests.conftest import REPO, SMOKE, TINY_QA, sets, tunedex, write_jsonl_lines
from tests.lib.test_convert import COVID_RAW


def test_help_lists_commands(tmp_path):
    done = tunedex("--help", cwd=tmp_path)
    assert done.returncode == 0
    for command in ("pipeline", "reindex", "stage", "config", "setup", "schedule", "search", "ask",
                    "releases", "rollback", "gc", "convert", "dvc-yaml", "synthesize"):
        assert command in done.stdout
    assert "--config" in tunedex("stage", "--help", cwd=tmp_path).stdout


def plain(text: str) -> str:
    """Rich's boxed, wrapped error text as one line."""
    return " ".join(text.replace("│", " ").split())


def test_stage_names_the_flow_steps_and_refuses_others(tmp_path):
    done = tunedex("stage", "reindex", "-c", str(SMOKE), cwd=tmp_path)
    assert done.returncode == 2
    assert ("Invalid value for 'name': Value error, 'reindex' is not one of 'validate', "
            "'synthesize', 'prepare', 'train_retriever', 'index', 'train_generator', 'evaluate', "
            "'promote'.") in plain(done.stderr)


def test_dvc_yaml_is_current_for_the_cpu_profile():
    """dvc.yaml is rendered from the stage table (tasks/lib/stages.py) for configs/cpu.yaml."""
    done = tunedex("dvc-yaml", "--config", "configs/cpu.yaml", "--check", cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("dvc.yaml: current")


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
def test_pii_policy_fail_exits_with_the_validation_error(smoke_overrides, tmp_path):
    from tests.conftest import PII_VALUES, write_pii_data

    qa_path = smoke_overrides["paths.qa_path"]
    write_pii_data(smoke_overrides["paths.corpus_path"], qa_path)
    args = ("-c", str(SMOKE), *sets({**smoke_overrides, "pii.policy": "fail"}))
    done = tunedex("stage", "validate", *args, cwd=tmp_path)
    assert done.returncode == 3
    assert f"{qa_path} line 9, field 'question': card, email" in plain(done.stderr)
    assert not [v for v in PII_VALUES if v in done.stdout + done.stderr]


@pytest.mark.slow
def test_prepare_refuses_data_changed_since_validation(smoke_overrides, tmp_path):
    args = ("-c", str(SMOKE), *sets(smoke_overrides))
    assert tunedex("stage", "validate", *args, cwd=tmp_path).returncode == 0
    write_jsonl_lines(Path(smoke_overrides["paths.qa_path"]), TINY_QA[:5])
    done = tunedex("stage", "prepare", *args, cwd=tmp_path)
    assert done.returncode == 3
    assert "raw data changed since it was validated" in done.stderr


# ---- convert ---------------------------------------------------------------------------------


def test_cli_convert(tmp_path):
    source = tmp_path / "pairs.json"
    source.write_text(json.dumps(COVID_RAW))
    done = tunedex("convert", "covidfaq", str(source), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"multi_doc_questions": 1' in done.stdout
    assert len(load_qa(tmp_path / "out" / "qa.jsonl")) == 3

    default = tunedex("convert", "covidfaq", str(source), cwd=tmp_path)  # --out defaults to data/<name>
    assert default.returncode == 0, default.stderr
    assert (tmp_path / "data" / "covidfaq" / "corpus.jsonl").is_file()


def test_cli_convert_bad_file_exits_2_with_message(tmp_path):
    source = tmp_path / "pqal_dev.json"
    source.write_text("{")
    done = tunedex("convert", "pubmedqa", str(source), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2
    assert f"error: {source}, line 1: not valid JSON" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


# ---- dvc repro: the DVC stages are `tunedex stage <name>` ----------------------------------------

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


def test_empty_questions_and_queries_are_refused_before_loading_anything(tmp_path):
    for command in (["ask", ""], ["search", "   "]):
        done = tunedex(*command, "-c", str(SMOKE), cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "is empty (or only whitespace)" in done.stderr
