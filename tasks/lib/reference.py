"""A release's reference questions: what it was trained and measured on, for the monitor.

promote logs the prepared train and eval questions into its run (`reference/questions.json`);
the monitor reads them back for the release it watches. A release registered before this
existed falls back to the prepared splits on disk, only when its data md5s match the data now.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from tasks.lib.errors import ServingError

log = logging.getLogger(__name__)

REFERENCE_DIR, REFERENCE_FILE = "reference", "questions.json"  # inside the promote run


def reference_questions(cat: Any) -> dict[str, list[str]]:
    """The prepared train and eval questions (as the release was trained and evaluated on them)."""
    from tasks.lib.data import read_jsonl

    return {split: [row["question"] for row in read_jsonl(path)]
            for split, path in (("train", cat.train_qa_path), ("eval", cat.eval_qa_path))}


def log_reference(cat: Any) -> None:
    """Log the reference questions into the active MLflow run (promote's)."""
    from tasks.lib.tracking import log_json_artifact

    log_json_artifact(reference_questions(cat), REFERENCE_FILE, REFERENCE_DIR)


def load_reference(tracking_uri: str, tags: dict[str, str], cat: Any) -> dict[str, Any]:
    """The reference questions of a registered release (its tags name the promote run), with
    where they came from."""
    import mlflow

    run_id = tags.get("promote.run_id")
    if run_id:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=f"{REFERENCE_DIR}/{REFERENCE_FILE}",
                    dst_path=tmp, tracking_uri=tracking_uri)
                data = json.loads(Path(path).read_text(encoding="utf-8"))
            return {**data, "source": f"promote run {run_id}"}
        except Exception as err:  # noqa: BLE001 - an older release: try the files on disk
            log.info("release reference not in promote run %s (%s)", run_id, err)
    return reference_on_disk(tags, cat)


def reference_on_disk(tags: dict[str, str], cat: Any) -> dict[str, Any]:
    """The prepared splits on disk, only if the data they came from is the release's."""
    from tasks.lib.files import data_md5s

    now = data_md5s(cat.corpus_path, cat.qa_path)
    recorded = {"corpus": tags.get("data.corpus_md5"), "qa": tags.get("data.qa_md5")}
    if recorded["qa"] is None or recorded["qa"] != now.get("qa") or not cat.train_qa_path.is_file():
        raise ServingError(
            "the served release records no reference questions (registered before monitoring "
            f"existed) and {cat.qa_label} is not the data it was trained on (md5 {now.get('qa')} "
            f"vs {recorded['qa']}): retrain (`tunedex pipeline --force`) to monitor it")
    return {**reference_questions(cat), "source": f"{cat.prepared_dir} (data md5s match the release)"}
