"""`tunedex-retriever` as an MLflow models-from-code pyfunc: nothing is unpickled on load.

promote logs this file (`python_model=<this path>`) with the LoRA adapter as the artifact
`adapter` and the base model id in `model_config`; MLflow re-executes the file on load and
`load_context` does the heavy work. Load: `mlflow.pyfunc.load_model("models:/tunedex-retriever@champion")`.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel

from tasks.lib.registry import ADAPTER_ARTIFACT, texts_of


class RetrieverModel(PythonModel):
    """`mlflow.pyfunc.load_model("models:/tunedex-retriever@champion").predict(["text"])`:
    unit-length embeddings from the base model with the registered LoRA adapter merged."""

    def load_context(self, context):
        from tasks.lib.models import load_retriever
        from tasks.lib.resolve import resolve_model_dir

        conf = context.model_config
        base = resolve_model_dir(conf["retriever_base_model_id"], False, conf["models_dir"])
        self.model = load_retriever(base, Path(context.artifacts[ADAPTER_ARTIFACT]), "auto")

    def predict(self, context, model_input: list[str], params=None) -> list[list[float]]:
        vectors = self.model.encode(texts_of(model_input), normalize_embeddings=True,
                                    convert_to_numpy=True)
        return vectors.tolist()


mlflow.models.set_model(RetrieverModel())
