"""A reloaded tab takes up its work (embedgen.ui.visit): the model, the data, the run, the
matrices and the jobs under way come back from the server, found by the secret the server put
in the address; a value the visitor chose finds nothing and is never adopted."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cue_rows, shown, synthetic_rows
from streamlit.testing.v1 import AppTest
from test_app import (
    build_default_matrix,
    click,
    csv_bytes,
    go,
    load_model,
    start_long_training,
    upload,
    wait_for,
)

from embedgen import jobs

ROOT = Path(__file__).resolve().parents[1]


def reopen(at: AppTest, page: str | None = None) -> AppTest:
    """The same address in a new session: what a reload of ``at``'s tab does.

    In a browser every page runs through app.py, which keeps what the run changed when the
    page ends; AppTest runs a page on its own, so one more run of it keeps the last one's."""
    at.run()
    again = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    again.query_params = dict(at.query_params)
    again.run()
    assert not again.exception, [e.value for e in again.exception]
    return go(again, page) if page else again


def train(at: AppTest, epochs: int = 2) -> None:
    go(at, "3_Train")
    at.number_input(key="train_epochs").set_value(epochs)
    at.number_input(key="train_dim").set_value(8)
    click(at, "Start training")
    wait_for(at, "train_job")


def test_a_reload_brings_back_model_data_run_and_matrices(
    app: AppTest, tiny_model_dir: Path
) -> None:
    load_model(app, tiny_model_dir)
    upload(app, "评论.csv", csv_bytes(synthetic_rows(120), encoding="gbk"))
    train(app)
    go(app, "4_Matrix")
    app.radio(key="matrix_method").set_value("projected")
    click(app, "Build matrix")
    wait_for(app, "matrix_job")
    assert app.query_params.get("visit"), "the address carries the visit once there is work"
    before = app.session_state

    again = reopen(app, "4_Matrix")
    after = again.session_state
    assert after["model_loaded"] == before["model_loaded"]
    go(again, "1_Model")  # its form shows the model taken up, not the default hub id
    assert again.radio(key="model_source").value == "Folder on this machine"
    assert again.text_input(key="model_folder").value == str(tiny_model_dir)
    go(again, "4_Matrix")
    assert after["train_run"].folder == before["train_run"].folder
    assert len(after["data_labelled"]) == len(before["data_labelled"]) == 120
    assert list(after["matrices"]) == list(before["matrices"]) == ["projected-tuned-cjk"]
    restored, built = (
        after["matrices"]["projected-tuned-cjk"],
        before["matrices"]["projected-tuned-cjk"],
    )
    assert restored.key == built.key and restored.folder == built.folder
    assert (restored.matrix.vectors == built.matrix.vectors).all()
    assert any("projected-tuned-cjk" in shown(m) for m in again.markdown), "listed on the page"
    # The Data page shows the upload as chosen: the file, not the sample, nor a request for one.
    go(again, "2_Data")
    assert any("评论.csv" in shown(c) and "uploaded earlier" in shown(c) for c in again.caption)
    assert again.radio(key="data_source").value == "Upload a file"


def test_a_value_the_visitor_chose_finds_nothing_and_is_not_adopted(
    app: AppTest, tiny_model_dir: Path
) -> None:
    load_model(app, tiny_model_dir)
    app.run()  # (see reopen)
    owner = app.query_params["visit"]
    chosen = "chosen-by-someone-else-1234"
    stranger = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    stranger.query_params = {"visit": chosen}
    stranger.run()
    assert stranger.session_state["model_loaded"] is None, "an unknown value restores nothing"
    assert "visit" not in stranger.query_params, "and leaves the address"
    load_model(stranger, tiny_model_dir)
    stranger.run()
    assert stranger.query_params["visit"] not in (chosen, owner), "the server makes its own"
    # The owner's own address still finds the owner's work, and only that.
    assert reopen(app).session_state["model_loaded"] == app.session_state["model_loaded"]


def test_a_switch_from_the_sample_back_to_upload_asks_for_a_file(app: AppTest) -> None:
    go(app, "2_Data")
    app.radio(key="data_source").set_value(app.radio(key="data_source").options[1]).run()
    assert app.session_state["data_labelled"] is not None
    app.radio(key="data_source").set_value("Upload a file").run()
    assert not any("uploaded earlier" in shown(c) for c in app.caption)
    assert app.session_state["data_labelled"] is None


