"""Frozen pydantic config loaded from YAML; unknown keys and wrong types name their key path."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from tasks.lib.errors import ConfigError

DEFAULT_CONFIG_PATH = "configs/cpu.yaml"


class Section(BaseModel):
    """A config section: frozen, unknown keys forbidden."""

    model_config = ConfigDict(frozen=True, extra="forbid")


Precision = Literal["auto", "fp32", "bf16"]
GenerationPrecision = Literal["auto", "fp32", "bf16", "mixed"]  # mixed: bf16 matmuls, fp32 rest


class TrainPrecision(Section):
    """A training section's numeric precision: `precision` (fp32 | bf16 | auto: bf16 autocast
    where the hardware has native bf16, tasks/lib/precision.py). The older `bf16: true|false`
    switch is still read: true as auto (it meant bf16 where the GPU has it), false as fp32."""

    @model_validator(mode="before")
    @classmethod
    def _legacy_bf16(cls, data: Any) -> Any:
        if isinstance(data, dict) and "bf16" in data:
            if "precision" in data:
                raise ValueError("set precision (auto | fp32 | bf16), not both it and bf16")
            legacy = data["bf16"]
            if not isinstance(legacy, bool):
                raise ValueError(f"bf16 must be true or false (or use precision: auto | fp32 | "
                                 f"bf16), got {legacy!r}")
            data = {k: v for k, v in data.items() if k != "bf16"}
            data["precision"] = "auto" if legacy else "fp32"
        return data


class ProjectConfig(Section):
    name: str = "tunedex"  # MLflow experiment name and Prefect flow-run prefix
    profile: Literal["smoke", "cpu", "gpu"] = "cpu"  # which profile this file is
    seed: int = 13  # one seed for splits, sampling and training


class PathsConfig(Section):
    corpus_path: str = "data/demo/corpus.jsonl"  # raw documents (data contract)
    # raw question/answer pairs (data contract); null: none, questions come from the corpus
    qa_path: str | None = "data/demo/qa.jsonl"
    prepared_dir: str = "data/prepared"  # chunks + train/eval splits written by `prepare`
    reports_dir: str = "reports"  # validation reports, metrics, scoreboard
    models_dir: str = ".models"  # converted / built model copies (cache, not versioned)
    adapters_dir: str = "models"  # trained LoRA adapters (DVC outputs): <dir>/retriever, ...
    index_uri: str = "lancedb"  # LanceDB URI: a local directory or s3://bucket/path
    logs_dir: str = "logs"  # what serving writes: the query log (<logs_dir>/queries/*.jsonl)


DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


class TrackingConfig(Section):
    # Any MLflow tracking URI (http://, databricks, ...). Unset: $MLFLOW_TRACKING_URI, else
    # sqlite:///mlflow.db (which one applied is logged with the parent run).
    tracking_uri: str = DEFAULT_TRACKING_URI
    artifact_location: str | None = None  # None: MLflow default (./mlartifacts beside sqlite)
    registry_uri: str | None = None  # model registry; unset: $MLFLOW_REGISTRY_URI, else the tracking store
    _source: str = PrivateAttr("default")  # where tracking_uri came from: config | env | default


class ModelsConfig(Section):
    retriever_id: str = "sentence-transformers/all-MiniLM-L6-v2"  # HF id or local dir
    generator_id: str = "HuggingFaceTB/SmolLM2-135M-Instruct"  # HF id or local dir (causal LM)
    allow_download: bool = False  # True: fetch from the hub when not cached (needs network)


class ValidateConfig(Section):
    min_documents: int = Field(1, ge=1)  # corpus row-count floor
    max_documents: int = Field(10_000_000, ge=1)  # corpus row-count ceiling
    min_text_chars: int = Field(1, ge=1)  # shortest acceptable document text
    max_text_chars: int = Field(1_000_000, ge=1)  # longest acceptable document text (chars)
    min_questions: int = Field(1, ge=1)  # qa row-count floor
    max_question_chars: int = Field(2_000, ge=1)  # longest acceptable question
    examples: int = Field(5, ge=1, le=50)  # example values shown per failed expectation


class PrepareConfig(Section):
    eval_fraction: float = Field(0.2, gt=0, lt=1)  # share of qa without `split` sent to eval
    chunk_tokens: int = Field(200, ge=16)  # retriever tokens per chunk (without special tokens)
    chunk_overlap: int = Field(32, ge=0)  # tokens shared by consecutive chunks

    @model_validator(mode="after")
    def _overlap_below_size(self) -> PrepareConfig:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        return self


PiiKind = Literal["email", "phone", "card", "iban"]


class PiiConfig(Section):
    """Personal data in corpus and QA text (tasks/lib/pii.py); validate counts it, prepare
    redacts it under `redact`. Serving's query log is always redacted, whatever the policy."""

    # warn: count per field, report and log the counts, change nothing (the demo: its corpus
    # quotes the company's own 0800 support lines, which a detector cannot tell from a
    # customer's number); redact: replace with [EMAIL]/[PHONE]/[CARD]/[IBAN] before prepare
    # chunks or writes anything; fail: validation fails, naming file, line, field and kind.
    policy: Literal["warn", "redact", "fail"] = "warn"
    kinds: tuple[PiiKind, ...] = ("email", "phone", "card", "iban")  # what is looked for
    # ISO 3166 regions whose national formats (0800 414 2290, (212) 555-0123) count as phone
    # numbers; a number written with + or 00 is found whatever the region. More regions, more
    # lookalikes: a 10-digit order number is a valid US phone number.
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR")
    # valid: any grouping of a valid number; strict_grouping: grouped as the country writes it
    # too (misses "+49 30 9018 20", no longer takes ticket "2024-000123" for a US number)
    phone_leniency: Literal["valid", "strict_grouping"] = "valid"
    examples: int = Field(5, ge=1, le=50)  # findings named in the failure message (policy fail)

    @model_validator(mode="after")
    def _known_regions(self) -> PiiConfig:
        import phonenumbers

        unknown = [r for r in self.phone_regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"phone_regions: unknown region(s) {unknown}; use ISO 3166 codes "
                             "such as GB (not UK), US, DE")
        return self


