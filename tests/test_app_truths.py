"""Small truths the pages tell: the vocabulary numbers, the label chart, row numbers, running
jobs on the start page, and a Data page that reads an upload once."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from conftest import cjk_vocab, shown, synthetic_rows
from streamlit.testing.v1 import AppTest

import embedgen.table
from embedgen.models import load_encoder

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60
PADDING = 9  # embedding rows beyond the tokenizer's ids, as real models have (e5: 35)


@pytest.fixture(scope="module")
def padded_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT whose embedding table has PADDING more rows than its tokenizer has ids."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("padded-bert")
    vocab = cjk_vocab()
    config = BertConfig(
        vocab_size=len(vocab) + PADDING,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    BertTokenizerFast(vocab=vocab).save_pretrained(folder)
    return folder


def run_ok(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def go(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"pages/{page}.py")
    return run_ok(at)


def start_page(at: AppTest) -> AppTest:
    """The start page with ``at``'s session state: AppTest cannot switch to a page that is a
    function, so this opens the app again (its default page) with the same state."""
    start = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    for key in ("model_loaded", "data_labelled", "train_job", "train_run", "matrices"):
        start.session_state[key] = at.session_state[key]
    return run_ok(start)


def texts(elements) -> list[str]:
    return [shown(e) for e in elements]


def csv_bytes(rows: list[tuple[str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def upload(at: AppTest, name: str, content: bytes) -> AppTest:
    go(at, "2_Data")
    at.get("file_uploader")[0].upload(name, content, "text/csv")
    return run_ok(at)


def binary_rows(ones: int, zeros: int) -> list[tuple[str, str]]:
    texts_ = [text for text, _ in synthetic_rows(ones + zeros)]
    return [(t, "1" if i < ones else "0") for i, t in enumerate(texts_)]


def label_chart(at: AppTest) -> dict:
    charts = at.get("plotly_chart")
    assert charts, "the label chart is drawn"
    return json.loads(charts[0].proto.spec)


# -- Model: two vocabulary numbers, explained ------------------------------------------------


def test_model_info_says_which_embedding_rows_no_token_reaches(padded_model_dir: Path) -> None:
    info = load_encoder(str(padded_model_dir), allow_download=False, device="cpu").info
    tokens = len(cjk_vocab())
    assert (info.vocab_size, info.tokenizer_size) == (tokens + PADDING, tokens)
    assert info.rows_without_token == PADDING and info.tokens_without_row == 0
    assert info.token_rows == tokens  # what a "tokens" matrix starts from
    assert info.as_dict()["rows_without_token"] == PADDING  # manifests record it


def test_model_page_explains_rows_beyond_the_tokenizer(
    app: AppTest, padded_model_dir: Path
) -> None:
    go(app, "1_Model")
    app.radio(key="model_source").set_value("Folder on this machine").run()
    app.text_input(key="model_folder").input(str(padded_model_dir)).run()
    next(b for b in app.button if b.label == "Load model").click()
    run_ok(app)
    tokens = len(cjk_vocab())
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Embedding rows"] == f"{tokens + PADDING:,}"
    assert metrics["Tokenizer tokens"] == f"{tokens:,}"
    note = next(c for c in texts(app.caption) if "embedding table" in c)
    assert f"other {PADDING} rows are padding" in note, note
    assert f"starts from the {tokens:,} ids" in note, note


# -- Data: the label chart, imbalance, row numbers -------------------------------------------


def test_label_chart_shows_each_label_as_a_category_with_its_count(app: AppTest) -> None:
    upload(app, "binary.csv", csv_bytes(binary_rows(30, 10)))
    spec = label_chart(app)
    bar = spec["data"][0]
    assert spec["layout"]["xaxis"]["type"] == "category"
    assert list(bar["x"]) == ["0", "1"] and list(bar["text"]) == ["10", "30"]


def test_imbalanced_labels_get_a_note_about_macro_f1(app: AppTest) -> None:
    upload(app, "skewed.csv", csv_bytes(binary_rows(36, 6)))
    note = " ".join(w for w in texts(app.warning) if "imbalanced" in w)
    assert "'1' has 36 rows, '0' 6" in note and "macro-F1" in note, texts(app.warning)


def test_balanced_labels_get_no_imbalance_note(app: AppTest) -> None:
    upload(app, "even.csv", csv_bytes(binary_rows(20, 20)))
    assert not [w for w in texts(app.warning) if "imbalanced" in w]
    assert not [w for w in texts(app.warning) if "fewer than" in w]


def test_many_classes_of_a_few_rows_get_a_warning_on_the_data_page(app: AppTest) -> None:
    rows = [(f"第{i}条评论 很好", f"类{i % 40}") for i in range(120)]  # 40 classes of 3 rows
    upload(app, "tiny_classes.csv", csv_bytes(rows))
    note = " ".join(w for w in texts(app.warning) if "fewer than" in w)
    assert "40 of 40 classes have fewer than 10 rows" in note, texts(app.warning)


def test_preview_is_numbered_like_the_dropped_rows_message(app: AppTest) -> None:
    rows = binary_rows(20, 20)
    rows[6] = ("", "1")  # the seventh data row: row 8 of the file, the header being row 1
    upload(app, "gap.csv", csv_bytes(rows))
    message = next(w for w in texts(app.warning) if "dropped" in w)
    assert "empty text in row 8" in message, message
    preview = app.dataframe[0].value
    assert list(preview.index[:3]) == [2, 3, 4]
    assert preview.loc[8, "text"] == "" and preview.loc[9, "text"] == rows[7][0]
    dropped = app.dataframe[1].value
    assert list(dropped["row"]) == [8]
    assert any("the header is row 1" in c for c in texts(app.caption))


# -- Data: one parse per upload ----------------------------------------------------------------


def test_the_upload_is_parsed_once_across_widget_changes(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real = embedgen.table.read_table

    def counting_read_table(*args, **kwargs):
        reads.append(kwargs.get("name", "?"))
        return real(*args, **kwargs)

    monkeypatch.setattr(embedgen.table, "read_table", counting_read_table)
    upload(app, "reviews.csv", csv_bytes(synthetic_rows(60)))
    assert reads == ["reviews.csv"]
    app.slider[0].set_value(0.2)
    run_ok(app)
    assert {m.label: m.value for m in app.metric}["Validation rows"] == "12"
    label = next(s for s in app.selectbox if s.label == "Label column")
    label.set_value("text")
    run_ok(app)  # the same column twice: an error, from the table already read
    assert app.error
    next(s for s in app.selectbox if s.label == "Label column").set_value("label")
    run_ok(app)
    assert not app.error and app.session_state["data_labelled"] is not None
    assert reads == ["reviews.csv"], "widget changes must reuse the parsed table"
    app.radio(key="data_header").set_value("Yes")
    run_ok(app)
    assert reads == ["reviews.csv"] * 2, "other reading options read the file again"


# -- Start: jobs under way ---------------------------------------------------------------------


def test_start_page_shows_a_training_under_way(app: AppTest, tiny_model_dir: Path) -> None:
    go(app, "1_Model")
    app.radio(key="model_source").set_value("Folder on this machine").run()
    app.text_input(key="model_folder").input(str(tiny_model_dir)).run()
    next(b for b in app.button if b.label == "Load model").click()
    run_ok(app)
    upload(app, "reviews.csv", csv_bytes(synthetic_rows(80)))
    go(app, "3_Train")
    app.number_input(key="train_epochs").set_value(10_000)
    app.number_input(key="train_patience").set_value(0)
    next(b for b in app.button if b.label == "Start training").click()
    run_ok(app)
    job = app.session_state["train_job"]
    try:
        deadline = time.time() + TIMEOUT
        while not job.events and job.active and time.time() < deadline:
            time.sleep(0.05)
        assert job.active and job.events, "training should be running with an epoch done"
        captions = texts(start_page(app).caption)
        train_line = next(c for c in captions if c.startswith("running"))
        assert "epoch " in train_line and "best macro-F1 so far" in train_line, train_line
        assert "no run" not in captions
    finally:
        job.request_cancel()
        assert job.wait(TIMEOUT)
    captions = texts(start_page(app).caption)  # the Train page has not seen the end yet
    assert not [c for c in captions if c.startswith("running")]
    assert any(c.startswith("cancelled, macro-F1") for c in captions), captions
