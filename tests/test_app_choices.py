"""The app keeps the user's choices across pages, asks before replacing a saved matrix, and
offers the run's tuned matrix first (issue 9: choices that stick, nothing overwritten)."""

from __future__ import annotations

from pathlib import Path

from conftest import cue_rows, synthetic_rows, unmarked
from streamlit.testing.v1 import AppTest
from test_app import click, csv_bytes, go, load_model, texts, upload, wait_for


def build(at: AppTest, method: str | None = None) -> AppTest:
    go(at, "4_Matrix")
    if method is not None:
        at.radio(key="matrix_method").set_value(method)
    click(at, "Build matrix")
    if at.session_state["matrix_estimate_job"] or at.session_state["matrix_job"]:
        wait_for(at, "matrix_job")
    return at


def train(at: AppTest, model_dir: Path) -> None:
    load_model(at, model_dir)
    upload(at, "reviews.csv", csv_bytes(synthetic_rows(120)))
    go(at, "3_Train")
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_dim").set_value(8)
    click(at, "Start training")
    wait_for(at, "train_job")


def test_choices_survive_a_visit_to_other_pages(app: AppTest, tiny_model_dir: Path) -> None:
    load_model(app, tiny_model_dir)
    go(app, "4_Matrix")
    app.checkbox(key="matrix_center").check()
    app.number_input(key="matrix_pca").set_value(4)
    click(app, "Build matrix")
    wait_for(app, "matrix_job")
    go(app, "4_Matrix")
    app.checkbox(key="matrix_center").uncheck()
    app.number_input(key="matrix_pca").set_value(0)
    click(app, "Build matrix")  # a second matrix: input-base, no post-processing
    wait_for(app, "matrix_job")
    go(app, "5_Explore")
    names = list(app.session_state["matrices"])
    assert len(names) == 2
    app.selectbox(key="explore_a").set_value(names[0]).run()
    app.text_input(key="explore_word").input("美").run()
    go(app, "7_Export")
    assert app.selectbox(key="export_matrix").value == names[0], "Export offers what is explored"
    go(app, "1_Model")
    go(app, "5_Explore")
    assert app.selectbox(key="explore_a").value == names[0]
    assert app.text_input(key="explore_word").value == "美"
    go(app, "4_Matrix")
    assert app.checkbox(key="matrix_center").value is False  # as last submitted
    assert app.number_input(key="matrix_pca").value == 0
    assert app.radio(key="matrix_source").value.startswith("Model as it is")


def test_an_unticked_cjk_box_stays_unticked(app: AppTest, tiny_model_dir: Path) -> None:
    load_model(app, tiny_model_dir)
    upload(app, "reviews.csv", csv_bytes(synthetic_rows(60)))  # Chinese: ticked by default
    go(app, "4_Matrix")
    assert app.checkbox(key="matrix_cjk_only").value is True
    app.checkbox(key="matrix_cjk_only").uncheck()
    click(app, "Build matrix")  # a form's values are the user's once submitted
    wait_for(app, "matrix_job")
    assert "input-base" in app.session_state["matrices"]
    go(app, "2_Data")
    go(app, "4_Matrix")
    assert app.checkbox(key="matrix_cjk_only").value is False


def test_a_saved_matrix_is_not_replaced_without_asking(app: AppTest, tiny_model_dir: Path) -> None:
    load_model(app, tiny_model_dir)
    build(app)
    first = app.session_state["matrices"]["input-base"]
    saved = (Path(first.folder) / "matrix.npy").read_bytes()
    stamp = (Path(first.folder) / "manifest.json").stat().st_mtime_ns

    build(app)  # the same options again: same name, same folder
    assert app.session_state["matrix_job"].result is first, "a second build started unasked"
    warning = " ".join(texts(app.warning))
    assert "input-base" in warning and "already saved" in warning
    assert (Path(first.folder) / "manifest.json").stat().st_mtime_ns == stamp

    click(app, "Keep both (save as input-base-2)")
    wait_for(app, "matrix_job")
    second = app.session_state["matrices"]["input-base-2"]
    assert Path(second.folder).name == "input-base-2"
    assert (Path(first.folder) / "matrix.npy").read_bytes() == saved

    build(app)
    click(app, "Replace it")
    wait_for(app, "matrix_job")
    assert (Path(first.folder) / "manifest.json").stat().st_mtime_ns != stamp

    build(app)
    click(app, "Don't build")
    assert "matrix_pending" not in app.session_state


def test_explore_and_export_offer_the_runs_tuned_matrix_first(
    app: AppTest, tiny_model_dir: Path
) -> None:
    train(app, tiny_model_dir)
    build(app, "projected")
    go(app, "4_Matrix")
    app.radio(key="matrix_source").set_value(app.radio(key="matrix_source").options[1])
    click(app, "Build matrix")  # the untuned model's input matrix, built last
    wait_for(app, "matrix_job")
    assert list(app.session_state["matrices"])[-1] == "input-base-cjk"
    go(app, "5_Explore")
    assert app.selectbox(key="explore_a").value == "projected-tuned-cjk"
    shown = app.selectbox(key="explore_a").format_func("projected-tuned-cjk")
    assert shown.startswith(f"{tiny_model_dir.name} · tuned · projected · "), "model first"
    go(app, "7_Export")
    assert app.selectbox(key="export_matrix").value == "projected-tuned-cjk"


