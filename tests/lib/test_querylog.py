"""The query log: append-only day files, nothing dropped under concurrency, retention, torn lines."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

from tasks.lib.querylog import QueryLog, day_file, expired, read_log


def test_day_files_and_retention_are_by_utc_day(tmp_path):
    ts = datetime(2026, 12, 1, 23, 59, tzinfo=UTC).timestamp()
    assert day_file(tmp_path, ts).name == "queries-2026-12-01.jsonl"
    files = [tmp_path / f"queries-2026-{m:02d}-{d:02d}.jsonl" for m, d in ((10, 15), (11, 20), (11, 30))]
    now = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert expired(files, now, 30) == [files[0]]
    assert expired(files, now, 0) == []


def test_concurrent_appends_are_all_written_in_full(tmp_path):
    log = QueryLog(tmp_path, retention_days=30)

    def writer(n):
        for i in range(250):
            log.append({"kind": "search", "request_id": f"{n}-{i}", "question": "q" * 50})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    rows = list(read_log(tmp_path))
    assert len(rows) == 2000 and log.written == 2000
    assert len({r["request_id"] for r in rows}) == 2000


def test_old_days_are_pruned_and_a_torn_line_is_skipped(tmp_path):
    old = tmp_path / "queries-2000-01-01.jsonl"
    old.write_text(json.dumps({"kind": "ask", "ts": 1.0}) + "\n")
    today = day_file(tmp_path, time.time())
    today.write_text(json.dumps({"kind": "ask", "request_id": "a", "ts": time.time()}) + "\n"
                     + '{"kind": "ask", "requ')  # a crash mid-line
    log = QueryLog(tmp_path, retention_days=30)
    log.close()
    assert not old.exists()
    assert [r["request_id"] for r in read_log(tmp_path)] == ["a"]
    assert list(read_log(tmp_path, since=time.time() + 60)) == []


def test_personal_data_never_reaches_the_log(tmp_path):
    from tasks.lib.querylog import redacted

    record = {"kind": "ask", "question": "refund to jo@x.org?", "answer": "call +44 20 7946 0958",
              "comment": None, "doc_ids": ["a"]}
    assert redacted(record) == {**record, "question": "refund to [EMAIL]?", "answer": "call [PHONE]"}
    assert record["question"] == "refund to jo@x.org?"  # not mutated
