"""The release-level skip: one digest of data, config and the code a retrain runs."""

from __future__ import annotations

from pathlib import Path

from tasks.lib.release_skip import NOT_INPUTS, inputs_digest, pipeline_code

REPO = Path(__file__).resolve().parents[2]


def test_the_digest_covers_the_pipeline_code_and_not_the_server():
    names = {str(p.relative_to(REPO)) for p in pipeline_code(REPO)}
    assert {"tasks/evaluate.py", "tasks/promote.py", "tasks/lib/scoreboard.py",
            "tasks/lib/rag_model.py", "flows/pipeline.py"} <= names
    assert not names & {"tasks/lib/serving.py", "tasks/lib/querylog.py", "tasks/lib/batching.py",
                        "flows/serve.py", "flows/cli.py"}


def test_sections_that_do_not_change_a_retrain_leave_the_digest_alone():
    md5s = {"corpus": "a", "qa": "b"}
    base = {"prepare": {"chunk_tokens": 200}, "serve": {"port": 8000}, "paths": {"x": "1"}}
    same = {**base, "serve": {"port": 9000}, "paths": {"x": "2"}}
    other = {**base, "prepare": {"chunk_tokens": 128}}
    assert "serve" in NOT_INPUTS and "paths" in NOT_INPUTS
    assert inputs_digest(md5s, base, "c") == inputs_digest(md5s, same, "c")
    assert inputs_digest(md5s, base, "c") != inputs_digest(md5s, other, "c")
    assert inputs_digest(md5s, base, "c") != inputs_digest({**md5s, "qa": "z"}, base, "c")
    assert inputs_digest(md5s, base, "c") != inputs_digest(md5s, base, "d")
