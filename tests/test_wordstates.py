"""The head pass keeps word states; an aggregated matrix from the run takes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny_xlmr, synthetic_rows, write_csv

from embedgen.data import prepare
from embedgen.features import features_dir
from embedgen.matrix import MatrixOptions, build_matrix
from embedgen.models import load_encoder
from embedgen.table import read_table
from embedgen.train import FinetuneConfig, finetune
from embedgen.train.batches import Batches
from embedgen.words import Corpus, words_from_list
from embedgen.wordstates import PER_WORD, Collector, WordStateHook

MAX_LENGTH = 12  # cuts the longer synthetic texts (up to 18 characters)
# The contexts the head pass keeps: a word's first PER_WORD occurrences in whole texts (the
# default reads 2 in pieces of 32 characters, which the states cannot serve).
WHOLE = {"corpus_contexts": PER_WORD, "context_chars": 0}


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test has its own feature cache."""
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def xlmr_encoder(tmp_path_factory: pytest.TempPathFactory):
    folder = build_tiny_xlmr(tmp_path_factory.mktemp("tiny-xlmr"))
    return load_encoder(str(folder), allow_download=False, device="cpu")


def labelled(tmp_path: Path):
    """160 synthetic reviews with 20 of them repeated (a repeat is another occurrence)."""
    rows = synthetic_rows(160)
    rows += rows[:20]
    return prepare(read_table(write_csv(tmp_path / "reviews.csv", rows)), "text", "label")


def state_files() -> list[Path]:
    return sorted(features_dir().glob("*/words-*.npz"))


def train(encoder, data, **config):
    """Fine-tune as ``runs.train_and_save`` does: the word-state hook plugged in when the
    config asks for word states."""
    cfg = FinetuneConfig(**({"epochs": 1, "dim": 6, "max_length": MAX_LENGTH} | config))
    return finetune(encoder, data, cfg, states_hook=WordStateHook() if cfg.word_states else None)


@pytest.mark.parametrize("model", ["bert", "xlmr"])
@pytest.mark.parametrize("through_projection", [True, False])
def test_an_aggregated_matrix_from_the_word_states_equals_reading_the_corpus_again(
    model: str, through_projection: bool, tiny_encoder, xlmr_encoder, tmp_path: Path
) -> None:
    encoder = tiny_encoder if model == "bert" else xlmr_encoder
    data = labelled(tmp_path)
    run = train(encoder, data)
    assert len(state_files()) == 1, "the head pass keeps one word-state file"
    corpus = Corpus.of(data.texts, "reviews.csv")
    options = MatrixOptions(method="aggregated", **WHOLE, through_projection=through_projection)

    shared = build_matrix(run, options, corpus=corpus)
    from_run = shared.manifest["contexts"]["from_run"]
    assert from_run["contexts"] > 0, "contexts should come from the run's word states"
    assert from_run["read_again"] > 0, "texts the run cut at 12 tokens are read again"

    for path in state_files():
        path.unlink()
    again = build_matrix(run, options, corpus=corpus)
    assert "from_run" not in again.manifest["contexts"]
    assert shared.vocab == again.vocab
    assert shared.columns == again.columns
    np.testing.assert_allclose(shared.vectors, again.vectors, rtol=1e-4, atol=1e-5)
    assert sum(again.columns["corpus_contexts"]) == (
        from_run["contexts"] + from_run["read_again"]
    ), "every corpus context is either kept or read again"


def test_a_word_list_takes_the_states_of_its_words_and_reads_the_others(
    tiny_encoder, tmp_path: Path
) -> None:
    data = labelled(tmp_path)
    run = train(tiny_encoder, data)
    corpus = Corpus.of(data.texts, "reviews.csv")
    seen = corpus.segments[0][0][0]
    words = words_from_list([seen, "好美", "坏坏坏"])
    options = MatrixOptions(method="aggregated", **WHOLE)
    shared = build_matrix(run, options, words=words, corpus=corpus)
    assert "from_run" in shared.manifest["contexts"]
    for path in state_files():
        path.unlink()
    again = build_matrix(run, options, words=words, corpus=corpus)
    np.testing.assert_allclose(shared.vectors, again.vectors, rtol=1e-4, atol=1e-5)
    assert shared.columns == again.columns


@pytest.mark.parametrize(
    "options",
    [
        MatrixOptions(method="aggregated", corpus_contexts=PER_WORD - 1, context_chars=0),
        MatrixOptions(method="aggregated", corpus_contexts=PER_WORD, context_chars=32),
        MatrixOptions(method="aggregated", **WHOLE, layer=1),
        MatrixOptions(method="aggregated", **WHOLE, context_tokens=MAX_LENGTH - 1),
    ],
    ids=["fewer-contexts", "another-layer", "shorter-contexts", "pieces-of-texts"],
)
def test_options_the_word_states_do_not_hold_read_the_corpus(
    options: MatrixOptions, tiny_encoder, tmp_path: Path
) -> None:
    data = labelled(tmp_path)
    run = train(tiny_encoder, data)
    matrix = build_matrix(run, options, corpus=Corpus.of(data.texts, "reviews.csv"))
    assert "from_run" not in matrix.manifest["contexts"]


