"""The artifact catalog: every path a stage reads or writes, derived from `paths.*` in one place.

Stages, flows and the CLI ask the catalog (`cat.chunks_path`, `cat.stage_metrics_path("index")`);
nothing else joins artifact paths. Names say the state of what they hold (`train_qa`, `eval_qa`),
`_path` for files, `_dir` for folders, `_uri` for LanceDB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.lib.config import PathsConfig

DATA_DOCS_INDEX = "gx/uncommitted/data_docs/local_site/index.html"  # inside a GX project dir


@dataclass(frozen=True)
class Catalog:
    """Artifact locations for one config's `paths` section."""

    paths: PathsConfig

    # ---- raw data (the data contract; DVC-tracked) -----------------------------------------
    @property
    def corpus_path(self) -> Path:
        return Path(self.paths.corpus_path)

    @property
    def qa_path(self) -> Path | None:
        """The real QA file, or None when `paths.qa_path` is unset (a corpus-only project)."""
        return Path(self.paths.qa_path) if self.paths.qa_path else None

    @property
    def has_qa(self) -> bool:
        """Whether a real QA file is set and exists (else synthesize mode auto writes questions)."""
        return self.qa_path is not None and self.qa_path.is_file()

    @property
    def qa_label(self) -> str:
        """The QA file as messages name it: its path, or that `paths.qa_path` is unset."""
        return str(self.qa_path) if self.qa_path is not None else "paths.qa_path (unset)"

    # ---- reports (one folder per stage) ------------------------------------------------------
    @property
    def reports_dir(self) -> Path:
        return Path(self.paths.reports_dir)

    def stage_dir(self, stage: str) -> Path:
        """reports/<stage>/: what a stage reports (metrics, summaries, decisions)."""
        return self.reports_dir / stage

    def stage_metrics_path(self, stage: str) -> Path:
        """reports/<stage>/metrics.json: timings and sizes (a DVC metrics file, never a dep)."""
        return self.stage_dir(stage) / "metrics.json"

    def stage_loss_path(self, stage: str) -> Path:
        """reports/<stage>/loss.json: a training stage's loss per step (a DVC plot, never a dep)."""
        return self.stage_dir(stage) / "loss.json"

    @property
    def validation_dir(self) -> Path:
        return self.stage_dir("validation")

    @property
    def validation_summary_path(self) -> Path:
        return self.validation_dir / "summary.json"

    @property
    def data_docs_path(self) -> Path:
        return self.validation_dir / DATA_DOCS_INDEX

    @property
    def validation_metrics_path(self) -> Path:
        return self.validation_dir / "metrics.json"

    # ---- synthesized questions -----------------------------------------------------------------
    @property
    def synthetic_path(self) -> Path:
        """data/prepared/synthetic.jsonl: questions written from the corpus (QA contract rows)."""
        return self.prepared_dir / "synthetic.jsonl"

    @property
    def synthetic_cache_path(self) -> Path:
        """Generated pairs per chunk content key, reused when a chunk is unchanged (not versioned)."""
        return self.prepared_dir / "synthetic_cache.jsonl"

    @property
    def synthesize_dir(self) -> Path:
        return self.stage_dir("synthesize")

    @property
    def synthesize_summary_path(self) -> Path:
        """reports/synthesize/summary.json: mode, method and what each filter removed."""
        return self.synthesize_dir / "summary.json"

    # ---- prepared data -----------------------------------------------------------------------
    @property
    def prepared_dir(self) -> Path:
        return Path(self.paths.prepared_dir)

    @property
    def chunks_path(self) -> Path:
        return self.prepared_dir / "chunks.jsonl"

    @property
    def train_qa_path(self) -> Path:
        return self.prepared_dir / "train_qa.jsonl"

    @property
    def eval_qa_path(self) -> Path:
        return self.prepared_dir / "eval_qa.jsonl"

    # ---- models ------------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        """Converted/built model copies and registry downloads (a cache, not versioned)."""
        return Path(self.paths.models_dir)

    @property
    def registry_cache_dir(self) -> Path:
        return self.models_dir / "registry"

    @property
    def retriever_adapter_dir(self) -> Path:
        return Path(self.paths.adapters_dir) / "retriever"

    @property
    def retriever_sources_dir(self) -> Path:
        """Adapters trained on one question source alone (real/, synthetic/) + sources.json."""
        return Path(self.paths.adapters_dir) / "retriever_sources"

    @property
    def generator_adapter_dir(self) -> Path:
        return Path(self.paths.adapters_dir) / "generator"

    @property
    def work_dirs(self) -> tuple[Path, ...]:
        """Where stages publish through temp names (searched for what a killed run left)."""
        return (self.prepared_dir, self.reports_dir, self.models_dir, self.registry_cache_dir,
                Path(self.paths.adapters_dir))

    # ---- index -------------------------------------------------------------------------------
    @property
    def index_uri(self) -> str:
        return self.paths.index_uri

    @property
    def index_info_path(self) -> Path:
        """reports/index/index.json: the table and version each retriever's vectors are in."""
        return self.stage_dir("index") / "index.json"

    # ---- evaluate, promote, reindex ----------------------------------------------------------
    @property
    def evaluate_dir(self) -> Path:
        return self.stage_dir("evaluate")

    @property
    def evaluate_metrics_path(self) -> Path:
        return self.stage_metrics_path("evaluate")

    @property
    def per_question_path(self) -> Path:
        """reports/evaluate/per_question.json: every question's scores (promote pairs on them)."""
        return self.evaluate_dir / "per_question.json"

    @property
    def retrieval_plot_path(self) -> Path:
        """reports/evaluate/plots/retrieval.json: one row per retrieval method (a DVC plot)."""
        return self.evaluate_dir / "plots" / "retrieval.json"

    @property
    def answers_plot_path(self) -> Path:
        """reports/evaluate/plots/answers.json: one row per answer setup (a DVC plot)."""
        return self.evaluate_dir / "plots" / "answers.json"

    @property
    def promote_dir(self) -> Path:
        return self.stage_dir("promote")

    @property
    def reindex_dir(self) -> Path:
        return self.stage_dir("reindex")

    # ---- serving -----------------------------------------------------------------------------
    @property
    def query_log_dir(self) -> Path:
        """The query log of `tunedex serve`: queries-YYYY-MM-DD.jsonl, append-only."""
        return Path(self.paths.logs_dir) / "queries"


    # ---- monitoring --------------------------------------------------------------------------
    @property
    def monitor_dir(self) -> Path:
        """reports/monitor/: the monitor's report, history, state and the harvested questions."""
        return self.stage_dir("monitor")

    @property
    def monitor_state_path(self) -> Path:
        """Where the monitor's cursor (last run) and last trigger are kept between runs."""
        return self.monitor_dir / "state.json"

    @property
    def monitor_history_path(self) -> Path:
        """One JSON line per monitor run: the metrics as a series over time."""
        return self.monitor_dir / "history.jsonl"

    @property
    def review_path(self) -> Path:
        """Served questions proposed as training data, waiting for a person's review."""
        return self.monitor_dir / "review.jsonl"
