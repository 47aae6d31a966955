from tasks.lib.answers import option_costs
from tasks.lib.scoreboard import scoreboard_markdown, summarize_setups, winner


def rows(values, metric="token_f1"):
    return [{metric: v} for v in values]


def test_winner_needs_separation_from_every_other_setup():
    per_setup = {"base": rows([0.1, 0.2] * 20), "rag": rows([0.5, 0.6] * 20),
                 "hybrid": rows([0.62, 0.49] * 20)}
    assert winner(per_setup, "token_f1", 300, 0) is None  # hybrid does not separate from rag
    per_setup["hybrid"] = rows([0.8, 0.9] * 20)
    assert winner(per_setup, "token_f1", 300, 0) == "hybrid"


def test_markdown_renders_every_setup_and_the_recommendation():
    per_setup = {"base": rows([0.1, 0.3] * 5), "rag": rows([0.4, 0.6] * 5)}
    report = {"questions": 10, "summary": summarize_setups(per_setup, 200, 0),
              "winners": {"token_f1": "rag"}, "verdict": "V.",
              "speed": {"base": {"latency_ms": 10.0, "tokens_per_s": 5.0},
                        "rag": {"latency_ms": 20.0, "tokens_per_s": 4.0}},
              "costs": option_costs({})}
    md = scoreboard_markdown(report)
    assert "| base (baseline) | 0.200 [" in md and "| rag (embeddings) | 0.500 [" in md
    assert "token_f1: rag" in md
    assert "token F1 and exact match (SQuAD-normalised: lowercase, no punctuation, no articles)" in md
    assert "rouge_l: ROUGE-L F-measure (rouge-score, no stemming)" in md
    assert md.startswith("## Answers (10 eval questions)\n\n**V.**\n\n| setup |")
    report["recommendation"] = {"why": ["Because.", "Costs."], "what_would_change": {"text": "More."}}
    assert "**V.**\n\n- Because.\n- Costs.\n- What would change it: More.\n\n| setup |" in \
        scoreboard_markdown(report)


def test_accuracy_is_a_headline_metric_on_the_short_answer_questions():
    free = [{"token_f1": 0.2, "accuracy": None}]  # a question without choices
    per_setup = {"base": [{"token_f1": 0.2, "accuracy": a} for a in [1.0, 0.0] * 10] + free,
                 "rag": [{"token_f1": 0.2, "accuracy": 1.0}] * 20 + free}
    summary = summarize_setups(per_setup, 200, 0)
    assert summary["base"]["accuracy"]["mean"] == 0.5 and summary["rag"]["accuracy"]["mean"] == 1.0
    assert winner(per_setup, "accuracy", 300, 0) == "rag"  # on the 20 questions with choices
    report = {"questions": 21, "summary": summary, "winners": {}, "verdict": "V.",
              "speed": {s: {"latency_ms": 1.0, "tokens_per_s": 1.0} for s in per_setup}}
    md = scoreboard_markdown(report)
    assert "| setup | token_f1 | accuracy | latency ms/q | tokens/s |" in md
    assert "| rag (embeddings) | 0.200 [0.200, 0.200] | 1.000 [1.000, 1.000] | 1 | 1.0 |" in md
    assert "accuracy: on short-answer questions only (qa.jsonl `choices`)" in md
    without = {s: [{"token_f1": 0.2, "accuracy": None}] * 3 for s in per_setup}
    report["summary"] = summarize_setups(without, 200, 0)
    assert "accuracy" not in scoreboard_markdown(report)
