"""Embedding matrices: building them (input, projected, contextual, filters, tuning reaching
them) and their folder on disk (the round trip, and writes that never leave halves)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NEGATIVE, POSITIVE, VOCAB, files_in, make_matrix

from embedgen.errors import BadConfig, BadRun, Cancelled
from embedgen.matrix import EmbeddingMatrix, MatrixOptions, build_matrix, load_matrix, save_matrix
from embedgen.matrix import folder as matrix_module
from embedgen.neighbours import NeighbourIndex
from embedgen.postprocess import PostProcess
from embedgen.tokens import is_cjk_token
from embedgen.train import FinetuneConfig, finetune


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A head run and a top-k run on the synthetic set, trained once for this module."""
    from conftest import synthetic_rows, write_csv

    from embedgen.data import prepare
    from embedgen.models import load_encoder
    from embedgen.table import read_table

    encoder = load_encoder(str(tiny_model_dir), allow_download=False)
    csv = write_csv(tmp_path_factory.mktemp("data") / "cues.csv", synthetic_rows(400))
    data = prepare(read_table(csv), "text", "label")
    head = finetune(
        encoder, data, FinetuneConfig(epochs=40, dim=16, head_learning_rate=1e-2, patience=0)
    )
    top = finetune(
        encoder,
        data,
        FinetuneConfig(
            strategy="top-k",
            top_k=1,
            epochs=10,
            dim=16,
            learning_rate=1e-3,
            head_learning_rate=1e-2,
            patience=0,
        ),
    )
    return encoder, head, top


def test_input_matrix_is_the_token_embedding_table(tiny_encoder) -> None:
    m = build_matrix(tiny_encoder, MatrixOptions(method="input"))
    weight = tiny_encoder.model.get_input_embeddings().weight.detach().numpy()
    vocab = tiny_encoder.tokenizer.get_vocab()
    rows = [vocab[t] for t in m.vocab]
    np.testing.assert_array_equal(m.vectors, weight[rows])
    assert m.vectors.dtype == np.float32
    assert m.manifest["method"] == "input" and m.manifest["layer"] is None
    assert m.manifest["model"]["architecture"] == "BertModel"


def test_special_and_unused_tokens_are_dropped_and_counted(tiny_encoder) -> None:
    m = build_matrix(tiny_encoder, MatrixOptions())
    assert not {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]", "[unused1]"} & set(m.vocab)
    removed = m.manifest["selection"]["removed"]
    assert removed["special"] == 5 and removed["unused"] == 2
    assert m.shape[0] == len(tiny_encoder.tokenizer) - 7
    kept = build_matrix(tiny_encoder, MatrixOptions(drop_special=False))
    assert kept.shape[0] == len(tiny_encoder.tokenizer)


def test_cjk_only_keeps_one_row_per_chinese_text_and_continuation_drops_every_piece(
    tiny_encoder,
) -> None:
    """Chinese rows: "##好" is the same character as "好", a second row that crowds neighbour
    lists and maps, so it goes; "##x" pieces of other text go only with drop_continuation."""
    cjk = build_matrix(tiny_encoder, MatrixOptions(cjk_only=True))
    assert all(is_cjk_token(t) for t in cjk.vocab)
    assert "the" not in cjk.vocab and "好" in cjk.vocab and "##好" not in cjk.vocab
    twins = cjk.manifest["selection"]["removed"]["marked_twin"]
    vocab = tiny_encoder.tokenizer.get_vocab()
    assert twins == sum(1 for t in vocab if t.startswith("##") and is_cjk_token(t))
    everything = build_matrix(tiny_encoder, MatrixOptions())
    assert "##好" in everything.vocab, "without cjk_only every token stays"
    no_pieces = build_matrix(tiny_encoder, MatrixOptions(drop_continuation=True))
    assert not any(t.startswith("##") for t in no_pieces.vocab)
    assert "好" in no_pieces.vocab


def test_chinese_rows_leave_out_marked_twins_but_keep_a_lone_marked_token() -> None:
    from embedgen.tokens import chinese_rows

    tokens = ["好", "##好", "▁好", "▁美", "good", "##ing", "中国", "▁中国", "", "の"]
    assert chinese_rows(tokens).tolist() == [
        True, False, False, True, False, False, True, False, False, False
    ]  # fmt: skip


