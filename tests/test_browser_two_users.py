"""Two visitors on one server, in a real headless Chromium (issue 11's two-user cases).

- Two Starts in the same second, from two browsers with the same file: two run folders, and
  each tab follows and shows its own run.
- A closed tab's run does not hold the training slot for good: another visitor's run waits
  behind it ("1 ahead of you"), and the closed tab's address, opened again, takes the run up
  and cancels it (keeping its finished epochs), after which the other run trains.

Without workspaces nothing tells visitors apart but the address: the Train page puts the
run's secret in it (``?run=``) while the run is queued or training.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from browser_support import (
    BROWSER_TEST,
    CHROMIUM,
    CHROMIUM_ARGS,
    StreamlitServer,
    app_server,
    report_failure,
    screenshot,
)
from conftest import build_tiny_bert, synthetic_rows, write_csv
from test_browser import LONG, SHORT, goto, idle, no_errors, open_model_and_data

pytestmark = BROWSER_TEST


@pytest.fixture()
def server(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamlitServer]:
    with app_server(
        tmp_path / "home", tmp_path_factory.getbasetemp(), tmp_path / "two_users.log"
    ) as srv:
        yield srv


@pytest.fixture()
def browser():  # one Chromium; each visitor a context of their own (no shared cookies)
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def visitor(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(SHORT)
    return page


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Tab")


def run_folder_shown(page) -> str:
    """The run folder the Train page's result names ("Run folder: `...`")."""
    caption = page.get_by_text("Run folder:", exact=False).inner_text()
    return caption.split("Run folder:", 1)[1].split("(open it", 1)[0].strip().strip("`")


def test_two_visitors_same_second_starts_and_a_closed_tabs_run(
    server: StreamlitServer, browser, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=LONG)
    model_dir = build_tiny_bert(tmp_path / "tiny")
    csv_path = write_csv(tmp_path / "reviews.csv", synthetic_rows(120))  # one name for both
    runs = tmp_path / "home" / "runs"
    alice, bob = visitor(browser), visitor(browser)
    with report_failure(alice, server):
        for page in (alice, bob):
            open_model_and_data(page, server, model_dir, csv_path, "120")
            goto(page, "Train")
            set_number(page, "Epochs", 2)
            idle(page)

        # -- two Starts in the same second --------------------------------------------------
        buttons = [p.get_by_role("button", name="Start training") for p in (alice, bob)]
        clicked = []
        for button in buttons:
            button.click()
            clicked.append(time.monotonic())
        assert clicked[1] - clicked[0] < 1.0, "the two clicks were not in the same second"
        for page in (alice, bob):
            expect(page.get_by_text("Best epoch")).to_be_visible()
            no_errors(page)
        shown = {run_folder_shown(alice), run_folder_shown(bob)}
        assert len(shown) == 2, f"both tabs show one run: {shown}"
        folders = sorted(p for p in runs.iterdir() if (p / "run.json").is_file())
        assert {str(f) for f in folders} == shown, "each tab shows the run it started"
        assert len(folders) == 2
        if folders[0].name.split("_")[0] == folders[1].name.split("_")[0]:  # the same second
            assert folders[1].name == folders[0].name + "-2", "same name: the second gets -2"
        assert all('"status": "finished"' in (f / "run.json").read_text() for f in folders)
        screenshot(bob, "30_two_users_same_second")

        # -- a closed tab's run ---------------------------------------------------------------
        set_number(alice, "Epochs", 10_000)
        set_number(alice, "Patience", 0)
        alice.get_by_role("button", name="Start training").click()
        expect(alice.get_by_text("running · epoch", exact=False)).to_be_visible()
        assert "run" in parse_qs(urlparse(alice.url).query), "the address now carries the run"
        address = alice.url
        alice.context.close()  # the tab is closed; its run trains on in the worker

        set_number(bob, "Epochs", 2)
        bob.get_by_role("button", name="Start training").click()
        expect(bob.get_by_text("Training: queued · next in line", exact=False)).to_be_visible()
        expect(bob.get_by_role("button", name="Cancel")).to_be_visible()  # bob's own only
        screenshot(bob, "31_two_users_waiting_behind_a_closed_tab")

        carol = visitor(browser)  # the closed tab's address, opened again: a new session
        carol.goto(address)
        expect(carol.get_by_text("running · epoch", exact=False)).to_be_visible()
        screenshot(carol, "32_two_users_closed_tab_reopened")
        carol.get_by_role("button", name="Cancel").click()
        expect(carol.get_by_text("Best epoch")).to_be_visible()
        expect(carol.get_by_text("cancelled", exact=True)).to_be_visible()
        no_errors(carol)

        expect(bob.get_by_text("Best epoch")).to_be_visible()  # the slot is free: bob's trained
        no_errors(bob)
        records = [(f / "run.json").read_text() for f in runs.iterdir()]
        assert sum('"status": "cancelled"' in r for r in records) == 1
        assert sum('"status": "finished"' in r for r in records) == 3
