from pathlib import Path

import pytest
import yaml

from tasks.lib.config import (
    SECTION_KEYS,
    Config,
    apply_overrides,
    flatten,
    load_config,
    parse_override,
    tracking_uri_source,
)
from tasks.lib.errors import ConfigError
from tests.conftest import REPO


@pytest.mark.parametrize("profile", ["cpu", "smoke", "gpu"])
def test_every_profile_loads_and_names_itself(profile):
    cfg = load_config(REPO / "configs" / f"{profile}.yaml")
    assert cfg.project.profile == profile


def test_config_is_frozen():
    cfg = load_config(REPO / "configs" / "cpu.yaml")
    with pytest.raises(Exception, match="frozen"):
        cfg.prepare.chunk_tokens = 10


MINIMAL = {"project": {"profile": "cpu"}}  # the least a profile file may say (empty is refused)


def write(tmp_path, data) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_names_its_path_and_file(tmp_path):
    path = write(tmp_path, {"prepare": {"chunk_size": 100}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "prepare.chunk_size: unknown key" in str(err.value)


def test_unknown_top_level_section(tmp_path):
    with pytest.raises(ConfigError, match="trainer: unknown key"):
        load_config(write(tmp_path, {"trainer": {"lr": 1}}))


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {"prepare": {"chunk_tokens": "many"}}))
    assert "prepare.chunk_tokens" in str(err.value)
    assert "'many'" in str(err.value)


def test_overlap_must_be_below_chunk_size(tmp_path):
    with pytest.raises(ConfigError, match="chunk_overlap must be smaller"):
        load_config(write(tmp_path, {"prepare": {"chunk_tokens": 32, "chunk_overlap": 32}}))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_not_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


def test_overrides_apply_and_are_validated(tmp_path):
    path = write(tmp_path, MINIMAL)
    assert load_config(path, {"prepare.chunk_tokens": 64}).prepare.chunk_tokens == 64
    with pytest.raises(ConfigError, match="prepare.chunk_tokenz: unknown key"):
        load_config(path, {"prepare.chunk_tokenz": 64})


def test_apply_overrides_does_not_mutate_input():
    raw = {"prepare": {"chunk_tokens": 10}}
    out = apply_overrides(raw, {"prepare.chunk_tokens": 20, "paths.reports_dir": "r"})
    assert raw == {"prepare": {"chunk_tokens": 10}}
    assert out == {"prepare": {"chunk_tokens": 20}, "paths": {"reports_dir": "r"}}


def test_parse_override_reads_yaml_values():
    assert parse_override("prepare.chunk_tokens=128") == ("prepare.chunk_tokens", 128)
    assert parse_override("models.allow_download=true") == ("models.allow_download", True)
    with pytest.raises(ConfigError, match="expected key.path=value"):
        parse_override("prepare.chunk_tokens")


def test_flatten_and_yaml_names():
    data = Config().to_dict()
    assert "validate" in data and "validate_" not in data
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_rule_without_any_check_is_refused_in_the_config():
    with pytest.raises(ConfigError, match="sets none of min_improvement"):
        load_config(REPO / "configs" / "smoke.yaml",
                    {"promote.gate": [{"metric": "answers.hybrid.token_f1"}]})


def test_section_by_yaml_key():
    cfg = Config()
    assert cfg.section("validate") is cfg.validate_
    assert cfg.section("prepare") is cfg.prepare and cfg.section("index") is cfg.index
    assert SECTION_KEYS[type(cfg.validate_)] == "validate"
    assert SECTION_KEYS[type(cfg.train_generator)] == "train_generator"


