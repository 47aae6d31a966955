"""`tunedex serve`: the champion release over HTTP (FastAPI + uvicorn), following the registry.

    GET  /health    200 {"status": "ok"} once a release is loaded (503 before)
    GET  /release   what is served: versions, table + pinned version, data md5s, gate, setup
    POST /search    {"query", "k"=5, "mode"="vector"|"bm25"|"fusion"|"fusion_native"; default: the
                    release's chosen method} -> {"hits": [...]}
    POST /ask       {"question", "setup"=the gate's} -> {"answer", "sources", "contexts"}
    POST /feedback  {"request_id", "rating": 1|-1, "comment"?} -> 204
    GET  /          a page: question box, answer with sources, setup switch, thumbs up/down
    GET  /docs      OpenAPI

Every JSON response carries `request_id` and the `release` that served it. The release is
loaded once (models warm); a watcher polls `@champion` every `serve.poll_seconds` and swaps a
new release in whole (retriever, generator and pinned table together) once it is loaded; a
release whose table is missing is refused and the old one keeps serving. Concurrent /ask
requests are generated in dynamic batches (`serve.batch_window_ms`, `serve.max_batch`). Every
request goes to the query log (tasks/lib/querylog.py); a sample becomes MLflow traces. A client
(IP) over `serve.rate_limit_per_minute` / `serve.rate_burst` on /search, /ask or /feedback gets
429 with Retry-After (tasks/lib/ratelimit.py).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tasks.lib.choice import release_mode
from tasks.lib.errors import ConfigError, ServingError, TunedexError
from tasks.lib.failpoints import failpoint
from tasks.lib.gate import judged
from tasks.lib.text import is_blank

log = logging.getLogger("tunedex.serve")
PAGE = Path(__file__).with_name("static") / "index.html"
LEGACY_MODES = {"hybrid": "fusion"}  # old /search mode names, accepted with a warning
OPEN_PATHS = {"/", "/health", "/docs", "/openapi.json", "/docs/oauth2-redirect"}
# Rate-limited per client: the routes that run the models and write the query log. /health
# (probes poll it), /release, the page and the docs are cheap and stay unlimited.
LIMITED_PATHS = ("/search", "/ask", "/feedback")


class SearchRequest(BaseModel):
    query: str = Field(description="Keywords or a question")
    k: int = Field(5, ge=1, le=100, description="Documents to return")
    mode: Literal["vector", "bm25", "fusion", "fusion_native", "hybrid"] | None = Field(
        None, description="Retrieval method; default: the one chosen for the release "
                          "('hybrid': deprecated name of fusion)")


class AskRequest(BaseModel):
    question: str = Field(description="The question to answer")
    setup: Literal["hybrid", "rag", "finetuned", "base"] | None = Field(
        None, description="Answer setup; default: the one the release gate judged")


class FeedbackRequest(BaseModel):
    request_id: str = Field(min_length=1, max_length=64)
    rating: Literal[1, -1]
    comment: str | None = Field(None, max_length=2000)


# ---- pure ---------------------------------------------------------------------------------------


def api_mode(method: str) -> str:
    """A scoreboard retrieval method as a /search mode (lora -> vector; unknown -> fusion)."""
    from tasks.lib.choice import METHOD_MODES

    return METHOD_MODES.get(method, "fusion")


def request_mode(mode: str | None, default: str) -> str:
    """A request's search mode: its own (an old name mapped, with a warning) or `default`."""
    if mode in LEGACY_MODES:
        log.warning("/search mode %r is deprecated: use %r", mode, LEGACY_MODES[mode])
        return LEGACY_MODES[mode]
    return mode or default


class RequestError(ConfigError):
    """A request the client must change (422); other TunedexErrors are the server's (503)."""


def check_text(value: str, field: str, limit: int) -> str:
    """A non-blank text within `limit` characters, or a RequestError naming the request field."""
    if is_blank(value):
        raise RequestError(f"request field '{field}': must not be empty or only whitespace "
                           "(or invisible characters)")
    if len(value) > limit:
        raise RequestError(f"request field '{field}': {len(value)} characters, the limit is {limit}")
    return value


