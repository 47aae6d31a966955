"""The stage table: what each stage reads (config keys, files, code) and writes, in one place.

`dvc.yaml` is rendered from it (`tunedex dvc-yaml`), so every stage lists exactly the params it
reads and the code it runs: its own module plus the library modules it imports, found from the
AST (the import closure). The flow asks DVC about the same stages before running each one
(tasks/lib/incremental.py), so the flow and `dvc repro` share one record: dvc.lock.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository (tasks/lib/stages.py -> ../..)


def _none(_cat: Any) -> list[Path]:
    return []


def _no_plots(_cat: Any) -> dict[Path, dict[str, str]]:
    return {}


@dataclass(frozen=True)
class StageSpec:
    name: str  # = dvc.yaml key = tasks/<name>.py = MLflow nested run = Prefect task
    sections: tuple[str, ...]  # config sections the stage function receives (DVC params)
    keys: tuple[str, ...]  # single config keys it reads through the context (DVC params)
    deps: Callable[[Any], list[Path]]  # data files it reads (from the catalog)
    outs: Callable[[Any], list[Path]]  # what later stages read: a function of the inputs
    cached: bool  # outs go to the DVC cache (data, adapters) or stay in git (small JSON)
    reports: Callable[[Any], list[Path]]  # terminal reports (may hold timings; nothing reads them)
    metrics: Callable[[Any], list[Path]]  # timings, sizes, counts (DVC metrics; never a dep)
    plots: Callable[[Any], dict[Path, dict[str, str]]] = _no_plots  # file -> chart (DVC plots)

    @property
    def module(self) -> str:
        return f"tasks.{self.name}"


def _qa(cat: Any) -> list[Path]:
    """The real QA file as a dependency, where there is one (a corpus-only project has none:
    synthesize writes its questions, and DVC refuses a missing dependency)."""
    return [cat.qa_path] if cat.has_qa else []


def _metrics(stage: str) -> Callable[[Any], list[Path]]:
    return lambda cat: [cat.stage_metrics_path(stage)]


def _loss_plot(stage: str) -> Callable[[Any], dict[Path, dict[str, str]]]:
    return lambda cat: {cat.stage_loss_path(stage): {
        "template": "linear", "x": "step", "y": "loss", "title": f"{stage}: training loss"}}


def _bars(x: str, y: Any) -> dict[str, Any]:
    """A horizontal bar per `y` (method, setup), its length `x`: DVC's bar_horizontal template."""
    return {"template": "bar_horizontal", "x": x, "y": y}


def _evaluate_plots(cat: Any) -> dict[Path, dict[str, str]]:
    return {cat.retrieval_plot_path: {**_bars("ndcg@10", "method"),
                                      "title": "nDCG@10 per retrieval method"},
            cat.answers_plot_path: {**_bars("token_f1", "setup"),
                                    "title": "token F1 per answer setup"}}


def top_level_plots(cat: Any) -> list[dict[str, Any]]:
    """The second chart of each evaluate plot file (a stage's plots entry draws one field; a
    top-level plot's id is its title)."""
    return [{"Recall@10 per retrieval method": _bars("recall@10",
                                                     {str(cat.retrieval_plot_path): "method"})},
            {"ROUGE-L per answer setup": _bars("rouge_l", {str(cat.answers_plot_path): "setup"})}]


STAGES: tuple[StageSpec, ...] = (
    StageSpec("validate", ("validate", "pii"), (),
              lambda c: [c.corpus_path, *_qa(c)], lambda c: [c.validation_summary_path], False,
              _none, lambda c: [c.validation_metrics_path]),
    StageSpec("synthesize", ("synthesize", "prepare", "pii", "validate"),
              ("project.seed", "models.retriever_id", "models.generator_id"),
              lambda c: [c.corpus_path, *_qa(c), c.validation_summary_path],
              lambda c: [c.synthetic_path], True, lambda c: [c.synthesize_summary_path],
              _metrics("synthesize")),
    StageSpec("prepare", ("prepare", "pii", "synthesize"), ("project.seed", "models.retriever_id"),
              lambda c: [c.corpus_path, *_qa(c), c.validation_summary_path, c.synthetic_path],
              lambda c: [c.chunks_path, c.train_qa_path, c.eval_qa_path], True, _none,
              _metrics("prepare")),
    StageSpec("train_retriever", ("train_retriever",), ("project.seed", "models.retriever_id"),
              lambda c: [c.chunks_path, c.train_qa_path],
              lambda c: [c.retriever_adapter_dir, c.retriever_sources_dir], True, _none,
              _metrics("train_retriever"), _loss_plot("train_retriever")),
    StageSpec("index", ("index",), ("models.retriever_id", "paths.index_uri"),
              lambda c: [c.chunks_path, c.retriever_adapter_dir, c.retriever_sources_dir],
              lambda c: [c.index_info_path],
              False, _none, _metrics("index")),
    StageSpec("train_generator", ("train_generator", "index"),
              ("project.seed", "models.generator_id", "models.retriever_id"),
              lambda c: [c.chunks_path, c.train_qa_path, c.index_info_path,  # chunks: RAFT
                         c.retriever_adapter_dir],
              lambda c: [c.generator_adapter_dir], True, _none, _metrics("train_generator"),
              _loss_plot("train_generator")),
    StageSpec("evaluate", ("evaluate", "generate", "index"),
              ("project.seed", "models.generator_id", "models.retriever_id"),
              lambda c: [c.train_qa_path, c.eval_qa_path, c.index_info_path,  # train: the choice
                         c.retriever_adapter_dir, c.retriever_sources_dir,
                         c.generator_adapter_dir],
              lambda c: [c.per_question_path], False,  # promote pairs releases on it
              lambda c: [c.evaluate_dir / n for n in ("retrieval.json", "retrieval.md",
                                                       "answers.json", "scoreboard.md",
                                                       "report.html")],
              lambda c: [c.evaluate_metrics_path], _evaluate_plots),
)
BY_NAME = {s.name: s for s in STAGES}
DVC_STAGES = tuple(s.name for s in STAGES)  # the file-producing stages, in order
# Not in dvc.yaml: promote changes the registry, reindex the champion's table (not files DVC
# tracks). They are stages all the same: one module each, importing only the library.
REGISTRY_STAGES = ("promote", "reindex")
FLOW_STAGES = (*DVC_STAGES, "promote")  # the pipeline flow's steps, in order
ALL_STAGES = (*DVC_STAGES, *REGISTRY_STAGES)

