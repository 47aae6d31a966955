"""The query log: every served request, append-only JSON Lines, one file per UTC day.

Each /search, /ask and /feedback is one line: request id, kind, the release that served it,
question, setup, retrieved doc_ids and scores, answer, latency, timestamp (feedback lines name
the request they rate). A writer thread drains an unbounded in-memory queue, so a request never
waits on the disk and nothing is dropped; each line is flushed as it is written, so a crash
loses at most the lines still queued. The monitor flow (next issue) reads these files.

Usage:
    log = QueryLog(Path("logs/queries"), retention_days=30)
    log.append({"kind": "ask", "request_id": rid, ...})
    log.close()                      # drains the queue
    rows = list(read_log(Path("logs/queries")))
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()

# ---- pure -------------------------------------------------------------------------------------


def day_file(log_dir: Path, when: float) -> Path:
    """queries-YYYY-MM-DD.jsonl for the UTC day of a timestamp."""
    return log_dir / f"queries-{datetime.fromtimestamp(when, UTC):%Y-%m-%d}.jsonl"


def expired(files: list[Path], now: float, retention_days: int) -> list[Path]:
    """Day files older than the retention (0 keeps everything)."""
    if retention_days <= 0:
        return []
    cutoff = f"queries-{datetime.fromtimestamp(now, UTC) - timedelta(days=retention_days):%Y-%m-%d}"
    return [f for f in files if f.stem.startswith("queries-") and f.stem < cutoff]


# ---- effects ----------------------------------------------------------------------------------


class QueryLog:
    """Append-only, thread-safe, never blocks the caller on I/O; `close()` drains it."""

    def __init__(self, log_dir: Path, retention_days: int = 30):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.retention_days = retention_days
        self.written = 0
        self.failed = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name="tunedex-querylog", daemon=True)
        self._thread.start()
        self.prune()

    def append(self, record: dict[str, Any]) -> None:
        """Queue one record (a `ts` is added when missing)."""
        self._queue.put({"ts": time.time(), **record})

    def close(self) -> None:
        """Write everything queued, then stop the writer."""
        self._queue.put(_STOP)
        self._thread.join()

    def prune(self) -> list[Path]:
        """Delete day files past the retention; return them."""
        old = expired(sorted(self.log_dir.glob("queries-*.jsonl")), time.time(), self.retention_days)
        for path in old:
            path.unlink(missing_ok=True)
            log.info("query log: removed %s (older than %d days)", path, self.retention_days)
        return old

    def _drain(self) -> None:
        handle, current = None, None
        while True:
            record = self._queue.get()
            if record is _STOP:
                break
            path = day_file(self.log_dir, record["ts"])
            try:
                if path != current:
                    if handle is not None:
                        handle.close()
                    handle, current = path.open("a", encoding="utf-8"), path
                    self.prune()  # a new day: apply the retention while the server runs
                handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                handle.flush()
                self.written += 1
            except OSError as err:  # disk full, folder removed: say so, keep the writer alive
                self.failed += 1
                log.error("query log: could not write %s (%s); %d records lost so far", path,
                          err, self.failed)
                handle, current = None, None
        if handle is not None:
            handle.close()


def read_log(log_dir: Path, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Every record in the day files (oldest first), optionally only those at or after `since`;
    a torn last line (a crash mid-write) is skipped."""
    for path in sorted(Path(log_dir).glob("queries-*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if since is None or record.get("ts", 0) >= since:
                    yield record


def redacted(record: dict[str, Any], pii: Any = None) -> dict[str, Any]:
    """The record with e-mail addresses, card numbers, IBANs and phone numbers in its free text
    (question, answer, comment) replaced by placeholders: the log keeps no personal data.
    Every kind, whatever `pii.kinds` says (users' questions are not the team's corpus); phone
    numbers by the `pii` section's regions and leniency when given."""
    from tasks.lib.pii import redact

    phones = {} if pii is None else {"regions": pii.phone_regions, "leniency": pii.phone_leniency}
    out = dict(record)
    for key in ("question", "answer", "comment"):
        if isinstance(out.get(key), str):
            out[key] = redact(out[key], **phones)[0]
    return out


# ---- what the server records per request ---------------------------------------------------------


class RequestRecorder:
    """The server's side of the log: one record per request, the request ids feedback may
    name, and a sample of requests as MLflow traces (spans retrieve and generate)."""

    def __init__(self, serve: Any, tracking: Any, experiment: str, cat: Any, pii: Any = None):
        import random

        self.pii = pii  # the phone rules redaction follows (tasks/lib/pii.py)
        self.enabled = serve.query_log
        self.sample = serve.trace_sample if serve.traces else 0.0
        self.tracking, self.experiment = tracking, experiment
        self._random = random.Random()
        self._known: dict[str, None] = {}
        self._known_lock = threading.Lock()
        self.max_known = 1_000_000  # feedback can name any of the last million requests
        self.log = QueryLog(cat.query_log_dir, serve.retention_days) if self.enabled else None
        if self.log is not None:
            for record in read_log(cat.query_log_dir):
                if record.get("kind") in ("search", "ask"):
                    self._remember(record["request_id"])
        self._tracer: Any = None

    def _remember(self, request_id: str) -> None:
        with self._known_lock:  # handlers run in several threads
            self._known[request_id] = None
            if len(self._known) > self.max_known:
                self._known.pop(next(iter(self._known)))

    def knows(self, request_id: str) -> bool:
        return request_id in self._known

    def _write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Log the record with personal data redacted; return what was logged."""
        if record["kind"] != "feedback":
            self._remember(record["request_id"])
        record = redacted(record, self.pii)
        if self.log is not None:
            self.log.append(record)
        return record

    def search(self, request_id: str, release: dict[str, Any], query: str, mode: str,
               hits: list[dict[str, Any]], ms: float) -> None:
        self._write({"kind": "search", "request_id": request_id, "release": release,
                     "question": query, "mode": mode, "doc_ids": [h["doc_id"] for h in hits],
                     "scores": [round(float(h["score"]), 6) for h in hits],
                     "latency_ms": round(ms, 2)})

    def ask(self, request_id: str, release: dict[str, Any], answer: Any, ms: float) -> None:
        record = {"kind": "ask", "request_id": request_id, "release": release,
                  "question": answer.question, "setup": answer.setup,
                  "doc_ids": [h["doc_id"] for h in answer.hits],
                  "scores": [round(float(h["score"]), 6) for h in answer.hits],
                  "answer": answer.text, "sources": list(answer.sources),
                  "latency_ms": round(ms, 2)}
        record = self._write(record)  # redacted: the trace too keeps no personal data
        if self.sample and self._random.random() < self.sample:
            self._trace(record, answer, ms)

    def feedback(self, request_id: str, rated: str, rating: int, comment: str | None) -> None:
        self._write({"kind": "feedback", "request_id": request_id, "rates": rated,
                     "rating": rating, "comment": comment})

    def _trace(self, record: dict[str, Any], answer: Any, ms: float) -> None:
        """Queue one request as an MLflow trace, built after the fact from its timings (the
        request never waits on the tracking store)."""
        if self._tracer is None:
            self._tracer = TraceWriter(self.tracking, self.experiment)
        self._tracer.put(record, answer, ms)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self._tracer is not None:
            self._tracer.close()


class TraceWriter:
    """A thread that turns sampled request records into MLflow traces (ask -> retrieve, generate)."""

    def __init__(self, tracking: Any, experiment: str):
        self.tracking, self.experiment = tracking, experiment
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name="tunedex-traces", daemon=True)
        self._thread.start()

    def put(self, record: dict[str, Any], answer: Any, ms: float) -> None:
        self._queue.put((record, answer.retrieve_ms, answer.generate_ms, ms, time.time_ns()))

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def _drain(self) -> None:
        import mlflow

        from tasks.lib.tracking import configure_tracking

        experiment_id = configure_tracking(self.tracking, self.experiment)
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            try:
                self._write(mlflow, experiment_id, *item)
            except Exception as err:  # noqa: BLE001 - a trace is a sample; the log has the record
                log.warning("trace for request %s not written: %s", item[0]["request_id"], err)

    @staticmethod
    def _write(mlflow: Any, experiment_id: str, record: dict[str, Any], retrieve_ms: float,
               generate_ms: float, ms: float, end_ns: int) -> None:
        start_ns = end_ns - int(ms * 1e6)
        tags = {"release": str(record["release"]["retriever_version"]),
                "setup": record["setup"], "request_id": record["request_id"]}
        root = mlflow.start_span_no_context("ask", span_type="CHAIN", inputs={
            "question": record["question"], "setup": record["setup"]}, tags=tags,
            experiment_id=experiment_id, start_time_ns=start_ns)
        middle = end_ns - int(generate_ms * 1e6)
        retrieve = mlflow.start_span_no_context(
            "retrieve", span_type="RETRIEVER", parent_span=root, inputs={"query": record["question"]},
            start_time_ns=middle - int(retrieve_ms * 1e6))
        retrieve.end(outputs={"doc_ids": record["doc_ids"], "scores": record["scores"]},
                     end_time_ns=middle)
        generate = mlflow.start_span_no_context("generate", span_type="LLM", parent_span=root,
                                                start_time_ns=middle)
        generate.end(outputs={"answer": record["answer"]}, end_time_ns=end_ns)
        root.end(outputs={"answer": record["answer"], "sources": record["sources"]},
                 end_time_ns=end_ns)
