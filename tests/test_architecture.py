"""The architecture, checked from the source: three layers, imports point down, no cycles, and
dvc.yaml lists every module each stage runs. (Its own AST walk: it does not trust tasks/lib/stages.py.)"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGE_NAMES = ("validate", "synthesize", "prepare", "train_retriever", "index", "train_generator", "evaluate",
               "promote", "reindex", "monitor")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted((REPO / "tasks").rglob("*.py"))}
STAGES = {f"tasks.{n}" for n in STAGE_NAMES}
LIBRARY = {m for m in MODULES if m.startswith("tasks.lib")}


def imports_of(path: Path) -> set[str]:
    """tasks.*/flows.* modules a file imports anywhere (top level and inside functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in ("tasks", "flows")}


def project_imports(module: str) -> set[str]:
    """The project modules (files) a module imports."""
    found = set()
    for name in imports_of(MODULES[module]):
        if name in MODULES:
            found.add(name)
        elif name.split(".")[0] == "flows":
            found.add(name)
    return found - {module}


def test_every_stage_module_exists_and_the_library_is_the_rest():
    assert STAGES <= set(MODULES)
    assert set(MODULES) == STAGES | LIBRARY | {"tasks"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stages_import_only_the_library(stage):
    bad = {m for m in project_imports(stage) if m not in LIBRARY}
    assert not bad, f"{stage} imports {sorted(bad)}: a stage may import only tasks.lib"


@pytest.mark.parametrize("module", sorted(LIBRARY))
def test_the_library_never_imports_a_stage_or_a_flow(module):
    bad = {m for m in project_imports(module) if m in STAGES or m.startswith("flows")}
    assert not bad, f"{module} imports {sorted(bad)}: the library never imports a stage or flow"


def test_no_import_cycles():
    graph = {m: project_imports(m) & set(MODULES) for m in MODULES}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = path[path.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def closure(module: str) -> set[str]:
    """Files a module runs: itself, its packages' __init__ and its imports, transitively."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        parts = m.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name in MODULES and name not in seen:
                seen.add(name)
                todo.extend(project_imports(name) & set(MODULES))
    return {str(MODULES[m].relative_to(REPO)) for m in seen}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(DVC))
def test_dvc_deps_cover_every_module_a_stage_runs(stage):
    deps = [next(iter(d)) if isinstance(d, dict) else d for d in DVC[stage]["deps"]]
    missing = sorted(p for p in closure(f"tasks.{stage}") if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage} runs {missing} but does not list them"


def test_dvc_yaml_is_rendered_from_the_stage_table():
    """dvc.yaml = `tunedex dvc-yaml` output: editing the table or an import must re-render it."""
    from tasks.lib.catalog import Catalog
    from tasks.lib.config import load_config
    from tasks.lib.stages import dvc_yaml_config, render_dvc_yaml

    config = dvc_yaml_config(REPO / "dvc.yaml")
    raw = yaml.safe_load((REPO / config).read_text())
    rendered = render_dvc_yaml(Catalog(load_config(REPO / config).paths), config, raw, REPO)
    assert rendered == (REPO / "dvc.yaml").read_text(), "run `tunedex dvc-yaml` and commit dvc.yaml"


def test_flow_steps_are_the_dvc_stages_plus_promote():
    from flows.pipeline import run_stages

    called = [n.func.id for n in ast.walk(ast.parse(inspect.getsource(run_stages)))
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in
              (*DVC, "promote")]
    assert called == [*DVC, "promote"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_functions_take_sections_not_the_whole_config(stage):
    import importlib

    from tasks.lib.config import Config

    module = importlib.import_module(stage)
    for name, fn in inspect.getmembers(module, inspect.isfunction):
        if fn.__module__ != stage:
            continue
        hints = {k: v for k, v in fn.__annotations__.items() if k != "return"}
        assert not any(h in (Config, "Config") for h in hints.values()), \
            f"{stage}.{name} takes the whole Config; pass its section and the StageContext"


@pytest.mark.parametrize("module", sorted(STAGES | LIBRARY - {"tasks.lib.catalog",
                                                              "tasks.lib.config",
                                                              "tasks.lib.context"}))
def test_artifact_paths_come_from_the_catalog(module):
    """Only the catalog reads `paths.*`: nothing else joins artifact locations."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    reads = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "paths"
             and not (isinstance(n.value, ast.Name) and n.value.id == "self")]
    allowed = {"tasks.lib.registry", "tasks.lib.tracking", "tasks.lib.release_skip",
               "tasks.lib.incremental"}  # they build Catalog(cfg.paths) from a whole config
    if module in allowed:
        text = MODULES[module].read_text(encoding="utf-8").splitlines()
        reads = [n for n in reads if "Catalog(" not in text[n - 1] and "data_md5s(" not in text[n - 1]]
    assert not reads, f"{module} reads .paths at lines {reads}: ask the catalog"
