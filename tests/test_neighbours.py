"""NeighbourIndex: cosine neighbours, similarity, analogies and out-of-vocabulary queries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedgen.errors import BadConfig, NotInVocabulary
from embedgen.matrix import EmbeddingMatrix
from embedgen.neighbours import Lookup, NeighbourIndex

# A hand-built 4-d matrix with known answers: 好's closest are ##好, then 棒; 坏 is opposite.
TOKENS = {
    "好": [1.0, 0.0, 0.0, 0.0],
    "##好": [0.9, 0.1, 0.0, 0.0],
    "棒": [0.8, 0.3, 0.0, 0.0],
    "坏": [-1.0, 0.0, 0.0, 0.0],
    "▁中国": [0.0, 1.0, 0.0, 0.0],
    "▁中": [0.0, 0.7, 0.7, 0.0],
    "国": [0.0, 0.6, 0.0, 0.8],
    "人": [0.0, 0.0, 1.0, 0.0],
    "##人": [0.0, 0.0, 0.9, 0.1],
    "play": [0.0, 0.0, 0.0, 1.0],
    "##ing": [0.0, 0.0, 0.5, 0.5],
    "ing": [0.5, 0.0, 0.0, 0.5],
    "零": [0.0, 0.0, 0.0, 0.0],
}


@pytest.fixture
def index() -> NeighbourIndex:
    vectors = np.array(list(TOKENS.values()), dtype=np.float32)
    return NeighbourIndex(EmbeddingMatrix(vectors=vectors, vocab=tuple(TOKENS)))


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_top_k_returns_the_known_closest_tokens_best_first(index):
    found = index.top_k("好", k=2)
    assert [n.token for n in found] == ["##好", "棒"]
    assert found[0].score == pytest.approx(float(unit([0.9, 0.1, 0, 0])[0]), abs=1e-6)
    assert found[0].score >= found[1].score


def test_top_k_leaves_out_the_query_token(index):
    assert "好" not in [n.token for n in index.top_k("好", k=100)]


def test_top_k_clamps_k_to_the_vocabulary(index):
    assert len(index.top_k("好", k=100)) == len(TOKENS) - 1


def test_top_k_leaves_out_tokens_named_in_exclude(index):
    assert [n.token for n in index.top_k("好", k=1, exclude=["##好"])] == ["棒"]


def test_top_k_rejects_k_below_one(index):
    with pytest.raises(BadConfig, match="k = 0"):
        index.top_k("好", k=0)


def test_top_k_accepts_a_vector_and_excludes_nothing(index):
    found = index.top_k(np.array([2.0, 0.0, 0.0, 0.0], dtype=np.float32), k=1)
    assert found[0].token == "好"
    assert found[0].score == pytest.approx(1.0)


def test_top_k_rejects_a_vector_of_the_wrong_width(index):
    with pytest.raises(BadConfig, match="4 dims"):
        index.top_k(np.ones(3, dtype=np.float32))


def test_top_k_matches_a_full_sort_on_a_random_matrix():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    vocab = tuple(f"t{i}" for i in range(500))
    index = NeighbourIndex(EmbeddingMatrix(vectors=vectors, vocab=vocab))
    query = rng.standard_normal(16).astype(np.float32)
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = [vocab[i] for i in np.argsort(-(units @ unit(query)))[:25]]
    assert [n.token for n in index.top_k(query, k=25)] == expected


def test_similarity_is_symmetric_and_a_cosine(index):
    ab = index.similarity("好", "棒")
    assert ab == pytest.approx(index.similarity("棒", "好"))
    assert ab == pytest.approx(float(unit([0.8, 0.3, 0, 0])[0]), abs=1e-6)
    assert index.similarity("好", "坏") == pytest.approx(-1.0)


def test_similarity_stays_within_minus_one_and_one(index):
    tokens = list(TOKENS)
    for a in tokens:
        for b in tokens:
            assert -1.0 <= index.similarity(a, b) <= 1.0


def test_zero_vector_gives_zero_scores_not_nan(index):
    assert index.similarity("零", "好") == 0.0
    assert all(math.isfinite(n.score) for n in index.top_k("零", k=100))
    assert all(math.isfinite(n.score) for n in index.top_k("好", k=100))


def test_lookup_of_a_token_is_its_unit_vector_and_not_pooled(index):
    found = index.lookup("棒")
    assert found == Lookup(query="棒", vector=found.vector, pieces=("棒",), pooled=False)
    np.testing.assert_allclose(found.vector, unit([0.8, 0.3, 0, 0]), atol=1e-6)


def test_lookup_finds_a_sentencepiece_word_start_token(index):
    found = index.lookup("中国")
    assert found.pieces == ("▁中国",)
    assert not found.pooled


def test_lookup_pools_an_unknown_word_from_its_pieces(index):
    found = index.lookup("中国人")
    assert found.pooled
    assert found.pieces == ("▁中国", "人")
    np.testing.assert_allclose(found.vector, (unit([0, 1, 0, 0]) + unit([0, 0, 1, 0])) / 2)


def test_lookup_prefers_continuation_pieces_for_non_cjk_text(index):
    assert index.lookup("playing").pieces == ("play", "##ing")


def test_lookup_prefers_bare_pieces_for_cjk_characters(index):
    assert index.lookup("坏好").pieces == ("坏", "好")


def test_top_k_of_a_pooled_word_leaves_out_its_pieces(index):
    tokens = [n.token for n in index.top_k("中国人", k=100)]
    assert "▁中国" not in tokens
    assert "人" not in tokens


def test_lookup_of_an_impossible_word_names_it(index):
    with pytest.raises(NotInVocabulary, match=r"'𠀀' is not in the vocabulary .*13 tokens"):
        index.lookup("𠀀")


def test_lookup_of_an_empty_query_is_not_in_vocabulary(index):
    with pytest.raises(NotInVocabulary, match="empty"):
        index.lookup("")


@pytest.fixture
def royal_index() -> NeighbourIndex:
    """男:女 = 王:后 by construction (gender, person, royalty axes), plus random distractors."""
    gender, person, royal = np.eye(8, dtype=np.float32)[:3]
    rng = np.random.default_rng(3)
    words = {
        "男": gender + person,
        "女": -gender + person,
        "王": gender + royal,
        "后": -gender + royal,
    }
    for i in range(20):
        words[f"词{i}"] = rng.standard_normal(8).astype(np.float32)
    vectors = np.stack(list(words.values())).astype(np.float32)
    return NeighbourIndex(EmbeddingMatrix(vectors=vectors, vocab=tuple(words)))


def test_analogy_3cosadd_finds_the_forced_answer(royal_index):
    best = royal_index.analogy("男", "女", "王", k=1)[0]
    assert best.token == "后"
    assert best.score == pytest.approx(1.0, abs=1e-6)


def test_analogy_leaves_out_the_three_question_words(royal_index):
    tokens = [n.token for n in royal_index.analogy("男", "女", "王", k=100)]
    assert not {"男", "女", "王"} & set(tokens)
    assert len(tokens) == 21


def test_analogy_3cosmul_finds_the_forced_answer(royal_index):
    assert royal_index.analogy_3cosmul("男", "女", "王", k=1)[0].token == "后"


def test_neighbours_can_be_kept_to_cjk_rows() -> None:
    from embedgen.matrix import EmbeddingMatrix
    from embedgen.neighbours import NeighbourIndex

    vocab = ("好", "棒", "good", "▁kaasa", "▁美", "坏")
    vectors = np.array(
        [[1, 0], [0.9, 0.1], [0.99, 0.01], [0.98, 0.02], [0.8, 0.2], [0, 1]], dtype=np.float32
    )
    index = NeighbourIndex(EmbeddingMatrix(vectors, vocab))
    assert index.cjk_rows().tolist() == [True, True, False, False, True, True]
    everything = [n.token for n in index.top_k("好", k=3)]
    assert everything == ["good", "▁kaasa", "棒"]
    cjk = [n.token for n in index.top_k("好", k=3, only=index.cjk_rows())]
    assert cjk == ["棒", "▁美", "坏"]


def test_an_index_over_a_mapped_matrix_copies_none_of_it_and_answers_the_same(tmp_path) -> None:
    """The web server keeps an index for each visitor's recent matrices: a normalised copy
    of each was most of what three visitors grew it by. A float32 index keeps each row's
    inverse length instead, and answers as an index over the normalised rows does."""
    import tracemalloc

    from embedgen.matrix import load_matrix, save_matrix

    rng = np.random.default_rng(3)
    vocab = tuple(chr(0x4E00 + i) for i in range(4000))
    vectors = rng.standard_normal((len(vocab), 384)).astype(np.float32)  # e5-small's width
    vectors[7] = 0.0  # an all-zero row stays zero, never NaN
    save_matrix(EmbeddingMatrix(vectors=vectors, vocab=vocab, manifest={}), tmp_path / "m")
    mapped = load_matrix(tmp_path / "m", mapped=True)

    tracemalloc.start()
    index = NeighbourIndex(mapped)
    answers = [index.top_k(w, 5) for w in ("一", "丁", "一丁", vocab[7])]
    held = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert held < vectors.nbytes / 10, f"{held:,} bytes held for a {vectors.nbytes:,}-byte matrix"

    copied = NeighbourIndex(EmbeddingMatrix(vectors.astype(np.float64), vocab, {}))
    for word, got in zip(("一", "丁", "一丁", vocab[7]), answers, strict=True):
        want = copied.top_k(word, 5)
        assert [n.token for n in got] == [n.token for n in want]
        np.testing.assert_allclose([n.score for n in got], [n.score for n in want], atol=1e-6)
    np.testing.assert_allclose(index.unit, copied.unit, atol=1e-6)
    assert not np.isnan(index.unit).any() and not index.unit[7].any()