def test_japanese_forms_are_not_chinese_rows_but_rare_chinese_characters_are() -> None:
    from embedgen.tokens import chinese_rows, is_japanese_form

    assert [c for c in "乗円駅込黒麺乘圆站黑面好啰祎镕咗嘅" if is_japanese_form(c)] == list(
        "乗円駅込黒麺"
    )
    assert chinese_rows(["乘客", "乗客", "▁駅", "車站", "车站"]).tolist() == [
        True, False, False, True, True
    ]  # fmt: skip


def test_cjk_only_leaves_out_japanese_forms_and_counts_them(tmp_path: Path) -> None:
    from transformers import BertTokenizerFast

    from embedgen.tokens import select_tokens

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "乘", "乗", "客", "駅", "站", "a"]
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)})
    kept, removed = select_tokens(tokenizer, len(tokens), cjk_only=True)
    assert [tokens[i] for i in kept] == ["乘", "客", "站"]
    assert removed["japanese_form"] == 2 and removed["not_cjk"] == 1


def test_projected_needs_a_run(tiny_encoder) -> None:
    with pytest.raises(BadConfig, match="needs a fine-tuning run"):
        build_matrix(tiny_encoder, MatrixOptions(method="projected"))


def test_unknown_method_is_named() -> None:
    with pytest.raises(BadConfig, match="Unknown method 'static'"):
        MatrixOptions(method="static")


def test_projected_rows_are_input_vectors_through_the_projection(trained) -> None:
    encoder, run, _ = trained
    m = build_matrix(run, MatrixOptions(method="projected"))
    assert m.shape == (len(encoder.tokenizer) - 7, 16)
    vocab = encoder.tokenizer.get_vocab()
    e = encoder.model.get_input_embeddings().weight[vocab["好"]]
    with torch.no_grad():
        expected = run.head.projection(e).numpy()
    np.testing.assert_allclose(m.vectors[m.vocab.index("好")], expected, rtol=1e-5, atol=1e-6)
    assert m.manifest["run"]["strategy"] == "head"
    assert m.manifest["run"]["label_map"] == {"0": "正面", "1": "负面"}
    assert m.manifest["through_projection"] is True


def test_contextual_layers(tiny_encoder) -> None:
    last = build_matrix(tiny_encoder, MatrixOptions(method="contextual"))
    first = build_matrix(tiny_encoder, MatrixOptions(method="contextual", layer=0))
    minus_one = build_matrix(tiny_encoder, MatrixOptions(method="contextual", layer=-1))
    assert last.manifest["layer"] == 2 and first.manifest["layer"] == 0
    np.testing.assert_array_equal(last.vectors, minus_one.vectors)
    assert not np.allclose(last.vectors, first.vectors)
    assert last.shape == (len(tiny_encoder.tokenizer) - 7, 32)


def test_contextual_does_not_depend_on_batch_size(tiny_encoder) -> None:
    a = build_matrix(tiny_encoder, MatrixOptions(method="contextual", batch_size=7))
    b = build_matrix(tiny_encoder, MatrixOptions(method="contextual", batch_size=500))
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)


def test_layer_out_of_range_names_the_range(tiny_encoder) -> None:
    with pytest.raises(BadConfig, match="layers 0 \\(embeddings\\) to 2"):
        build_matrix(tiny_encoder, MatrixOptions(method="contextual", layer=3))


def test_contextual_from_a_tuned_run_uses_the_tuned_encoder(trained) -> None:
    encoder, _, top = trained
    plain = build_matrix(encoder, MatrixOptions(method="contextual"))
    raw = MatrixOptions(method="contextual", through_projection=False, label_weight=0)
    tuned = build_matrix(top, raw)
    assert tuned.shape == plain.shape
    assert not np.allclose(tuned.vectors, plain.vectors, atol=1e-4)
    assert tuned.manifest["run"]["encoder_changed"] is True
    projected = build_matrix(top, MatrixOptions(method="contextual", label_weight=0))
    assert projected.shape[1] == 16 and projected.manifest["through_projection"] is True


