"""The page at / in a real browser: headless Chromium (Debian's, driven by Playwright) against the
real app, served by uvicorn on a free loopback port over the released smoke pipeline."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, SMOKE, needs_chromium, uvicorn_app

SCREENSHOT_PATH = Path("/tmp/tunedex-page.png")  # for a person to look at after the run

pytestmark = [
    pytest.mark.slow,
    needs_chromium("the page test"),
]
sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="playwright is not installed (pip install -e '.[dev]'; no browser download needed)")


def ask(page: Any, setup: str, question: str) -> dict[str, Any]:
    """Pick a setup, type a question, submit; return the /ask response body."""
    page.check(f"input[name=setup][value='{setup}']")
    page.fill("#question", question)
    with page.expect_response(lambda r: r.url.endswith("/ask")) as answered:
        page.click("#go")
    response = answered.value
    assert response.status == 200, response.text()
    body = response.json()
    # the answer area is rendered for this response (the tiny generator may answer ""),
    sync_api.expect(page.locator("#result .meta")).to_contain_text(f"{setup} · release v1")
    sync_api.expect(page.locator("#result .answer")).to_have_count(1)
    return body


def test_page_asks_shows_sources_and_records_feedback(released, tmp_path, monkeypatch):
    from flows.serve import create_app
    from tasks.lib.catalog import Catalog
    from tasks.lib.config import load_config
    from tasks.lib.querylog import read_log

    monkeypatch.chdir(tmp_path)
    # paths.logs_dir is not among the fixture's isolated paths: keep the query log in tmp_path
    cfg = load_config(SMOKE, {**released, "serve.poll_seconds": 0,
                              "paths.logs_dir": str(tmp_path / "logs")})
    problems: list[str] = []  # console errors/warnings, uncaught exceptions, failed fetches

    with uvicorn_app(create_app(cfg)) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.set_default_timeout(60_000)  # one answer from the tiny CPU generator
            page.on("console", lambda m: problems.append(
                f"console.{m.type} at {m.location.get('url')}: {m.text}")
                if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda err: problems.append(f"pageerror: {err}"))
            page.on("response", lambda r: problems.append(f"{r.request.method} {r.url} -> {r.status}")
                    if r.status >= 400 else None)

            # 1. The page loads and names the release serving it.
            page.goto(url)
            sync_api.expect(page.locator("#release")).to_have_text(re.compile(r"^release v1 · "))

            # 2. hybrid answers from retrieved documents: an answer and its sources.
            hybrid = ask(page, "hybrid", "How much is the Basic plan?")
            assert hybrid["contexts"], hybrid
            sources = page.locator("#result .source")
            assert sources.count() >= 1
            assert set(sources.evaluate_all("els => els.map(e => e.dataset.docId)")) <= \
                {c["doc_id"] for c in hybrid["contexts"]}

            # 3. Thumbs up thanks the user (the record is checked in the log below).
            with page.expect_response(lambda r: r.url.endswith("/feedback")) as rated:
                page.click("#thumbs-up")
            assert rated.value.status == 204, rated.value.text()
            sync_api.expect(page.locator("#result .feedback")).to_contain_text("Thanks")
            page.screenshot(path=str(tmp_path / "page-hybrid.png"), full_page=True)
            shutil.copyfile(tmp_path / "page-hybrid.png", SCREENSHOT_PATH)

            # 4. base answers without documents: no sources on the page.
            base = ask(page, "base", "How much is the Basic plan?")
            assert base["contexts"] == [] and base["request_id"] != hybrid["request_id"]
            sync_api.expect(page.locator("#result .source")).to_have_count(0)
            sync_api.expect(page.locator("#result .sources")).to_have_count(0)
            page.screenshot(path=str(tmp_path / "page-base.png"), full_page=True)
        finally:
            browser.close()

    # The server has stopped, so its recorder has drained the query log to disk.
    records = list(read_log(Catalog(cfg.paths).query_log_dir))
    asks = {r["request_id"]: r for r in records if r["kind"] == "ask"}
    assert asks[hybrid["request_id"]]["setup"] == "hybrid"
    assert asks[base["request_id"]]["setup"] == "base"
    feedback = [r for r in records if r["kind"] == "feedback"]
    assert [(r["rates"], r["rating"]) for r in feedback] == [(hybrid["request_id"], 1)]
    assert problems == []  # no console errors or warnings, no uncaught exceptions, no 4xx/5xx


def test_monitor_report_renders_without_errors(tmp_path):
    """reports/monitor/report.html as a person opens it: headings, tables, the chart, no console
    errors (the page is self-contained: no scripts, no external assets)."""
    from tasks.lib.config import MonitorConfig
    from tasks.lib.monitor_report import build_report, render_html
    from tasks.monitor import check_rules, flat_metrics

    metrics = {"volume": {"requests": 40, "questions": 40, "distinct": 38, "feedback": 12,
                          "enough": True, "min_questions": 20, "since": 1.7e9, "until": 1.7e9 + 60},
               "drift": {"status": "ok", "p_value": 0.002, "mmd2": 0.09, "method": "MMD²"},
               "confidence": {"status": "ok", "p_value": 0.3, "served_median": 0.5,
                              "reference_median": 0.5, "floor": 0.35, "floor_source": "q",
                              "low_share": {"rate": 0.1, "low": 0.04, "high": 0.23, "count": 4, "n": 40}},
               "feedback": {"status": "ok", "down": {"rate": 0.25, "low": 0.09, "high": 0.53,
                                                     "count": 3, "n": 12}},
               "examples": [{"question": "Is <b>this</b> drift?", "witness": 0.1, "top1": 0.2,
                             "top_doc": "d1"}]}
    checks = check_rules(flat_metrics(metrics), MonitorConfig().rules)
    report = build_report(3, {"source": "promote run x"}, metrics,
                          {"action": "triggered", "reason": "drift.p_value = 0.002 < 0.01",
                           "detail": "started deployment tunedex-pipeline/retrain", "checks": checks},
                          {"added": 1, "pending": 1, "review_path": "reports/monitor/review.jsonl"},
                          1.7e9 + 120)
    history = [{"at": f"run {i}", "release": 3, "action": "none", "drift.p_value": p}
               for i, p in enumerate((0.4, 0.2, 0.002))]
    path = tmp_path / "report.html"
    path.write_text(render_html(report, history), encoding="utf-8")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1600})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        sync_api.expect(page.locator("h1")).to_have_text("Monitor — release v3")
        sync_api.expect(page.locator(".banner")).to_contain_text("the retrain deployment was started")
        assert page.locator("h2").all_inner_texts() == [
            "Volume", "Measures", "Rules", "Most drifted questions", "Harvested for review", "History"]
        assert page.locator("svg circle").count() == 3
        assert "Is <b>this</b> drift?" in page.locator("table").nth(3).inner_text()  # shown, not parsed
        page.screenshot(path="/tmp/tunedex-monitor-report.png", full_page=True)
        browser.close()
    assert errors == []
