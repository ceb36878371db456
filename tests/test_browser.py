"""The whole app in a real headless Chromium against a real ``streamlit run`` server.

Model → Data → Train → Matrix → Explore → Export, with a tiny BERT and 120 labelled rows, and
word rows → Evaluate (similarity, purity, the trade-off),
moving between pages through the sidebar so the Streamlit session (and its state) is kept.
Screenshots of every page land in test-artifacts/browser/ for a person to look at.

Run alone: ``python -m pytest tests/test_browser.py -q -m browser -s``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from browser_support import (
    ARTIFACTS,
    BROWSER_TEST,
    CHROMIUM,
    CHROMIUM_ARGS,
    StreamlitServer,
    app_server,
    report_failure,
    screenshot,
)
from conftest import build_tiny_bert, cue_rows, synthetic_rows, write_csv

pytestmark = BROWSER_TEST

SHORT = 20_000  # ms: a page rerun or a widget reacting
LONG = 90_000  # ms: model load, training, matrix, map on 2 CPU cores


@pytest.fixture()
def server(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamlitServer]:
    # The operator lets visitors open the tests' own folders (the tiny model).
    with app_server(
        tmp_path / "home", tmp_path_factory.getbasetemp(), tmp_path / "streamlit.log"
    ) as srv:
        yield srv


@pytest.fixture()
def page(server: StreamlitServer):  # a playwright Page
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(
                viewport={"width": 1400, "height": 900}, accept_downloads=True, locale="en-US"
            )
            pg = context.new_page()
            pg.set_default_timeout(SHORT)
            yield pg
            context.close()
        finally:
            browser.close()


def idle(page) -> None:
    """Wait until the script run that the last action started has finished."""
    page.wait_for_timeout(250)  # the status widget appears a moment after the action
    page.get_by_test_id("stStatusWidget").filter(has_text="Running").wait_for(
        state="hidden", timeout=LONG
    )


def no_errors(page) -> None:
    """No traceback and no red error box on the page."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)


def shoot(page, name: str) -> None:
    """Check the finished page for errors, then keep its screenshot."""
    idle(page)
    no_errors(page)
    screenshot(page, name)


