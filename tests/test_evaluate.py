"""Evaluation of a matrix: benchmark files read as people write them, scores with known answers.

Matrices are built by hand so each right answer is known; the real benchmark files in
../shared/data are read as they are; the ``evaluate`` command runs in-process like a user's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_cli import cli, refusal

import embedgen
from embedgen.errors import BadConfig, BadTable, EmbedgenError
from embedgen.evaluate import (
    AnalogySet,
    Question,
    Section,
    SimilaritySet,
    WordPair,
    analogy,
    evaluate,
    label_purity,
    read_analogy,
    read_similarity,
    similarity,
)
from embedgen.matrix import EmbeddingMatrix, save_matrix
from embedgen.neighbours import NeighbourIndex


def matrix_of(words: dict[str, list[float]]) -> EmbeddingMatrix:
    vectors = np.array(list(words.values()), dtype=np.float32)
    return EmbeddingMatrix(vectors, tuple(words), {"method": "input"})


def at_angle(theta: float) -> list[float]:
    return [math.cos(theta), math.sin(theta)]


def pairs_of(*pairs: tuple[str, str, float]) -> SimilaritySet:
    return SimilaritySet("pairs", tuple(WordPair(i, *p) for i, p in enumerate(pairs, 1)))


def questions_of(**sections: list[str]) -> AnalogySet:
    """``questions_of(right=["男 女 王 后"])``: one section per keyword, a question a line."""
    line = iter(range(1, 10_000))
    return AnalogySet(
        "questions",
        tuple(
            Section(name, tuple(Question(next(line), *q.split()) for q in qs))
            for name, qs in sections.items()
        ),
    )


# --------------------------------------------------------------------------------------------
# Reading similarity files
# --------------------------------------------------------------------------------------------


def test_similarity_file_with_tabs_gives_each_pair_and_its_score():
    found = read_similarity("好\t棒\t8.5\n好\t坏\t1.25\n".encode(), name="sim.txt")
    assert [(p.first, p.second, p.score) for p in found.pairs] == [
        ("好", "棒", 8.5),
        ("好", "坏", 1.25),
    ]


def test_similarity_file_with_runs_of_spaces_is_split_on_them():
    found = read_similarity("好  棒 8.5\n好 坏   1.25\n".encode())
    assert [(p.first, p.second, p.score) for p in found.pairs] == [
        ("好", "棒", 8.5),
        ("好", "坏", 1.25),
    ]


def test_similarity_tab_fields_may_hold_spaces():
    found = read_similarity(b"ice cream\tdessert\t7\n")
    assert (found.pairs[0].first, found.pairs[0].second) == ("ice cream", "dessert")


def test_similarity_columns_after_the_score_are_ignored():
    found = read_similarity("好\t棒\t8.5\t0.3\tnote\n好 坏 1 extra\n".encode())
    assert [p.score for p in found.pairs] == [8.5, 1.0]
    assert not found.malformed


def test_similarity_header_line_is_skipped_and_recorded():
    found = read_similarity("word1\tword2\tscore\n好\t棒\t8.5\n".encode())
    assert found.header == "word1\tword2\tscore"
    assert len(found) == 1 and not found.malformed


def test_similarity_crlf_line_ends_leave_no_carriage_return_in_words_or_scores():
    found = read_similarity("好\t棒\t8.5\r\n棒\t好\t7\r\n".encode())
    assert [(p.first, p.second, p.score) for p in found.pairs] == [
        ("好", "棒", 8.5),
        ("棒", "好", 7.0),
    ]


def test_similarity_utf8_bom_is_not_part_of_the_first_word():
    found = read_similarity(b"\xef\xbb\xbf" + "好\t棒\t8.5\n".encode())
    assert found.pairs[0].first == "好"


def test_similarity_last_line_without_a_line_end_is_read():
    found = read_similarity("好\t棒\t8.5\n好\t坏\t1".encode())
    assert [p.second for p in found.pairs] == ["棒", "坏"]


def test_similarity_words_are_stripped_of_surrounding_whitespace():
    found = read_similarity("钱\t 现金\t4.58\n".encode())  # as in wordsim-297.txt
    assert (found.pairs[0].first, found.pairs[0].second) == ("钱", "现金")


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("好\t棒", "field"),
        ("好\t棒\tgood", "not a number"),
        ("好\t棒\tnan", "not finite"),
        ("好\t\t3", "empty"),
    ],
)
def test_malformed_similarity_line_is_reported_by_number_and_the_rest_used(bad_line, reason):
    found = read_similarity(f"好\t棒\t8\n\n{bad_line}\n好\t坏\t1\n".encode())
    assert [(m.line, m.text) for m in found.malformed] == [(3, bad_line)]
    assert reason in found.malformed[0].reason
    assert [p.line for p in found.pairs] == [1, 4]


def test_similarity_file_with_no_valid_pair_is_refused_naming_it():
    with pytest.raises(BadTable, match=r"broken\.txt"):
        read_similarity(b"just one\nfield\n", name="broken.txt")


def test_similarity_file_that_is_not_utf8_is_refused_naming_it():
    with pytest.raises(BadTable, match=r"gbk\.txt.*UTF-8"):
        read_similarity("好\t棒\t8\n".encode("gbk"), name="gbk.txt")


def test_similarity_path_that_does_not_exist_is_refused_naming_it(tmp_path):
    with pytest.raises(BadTable, match=r"nowhere\.txt"):
        read_similarity(tmp_path / "nowhere.txt")


# --------------------------------------------------------------------------------------------
# Reading analogy files
# --------------------------------------------------------------------------------------------


def test_analogy_sections_hold_their_questions_in_file_order():
    found = read_analogy(
        ": capitals\n北京 中国 东京 日本\n: family\n男 女 王 后\n父 母 子 女\n".encode()
    )
    assert [(s.name, len(s.questions)) for s in found.sections] == [("capitals", 1), ("family", 2)]
    assert found.sections[1].questions[0] == Question(4, "男", "女", "王", "后")
    assert len(found) == 3


def test_analogy_questions_before_any_section_go_to_a_section_named_after_the_file():
    found = read_analogy("男 女 王 后\n: family\n父 母 子 女\n".encode(), name="mine.txt")
    assert [s.name for s in found.sections] == ["mine.txt", "family"]


def test_analogy_words_may_be_separated_by_tabs_or_spaces():
    found = read_analogy("男\t女  王\t后\n".encode())
    assert found.questions[0] == Question(1, "男", "女", "王", "后")


def test_analogy_file_with_crlf_bom_and_no_final_newline_is_read_whole():
    raw = b"\xef\xbb\xbf" + ": family\r\n男 女 王 后\r\n父 母 子 女".encode()
    found = read_analogy(raw)
    assert [s.name for s in found.sections] == ["family"]
    assert [(q.a, q.d) for q in found.questions] == [("男", "后"), ("父", "女")]


def test_malformed_analogy_line_is_reported_by_number_and_the_rest_used():
    found = read_analogy(": family\n男 女 王 后\n男 女 王\n父 母 子 女\n".encode())
    assert [(m.line, m.text) for m in found.malformed] == [(3, "男 女 王")]
    assert [q.line for q in found.questions] == [2, 4]


def test_analogy_file_with_no_question_is_refused_naming_it():
    with pytest.raises(BadTable, match=r"empty\.txt"):
        read_analogy(": only a section\n三 个 词\n".encode(), name="empty.txt")


# --------------------------------------------------------------------------------------------
# Word similarity
# --------------------------------------------------------------------------------------------

# Cosines with 基 fall as the angle grows: 近 > 中 > 远 > 反.
SIM = {"基": at_angle(0.0), "近": at_angle(0.2), "中": at_angle(0.8), "远": at_angle(1.5)}
SIM |= {"反": at_angle(2.6), "现": at_angle(1.0), "金": at_angle(1.2)}


def test_cosines_in_the_order_of_the_scores_give_spearman_one():
    data = pairs_of(("基", "近", 9), ("基", "中", 7), ("基", "远", 4), ("基", "反", 1))
    result = similarity(matrix_of(SIM), data)
    assert result.spearman == pytest.approx(1.0)


def test_cosines_in_reverse_order_of_the_scores_give_spearman_minus_one():
    data = pairs_of(("基", "近", 1), ("基", "中", 4), ("基", "远", 7), ("基", "反", 9))
    result = similarity(matrix_of(SIM), data)
    assert result.spearman == pytest.approx(-1.0)


def test_correlations_match_scipy_on_a_random_matrix():
    rng = np.random.default_rng(7)
    words = {f"w{i}": rng.standard_normal(12).tolist() for i in range(40)}
    data = pairs_of(*((f"w{i}", f"w{i + 20}", float(rng.uniform(0, 10))) for i in range(20)))
    result = similarity(matrix_of(words), data)
    unit = {w: np.array(v) / np.linalg.norm(v) for w, v in words.items()}
    cosines = [float(unit[p.first] @ unit[p.second]) for p in data.pairs]
    gold = [p.score for p in data.pairs]
    assert result.spearman == pytest.approx(stats.spearmanr(cosines, gold).statistic, abs=1e-6)
    assert result.pearson == pytest.approx(stats.pearsonr(cosines, gold).statistic, abs=1e-5)


def test_pairs_with_a_word_without_vector_are_left_out_and_the_word_listed():
    data = pairs_of(("基", "近", 9), ("基", "☃", 5), ("基", "中", 7), ("基", "远", 4))
    result = similarity(matrix_of(SIM), data)
    assert (result.pairs_found, result.pairs_total) == (3, 4)
    assert result.missing == ("☃",)
    assert result.cosines[1] is None


def test_a_word_pieced_together_from_tokens_is_used_and_listed_as_pooled():
    data = pairs_of(("基", "现金", 9), ("基", "中", 7), ("基", "远", 4))
    result = similarity(matrix_of(SIM), data)
    assert result.pairs_found == 3
    assert result.pooled == ("现金",)
    assert not result.missing


def test_without_pooling_a_word_that_is_not_a_row_is_missing():
    data = pairs_of(("基", "现金", 9), ("基", "中", 7), ("基", "远", 4))
    result = similarity(matrix_of(SIM), data, pool=False)
    assert result.missing == ("现金",)
    assert result.pooled == ()
    assert result.pairs_found == 2


def test_fewer_than_two_pairs_found_gives_no_correlation():
    data = pairs_of(("基", "近", 9), ("基", "☃", 5))
    result = similarity(matrix_of(SIM), data)
    assert (result.spearman, result.pearson) == (None, None)


# --------------------------------------------------------------------------------------------
# Analogies
# --------------------------------------------------------------------------------------------


def royal_words() -> dict[str, list[float]]:
    """男:女 = 王:后 by construction (gender, person, royalty axes), plus random distractors."""
    gender, person, royal = np.eye(8)[:3]
    words = {"男": gender + person, "女": -gender + person, "王": gender + royal}
    words |= {"后": -gender + royal, "人": person}
    rng = np.random.default_rng(3)
    for i in range(20):
        words[f"词{i}"] = rng.standard_normal(8)
    return {w: list(v) for w, v in words.items()}


def test_analogy_accuracy_is_one_where_the_answer_is_right_and_zero_where_wrong():
    data = questions_of(right=["男 女 王 后"], wrong=["男 女 王 词0"])
    result = analogy(matrix_of(royal_words()), data)
    by_name = {s.name: s for s in result.sections}
    assert (by_name["right"].accuracy_3cosadd, by_name["right"].accuracy_3cosmul) == (1.0, 1.0)
    assert (by_name["wrong"].accuracy_3cosadd, by_name["wrong"].accuracy_3cosmul) == (0.0, 0.0)
    assert (result.overall.accuracy_3cosadd, result.overall.accuracy_3cosmul) == (0.5, 0.5)


def test_analogy_leaves_out_the_rows_of_a_b_and_c():
    # a = c, so b - a + c is b itself; only with b left out is 乙's near twin 丁 the answer.
    words = {"甲": [1.0, 0, 0, 0], "乙": [0, 1.0, 0, 0], "丁": [0, 0.98, 0.2, 0]}
    words |= {"戊": [0, 0, 0, 1.0], "己": [0.5, 0, 0.5, 0.5]}
    result = analogy(matrix_of(words), questions_of(s=["甲 乙 甲 丁"]))
    assert (result.overall.right_3cosadd, result.overall.right_3cosmul) == (1, 1)


def test_question_whose_d_is_not_a_row_is_not_covered():
    data = questions_of(s=["男 女 王 后", "男 女 王 ☃", "男 女 王 人后"])  # 人后: pooled only
    result = analogy(matrix_of(royal_words()), data)
    assert (result.overall.questions_found, result.overall.questions_total) == (1, 3)
    assert result.overall.coverage == pytest.approx(1 / 3)
    assert result.overall.accuracy_3cosadd == 1.0
    assert set(result.missing) == {"☃", "人后"}


def test_pooled_question_word_is_used_and_listed_unless_pooling_is_off():
    data = questions_of(s=["男 女 王人 后"])
    pooled = analogy(matrix_of(royal_words()), data)
    unpooled = analogy(matrix_of(royal_words()), data, pool=False)
    assert (pooled.overall.questions_found, pooled.pooled) == (1, ("王人",))
    assert (unpooled.overall.questions_found, unpooled.missing) == (0, ("王人",))


def test_section_without_covered_questions_has_no_accuracy():
    result = analogy(matrix_of(royal_words()), questions_of(s=["男 女 王 ☃"]))
    assert result.sections[0].accuracy_3cosadd is None
    assert result.overall.accuracy_3cosmul is None


@pytest.fixture(scope="module")
def random_index() -> NeighbourIndex:
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    return NeighbourIndex(EmbeddingMatrix(vectors, tuple(f"w{i}" for i in range(300))))


def random_questions(rng: np.random.Generator, n: int) -> list[tuple[str, str, str]]:
    return [tuple(f"w{i}" for i in rng.choice(300, size=3, replace=False)) for _ in range(n)]


@pytest.mark.parametrize("method", ["3cosadd", "3cosmul"])
def test_batched_answers_equal_a_per_question_loop(random_index, method):
    # d is set to the answer of NeighbourIndex's one-question-at-a-time method, so the batched
    # computation (7 questions a batch) is right on all of them exactly when it agrees.
    ask = random_index.analogy if method == "3cosadd" else random_index.analogy_3cosmul
    abc = random_questions(np.random.default_rng(5), 200)
    data = questions_of(s=[" ".join((*q, ask(*q, k=1)[0].token)) for q in abc])
    result = analogy(random_index, data, batch_size=7)
    right = getattr(result.overall, f"right_{method}")
    assert right == 200, f"{200 - right} of 200 answers differ from the per-question loop"


# --------------------------------------------------------------------------------------------
# Label purity
# --------------------------------------------------------------------------------------------


def labelled_words(angles: dict[str, float]) -> EmbeddingMatrix:
    return matrix_of({w: at_angle(t) for w, t in angles.items()})


def test_two_well_separated_label_clusters_have_purity_one():
    angles = {f"好{i}": 0.01 * i for i in range(6)} | {f"坏{i}": 3.0 + 0.01 * i for i in range(6)}
    assoc = {w: ("正面" if w.startswith("好") else "负面", 2.0) for w in angles}
    result = label_purity(labelled_words(angles), assoc, per_label=6, k=3)
    assert result.purity == 1.0
    assert result.per_label == {"正面": 1.0, "负面": 1.0}


def test_interleaved_labels_have_clearly_lower_purity():
    # Along an arc, labels alternate: each token's two nearest are of the other label.
    angles = {f"t{i}": 0.1 * i for i in range(12)}
    assoc = {w: ("正面" if i % 2 == 0 else "负面", 2.0) for i, w in enumerate(angles)}
    result = label_purity(labelled_words(angles), assoc, per_label=6, k=2)
    assert result.purity < 0.5


def test_k_is_lowered_to_the_set_size_minus_one_and_said_so():
    angles = {"好": 0.0, "棒": 0.1, "坏": 3.0, "差": 3.1}
    assoc = {"好": ("正面", 1.0), "棒": ("正面", 1.0), "坏": ("负面", 1.0), "差": ("负面", 1.0)}
    result = label_purity(labelled_words(angles), assoc, k=10)
    assert (result.k, result.k_requested) == (3, 10)
    assert result.note and "3" in result.note


def test_purity_takes_the_strongest_leaning_rows_of_each_label():
    angles = {"好": 0.0, "棒": 0.1, "美": 0.2, "坏": 3.0, "差": 3.1}
    assoc = {
        "好": ("正面", 5.0),
        "棒": ("正面", 3.0),
        "美": ("正面", 1.0),  # weaker than per_label allows
        "坏": ("负面", 4.0),
        "差": ("负面", -1.0),  # leans away
        "赞": ("正面", 9.0),  # not a row
    }
    result = label_purity(labelled_words(angles), assoc, per_label=2, k=1)
    assert result.tokens == {"正面": ("好", "棒"), "负面": ("坏",)}


def test_purity_with_only_one_label_is_refused():
    angles = {"好": 0.0, "棒": 0.1}
    with pytest.raises(BadConfig, match="two labels"):
        label_purity(labelled_words(angles), {"好": ("正面", 1.0), "棒": ("正面", 1.0)})


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def test_report_names_each_file_with_its_numbers_and_the_matrix_shape(tmp_path):
    sim = tmp_path / "sim.txt"
    sim.write_text("基\t近\t9\n基\t中\t7\n基\t远\t3\n", encoding="utf-8")
    ana = tmp_path / "ana.txt"
    ana.write_text(": s\n基 近 中 远\n", encoding="utf-8")
    report = evaluate(matrix_of(SIM), [sim], [ana])
    assert report["matrix"] == {"method": "input", "shape": [len(SIM), 2]}
    assert report["similarity"][0]["file"] == "sim.txt"
    assert set(report["similarity"][0]) >= {"spearman", "pearson", "pairs_found", "pairs_total"}
    assert report["analogy"][0]["file"] == "ana.txt"
    assert [s["section"] for s in report["analogy"][0]["sections"]] == ["s"]
    json.dumps(report)  # JSON-ready


def test_report_of_no_file_is_refused():
    with pytest.raises(EmbedgenError, match="similarity, analogy or label-word"):
        evaluate(matrix_of(SIM))


def test_evaluate_and_the_readers_are_public_and_stay_functions():
    import importlib

    importlib.import_module("embedgen.evaluate")
    assert embedgen.evaluate is evaluate
    assert embedgen.read_similarity is read_similarity
    assert embedgen.read_analogy is read_analogy


# --------------------------------------------------------------------------------------------
# The real benchmark files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "pairs"),
    [
        ("wordsim/wordsim-240.txt", 240),
        ("wordsim/wordsim-297.txt", 297),
        ("wordsim/zh_tw_SimLex-999.txt", 998),
    ],
)
def test_real_similarity_files_read_every_pair(shared_data, path, pairs):
    found = read_similarity(shared_data / path)
    assert (len(found), found.malformed, found.header) == (pairs, (), None)


def test_wordsim_297_line_with_a_spaced_word_reads_as_two_clean_words(shared_data):
    found = read_similarity(shared_data / "wordsim/wordsim-297.txt")
    assert WordPair(5, "钱", "现金", 4.58) in found.pairs


@pytest.mark.parametrize(
    ("path", "sections", "questions"),
    [
        ("analogy/CA8/semantic.txt", ["geography", "nature", "history", "people"], 7636),
        ("analogy/CA8/morphological.txt", ["A", "prefix", "AB", "suffix"], 10177),
        (
            "analogy/CA_translated/ca_translated.txt",
            ["capital-common-countries", "city-in-state", "family"],
            953,
        ),
    ],
)
def test_real_analogy_files_read_every_question(shared_data, path, sections, questions):
    found = read_analogy(shared_data / path)
    assert [s.name for s in found.sections] == sections
    assert (len(found), found.malformed) == (questions, ())


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


@pytest.fixture
def bench(tmp_path) -> dict[str, Path]:
    """A saved matrix and one similarity and one analogy file for it."""
    sim_words = {w: [0.0] * 6 + v for w, v in SIM.items()}  # beside the royal axes, in 8-d
    folder = save_matrix(matrix_of(royal_words() | sim_words), tmp_path / "M")
    sim = tmp_path / "sim.txt"
    sim.write_text("基\t近\t9\n基\t中\t7\n基\t现金\t5\n基\t远\t3\n", encoding="utf-8")
    ana = tmp_path / "ana.txt"
    ana.write_text(": family\n男 女 王 后\n: other\n男 女 王 词0\n", encoding="utf-8")
    return {"matrix": folder, "sim": sim, "ana": ana}


def test_evaluate_json_names_each_file_with_its_correlations_and_counts(capsys, bench):
    args = ("evaluate", bench["matrix"], "--similarity", bench["sim"], "--analogy", bench["ana"])
    result = cli(capsys, *args, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    sim = report["similarity"][0]
    assert sim["file"] == "sim.txt"
    assert set(sim) >= {"spearman", "pearson", "pairs_found", "pairs_total"}
    assert (sim["pairs_found"], sim["pairs_total"], sim["pooled"]) == (4, 4, ["现金"])
    assert report["analogy"][0]["file"] == "ana.txt"
    assert report["analogy"][0]["accuracy_3cosadd"] == 0.5


def test_evaluate_no_pool_counts_pooled_words_as_missing(capsys, bench):
    args = ("evaluate", bench["matrix"], "--similarity", bench["sim"], "--no-pool", "--json")
    result = cli(capsys, *args)
    assert result.code == 0, result.err
    sim = json.loads(result.out)["similarity"][0]
    assert (sim["missing"], sim["pooled"], sim["pairs_found"]) == (["现金"], [], 3)


def test_evaluate_text_prints_a_line_per_file_and_per_section(capsys, bench):
    args = ("evaluate", bench["matrix"], "--similarity", bench["sim"], "--analogy", bench["ana"])
    result = cli(capsys, *args)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    sim_line = next(line for line in lines if line.startswith("sim.txt"))
    assert "Spearman" in sim_line and "pairs 4/4" in sim_line and "pooled 1" in sim_line
    ana_line = next(line for line in lines if line.startswith("ana.txt"))
    assert "3CosAdd 0.500" in ana_line and "questions 2/2" in ana_line
    assert any(line.strip().startswith("family:") for line in lines)


def test_evaluate_without_a_file_is_refused_saying_what_to_give(capsys, bench):
    line = refusal(cli(capsys, "evaluate", bench["matrix"]), "evaluate")
    assert "--similarity" in line and "--analogy" in line


def test_evaluate_of_a_file_that_is_not_utf8_is_refused_naming_it(capsys, bench, tmp_path):
    bad = tmp_path / "gbk-pairs.txt"
    bad.write_bytes("基\t近\t9\n".encode("gbk"))
    line = refusal(cli(capsys, "evaluate", bench["matrix"], "--similarity", bad), "evaluate")
    assert "gbk-pairs.txt" in line


# -- differences with intervals --------------------------------------------------------------


def _similarity_set(n: int = 40, seed: int = 0):
    from embedgen.evaluate import SimilaritySet, WordPair

    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(2 * n)]
    pairs = tuple(
        WordPair(i + 1, words[2 * i], words[2 * i + 1], float(rng.random())) for i in range(n)
    )
    return SimilaritySet("made.txt", pairs), words


def _matrix_with_cosines(words, dataset, cosines) -> EmbeddingMatrix:
    """Each pair's two rows at an angle whose cosine is the given one (pairs in their own plane)."""
    dims = 2 * len(dataset.pairs)
    vectors = np.zeros((len(words), dims), dtype=np.float32)
    for i, (pair, c) in enumerate(zip(dataset.pairs, cosines, strict=True)):
        a, b = words.index(pair.first), words.index(pair.second)
        vectors[a, 2 * i] = 1.0
        vectors[b, 2 * i] = c
        vectors[b, 2 * i + 1] = math.sqrt(max(0.0, 1 - c * c))
    return EmbeddingMatrix(vectors, tuple(words))


