"""`dvc plots` files (tasks/lib/dvc_plots.py, tracking.loss_rows) and their declaration in the
stage table (tasks/lib/stages.py): exact rows, and every charted field is one the files hold."""

import json
from pathlib import Path

import yaml

from tasks.lib.catalog import Catalog
from tasks.lib.config import PathsConfig
from tasks.lib.dvc_plots import method_rows, setup_rows, write_evaluate_plots
from tasks.lib.stages import BY_NAME, top_level_plots
from tasks.lib.tracking import loss_rows

REPO = Path(__file__).resolve().parents[2]
METRICS = {"retrieval": {"bm25": {"recall@1": 0.4, "recall@10": 0.9, "ndcg@10": 0.7,
                                  "p95_ms": 12.5},
                         "lora": {"recall@10": 0.95, "ndcg@10": 0.8, "p95_ms": 30.0}},
           "answers": {"base": {"token_f1": 0.1, "rouge_l": 0.09, "exact_match": 0.0},
                       "rag": {"token_f1": 0.15, "rouge_l": 0.12, "groundedness": 0.6},
                       "finetuned": {"token_f1": 0.12}}}


def test_loss_rows_keep_step_and_loss_only():
    history = [{"step": 1, "loss": 2.123456789, "lr": 1e-4, "tokens_per_second": 120.5},
               {"step": 2.0, "loss": 1.5, "grad_norm": 3.0, "epoch": 0.5}]
    assert loss_rows(history) == [{"step": 1, "loss": 2.123457}, {"step": 2, "loss": 1.5}]
    assert loss_rows([]) == []


def test_method_and_setup_rows_in_the_metrics_order_without_latencies():
    assert method_rows(METRICS) == [{"method": "bm25", "ndcg@10": 0.7, "recall@10": 0.9},
                                    {"method": "lora", "ndcg@10": 0.8, "recall@10": 0.95}]
    assert setup_rows(METRICS) == [{"setup": "base", "token_f1": 0.1, "rouge_l": 0.09},
                                   {"setup": "rag", "token_f1": 0.15, "rouge_l": 0.12},
                                   {"setup": "finetuned", "token_f1": 0.12, "rouge_l": None}]
    assert method_rows({}) == [] and setup_rows({}) == []


def test_write_evaluate_plots_writes_the_catalog_paths(tmp_path):
    cat = Catalog(PathsConfig(reports_dir=str(tmp_path / "reports")))
    written = write_evaluate_plots(cat, METRICS)
    assert written == (cat.retrieval_plot_path, cat.answers_plot_path)
    assert json.loads(cat.retrieval_plot_path.read_text()) == method_rows(METRICS)
    assert json.loads(cat.answers_plot_path.read_text()) == setup_rows(METRICS)


def test_the_rendered_dvc_yaml_declares_the_plots():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stages = dvc["stages"]
    assert stages["train_retriever"]["plots"] == [{"reports/train_retriever/loss.json": {
        "cache": False, "template": "linear", "x": "step", "y": "loss",
        "title": "train_retriever: training loss"}}]
    assert list(stages["train_generator"]["plots"][0]) == ["reports/train_generator/loss.json"]
    assert stages["evaluate"]["plots"] == [
        {"reports/evaluate/plots/retrieval.json": {
            "cache": False, "template": "bar_horizontal", "x": "ndcg@10", "y": "method",
            "title": "nDCG@10 per retrieval method"}},
        {"reports/evaluate/plots/answers.json": {
            "cache": False, "template": "bar_horizontal", "x": "token_f1", "y": "setup",
            "title": "token F1 per answer setup"}}]
    assert dvc["plots"] == [
        {"Recall@10 per retrieval method": {"template": "bar_horizontal", "x": "recall@10",
                                            "y": {"reports/evaluate/plots/retrieval.json":
                                                  "method"}}},
        {"ROUGE-L per answer setup": {"template": "bar_horizontal", "x": "rouge_l",
                                      "y": {"reports/evaluate/plots/answers.json": "setup"}}}]
    assert not any(s.get("plots") for n, s in stages.items()
                   if n not in ("train_retriever", "train_generator", "evaluate"))


def test_no_stage_reads_a_plot_file():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    plotted = {next(iter(p)) for s in dvc.values() for p in s.get("plots", [])}
    read = {d for s in dvc.values() for d in s["deps"]}
    written = {o if isinstance(o, str) else next(iter(o)) for s in dvc.values()
               for o in s.get("outs", [])}
    assert len(plotted) == 4 and not plotted & (read | written)


def test_every_charted_field_is_in_the_rows_written():
    cat = Catalog(PathsConfig())
    rows = {cat.retrieval_plot_path: method_rows(METRICS)[0],
            cat.answers_plot_path: setup_rows(METRICS)[0]}
    for path, chart in BY_NAME["evaluate"].plots(cat).items():
        assert {chart["x"], chart["y"]} <= set(rows[path]), path
    for plot in top_level_plots(cat):
        (chart,) = plot.values()
        for path, field in chart["y"].items():
            assert {chart["x"], field} <= set(rows[Path(path)]), plot
    (loss_chart,) = BY_NAME["train_generator"].plots(cat).values()
    assert {loss_chart["x"], loss_chart["y"]} == set(loss_rows([{"step": 1, "loss": 1.0}])[0])