def goto(page, label: str) -> None:
    """Follow the sidebar link: same browser session, so session_state survives."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=label, exact=True).click()
    page.wait_for_url(f"**/{label}*")  # the Train page may add ?run=
    idle(page)


def open_model_and_data(page, server, model_dir: Path, csv_path: Path, rows: str) -> None:
    """Start page → load the model from its folder → upload the CSV (``rows`` usable)."""
    from playwright.sync_api import expect

    page.goto(server.url)
    expect(page.get_by_role("heading", name="embedgen")).to_be_visible(timeout=LONG)
    goto(page, "Model")
    page.get_by_text("Folder on this machine", exact=True).click()
    folder = page.get_by_label("Folder", exact=True)
    folder.fill(str(model_dir))
    folder.press("Enter")
    idle(page)
    page.get_by_role("button", name="Load model").click()
    expect(page.get_by_text("BertModel", exact=True)).to_be_visible(timeout=LONG)
    goto(page, "Data")
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(csv_path))
    expect(page.get_by_text(f"All {rows} rows are usable.")).to_be_visible(timeout=LONG)


def test_whole_app_in_a_real_browser(
    server: StreamlitServer,
    page,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=SHORT)
    started = time.monotonic()
    model_dir = build_tiny_bert(tmp_path / "tiny")
    csv_path = write_csv(tmp_path / "reviews.csv", synthetic_rows(120))
    for old in ARTIFACTS.glob("*"):  # last run's screenshots, failure shot and log
        old.unlink()

    with report_failure(page, server):
        # -- Home ------------------------------------------------------------------------------
        page.goto(server.url)
        expect(page.get_by_role("heading", name="embedgen")).to_be_visible(timeout=LONG)
        shoot(page, "00_home")

        # -- Model -----------------------------------------------------------------------------
        goto(page, "Model")
        expect(page.get_by_text("No model loaded yet.")).to_be_visible()
        page.get_by_text("Folder on this machine", exact=True).click()
        folder = page.get_by_label("Folder", exact=True)
        folder.fill(str(model_dir))
        folder.press("Enter")
        idle(page)
        load = page.get_by_role("button", name="Load model")
        expect(load).to_be_enabled()
        load.click()
        expect(page.get_by_text("BertModel", exact=True)).to_be_visible(timeout=LONG)
        shoot(page, "01_model")

        # -- Data ------------------------------------------------------------------------------
        goto(page, "Data")
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(csv_path))
        expect(page.get_by_text("All 120 rows are usable.")).to_be_visible(timeout=LONG)
        idle(page)
        expect(page.get_by_test_id("stPlotlyChart")).to_be_visible()
        shoot(page, "02_data")

        # -- Train -----------------------------------------------------------------------------
        goto(page, "Train")
        for label, value in (("Epochs", "3"), ("Projection size d", "8")):
            box = page.get_by_label(label, exact=True)
            box.fill(value)
            box.press("Tab")  # commit the value; Enter would submit the form
        page.get_by_role("button", name="Start training").click()
        expect(page.get_by_text("Best epoch")).to_be_visible(timeout=LONG)
        expect(page.get_by_text("Validation accuracy")).to_be_visible()
        idle(page)
        metrics = page.get_by_test_id("stMetric")
        expect(metrics.filter(has_text="Best epoch")).to_contain_text("/ 3")
        expect(metrics.filter(has_text="Status")).to_contain_text("finished")
        shoot(page, "03_train")

        # -- Matrix ----------------------------------------------------------------------------
        goto(page, "Matrix")
        page.get_by_role("radiogroup", name="Method").get_by_text("projected", exact=True).click()
        page.get_by_role("button", name="Build matrix").click()
        expect(page.get_by_text("Matrices in this session")).to_be_visible(timeout=LONG)
        idle(page)
        dims = page.get_by_test_id("stMetric").filter(has_text="Dimensions")
        expect(dims).to_contain_text("8")
        rows = page.get_by_test_id("stMetric").filter(has_text="Rows")
        shown_rows = int(rows.get_by_test_id("stMetricValue").inner_text().replace(",", ""))
        shoot(page, "04_matrix")

        # -- Explore ---------------------------------------------------------------------------
        goto(page, "Explore")
        expect(page.get_by_label("Token or word")).to_have_value("好")
        label = f"{model_dir.name} · tuned · projected · CJK · {shown_rows:,} tokens"
        expect(page.get_by_text(label, exact=True)).to_be_visible()
        table = page.get_by_test_id("stDataFrame").first
        expect(table).to_be_visible()
        # The grid draws on a canvas; its accessible <table> inside the canvas has the cells.
        expect(table.locator("table[role=grid]")).to_have_attribute("aria-rowcount", "11")
        headers = table.locator("th[role=columnheader]")
        expect(headers).to_have_text(["", "token", "cosine"])
        expect(table.locator("tbody tr")).to_have_count(10)
        tokens = table.locator('tbody td[aria-colindex="2"]').all_text_contents()
        scores = [
            float(s) for s in table.locator('tbody td[aria-colindex="3"]').all_text_contents()
        ]
        assert len(tokens) == 10 and "好" not in tokens, tokens
        assert scores == sorted(scores, reverse=True), scores
        shoot(page, "05_explore_neighbours")

        page.get_by_role("tab", name="Map").click()
        page.get_by_test_id("stSelectbox").filter(has_text="Reducer").click()
        page.get_by_role("option", name="pca", exact=True).click()
        idle(page)
        page.get_by_role("button", name="Compute map").click()
        tab = page.get_by_role("tabpanel")
        expect(tab.get_by_test_id("stPlotlyChart")).to_be_visible(timeout=LONG)
        expect(tab.get_by_text("pca 2D of")).to_be_visible()
        shoot(page, "06_explore_map")

        # -- Export ----------------------------------------------------------------------------
        goto(page, "Export")
        saved = {}
        for label, name in (
            ("Matrix (.npy)", "matrix.npy"),
            ("Vocabulary (vocab.txt)", "vocab.txt"),
        ):
            button = page.get_by_role("button", name=label)
            expect(button).to_be_visible(timeout=LONG)
            with page.expect_download(timeout=LONG) as info:
                button.click()
            download = info.value
            assert download.suggested_filename == name
            saved[name] = tmp_path / "downloads" / name
            download.save_as(saved[name])
        shoot(page, "07_export")

        vectors = np.load(saved["matrix.npy"])
        vocab = saved["vocab.txt"].read_text("utf-8").splitlines()
        assert vectors.ndim == 2 and vectors.shape[1] == 8
        assert len(vocab) > 0
        assert vectors.shape[0] == len(vocab) == shown_rows
        assert "好" in vocab and "[PAD]" not in vocab  # specials dropped by default

    elapsed = time.monotonic() - started
    print(f"\nbrowser walk-through: {elapsed:.1f} s; screenshots in {ARTIFACTS}")  # noqa: T201


def test_word_rows_evaluation_and_the_tradeoff_in_a_real_browser(
    server: StreamlitServer,
    page,
    tmp_path: Path,
) -> None:
    """Train → word rows of the data → Evaluate (an uploaded similarity file, purity, the
    trade-off plot), through the sidebar in one session."""
    from conftest import NEGATIVE, POSITIVE
    from playwright.sync_api import expect

    expect.set_options(timeout=SHORT)
    model_dir = build_tiny_bert(tmp_path / "tiny")
    csv_path = write_csv(tmp_path / "reviews.csv", cue_rows(400))
    pairs = [(POSITIVE[i], POSITIVE[i + 1], 9 - i) for i in range(4)]
    pairs += [(POSITIVE[i], NEGATIVE[i], 1 + i / 10) for i in range(4)]
    sim = tmp_path / "mine.txt"
    sim.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in pairs), encoding="utf-8")
    with report_failure(page, server):
        open_model_and_data(page, server, model_dir, csv_path, "400")
        goto(page, "Train")
        epochs = page.get_by_label("Epochs", exact=True)
        epochs.fill("2")
        epochs.press("Tab")
        page.get_by_role("button", name="Start training").click()
        expect(page.get_by_text("Best epoch")).to_be_visible(timeout=LONG)

        goto(page, "Matrix")
        page.get_by_text("Words of your data", exact=True).click()
        idle(page)
        expect(
            page.get_by_role("radiogroup", name="Method").get_by_label("aggregated")
        ).to_be_checked()
        page.get_by_role("button", name="Build matrix").click()
        expect(page.get_by_text("Matrices in this session")).to_be_visible(timeout=LONG)
        expect(
            page.get_by_text("aggregated-L2-labels0.1-tuned-words-reviews", exact=True)
        ).to_be_visible()
        # The matrix's own line (matrix.describe): "aggregated · N words × D · ...".
        expect(page.get_by_text(re.compile(r"aggregated · \d+ words × \d+")).last).to_be_visible()
        # The default corpus contexts: the piece of each text around the word.
        expect(
            page.get_by_text("in pieces of at most 32 characters", exact=False).last
        ).to_be_visible()
        shoot(page, "10_matrix_words")

        goto(page, "Evaluate")
        page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(str(sim))
        idle(page)
        table = page.get_by_test_id("stDataFrame").first
        expect(table).to_be_visible(timeout=LONG)
        expect(table.locator('tbody td[aria-colindex="2"]').first).to_have_text("mine.txt")
        shoot(page, "11_evaluate_similarity")
        page.get_by_role("tab", name="Label purity").click()
        idle(page)
        purity = page.get_by_role("tabpanel").get_by_test_id("stDataFrame")
        expect(purity.first).to_be_visible(timeout=LONG)
        page.get_by_role("tab", name="Trade-off").click()
        idle(page)
        page.get_by_role("button", name="Compute the trade-off").click()
        expect(page.get_by_text("Trade-off: finished")).to_be_visible(timeout=LONG)
        expect(page.get_by_test_id("stPlotlyChart").last).to_be_visible(timeout=LONG)
        shoot(page, "12_evaluate_tradeoff")


def test_a_bookmarked_page_on_a_fresh_server_gets_the_app_navigation(
    server: StreamlitServer,
    page,
) -> None:
    """The first request of a new server is /Data, not the start page."""
    from playwright.sync_api import expect

    page.goto(f"{server.url}/Data")
    expect(page.get_by_role("heading", name="2 · Data")).to_be_visible(timeout=LONG)
    nav = page.get_by_test_id("stSidebarNav")
    expect(nav.get_by_role("link", name="Start", exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name="app", exact=True)).to_have_count(0)
    goto(page, "Model")  # and the navigation works from there
    expect(page.get_by_role("heading", name="1 · Model")).to_be_visible()


def test_progress_cancel_choices_and_overwrites_in_a_real_browser(
    server: StreamlitServer,
    page,
    tmp_path: Path,
) -> None:
    """Issue 9 in the browser: training shows its encoding stage and a cancelled encoding is
    kept; a map is cancelled mid-stage; choices survive page switches; a saved matrix is not
    replaced without asking."""
    from playwright.sync_api import expect

    from embedgen.matrix import EmbeddingMatrix, save_matrix

    expect.set_options(timeout=SHORT)
    model_dir = build_tiny_bert(tmp_path / "tiny")
    # Enough texts that the tiny model's encoding lasts seconds, so Cancel lands in it.
    csv_path = write_csv(tmp_path / "many.csv", synthetic_rows(30_000))
    rng = np.random.default_rng(0)  # a matrix big enough that its map takes seconds
    big = EmbeddingMatrix(
        rng.standard_normal((30_000, 16)).astype(np.float32),
        tuple(f"t{i}" for i in range(30_000)),
    )
    big_folder = save_matrix(big, tmp_path / "big")
    with report_failure(page, server):
        open_model_and_data(page, server, model_dir, csv_path, "30,000")

        # -- Train: the encoding stage shows; Cancel keeps what was encoded -----------------
        goto(page, "Train")
        page.get_by_role("button", name="Start training").click()
        expect(page.get_by_text("encoding 30,000 texts", exact=False)).to_be_visible(timeout=LONG)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "20_train_encoding.png"))  # quick: no resizing
        page.get_by_role("button", name="Cancel").click()
        expect(page.get_by_text("cancelled before its first epoch", exact=False)).to_be_visible(
            timeout=LONG
        )
        page.get_by_role("button", name="Start training").click()
        expect(page.get_by_text("Best epoch")).to_be_visible(timeout=LONG)

        # -- Matrix: the same matrix twice is not replaced without asking --------------------
        goto(page, "Matrix")
        page.get_by_role("radiogroup", name="Method").get_by_text("input", exact=True).click()
        idle(page)
        page.get_by_role("button", name="Build matrix").click()
        expect(page.get_by_text("Matrices in this session")).to_be_visible(timeout=LONG)
        page.get_by_role("button", name="Build matrix").click()
        expect(page.get_by_text("is already saved", exact=False)).to_be_visible()
        shoot(page, "21_matrix_ask_before_replacing")
        page.get_by_role("button", name="Keep both (save as input-base-cjk-2)").click()
        expect(page.get_by_text("input-base-cjk-2", exact=True)).to_be_visible(timeout=LONG)

        # -- Explore: a choice survives a visit to another page ------------------------------
        goto(page, "Explore")
        k = page.get_by_label("How many")
        k.fill("5")
        k.press("Enter")
        idle(page)
        goto(page, "Export")
        goto(page, "Explore")
        expect(page.get_by_label("How many")).to_have_value("5")

        # -- a map cancelled mid-stage -------------------------------------------------------
        page.get_by_text("Open a saved matrix").click()
        opened = page.get_by_label(
            "…or a folder on the server (holds matrix.npy, vocab.txt, manifest.json)"
        )
        opened.fill(str(big_folder))
        opened.press("Enter")
        idle(page)
        page.get_by_test_id("stBaseButton-secondary").filter(has_text="Open").click()
        idle(page)
        page.get_by_test_id("stSelectbox").filter(has_text="Matrix").first.click()
        page.get_by_role("option", name="30,000 rows", exact=False).click()
        idle(page)
        page.get_by_role("tab", name="Map").click()
        idle(page)
        page.get_by_role("button", name="Compute map").click()
        expect(page.get_by_text("UMAP layout", exact=False)).to_be_visible(timeout=LONG)
        page.get_by_role("button", name="Cancel").click()
        expect(page.get_by_text("Map: cancelled", exact=False)).to_be_visible(timeout=SHORT)
        shoot(page, "22_map_cancelled")
