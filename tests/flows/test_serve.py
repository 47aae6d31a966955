"""`tunedex serve`: the HTTP contract, bad requests, the query log, batching and hot swaps, on a
real uvicorn server over loopback with a real registry, LanceDB table and smoke models."""

from __future__ import annotations

import concurrent.futures
from contextlib import contextmanager

import httpx
import pytest

from flows.serve import (
    api_mode,
    check_text,
    hit_view,
    is_loopback,
    rate_limit_message,
    request_mode,
    serve_token,
)
from tasks.lib.config import ServeConfig
from tasks.lib.errors import ConfigError
from tests.conftest import SMOKE, promote_release, uvicorn_app

FLOOR_ONLY = [{"metric": "retrieval.fusion.ndcg@10", "floor": 0.0}]  # passes whatever changed

# ---- pure ---------------------------------------------------------------------------------------


def test_request_text_checks_name_the_field():
    assert check_text("hi", "question", 10) == "hi"
    with pytest.raises(ConfigError, match="request field 'query': must not be empty"):
        check_text(" \t\n", "query", 10)
    with pytest.raises(ConfigError, match="request field 'query': must not be empty"):
        check_text("\u200b\u200b\ufeff", "query", 10)  # zero-width characters show nothing
    with pytest.raises(ConfigError, match="request field 'question': 11 characters, the limit is 10"):
        check_text("x" * 11, "question", 10)


def test_token_is_required_off_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert serve_token(ServeConfig(), "127.0.0.1") is None
    assert serve_token(ServeConfig(token="s3cret"), "0.0.0.0") == "s3cret"
    with pytest.raises(ConfigError, match="needs a bearer token"):
        serve_token(ServeConfig(), "0.0.0.0")


def test_rate_limit_message_names_the_client_limit_and_keys():
    message = rate_limit_message(ServeConfig(), "10.1.2.3", 0.2)
    assert message == ("rate limit: 10.1.2.3 sent more than serve.rate_burst=30 requests at once "
                       "or serve.rate_limit_per_minute=120 a minute to /search, /ask, /feedback; "
                       "retry in 1 s (Retry-After), or raise those keys "
                       "(serve.rate_limit_per_minute: 0 turns the limit off)")


def unlimited(cfg):
    """`cfg` without the per-client rate limit (for tests that send hundreds of requests)."""
    return cfg.model_copy(update={"serve": cfg.serve.model_copy(
        update={"rate_limit_per_minute": 0})})


def test_hits_and_modes_as_the_api_shows_them():
    hit = {"doc_id": "pay-01", "chunk_id": "pay-01#0", "text": "Paying by card\nWe accept Visa.",
           "score": 0.51234567}
    assert hit_view(hit) == {"doc_id": "pay-01", "chunk_id": "pay-01#0", "title": "Paying by card",
                             "score": 0.512346, "text": "We accept Visa."}
    assert hit_view({**hit, "text": "no title"})["title"] is None
    assert [api_mode(m) for m in ("lora", "fusion", "bm25", "fusion_native", "chosen")] == [
        "vector", "fusion", "bm25", "fusion_native", "fusion"]


def test_a_request_mode_hybrid_is_fusion_with_a_warning_and_none_is_the_release_default(caplog):
    with caplog.at_level("WARNING", logger="tunedex.serve"):
        assert request_mode("hybrid", "vector") == "fusion"
    assert "/search mode 'hybrid' is deprecated: use 'fusion'" in caplog.text
    assert request_mode(None, "vector") == "vector" and request_mode("bm25", "vector") == "bm25"


# ---- a real server --------------------------------------------------------------------------


def current_tags(cfg) -> dict:
    """The champion retriever version's tags."""
    from tasks.lib.registry import CHAMPION, alias_version, client, registry_ref

    reg = registry_ref(cfg)
    return dict(alias_version(client(reg), reg.retriever_model, CHAMPION).tags)


@contextmanager
def running(cfg, token: str | None = None):
    """The app of `cfg` on a real loopback server; yields (client, app)."""
    from flows.serve import create_app

    app = create_app(cfg)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with uvicorn_app(app) as base, httpx.Client(base_url=base, timeout=120,
                                               headers=headers) as client:
        yield client, app


@pytest.fixture
def served(registry_overrides):
    """A smoke release promoted into a fresh registry, and its config (poll off, every /ask traced)."""
    from tasks.lib.config import load_config

    assert promote_release(registry_overrides, **{"promote.gate": FLOOR_ONLY})["promoted"]
    cfg = load_config(SMOKE, {**registry_overrides, "serve.poll_seconds": 0,
                              "serve.trace_sample": 1.0, "serve.batch_window_ms": 200})
    return cfg, registry_overrides


