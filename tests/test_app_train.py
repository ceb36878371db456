"""The Train page: only the settings that apply to the strategy, stages, no empty runs, and
training through the queue (a worker process; a reloaded tab sees the run)."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from conftest import shown, synthetic_rows, unmarked
from streamlit.testing.v1 import AppTest

from embedgen import jobs

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60


def run_page(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def go(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"pages/{page}.py")
    return run_page(at)


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if unmarked(b.label) == label).click()
    return run_page(at)


def train_page(at: AppTest, model_dir: Path, rows: int = 120) -> AppTest:
    """Load the tiny model, upload ``rows`` synthetic reviews and open the Train page."""
    go(at, "1_Model")
    at.radio(key="model_source").set_value("Folder on this machine").run()
    at.text_input(key="model_folder").input(str(model_dir)).run()
    click(at, "Load model")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["text", "label"])
    writer.writerows(synthetic_rows(rows))
    go(at, "2_Data")
    at.get("file_uploader")[0].upload("reviews.csv", buf.getvalue().encode(), "text/csv")
    run_page(at)
    return go(at, "3_Train")


def keys(at: AppTest) -> set[str]:
    return {w.key for w in [*at.number_input, *at.checkbox] if w.key}


def test_the_form_shows_only_the_settings_of_the_chosen_strategy(
    app: AppTest, tiny_model_dir: Path
) -> None:
    train_page(app, tiny_model_dir)
    common = {"train_dim", "train_epochs", "train_patience", "train_batch", "train_head_lr"}
    head = keys(app)
    assert common <= head
    assert "train_cache_features" in head
    assert not head & {"train_lr", "train_top_k", "train_embeddings"}, "they do nothing for head"

    app.selectbox(key="train_strategy").set_value("top-k")
    top_k = keys(run_page(app))
    assert {"train_lr", "train_top_k"} <= top_k
    assert not top_k & {"train_embeddings", "train_cache_features"}

    app.selectbox(key="train_strategy").set_value("full")
    full = keys(run_page(app))
    assert {"train_lr", "train_embeddings"} <= full
    assert not full & {"train_top_k", "train_cache_features"}


def test_a_head_run_ends_in_its_last_epoch_stage_and_trains_with_the_defaults_that_apply(
    app: AppTest, tiny_model_dir: Path
) -> None:
    train_page(app, tiny_model_dir)
    app.number_input(key="train_epochs").set_value(2)
    app.number_input(key="train_dim").set_value(8)
    click(app, "Start training")
    job = app.session_state["train_job"]
    assert job.wait(TIMEOUT)
    run_page(app)
    progress = jobs.read_progress(job.folder)  # what the worker last reported
    assert (progress["stage"], progress["unit"]) == ("epoch 2 of 2", "rows")
    run = app.session_state["train_run"]
    assert not run.cancelled and run.config.cache_features
    assert str(run.config.strategy) == "head" and run.config.top_k == 2  # the default


def test_a_run_cancelled_before_its_first_epoch_is_neither_kept_nor_listed(
    app: AppTest, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run saved that way by an older version: cancelled, no epoch, F1 0.000.
    old = tmp_path / "home" / "runs" / "2020-01-01T00-00-00_reviews_head"
    old.mkdir(parents=True)
    (old / "run.json").write_text(
        json.dumps({"status": "cancelled", "history": [], "best": None, "started": "2020"})
    )
    monkeypatch.setenv(jobs.AUTOSTART_ENV, "0")  # no worker: the run waits, the cancel is in time
    train_page(app, tiny_model_dir)
    app.number_input(key="train_epochs").set_value(50)
    click(app, "Start training")
    job = app.session_state["train_job"]
    assert (str(job.state), job.stage) == ("queued", "next in line")
    waiting = " ".join(shown(w) for w in app.warning)
    assert "No training worker is running on this server, so queued runs wait." in waiting
    click(app, "Cancel")
    assert job.wait(TIMEOUT)
    run_page(app)
    assert str(job.state) == "cancelled"
    assert "nothing was kept" in " ".join(shown(w) for w in app.warning)
    assert app.session_state["train_run"] is None, "no trained head to build a matrix from"
    runs = sorted(p.name for p in (tmp_path / "home" / "runs").iterdir())
    assert runs == [old.name], "the cancelled run left no folder behind"
    assert "No saved runs yet." in [shown(c) for c in app.caption]


def test_max_length_follows_the_data_and_int8_reads_the_texts_of_a_head_run(
    app: AppTest, tiny_model_dir: Path, tiny_encoder
) -> None:
    from embedgen.tokens import text_lengths

    train_page(app, tiny_model_dir)
    data = app.session_state["data_labelled"]
    expected = text_lengths(tiny_encoder.tokenizer, data.texts).suggested
    assert app.number_input(key="train_max_length").value == expected
    captions = " ".join(shown(c) for c in app.caption)
    assert "95th percentile" in captions, "the page says how long the texts are"
    assert "train_int8" in keys(app), "int8 is offered for head on the CPU"
    app.number_input(key="train_epochs").set_value(1)
    app.number_input(key="train_dim").set_value(8)
    app.checkbox(key="train_int8").check()
    click(app, "Start training")
    job = app.session_state["train_job"]
    assert job.wait(TIMEOUT)
    run_page(app)
    run = app.session_state["train_run"]
    assert run.config.int8 and run.config.max_length == expected

    app.selectbox(key="train_strategy").set_value("full")
    assert "train_int8" not in keys(run_page(app)), "the tuned strategies need full precision"


def progress_text(at: AppTest) -> str:
    return " ".join(unmarked(p.proto.text) for p in at.get("progress"))


def test_a_queued_run_trains_in_a_worker_and_a_reloaded_tab_sees_it_and_can_stop_it(
    app: AppTest, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(jobs.AUTOSTART_ENV, "0")  # the worker comes later, started by hand
    monkeypatch.setenv("EMBEDGEN_WORKSPACES", "on")  # a tab takes up only its user's runs
    app.user = {"is_logged_in": True, "email": "a@example.com", "sub": "a"}
    train_page(app, tiny_model_dir)
    app.number_input(key="train_epochs").set_value(10_000)
    app.number_input(key="train_patience").set_value(0)
    click(app, "Start training")
    assert "Training: queued · next in line" in progress_text(app)
    folder = app.session_state["train_job"].folder

    # Another visitor's new tab does not take the run as its own.
    other = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    other.user = {"is_logged_in": True, "email": "b@example.com", "sub": "b"}
    run_page(other)
    go(other, "3_Train")
    assert other.session_state["train_job"] is None

    # A new tab of the same user (a new session, no model loaded) finds the run.
    tab = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    tab.user = app.user
    run_page(tab)
    go(tab, "3_Train")
    assert tab.session_state["train_job"].folder == folder
    assert "Training: queued" in progress_text(tab)

    monkeypatch.setenv(jobs.AUTOSTART_ENV, "1")
    assert jobs.ensure_worker() is not None, "no worker was running, so one starts"
    job = tab.session_state["train_job"]
    deadline = time.monotonic() + TIMEOUT
    while not (job.status == "running" and job.events) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.events, "the worker trains the run: an epoch is done"
    run_page(tab)
    assert "Training: running · epoch " in progress_text(tab)

    click(tab, "Cancel")  # the other tab stops it: the run is the owner's, not the tab's
    assert job.wait(TIMEOUT)
    run_page(tab)
    run = tab.session_state["train_run"]
    assert run.cancelled and run.history, "its finished epochs are kept"
    run_page(app)
    assert str(app.session_state["train_job"].state) == "cancelled"
    assert str(app.session_state["train_run"].folder) == folder


def test_without_workspaces_a_tab_takes_up_only_the_run_whose_address_it_has(
    app: AppTest, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(jobs.AUTOSTART_ENV, "0")  # the run stays queued
    train_page(app, tiny_model_dir)
    click(app, "Start training")
    folder = app.session_state["train_job"].folder
    secret = app.query_params["run"]  # the page's address now carries the run's secret
    assert isinstance(secret, str) and len(secret) >= 16
    assert secret not in (Path(folder) / "run.json").read_text("utf-8"), "only its hash is kept"
    assert "This page's address now brings the run back" in " ".join(shown(c) for c in app.caption)

    # Another visitor's tab: the shared runs folder's run is not theirs.
    other = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    run_page(other)
    go(other, "3_Train")
    assert other.session_state["train_job"] is None, "a shared folder's run may be anyone's"
    captions = " ".join(shown(c) for c in other.caption)
    assert "1 other run(s) are queued or training on this server" in captions
    assert "Cancel" not in [b.label for b in other.button]
    assert "run" not in other.query_params

    # A made-up or another run's secret in the address takes up nothing.
    forged = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    forged.query_params["run"] = "x" * 24
    run_page(forged)
    go(forged, "3_Train")
    assert forged.session_state["train_job"] is None

    # The reloaded tab (a new session with the same address, no model loaded) takes it up.
    reloaded = AppTest.from_file(str(ROOT / "pages" / "3_Train.py"), default_timeout=TIMEOUT)
    reloaded.query_params["run"] = secret
    run_page(reloaded)
    assert reloaded.session_state["train_job"].folder == folder
    assert "Training: queued" in progress_text(reloaded)
    click(reloaded, "Cancel")
    assert reloaded.session_state["train_job"].wait(TIMEOUT)
    assert not Path(folder).exists(), "cancelled before a worker took it: nothing is kept"
    run_page(reloaded)
    assert "run" not in reloaded.query_params, "the address lets go of the ended run"


def test_a_run_secret_is_made_by_the_server_never_taken_from_the_address(
    app: AppTest, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Session fixation: a visitor sent to ``/Train?run=<a value someone else chose>`` who then
    starts a run must not make that value the run's secret, or its chooser could cancel it."""
    from embedgen.runs import read_run_record

    monkeypatch.setenv(jobs.AUTOSTART_ENV, "0")  # the run stays queued
    chosen = "Attacker-chosen-value-0123"
    app.query_params["run"] = chosen
    run_page(app)
    train_page(app, tiny_model_dir)
    click(app, "Start training")
    folder = app.session_state["train_job"].folder
    record = read_run_record(folder)
    assert not record.owned_by(chosen), "the run's secret was taken from the address"
    secret = app.query_params["run"]
    assert secret != chosen and record.owned_by(secret), "the address carries the run's own"

    # Whoever chose the value opens the same address: it finds nothing and can cancel nothing.
    chooser = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    chooser.query_params["run"] = chosen
    run_page(chooser)
    go(chooser, "3_Train")
    assert chooser.session_state["train_job"] is None
    assert "Cancel" not in [b.label for b in chooser.button]


