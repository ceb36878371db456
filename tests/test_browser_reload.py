"""A reload mid-path in a real headless Chromium: the model, the data, the run and the matrix
come back (embedgen.ui.visit), on the page the tab was on and on the others, and the address
that brings them back is one the server made (``?visit=``).

Marked ``browser``: ``python -m pytest tests/test_browser_reload.py -m browser``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from browser_support import BROWSER_TEST, StreamlitServer, app_server, report_failure
from conftest import build_tiny_bert, synthetic_rows, write_csv
from test_browser import LONG, SHORT, goto, idle, no_errors, open_model_and_data, page  # noqa: F401

pytestmark = BROWSER_TEST


@pytest.fixture()
def server(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamlitServer]:
    with app_server(
        tmp_path / "home", tmp_path_factory.getbasetemp(), tmp_path / "reload.log"
    ) as srv:
        yield srv


def train(tab, epochs: int) -> None:
    """Train a head on the Train page (d = 8) and wait for its result."""
    from playwright.sync_api import expect

    goto(tab, "Train")
    for label, value in (("Epochs", str(epochs)), ("Projection size d", "8")):
        box = tab.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Tab")
    tab.get_by_role("button", name="Start training").click()
    expect(tab.get_by_text("Best epoch")).to_be_visible(timeout=LONG)


def visit_of(url: str) -> str | None:
    return (parse_qs(urlparse(url).query).get("visit") or [None])[0]


def test_a_reload_mid_path_brings_back_model_data_run_and_matrix(
    server: StreamlitServer,
    page,  # noqa: F811 - test_browser's fixture, imported above
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=SHORT)
    model_dir = build_tiny_bert(tmp_path / "tiny")
    csv_path = write_csv(tmp_path / "酒店评论.csv", synthetic_rows(120))
    with report_failure(page, server):
        open_model_and_data(page, server, model_dir, csv_path, "120")
        train(page, epochs=2)
        goto(page, "Matrix")
        page.get_by_role("radiogroup", name="Method").get_by_text("projected", exact=True).click()
        page.get_by_role("button", name="Build matrix").click()
        expect(page.get_by_text("Matrices in this session")).to_be_visible(timeout=LONG)
        idle(page)
        secret = visit_of(page.url)
        assert secret, f"the Matrix page's address carries the visit: {page.url}"

        page.reload()
        idle(page)
        expect(page.get_by_text("Matrices in this session")).to_be_visible(timeout=LONG)
        expect(page.get_by_text("projected-tuned-cjk").first).to_be_visible()
        assert visit_of(page.url) == secret, "the reloaded page keeps the same visit"
        no_errors(page)

        goto(page, "Explore")  # the matrix is there to explore, without a rebuild
        expect(page.get_by_test_id("stDataFrame").first).to_be_visible(timeout=LONG)
        assert visit_of(page.url) == secret, "every page's address carries the visit"
        goto(page, "Data")
        expect(page.get_by_text("酒店评论.csv", exact=False).first).to_be_visible()
        expect(page.get_by_text("All 120 rows are usable.")).to_be_visible()
        goto(page, "Train")
        expect(page.get_by_text("Best epoch")).to_be_visible()
        no_errors(page)

        # The address in another browser session brings the same work; a made-up one nothing.
        other = page.context.browser.new_context(viewport={"width": 1400, "height": 900})
        stranger = other.new_page()
        stranger.set_default_timeout(SHORT)
        stranger.goto(f"{server.url}/Matrix?visit=made-up-by-a-stranger-123")
        idle(stranger)
        expect(stranger.get_by_text("Matrices in this session")).to_have_count(0)
        assert visit_of(stranger.url) != "made-up-by-a-stranger-123"
        other.close()


def test_a_layer_chosen_for_one_model_is_not_offered_for_a_deeper_one(
    server: StreamlitServer,
    page,  # noqa: F811 - test_browser's fixture, imported above
    tmp_path: Path,
) -> None:
    """m3e-small (4 layers) then e5-small (12) in the browser: layer 4 chosen for the first
    was offered, and built, for the second. Each model's box starts at its own last layer and
    keeps the choice made for it."""
    from playwright.sync_api import expect

    expect.set_options(timeout=SHORT)
    shallow = build_tiny_bert(tmp_path / "shallow")  # 2 layers
    deeper = build_tiny_bert(tmp_path / "deeper", layers=3)
    csv_path = write_csv(tmp_path / "reviews.csv", synthetic_rows(60))

    def load(folder: Path) -> None:
        goto(page, "Model")
        page.get_by_text("Folder on this machine", exact=True).click()
        box = page.get_by_label("Folder", exact=True)
        box.fill(str(folder))
        box.press("Enter")
        idle(page)
        page.get_by_role("button", name="Load model").click()
        expect(page.get_by_role("heading", name=str(folder))).to_be_visible(timeout=LONG)

    def layer_box():
        goto(page, "Matrix")
        page.get_by_role("radiogroup", name="Method").get_by_text("contextual", exact=True).click()
        idle(page)
        return page.get_by_label("Layer", exact=True)

    with report_failure(page, server):
        open_model_and_data(page, server, shallow, csv_path, "60")
        box = layer_box()
        expect(box).to_have_value("2")
        box.fill("1")
        box.press("Tab")
        page.get_by_role("button", name="Build matrix").click()
        expect(page.get_by_text("contextual-L1-base", exact=False).first).to_be_visible(
            timeout=LONG
        )
        train(page, epochs=1)  # a run of the shallow model: the Matrix page starts from it
        load(deeper)
        goto(page, "Matrix")  # the walk's path: from the shallow run, then the deeper model
        page.get_by_text("Model as it is", exact=False).first.click()
        idle(page)
        expect(layer_box()).to_have_value("3")  # the deeper model's last layer, not 1
        load(shallow)
        expect(layer_box()).to_have_value("1")  # back: the layer chosen for this model
        no_errors(page)
