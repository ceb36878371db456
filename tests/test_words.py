"""Words as rows: vocabularies from a corpus or a list, and word vectors by each method."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NEGATIVE, POSITIVE, synthetic_rows

from embedgen.errors import BadConfig, BadTable
from embedgen.matrix import (
    MatrixOptions,
    build_matrix,
    describe,
    load_matrix,
    name_for,
    resolve_layers,
    save_matrix,
)
from embedgen.matrix.aggregated import chars_per_token
from embedgen.matrix.contexts import context_vectors
from embedgen.models import load_encoder
from embedgen.words import (
    TEMPLATES,
    Context,
    Corpus,
    WordOptions,
    corpus_contexts,
    generated_contexts,
    word_pieces,
    words_from_corpus,
    words_from_list,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.of([text for text, _ in synthetic_rows(200)], "reviews.csv")


@pytest.fixture(scope="module")
def marker_encoder(tmp_path_factory: pytest.TempPathFactory):
    """A tiny XLM-R whose 龘 has no word-start piece, so it splits into "▁" + "龘"."""
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    torch.manual_seed(0)
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581好", -2.0), ("好", -3.0), ("龘", -3.0), ("\u2581", -4.0), ("<mask>", 0.0)]
    tokenizer = XLMRobertaTokenizerFast(vocab=pieces)
    config = XLMRobertaConfig(
        vocab_size=len(pieces),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("marker-xlmr")
    XLMRobertaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_encoder(str(folder), allow_download=False, device="cpu")


# -- vocabularies -----------------------------------------------------------------------------


def test_corpus_words_are_counted_most_frequent_first_above_the_minimum(corpus: Corpus) -> None:
    vocab = words_from_corpus(corpus, WordOptions(min_count=3))
    assert all(n >= 3 for n in vocab.counts)
    assert list(vocab.counts) == sorted(vocab.counts, reverse=True)
    assert vocab.record["source"] == "corpus" and vocab.record["words"] == len(vocab)
    assert vocab.record["below_min_count"] > 0  # the synthetic texts have rare characters
    everything = words_from_corpus(corpus, WordOptions(min_count=1))
    assert len(everything) == vocab.record["distinct_words"] > len(vocab)


def test_top_n_keeps_the_most_frequent(corpus: Corpus) -> None:
    top = words_from_corpus(corpus, WordOptions(min_count=1, top_n=5))
    assert top.words == words_from_corpus(corpus, WordOptions(min_count=1)).words[:5]


def test_chinese_words_only_leaves_out_numbers_latin_and_punctuation() -> None:
    corpus = Corpus.of(["外卖送餐很快，2024年 good！", "外卖送餐很快。"], "mixed")
    cjk = words_from_corpus(corpus, WordOptions(min_count=1)).words
    assert "外卖" in cjk and not {"2024", "good", "，", "！", " "} & set(cjk)
    anything = words_from_corpus(corpus, WordOptions(min_count=1, cjk_words=False)).words
    assert {"2024", "good"} <= set(anything) and "，" not in anything


def test_a_user_dictionary_changes_the_segmentation(tmp_path: Path) -> None:
    corpus = Corpus.of(["这家店的性价比超高", "性价比超高的外卖"], "shop")
    plain = words_from_corpus(corpus, WordOptions(min_count=1)).words
    (tmp_path / "dict.txt").write_text("性价比超高 100\n", encoding="utf-8")
    with_dict = Corpus.of(corpus.texts, "shop", user_dict=tmp_path / "dict.txt")
    words = words_from_corpus(with_dict, WordOptions(min_count=1))
    assert "性价比超高" in words.words and "性价比超高" not in plain
    assert words.record["corpus"]["user_dict"] == "dict.txt"


def test_no_word_above_the_minimum_count_says_what_to_lower(corpus: Corpus) -> None:
    with pytest.raises(BadConfig, match="Lower the minimum count"):
        words_from_corpus(corpus, WordOptions(min_count=1_000_000))


def test_a_word_list_keeps_its_order_and_counts_blank_and_repeated_lines(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_bytes("\ufeff外卖\r\n\r\n送餐\t12\r\n外卖\r\n 干净 \r\n".encode())
    vocab = words_from_list(path)
    assert vocab.words == ("外卖", "送餐", "干净")
    assert vocab.record["blank_lines"] == 1 and vocab.record["repeats_left_out"] == 1
    assert vocab.record["list"] == "words.txt"


def test_a_word_list_that_is_not_utf8_or_empty_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "gbk.txt").write_bytes("外卖\n".encode("gbk"))
    with pytest.raises(BadTable, match="gbk.txt: the word list is not UTF-8"):
        words_from_list(tmp_path / "gbk.txt")
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(BadTable, match="empty.txt holds no words"):
        words_from_list(tmp_path / "empty.txt")


# -- pieces and pooling -----------------------------------------------------------------------


def test_a_lone_word_start_piece_is_left_out_of_a_word(marker_encoder) -> None:
    tokenizer = marker_encoder.tokenizer
    assert tokenizer.tokenize("龘") == ["\u2581", "龘"]
    (pieces,) = word_pieces(tokenizer, ["龘"])
    assert tokenizer.convert_ids_to_tokens(pieces) == ["龘"]
    (pieces,) = word_pieces(tokenizer, ["好"])
    assert tokenizer.convert_ids_to_tokens(pieces) == ["\u2581好"]


def test_input_word_vectors_are_the_mean_of_their_pieces_rows(tiny_encoder) -> None:
    matrix = build_matrix(tiny_encoder, words=words_from_list(["好美", "坏"]))
    table = tiny_encoder.model.get_input_embeddings().weight.detach().numpy()
    vocab = tiny_encoder.tokenizer.get_vocab()
    np.testing.assert_allclose(matrix.vectors[0], table[[vocab["好"], vocab["美"]]].mean(0))
    np.testing.assert_allclose(matrix.vectors[1], table[vocab["坏"]], rtol=1e-6)
    assert matrix.vocab == ("好美", "坏") and matrix.manifest["rows_are"] == "words"


# -- contextual: the word alone ----------------------------------------------------------------


def _states(encoder, ids: list[int]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = encoder.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states


def test_a_one_token_word_alone_is_its_contextual_token_row(tiny_encoder) -> None:
    words = build_matrix(
        tiny_encoder, MatrixOptions(method="contextual"), words=words_from_list(["好"])
    )
    tokens = build_matrix(tiny_encoder, MatrixOptions(method="contextual"))
    np.testing.assert_allclose(
        words.vectors[0], tokens.vectors[tokens.vocab.index("好")], atol=1e-5
    )


def test_a_longer_word_alone_averages_its_pieces_states_over_the_layer_range(tiny_encoder) -> None:
    options = MatrixOptions(method="contextual", layers="1-2")
    matrix = build_matrix(tiny_encoder, options, words=words_from_list(["好美坏"]))
    tok = tiny_encoder.tokenizer
    ids = tok("好美坏")["input_ids"]  # [CLS] 好 美 坏 [SEP]
    hidden = _states(tiny_encoder, ids)
    expected = torch.stack([hidden[1][0, 1:4], hidden[2][0, 1:4]]).mean(0).mean(0)
    np.testing.assert_allclose(matrix.vectors[0], expected.numpy(), atol=1e-5)
    assert matrix.manifest["layers"] == [1, 2] and matrix.manifest["layer"] is None


def test_layer_ranges_are_read_and_bad_ones_refused(tiny_encoder) -> None:
    assert resolve_layers(MatrixOptions(layers="2-1"), 2) == (1, 2)
    assert resolve_layers(MatrixOptions(layers="1"), 2) == (1, 1)
    assert resolve_layers(MatrixOptions(layer=-1), 2) == (2, 2)
    with pytest.raises(BadConfig, match="is not A-B"):
        MatrixOptions(layers="last four")
    with pytest.raises(BadConfig, match="layers 0 \\(embeddings\\) to 2"):
        resolve_layers(MatrixOptions(layers="1-9"), 2, "tiny")


# -- aggregated: the word in context -----------------------------------------------------------


def test_an_aggregated_word_is_the_mean_of_its_occurrence_vectors(tiny_encoder) -> None:
    texts = ["中国的经济工作", "他说中国", "天气"]  # jieba: 中国/的/经济/工作, 他/说/中国
    corpus = Corpus.of(texts, "three")
    contexts = corpus_contexts(["中国"], corpus, per_word=8)
    assert [(c.text, c.start, c.end) for c in contexts] == [(texts[0], 0, 2), (texts[1], 2, 4)]
    options = MatrixOptions(method="aggregated", generated_contexts=0, layer=1)
    matrix = build_matrix(tiny_encoder, options, words=words_from_list(["中国"]), corpus=corpus)
    tok = tiny_encoder.tokenizer
    occurrence = []
    for text, (start, end) in ((texts[0], (0, 2)), (texts[1], (2, 4))):
        enc = tok(text, return_offsets_mapping=True)
        hidden = _states(tiny_encoder, enc["input_ids"])[1][0]
        positions = [
            k for k, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s < end and e > start
        ]
        occurrence.append(hidden[positions].mean(0))
    np.testing.assert_allclose(
        matrix.vectors[0], torch.stack(occurrence).mean(0).numpy(), atol=1e-5
    )
    assert matrix.columns["corpus_contexts"] == (2,)
    assert matrix.columns["vector"] == ("corpus",)


def test_a_word_the_corpus_lacks_is_read_alone_and_marked(tiny_encoder) -> None:
    corpus = Corpus.of(["中国的天气"], "one")
    words = words_from_list(["中国", "坏坏坏"])
    options = MatrixOptions(method="aggregated", generated_contexts=0)
    matrix = build_matrix(tiny_encoder, options, words=words, corpus=corpus)
    alone = build_matrix(tiny_encoder, MatrixOptions(method="contextual"), words=words)
    np.testing.assert_allclose(matrix.vectors[1], alone.vectors[1], atol=1e-5)
    assert matrix.columns["vector"] == ("corpus", "word alone")
    assert matrix.manifest["contexts"]["words_read_alone"] == 1


def test_generated_contexts_give_every_word_a_vector_averaged_with_the_corpus(
    tiny_encoder,
) -> None:
    corpus = Corpus.of(["中国的天气"], "one")
    words = words_from_list(["中国", "坏坏坏"])
    both = build_matrix(
        tiny_encoder, MatrixOptions(method="aggregated", layer=2), words=words, corpus=corpus
    )
    assert both.columns["vector"] == ("corpus + generated", "generated")
    gen2, _ = context_vectors(
        tiny_encoder, generated_contexts(words.words, 2), 2, (2, 2), device=CPU
    )
    gen4, _ = context_vectors(
        tiny_encoder, generated_contexts(words.words, 4), 2, (2, 2), device=CPU
    )
    only, _ = context_vectors(
        tiny_encoder, corpus_contexts(words.words, corpus, per_word=8), 2, (2, 2), device=CPU
    )
    # The word the corpus holds is read in 2 generated sentences, the one it lacks in all 4.
    np.testing.assert_allclose(both.vectors[0], (gen2[0] + only[0]) / 2, atol=1e-5)
    np.testing.assert_allclose(both.vectors[1], gen4[1], atol=1e-5)
    assert both.manifest["contexts"]["generated_per_word"] == 4
    assert both.manifest["contexts"]["generated_per_word_in_corpus"] == 2
    assert "also in 2 generated sentences (the others in 4)" in describe(both)
    four = build_matrix(
        tiny_encoder,
        MatrixOptions(method="aggregated", layer=2, generated_in_corpus=4),
        words=words,
        corpus=corpus,
    )
    np.testing.assert_allclose(four.vectors[0], (gen4[0] + only[0]) / 2, atol=1e-5)


def test_generated_contexts_place_the_word_where_the_span_says() -> None:
    contexts = generated_contexts(["外卖"], len(TEMPLATES))
    assert len(contexts) == len(TEMPLATES)
    assert all(c.text[c.start : c.end] == "外卖" for c in contexts)
    with pytest.raises(BadConfig):
        generated_contexts(["外卖"], len(TEMPLATES) + 1)


def test_windows_cut_between_sentences_else_between_words_never_inside_one() -> None:
    from embedgen.words import segment, segmenter, windows

    text = (
        "今天师傅是不是手抖了，微辣格外辣！送餐快，态度也特别好。"
        "超级快就送到了这么冷的天气骑士们辛苦了"
    )
    segments = segment(segmenter(), text)
    cuts = windows(text, segments, 16)
    assert cuts[0][0] == 0 and cuts[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:], strict=False))  # no gap, no overlap
    assert all(0 < end - start <= 16 for start, end in cuts)
    assert text[: cuts[0][1]] == "今天师傅是不是手抖了，"  # after the break in its second half
    bounds = {s for _, s, _ in segments} | {e for _, _, e in segments}
    assert all(end in bounds for _, end in cuts)  # the unbroken tail is cut between words
    assert windows(text, segments, 0) == [(0, len(text))]
    lone = "一" * 50
    assert windows(lone + "好", [(lone, 0, 50), ("好", 50, 51)], 10) == [(0, 50), (50, 51)]


def test_corpus_contexts_in_windows_hold_the_word_at_its_span(tiny_encoder) -> None:
    """With a window, a context is the piece of its text around the word; the pieces with a
    wanted word are read, and the row differs from the whole text's (another context)."""
    text = "今天的中国经济工作很好，明天的天气也不错。后来他又说中国的菜好吃"
    corpus = Corpus.of([text], "one")
    whole = corpus_contexts(["中国"], corpus, per_word=8)
    cut = corpus_contexts(["中国"], corpus, per_word=8, window=12)
    assert [c.text for c in whole] == [text, text]
    assert [c.text[c.start : c.end] for c in cut] == ["中国", "中国"]
    assert all(len(c.text) <= 12 and c.text in text for c in cut)
    assert cut[0].text != cut[1].text
    words = words_from_list(["中国"])
    options = MatrixOptions(method="aggregated", generated_contexts=0, layer=2)
    rows = build_matrix(tiny_encoder, options, words=words, corpus=corpus)
    windowed = build_matrix(
        tiny_encoder, replace(options, context_chars=12), words=words, corpus=corpus
    )
    expected, _ = context_vectors(tiny_encoder, cut, 1, (2, 2), device=CPU)
    np.testing.assert_allclose(windowed.vectors[0], expected[0], atol=1e-5)
    assert not np.allclose(windowed.vectors[0], rows.vectors[0], atol=1e-4)
    assert windowed.manifest["contexts"]["corpus_window"] == 12
    assert "in pieces of at most 12 characters" in describe(windowed)