def test_cancel_stops_a_contextual_matrix(tiny_encoder) -> None:
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        cancel.set()

    with pytest.raises(Cancelled):
        build_matrix(
            tiny_encoder,
            MatrixOptions(method="contextual", batch_size=16),
            progress=progress,
            cancel=cancel,
        )
    assert tiny_encoder.model.training is False


def test_postprocess_is_applied_and_recorded(tiny_encoder) -> None:
    options = MatrixOptions(postprocess=PostProcess(center=True, pca_dims=8, l2=True))
    m = build_matrix(tiny_encoder, options)
    assert m.shape[1] == 8
    np.testing.assert_allclose(np.linalg.norm(m.vectors, axis=1), 1.0, atol=1e-5)
    assert [s["step"] for s in m.manifest["postprocess"]] == ["center", "pca", "l2"]


def test_sentencepiece_encoders_work_too(tmp_path: Path) -> None:
    from conftest import build_tiny_xlmr

    from embedgen.models import load_encoder

    enc = load_encoder(str(build_tiny_xlmr(tmp_path / "xlmr")), allow_download=False)
    assert enc.info.architecture == "XLMRobertaModel"
    m = build_matrix(enc, MatrixOptions(method="contextual", cjk_only=True))
    assert "\u2581中国" in m.vocab and "<s>" not in m.vocab
    assert m.shape[1] == 16 and np.isfinite(m.vectors).all()
    index = NeighbourIndex(m)
    assert index.lookup("中国").pieces == ("\u2581中国",)


def _cue_separation(m: EmbeddingMatrix) -> float:
    """Mean cosine within the cue groups minus mean cosine across them."""
    v = m.vectors / np.linalg.norm(m.vectors, axis=1, keepdims=True)
    row = {t: i for i, t in enumerate(m.vocab)}
    p = v[[row[c] for c in POSITIVE]]
    n = v[[row[c] for c in NEGATIVE]]
    return float((np.mean(p @ p.T) + np.mean(n @ n.T)) / 2 - np.mean(p @ n.T))


def _cue_purity(m: EmbeddingMatrix, k: int = 7) -> float:
    """Share of each cue character's k nearest neighbours that are cues of the same label."""
    index = NeighbourIndex(m)
    hits = 0
    for group in (POSITIVE, NEGATIVE):
        for c in group:
            hits += sum(n.token in group for n in index.top_k(c, k=k))
    return hits / (k * len(POSITIVE + NEGATIVE))


def test_fine_tuning_moves_label_cues_together(trained) -> None:
    """The whole point: matrices from a run reflect the labels; the input matrix does not."""
    encoder, head, top = trained
    centred = PostProcess(center=True)
    baseline = build_matrix(encoder, MatrixOptions(postprocess=centred))
    base_sep, base_purity = _cue_separation(baseline), _cue_purity(baseline)
    for run in (head, top):
        for method in ("projected", "contextual"):  # the tuned projection alone
            options = MatrixOptions(method=method, label_weight=0, postprocess=centred)
            m = build_matrix(run, options)
            sep, purity = _cue_separation(m), _cue_purity(m)
            label = f"{run.config.strategy}/{method}"
            assert sep > base_sep + 0.3, f"{label}: separation {sep:.3f} vs input {base_sep:.3f}"
            assert purity > base_purity, f"{label}: purity {purity:.3f} vs input {base_purity:.3f}"


