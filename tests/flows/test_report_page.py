"""reports/evaluate/report.html as a person opens it: headless Chromium (Debian's, driven by
Playwright, no browser download) on the report of the demo-run fixture. It renders, its plots
draw, it fetches nothing, sorting and filtering work, and the console stays clean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.lib.report import render_report
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from tests.lib.test_report import load_run

SCREENSHOT_PATH = Path("/tmp/tunedex-report.png")  # for a person to look at after the run

pytestmark = [
    pytest.mark.slow,
    needs_chromium("the report test"),
]
sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="playwright is not installed (pip install -e '.[dev]'; no browser download needed)")


def fake_spaces(per_question: dict[str, Any]) -> dict[str, Any]:
    """Unit vectors for every chunk the fixture retrieved and for its questions, two retrievers."""
    chunks = {h["chunk_id"]: h["doc_id"] for rows in per_question["retrieval"].values()
              for row in rows.values() for h in row["retrieved"]}
    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        v = rng.normal(size=(n, 8))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return {label: {"chunks": unit(len(chunks)), "chunk_doc_ids": list(chunks.values()),
                    "questions": unit(len(per_question["questions"])),
                    "question_doc_ids": [q["doc_ids"] for q in per_question["questions"]]}
            for label in ("base retriever", "LoRA retriever")}


def column_values(page: Any, col: int) -> list[str]:
    return page.locator("#questions tbody tr").evaluate_all(
        f"rows => rows.map(r => r.cells[{col}].dataset.v ?? r.cells[{col}].textContent)")


def test_report_renders_sorts_and_filters_without_errors(tmp_path):
    run = load_run()
    path = tmp_path / "report.html"
    path.write_text(render_report(run["answers"], run["retrieval"], run["per_question"],
                                  losses=run["losses"], spaces=fake_spaces(run["per_question"])),
                    encoding="utf-8")
    problems: list[str] = []  # console errors/warnings, uncaught exceptions, any fetch at all
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda err: problems.append(f"pageerror: {err}"))
            page.on("request", lambda r: problems.append(f"request {r.url}")
                    if not r.url.startswith(("file:", "data:")) else None)
            page.goto(path.as_uri())

            # 1. The recommendation on top, every section, every plot drawn.
            sync_api.expect(page.locator("#recommendation .ship")).to_contain_text("Ship embed (rag)")
            assert page.locator("h2").all_inner_texts() == [
                "Answers", "Retrieval", "Plots", "By topic", "Questions"]
            widths = page.locator("figure svg").evaluate_all(
                "els => els.map(e => e.getBoundingClientRect().width)")
            assert len(widths) == 4 and min(widths) > 200, widths
            rows = page.locator("#questions tbody tr")
            sync_api.expect(rows).to_have_count(24)
            assert rows.first.get_attribute("data-qid") == "acc-02-q6"  # widest disagreement

            # 2. Clicking a header sorts by it (numbers descending first, then ascending).
            page.click("#questions th:has-text('Δ fine-tune')")
            values = [float(v) for v in column_values(page, 1) if v]
            assert values == sorted(values, reverse=True) and len(values) == 24
            page.click("#questions th:has-text('Δ fine-tune')")
            values = [float(v) for v in column_values(page, 1) if v]
            assert values == sorted(values)
            sync_api.expect(page.locator("#questions th:has-text('Δ fine-tune')")).to_have_attribute(
                "aria-sort", "ascending")
            page.click("#questions th:has-text('question')")
            qids = rows.evaluate_all("rows => rows.map(r => r.dataset.qid)")
            assert qids == sorted(qids)

            # 3. The filter keeps the rows holding every typed word.
            page.fill("#filter", "ACC-02-q6")
            sync_api.expect(page.locator("#questions tbody tr:visible")).to_have_count(1)
            sync_api.expect(page.locator("#shown")).to_have_text("1 of 24 questions")
            page.fill("#filter", "no such words")
            sync_api.expect(page.locator("#shown")).to_have_text("0 of 24 questions")
            page.fill("#filter", "")
            sync_api.expect(page.locator("#questions tbody tr:visible")).to_have_count(24)

            # 4. A method's retrieved documents open on click.
            hits = rows.first.locator("details.hits").first
            hits.locator("summary").click()
            sync_api.expect(hits.locator("li").first).to_be_visible()
            page.screenshot(path=str(SCREENSHOT_PATH), full_page=True)
        finally:
            browser.close()
    assert problems == []