def test_a_context_whose_word_is_cut_off_is_skipped(tiny_encoder) -> None:
    long_text = "的" * 40 + "好美"
    mean, used = context_vectors(
        tiny_encoder, [Context(long_text, 40, 42, 0)], 1, (2, 2), device=CPU, max_tokens=16
    )
    assert used[0] == 0 and np.isnan(mean[0]).all()


def test_aggregated_needs_words_or_a_corpus(tiny_encoder) -> None:
    with pytest.raises(BadConfig, match="reads words in context"):
        build_matrix(tiny_encoder, MatrixOptions(method="aggregated"))
    with pytest.raises(BadConfig, match="needs a corpus"):
        build_matrix(
            tiny_encoder,
            MatrixOptions(method="aggregated", generated_contexts=0),
            words=words_from_list(["好"]),
        )


def test_aggregated_from_a_corpus_alone_has_the_corpus_words_as_rows(
    tiny_encoder, corpus: Corpus
) -> None:
    matrix = build_matrix(tiny_encoder, MatrixOptions(method="aggregated"), corpus=corpus)
    assert matrix.vocab == words_from_corpus(corpus).words
    assert set(matrix.columns["vector"]) <= {"corpus + generated", "generated"}
    assert matrix.columns["corpus_count"] == words_from_corpus(corpus).counts