def test_the_default_matrix_from_a_run_keeps_the_untuned_rows_and_adds_the_labels(trained) -> None:
    """From a run, contextual rows are by default the untuned rows (unit length, not centred)
    beside the run's label signal at DEFAULT_LABEL_WEIGHT: the model's geometry is kept whole,
    and words of one label move together."""
    from embedgen.blend import label_signal, logits
    from embedgen.matrix import DEFAULT_LABEL_WEIGHT

    encoder, head, _ = trained
    default = build_matrix(head, MatrixOptions(method="contextual", cjk_only=True))
    classes = len(head.label_names)
    assert default.shape[1] == encoder.info.hidden_size + classes
    assert default.manifest["label_signal"]["weight"] == DEFAULT_LABEL_WEIGHT
    from embedgen.matrix import name_for

    assert name_for(head, MatrixOptions(method="contextual", cjk_only=True)).startswith(
        "contextual-L2-labels0.1-tuned"
    )
    raw = build_matrix(
        head,
        MatrixOptions(method="contextual", cjk_only=True, through_projection=False, label_weight=0),
    )
    unit = raw.vectors / np.linalg.norm(raw.vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(default.vectors[:, :-classes], unit, atol=1e-5)
    label = DEFAULT_LABEL_WEIGHT * label_signal(logits(head.head, raw.vectors))
    np.testing.assert_allclose(default.vectors[:, -classes:], label, atol=1e-5)
    plain = build_matrix(encoder, MatrixOptions(method="contextual", cjk_only=True))
    assert "label_signal" not in plain.manifest, "a plain model has no labels to add"


# -- the matrix folder ---------------------------------------------------------------------------


def test_save_then_load_gives_back_the_same_float32_matrix(matrix, tmp_path):
    loaded = load_matrix(save_matrix(matrix, tmp_path / "m"))
    assert loaded.vectors.dtype == np.float32
    np.testing.assert_array_equal(loaded.vectors, matrix.vectors)
    assert loaded.vocab == matrix.vocab
    assert loaded.manifest["method"] == "input"


def test_save_writes_exactly_the_three_files(matrix, tmp_path):
    save_matrix(matrix, tmp_path / "m")
    assert files_in(tmp_path / "m") == ["manifest.json", "matrix.npy", "vocab.txt"]


def test_manifest_records_rows_dims_dtype_and_file_hashes(matrix, tmp_path):
    folder = save_matrix(matrix, tmp_path / "m")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["rows"], manifest["dims"], manifest["dtype"]) == (8, 6, "float32")
    for name in ("matrix.npy", "vocab.txt"):
        assert manifest["files"][name] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert manifest["escaped_tokens"] == 0


def test_vocab_txt_line_i_names_row_i(matrix, tmp_path):
    folder = save_matrix(matrix, tmp_path / "m")
    text = (folder / "vocab.txt").read_bytes().decode("utf-8")
    assert text.split("\n")[:-1] == list(VOCAB)  # backslash token written as it is
    assert "\r" not in text


def test_float16_round_trip_is_close_and_comes_back_as_float32(matrix, tmp_path):
    loaded = load_matrix(save_matrix(matrix, tmp_path / "m", dtype="float16"))
    assert np.load(tmp_path / "m" / "matrix.npy").dtype == np.float16
    assert loaded.vectors.dtype == np.float32
    np.testing.assert_allclose(loaded.vectors, matrix.vectors, rtol=1e-3, atol=1e-3)
    assert loaded.manifest["dtype"] == "float16"


def test_a_mapped_matrix_reads_the_file_in_place_and_cannot_be_changed(matrix, tmp_path):
    from embedgen.neighbours import NeighbourIndex

    folder = save_matrix(matrix, tmp_path / "m")
    mapped = load_matrix(folder, mapped=True)
    assert mapped.mapped and not load_matrix(folder).mapped
    np.testing.assert_array_equal(mapped.vectors, matrix.vectors)
    with pytest.raises(ValueError, match="read-only"):
        mapped.vectors[0, 0] = 1.0
    word = matrix.vocab[0]
    assert NeighbourIndex(mapped).top_k(word, k=3) == NeighbourIndex(matrix).top_k(word, k=3)
    half = load_matrix(save_matrix(matrix, tmp_path / "h", dtype="float16"), mapped=True)
    assert half.vectors.dtype == np.float32 and not half.mapped, "float16 is read, as float32"


def test_save_rejects_other_dtypes_before_writing(matrix, tmp_path):
    with pytest.raises(BadConfig, match="float64"):
        save_matrix(matrix, tmp_path / "m", dtype="float64")
    assert not (tmp_path / "m").exists()


def test_a_token_with_a_newline_round_trips(tmp_path):
    vocab = ("好", "a\nb", "\\n", "c\r", "\\")
    folder = save_matrix(make_matrix(vocab), tmp_path / "m")
    lines = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == len(vocab)
    assert json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["escaped_tokens"] == 2
    assert load_matrix(folder).vocab == vocab