@pytest.mark.slow
def test_contract_errors_log_and_batching(served):
    from tasks.lib.catalog import Catalog
    from tasks.lib.querylog import read_log

    cfg, _ = served
    with running(cfg) as (client, app):
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        release = client.get("/release").json()
        assert release["release"]["retriever_version"] == 1 and release["gate"] == "promoted"
        assert release["setup"] == "hybrid"
        # the default search: the method evaluate chose for the release (tag retrieval.method)
        chosen = current_tags(cfg)["retrieval.method"]
        assert release["search_mode"] == api_mode(chosen)
        assert client.post("/search", json={"query": "cards"}).json()["mode"] == api_mode(chosen)
        assert release["data"]["corpus_md5"] and release["release"]["table"].startswith("chunks_")
        for mode in ("vector", "bm25", "fusion", "fusion_native"):
            body = client.post("/search", json={"query": "which cards do you take", "k": 2,
                                                "mode": mode}).json()
            assert body["mode"] == mode and 1 <= len(body["hits"]) <= 2, body
            assert set(body["hits"][0]) == {"doc_id", "chunk_id", "title", "score", "text"}
            assert body["request_id"] and body["release"]["retriever_version"] == 1
        asked = client.post("/ask", json={"question": "When is my card charged?"}).json()
        assert asked["setup"] == "hybrid" and asked["sources"] and asked["contexts"]
        assert asked["sources"][0] == asked["contexts"][0]["doc_id"]
        assert client.post("/ask", json={"question": "Which cards?", "setup": "base"}).json()[
            "sources"] == []
        fed = client.post("/feedback", json={"request_id": asked["request_id"], "rating": -1,
                                             "comment": "wrong month"})
        assert fed.status_code == 204
        assert client.get("/docs").status_code == 200 and client.get("/").status_code == 200

        bad = [("/ask", {"question": ""}, 422, "must not be empty"),
               ("/ask", {"question": "   "}, 422, "must not be empty"),
               ("/ask", {"question": "x" * 2001}, 422, "the limit is 2000"),
               ("/ask", {"question": "q", "setup": "magic"}, 422, "setup"),
               ("/ask", {}, 422, "question: Field required"),
               ("/search", {"query": "q", "k": 0}, 422, "k: Input should be greater"),
               ("/search", {"query": "q", "k": 101}, 422, "k: Input should be less"),
               ("/search", {"query": "q", "mode": "dense"}, 422, "mode"),
               ("/feedback", {"request_id": "nope", "rating": 1}, 404, "unknown request_id 'nope'"),
               ("/feedback", {"request_id": asked["request_id"], "rating": 5}, 422, "rating")]
        for path, payload, status, text in bad:
            response = client.post(path, json=payload)
            assert response.status_code == status and text in response.json()["error"], \
                (path, payload, response.text)
            assert "Traceback" not in response.text and response.json()["request_id"]
        malformed = client.post("/ask", content=b"{not json", headers={"content-type":
                                                                        "application/json"})
        assert malformed.status_code == 422 and "not valid JSON" in malformed.json()["error"]
        huge = client.post("/ask", content=b'{"question": "' + b"a" * 70_000 + b'"}',
                           headers={"content-type": "application/json"})
        assert huge.status_code == 413

        # Eight /ask requests at once share batches (the window is 200 ms here).
        questions = [f"How do I pay, question {i}?" for i in range(8)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda q: client.post("/ask", json={"question": q}).json(),
                                    questions))
        assert all(a["release"]["retriever_version"] == 1 for a in answers)
        assert max(app.state.batcher.batches) > 1
    rows = list(read_log(Catalog(cfg.paths).query_log_dir))
    kinds = [r["kind"] for r in rows]
    assert kinds.count("search") == 5 and kinds.count("ask") == 10 and kinds.count("feedback") == 1
    ask = next(r for r in rows if r["request_id"] == asked["request_id"])
    assert ask["release"]["retriever_version"] == 1 and ask["doc_ids"] and ask["latency_ms"] > 0
    assert next(r for r in rows if r["kind"] == "feedback")["rates"] == asked["request_id"]
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    experiment = mlflow.get_experiment_by_name(cfg.project.name).experiment_id
    traces = mlflow.search_traces(experiment_ids=[experiment], filter_string="tags.release = '1'",
                                  return_type="list", flush=True)
    assert traces and {s.name for s in traces[0].data.spans} == {"ask", "retrieve", "generate"}


@pytest.mark.slow
def test_bearer_token(served):
    cfg, _ = served
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"token": "s3cret"})})
    with running(cfg, token="s3cret") as (client, _app):
        base = str(client.base_url).rstrip("/")
        anonymous = httpx.post(f"{base}/search", json={"query": "cards"})
        assert anonymous.status_code == 401 and "bearer token" in anonymous.json()["error"]
        assert client.post("/search", json={"query": "cards"}).status_code == 200
        assert httpx.get(f"{base}/health").status_code == 200  # open for probes