def test_aggregated_reaches_the_tuned_projection(tiny_encoder, corpus: Corpus) -> None:
    from embedgen.data import prepare
    from embedgen.table import read_table
    from embedgen.train import FinetuneConfig, finetune

    path = Path(__file__).parent / ".." / "assets" / "sample_reviews.csv"
    data = prepare(read_table(path), 1, 2)
    run = finetune(tiny_encoder, data, FinetuneConfig(epochs=1, dim=6))
    words = words_from_list([POSITIVE[:2], NEGATIVE[:2]])
    projection_only = MatrixOptions(method="aggregated", label_weight=0)
    matrix = build_matrix(run, projection_only, words=words, corpus=corpus)
    assert matrix.shape == (2, 6) and matrix.manifest["reflects_tuning"] is True


# -- the folder and the name -------------------------------------------------------------------


def test_word_rows_and_their_facts_round_trip(tiny_encoder, corpus: Corpus, tmp_path: Path) -> None:
    matrix = build_matrix(
        tiny_encoder,
        MatrixOptions(method="aggregated"),
        words=words_from_list(["好美", "坏", "天\t气"]),
        corpus=corpus,
    )
    folder = save_matrix(matrix, tmp_path / "m")
    back = load_matrix(folder, verify=True)
    assert back.vocab == matrix.vocab and back.columns == matrix.columns
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    assert manifest["columns"] == ["corpus_count", "corpus_contexts", "vector"]
    assert "rows.tsv" in manifest["files"]