Device = Literal["auto", "cpu", "cuda"]

SynthMode = Literal["auto", "off", "add", "only"]


class SynthesizeConfig(Section):
    """Training questions written from the corpus alone (tasks/synthesize.py), filtered, for prepare."""

    # auto: off when paths.qa_path exists, only when it does not; off: write nothing; add: the
    # synthetic questions join the real train questions; only: train on them alone (real QA, if
    # any, is used for eval only; without real QA, eval questions come from held-out documents)
    mode: SynthMode = "auto"
    method: Literal["lm", "ict"] = "lm"  # lm: the generator writes question + answer; ict: one
    # sentence of the chunk is the question, the rest its answer (inverse cloze; no model, seconds)
    generator_id: str | None = None  # HF id or local dir of an instruct model; None: models.generator_id
    questions_per_chunk: int = Field(2, ge=1, le=10)  # asked of the generator per chunk (ict: sentences)
    max_chunks: int = Field(0, ge=0)  # seeded sample of chunks to question; 0: every chunk
    min_chunk_words: int = Field(25, ge=1)  # shorter chunks are skipped (too little to ask about)
    min_question_words: int = Field(3, ge=1)  # length bounds of a kept question
    max_question_words: int = Field(40, ge=1)
    max_question_chars: int = Field(300, ge=10)
    max_copy_share: float = Field(0.6, gt=0, le=1)  # lm: drop a question whose word 4-grams are
    # found in the chunk above this share (a copied sentence, not a question a user would type)
    min_answer_support: float = Field(0.5, ge=0, le=1)  # lm: share of answer words the chunk holds
    max_answer_words: int = Field(60, ge=1)  # ict: the answer is cut to this many words
    roundtrip_k: int = Field(3, ge=0)  # keep a question only if the base retriever ranks its
    # chunk in the top k of all chunks; 0: no round-trip check
    eval_fraction: float = Field(0.2, gt=0, lt=1)  # without real QA: share of documents whose
    # synthetic questions become the eval set (never trained on)
    batch_size: int = Field(8, ge=1)  # prompts per generate call
    max_new_tokens: int = Field(128, ge=16)  # generated tokens per chunk (all its questions)
    device: Device = "auto"

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, mode: Any) -> Any:
        """YAML 1.1 reads a bare `off` (in a file or a --set value) as false: it means off."""
        return "off" if mode is False else mode

    @model_validator(mode="after")
    def _bounds_in_order(self) -> SynthesizeConfig:
        if self.min_question_words > self.max_question_words:
            raise ValueError("min_question_words must not exceed max_question_words")
        return self


