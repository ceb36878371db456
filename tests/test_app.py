"""The app's pages, driven through Streamlit's AppTest with a tiny model and real training."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import cue_rows, shown, synthetic_rows, unmarked, workbook_bytes
from streamlit.testing.v1 import AppTest

from embedgen.tokens import is_cjk_token

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60


def go(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def click(at: AppTest, label: str) -> AppTest:
    button = next(b for b in at.button if unmarked(b.label) == label)
    button.click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def build_default_matrix(at: AppTest) -> AppTest:
    """The Matrix page's default matrix, built (its estimate, then the build)."""
    go(at, "4_Matrix")
    click(at, "Build matrix")
    return wait_for(at, "matrix_job")


def texts(elements) -> list[str]:
    return [shown(e) for e in elements]


def csv_bytes(rows: list[tuple[str, str]], encoding: str = "utf-8") -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return buf.getvalue().encode(encoding)


def test_a_model_folder_among_the_allowed_ones_is_picked_not_typed(
    app: AppTest, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21, item 3: no path typed by hand in the normal path. An offline model kept in
    $EMBEDGEN_HOME/models (among the default allowed folders) is offered on the Model page."""
    import os
    import shutil

    monkeypatch.delenv("EMBEDGEN_ALLOWED_ROOTS")  # the defaults: the hub cache and the home
    kept = shutil.copytree(tiny_model_dir, Path(os.environ["EMBEDGEN_HOME"]) / "models" / "mine")
    go(app, "1_Model")
    app.radio(key="model_source").set_value("Local models").run()
    box = app.selectbox(key="model_cached")
    (offered,) = [o for o in box.options if o.startswith("mine (")]
    box.set_value(offered).run()
    click(app, "Load model")
    assert app.session_state["model_loaded"] == (str(kept.resolve()), False)


def load_model(at: AppTest, folder: Path) -> AppTest:
    go(at, "1_Model")
    at.radio(key="model_source").set_value("Folder on this machine").run()
    at.text_input(key="model_folder").input(str(folder)).run()
    return click(at, "Load model")


def upload(at: AppTest, name: str, content: bytes) -> AppTest:
    go(at, "2_Data")
    at.get("file_uploader")[0].upload(name, content, "text/csv")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def wait_for(at: AppTest, key: str) -> AppTest:
    """Wait for the job kept under ``key`` (a matrix build first waits for its estimate, a
    worker's job too, after which the page queues the build), then run the page again."""
    if key == "matrix_job" and "matrix_estimate_job" in at.session_state:
        estimate = at.session_state["matrix_estimate_job"]
        if estimate is not None:
            assert estimate.wait(TIMEOUT), f"the estimate did not finish in {TIMEOUT} s"
            at.run()
            assert not at.exception, [e.value for e in at.exception]
    job = at.session_state[key]
    if job is None:  # the estimate's answer is a question (replace? slow?): nothing queued
        return at
    assert job.wait(TIMEOUT), f"{job.name} did not finish in {TIMEOUT} s"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# -- Model ----------------------------------------------------------------------------------


def test_model_page_shows_what_was_loaded(app: AppTest, tiny_model_dir: Path) -> None:
    load_model(app, tiny_model_dir)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Architecture"] == "BertModel"
    assert metrics["Layers"] == "2" and metrics["Hidden size"] == "32"
    assert metrics["Device"] == "CPU"
    assert not app.error


def test_model_that_cannot_be_had_says_why_and_what_to_do(app: AppTest) -> None:
    go(app, "1_Model")
    app.text_input(key="model_hub_id").input("no-such-org/no-such-model").run()
    click(app, "Load model")
    message = " ".join(texts(app.error))
    assert "no-such-org/no-such-model" in message and "download" in message
    assert "No model loaded yet." in texts(app.info)


# -- Data -----------------------------------------------------------------------------------


def test_gbk_upload_is_read_and_validated(app: AppTest) -> None:
    upload(app, "评论.csv", csv_bytes(synthetic_rows(60), encoding="gbk"))
    assert not app.error
    assert any("All 60 rows are usable" in s for s in texts(app.success))
    data = app.session_state["data_labelled"]
    assert data.label_names == ("正面", "负面")
    assert {m.label: m.value for m in app.metric}["Validation rows"] == "6"


def test_undecodable_upload_names_the_file(app: AppTest) -> None:
    upload(app, "broken.csv", b"text,label\n" + bytes(range(128, 256)) * 4 + b",1\n")
    message = " ".join(texts(app.error))
    assert "broken.csv" in message and "UTF-8" in message
    assert app.session_state["data_labelled"] is None


def test_one_class_upload_explains_the_problem(app: AppTest) -> None:
    upload(app, "one.csv", csv_bytes([("很好吃", "正面"), ("不错", "正面"), ("好", "正面")]))
    message = " ".join(texts(app.error))
    assert "one class" in message and "label" in message
    assert app.session_state["data_labelled"] is None


def test_dropped_rows_are_reported_by_row_number(app: AppTest) -> None:
    rows = synthetic_rows(40)
    rows[3] = ("", "正面")
    upload(app, "gaps.csv", csv_bytes(rows))
    assert any("row 5" in w for w in texts(app.warning)), texts(app.warning)
    assert len(app.session_state["data_labelled"]) == 39


def test_a_workbook_with_several_sheets_offers_them(app: AppTest) -> None:
    upload(app, "book.xlsx", workbook_bytes(synthetic_rows(40)))
    picker = app.selectbox(key="data_sheet")
    assert picker.options == ["说明", "数据"] and picker.value == "说明"
    picker.set_value("数据").run()
    assert not app.exception and not app.error, texts(app.error)
    data = app.session_state["data_labelled"]
    assert len(data) == 40 and data.source_name == "book.xlsx [数据]"
    assert any("book.xlsx [数据]" in c for c in texts(app.caption))


def test_a_broken_workbook_upload_names_the_file(app: AppTest) -> None:
    upload(app, "报表.xlsx", b"PK\x03\x04 not really a workbook")
    message = " ".join(texts(app.error))
    assert "报表.xlsx is not a readable .xlsx workbook" in message, message
    assert app.session_state["data_labelled"] is None


def test_traditional_chinese_big5_upload_is_read(app: AppTest) -> None:
    rows = [("這家餐廳的菜很好吃" + str(i), "好評") for i in range(20)]
    rows += [("外送太慢了，飯菜都涼了" + str(i), "差評") for i in range(20)]
    upload(app, "評論.csv", csv_bytes(rows, encoding="cp950"))
    assert not app.error, texts(app.error)
    data = app.session_state["data_labelled"]
    assert set(data.label_names) == {"好評", "差評"}
    assert data.texts[0].startswith(("這家餐廳", "外送太慢"))


def test_sample_dataset_is_offered(app: AppTest) -> None:
    go(app, "2_Data")
    app.radio(key="data_source").set_value(app.radio(key="data_source").options[1]).run()
    data = app.session_state["data_labelled"]
    assert data is not None and data.num_classes == 4
    assert not app.error


def test_upload_survives_a_visit_to_another_page(app: AppTest) -> None:
    upload(app, "reviews.csv", csv_bytes(synthetic_rows(40)))
    go(app, "1_Model")
    go(app, "2_Data")
    assert app.session_state["data_labelled"] is not None
    assert any("uploaded earlier" in c for c in texts(app.caption))


# -- Train → Matrix → Explore → Export --------------------------------------------------------


def test_train_matrix_explore_export(app: AppTest, tiny_model_dir: Path, tmp_path: Path) -> None:
    load_model(app, tiny_model_dir)
    upload(app, "reviews.csv", csv_bytes(synthetic_rows(120)))

    go(app, "3_Train")
    app.number_input(key="train_epochs").set_value(3)
    app.number_input(key="train_dim").set_value(8)
    click(app, "Start training")
    wait_for(app, "train_job")
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Status"] == "finished"
    run = app.session_state["train_run"]
    assert len(run.history) == 3
    record = json.loads(Path(run.folder, "run.json").read_text("utf-8"))
    assert Path(run.folder).parent == tmp_path / "home" / "runs"
    assert record["status"] == "finished"

    go(app, "4_Matrix")
    app.radio(key="matrix_method").set_value("projected")
    click(app, "Build matrix")
    wait_for(app, "matrix_job")
    entry = app.session_state["matrices"]["projected-tuned-cjk"]  # Chinese data: CJK rows
    assert entry.matrix.shape[1] == 8
    assert (Path(entry.folder) / "matrix.npy").exists()
    metrics = {m.label: m.value for m in app.metric}
    assert (metrics["Rows"], metrics["Dimensions"]) == (f"{entry.matrix.shape[0]:,}", "8")

    go(app, "5_Explore")
    table = app.dataframe[0].value
    assert len(table) == 10 and "好" not in set(table["token"])
    assert table["cosine"].is_monotonic_decreasing

    app.selectbox(key="explore_reducer").set_value("pca")
    click(app, "Compute map")
    wait_for(app, "explore_projection_job")
    assert app.get("plotly_chart"), "the map should be drawn once computed"

    go(app, "7_Export")
    labels = [b.label for b in app.get("download_button")]
    assert "Matrix (.npy)" in labels and "Everything as one zip" in labels


def start_long_training(app: AppTest, model_dir: Path):  # the Job
    """Start a 200-epoch full fine-tune (no early stop) from the Train page; return its job."""
    load_model(app, model_dir)
    upload(app, "reviews.csv", csv_bytes(synthetic_rows(120)))
    go(app, "3_Train")
    app.selectbox(key="train_strategy").set_value("full")
    app.number_input(key="train_epochs").set_value(200)
    app.number_input(key="train_patience").set_value(0)
    click(app, "Start training")
    return app.session_state["train_job"]


def test_cancel_keeps_what_was_trained(app: AppTest, tiny_model_dir: Path) -> None:
    job = start_long_training(app, tiny_model_dir)
    while not job.events:
        job.wait(0.1)
    job.request_cancel()
    wait_for(app, "train_job")
    run = app.session_state["train_run"]
    assert run.cancelled
    assert 1 <= len(run.history) < 200


def test_training_keeps_running_while_the_user_visits_other_pages(
    app: AppTest, tiny_model_dir: Path
) -> None:
    job = start_long_training(app, tiny_model_dir)
    go(app, "1_Model")
    go(app, "4_Matrix")
    done_before = job.done
    go(app, "3_Train")
    assert job.active, "training must go on while other pages are shown"
    assert app.session_state["train_job"] is job
    assert any(p.value is not None for p in app.get("progress")), "the progress bar is back"
    assert any(b.label == "Cancel" for b in app.button)
    while job.done == done_before or not job.events:  # an epoch done: the run is kept
        job.wait(0.05)
    job.request_cancel()
    wait_for(app, "train_job")
    assert app.session_state["train_run"].cancelled


def npy_caption(at: AppTest) -> str:
    return next(c for c in texts(at.caption) if "row i is line i of vocab.txt" in c)


def test_rebuilding_a_matrix_under_the_same_name_shows_the_new_one(
    app: AppTest, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Neighbours and downloads follow the matrix just built, not a cached older one.

    The name says how a matrix was made, not from which model: the untuned input matrix of a
    second model is "input-base" too.
    """
    import numpy as np
    from conftest import build_tiny_bert

    from embedgen.neighbours import NeighbourIndex

    load_model(app, tiny_model_dir)
    go(app, "4_Matrix")
    click(app, "Build matrix")
    wait_for(app, "matrix_job")
    go(app, "5_Explore")
    go(app, "7_Export")
    assert "× 32," in npy_caption(app)  # the tiny model's hidden size
    load_model(app, build_tiny_bert(tmp_path / "narrow", hidden=4, seed=1))
    go(app, "4_Matrix")
    click(app, "Build matrix")
    wait_for(app, "matrix_job")
    entry = app.session_state["matrices"]["input-base"]
    assert entry.matrix.shape[1] == 4

    go(app, "5_Explore")
    shown = app.dataframe[0].value["cosine"].to_numpy()
    expected = [n.score for n in NeighbourIndex(entry.matrix).top_k("好")]
    assert np.allclose(shown, expected, atol=1e-6), "neighbours came from the older matrix"
    go(app, "7_Export")
    assert "× 4," in npy_caption(app), "the downloads are the older matrix's"


def test_a_folder_that_is_not_a_matrix_is_explained(app: AppTest, tmp_path: Path) -> None:
    go(app, "5_Explore")
    app.text_input(key="explore_open").input(str(tmp_path)).run()
    click(app, "Open")
    message = " ".join(texts(app.error))
    assert f"'{tmp_path.name}'" in message and "matrix.npy" in message
    assert str(tmp_path.parent) not in message, "messages name a matrix, not the server's folders"


def _page_with_a_long_job() -> None:
    import time

    import streamlit as st
    from apps.quick_job import quick_job

    from embedgen.runs import RunStatus
    from embedgen.ui import jobpanel

    if "long_job" not in st.session_state:
        job = st.session_state["long_job"] = quick_job(60.0)  # runs on until its minute is up
        while job.state is not RunStatus.RUNNING:  # claimed by its thread, as by a worker
            time.sleep(0.05)
    jobpanel.job_panel(st.session_state["long_job"], jobpanel.job_status, key="long")


def test_cancel_says_cancelling_at_once_until_the_job_has_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: after Cancel the panel said "running" for ~9 s, then "nothing was kept"."""
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    at = AppTest.from_function(_page_with_a_long_job, default_timeout=30)
    at.run()
    assert "Quick: running" in unmarked(at.get("progress")[0].proto.text)
    next(b for b in at.button if b.label == "Cancel").click().run()
    assert not at.exception
    assert "Quick: cancelling…" in unmarked(at.get("progress")[0].proto.text)
    assert next(b for b in at.button if b.label == "Cancel").disabled, "asked once"


def test_the_same_run_is_not_queued_twice_but_another_may_be(
    app: AppTest, tiny_model_dir: Path
) -> None:
    """Issue 21: a second click on Start queued a duplicate run 3 s later. Now a run of the
    same settings is refused while the first waits or trains; a run of other settings is
    queued beside it on purpose, and the tab can follow either."""
    from embedgen.runs import list_runs

    job = start_long_training(app, tiny_model_dir)
    second = None
    try:
        assert "Start training" not in [b.label for b in app.button], "no plain Start now"
        click(app, "Queue another run")  # the same settings: a double click
        assert app.session_state["train_job"] is job
        assert any("exactly these settings" in t for t in texts(app.warning))
        assert len(list_runs(Path(job.folder).parent)) == 1, "no second run folder"
        app.number_input(key="train_dim").set_value(16)
        click(app, "Queue another run")
        second = app.session_state["train_job"]
        assert second is not job and second.folder != job.folder
        assert len(list_runs(Path(job.folder).parent)) == 2
        follow = next(b for b in app.button if b.label == "Follow it")
        follow.click().run()
        assert app.session_state["train_job"].folder == job.folder, "the first run, followed"
    finally:
        for running in (job, second):
            if running is not None:
                running.request_cancel()
        for running in (job, second):
            if running is not None:
                running.wait(TIMEOUT)


def _page_with_a_job_that_ends_before_its_panel() -> None:
    """A page that starts a job and, like a quick PCA map, sees it end before drawing the panel."""
    import streamlit as st
    from apps.quick_job import quick_job

    from embedgen.runs import RunStatus
    from embedgen.ui import jobpanel

    job = st.session_state.get("quick_job")
    if job is not None and job.state is RunStatus.FINISHED:
        st.markdown(f"result: {job.result}")
    if st.button("Go"):
        job = st.session_state["quick_job"] = quick_job(0.0)
        job.wait(10)
    if job is not None:
        jobpanel.job_panel(job, jobpanel.job_status, key="quick")


def test_a_job_that_ends_before_its_panel_still_shows_its_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CI caught this on the map tab: a PCA map of 372 tokens finished before the page drew
    # its progress panel, so nothing polled, nothing reran, and the chart never appeared.
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    at = AppTest.from_function(_page_with_a_job_that_ends_before_its_panel, default_timeout=30)
    at.run()
    at.button[0].click().run()
    assert not at.exception
    assert "result: 42" in [m.value for m in at.markdown]


# -- Words and evaluation ---------------------------------------------------------------------


def test_word_rows_of_the_data_are_built_and_evaluated(app: AppTest, tiny_model_dir: Path) -> None:
    load_model(app, tiny_model_dir)
    upload(app, "reviews.csv", csv_bytes(cue_rows(400)))
    go(app, "4_Matrix")
    app.radio(key="matrix_rows").set_value("Words of your data").run()
    assert app.radio(key="matrix_method_words").value == "aggregated"
    click(app, "Build matrix")
    wait_for(app, "matrix_job")
    entry = app.session_state["matrices"]["aggregated-L2-base-words-reviews"]
    assert entry.matrix.manifest["rows_are"] == "words"
    assert set(entry.matrix.columns["vector"]) <= {"corpus + generated", "generated"}
    assert any(
        "words read in your data (in pieces of at most 32 characters), also in 2 generated "
        "sentences" in c
        for c in texts(app.caption)
    )

    go(app, "6_Evaluate")
    first, second, third = entry.matrix.vocab[:3]
    pairs = f"{first}\t{second}\t9\n{third}\t{first}\t1\nbad line\n"
    app.get("file_uploader")[0].upload("mine.txt", pairs.encode(), "text/plain").run()
    assert not app.exception, [e.value for e in app.exception]
    wait_for(app, "evaluate_scores_job")  # scored by a worker, not by the server
    table = app.dataframe[0].value
    assert list(table["file"]) == ["mine.txt"] and table["pairs"][0] == "2/2"
    assert any("line 3" in c for c in texts(app.caption)), "the malformed line is reported"
    purity = app.dataframe[-1].value
    assert "purity" in purity.columns and 0.0 <= purity["purity"][0] <= 1.0


def test_evaluate_scores_in_a_worker_and_a_new_choice_replaces_the_job(
    app: AppTest, tiny_model_dir: Path
) -> None:
    """The scores are a worker's job (its folder holds the file and the tables); changing a
    choice queues a new job, whose tables are the ones shown."""
    from embedgen.jobrecord import read_job

    load_model(app, tiny_model_dir)
    build_default_matrix(app)
    (entry,) = app.session_state["matrices"].values()
    first, second = entry.matrix.vocab[:2]
    word = "".join(t for t in entry.matrix.vocab if len(t) == 1 and "\u4e00" <= t <= "\u9fff")[:2]
    pairs = f"{first}\t{second}\t9\n{word}\t{first}\t1\n"
    go(app, "6_Evaluate")
    app.get("file_uploader")[0].upload("mine.txt", pairs.encode(), "text/plain").run()
    wait_for(app, "evaluate_scores_job")
    pooled_job = app.session_state["evaluate_scores_job"]
    table = app.dataframe[0].value
    assert (table["pairs"][0], table["pooled"][0]) == ("2/2", 1), f"{word} pooled"

    app.toggle(key="evaluate_pool").set_value(False).run()
    wait_for(app, "evaluate_scores_job")
    job = app.session_state["evaluate_scores_job"]
    assert job.folder != pooled_job.folder, "a new job for the new choice"
    table = app.dataframe[0].value
    assert (table["pairs"][0], table["missing"][0]) == ("1/2", 1), f"{word} no longer pooled"
    record = read_job(job.folder)
    assert record.kind == "evaluate" and record.request["pool"] is False
    assert (Path(job.folder) / "similarity-0.txt").read_bytes() == pairs.encode()


def test_the_tradeoff_of_a_run_is_drawn(app: AppTest, tiny_model_dir: Path) -> None:
    load_model(app, tiny_model_dir)
    upload(app, "reviews.csv", csv_bytes(cue_rows(400)))
    go(app, "3_Train")
    app.number_input(key="train_epochs").set_value(2)
    click(app, "Start training")
    wait_for(app, "train_job")
    go(app, "4_Matrix")
    app.number_input(key="matrix_label_weight").set_value(0.5)
    click(app, "Build matrix")
    wait_for(app, "matrix_job")
    entry = app.session_state["matrices"]["contextual-L2-labels0.5-tuned-cjk"]
    assert entry.matrix.manifest["label_signal"]["weight"] == 0.5
    go(app, "6_Evaluate")
    click(app, "Compute the trade-off")
    wait_for(app, "evaluate_tradeoff_job")
    assert app.get("plotly_chart"), "the trade-off plot is drawn"
    (rows,) = [shown(c) for c in app.caption if "Rows of every point:" in shown(c)]
    assert "aggregated" in rows and " words" in rows, "says which rows the points build"
    points = app.dataframe[-1].value
    assert "label weight" in set(points["kind"]) and "untuned" in set(points["kind"])
    assert points["purity"].between(0, 1).all()


def test_an_unreadable_benchmark_upload_is_named_and_the_rest_still_scores(
    app: AppTest, tiny_model_dir: Path
) -> None:
    load_model(app, tiny_model_dir)
    go(app, "4_Matrix")
    click(app, "Build matrix")
    wait_for(app, "matrix_job")
    go(app, "6_Evaluate")
    uploader = app.get("file_uploader")[0]
    uploader.upload("gbk.txt", "好\t坏\t1\n".encode("gbk"), "text/plain").run()
    assert not app.exception
    assert any("gbk.txt" in shown(e) and "UTF-8" in shown(e) for e in app.error)
    assert any("Upload one or more" in shown(i) for i in app.info)


def test_without_chinese_data_every_token_stays_by_default(
    app: AppTest, tiny_model_dir: Path
) -> None:
    load_model(app, tiny_model_dir)
    go(app, "4_Matrix")
    assert app.checkbox(key="matrix_cjk_only").value is False  # no data: every token
    upload(app, "reviews.csv", csv_bytes([("the food was good", "a"), ("bad food", "b")] * 3))
    go(app, "4_Matrix")
    assert app.checkbox(key="matrix_cjk_only").value is False  # data with no Chinese


def test_chinese_data_ticks_cjk_tokens_only(app: AppTest, tiny_model_dir: Path) -> None:
    load_model(app, tiny_model_dir)
    upload(app, "reviews.csv", csv_bytes(synthetic_rows(40)))
    go(app, "4_Matrix")
    assert app.checkbox(key="matrix_cjk_only").value is True
    click(app, "Build matrix")
    wait_for(app, "matrix_job")
    (entry,) = app.session_state["matrices"].values()
    assert entry.name == "input-base-cjk"  # a plain model's default method, CJK rows
    assert all(is_cjk_token(t) for t in entry.matrix.vocab)


def test_the_server_does_not_collect_garbage_after_every_rerun() -> None:
    """`streamlit run app.py` from the project folder reads .streamlit/config.toml.

    Streamlit's default full garbage collection after each script run held the GIL for about
    0.4 s per progress-panel rerun (twice a second) once a model was loaded, and jobs ran at a
    third of the CLI's speed (BENCHMARKS.md, "The app against the CLI").
    """
    import subprocess
    import sys

    probe = (
        "from streamlit import config; config.get_config_options(force_reparse=True); "
        "print(config.get_option('runner.postScriptGC'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_the_matrix_page_draws_the_tradeoff_with_the_chosen_weight_ringed(
    app: AppTest, tiny_model_dir: Path
) -> None:
    """The user chooses how much of the labels to add where they build the matrix: the Matrix
    page draws the trade-off of the run, the point of the weight set above ringed."""
    import json as json_module

    load_model(app, tiny_model_dir)
    upload(app, "reviews.csv", csv_bytes(cue_rows(400)))
    go(app, "3_Train")
    app.number_input(key="train_epochs").set_value(2)
    click(app, "Start training")
    wait_for(app, "train_job")
    go(app, "4_Matrix")
    assert app.radio(key="matrix_run_labels").value == "keep", "labels added by default"
    assert app.number_input(key="matrix_label_weight").value == 0.1
    click(app, "Compute the trade-off")
    wait_for(app, "evaluate_tradeoff_job")
    charts = [json_module.loads(c.proto.spec) for c in app.get("plotly_chart")]
    names = [t.get("name") for c in charts for t in c["data"]]
    assert "label weight" in names and "this matrix" in names, names