def test_the_name_says_rows_are_words_and_where_they_were_read(
    tiny_encoder, corpus: Corpus
) -> None:
    listed = words_from_list(["好"], name="food.txt")
    options = MatrixOptions(method="aggregated", layers="1-2")
    assert name_for(tiny_encoder, options, words=listed) == "aggregated-L1-2-base-words-food"
    assert (
        name_for(tiny_encoder, options, words=listed, corpus=corpus)
        == "aggregated-L1-2-base-words-food-in-reviews"
    )
    from_corpus = words_from_corpus(corpus)
    assert name_for(tiny_encoder, options, words=from_corpus, corpus=corpus) == (
        "aggregated-L1-2-base-words-reviews"
    )
    assert name_for(tiny_encoder, MatrixOptions(method="contextual")) == "contextual-L2-base"


def test_the_same_inputs_give_the_same_matrix(tiny_encoder, corpus: Corpus) -> None:
    words = words_from_list(["好美", "坏"])
    options = MatrixOptions(method="aggregated")
    first = build_matrix(tiny_encoder, options, words=words, corpus=corpus)
    second = build_matrix(tiny_encoder, options, words=words, corpus=corpus)
    np.testing.assert_array_equal(first.vectors, second.vectors)


def test_a_missing_or_unreadable_user_dictionary_is_named(tmp_path: Path) -> None:
    missing = Corpus.of(["外卖"], "shop", user_dict=tmp_path / "nope.txt")
    with pytest.raises(BadTable, match="nope.txt: no such user dictionary"):
        words_from_corpus(missing)
    (tmp_path / "gbk.txt").write_bytes("性价比超高 100\n".encode("gbk"))
    unreadable = Corpus.of(["外卖"], "shop", user_dict=tmp_path / "gbk.txt")
    with pytest.raises(BadTable, match="gbk.txt is not a user dictionary jieba can read"):
        words_from_corpus(unreadable)


