"""The quality report: every method and option of a model or run, built and scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import NEGATIVE, POSITIVE, synthetic_rows

from embedgen.evaluate import evaluate, read_analogy, read_similarity
from embedgen.matrix import MatrixOptions, build_matrix
from embedgen.postprocess import PostProcess
from embedgen.report import Option, benchmark_words, evaluate_all, markdown, options_for
from embedgen.words import Corpus


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("bench")
    good, bad = POSITIVE, NEGATIVE
    pairs = [(good[0], good[1], 9), (bad[0], bad[1], 8), (good[0], bad[0], 1), ("好美", "坏", 2)]
    (folder / "sim.txt").write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in pairs), "utf-8")
    (folder / "ana.txt").write_text(
        f": cues\n{good[0]} {good[1]} {bad[0]} {bad[1]}\n{good[2]} {good[3]} {bad[2]} {bad[3]}\n",
        "utf-8",
    )
    return [read_similarity(folder / "sim.txt")], [read_analogy(folder / "ana.txt")]


@pytest.fixture(scope="module")
def run(tiny_encoder):
    from embedgen.data import prepare
    from embedgen.table import read_table
    from embedgen.train import FinetuneConfig, finetune

    path = Path(__file__).resolve().parents[1] / "assets" / "sample_reviews.csv"
    return finetune(tiny_encoder, prepare(read_table(path), 1, 2), FinetuneConfig(epochs=1, dim=6))


def test_a_model_is_scored_on_tokens_and_words_each_plain_and_centred(tiny_encoder) -> None:
    options = options_for(tiny_encoder, corpus=True)
    labels = [o.label for o in options]
    assert labels[:2] == ["input", "input, centred"]
    assert "aggregated, corpus + generated, centred" in labels
    assert not any(label.startswith(("projected", "contextual raw")) for label in labels)
    assert len({(o.label, o.words) for o in options}) == len(options), "an option twice"
    without = [o.label for o in options_for(tiny_encoder, corpus=False)]
    assert "aggregated, corpus + generated" not in without


def test_a_run_is_also_scored_projected_and_raw(run) -> None:
    labels = {o.label for o in options_for(run, corpus=False)}
    assert {"projected", "contextual raw", "aggregated raw, centred"} <= labels


def test_benchmark_words_are_every_word_once_in_first_seen_order(files) -> None:
    similarity, analogy = files
    words = benchmark_words(similarity, analogy).words
    assert words[:2] == (POSITIVE[0], POSITIVE[1]) and len(words) == len(set(words))
    assert {POSITIVE[3], NEGATIVE[3], "好美"} <= set(words)


def test_search_words_add_common_dictionary_words_after_the_benchmarks_own(files) -> None:
    similarity, analogy = files
    own = benchmark_words(similarity, analogy)
    vocab = benchmark_words(similarity, analogy, search_words=50)
    assert vocab.words[: len(own)] == own.words, "the benchmarks' words come first, in order"
    extra = vocab.words[len(own) :]
    assert len(extra) == 50 and not set(extra) & set(own.words)
    assert "的" in extra, "the most frequent Chinese word of a general dictionary is a candidate"
    assert vocab.record["benchmark_words"] == len(own) and vocab.record["dictionary_words"] == 50


def test_analogy_answers_are_searched_among_the_search_words_too(tiny_encoder, files) -> None:
    similarity, analogy = files
    option = next(o for o in options_for(tiny_encoder, corpus=False) if o.label == "input")
    option = Option("input words", option.options, True)
    alone = evaluate_all(tiny_encoder, similarity, analogy, options=[option])[0]
    wider = evaluate_all(tiny_encoder, similarity, analogy, options=[option], search_words=300)[0]
    assert wider["shape"][0] == alone["shape"][0] + 300
    # More candidates can only take correct answers away (the right answer is a row either way).
    assert wider["analogy"][0]["accuracy_3cosadd"] <= alone["analogy"][0]["accuracy_3cosadd"]
    assert wider["similarity"][0]["pairs_found"] == alone["similarity"][0]["pairs_found"]


def test_every_option_gets_a_record_equal_to_scoring_it_alone(tiny_encoder, files) -> None:
    similarity, analogy = files
    corpus = Corpus.of([t for t, _ in synthetic_rows(100)], "reviews")
    options = options_for(tiny_encoder, corpus=True)
    records = evaluate_all(tiny_encoder, similarity, analogy, corpus=corpus, options=options)
    assert [r["label"] for r in records] == [o.label for o in options]
    centred = next(o for o in options if o.label == "contextual, centred" and o.words)
    record = next(r for r in records if r["label"] == centred.label and r["rows_are"] == "words")
    alone = build_matrix(tiny_encoder, centred.options, words=benchmark_words(similarity, analogy))
    expected = evaluate(alone, similarity, analogy)
    assert record["similarity"][0]["spearman"] == pytest.approx(
        expected["similarity"][0]["spearman"], abs=1e-6
    )
    assert record["name"] == "contextual-L2-base-words-benchmarks-center"
    assert record["shape"][0] == len(benchmark_words(similarity, analogy))


def test_centring_in_the_report_is_the_post_processing_step(tiny_encoder, files) -> None:
    similarity, analogy = files
    plain = Option("contextual", MatrixOptions(method="contextual"), True)
    centred = Option(
        "contextual, centred",
        MatrixOptions(method="contextual", postprocess=PostProcess(center=True)),
        True,
    )
    records = evaluate_all(tiny_encoder, similarity, analogy, options=[plain, centred])
    assert records[0]["similarity"][0]["spearman"] != records[1]["similarity"][0]["spearman"]
    assert records[0]["build_seconds"] == records[1]["build_seconds"]  # one build, shared


def test_the_table_has_a_row_per_option_with_scores_and_coverage(tiny_encoder, files) -> None:
    similarity, analogy = files
    options = options_for(tiny_encoder, corpus=False)[:4]
    table = markdown(evaluate_all(tiny_encoder, similarity, analogy, options=options))
    lines = table.splitlines()
    assert lines[0].startswith("| matrix | rows | sim.txt | ana.txt (3CosAdd) |")
    assert len(lines) == 2 + len(options)
    assert all("covered" in line for line in lines[2:])
    assert np.isfinite(float(lines[2].split("|")[3].split()[0]))


def test_cli_evaluate_all_prints_the_table(capsys, tiny_model_dir, files, tmp_path) -> None:
    from test_cli import cli, refusal, succeeded

    (tmp_path / "sim.txt").write_text(f"{POSITIVE[0]}\t{POSITIVE[1]}\t9\n好\t坏\t1\n", "utf-8")
    result = cli(capsys, "evaluate", "--all", tiny_model_dir, "--similarity", tmp_path / "sim.txt")
    assert result.code == 0, succeeded(result)
    assert result.out.splitlines()[0].startswith("| matrix | rows | sim.txt |")
    assert "| aggregated, generated contexts, centred |" in result.out
    line = refusal(
        cli(
            capsys,
            "evaluate",
            tmp_path,
            "--all",
            tiny_model_dir,
            "--similarity",
            tmp_path / "sim.txt",
        ),
        "evaluate",
    )
    assert "not both" in line
    sim = tmp_path / "sim.txt"
    args = ("--similarity", sim, "--search-words")
    line = refusal(cli(capsys, "evaluate", tmp_path, *args, "9"), "evaluate")
    assert "--search-words goes with --all" in line
    line = refusal(cli(capsys, "evaluate", "--all", tiny_model_dir, *args, "-1"), "evaluate")
    assert "--search-words must be 0" in line


def test_the_tradeoff_scores_every_point_on_one_set_of_rows(run, files) -> None:
    from embedgen.data import prepare
    from embedgen.report import LABEL_WEIGHTS, tradeoff, tradeoff_words
    from embedgen.table import read_table
    from embedgen.tokenstats import association, token_stats

    similarity, _ = files
    data = prepare(
        read_table(Path(__file__).resolve().parents[1] / "assets" / "sample_reviews.csv"), 1, 2
    )
    tokenizer = run.encoder.tokenizer
    assoc = association(token_stats(tokenizer, data.texts, data.labels, data.label_names))
    words = tradeoff_words(assoc, similarity, per_label=5)
    assert {POSITIVE[0], POSITIVE[1]} <= set(words.words)
    records = tradeoff(run, words, assoc, similarity=similarity, per_label=5, k=3)
    kinds = [r["kind"] for r in records]
    assert kinds[:2] == ["untuned", "tuned"] and kinds.count("label weight") == len(LABEL_WEIGHTS)
    assert all(0.0 <= r["purity"] <= 1.0 for r in records)
    assert records[0]["similarity_measure"].startswith("mean Spearman over sim.txt")
    kept = tradeoff(run, words, assoc, per_label=5, k=3, label_weights=(0.1,), baseline_weights=())
    assert kept[0]["similarity"] == pytest.approx(1.0)  # the untuned rows keep all of themselves
    assert kept[0]["similarity_measure"].startswith("geometry kept")


def test_a_label_weighted_matrix_is_the_blend_of_its_raw_rows(run) -> None:
    from embedgen.blend import blend, label_signal, logits
    from embedgen.words import words_from_list

    words = words_from_list([POSITIVE[0], NEGATIVE[0], POSITIVE[1], NEGATIVE[1]])
    raw = build_matrix(
        run,
        MatrixOptions(method="contextual", through_projection=False, label_weight=0),
        words=words,
    )
    mixed = build_matrix(run, MatrixOptions(method="contextual", label_weight=0.5), words=words)
    expected = blend(raw.vectors, label_signal(logits(run.head, raw.vectors)), 0.5)
    np.testing.assert_allclose(mixed.vectors, expected, atol=1e-5)
    assert mixed.manifest["label_signal"]["classes"] == len(run.label_names)
    assert mixed.manifest["reflects_tuning"] is True