def test_a_matrix_that_ranks_pairs_like_people_beats_a_random_one_with_an_interval_above_0():
    from embedgen.evaluate import similarity, similarity_difference

    dataset, words = _similarity_set()
    gold = np.array([p.score for p in dataset.pairs])
    noise = np.random.default_rng(1).random(len(gold))
    good = similarity(_matrix_with_cosines(words, dataset, 0.9 * gold), dataset)
    poor = similarity(_matrix_with_cosines(words, dataset, noise), dataset)
    diff = similarity_difference(poor, good, dataset, resamples=500)
    assert diff.value == pytest.approx(good.spearman - poor.spearman, abs=1e-9)
    assert 0 < diff.low <= diff.value <= diff.high
    same = similarity_difference(good, good, dataset, resamples=200)
    assert same.value == same.low == same.high == 0


def test_label_purity_reports_how_many_tokens_qualified_and_an_interval(tiny_encoder):
    from embedgen.matrix import MatrixOptions, build_matrix

    matrix = build_matrix(tiny_encoder, MatrixOptions(cjk_only=True))
    vocab = [t for t in matrix.vocab if not t.startswith("##")]
    assoc = {t: ("a" if i % 2 else "b", 1.0 + i) for i, t in enumerate(vocab[:40])}
    result = label_purity(matrix, assoc, per_label=10, k=3, resamples=300)
    assert result.qualified == {"a": 20, "b": 20}
    assert sum(len(t) for t in result.tokens.values()) == 20
    assert result.interval is not None
    assert result.interval.low <= result.purity <= result.interval.high
    assert result.interval.value == pytest.approx(result.purity)