class TrainRetrieverConfig(TrainPrecision):
    epochs: float = Field(1.0, gt=0)  # passes over the (question, chunk) pairs
    max_steps: int = -1  # cap on optimizer steps; -1: no cap (epochs decide)
    batch_size: int = Field(32, ge=2)  # pairs per step; the other positives are the negatives
    learning_rate: float = Field(2e-4, gt=0)  # LoRA tolerates ~10x the full fine-tuning rate
    warmup_ratio: float = Field(0.1, ge=0, lt=1)  # share of steps with linear warm-up
    max_seq_length: int = Field(256, ge=16)  # tokens per text during training
    lora_r: int = Field(16, ge=1)  # adapter rank
    lora_alpha: int = Field(32, ge=1)  # adapter scaling numerator (scale = alpha / r)
    lora_dropout: float = Field(0.1, ge=0, lt=1)  # dropout on the adapter input
    target_modules: tuple[str, ...] = ("query", "key", "value", "dense")  # BERT-style names
    hard_negatives: int = Field(0, ge=0)  # negatives mined with the base model per question
    device: Device = "auto"  # auto: cuda when available
    # bf16 autocast while training: fp32 | bf16 | auto (bf16 on a CUDA GPU with bf16 or a CPU
    # with AVX-512 BF16/AMX); measured by bench/train_precision.py
    precision: Precision = "auto"
    # With real and synthetic train questions (synthesize.mode add), also train one adapter on
    # each source alone: the scoreboard's "LoRA on real vs on synthetic" rows (3x the training)
    compare_sources: bool = True


