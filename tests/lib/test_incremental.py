"""One record for the flow and DVC (tasks/lib/incremental.py): real DVC, real flow runs, a copy
of the project in a temp git repository with dvc.yaml rendered for the smoke profile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.lib.incremental import describe_status, dvc_plan
from tests.conftest import TINY_DOCS, TINY_QA, write_jsonl_lines

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# ---- when per-stage reuse applies ---------------------------------------------------------------


def test_plan_applies_only_to_the_rendered_config_without_overrides():
    assert dvc_plan("configs/cpu.yaml", None, False, REPO).enabled
    assert "--set" in dvc_plan("configs/cpu.yaml", {"prepare.chunk_tokens": 64}, False, REPO).reason
    assert "--force" in dvc_plan("configs/cpu.yaml", None, True, REPO).reason
    other = dvc_plan("configs/smoke.yaml", None, False, REPO)
    assert not other.enabled and "dvc.yaml runs configs/cpu.yaml" in other.reason


def test_plan_refuses_a_dvc_yaml_that_is_not_current(tmp_path):
    for name in ("configs", "tasks", "flows", ".dvc"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text().replace(
        "- tasks/lib/scoreboard.py\n", ""))
    plan = dvc_plan(str(tmp_path / "configs" / "cpu.yaml"), None, False, tmp_path)
    assert not plan.enabled and "stages evaluate differ" in plan.reason
    assert not dvc_plan("configs/cpu.yaml", None, False, tmp_path / "nowhere").enabled


def test_describe_status_names_what_changed():
    status = {"evaluate": [{"changed deps": {"tasks/lib/scoreboard.py": "modified"}},
                           {"changed outs": {"a": "deleted", "b": "deleted", "c": "deleted",
                                             "d": "deleted"}}]}
    assert describe_status(status) == ("changed deps: tasks/lib/scoreboard.py (modified); changed "
                                       "outs: a (deleted), b (deleted), c (deleted) and 1 more")


# ---- the flow and DVC on one record ---------------------------------------------------------


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_HOME": str(cwd / ".prefect")}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The project's files (no outputs) in a fresh git repo, dvc.yaml rendered for smoke."""
    root = tmp_path_factory.mktemp("project")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name.startswith(("reports/", "data/prepared")) or name == "dvc.lock" or \
                not (REPO / name).is_file():
            continue
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    (root / ".models").symlink_to(REPO / ".models")  # the tiny models, built once
    write_jsonl_lines(root / "data" / "demo" / "corpus.jsonl", TINY_DOCS)  # seconds per run
    write_jsonl_lines(root / "data" / "demo" / "qa.jsonl", TINY_QA)
    run([sys.executable, "-m", "flows.cli", "dvc-yaml", "-c", "configs/smoke.yaml"], root)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=root, check=True)
    return root


def pipeline(root: Path) -> str:
    done = run([str(BIN / "tunedex"), "pipeline", "-c", "configs/smoke.yaml"], root)
    return done.stdout + done.stderr


def dvc_status(root: Path) -> str:
    return run([str(BIN / "dvc"), "status"], root).stdout


@pytest.mark.slow
def test_flow_and_dvc_share_dvc_lock(project):
    # 1. A cold flow run records every stage: DVC has nothing to do afterwards.
    first = pipeline(project)
    assert "validate: running" in first and "release v1 is the new champion" in first
    assert "up to date" in dvc_status(project)
    # 2. An edit of one library module only evaluate runs: DVC and the flow agree.
    with (project / "tasks" / "lib" / "scoreboard.py").open("a") as handle:
        handle.write("# an edit\n")
    status = dvc_status(project)
    assert "evaluate" in status and "tasks/lib/scoreboard.py" in status
    assert not any(f"{s}:" in status for s in ("validate", "prepare", "train_retriever", "index",
                                               "train_generator"))
    second = pipeline(project)
    for stage in ("validate", "prepare", "train_retriever", "index", "train_generator"):
        assert f"{stage}: up to date (dvc.lock): outputs reused" in second
    assert "evaluate: running (changed deps: tasks/lib/scoreboard.py (modified))" in second
    assert "release v2" in second  # promote ran on the re-evaluated scoreboard
    # 3. `dvc repro` right after the flow: nothing to do.
    repro = run([str(BIN / "dvc"), "repro"], project).stdout
    assert "Running stage" not in repro and "up to date" in repro
    # 4. A param changed and reproduced by DVC: the flow trains nothing afterwards.
    config = project / "configs" / "smoke.yaml"
    config.write_text(config.read_text().replace("  bootstrap: 200", "  bootstrap: 300"))
    repro = run([str(BIN / "dvc"), "repro"], project).stdout
    assert "Running stage 'evaluate'" in repro and "Running stage 'train" not in repro
    third = pipeline(project)
    assert "running (" not in third and "evaluate: up to date" in third
