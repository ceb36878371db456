"""User strings in a real browser: what Streamlit's Markdown (links, bold, LaTeX, colour
directives, emoji and icon shortcodes, bare links) makes of them once through
``embedgen.ui.markup``. The CommonMark side is in test_markup; this is Streamlit's own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import BROWSER_TEST, CHROMIUM, CHROMIUM_ARGS, ROOT, StreamlitServer

pytestmark = BROWSER_TEST

PAGE = ROOT / "tests" / "apps" / "markup_page.py"
CASES = [
    "[x](javascript:alert(8)).csv",
    "**坏** _斜_ ~~删~~ `code`",
    "<b>bold</b> &amp; <img src=x onerror=alert(1)>",
    "$x^2$ :red[红] :smile: :material/home: me@example.com http://e.com www.e.com",
    "# 标题 | a | b |",
]
# What Markdown would have made of them: links, emphasis, headings, tables, images, LaTeX,
# icons and emoji, coloured text
MADE = "a, strong, em, del, h1, table, img, .katex, [role=img], span[style*=color]"


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[StreamlitServer]:
    env = {"EMBEDGEN_NO_WARMUP": "1", "MARKUP_CASES": json.dumps(CASES)}
    srv = StreamlitServer(tmp_path / "markup.log", env, script=PAGE)
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


def test_user_strings_show_as_typed(server: StreamlitServer) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(server.url)
            for i, case in enumerate(CASES):
                box = page.locator(f".st-key-case{i}")
                box.locator('[data-testid="stMetric"]').wait_for()

                def shown(selector: str, box=box) -> str:
                    text = box.locator(selector).first.inner_text()
                    return text.replace("\u2060", "").strip()

                assert shown('[data-testid="stCaptionContainer"]') == case
                assert shown('[data-testid="stAlert"]') == case
                code = box.locator("code").inner_text()
                assert shown('[data-testid="stMarkdown"]:has(code)') == f"{case} {code}"
                if ":material/" not in case:  # Streamlit rewrites icons in code spans too
                    assert code == case
                assert shown('[data-testid="stMetricLabel"]') == case
                assert case in box.locator('[data-testid="stProgress"]').inner_text().replace(
                    "\u2060", ""
                )
                made = box.locator(MADE)
                assert made.count() == 0, made.evaluate_all("els => els.map(e => e.outerHTML)")
        finally:
            browser.close()
