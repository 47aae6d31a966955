"""Serving one release: resolve what to serve, load it once, then search and answer many times.

Usage (the CLI and the HTTP server, flows/serve.py):
    served = resolve_served(registry_ref(cfg), cat, cfg.models, "champion")
    release = LoadedRelease(served, ServingSections(cfg.models, cfg.generate, cfg.evaluate,
                                                    cfg.index), cat)
    release.search("which cards?", "fusion", k=5)  # mode None: the release's chosen method
    release.ask("Which cards do you take?", "hybrid").text

A release is served whole: the retriever and generator adapters one promotion registered, and
the LanceDB table version pinned on them; never "whatever table is newest". "local" serves the
last index run's tables and the adapters on disk (before promotion). Models and the table load
on first use and then stay loaded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.lib.errors import ConfigError, ServingError
from tasks.lib.scoreboard import SETUPS
from tasks.lib.search import MODES

LOCAL = "local"  # the release of the last index run and the adapters on disk
ROLES = ("candidate", "base")  # the two retrievers a local index run builds tables for
NOT_HELD = object()  # LoadedRelease.held_vectors' "searched by LanceDB" (a part is never None)


@dataclass(frozen=True)
class ServedRelease:
    """What one release serves: the pinned table and both models (base id + LoRA adapter)."""

    label: str  # how the release is named to a user
    release: int | None  # the retriever's registered version; None for "local"
    index_uri: str  # LanceDB URI
    table: str
    table_version: int
    retriever_base: str  # hub id or local directory
    retriever_adapter: Path | None  # None: the base retriever
    generator_base: str
    generator_adapter: Path  # may not exist for "local" (checked by the setups that use it)
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False)  # registry tags

    @property
    def pinned(self) -> dict[str, Any]:
        """The table info open_pinned takes."""
        return {"table": self.table, "version": self.table_version}


@dataclass(frozen=True)
class ServingSections:
    """The config sections serving reads (never the whole config)."""

    models: Any  # base model ids, allow_download
    generate: Any  # context_k, max_context_tokens, max_new_tokens, batch_size, device
    evaluate: Any  # chunk_k, rrf_k: the search the scoreboard measured
    index: Any  # ANN knobs, retriever device


@dataclass(frozen=True)
class Answer:
    """One generated answer and what it was given."""

    question: str
    setup: str
    text: str
    sources: tuple[str, ...]  # doc_ids of the context, in rank order, once each
    hits: tuple[dict[str, Any], ...]  # the context chunks (empty for base/finetuned)
    new_tokens: int
    retrieve_ms: float = 0.0  # wall time of its batch's retrieval (shared by the batch)
    generate_ms: float = 0.0  # wall time of its batch's generation


# ---- pure -------------------------------------------------------------------------------------


def check_choice(value: str, allowed: Sequence[str], what: str) -> str:
    """`value` when it is one of `allowed`; a ConfigError naming the choices otherwise."""
    if value not in allowed:
        raise ConfigError(f"unknown {what} '{value}': expected one of {', '.join(allowed)}")
    return value


def setup_parts(setup: str) -> tuple[bool, bool]:
    """(uses the LoRA generator, uses retrieved context) of a scoreboard setup."""
    return SETUPS[check_choice(setup, tuple(SETUPS), "setup")]


def served_from_release(release: Any, ref: str, retriever_model: str, retriever_adapter: Path,
                        generator_adapter: Path) -> ServedRelease:
    """A registry release (tasks.lib.registry.Release) with its downloaded adapters."""
    label = (f"release {ref} ({retriever_model} v{release.retriever_version}, "
             f"generator v{release.generator_version})")
    return ServedRelease(label, release.retriever_version, release.index_uri, release.table,
                         release.table_version, release.retriever_base, retriever_adapter,
                         release.generator_base, generator_adapter, dict(release.tags))


def served_from_index(info: dict[str, Any], role: str, models: Any, cat: Any) -> ServedRelease:
    """The last index run's table of `role` (base when no candidate was indexed) and the
    generator adapter on disk."""
    check_choice(role, ROLES, "retriever role")
    tables = info.get("tables", {})
    role = role if role in tables else "base"
    if role not in tables:
        raise ServingError(f"{cat.index_info_path} records no table: re-run the index stage")
    table = tables[role]
    adapter = Path(table["adapter_dir"]) if table.get("adapter_dir") else None
    return ServedRelease(f"{role} retriever (last index run)", None, info["index_uri"],
                         table["table"], int(table["version"]),
                         info.get("retriever_id", models.retriever_id), adapter,
                         models.generator_id, cat.generator_adapter_dir)


def lora_adapter(served: ServedRelease, uses_lora: bool) -> Path | None:
    """The generator adapter a setup loads (None: the base LM); an error when it is missing."""
    if not uses_lora:
        return None
    if not served.generator_adapter.is_dir():
        raise ServingError(f"{served.generator_adapter} not found: run `tunedex stage "
                           "train_generator` first")
    return served.generator_adapter


def cited_sources(hits: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The doc_ids of context hits, in rank order, each once."""
    return tuple(dict.fromkeys(hit["doc_id"] for hit in hits))