def rate_limit_message(section: Any, client: str, wait: float) -> str:
    """Why a request got 429: the client, the limit and the config keys that set it."""
    from tasks.lib.ratelimit import retry_after

    return (f"rate limit: {client} sent more than serve.rate_burst={section.rate_burst} requests "
            f"at once or serve.rate_limit_per_minute={section.rate_limit_per_minute} a minute to "
            f"{', '.join(LIMITED_PATHS)}; retry in {retry_after(wait)} s (Retry-After), or raise "
            "those keys (serve.rate_limit_per_minute: 0 turns the limit off)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_token(section: Any, host: str) -> str | None:
    """The bearer token requests must carry (config, else $TUNEDEX_SERVE_TOKEN); required off
    loopback."""
    token = section.token or os.environ.get("TUNEDEX_SERVE_TOKEN") or None
    if token is None and not is_loopback(host):
        raise ConfigError(f"serve: binding to {host} (not loopback) needs a bearer token: set "
                          "serve.token or TUNEDEX_SERVE_TOKEN")
    return token


def release_info(loaded: Any) -> dict[str, Any]:
    """How a response names the release that served it."""
    s = loaded.served
    return {"retriever_version": s.release,
            "generator_version": int(s.tags["release.generator_version"])
            if "release.generator_version" in s.tags else None,
            "table": s.table, "table_version": s.table_version}


def hit_view(hit: dict[str, Any]) -> dict[str, Any]:
    """A hit as the API shows it: doc_id, title (the passage's first line), score, text."""
    text = hit["text"]
    title, _, body = text.partition("\n")
    return {"doc_id": hit["doc_id"], "chunk_id": hit.get("chunk_id"),
            "title": title if body else None, "score": round(float(hit["score"]), 6),
            "text": body or text}


# ---- the release the server holds ---------------------------------------------------------------


class ReleaseHolder:
    """The release being served, swapped whole when `@champion` moves (never a mixed release)."""

    def __init__(self, open_served: Any, resolve: Any, setups: tuple[str, ...], ref: str):
        self.open_served, self.resolve, self.setups, self.ref = open_served, resolve, setups, ref
        self.current: Any = None  # a LoadedRelease; replaced by one assignment (atomic)
        self.error: str | None = None
        self._refused: Any = None  # the last release that failed to load
        self._stop = threading.Event()

    def refresh(self) -> bool:
        """Load the release `ref` names now if it differs from the one served; True if swapped."""
        served = None
        try:
            served = self.resolve(self.ref)
            if self.current is not None and served == self.current.served:
                self.error = None  # the registry names what is served again
                return False
            if served == self._refused:  # refused already: not loaded again every poll
                return False
            loaded = self.open_served(served).warm(self.setups)  # table + models, before the swap
        except Exception as err:  # noqa: BLE001 - a registry hiccup must not stop the watcher
            self._refused = served  # None when resolving failed: tried again next poll
            self.error = str(err) if isinstance(err, TunedexError) else f"{type(err).__name__}: {err}"
            keep = f"; still serving {self.current.served.label}" if self.current else ""
            log.error("release refused: %s%s", err, keep)
            return False
        if self.current is not None:
            failpoint("serve.swap")  # crash tests: the new release loaded, not yet swapped in
        old, self.current, self.error = self.current, loaded, None
        log.info("serving %s, table %s v%d%s", loaded.served.label, loaded.served.table,
                 loaded.served.table_version, f" (was {old.served.label})" if old else "")
        return True

    def watch(self, every: float) -> threading.Thread:
        """Poll the registry every `every` seconds in a daemon thread until stop()."""
        def loop() -> None:
            while not self._stop.wait(every):
                self.refresh()

        thread = threading.Thread(target=loop, name="tunedex-release-watch", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


# ---- the app ------------------------------------------------------------------------------------


def create_app(cfg: Any, ref: str = "champion", host: str = "127.0.0.1") -> Any:
    """The FastAPI app serving `ref` (an alias, a version or "local") of one config."""
    from starlette.middleware.body_limit import RequestBodyLimitMiddleware

    from tasks.lib.batching import DynamicBatcher
    from tasks.lib.catalog import Catalog
    from tasks.lib.querylog import RequestRecorder
    from tasks.lib.ratelimit import RateLimiter, retry_after
    from tasks.lib.registry import registry_ref
    from tasks.lib.serving import LoadedRelease, ServingSections, resolve_served

    sv, cat = cfg.serve, Catalog(cfg.paths)
    token = serve_token(sv, host)
    sections = ServingSections(cfg.models, cfg.generate, cfg.evaluate, cfg.index)
    reg = registry_ref(cfg)
    default_setup = judged(cfg.promote.gate, "answers", "hybrid")
    # releases from before the choice: the method the gate judged (release tag retrieval.method wins)
    default_mode = api_mode(judged(cfg.promote.gate, "retrieval", "fusion"))
    holder = ReleaseHolder(lambda served: LoadedRelease(served, sections, cat),
                           lambda r: resolve_served(reg, cat, cfg.models, r), (default_setup,), ref)
    recorder = RequestRecorder(sv, cfg.tracking, cfg.project.name, cat, cfg.pii)

    def run_batch(key: Any, items: list[tuple[Any, str]]) -> list[Any]:
        release, setup = items[0][0], key[1]
        return release.ask_many([q for _, q in items], setup)

    batcher = DynamicBatcher(run_batch, sv.batch_window_ms / 1000, sv.max_batch)
    limiter = (RateLimiter(sv.rate_limit_per_minute, sv.rate_burst)
               if sv.rate_limit_per_minute else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import asyncio

        from tasks.lib.files import clean_leftovers

        clean_leftovers(cat.registry_cache_dir)  # downloads a killed server left half-done
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, holder.refresh)  # /health says 503 until this is done
        watcher = holder.watch(sv.poll_seconds) if sv.poll_seconds > 0 else None
        yield
        holder.stop()
        if watcher is not None:
            watcher.join(timeout=1)
        batcher.close()
        recorder.close()

    app = FastAPI(title="tunedex", version="1", lifespan=lifespan,
                  description="The champion release: search, grounded answers, feedback.")
    app.state.holder, app.state.batcher, app.state.recorder = holder, batcher, recorder

    def error(request: Request, status: int, message: str) -> JSONResponse:
        current = holder.current
        return JSONResponse({"error": message, "request_id": request.state.request_id,
                             "release": release_info(current) if current else None},
                            status_code=status)

    @app.middleware("http")
    async def identify(request: Request, call_next):
        request.state.request_id = uuid.uuid4().hex
        # Before the token check, so guessing the token is limited too.
        if limiter is not None and request.url.path in LIMITED_PATHS:
            client = request.client.host if request.client else "unknown"
            wait = limiter.acquire(client)
            if wait > 0:
                response = error(request, 429, rate_limit_message(sv, client, wait))
                response.headers["Retry-After"] = str(retry_after(wait))
                return response
        given = request.headers.get("authorization", "")
        if token is not None and request.url.path not in OPEN_PATHS and \
                not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse({"error": "missing or wrong bearer token (Authorization: Bearer …)",
                                 "request_id": request.state.request_id}, status_code=401)
        return await call_next(request)

    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=sv.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        parts = ["body: not valid JSON" if e["type"] == "json_invalid" else
                 f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
                 for e in err.errors()]
        return error(request, 422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):  # e.g. an unparsable body
        return error(request, err.status_code, f"request refused: {err.detail}")

    @app.exception_handler(TunedexError)
    async def refused(request: Request, err: TunedexError):
        return error(request, 422 if isinstance(err, RequestError) else 503, str(err))

    @app.exception_handler(Exception)
    async def crashed(request: Request, err: Exception):  # never a traceback to the client
        log.exception("request %s failed", getattr(request.state, "request_id", "?"))
        return error(request, 500, f"internal error ({type(err).__name__}); see the server log")

    def serving(request: Request) -> Any:
        current = holder.current
        if current is None:
            raise ServingError(f"no release loaded yet{': ' + holder.error if holder.error else ''}")
        return current

    @app.get("/health")
    def health(request: Request):
        current = holder.current
        body = {"status": "ok" if current else "loading", "request_id": request.state.request_id,
                "release": release_info(current) if current else None, "error": holder.error}
        return JSONResponse(body, status_code=200 if current else 503)

    @app.get("/release")
    def release(request: Request):
        current = serving(request)
        tags = current.served.tags
        return {"request_id": request.state.request_id, "release": release_info(current),
                "label": current.served.label, "index_uri": current.served.index_uri,
                "retriever_base": current.served.retriever_base,
                "generator_base": current.served.generator_base,
                "data": {k: tags.get(f"data.{k}") for k in ("corpus_md5", "qa_md5")},
                "git_commit": tags.get("git.commit"), "gate": tags.get("gate.decision"),
                "setup": default_setup, "search_mode": release_mode(tags, default_mode)}

    @app.post("/search")
    def search(body: SearchRequest, request: Request):
        query = check_text(body.query, "query", sv.max_question_chars)
        current, started = serving(request), time.perf_counter()
        mode = request_mode(body.mode, release_mode(current.served.tags, default_mode))
        hits = current.search(query, mode, body.k)
        ms = 1000 * (time.perf_counter() - started)
        info = release_info(current)
        recorder.search(request.state.request_id, info, query, mode, hits, ms)
        return {"request_id": request.state.request_id, "release": info, "mode": mode,
                "hits": [hit_view(h) for h in hits], "latency_ms": round(ms, 2)}

    @app.post("/ask")
    async def ask(body: AskRequest, request: Request):
        question = check_text(body.question, "question", sv.max_question_chars)
        setup = body.setup or default_setup
        current, started = serving(request), time.perf_counter()
        answer = await batcher.submit((id(current), setup), (current, question))
        ms = 1000 * (time.perf_counter() - started)
        info = release_info(current)
        recorder.ask(request.state.request_id, info, answer, ms)
        return {"request_id": request.state.request_id, "release": info, "setup": setup,
                "answer": answer.text, "sources": list(answer.sources),
                "contexts": [hit_view(h) for h in answer.hits], "latency_ms": round(ms, 2)}

    @app.post("/feedback", status_code=204)
    def feedback(body: FeedbackRequest, request: Request):
        if not recorder.knows(body.request_id):
            return error(request, 404, f"unknown request_id '{body.request_id}': feedback rates a "
                                       "/search or /ask response by its request_id")
        recorder.feedback(request.state.request_id, body.request_id, body.rating, body.comment)
        return Response(status_code=204)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    return app


def serve(cfg: Any, host: str, port: int, ref: str = "champion") -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    app = create_app(cfg, ref, host)
    log.info("tunedex serve on http://%s:%d (release %s; docs at /docs)", host, port, ref)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
