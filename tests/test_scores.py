"""The Evaluate page's tables computed in one go (embedgen.scores), as a worker computes them."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from embedgen.errors import BadConfig, Cancelled
from embedgen.evaluate import analogy, label_purity, read_analogy, read_similarity, similarity
from embedgen.matrix import EmbeddingMatrix
from embedgen.scores import PurityAsk, score_matrices

VOCAB = ("好", "美", "棒", "坏", "差", "烂", "中", "国", "天", "气")
SIMILARITY = "好\t美\t9\n好\t坏\t1\n中国\t天气\t3\n坏\t差\t8\nbad line\n"
ANALOGY = ": sentiment\n好 美 坏 差\n好 棒 坏 烂\n: other\n中 国 天 气\n"


def _matrix(seed: int) -> EmbeddingMatrix:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(VOCAB), 8)).astype(np.float32)
    return EmbeddingMatrix(vectors=vectors, vocab=VOCAB, manifest={"method": "input"})


def _leaning(matrix: EmbeddingMatrix) -> dict[str, tuple[str, float]]:
    return {w: ("pos", 1.0) for w in "好美棒"} | {w: ("neg", 1.0) for w in "坏差烂"}


def test_every_matrix_is_scored_on_every_file_as_the_evaluate_functions_score_it() -> None:
    matrices = {"a": _matrix(0), "b": _matrix(1)}
    sim = read_similarity(SIMILARITY.encode(), name="mine.txt")
    questions = read_analogy(ANALOGY.encode(), name="qa.txt")
    seen: list[tuple[int, int]] = []
    scores = score_matrices(
        matrices,
        similarity_sets=[sim],
        analogy_sets=[questions],
        purity=PurityAsk(_leaning, per_label=3, k=2, resamples=50),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert json.loads(json.dumps(scores)) == scores, "plain JSON, for job.json"
    assert seen[-1] == (6, 6), "2 matrices x (1 similarity + 1 analogy + purity)"

    for row, (name, matrix) in zip(scores["similarity"], matrices.items(), strict=True):
        direct = similarity(matrix, sim)
        assert row["matrix"] == name and row["file"] == "mine.txt"
        assert row["Spearman"] == pytest.approx(direct.spearman)
        assert (row["pairs_found"], row["pairs_total"]) == (4, 4)
        assert row["pooled"] == ["中国", "天气"], "pooled from their characters, and said"
        assert row["malformed"][0][0] == 5, "the line not read is named"

    direct = analogy(matrices["a"], questions)
    a_rows = [r for r in scores["analogy"] if r["matrix"] == "a"]
    assert [r["section"] for r in a_rows] == ["all", "sentiment", "other"]
    assert a_rows[0]["3CosAdd"] == pytest.approx(direct.overall.accuracy_3cosadd)
    assert (a_rows[0]["found"], a_rows[0]["total"]) == (3, 3)

    purity = {r["matrix"]: r for r in scores["purity"]}
    direct_purity = label_purity(matrices["b"], _leaning(matrices["b"]), per_label=3, k=2)
    assert purity["b"]["purity"] == pytest.approx(direct_purity.purity)
    assert purity["b"]["low"] <= purity["b"]["purity"] <= purity["b"]["high"]
    assert purity["b"]["qualified"] == {"neg": 3, "pos": 3} and purity["b"]["words_used"] == 6


def test_a_matrix_without_label_words_gets_a_note_and_its_other_scores() -> None:
    def leaning(matrix: EmbeddingMatrix) -> dict[str, tuple[str, float]]:
        if matrix is matrices["b"]:
            raise BadConfig("Load the model on the Model page to count its tokens in the data.")
        return _leaning(matrix)

    matrices = {"a": _matrix(0), "b": _matrix(1)}
    sim = read_similarity(SIMILARITY.encode(), name="mine.txt")
    scores = score_matrices(
        matrices, similarity_sets=[sim], purity=PurityAsk(leaning, per_label=3, k=2)
    )
    assert [r["matrix"] for r in scores["similarity"]] == ["a", "b"]
    assert [r["matrix"] for r in scores["purity"]] == ["a"]
    assert scores["notes"] == [
        {"matrix": "b", "text": "Load the model on the Model page to count its tokens in the data."}
    ]


def test_scoring_stops_when_cancelled() -> None:
    cancel = threading.Event()
    cancel.set()
    sim = read_similarity(SIMILARITY.encode(), name="mine.txt")
    with pytest.raises(Cancelled):
        score_matrices({"a": _matrix(0)}, similarity_sets=[sim], cancel=cancel)