def test_unset_tracking_uris_come_from_the_environment(tmp_path, monkeypatch):
    from tasks.lib import config

    path = write(tmp_path, {"tracking": {"tracking_uri": "sqlite:///from-config.db"}})
    monkeypatch.setitem(config.USER_URIS, "MLFLOW_TRACKING_URI", "http://env:5000")
    monkeypatch.setitem(config.USER_URIS, "MLFLOW_REGISTRY_URI", "http://registry:5000")
    cfg = load_config(path)
    assert cfg.tracking.tracking_uri == "sqlite:///from-config.db"  # the config wins
    assert cfg.tracking.registry_uri == "http://registry:5000"  # unset in the config: the env
    assert tracking_uri_source(cfg.tracking) == "from the config"
    from_env = load_config(write(tmp_path, MINIMAL))
    assert from_env.tracking.tracking_uri == "http://env:5000"
    assert tracking_uri_source(from_env.tracking) == "from MLFLOW_TRACKING_URI"
    monkeypatch.setitem(config.USER_URIS, "MLFLOW_TRACKING_URI", None)
    monkeypatch.setitem(config.USER_URIS, "MLFLOW_REGISTRY_URI", None)
    default = load_config(write(tmp_path, MINIMAL))
    assert (default.tracking.tracking_uri, default.tracking.registry_uri) == ("sqlite:///mlflow.db",
                                                                              None)
    assert tracking_uri_source(default.tracking) == "the default"


def test_a_store_set_by_an_earlier_run_does_not_leak_into_the_next_config(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ; only what the user set
    when the process started counts."""
    from tasks.lib import config

    monkeypatch.setitem(config.USER_URIS, "MLFLOW_TRACKING_URI", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///an-earlier-run.db")
    assert load_config(write(tmp_path, MINIMAL)).tracking.tracking_uri == "sqlite:///mlflow.db"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_an_empty_profile_is_refused(tmp_path, text):
    from tasks.lib.config import load_config
    from tasks.lib.errors import ConfigError

    path = tmp_path / "empty.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="empty.yaml: the profile is empty"):
        load_config(path)


def test_an_old_retrieval_hybrid_gate_rule_loads_as_fusion_with_a_warning(tmp_path, caplog):
    old = {**MINIMAL, "promote": {"gate": [{"metric": "retrieval.hybrid.ndcg@10", "floor": 0.1},
                                           {"metric": "answers.hybrid.token_f1", "floor": 0.0}]}}
    with caplog.at_level("WARNING", logger="tasks.lib.config"):
        cfg = load_config(write(tmp_path, old))
    assert [r.metric for r in cfg.promote.gate] == ["retrieval.fusion.ndcg@10",
                                                    "answers.hybrid.token_f1"]  # a setup: kept
    assert ("promote.gate: metric retrieval.hybrid.ndcg@10 is deprecated (the BM25 + vector "
            "fusion is now called fusion): read as retrieval.fusion.ndcg@10") in caplog.text


def test_the_default_gate_judges_the_chosen_retrieval_method():
    cfg = load_config(REPO / "configs" / "cpu.yaml")
    assert [r.metric for r in cfg.promote.gate][1:] == ["retrieval.chosen.ndcg@10",
                                                        "retrieval.chosen.p95_ms"]
    assert cfg.evaluate.choice_questions == 50


def test_synthesize_section_names_bad_modes_and_bounds(tmp_path):
    with pytest.raises(ConfigError, match=r"synthesize.mode: Input should be 'auto', 'off', "
                                          r"'add' or 'only' \(got 'sometimes'\)"):
        load_config(write(tmp_path, {**MINIMAL, "synthesize": {"mode": "sometimes"}}))
    with pytest.raises(ConfigError, match="min_question_words must not exceed max_question_words"):
        load_config(write(tmp_path, {**MINIMAL, "synthesize": {"min_question_words": 9,
                                                               "max_question_words": 5}}))
    cfg = load_config(REPO / "configs" / "cpu.yaml")
    # the cpu profile writes inverse-cloze questions (measured, README); lm is opt-in there
    assert (cfg.synthesize.mode, cfg.synthesize.method, cfg.synthesize.generator_id,
            cfg.synthesize.max_chunks) == ("auto", "ict", None, 0)
    gpu = load_config(REPO / "configs" / "gpu.yaml")
    assert gpu.synthesize.method == "lm"


def test_a_bare_yaml_off_is_synthesize_mode_off(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("project:\n  profile: cpu\nsynthesize:\n  mode: off\n")  # YAML 1.1: false
    assert load_config(path).synthesize.mode == "off"
    assert load_config(REPO / "configs" / "cpu.yaml",
                       {"synthesize.mode": False}).synthesize.mode == "off"  # --set ...=off
    with pytest.raises(ConfigError, match="synthesize.mode"):
        load_config(write(tmp_path, {**MINIMAL, "synthesize": {"mode": True}}))