# -- label words: a curated list -------------------------------------------------------------


def test_a_label_word_file_gives_each_labels_words_and_reports_bad_lines(tmp_path):
    from embedgen.evaluate import read_label_words

    path = tmp_path / "words.tsv"
    path.write_text("好吃\t1\n美味 1\n难吃\t0\n好吃\t0\n孤零零\n", "utf-8")
    words = read_label_words(path)
    assert words.words == {"1": ("好吃", "美味"), "0": ("难吃",)}
    assert [m.line for m in words.malformed] == [4, 5]
    assert "already a word of label '1'" in words.malformed[0].reason
    assert words.associations()["难吃"] == ("0", 1.0)
    one_label = tmp_path / "one.tsv"
    one_label.write_text("好吃\t1\n美味\t1\n", "utf-8")
    with pytest.raises(BadTable, match="one.tsv: label words of at least two labels"):
        read_label_words(one_label)


def test_the_shipped_sentiment_words_are_thirty_a_label() -> None:
    from embedgen.evaluate import read_label_words

    words = read_label_words(Path(__file__).parents[1] / "assets" / "sentiment_words_waimai.tsv")
    assert {label: len(w) for label, w in words.words.items()} == {"1": 30, "0": 30}
    assert not words.malformed


def test_evaluate_label_words_prints_purity_with_an_interval(capsys, tmp_path):
    """Two clusters of words, each label's words in its own: purity 1; swap half the labels
    and it falls, and a word that is no row is counted as such."""
    vectors = {"好": at_angle(0.0), "棒": at_angle(0.05), "妙": at_angle(0.1)}
    vectors |= {"坏": at_angle(3.0), "差": at_angle(3.05), "烂": at_angle(3.1)}
    folder = save_matrix(matrix_of(vectors), tmp_path / "m")
    listed = tmp_path / "words.tsv"
    listed.write_text("好\tpos\n棒\tpos\n妙\tpos\n坏\tneg\n差\tneg\n烂\tneg\n缺\tneg\n", "utf-8")
    result = cli(capsys, "evaluate", folder, "--label-words", listed, "--k", 2)
    assert result.code == 0, result.err
    line = next(line for line in result.out.splitlines() if line.startswith("words.tsv"))
    assert "label purity 1.000 [1.000, 1.000]" in line and "1 are not" in line, line
    mixed = tmp_path / "mixed.tsv"
    mixed.write_text("好\tpos\n棒\tneg\n妙\tpos\n坏\tneg\n差\tpos\n烂\tneg\n", "utf-8")
    report = json.loads(cli(capsys, "evaluate", folder, "--label-words", mixed, "--json").out)
    purity = report["label_purity"]
    assert purity["purity"] < 1.0 and purity["low"] <= purity["purity"] <= purity["high"]
