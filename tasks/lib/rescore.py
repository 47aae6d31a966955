"""Re-score a registered release on the current eval questions, so the gate can pair candidate and
champion on the same questions when the champion's own per-question results are missing (a
release from before they were logged) or come from another eval set.

The release is scored as it serves: its retriever adapter over its pinned table, its generator
adapter, through evaluate's own code (retrieval_eval.run_queries, answers.evaluate_answers). Only
what a gate compares per question is re-run: the methods on the release's retriever (lora,
fusion, fusion_native) and the gate's answer setups (context by the candidate's chosen method).
BM25 and the base retriever have no release-specific weights; rules on them keep the point
comparison.
"""

from __future__ import annotations

from typing import Any

from tasks.lib.config import EvaluateConfig, GateRule, GenerateConfig, IndexConfig

# the retrieval methods a release's retriever decides
RESCORABLE_METHODS = ("lora", "fusion", "fusion_native")


def gate_targets(rules: tuple[GateRule, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(retrieval methods, answer setups) the gate's rules compare per question."""
    from tasks.lib.scoreboard import SETUPS

    methods: dict[str, None] = {}
    setups: dict[str, None] = {}
    for rule in rules:
        kind, _, rest = rule.metric.partition(".")
        group = rest.partition(".")[0]
        if kind == "retrieval" and group in RESCORABLE_METHODS:
            methods[group] = None
        elif kind == "answers" and group in SETUPS:
            setups[group] = None
    return tuple(methods), tuple(setups)


def eval_questions(per_question: dict[str, Any], setups: tuple[str, ...]
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The candidate's eval questions in evaluate's input form, and those its answer setups
    covered (evaluate.answer_questions may cap them), in the candidate's order."""
    # choices: a short-answer question's prompt and accuracy need them; absent from files that
    # do not record them, and then the release answers the plain prompt
    questions = [{"qid": q["qid"], "question": q["question"], "answer": q["reference"],
                  "doc_ids": q["doc_ids"], "metadata": q["metadata"], "choices": q.get("choices")}
                 for q in per_question["questions"]]
    answered = {qid for s in setups for qid in per_question["answers"].get(s, {})}
    return questions, [q for q in questions if q["qid"] in answered]


def check_bases(release: Any, models: Any) -> None:
    """Refuse a release built on other base models than this config's: its adapters would load
    onto the wrong weights."""
    from tasks.lib.errors import ConfigError

    ours = (models.retriever_id, models.generator_id)
    if (release.retriever_base, release.generator_base) != ours:
        raise ConfigError(f"release v{release.retriever_version} was built on "
                          f"{release.retriever_base} + {release.generator_base}, this config on "
                          f"{ours[0]} + {ours[1]}")


def rescore_release(reg: Any, release: Any, ctx: Any, section: EvaluateConfig,
                    generate: GenerateConfig, index: IndexConfig, rules: tuple[GateRule, ...],
                    candidate: dict[str, Any], method: str | None = None) -> dict[str, Any]:
    """The release's per-question results on the candidate's eval questions (the shape of
    per_question.json), for what `rules` compare; answer context by `method` (the candidate's
    chosen retrieval method; LoRA vectors when None). Raises ConfigError for a release on other base
    models, ServingError when its table or adapters are gone."""
    from tasks.lib import registry
    from tasks.lib.answers import evaluate_answers
    from tasks.lib.models import cached_retriever, retriever_base_dir
    from tasks.lib.per_question import build_per_question
    from tasks.lib.retrieval_eval import METHODS, run_queries
    from tasks.lib.search import connect, open_pinned

    check_bases(release, ctx.models)
    methods, setups = gate_targets(rules)
    questions, answered = eval_questions(candidate, setups)
    table = open_pinned(connect(release.index_uri, create=False),
                        {"table": release.table, "version": release.table_version},
                        release.retriever_version)
    base_dir = str(retriever_base_dir(ctx.models, ctx.catalog.models_dir))
    adapter = registry.adapter_dir(reg, reg.retriever_model, release.retriever_version)
    # "candidate" is evaluate's role name for the retriever under test; "base" judges similarity
    models = {"candidate": cached_retriever(base_dir, str(adapter), index.device, index.precision),
              "base": cached_retriever(base_dir, None, index.device, index.precision)}
    retrieval = {m: run_queries(questions, table, METHODS[m][1], models["candidate"], section,
                                index)[0] for m in methods}
    answers: dict[str, Any] = {}
    if setups and answered:
        generator = registry.adapter_dir(reg, reg.generator_model, release.generator_version)
        answers = evaluate_answers(generate, index, ctx, answered, {"candidate": table}, models,
                                   generator, setups, method or "lora",
                                   section.rrf_k)["per_setup"]
    return build_per_question(questions, retrieval, answers)
