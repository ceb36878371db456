"""The analyst's workspace in a real headless Chromium (issue 21): Export downloads the matrix
being explored, a build that repeats a saved matrix opens the saved one, two runs are compared
side by side in the Library, a matrix is deleted after a yes, and another browser opens a run
with its matrix from the Library without typing a path.

Marked ``browser``: ``python -m pytest tests/test_browser_library.py -m browser``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from browser_support import BROWSER_TEST, StreamlitServer, report_failure
from conftest import build_tiny_bert, synthetic_rows, write_csv
from test_browser import (  # noqa: F401 - page and server: test_browser's fixtures
    LONG,
    SHORT,
    goto,
    idle,
    no_errors,
    open_model_and_data,
    page,
    server,
)
from test_browser_reload import train

pytestmark = BROWSER_TEST


def build(tab, method: str | None = None) -> None:
    """Press Build matrix on the Matrix page (``method`` chosen first) and let it run."""
    goto(tab, "Matrix")
    if method is not None:
        tab.get_by_role("radiogroup", name="Method").get_by_text(method, exact=True).click()
        idle(tab)
    tab.get_by_role("button", name="Build matrix").click()
    idle(tab)


CONTEXTUAL = "contextual-L2-labels0.1-tuned-cjk"  # the default matrix of a tiny run


def wait_until(tab, done, timeout_ms: int = LONG) -> None:
    """Poll ``done()`` (work a worker does on disk) every 250 ms until it is true."""
    for _ in range(timeout_ms // 250):
        if done():
            return
        tab.wait_for_timeout(250)
    raise AssertionError(f"not done in {timeout_ms / 1000:.0f} s")


def choose(tab, box: str, option: str) -> None:
    """Pick ``option`` (its text, in part) in the select box labelled ``box``."""
    tab.get_by_test_id("stSelectbox").filter(has_text=box).click()
    tab.get_by_role("option").filter(has_text=option).first.click()
    idle(tab)
    if tab.get_by_role("listbox").count():  # still open (the option was the one shown)
        tab.keyboard.press("Escape")
        idle(tab)


def test_export_opens_compares_and_deletes_in_a_real_browser(
    server: StreamlitServer,  # noqa: F811 - test_browser's fixture, imported above
    page,  # noqa: F811 - test_browser's fixture, imported above
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=SHORT)
    model_dir = build_tiny_bert(tmp_path / "tiny")
    csv_path = write_csv(tmp_path / "reviews.csv", synthetic_rows(120))
    with report_failure(page, server):
        open_model_and_data(page, server, model_dir, csv_path, "120")
        train(page, epochs=1)
        build(page)  # the run's default: contextual, tuned, CJK
        expect(page.get_by_text(CONTEXTUAL).first).to_be_visible(timeout=LONG)
        build(page, "input")  # an untuned one, built last
        expect(page.get_by_text("input-base-cjk").first).to_be_visible(timeout=LONG)

        # Explore the tuned matrix: Export downloads that one, not the one built last.
        goto(page, "Explore")
        choose(page, "Matrix", "contextual")
        goto(page, "Export")
        with page.expect_download(timeout=LONG) as info:
            page.get_by_role("button", name="Matrix (.npy)").click()
        got = tmp_path / "explored.npy"
        info.value.save_as(got)
        runs = next((tmp_path / "home" / "runs").iterdir())
        saved = runs / "matrices" / CONTEXTUAL / "matrix.npy"
        assert np.array_equal(np.load(got), np.load(saved)), "Export gave another matrix"

        # The same settings again: the saved matrix is offered, and opened without a build.
        stamp = saved.stat().st_mtime_ns
        build(page, "contextual")
        page.get_by_role("button", name="Open the saved one").click()
        idle(page)
        assert saved.stat().st_mtime_ns == stamp, "rebuilt instead of opened"
        no_errors(page)

        # A second run (d = 16) and its default matrix, then the two side by side.
        goto(page, "Train")
        box = page.get_by_label("Projection size d", exact=True)
        box.fill("16")
        box.press("Tab")
        page.get_by_role("button", name="Start training").click()
        idle(page)
        second = next(r for r in (tmp_path / "home" / "runs").iterdir() if r != runs)
        expect(page.get_by_text(second.name).first).to_be_visible(timeout=LONG)
        # "Best epoch" was on the page already, for the first run: wait for the second's end
        wait_until(page, lambda: '"finished"' in (second / "run.json").read_text("utf-8"))
        expect(page.get_by_text("Best epoch")).to_be_visible(timeout=LONG)
        build(page, "contextual")
        wait_until(page, lambda: (second / "matrices" / CONTEXTUAL).is_dir())
        goto(page, "Library")
        page.get_by_role("tab", name="Compare runs").click()
        picker = page.get_by_test_id("stMultiSelect")
        for _ in range(2):
            picker.click()
            page.get_by_role("option").filter(has_text=" · run · ").first.click()
            idle(page)
        page.keyboard.press("Escape")
        expect(page.get_by_text("Settings that differ")).to_be_visible(timeout=LONG)
        expect(page.get_by_text("other settings are the same.", exact=False)).to_be_visible()
        words = page.get_by_label("Words (commas between them)")
        words.fill("好，坏")
        words.press("Enter")
        idle(page)
        expect(page.get_by_text("In the matrix each run has as")).to_be_visible(timeout=LONG)
        expect(page.get_by_text("neighbour").first).to_be_visible(timeout=LONG)
        # two words, a list from each run
        expect(page.get_by_test_id("stDataFrame").filter(has_text="neighbour")).to_have_count(4)
        no_errors(page)
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)

        # Delete the untuned matrix, after a yes.
        page.get_by_role("tab", name="Runs and matrices").click()
        choose(page, "Choose one", "input-base-cjk")
        page.get_by_role("button", name="Delete the matrix…").click()
        idle(page)
        page.get_by_role("button", name="Yes, delete it").click()
        idle(page)
        assert not (runs / "matrices" / "input-base-cjk").exists()
        no_errors(page)

        # Another browser opens the first run from the Library: its matrix comes with it.
        other = page.context.browser.new_context(viewport={"width": 1400, "height": 900})
        tab = other.new_page()
        tab.set_default_timeout(SHORT)
        tab.goto(f"{server.url}/Library")
        idle(tab)
        choose(tab, "Choose one", runs.name)
        tab.get_by_role("button", name="Open", exact=False).last.click()
        expect(tab.get_by_text("Opened the run", exact=False)).to_be_visible(timeout=LONG)
        goto(tab, "Explore")
        expect(tab.get_by_text("contextual").first).to_be_visible(timeout=LONG)
        no_errors(tab)
        other.close()
