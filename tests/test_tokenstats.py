"""embedgen.tokenstats: token counts of the labelled texts, label association, matrix alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import NEGATIVE, POSITIVE, synthetic_rows

from embedgen.data import prepare
from embedgen.errors import BadConfig
from embedgen.table import read_table
from embedgen.tokenstats import TokenStats, align, association, token_stats

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample_reviews.csv"
NAMES = ("正面", "负面")


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return tiny_encoder.tokenizer


def stats_of(tokenizer, rows: list[tuple[str, str]], names=NAMES, **kwargs) -> TokenStats:
    texts = [text for text, _ in rows]
    labels = [names.index(label) for _, label in rows]
    return token_stats(tokenizer, texts, labels, names, **kwargs)


def contrast_rows(n: int = 30) -> list[tuple[str, str]]:
    """好 only in 正面 texts, 坏 only in 负面 texts, 的 once in every text of both."""
    return [("好的", "正面")] * n + [("坏的", "负面")] * n


# --- counting ---------------------------------------------------------------------------------


def test_counts_equal_a_hand_count_of_three_texts(tokenizer):
    stats = stats_of(tokenizer, [("好的好", "正面"), ("坏的", "负面"), ("的的是", "正面")])
    assert stats.counts == {"的": 4, "好": 2, "坏": 1, "是": 1}
    assert stats.docs == 3


def test_tokens_are_the_tokenizers_own_strings_without_special_tokens(tokenizer):
    stats = stats_of(tokenizer, [("goods", "正面"), ("好", "负面")])
    assert stats.counts == {"good": 1, "##s": 1, "好": 1}


def test_per_label_counts_sum_to_the_overall_count(tokenizer):
    stats = stats_of(tokenizer, synthetic_rows(60))
    mismatched = {t: c for t, c in stats.counts.items() if sum(stats.label_counts[t]) != c}
    assert not mismatched, f"per-label counts do not add up for {mismatched}"
    assert stats.label_names == NAMES


def test_per_label_counts_are_in_label_name_order(tokenizer):
    stats = stats_of(tokenizer, [("好好", "正面"), ("好", "负面")])
    assert stats.label_counts["好"] == [2, 1]


def test_counting_in_small_batches_gives_the_same_stats(tokenizer):
    rows = synthetic_rows(50)
    assert stats_of(tokenizer, rows, batch_size=7) == stats_of(tokenizer, rows)


def test_progress_reports_every_batch_up_to_the_total(tokenizer):
    calls: list[tuple[int, int]] = []
    stats_of(
        tokenizer, synthetic_rows(25), batch_size=10, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(10, 25), (20, 25), (25, 25)]


def test_labels_that_do_not_index_the_label_names_are_refused(tokenizer):
    with pytest.raises(BadConfig, match="do not index"):
        token_stats(tokenizer, ["好", "坏"], [0, 2], NAMES)


# --- association ------------------------------------------------------------------------------


def test_a_token_only_in_one_labels_texts_is_associated_with_that_label(tokenizer):
    assoc = association(stats_of(tokenizer, contrast_rows()))
    assert assoc["好"][0] == "正面" and assoc["好"][1] > 2
    assert assoc["坏"][0] == "负面" and assoc["坏"][1] > 2


def test_a_token_spread_evenly_over_the_labels_has_a_small_z(tokenizer):
    _, z = association(stats_of(tokenizer, contrast_rows()))["的"]
    assert abs(z) < 0.5


def test_the_prior_shrinks_the_z_of_a_rare_token_below_a_frequent_one(tokenizer):
    rows = contrast_rows() + [("美的", "正面")]  # 美 once, 好 thirty times, both only in 正面
    assoc = association(stats_of(tokenizer, rows))
    assert 0 < assoc["美"][1] < assoc["好"][1]


def test_every_cue_character_is_associated_with_its_label_on_the_synthetic_set(tokenizer):
    assoc = association(stats_of(tokenizer, synthetic_rows()))
    wrong = {c: assoc.get(c) for c in POSITIVE if assoc.get(c, ("",))[0] != "正面"}
    wrong |= {c: assoc.get(c) for c in NEGATIVE if assoc.get(c, ("",))[0] != "负面"}
    assert not wrong, f"cue characters with the wrong (or no) label: {wrong}"


# --- alignment with a matrix's vocabulary -----------------------------------------------------


def test_align_gives_values_in_vocabulary_row_order_and_zeros_for_unseen_rows(tokenizer):
    stats = stats_of(tokenizer, contrast_rows())
    assoc = association(stats)
    counts, top, z = align(stats, ["[PAD]", "坏", "美", "好", "的"])
    assert counts.dtype == np.int64 and z.dtype == np.float32
    assert counts.tolist() == [0, 30, 0, 30, 60]
    assert top == ["", "负面", "", "正面", assoc["的"][0]]
    expected = [0.0, assoc["坏"][1], 0.0, assoc["好"][1], assoc["的"][1]]
    np.testing.assert_allclose(z, expected, rtol=1e-6, atol=1e-6)


# --- the sample dataset the app offers --------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    return prepare(read_table(SAMPLE), "text", "label")


def test_the_sample_dataset_reads_without_dropping_a_row(sample):
    assert not sample.dropped, sample.dropped_summary()


def test_the_sample_dataset_has_four_classes_of_at_least_90_rows(sample):
    assert sorted(sample.label_names) == sorted(["美食", "体育", "科技", "旅游"])
    small = {name: n for name, n in sample.class_counts().items() if n < 90}
    assert not small, f"classes with fewer than 90 rows: {small}"


def test_the_sample_dataset_repeats_no_text(sample):
    repeated = sorted({t for t in sample.texts if sample.texts.count(t) > 1})
    assert not repeated, f"texts that occur more than once: {repeated[:5]}"


def test_significant_keeps_strong_frequent_leanings_only(tokenizer):
    """好 (30 正面 texts) and 坏 (30 负面) lean far beyond chance; 的 (every text) does not; 棒
    leans to 正面 too but is seen twice, too rare to tell."""
    from embedgen.tokenstats import significant

    rows = contrast_rows(30) + [("棒的", "正面")] * 2
    stats = stats_of(tokenizer, rows)
    assoc = association(stats)
    assert assoc["棒"][0] == "正面" and assoc["的"][1] < 3
    kept = significant(stats, min_z=3.0, min_count=10)
    assert set(kept) == {"好", "坏"}
    assert kept["好"] == assoc["好"] and kept["坏"][0] == "负面"
    assert "棒" in significant(stats, min_z=0.0, min_count=1), "a lower bar lets it in"