def test_aggregated_with_no_contexts_at_all_is_refused() -> None:
    with pytest.raises(BadConfig, match="aggregated needs contexts"):
        MatrixOptions(method="aggregated", corpus_contexts=0, generated_contexts=0)


def test_a_label_weight_needs_a_run_and_contextual_rows(tiny_encoder) -> None:
    with pytest.raises(BadConfig, match="label weight adds the run's label signal"):
        build_matrix(tiny_encoder, MatrixOptions(method="contextual", label_weight=0.5))


def test_a_damaged_rows_table_is_refused_on_load(
    tiny_encoder, corpus: Corpus, tmp_path: Path
) -> None:
    from embedgen.errors import BadRun

    matrix = build_matrix(
        tiny_encoder, MatrixOptions(method="aggregated"), words=words_from_list(["好美", "坏"]),
        corpus=corpus,
    )  # fmt: skip
    folder = save_matrix(matrix, tmp_path / "m")
    (folder / "rows.tsv").write_text("token\tcorpus_count\n好美\t1\n", encoding="utf-8")
    with pytest.raises(BadRun, match="rows.tsv does not hold one line of 4 fields per row"):
        load_matrix(folder)
    (folder / "rows.tsv").unlink()
    with pytest.raises(BadRun, match="has no rows.tsv"):
        load_matrix(folder)