def with_base(models: Any, key: str, model_id: str) -> Any:
    """The `models` section naming another base model (the one a release was trained on)."""
    return models.model_copy(update={key: model_id})


# ---- effects: what to serve -------------------------------------------------------------------


def resolve_served(reg: Any, cat: Any, models: Any, ref: str = "champion",
                   role: str = "candidate") -> ServedRelease:
    """The release behind an alias, a retriever version number or "local" (`role` picks the
    local retriever; a registered release serves its own)."""
    if ref == LOCAL:
        from tasks.lib.search import load_index_info

        return served_from_index(load_index_info(cat), role, models, cat)
    if role != "candidate":
        raise ConfigError(f"retriever role '{role}' applies to --release local only; release "
                          f"'{ref}' serves the retriever it registered")
    from tasks.lib.registry import adapter_dir, resolve_release

    release = resolve_release(reg, ref)
    return served_from_release(
        release, ref, reg.retriever_model,
        adapter_dir(reg, reg.retriever_model, release.retriever_version),
        adapter_dir(reg, reg.generator_model, release.generator_version))


def open_table(served: ServedRelease):
    """The release's table at its pinned version (read-only)."""
    from tasks.lib.search import connect, open_pinned

    return open_pinned(connect(served.index_uri, create=False), served.pinned, served.release)


def load_served_retriever(served: ServedRelease, models: Any, cat: Any, device: str,
                          precision: str = "fp32"):
    """The release's retriever (base resolved offline first), cached per process."""
    from tasks.lib.models import cached_retriever, retriever_base_dir

    base_dir = retriever_base_dir(with_base(models, "retriever_id", served.retriever_base),
                                  cat.models_dir)
    adapter = str(served.retriever_adapter) if served.retriever_adapter else None
    return cached_retriever(str(base_dir), adapter, device, precision)


def load_served_generator(served: ServedRelease, adapter: Path | None, models: Any, cat: Any,
                          device: str, precision: str = "fp32") -> tuple[Any, Any]:
    """(model, tokenizer) of the release's generator base, with `adapter` merged when given."""
    from tasks.lib.generator import generator_base_dir, load_generator

    base_dir = generator_base_dir(with_base(models, "generator_id", served.generator_base),
                                  cat.models_dir)
    return load_generator(base_dir, adapter, device, served.generator_base, precision)