def test_neighbour_lists_of_a_mixed_vocabulary_can_keep_to_chinese(
    app: AppTest, tiny_model_dir: Path
) -> None:
    from embedgen.tokens import is_cjk_token

    load_model(app, tiny_model_dir)
    build(app)  # no data: every token, Latin ones too
    go(app, "5_Explore")
    app.number_input(key="explore_k").set_value(200).run()
    assert app.checkbox(key="explore_cjk").value is True
    assert all(is_cjk_token(t) for t in app.dataframe[0].value["token"])
    app.checkbox(key="explore_cjk").uncheck().run()
    assert not all(is_cjk_token(t) for t in app.dataframe[0].value["token"])
    assert any("cosine" in c for c in texts(app.caption))


def test_the_model_and_data_pages_keep_their_choices(app: AppTest) -> None:
    go(app, "1_Model")
    source = app.radio(key="model_source")
    folder_choice = next(o for o in source.options if "Folder" in o)
    source.set_value(folder_choice).run()
    app.text_input(key="model_folder").input("/nowhere/model").run()
    go(app, "2_Data")
    app.radio(key="data_header").set_value("No").run()
    go(app, "3_Train")
    go(app, "1_Model")
    assert app.radio(key="model_source").value == folder_choice
    assert app.text_input(key="model_folder").value == "/nowhere/model"
    go(app, "2_Data")
    assert app.radio(key="data_header").value == "No"


def layer_box(at: AppTest):
    """The Matrix page's Layer box (each model has its own: its key names the model)."""
    return next(n for n in at.number_input if n.label == "Layer")


def range_box(at: AppTest):
    """The Matrix page's layer range box (each model has its own, as the Layer box)."""
    return next(t for t in at.text_input if t.label.startswith("…or the mean of layers"))


