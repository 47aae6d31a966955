"""`tunedex-generator` as an MLflow models-from-code pyfunc: nothing is unpickled on load.

promote logs this file (`python_model=<this path>`) with the LoRA adapter as the artifact
`adapter` and the base model id in `model_config`; MLflow re-executes the file on load and
`load_context` does the heavy work. Load: `mlflow.pyfunc.load_model("models:/tunedex-generator@champion")`.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel

from tasks.lib.registry import ADAPTER_ARTIFACT, texts_of


class GeneratorModel(PythonModel):
    """`mlflow.pyfunc.load_model("models:/tunedex-generator@champion").predict(["question"])`:
    greedy answers from the base causal LM with the registered LoRA adapter merged."""

    def load_context(self, context):
        from tasks.lib.generator import load_generator
        from tasks.lib.resolve import resolve_model_dir

        conf = context.model_config
        base_id = conf["generator_base_model_id"]
        base = resolve_model_dir(base_id, False, Path(conf["models_dir"]))
        self.max_new_tokens = int(conf.get("max_new_tokens", 64))
        self.model, self.tokenizer = load_generator(base, Path(context.artifacts[ADAPTER_ARTIFACT]),
                                                    "auto", base_id)

    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        from tasks.lib.generator import build_prompt, generate_answers

        prompts = [build_prompt(self.tokenizer, q) for q in texts_of(model_input)]
        answers = generate_answers(self.model, self.tokenizer, prompts, self.max_new_tokens, 8)
        return [a["text"] for a in answers]


mlflow.models.set_model(GeneratorModel())
