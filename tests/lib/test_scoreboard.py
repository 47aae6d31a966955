from tasks.lib.answers import option_costs
from tasks.lib.scoreboard import scoreboard_html, scoreboard_markdown, summarize_setups, verdict, winner


def rows(values, metric="token_f1"):
    return [{metric: v} for v in values]


def test_winner_needs_separation_from_every_other_setup():
    per_setup = {"base": rows([0.1, 0.2] * 20), "rag": rows([0.5, 0.6] * 20),
                 "hybrid": rows([0.62, 0.49] * 20)}
    assert winner(per_setup, "token_f1", 300, 0) is None  # hybrid does not separate from rag
    per_setup["hybrid"] = rows([0.8, 0.9] * 20)
    assert winner(per_setup, "token_f1", 300, 0) == "hybrid"


def test_verdict_names_winner_and_cost_or_says_undecided():
    per_setup = {"base": rows([0.1, 0.2] * 20), "hybrid": rows([0.8, 0.9] * 20)}
    summary = summarize_setups(per_setup, 300, 0)
    text = verdict(summary, {"token_f1": "hybrid"}, {"hybrid": {"train_seconds": 12.0}})
    assert text.startswith("On this data, fine-tuning + embeddings (hybrid) answers best")
    assert "train seconds 12" in text
    undecided = verdict(summary, {"token_f1": None, "semantic_sim": "hybrid"}, {})
    assert undecided.startswith("No setup separates from the others on token F1")
    assert "fine-tuning + embeddings leads on semantic sim" in undecided


def test_markdown_and_html_render_every_setup():
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
    html = scoreboard_html(md, {"plot": b"\x89PNG"}, "t")
    assert "data:image/png;base64,iVBORw==" in html and "&lt;" not in html.split("<pre>")[0]