@dataclass
class LoadedRelease:
    """A served release with its table and models loaded on first use, then kept (thread-safe:
    one load at a time; queries run concurrently)."""

    served: ServedRelease
    sections: ServingSections
    catalog: Any  # tasks.lib.catalog.Catalog: where base models are cached
    _parts: dict[Any, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _part(self, key: Any, load: Callable[[], Any]) -> Any:
        loaded = self._parts.get(key)
        if loaded is not None:  # loaded parts never wait behind another part's load
            return loaded
        with self._lock:
            if key not in self._parts:
                self._parts[key] = load()
            return self._parts[key]

    def table(self):
        """The pinned LanceDB table."""
        return self._part("table", lambda: open_table(self.served))

    def chunk_vectors(self):
        """Every chunk vector of the pinned table and its doc_id, read once (None for a table
        too big to hold; tasks.lib.question_space.chunk_vectors)."""
        from tasks.lib.question_space import chunk_vectors

        table = self.table()  # first: a load inside _part's lock must not take the lock again
        return self._part("chunk_vectors", lambda: chunk_vectors(table))

    def held_vectors(self):
        """The pinned table's chunks in memory for exact vector search, or NOT_HELD where LanceDB
        searches it (an ANN index, or index.ann_min_rows rows or more; tasks.lib.held_vectors)."""
        from tasks.lib.held_vectors import hold_vectors

        table = self.table()  # first: a load inside _part's lock must not take the lock again
        return self._part("held_vectors", lambda: hold_vectors(
            table, self.sections.index.ann_min_rows) or NOT_HELD)

    def retriever(self):
        """The release's retriever model."""
        return self._part("retriever", lambda: load_served_retriever(
            self.served, self.sections.models, self.catalog, self.sections.index.device,
            self.sections.index.precision))

    def generator(self, uses_lora: bool) -> tuple[Any, Any]:
        """(model, tokenizer): the LoRA generator, or the base LM when not `uses_lora`."""
        adapter = lora_adapter(self.served, uses_lora)
        return self._part(("generator", uses_lora), lambda: load_served_generator(
            self.served, adapter, self.sections.models, self.catalog,
            self.sections.generate.device, self.sections.generate.precision))

    def warm(self, setups: Sequence[str] = tuple(SETUPS)) -> LoadedRelease:
        """Load now what `setups` and search need (a server does this before taking requests)."""
        self.table()
        self.held_vectors()
        self.retriever().encode(["warm up"], convert_to_numpy=True)  # first-call set-up, here
        for uses_lora in sorted({setup_parts(s)[0] for s in setups}):
            self.generator(uses_lora)
        return self

    def search(self, query: str, mode: str | None = None, k: int = 5) -> list[dict[str, Any]]:
        """The top-k documents for a query, each as its best chunk hit (chunk_id, doc_id, text,
        score). Mode None: the release's chosen method (fusion before choices existed)."""
        from tasks.lib.choice import release_mode
        from tasks.lib.search import best_per_doc, canonical_mode, encode_query, rrf_fuse, search, text_hits

        mode = canonical_mode(mode) if mode else release_mode(self.served.tags, "fusion")
        check_choice(mode, MODES, "search mode")
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        model = None if mode == "bm25" else self.retriever()
        depth, rrf_k = self.sections.evaluate.chunk_k, self.sections.evaluate.rrf_k
        # held only once warm() or held_vectors() loaded them (a server; a one-shot query does
        # not read the whole table for one search)
        held = self._parts.get("held_vectors", NOT_HELD) if mode in ("vector", "fusion") else NOT_HELD
        if held is NOT_HELD:
            hits = search(self.table(), query, mode, depth, model, rrf_k, self.sections.index)
        else:  # search()'s vector and fusion modes, the vector half from memory
            hits = held.hits(encode_query(model, query), depth)
            if mode == "fusion":
                hits = rrf_fuse([text_hits(self.table(), query, depth), hits], rrf_k)[:depth]
        return best_per_doc(hits, k)

    def contexts(self, questions: list[str]) -> list[list[dict[str, Any]]]:
        """The top generate.context_k chunks per question (what rag and hybrid answers get), by
        the release's chosen method (LoRA vectors before choices existed)."""
        from tasks.lib.choice import release_mode
        from tasks.lib.search import method_contexts

        return method_contexts(self.table(), self.retriever(), questions,
                               self.sections.generate.context_k,
                               release_mode(self.served.tags, "vector"),
                               self.sections.evaluate.rrf_k, self.sections.index)

    def ask_many(self, questions: list[str], setup: str = "hybrid") -> list[Answer]:
        """Answers to several questions with one setup, generated in batches."""
        from tasks.lib.generator import build_prompt, generate_answers

        uses_lora, uses_context = setup_parts(setup)
        model, tok = self.generator(uses_lora)  # first: a missing adapter fails before retrieval
        started = time.perf_counter()
        hits = self.contexts(questions) if uses_context else [[] for _ in questions]
        retrieved = time.perf_counter()
        gen = self.sections.generate
        prompts = [build_prompt(tok, q, [h["text"] for h in hs] or None, gen.max_context_tokens)
                   for q, hs in zip(questions, hits, strict=True)]
        outs = generate_answers(model, tok, prompts, gen.max_new_tokens, gen.batch_size)
        ms = (1000 * (retrieved - started), 1000 * (time.perf_counter() - retrieved))
        return [Answer(q, setup, out["text"], cited_sources(hs), tuple(hs), out["new_tokens"], *ms)
                for q, hs, out in zip(questions, hits, outs, strict=True)]

    def ask(self, question: str, setup: str = "hybrid") -> Answer:
        """One answer with a scoreboard setup: hybrid, rag, finetuned or base."""
        return self.ask_many([question], setup)[0]


def open_release(reg: Any, cat: Any, sections: ServingSections, ref: str = "champion",
                 role: str = "candidate") -> LoadedRelease:
    """Resolve a release and wrap it for querying (nothing heavy is loaded yet)."""
    return LoadedRelease(resolve_served(reg, cat, sections.models, ref, role), sections, cat)