def test_an_empty_token_round_trips(tmp_path):
    vocab = ("", "好", "")
    assert load_matrix(save_matrix(make_matrix(vocab), tmp_path / "m")).vocab == vocab


def test_load_of_a_missing_folder_is_bad_run_naming_the_matrix_not_the_path(tmp_path):
    with pytest.raises(BadRun, match="The matrix 'nowhere' is not there") as caught:
        load_matrix(tmp_path / "nowhere")
    assert str(tmp_path) not in str(caught.value) and "--out" not in str(caught.value)


@pytest.mark.parametrize("name", ["matrix.npy", "vocab.txt", "manifest.json"])
def test_load_of_a_folder_missing_a_file_names_the_file(matrix, tmp_path, name):
    folder = save_matrix(matrix, tmp_path / "m")
    (folder / name).unlink()
    with pytest.raises(BadRun, match=f"The matrix 'm' has no {name}: .* Build it again") as caught:
        load_matrix(folder)
    assert str(tmp_path) not in str(caught.value) and "--out" not in str(caught.value)


def test_load_with_fewer_vocab_lines_than_rows_is_bad_run(matrix, tmp_path):
    folder = save_matrix(matrix, tmp_path / "m")
    (folder / "vocab.txt").write_text("好\n坏\n", encoding="utf-8")
    with pytest.raises(BadRun, match="8 rows but vocab.txt has 2 lines"):
        load_matrix(folder)


def test_load_with_verify_notices_a_changed_file(matrix, tmp_path):
    folder = save_matrix(matrix, tmp_path / "m")
    np.save(folder / "matrix.npy", matrix.vectors + 1)
    load_matrix(folder)  # without verify only the shapes are checked
    with pytest.raises(BadRun, match="sha256"):
        load_matrix(folder, verify=True)