def test_a_layer_range_chosen_for_one_model_does_not_follow_to_another(
    app: AppTest, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Issue 21, item 2: the layer range too (1-2 of a 2-layer model is not the top of a
    3-layer one); the new model's box starts empty, and the first model's keeps its range."""
    from conftest import build_tiny_bert

    load_model(app, tiny_model_dir)
    go(app, "4_Matrix")
    app.radio(key="matrix_method").set_value("contextual").run()
    range_box(app).input("1-2")
    click(app, "Build matrix")
    wait_for(app, "matrix_job")
    assert any("L1-2" in name for name in app.session_state["matrices"])
    load_model(app, build_tiny_bert(tmp_path / "deeper", layers=3))
    go(app, "4_Matrix")
    assert range_box(app).value == "", "the new model's range starts empty"
    assert range_box(app).placeholder == "e.g. 0-3", "and suggests its own top layers"
    load_model(app, tiny_model_dir)
    go(app, "4_Matrix")
    assert range_box(app).value == "1-2", "back to the first model: its range"


def test_a_layer_chosen_for_one_model_does_not_follow_to_a_deeper_one(
    app: AppTest, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """m3e-small then e5-small in the browser: the layer 4 chosen for the 4-layer model stayed
    and e5's matrix was built at layer 4 of 12. The choice is kept while the model stays and
    goes, back to the new model's last layer, when the model changes."""
    from conftest import build_tiny_bert

    deeper = build_tiny_bert(tmp_path / "deeper", layers=3)
    load_model(app, tiny_model_dir)
    go(app, "4_Matrix")
    app.radio(key="matrix_method").set_value("contextual").run()
    assert layer_box(app).value == 2
    layer_box(app).set_value(1)
    click(app, "Build matrix")  # a form's values count once it is sent
    wait_for(app, "matrix_job")
    assert "contextual-L1-base" in app.session_state["matrices"]
    go(app, "6_Evaluate")
    go(app, "4_Matrix")
    assert layer_box(app).value == 1, "kept while the model stays"
    load_model(app, deeper)
    go(app, "4_Matrix")
    assert layer_box(app).value == 3, "the new model's last layer"
    load_model(app, tiny_model_dir)
    go(app, "4_Matrix")
    assert layer_box(app).value == 1, "back to the first model: the layer chosen for it"


def test_the_last_run_under_another_models_form_says_whose_it_is(
    app: AppTest, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Issue 21: Train showed the previous model's result under the new model's form."""
    from conftest import build_tiny_bert

    load_model(app, tiny_model_dir)
    upload(app, "reviews.csv", csv_bytes(cue_rows(200)))
    go(app, "3_Train")
    app.number_input(key="train_epochs").set_value(2)
    click(app, "Start training")
    wait_for(app, "train_job")
    assert not [i for i in app.info if "not on the model loaded now" in i.value]
    load_model(app, build_tiny_bert(tmp_path / "other", layers=3))
    go(app, "3_Train")
    (note,) = [unmarked(i.value) for i in app.info if "not on the model loaded now" in i.value]
    assert str(tiny_model_dir) in note and str(tmp_path / "other") in note


def test_a_matrix_chosen_on_export_is_the_one_explored_and_kept_over_a_reload(
    app: AppTest, tiny_model_dir: Path
) -> None:
    """Issue 21: Export kept its own choice, so the download was not the matrix explored."""
    from test_app_visit import reopen

    load_model(app, tiny_model_dir)
    build(app)
    go(app, "4_Matrix")
    app.checkbox(key="matrix_center").check()
    click(app, "Build matrix")
    wait_for(app, "matrix_job")
    first, second = list(app.session_state["matrices"])
    go(app, "7_Export")
    assert app.selectbox(key="export_matrix").value == second, "the newest first"
    app.selectbox(key="export_matrix").set_value(first).run()
    go(app, "5_Explore")
    assert app.selectbox(key="explore_a").value == first
    again = reopen(app, "5_Explore")
    assert again.selectbox(key="explore_a").value == first, "the same after a reload"


def test_max_length_follows_new_data_over_a_value_set_for_the_old(
    app: AppTest, tiny_model_dir: Path, tiny_encoder
) -> None:
    """Issue 21, item 2: a setting whose default comes from the data follows the data."""
    from embedgen.tokens import text_lengths

    load_model(app, tiny_model_dir)
    upload(app, "short.csv", csv_bytes(synthetic_rows(60)))
    go(app, "3_Train")
    app.number_input(key="train_max_length").set_value(9).run()
    longer = [(text * 3, label) for text, label in synthetic_rows(60, seed=1)]
    upload(app, "long.csv", csv_bytes(longer))
    go(app, "3_Train")
    data = app.session_state["data_labelled"]
    expected = text_lengths(tiny_encoder.tokenizer, data.texts).suggested
    assert expected != 9 and app.number_input(key="train_max_length").value == expected


def test_the_cjk_filter_follows_new_data_over_a_box_unticked_for_the_old(
    app: AppTest, tiny_model_dir: Path
) -> None:
    """Issue 21, item 2: unticked for one Chinese file, the box starts from the next file's
    own default (ticked for Chinese data, unticked for English)."""
    load_model(app, tiny_model_dir)
    upload(app, "first.csv", csv_bytes(synthetic_rows(60)))
    go(app, "4_Matrix")
    app.checkbox(key="matrix_cjk_only").uncheck()
    click(app, "Build matrix")
    wait_for(app, "matrix_job")
    upload(app, "english.csv", csv_bytes([("the food was good", "a"), ("bad food", "b")] * 3))
    go(app, "4_Matrix")
    assert app.checkbox(key="matrix_cjk_only").value is False
    upload(app, "second.csv", csv_bytes(synthetic_rows(60, seed=1)))
    go(app, "4_Matrix")
    assert app.checkbox(key="matrix_cjk_only").value is True, "kept from the first file"


def test_text_and_label_columns_follow_a_new_file_with_the_same_columns(app: AppTest) -> None:
    """Issue 21, item 2: the columns chosen for one file are that file's; the next file, even
    with the same header, starts from what its own columns hold."""

    def table(seed: int) -> bytes:
        rows = [
            f"{i},{text},{label},n{i % 2}"
            for i, (text, label) in enumerate(synthetic_rows(40, seed=seed))
        ]
        return ("id,text,label,note\n" + "\n".join(rows) + "\n").encode()

    upload(app, "a.csv", table(0))
    text_box = next(b for b in app.selectbox if b.label == "Text column")
    assert text_box.value == "text", "the guess for a file of reviews"
    text_box.set_value("note").run()
    label_box = next(b for b in app.selectbox if b.label == "Label column")
    label_box.set_value("id").run()
    upload(app, "b.csv", table(1))
    boxes = {b.label: b.value for b in app.selectbox}
    assert (boxes["Text column"], boxes["Label column"]) == ("text", "label"), boxes
    labelled = app.session_state["data_labelled"]
    assert labelled.text_column == "text" and labelled.label_column == "label"


def test_evaluate_starts_from_the_matrix_being_explored(app: AppTest, tiny_model_dir: Path) -> None:
    """Issue 21, item 1: Explore, Evaluate and Export agree on the current matrix; Evaluate
    offered the two built last, which left out the one being explored."""
    load_model(app, tiny_model_dir)
    for method in ("input", "contextual", "input"):
        go(app, "4_Matrix")
        app.radio(key="matrix_method").set_value(method).run()
        if method == "input" and app.session_state["matrices"]:
            app.checkbox(key="matrix_center").check()  # a third, other name
        click(app, "Build matrix")
        wait_for(app, "matrix_job")
    first, *_ = names = list(app.session_state["matrices"])
    assert len(names) == 3
    go(app, "5_Explore")
    app.selectbox(key="explore_a").set_value(first)
    app.selectbox(key="explore_a").run()
    go(app, "6_Evaluate")
    assert app.multiselect(key="evaluate_matrices").value == [first, names[-1]]