def test_the_context_length_follows_a_head_run_that_read_more_so_its_states_serve(
    tiny_encoder, tmp_path: Path
) -> None:
    """A run that read 150 tokens per text kept states of contexts that long: the default
    context length of a matrix from it is 150, not 128, and takes them. Told 128, the matrix
    reads the corpus itself; a plain model's default stays 128."""
    data = labelled(tmp_path)
    run = train(tiny_encoder, data, max_length=150)
    corpus = Corpus.of(data.texts, "reviews.csv")
    followed = build_matrix(run, MatrixOptions(method="aggregated", **WHOLE), corpus=corpus)
    assert followed.manifest["context_tokens"] == 150
    assert followed.manifest["contexts"]["from_run"]["contexts"] > 0
    told = build_matrix(
        run, MatrixOptions(method="aggregated", **WHOLE, context_tokens=128), corpus=corpus
    )
    assert told.manifest["context_tokens"] == 128 and "from_run" not in told.manifest["contexts"]
    plain = build_matrix(tiny_encoder, MatrixOptions(method="aggregated", **WHOLE), corpus=corpus)
    assert plain.manifest["context_tokens"] == 128


def test_another_corpus_reads_itself(tiny_encoder, tmp_path: Path) -> None:
    data = labelled(tmp_path)
    run = train(tiny_encoder, data)
    other = Corpus.of(list(data.texts[:50]), "part.csv")
    matrix = build_matrix(run, MatrixOptions(method="aggregated", **WHOLE), corpus=other)
    assert "from_run" not in matrix.manifest["contexts"]


def test_a_run_that_finds_its_features_cached_keeps_no_word_states(
    tiny_encoder, tmp_path: Path
) -> None:
    data = labelled(tmp_path)
    train(tiny_encoder, data, word_states=False)
    assert not state_files()
    train(tiny_encoder, data, dim=4)  # the features come from the cache: nothing read
    assert not state_files()