@pytest.mark.slow
def test_rate_limit_answers_429_with_retry_after_and_leaves_health_open(served, tmp_path):
    from tasks.lib.catalog import Catalog
    from tasks.lib.querylog import read_log

    cfg, _ = served
    # One token a minute, three at once: the fourth request in a row is over the limit.
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(
        update={"rate_limit_per_minute": 1, "rate_burst": 3}), "paths": cfg.paths.model_copy(
        update={"logs_dir": str(tmp_path / "logs")})})  # a query log of this test alone
    with running(cfg) as (client, _app):
        assert [client.post("/search", json={"query": "cards"}).status_code
                for _ in range(3)] == [200, 200, 200]
        for path, body in (("/search", {"query": "cards"}), ("/ask", {"question": "cards?"}),
                           ("/feedback", {"request_id": "x", "rating": 1})):
            refused = client.post(path, json=body)
            assert refused.status_code == 429, (path, refused.text)
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            error = refused.json()
            assert error["error"].startswith("rate limit: 127.0.0.1 sent more than "
                                             "serve.rate_burst=3 requests at once or "
                                             "serve.rate_limit_per_minute=1 a minute")
            assert error["request_id"] and error["release"]["retriever_version"] == 1
        for path in ("/health", "/release", "/", "/openapi.json"):  # probes, page, docs: open
            assert client.get(path).status_code == 200, path
    kinds = [r["kind"] for r in read_log(Catalog(cfg.paths).query_log_dir)]
    assert kinds == ["search"] * 3  # refused requests never reached a route


@pytest.mark.slow
def test_follows_champion_swaps_whole_and_refuses_a_missing_table(served):
    from tasks.lib.config import load_config
    from tasks.lib.registry import client as registry_client
    from tasks.lib.registry import registry_ref, rollback

    cfg, overrides = served
    with running(cfg) as (client, app):
        holder = app.state.holder
        assert promote_release(overrides, **{"promote.gate": FLOOR_ONLY})["promoted"]  # v2
        assert holder.refresh() and client.get("/release").json()["release"][
            "retriever_version"] == 2
        rollback(registry_ref(load_config(SMOKE, overrides)))  # back to v1: a swap, nothing rebuilt
        assert holder.refresh() and client.post("/search", json={"query": "cards"}).json()[
            "release"]["retriever_version"] == 1
        assert not holder.refresh()  # unchanged: nothing reloaded

        # v3 pins a table that is gone: refused, v1 keeps serving.
        assert promote_release(overrides, **{"promote.gate": FLOOR_ONLY})["promoted"]  # v3
        reg = registry_ref(cfg)
        registry_client(reg).set_model_version_tag(reg.retriever_model, "3", "index.table",
                                                   "chunks_gone")
        assert not holder.refresh()
        assert "chunks_gone" in holder.error
        assert client.post("/search", json={"query": "cards"}).json()["release"][
            "retriever_version"] == 1
        assert client.get("/health").json()["error"] and client.get("/health").status_code == 200


@pytest.mark.slow
def test_any_request_body_gets_an_answer_or_a_4xx_never_a_5xx(served):
    """Hypothesis feeds arbitrary JSON, contract-shaped objects with wrong types and raw bytes
    to every POST route of a real server: 2xx or a 4xx with a message, never a 5xx."""
    import json

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    cfg, _ = served
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=30))
    values = st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
        max_leaves=8)
    keys = st.sampled_from(["query", "question", "k", "mode", "setup", "request_id", "rating",
                            "comment"])
    bodies = st.one_of(values.map(json.dumps), st.dictionaries(keys, values, max_size=4).map(
        json.dumps), st.binary(max_size=80))
    seen: list[int] = []
    # 150 requests in a burst from one client: the rate limit would answer most with 429.
    with running(unlimited(cfg)) as (client, _app):
        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(path=st.sampled_from(["/search", "/ask", "/feedback"]), body=bodies)
        def check(path, body):
            content = body if isinstance(body, bytes) else body.encode("utf-8")
            response = client.post(path, content=content,
                                   headers={"content-type": "application/json"})
            seen.append(response.status_code)
            assert response.status_code < 500, (path, body, response.text)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error and "Traceback" not in response.text

        check()
    assert any(s >= 400 for s in seen) and len(seen) >= 150


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(served):
    """Schemathesis reads /openapi.json of a real server and sends schema-valid and schema-
    violating requests to every operation: none may get a 5xx."""
    schemathesis = pytest.importorskip(
        "schemathesis", reason="schemathesis is not installed (pip install -e '.[dev]')")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    cfg, _ = served
    calls: list[tuple[str, int]] = []
    # Hundreds of requests from one client: with the rate limit most would be 429s, not tests.
    with running(unlimited(cfg)) as (client, _app):
        base = str(client.base_url).rstrip("/")
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} >= {"POST /search", "POST /ask", "POST /feedback",
                                                    "GET /health", "GET /release"}
        for op in operations:
            for mode in schemathesis.GenerationMode:
                @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
                          database=None)
                @given(case=op.as_strategy(generation_mode=mode))
                def check(case):
                    response = case.call(base_url=base, timeout=120)
                    calls.append((case.operation.label, response.status_code))
                    assert response.status_code < 500, (case.operation.label, case.body,
                                                         response.text)

                try:
                    check()
                except Unsatisfiable:  # nothing to make invalid (a GET without parameters)
                    assert mode == schemathesis.GenerationMode.NEGATIVE, op.label
    assert len(calls) >= 100 and any(status >= 400 for _, status in calls)