def test_a_reload_takes_up_a_queued_job_and_shows_its_result(
    app: AppTest, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_model(app, tiny_model_dir)
    upload(app, "reviews.csv", csv_bytes(cue_rows(400)))
    train(app)
    jobs.stop_started_worker()
    monkeypatch.setenv(jobs.AUTOSTART_ENV, "0")  # the job waits in the queue over the reload
    go(app, "4_Matrix")
    click(app, "Compute the trade-off")
    queued = app.session_state["evaluate_tradeoff_job"]
    assert queued is not None and queued.active

    again = reopen(app, "4_Matrix")
    job = again.session_state["evaluate_tradeoff_job"]
    assert job is not None and job.folder == queued.folder and job.tag == queued.tag
    assert job.active
    monkeypatch.setenv(jobs.AUTOSTART_ENV, "1")
    jobs.ensure_worker()
    wait_for(again, "evaluate_tradeoff_job")
    assert again.get("plotly_chart"), "the reloaded tab draws the job's result"


def test_a_reload_during_an_estimate_still_builds_the_matrix(
    app: AppTest, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: Build matrix first queues an estimate; a reload before it ended dropped the
    build (the visit kept no estimate), and the user had to press Build again."""
    load_model(app, tiny_model_dir)
    upload(app, "reviews.csv", csv_bytes(synthetic_rows(60)))
    jobs.stop_started_worker()
    monkeypatch.setenv(jobs.AUTOSTART_ENV, "0")  # the estimate waits in the queue
    go(app, "4_Matrix")
    click(app, "Build matrix")
    estimate = app.session_state["matrix_estimate_job"]
    assert estimate is not None and estimate.active and app.session_state["matrix_job"] is None

    again = reopen(app, "4_Matrix")
    taken = again.session_state["matrix_estimate_job"]
    assert taken is not None and taken.folder == estimate.folder
    assert taken.tag["request"].options == estimate.tag["request"].options
    monkeypatch.setenv(jobs.AUTOSTART_ENV, "1")
    jobs.ensure_worker()
    wait_for(again, "matrix_job")
    (entry,) = again.session_state["matrices"].values()
    assert entry.name == "input-base-cjk", "the matrix asked for before the reload"


def test_a_reload_takes_up_a_training_under_way(app: AppTest, tiny_model_dir: Path) -> None:
    job = start_long_training(app, tiny_model_dir)

    again = reopen(app, "1_Model")  # not the Train page: the visit, not ?run=, brings it back
    taken = again.session_state["train_job"]
    assert taken is not None and taken.folder == job.folder and taken.active
    go(again, "3_Train")
    assert any(b.label == "Cancel" for b in again.button), "the reloaded tab can cancel it"
    next(b for b in again.button if b.label == "Cancel").click()
    again.run()
    wait_for(again, "train_job")
    assert not job.active


def test_benchmark_files_stay_in_use_over_other_pages_and_a_reload(
    app: AppTest, tiny_model_dir: Path
) -> None:
    """Issue 21: the similarity files vanished after a visit to another page."""
    load_model(app, tiny_model_dir)
    build_default_matrix(app)
    (entry,) = app.session_state["matrices"].values()
    first, second, third = entry.matrix.vocab[:3]
    pairs = f"{first}\t{second}\t9\n{third}\t{first}\t1\n".encode()
    go(app, "6_Evaluate")
    app.get("file_uploader")[0].upload("mine.txt", pairs, "text/plain").run()
    wait_for(app, "evaluate_scores_job")
    assert list(app.dataframe[0].value["file"]) == ["mine.txt"]

    go(app, "5_Explore")
    go(app, "6_Evaluate")
    in_use = [shown(c) for c in app.caption if "In use:" in shown(c)]
    assert len(in_use) == 1 and "mine.txt" in in_use[0], "still in use after another page"
    assert list(app.dataframe[0].value["file"]) == ["mine.txt"], "and still scored"

    again = reopen(app, "6_Evaluate")
    wait_for(again, "evaluate_scores_job")
    assert any("mine.txt" in shown(c) for c in again.caption if "In use:" in shown(c))
    assert list(again.dataframe[0].value["file"]) == ["mine.txt"], "scored after the reload"

    next(b for b in again.button if b.label == "Remove").click().run()
    assert not [c for c in again.caption if "In use:" in shown(c)]
    assert any("Upload one or more" in shown(i) for i in again.info)


def test_a_finished_map_is_drawn_again_after_a_reload(app: AppTest, tiny_model_dir: Path) -> None:
    """Issue 21: after a reload the map was one "Compute map" click away."""
    load_model(app, tiny_model_dir)
    build_default_matrix(app)
    go(app, "5_Explore")
    app.selectbox(key="explore_reducer").set_value("pca").run()
    click(app, "Compute map")
    wait_for(app, "explore_projection_job")
    assert app.get("plotly_chart"), "the map is drawn"

    again = reopen(app, "5_Explore")
    assert again.get("plotly_chart"), "drawn again after the reload, without a click"
    assert "Compute map" not in [b.label for b in again.button]
