"""`tunedex-rag`: the whole release as one MLflow models-from-code pyfunc (nothing is unpickled).

promote logs this file with `python_model=<this path>`, the two adapters as artifacts and the
release as `model_config` (base model ids, LanceDB URI, table and pinned version, the setup the
gate judged, generation settings). MLflow re-executes the file on load; `load_context` does the
heavy work. Serve it with
    mlflow models serve -m models:/tunedex-rag@champion --env-manager local -h 127.0.0.1 -p 5001
and POST {"inputs": ["question", ...]} to /invocations: each prediction is
{"answer", "sources", "setup", "release"}. Base models resolve offline as everywhere else
(`models_dir`, relative to the working directory, holds the converted copies); override any
config key at load with `mlflow.pyfunc.load_model(uri, model_config={"index_uri": ...})`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

RETRIEVER_ADAPTER, GENERATOR_ADAPTER = "retriever_adapter", "generator_adapter"


def served_from_config(conf: dict[str, Any], artifacts: dict[str, str]):
    """The ServedRelease a logged model_config + artifacts describe."""
    from tasks.lib.serving import ServedRelease

    return ServedRelease(label=f"tunedex-rag (retriever v{conf['retriever_version']}, generator "
                               f"v{conf['generator_version']})",
                         release=int(conf["retriever_version"]), index_uri=conf["index_uri"],
                         table=conf["table"], table_version=int(conf["table_version"]),
                         retriever_base=conf["retriever_base_model_id"],
                         retriever_adapter=Path(artifacts[RETRIEVER_ADAPTER]),
                         generator_base=conf["generator_base_model_id"],
                         generator_adapter=Path(artifacts[GENERATOR_ADAPTER]),
                         tags={"retrieval.method": conf["retrieval_method"]}
                         if conf.get("retrieval_method") else {})


class RagModel(PythonModel):
    """Questions in, grounded answers with their sources out (the setup the gate judged)."""

    def load_context(self, context):
        from tasks.lib.catalog import Catalog
        from tasks.lib.config import (
            EvaluateConfig,
            GenerateConfig,
            IndexConfig,
            ModelsConfig,
            PathsConfig,
        )
        from tasks.lib.serving import LoadedRelease, ServingSections

        conf = dict(context.model_config)
        self.setup = conf.get("setup", "hybrid")
        sections = ServingSections(
            ModelsConfig(retriever_id=conf["retriever_base_model_id"],
                         generator_id=conf["generator_base_model_id"]),
            GenerateConfig(**conf.get("generate", {})), EvaluateConfig(**conf.get("evaluate", {})),
            IndexConfig(**conf.get("index", {})))
        served = served_from_config(conf, context.artifacts)
        catalog = Catalog(PathsConfig(models_dir=conf.get("models_dir", ".models")))
        self.release = LoadedRelease(served, sections, catalog).warm([self.setup])

    def predict(self, context, model_input: list[str], params=None) -> list[dict[str, Any]]:
        from tasks.lib.registry import texts_of

        answers = self.release.ask_many(texts_of(model_input), self.setup)
        return [{"answer": a.text, "sources": list(a.sources), "setup": a.setup,
                 "release": self.release.served.release} for a in answers]


mlflow.models.set_model(RagModel())