# ---- the import closure ---------------------------------------------------------------------


def module_path(module: str, root: Path = ROOT) -> Path:
    """tasks.lib.search -> <root>/tasks/lib/search.py (a package -> its __init__.py)."""
    base = root.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def imported_modules(path: Path, package: str = "tasks") -> set[str]:
    """Every `package.*` module a file imports, at the top or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == package}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == package:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from tasks.lib import x`
    return found


def import_closure(module: str, root: Path = ROOT) -> list[str]:
    """The modules `module` runs: itself, its parent packages and everything it imports, transitively
    (as repository-relative file paths, sorted)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            candidate = ".".join(parts[:i])
            if candidate in seen or not module_path(candidate, root).is_file():
                continue
            seen.add(candidate)
            todo.extend(imported_modules(module_path(candidate, root)))
    return sorted(str(module_path(m, root).relative_to(root)) for m in seen)


# ---- dvc.yaml ---------------------------------------------------------------------------------


def present_keys(raw: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """The dotted keys (or whole sections) a config file sets; DVC refuses params it lacks."""
    out = []
    for key in keys:
        node: Any = raw
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            out.append(key)
    return out


def stage_entry(spec: StageSpec, cat: Any, config_path: str, raw: dict[str, Any],
                root: Path = ROOT) -> dict[str, Any]:
    """One dvc.yaml stage: cmd, deps (data + code closure), params, outs, metrics, plots."""
    entry: dict[str, Any] = {
        "cmd": f"tunedex stage {spec.name} --config {config_path}",
        "deps": [str(p) for p in spec.deps(cat)] + import_closure(spec.module, root)}
    params = present_keys(raw, spec.keys + spec.sections)
    if params:
        entry["params"] = [{config_path: params}]
    outs = [str(p) if spec.cached else {str(p): {"cache": False}} for p in spec.outs(cat)]
    outs += [{str(p): {"cache": False}} for p in spec.reports(cat)]
    if outs:
        entry["outs"] = outs
    entry["metrics"] = [{str(p): {"cache": False}} for p in spec.metrics(cat)]
    plots = [{str(p): {"cache": False, **chart}} for p, chart in spec.plots(cat).items()]
    if plots:  # in git like the metrics; the chart's fields make `dvc plots show` draw it
        entry["plots"] = plots
    return entry


DVC_HEADER = ("# Rendered by `tunedex dvc-yaml --config {config}` from tasks/lib/stages.py: do not edit.\n"
              "# Each stage runs the same function as the Prefect flow's step (`tunedex stage "
              "<name>`); deps list\n# its data and every module it imports, params exactly the "
              "config keys it reads.\n")


def render_dvc_yaml(cat: Any, config_path: str, raw: dict[str, Any], root: Path = ROOT) -> str:
    """The whole dvc.yaml for one config file."""
    import yaml

    stages = {s.name: stage_entry(s, cat, config_path, raw, root) for s in STAGES}
    body = yaml.safe_dump({"stages": stages, "plots": top_level_plots(cat)}, sort_keys=False,
                          width=100)
    return DVC_HEADER.format(config=config_path) + body


def dvc_yaml_config(dvc_yaml: Path) -> str | None:
    """The config file the stages of a dvc.yaml run with (from its first cmd), or None."""
    import yaml

    if not dvc_yaml.is_file():
        return None
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    for entry in stages.values():
        words = str(entry.get("cmd", "")).split()
        if "--config" in words and words.index("--config") + 1 < len(words):
            return words[words.index("--config") + 1]
    return None
