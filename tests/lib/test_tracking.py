"""MLflow helpers (tasks/lib/tracking.py); the one that needs a store uses a sqlite file in tmp."""

from tasks.lib.catalog import Catalog
from tasks.lib.config import IndexConfig, PathsConfig, ValidateConfig
from tasks.lib.files import file_md5
from tasks.lib.tracking import (
    data_tags,
    from_mlflow_key,
    log_tables,
    mlflow_key,
    section_dict,
    section_name,
)


def test_metric_keys_round_trip():
    assert mlflow_key("retrieval.fusion.ndcg@10") == "retrieval.fusion.ndcg_at_10"
    assert from_mlflow_key("retrieval.fusion.ndcg_at_10") == "retrieval.fusion.ndcg@10"
    assert mlflow_key("answers.base.token_f1") == "answers.base.token_f1"


def test_sections_are_logged_under_their_yaml_key():
    assert section_name(ValidateConfig()) == "validate"
    assert section_name(IndexConfig()) == "index"
    assert section_dict(IndexConfig(shards=2))["shards"] == 2


def test_data_tags_record_the_raw_files_md5(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("{}\n")
    tags = data_tags(Catalog(PathsConfig(corpus_path=str(corpus), qa_path=str(tmp_path / "no.jsonl"))))
    assert tags["data.corpus_md5"] == file_md5(corpus) and tags["data.qa_md5"] == "missing"
    assert tags["data.corpus_path"] == str(corpus)
    assert {"git.commit", "git.dirty"} <= set(tags)


def test_secrets_are_redacted_from_the_logged_config_and_token_counts_are_not():
    from tasks.lib.tracking import redact_secrets

    data = {"serve": {"token": "s3cret", "port": 8000}, "prepare": {"chunk_tokens": 32},
            "generate": {"max_new_tokens": 8}, "store": {"db_password": "pw", "token": None}}
    assert redact_secrets(data) == {"serve": {"token": "***", "port": 8000},
                                    "prepare": {"chunk_tokens": 32},
                                    "generate": {"max_new_tokens": 8},
                                    "store": {"db_password": "***", "token": None}}
    assert data["serve"]["token"] == "s3cret"  # a copy; the config is untouched


def test_uri_passwords_are_masked_in_the_logged_config():
    from tasks.lib.tracking import redact_secrets

    data = {"tracking": {"tracking_uri": "https://bob:s3cret@mlflow.internal", "artifact_location":
                         None}, "gate": [{"metric": "x"}], "paths": {"index_uri": "s3://b/p"}}
    out = redact_secrets(data)
    assert out["tracking"]["tracking_uri"] == "https://bob:***@mlflow.internal"
    assert out["gate"] == [{"metric": "x"}] and out["paths"]["index_uri"] == "s3://b/p"
    assert "s3cret" not in str(out) and data["tracking"]["tracking_uri"].endswith("s3cret@mlflow.internal")


def test_log_tables_writes_mlflow_tables_offline(tmp_path):
    """Tables land as table artifacts of the active run in a local sqlite store (no server)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    rows = [{"qid": "q1", "setup": "rag", "token_f1": 0.5},
            {"qid": "q1", "setup": "base", "token_f1": None}]
    with mlflow.start_run() as run:
        log_tables({"per_question.json": rows, "empty.json": []})
    table = mlflow.load_table("per_question.json", run_ids=[run.info.run_id])
    assert table[["qid", "setup"]].to_dict("records") == [
        {"qid": "q1", "setup": "rag"}, {"qid": "q1", "setup": "base"}]
    assert [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)] == [
        "per_question.json"]