def test_an_address_that_finds_a_run_does_not_lend_its_secret_to_the_next_run(
    app: AppTest, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tab opened on another run's address follows that run; a run it starts afterwards
    gets a secret of its own, so the address's sender cannot cancel it."""
    from embedgen.runs import read_run_record

    monkeypatch.setenv(jobs.AUTOSTART_ENV, "0")
    train_page(app, tiny_model_dir)
    click(app, "Start training")
    first_secret = app.query_params["run"]

    visitor = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    visitor.query_params["run"] = first_secret
    run_page(visitor)
    train_page(visitor, tiny_model_dir)
    assert visitor.session_state["train_job"].folder == app.session_state["train_job"].folder
    click(visitor, "Cancel")  # whoever holds the address may stop that run
    assert visitor.session_state["train_job"].wait(TIMEOUT)
    run_page(visitor)
    click(visitor, "Start training")
    folder = visitor.session_state["train_job"].folder
    record = read_run_record(folder)
    assert not record.owned_by(first_secret), "the next run reused the address's secret"
    assert record.owned_by(visitor.query_params["run"])


def test_an_interrupted_run_says_what_it_kept_and_opens_as_interrupted(
    app: AppTest, tiny_model_dir: Path, synthetic_data
) -> None:
    """A run whose worker died after keeping an epoch: listed and opened as "interrupted"
    (not "failed", not "finished"), saying which epoch it kept."""
    from embedgen.models import load_encoder
    from embedgen.paths import new_run_folder, runs_dir
    from embedgen.runs import RUN_FILE, train_and_save
    from embedgen.train import FinetuneConfig

    folder = new_run_folder("reviews", "head", runs_dir())
    encoder = load_encoder(str(tiny_model_dir), allow_download=False)
    train_and_save(encoder, synthetic_data, FinetuneConfig(epochs=2, dim=8), folder)
    record = json.loads((folder / RUN_FILE).read_text("utf-8"))
    # as a killed worker leaves it: still "running", its process gone, no heartbeat
    record.update(status="running", pid=2**22 + 7, message="")
    del record["finished"]
    (folder / RUN_FILE).write_text(json.dumps(record), "utf-8")

    go(app, "3_Train")
    pick = app.selectbox(key="train_saved_pick")
    [label] = [o for o in pick.options if folder.name in o]
    assert "interrupted" in label, label
    pick.set_value(label).run()
    click(app, "Open run")
    assert {m.label: m.value for m in app.metric}["Status"] == "interrupted"
    said = " ".join(shown(c) for c in app.caption)
    assert "2 epochs finished before it stopped" in said and "is kept" in said, said