def test_a_word_the_tokenizer_drops_whole_is_read_as_the_unknown_token(tiny_encoder) -> None:
    """THUCNews holds "\ufffd" as a word: BERT's tokenizer gives it no piece, which made its
    contextual and aggregated rows NaN (and every centred row with them)."""
    from embedgen.words import word_pieces

    assert tiny_encoder.tokenizer("\ufffd", add_special_tokens=False)["input_ids"] == []
    pieces = word_pieces(tiny_encoder.tokenizer, ["\ufffd", "好"])
    assert pieces[0] == [tiny_encoder.tokenizer.unk_token_id] and pieces[1]
    for method in ("contextual", "aggregated"):
        m = build_matrix(
            tiny_encoder, MatrixOptions(method=method), words=words_from_list(["\ufffd", "好"])
        )
        assert np.isfinite(m.vectors).all(), method


def test_aggregated_progress_gives_each_pass_a_share_in_proportion_to_what_it_reads(
    tiny_encoder, corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The time left a sink computes from the rate only holds when progress moves at one pace
    through every pass: equal shares let a long corpus pass look short and the time left climb
    (3:39 to 9:16 in the issue). Progress never goes back and ends at the whole."""
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))  # no generated context cached
    words = words_from_list(list(POSITIVE[:4]) + ["没有的词"])
    seen: list[tuple[int, int]] = []
    options = MatrixOptions(method="aggregated", corpus_contexts=8, generated_contexts=2)
    build_matrix(
        tiny_encoder,
        options,
        words=words,
        corpus=corpus,
        progress=lambda d, t: seen.append((d, t)),
    )
    fractions = [d / t for d, t in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    contexts = corpus_contexts(words.words, corpus, per_word=8)
    per_token = chars_per_token(tiny_encoder.tokenizer, [c.text for c in contexts[::50]])
    texts = {c.text for c in contexts}
    corpus_chars = sum(min(len(t), 128 * per_token) + 2 * per_token for t in texts)
    generated_chars = sum(
        len(t) - 2 + len(w) + 2 * per_token for w in words.words for t in TEMPLATES[:2]
    )
    share = corpus_chars / (1.02 * (corpus_chars + generated_chars) + 1)
    # The corpus pass ends where its share does (the last report before the generated pass).
    assert any(abs(f - share) < 0.02 for f in fractions), (share, fractions)


def test_a_very_long_text_is_segmented_in_pieces_with_true_spans() -> None:
    """A pasted log line of 60,000 characters reaches jieba in pieces of at most SEGMENT_CHARS
    (jieba's cost grows faster than the text), cut after punctuation where there is some; every
    word's span still points into the whole text."""
    from embedgen.table import SEGMENT_CHARS
    from embedgen.words import WordSplitter, pieces, segment, segmenter

    real = segmenter()
    seen: list[int] = []

    class Watched:
        """The real segmenter, counting the length of each text it is handed."""

        def tokenize(self, text: str):
            seen.append(len(text))
            return real.tokenize(text)

    text = ("服务很好，菜也好吃。" * 3000) + "x" * 30_000
    words = segment(Watched(), text)
    assert seen and max(seen) <= SEGMENT_CHARS and sum(seen) == len(text)
    assert all(text[start:end] == word for word, start, end in words)
    assert "".join(w for w, _, _ in words) == text
    cuts = [start for start, _ in pieces(text)][1:]
    assert all(text[c - 1] in "，。" for c in cuts if c < 30_000), "cut after punctuation"
    short = "服务很好，菜也好吃。"
    assert segment(real, short) == list(real.tokenize(short))
    corpus = Corpus.of([text, short], "long")
    assert corpus.segments[0] == tuple(words)
    assert WordSplitter(corpus).tokenize(text) == [w for w, _, _ in words if w.strip()]