def test_a_resumed_encoding_keeps_the_states_of_what_it_read(
    tiny_encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first run cancelled after its first chunk; the next run reads only the rest. Its
    states hold those texts, the first chunk's are read again by the matrix: the rows equal
    reading everything again."""
    import threading

    from embedgen import features
    from embedgen.lanes import LANES_ENV

    monkeypatch.setattr(features, "CHUNK_TEXTS", 64)
    monkeypatch.setenv(LANES_ENV, "1")  # one batch at a time: the cancel lands in chunk two
    data = labelled(tmp_path)
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= 64 + 16:
            cancel.set()

    cfg = FinetuneConfig(epochs=1, dim=6, max_length=MAX_LENGTH, batch_size=16)
    first = finetune(
        tiny_encoder, data, cfg, progress=progress, cancel=cancel, states_hook=WordStateHook()
    )
    assert first.cancelled and not state_files()
    run = train(tiny_encoder, data)
    assert len(state_files()) == 1, "the resumed pass keeps the states of what it read"
    corpus = Corpus.of(data.texts, "reviews.csv")
    options = MatrixOptions(method="aggregated", **WHOLE)
    shared = build_matrix(run, options, corpus=corpus)
    from_run = shared.manifest["contexts"]["from_run"]
    assert from_run["contexts"] > 0
    kept = state_files()[0].stat().st_mtime_ns
    train(tiny_encoder, data, dim=4)  # everything cached: nothing read, nothing replaced
    assert [p.stat().st_mtime_ns for p in state_files()] == [kept]
    for path in state_files():
        path.unlink()
    again = build_matrix(run, options, corpus=corpus)
    np.testing.assert_allclose(shared.vectors, again.vectors, rtol=1e-4, atol=1e-5)
    assert from_run["read_again"] > sum(again.columns["corpus_contexts"]) / 4, (
        "the first chunk's 64 of 160 texts are read again"
    )


def test_word_states_need_the_feature_cache_and_can_be_switched_off(
    tiny_encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = labelled(tmp_path)
    train(tiny_encoder, data, word_states=False)
    assert not state_files()
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "other-home"))
    train(tiny_encoder, data, cache_features=False)
    assert not state_files()
    monkeypatch.setenv("EMBEDGEN_FEATURE_CACHE_MB", "0")
    train(tiny_encoder, data)
    assert not state_files()


def test_a_batch_taken_twice_counts_once(tiny_encoder) -> None:
    texts = ["中国的经济工作", "他说中国", "中国的经济工作"]  # the repeat is a second occurrence
    distinct = list(dict.fromkeys(texts))
    collector = Collector(tiny_encoder.tokenizer, texts, distinct, 64, 32)
    tok = Batches(tiny_encoder.tokenizer, distinct, 64, offsets=True)
    assert tok.offsets is not None and tok.special is not None
    batch = tok.collate(range(2), torch.device("cpu"))
    with torch.no_grad():
        states = tiny_encoder.model(**batch, output_hidden_states=True).hidden_states[-1]
    for _ in range(2):
        collector.add([0, 1], states, tok.ids, tok.offsets, tok.special)
    result = collector.result()
    assert result is not None, "every distinct text was read"
    assert result.counts[result.row["中国"]] == 3, "中国 occurs three times over the texts"
    assert not result.cut.any()


# -- generated contexts, kept between builds --------------------------------------------------


def test_generated_contexts_are_read_once_and_then_come_from_the_cache(
    tiny_encoder, tmp_path: Path
) -> None:
    data = labelled(tmp_path)
    run = train(tiny_encoder, data)
    words = words_from_list(["好美", "坏", "中国", "天气"])
    options = MatrixOptions(method="aggregated", corpus_contexts=0)
    calls = []
    hook = tiny_encoder.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        first = build_matrix(run, options, words=words)
        read_first, calls[:] = len(calls), []
        again = build_matrix(run, options, words=words)
    finally:
        hook.remove()
    assert read_first > 0 and not calls, "the second build should read nothing"
    assert first.manifest["contexts"]["generated_cached"] == 0
    assert again.manifest["contexts"]["generated_cached"] == 4
    np.testing.assert_allclose(again.vectors, first.vectors, rtol=1e-5, atol=1e-6)


def test_cached_generated_contexts_equal_reading_them_through_the_projection(
    tiny_encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = labelled(tmp_path)
    run = train(tiny_encoder, data)
    words = words_from_list(["好美", "坏", "中国"])
    raw = MatrixOptions(method="aggregated", corpus_contexts=0, through_projection=False)
    build_matrix(run, raw, words=words)  # fills the cache with the raw means
    projected = build_matrix(
        run, MatrixOptions(method="aggregated", corpus_contexts=0), words=words
    )
    assert projected.manifest["contexts"]["generated_cached"] == 3
    monkeypatch.setenv("EMBEDGEN_FEATURE_CACHE_MB", "0")
    direct = build_matrix(run, MatrixOptions(method="aggregated", corpus_contexts=0), words=words)
    assert not direct.manifest["contexts"].get("generated_cached")
    np.testing.assert_allclose(projected.vectors, direct.vectors, rtol=1e-4, atol=1e-5)


def test_generated_contexts_of_another_layer_or_count_are_read_again(
    tiny_encoder, tmp_path: Path
) -> None:
    words = words_from_list(["好美", "坏"])
    build_matrix(tiny_encoder, MatrixOptions(method="aggregated", **WHOLE, layer=2), words=words)
    for options in (
        MatrixOptions(method="aggregated", **WHOLE, layer=1),
        MatrixOptions(method="aggregated", **WHOLE, layer=2, generated_contexts=3),
        MatrixOptions(method="aggregated", **WHOLE, layer=2, context_tokens=64),
    ):
        matrix = build_matrix(tiny_encoder, options, words=words)
        assert not matrix.manifest["contexts"].get("generated_cached"), options
    same = build_matrix(
        tiny_encoder, MatrixOptions(method="aggregated", **WHOLE, layer=2), words=words
    )
    assert same.manifest["contexts"]["generated_cached"] == 2


def test_damaged_kept_files_are_read_again_not_trusted(tiny_encoder, tmp_path: Path) -> None:
    data = labelled(tmp_path)
    run = train(tiny_encoder, data)
    corpus = Corpus.of(data.texts, "reviews.csv")
    options = MatrixOptions(method="aggregated", **WHOLE)
    whole = build_matrix(run, options, corpus=corpus)
    (states,) = state_files()
    (generated,) = features_dir().glob("*/generated.npz")
    states.write_bytes(b"not a zip file")
    generated.write_bytes(states.read_bytes())
    again = build_matrix(run, options, corpus=corpus)
    assert "from_run" not in again.manifest["contexts"]
    assert again.manifest["contexts"]["generated_cached"] == 0
    np.testing.assert_allclose(again.vectors, whole.vectors, rtol=1e-4, atol=1e-5)
    third = build_matrix(run, options, corpus=corpus)  # the generated contexts were kept anew
    assert third.manifest["contexts"]["generated_cached"] == len(third.vocab)