class TrainGeneratorConfig(TrainPrecision):
    epochs: float = Field(1.0, gt=0)  # passes over the train examples
    max_steps: int = -1  # cap on optimizer steps; -1: no cap
    max_examples: int = Field(0, ge=0)  # cap on train examples (0: all)
    batch_size: int = Field(8, ge=1)  # examples per optimizer step
    learning_rate: float = Field(2e-4, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    max_seq_length: int = Field(384, ge=32)  # prompt + answer tokens; context is cut first
    context_share: float = Field(0.5, ge=0, le=1)  # share of examples given retrieved context
    context_k: int = Field(2, ge=1)  # retrieved chunks per example with context
    # retrieved: the top context_k hits; raft: the answer's own chunk w.p. raft_oracle_share
    # among distractors of other documents, at a random position (tasks/lib/raft.py)
    context_source: Literal["retrieved", "raft"] = "retrieved"
    raft_oracle_share: float = Field(0.8, ge=0, le=1)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = ("all-linear",)  # peft shorthand: every linear layer
    # batch examples of similar length together (less padding: with and without context differ
    # ~5x in length). Off: faster, but it lowered the demo's finetuned answers (README)
    group_by_length: bool = False
    # cut each batch into micro-batches of similar length, gradients accumulated into one step:
    # the same update as the whole batch (same examples, same loss normaliser), less padding
    length_split: bool = True
    split_overhead_tokens: int = Field(32, ge=0)  # padded slots one more micro-batch costs
    device: Device = "auto"
    precision: Precision = "auto"  # bf16 autocast while training, as train_retriever's


class GenerateConfig(Section):
    max_new_tokens: int = Field(48, ge=1)  # greedy decoding budget per answer
    batch_size: int = Field(8, ge=1)  # prompts per generate call (left padding)
    context_k: int = Field(3, ge=1)  # retrieved chunks given to rag/hybrid
    max_context_tokens: int = Field(512, ge=16)  # context budget; cut before the question
    device: Device = "auto"
    # generator inference (evaluate, serve): fp32 | bf16 | mixed (bf16 matrix products, fp32
    # activations) | auto (mixed on a CPU with AVX-512 BF16/AMX, bf16 on a bf16 CUDA GPU, else
    # fp32); measured by bench/generator_precision.py
    precision: GenerationPrecision = "fp32"


class IndexConfig(Section):
    batch_size: int = Field(64, ge=1)  # chunks per encode call
    ann_min_rows: int = Field(50_000, ge=1)  # build an ANN index once a table has this many rows
    ann_partitions: int = Field(0, ge=0)  # IVF partitions of the IVF-HNSW-SQ index; 0: 1 per 1M rows
    nprobes: int = Field(20, ge=1)  # IVF partitions searched per query (ANN only)
    refine_factor: int = Field(10, ge=1)  # re-rank k x this candidates exactly (ANN only)
    ef: int = Field(0, ge=0)  # HNSW candidates per query, at least limit x refine; 0: lancedb's
    device: Device = "auto"
    # retriever inference (index, evaluate, reindex, serve): fp32 | bf16 | auto (bf16 on a CPU
    # with AVX-512 BF16/AMX, else fp32); measured by bench/retriever_precision.py
    precision: Precision = "auto"
    shards: int = Field(1, ge=1)  # >1: embed new/changed chunks in this many parallel shards
    task_runner: Literal["thread", "dask"] = "thread"  # where shards run (dask: prefect-dask)
    dask_address: str | None = None  # an existing Dask scheduler (tcp://host:8786); None: local


class EvaluateConfig(Section):
    chunk_k: int = Field(50, ge=10)  # chunks retrieved per query before collapsing to documents
    rrf_k: int = Field(60, ge=1)  # reciprocal-rank-fusion constant of fusion (and fusion_native)
    # train questions (seeded slice of train_qa.jsonl, never eval) the retrieval method is chosen
    # on; 0: all of them
    choice_questions: int = Field(50, ge=0)
    bootstrap: int = Field(1000, ge=100)  # bootstrap resamples for 95% intervals
    max_questions: int = Field(0, ge=0)  # cap on eval questions; 0: all
    answer_questions: int = Field(0, ge=0)  # cap on eval questions for answer setups; 0: all


class GateRule(Section):
    """One gate metric: the candidate against the champion, and an absolute bound."""

    metric: str  # dotted key of reports/evaluate/metrics.json, e.g. answers.hybrid.token_f1;
    # retrieval.chosen.<m>: the method evaluate chose (tasks/lib/choice.py)
    higher_is_better: bool = True  # False for latencies
    min_improvement: float | None = None  # must beat the champion by at least this much
    max_regression: float | None = Field(None, ge=0)  # may trail the champion by at most this
    relative: bool = False  # improvement/regression as a fraction of the champion's value
    floor: float | None = None  # absolute bound, always applied: minimum (or maximum if lower wins)

    @field_validator("metric")
    @classmethod
    def _current_name(cls, metric: str) -> str:
        """retrieval.hybrid.* (the fusion's old name) is accepted as retrieval.fusion.*, warned."""
        if metric.startswith("retrieval.hybrid."):
            new = "retrieval.fusion." + metric[len("retrieval.hybrid."):]
            logging.getLogger(__name__).warning(
                "promote.gate: metric %s is deprecated (the BM25 + vector fusion is now called "
                "fusion): read as %s", metric, new)
            return new
        return metric

    @model_validator(mode="after")
    def _something_to_check(self) -> GateRule:
        if self.min_improvement is None and self.max_regression is None and self.floor is None:
            raise ValueError(f"gate rule for {self.metric} sets none of min_improvement, "
                             "max_regression, floor")
        return self


DEFAULT_GATE = (
    GateRule(metric="answers.hybrid.token_f1", min_improvement=0.01, floor=0.02),
    GateRule(metric="retrieval.chosen.ndcg@10", max_regression=0.01, floor=0.1),
    GateRule(metric="retrieval.chosen.p95_ms", higher_is_better=False, max_regression=0.5,
             relative=True),
)


class PromoteConfig(Section):
    retriever_model: str = "tunedex-retriever"  # registered model names
    generator_model: str = "tunedex-generator"
    rag_model: str = "tunedex-rag"  # the whole release as one models-from-code pyfunc
    keep_releases: int = Field(3, ge=1)  # `tunedex gc` keeps the tables of the newest N versions
    gate: tuple[GateRule, ...] = DEFAULT_GATE  # every rule must pass to move `champion`
    bootstrap: int = Field(1000, ge=100)  # resamples of the gate's paired intervals (BCa, 95%)
    # Pair on a changed eval set while the questions both releases answered alike are at least
    # this share of the current ones; below it the gate compares point estimates and says so.
    min_shared: float = Field(0.8, gt=0, le=1)
    # Without comparable per-question results, re-score the champion on the current eval set
    # (its adapters and pinned table, the gate's methods and setups: costs generation time).
    rescore: bool = True


class ScheduleConfig(Section):
    retrain_cron: str = "0 2 * * *"  # `retrain` deployment: full pipeline, nightly at 02:00
    reindex_cron: str = "0 */4 * * *"  # `reindex` deployment: corpus refresh every 4 hours
    timezone: str = "UTC"  # IANA name the crons are read in
    collision_strategy: Literal["ENQUEUE", "CANCEL_NEW"] = "ENQUEUE"  # a run due while one runs
    skip_unchanged: bool = True  # retrain nothing when data, config and code match the release
    monitor_cron: str = "0 * * * *"  # `monitor` deployment: drift/feedback check, hourly


class LockConfig(Section):
    path: str = ".tunedex.lock"  # one writer at a time: pipeline, reindex, promote, rollback, gc
    on_busy: Literal["wait", "fail"] = "wait"  # wait for the holder, or exit at once saying who
    wait_seconds: float = Field(6 * 3600, ge=0)  # longest wait before giving up (on_busy: wait)


class ServeConfig(Section):
    host: str = "127.0.0.1"  # `tunedex serve` binds here; another address needs a token
    port: int = Field(8000, ge=1, le=65535)
    token: str | None = None  # bearer token required on every request (also $TUNEDEX_SERVE_TOKEN)
    poll_seconds: float = Field(30.0, ge=0)  # check @champion this often; 0: never swap
    batch_window_ms: float = Field(20.0, ge=0)  # /ask requests arriving within this share a batch
    max_batch: int = Field(8, ge=1)  # answers generated per batch at most
    max_question_chars: int = Field(2000, ge=1)  # longer questions/queries get a 422
    max_body_bytes: int = Field(65_536, ge=1024)  # larger request bodies get a 413
    # Per client IP on /search, /ask, /feedback (429 past it): a person on the page sends a few
    # a minute, a script asking one question at a time ~1/s on CPU; 0: no limit.
    rate_limit_per_minute: int = Field(120, ge=0)  # requests per minute a client keeps up
    rate_burst: int = Field(30, ge=1)  # requests a client may send at once before the rate holds
    query_log: bool = True  # append every request to <logs_dir>/queries/ (off: nothing kept)
    retention_days: int = Field(30, ge=0)  # delete query-log days older than this; 0: keep all
    traces: bool = True  # also record a sample of /ask requests as MLflow traces
    trace_sample: float = Field(0.1, ge=0, le=1)  # share of /ask requests traced


class MonitorRule(Section):
    """One trigger rule: a monitor metric above or below a threshold (metrics: README Monitoring)."""

    metric: str  # e.g. drift.p_value, confidence.low_share_low, feedback.down_rate_low
    below: float | None = None  # fires when the metric is below this
    above: float | None = None  # fires when the metric is above this

    @model_validator(mode="after")
    def _one_bound(self) -> MonitorRule:
        if (self.below is None) == (self.above is None):
            raise ValueError(f"monitor rule for {self.metric} needs exactly one of below, above")
        return self


DEFAULT_MONITOR_RULES = (
    MonitorRule(metric="drift.p_value", below=0.01),
    MonitorRule(metric="confidence.low_share_low", above=0.2),
    MonitorRule(metric="feedback.down_rate_low", above=0.5),
)


class MonitorConfig(Section):
    min_questions: int = Field(20, ge=2)  # fewer served questions: "not enough data", no test
    min_feedback: int = Field(10, ge=1)  # fewer rated requests: no feedback rule applies
    max_questions: int = Field(1000, ge=2)  # seeded sample of served/train questions per test
    permutations: int = Field(500, ge=50)  # MMD permutation test resamples (p-value >= 1/(N+1))
    score_floor: float | None = None  # top-1 cosine below this = "low confidence"; None: eval quantile
    floor_quantile: float = Field(0.05, gt=0, lt=1)  # score_floor from this quantile of eval top-1
    examples: int = Field(10, ge=0)  # most-drifted questions shown in the report
    rules: tuple[MonitorRule, ...] = DEFAULT_MONITOR_RULES  # any firing rule triggers a retrain
    cooldown_hours: float = Field(24.0, ge=0)  # no second trigger within this many hours
    deployment: str = "tunedex-pipeline/retrain"  # what a trigger starts (run_deployment)
    harvest_min_score: float | None = None  # top-1 score a harvested question needs; None: eval median


class Config(Section):
    project: ProjectConfig = ProjectConfig()
    paths: PathsConfig = PathsConfig()
    tracking: TrackingConfig = TrackingConfig()
    models: ModelsConfig = ModelsConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    synthesize: SynthesizeConfig = SynthesizeConfig()
    prepare: PrepareConfig = PrepareConfig()
    pii: PiiConfig = PiiConfig()
    train_retriever: TrainRetrieverConfig = TrainRetrieverConfig()
    train_generator: TrainGeneratorConfig = TrainGeneratorConfig()
    index: IndexConfig = IndexConfig()
    generate: GenerateConfig = GenerateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    promote: PromoteConfig = PromoteConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    lock: LockConfig = LockConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def section(self, key: str) -> Any:
        """One section by its YAML key ("validate", "prepare", ...)."""
        return getattr(self, "validate_" if key == "validate" else key)

    def to_dict(self) -> dict[str, Any]:
        """Return the resolved config as plain data, with YAML key names."""
        return self.model_dump(by_alias=True, mode="json")


def _format_error(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid config"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `raw` with dotted-key overrides (`prepare.chunk_tokens`) applied."""
    merged = yaml.safe_load(yaml.safe_dump(raw))  # deep copy of plain data
    for dotted, value in overrides.items():
        node = merged
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted}: '{part}' is not a section")
        node[leaf] = value
    return merged


def parse_config(raw: Any, source: str = "<config>") -> Config:
    """Validate plain data into a frozen Config, naming the key path of any error."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    raw, uri_source = with_tracking_env(raw)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None
    cfg.tracking._source = uri_source
    return cfg


# The user's MLflow URIs, read when this module is first imported: mlflow.set_tracking_uri()
# writes MLFLOW_TRACKING_URI into os.environ, so reading it later would pick up whatever store
# an earlier run in this process used instead of what the user set.
USER_URIS = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}


def with_tracking_env(raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Fill tracking URIs the config leaves unset from MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI
    (as set when the process started); return the data and where tracking_uri comes from
    (config, env or default)."""

    if "tracking" in raw and raw["tracking"] is None:  # a section with only comments
        raw = {k: v for k, v in raw.items() if k != "tracking"}
    tracking = raw.get("tracking")
    tracking = dict(tracking) if isinstance(tracking, dict) else tracking
    if tracking is not None and not isinstance(tracking, dict):
        return raw, "config"  # a malformed section: let validation name it
    tracking = tracking or {}
    source = "config" if tracking.get("tracking_uri") else "default"
    for key, env in (("tracking_uri", "MLFLOW_TRACKING_URI"), ("registry_uri", "MLFLOW_REGISTRY_URI")):
        if not tracking.get(key) and USER_URIS.get(env):
            tracking[key] = USER_URIS[env]
            source = "env" if key == "tracking_uri" else source
    return ({**raw, "tracking": tracking} if tracking else raw), source


def tracking_uri_source(tracking: TrackingConfig) -> str:
    """Which setting gave tracking_uri, for the log line: the config, the environment, the default."""
    return {"config": "from the config", "env": "from MLFLOW_TRACKING_URI",
            "default": "the default"}.get(tracking._source, tracking._source)


def load_config(path: str | Path = DEFAULT_CONFIG_PATH, overrides: dict[str, Any] | None = None) -> Config:
    """Load a YAML config file (plus dotted-key overrides) into a frozen Config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (profiles live in configs/)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if raw is None or raw == {}:  # an empty file is more likely a mistake than a choice
        raise ConfigError(f"{path}: the profile is empty; every default would apply silently. "
                          "Name at least its profile (`project: {profile: cpu}`) or copy "
                          "configs/cpu.yaml")
    overrides = {**(overrides or {}), **hidden_overrides()}
    if overrides:
        raw = apply_overrides(raw or {}, overrides)
    return parse_config(raw, source=str(path))


# Overrides carrying secrets (`--set tracking.tracking_uri=https://u:pw@host`) travel in this
# process's environment, not as flow parameters, which Prefect stores and shows.
HIDDEN_OVERRIDES_ENV = "TUNEDEX_SECRET_OVERRIDES"


def is_secret_override(key: str, value: Any) -> bool:
    """A token/password/secret key, or a value holding URI credentials."""
    from tasks.lib.text import mask_uri

    leaf = key.rsplit(".", 1)[-1].lower()
    secret_key = any(leaf == s or leaf.endswith(f"_{s}") for s in ("token", "password", "secret"))
    return secret_key or (isinstance(value, str) and mask_uri(value) != value)


def hide_secret_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Move secret overrides into this process's environment (load_config still applies them);
    return the others, safe to pass as flow parameters."""
    import json

    secret = {k: v for k, v in overrides.items() if is_secret_override(k, v)}
    if secret:
        os.environ[HIDDEN_OVERRIDES_ENV] = json.dumps({**hidden_overrides(), **secret})
    return {k: v for k, v in overrides.items() if k not in secret}


def hidden_overrides() -> dict[str, Any]:
    """The secret overrides hide_secret_overrides set aside in this process."""
    import json

    text = os.environ.get(HIDDEN_OVERRIDES_ENV)
    return json.loads(text) if text else {}


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `key.path=value` command-line override; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key.path=value")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"override '{key.strip()}': the value {value!r} is not valid YAML "
                          f"({reason}); quote it: --set '{key.strip()}=\"...\"'") from None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested config data into dotted keys (for MLflow params)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


# Section class -> its YAML key (names the params a stage run logs).
SECTION_KEYS = {field.annotation: (field.alias or name) for name, field in Config.model_fields.items()}