def test_save_interrupted_inside_np_save_leaves_no_file(matrix, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(matrix_module.np, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_matrix(matrix, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert list(tmp_path.iterdir()) == []  # no stray staging folder either


def test_an_interrupted_rebuild_leaves_the_old_matrix_whole(matrix, tmp_path, monkeypatch):
    """A kill during a rebuild into an existing folder left matrix.npy (float16) disagreeing
    with manifest.json (float32); the folder is now swapped in only once it is complete."""
    folder = save_matrix(matrix, tmp_path / "m")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_write_json = matrix_module.write_json

    def fail(path, obj):  # the new matrix.npy and vocab.txt are written; the manifest fails
        raise OSError("killed")

    monkeypatch.setattr(matrix_module, "write_json", fail)
    with pytest.raises(OSError, match="killed"):
        save_matrix(matrix, folder, dtype="float16")
    monkeypatch.setattr(matrix_module, "write_json", real_write_json)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    assert load_matrix(folder, verify=True).manifest["dtype"] == "float32"


def test_saved_matrix_tells_a_complete_matrix_folder(matrix, tmp_path):
    from embedgen.matrix import saved_matrix

    assert saved_matrix(tmp_path / "none") is None
    folder = save_matrix(matrix, tmp_path / "m")
    assert saved_matrix(folder)["rows"] == matrix.shape[0]
    (folder / "manifest.json").write_text("{broken", encoding="utf-8")
    assert saved_matrix(folder) == {}  # something is there: not to be replaced silently


def test_free_folder_finds_the_next_unused_name(tmp_path):
    from embedgen.paths import free_folder

    assert free_folder(tmp_path / "m") == tmp_path / "m"
    (tmp_path / "m").mkdir()
    (tmp_path / "m-2").mkdir()
    assert free_folder(tmp_path / "m") == tmp_path / "m-3"


def test_mostly_cjk_tells_chinese_texts_from_others() -> None:
    from embedgen.tokens import mostly_cjk

    assert mostly_cjk(["外卖很快", "good", "送餐慢"])
    assert not mostly_cjk(["good food", "bad", "外卖"])
    assert not mostly_cjk([])


def test_text_lengths_give_percentiles_and_a_max_length_that_cuts_about_one_in_twenty(
    tiny_encoder,
) -> None:
    from embedgen.tokens import text_lengths

    tokenizer = tiny_encoder.tokenizer
    # 95 texts of 3 characters and 5 of 40: with [CLS] and [SEP], 5 and 42 tokens each.
    texts = ["好吃的"] * 95 + ["好" * 40] * 5
    lengths = text_lengths(tokenizer, texts)
    assert (lengths.p50, lengths.longest, lengths.texts) == (5, 42, 100)
    assert lengths.p95 <= 42 and lengths.suggested % 8 == 0 and lengths.suggested >= 16
    cut = sum(len(tokenizer(t)["input_ids"]) > lengths.suggested for t in texts)
    assert cut <= 5, f"{cut} of 100 texts would be cut at {lengths.suggested}"
    long = text_lengths(tokenizer, ["好" * 600] * 3, limit=512)
    assert long.suggested == 512, "never above the model's positions"
    sampled = text_lengths(tokenizer, ["好吃的"] * 5000, sample=300)
    assert sampled.texts == 300


def test_estimate_counts_the_rows_a_build_makes_and_times_a_sample(tiny_encoder) -> None:
    from embedgen.matrix import estimate_build

    options = MatrixOptions(method="contextual", cjk_only=True)
    estimate = estimate_build(tiny_encoder, options, sample=16)
    built = build_matrix(tiny_encoder, options)
    assert estimate.rows == built.shape[0]
    assert 0 < estimate.sample <= 16 and estimate.seconds > 0
    assert f"for {built.shape[0]:,} rows (measured on {estimate.sample} rows)" in (
        estimate.describe()
    )
    table = estimate_build(tiny_encoder, MatrixOptions(method="input"))
    assert (table.rows, table.sample) == (build_matrix(tiny_encoder).shape[0], 0)


def test_a_matrix_says_what_it_is(tiny_encoder) -> None:
    from embedgen.postprocess import PostProcess

    options = MatrixOptions(
        method="contextual", layer=1, cjk_only=True, postprocess=PostProcess(center=True)
    )
    matrix = build_matrix(tiny_encoder, options)
    name = Path(tiny_encoder.info.model_id).name
    assert matrix.label == (
        f"{name} · untuned · contextual · L1 · CJK · center · {matrix.shape[0]:,} tokens"
    )


def test_tokens_with_line_breaks_are_logged_once_per_model(tmp_path, caplog) -> None:
    """The server logged "1 tokens hold line breaks" on every save (five times in one visit)."""
    import logging

    matrix = EmbeddingMatrix(
        np.zeros((2, 2), np.float32), ("a\nb", "c"), manifest={"model": {"model_id": "once"}}
    )
    with caplog.at_level(logging.INFO, logger="embedgen.matrix"):
        for n in range(3):
            save_matrix(matrix, tmp_path / f"m{n}")
    told = [r.getMessage() for r in caplog.records if "line break" in r.getMessage()]
    assert told == [
        "1 token holds a line break; vocab.txt escapes them with backslashes "
        "(load_matrix undoes it)"
    ]


def test_an_xlmr_chinese_matrix_has_no_word_start_twins(tmp_path: Path) -> None:
    """SentencePiece vocabularies hold "▁好" beside "好" (e5's held 67 such twins): one row
    each; "▁中国", whose bare form is no token, stays."""
    from conftest import build_tiny_xlmr

    from embedgen.models import load_encoder

    encoder = load_encoder(str(build_tiny_xlmr(tmp_path / "xlmr")), allow_download=False)
    m = build_matrix(encoder, MatrixOptions(cjk_only=True))
    assert not any(t.startswith("\u2581") and t[1:] in m.vocab for t in m.vocab)
    assert "好" in m.vocab and "\u2581中国" in m.vocab
    assert m.manifest["selection"]["removed"]["marked_twin"] > 0


def test_a_model_or_run_folder_opened_as_a_matrix_says_what_it_is(tiny_model_dir, tmp_path):
    """Explore's "Open" on a model folder said the matrix "was only partly written"."""
    with pytest.raises(BadRun, match="is a model folder") as err:
        load_matrix(tiny_model_dir)
    assert "partly" not in str(err.value)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}", "utf-8")
    with pytest.raises(BadRun, match="is a run folder"):
        load_matrix(run)
