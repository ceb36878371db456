"""Per-user workspaces: with the operator's ``workspaces`` on, each visitor sees and opens only
their own runs and matrices; without a user name the app goes no further.

Visitors are told apart the way Streamlit tells them: ``st.user`` (``AppTest.user``) for a user
signed in with Streamlit's authentication. AppTest cannot send request headers, so the header a
reverse proxy sends is tested through the helper that reads both
(:func:`embedgen.ui.visitor.user_name`) and, end to end, by a real server and a headless
Chromium (marked ``browser``: ``python -m pytest tests/test_app_workspaces.py -m browser``).
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, StreamlitServer
from conftest import shown, synthetic_rows
from streamlit.testing.v1 import AppTest

from embedgen.paths import new_run_folder, runs_dir
from embedgen.ui.visitor import user_name

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60
ALICE, BOB = "alice@example.com", "bob@example.com"

Visit = Callable[..., AppTest]


def signed_in(email: str) -> dict[str, object]:
    """``st.user`` of someone signed in with Streamlit's authentication (``st.login``)."""
    return {"is_logged_in": True, "email": email, "sub": f"id-{email}"}


@pytest.fixture()
def visit(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Visit:
    """Opens the app as a new visitor (a session of its own) on one server with one home."""
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EMBEDGEN_ALLOWED_ROOTS", str(tmp_path_factory.getbasetemp()))
    monkeypatch.setenv("EMBEDGEN_WORKSPACES", "on")
    monkeypatch.delenv("EMBEDGEN_USER_HEADER", raising=False)

    def open_app(user: dict[str, object]) -> AppTest:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
        at.user = user
        return run(at)

    return open_app


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def go(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"pages/{page}.py")
    return run(at)


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click()
    return run(at)


def errors(at: AppTest) -> str:
    return " ".join(shown(e) for e in at.error)


def train(at: AppTest, model_dir: Path, data_name: str) -> Path:
    """Load the tiny model, upload reviews as ``data_name``, train a head for 1 epoch; the run
    folder."""
    go(at, "1_Model")
    at.radio(key="model_source").set_value("Folder on this machine").run()
    at.text_input(key="model_folder").input(str(model_dir)).run()
    click(at, "Load model")
    buf = io.StringIO()
    csv.writer(buf).writerows([("text", "label"), *synthetic_rows(60)])
    go(at, "2_Data")
    at.get("file_uploader")[0].upload(data_name, buf.getvalue().encode(), "text/csv")
    run(at)
    go(at, "3_Train")
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_dim").set_value(8)
    click(at, "Start training")
    job = at.session_state["train_job"]
    assert job.wait(TIMEOUT), "training did not finish"
    run(at)
    return Path(at.session_state["train_run"].folder)


def saved_runs(at: AppTest) -> list[str]:
    """The run folders' names the Train page offers under "Open a saved run"."""
    go(at, "3_Train")
    picks = [s for s in at.selectbox if s.key == "train_saved_pick"]
    return [option.split(" · ")[0] for option in picks[0].options] if picks else []


def open_folder(at: AppTest, page: str, field: str, button: str, spec: str) -> str:
    """Type ``spec`` into a page's folder field, press its button; the errors shown."""
    go(at, page)
    if page == "1_Model":
        at.radio(key="model_source").set_value("Folder on this machine").run()
    at.text_input(key=field).input(spec).run()
    return errors(click(at, button)).replace(spec, "X")


# -- Who the visitor is ----------------------------------------------------------------------


def test_a_signed_in_user_is_named_by_email_before_any_header() -> None:
    assert user_name(signed_in(ALICE), ["mallory"]) == ALICE
    assert user_name({"is_logged_in": True, "sub": "1234"}, []) == "1234"


def test_without_sign_in_the_proxys_header_names_the_user() -> None:
    assert user_name({}, [" bob "]) == "bob"
    assert user_name({"is_logged_in": False}, ["bob"]) == "bob"
    # st.user holds claims without is_logged_in when no one signed in (AppTest's default).
    assert user_name({"email": "test@example.com"}, []) is None


def test_a_header_sent_twice_or_empty_names_no_one() -> None:
    assert user_name({}, ["mallory", "bob"]) is None, "a forged header plus the proxy's"
    assert user_name({}, [" "]) is None
    assert user_name({}, []) is None


# -- Workspaces ------------------------------------------------------------------------------


def test_each_user_sees_only_their_own_runs(visit: Visit, tiny_model_dir: Path) -> None:
    alice, bob = visit(signed_in(ALICE)), visit(signed_in(BOB))
    assert any(ALICE in shown(c) for c in alice.caption), "the start page says who"
    alices_run = train(alice, tiny_model_dir, "alice.csv")
    bobs_run = train(bob, tiny_model_dir, "bob.csv")
    assert alices_run.parent == runs_dir(ALICE) and bobs_run.parent == runs_dir(BOB)
    assert saved_runs(alice) == [alices_run.name]
    assert saved_runs(bob) == [bobs_run.name]


def test_the_library_lists_and_changes_only_the_users_own_work(
    visit: Visit, tiny_model_dir: Path
) -> None:
    """Issue 21, item 3: the Library of a user with a workspace holds their runs only, every
    one theirs to rename or delete; nobody else's is listed, so none can be opened."""
    alice, bob = visit(signed_in(ALICE)), visit(signed_in(BOB))
    alices_run = train(alice, tiny_model_dir, "alice.csv")
    bobs_run = train(bob, tiny_model_dir, "bob.csv")
    go(alice, "8_Library")
    (only,) = alice.selectbox(key="library_pick").options
    assert only.startswith(alices_run.name + " · run")
    assert any(b.label == "Rename" for b in alice.button), "her own: she may rename it"
    go(bob, "8_Library")
    assert [o.split(" · ")[0] for o in bob.selectbox(key="library_pick").options] == [bobs_run.name]
    assert "your workspace" in " ".join(shown(c) for c in bob.caption)


def test_another_users_run_folder_reads_as_one_that_is_not_there(
    visit: Visit, tiny_model_dir: Path, tmp_path: Path
) -> None:
    alices_run = new_run_folder("reviews.csv", "full", runs_dir(ALICE))
    shutil.copytree(tiny_model_dir, alices_run / "encoder")
    alice, bob = visit(signed_in(ALICE)), visit(signed_in(BOB))
    missing = str(tmp_path / "home" / "no-such-folder")

    # Explore's typed matrix folder: the owner gets as far as the folder's files.
    args = ("5_Explore", "explore_open", "Open")
    assert "matrix.npy" in open_folder(alice, *args, str(alices_run))
    refused = open_folder(bob, *args, str(alices_run))
    assert "not a matrix folder you can open here" in refused
    assert refused == open_folder(bob, *args, missing)

    # The Model page's folder, after its owner loaded it (the server holds it loaded).
    args = ("1_Model", "model_folder", "Load model")
    assert open_folder(alice, *args, str(alices_run / "encoder")) == ""
    refused = open_folder(bob, *args, str(alices_run / "encoder"))
    assert "not a model folder you can open here" in refused
    assert refused == open_folder(bob, *args, "/no/such/folder")
    assert bob.session_state["model_loaded"] is None


def test_with_workspaces_off_everyone_shares_one_home(
    visit: Visit, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDGEN_WORKSPACES", "off")
    alice, bob = visit(signed_in(ALICE)), visit({})
    run_folder = train(alice, tiny_model_dir, "alice.csv")
    assert run_folder.parent == tmp_path / "home" / "runs"
    assert saved_runs(bob) == [run_folder.name]
    assert not (tmp_path / "home" / "users").exists()


@pytest.mark.parametrize("page", [None, "3_Train", "5_Explore"])
def test_with_workspaces_on_a_visitor_without_a_name_is_stopped_with_one_message(
    visit: Visit, tmp_path: Path, page: str | None
) -> None:
    stranger = visit({"email": "test@example.com"})  # claims, but no one signed in
    if page is not None:
        go(stranger, page)
    message = errors(stranger)
    assert "workspace of their own" in message and "X-Forwarded-User" in message
    assert not stranger.title, "the page stopped before drawing anything of its own"
    assert not stranger.button, "no sign-in button when Streamlit's sign-in is not set up"


def test_the_message_names_the_operators_header_and_offers_sign_in_when_set_up(
    visit: Visit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDGEN_USER_HEADER", "X-Remote-User")
    stranger = visit({"is_logged_in": False})
    assert "X-Remote-User" in errors(stranger)
    assert [b.label for b in stranger.button] == ["Sign in"]


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing")
def test_a_real_server_names_the_user_from_the_proxys_header(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package")
    server = StreamlitServer(
        tmp_path / "workspaces.log",
        {
            "EMBEDGEN_HOME": str(tmp_path / "home"),
            "EMBEDGEN_WORKSPACES": "on",
            "EMBEDGEN_NO_WARMUP": "1",
        },
    )
    try:
        server.wait_healthy()
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                # As a proxy that signed alice in would: the header on every request.
                proxied = browser.new_context(extra_http_headers={"X-Forwarded-User": "alice"})
                page = proxied.new_page()
                page.goto(server.url)
                sync_api.expect(page.get_by_text("Signed in as alice")).to_be_visible(
                    timeout=90_000
                )
                direct = browser.new_context()  # no proxy in between: no name
                page = direct.new_page()
                page.goto(server.url)
                sync_api.expect(page.get_by_text("workspace of their own")).to_be_visible(
                    timeout=90_000
                )
                sync_api.expect(page.get_by_role("heading", name="embedgen")).to_have_count(0)
            finally:
                browser.close()
    finally:
        server.stop()
