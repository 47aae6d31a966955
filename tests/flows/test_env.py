"""Offline defaults (flows/env.py): filled in only where the user set nothing."""

import os

from flows.env import OFFLINE_DEFAULTS, set_offline_env


def test_defaults_fill_in_but_never_override(tmp_path, monkeypatch):
    for key in (*OFFLINE_DEFAULTS, "PREFECT_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # the user's choice
    set_offline_env(tmp_path)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["DO_NOT_TRACK"] == "true"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
    assert os.environ["PREFECT_HOME"] == str(tmp_path.resolve() / ".prefect")


def test_allow_download_turns_the_hub_back_on(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    set_offline_env(tmp_path, allow_download=True)
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert os.environ["PREFECT_HOME"] == str(tmp_path)  # already set: kept
