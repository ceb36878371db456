"""embedgen.data: mapping a table's columns to labelled data, validating labels, splitting."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import REVIEWS, csv_text, write

from embedgen.data import DroppedRow, LabelledData, guess_columns, prepare, split
from embedgen.errors import BadConfig, BadTable
from embedgen.table import read_table

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "classification"


def labelled(n_per_class: dict[str, int]) -> LabelledData:
    texts, labels, rows = [], [], []
    names = tuple(n_per_class)
    for index, (name, n) in enumerate(n_per_class.items()):
        for k in range(n):
            texts.append(f"{name} 的第{k}条评论")
            labels.append(index)
            rows.append(len(rows) + 2)
    return LabelledData(
        texts=tuple(texts),
        labels=tuple(labels),
        label_names=names,
        rows=tuple(rows),
        dropped=(DroppedRow(99, "empty text"),),
        text_column="review",
        label_column="label",
        source_name="reviews.csv",
        source_sha256="0" * 64,
    )


# --- columns --------------------------------------------------------------------------------


def test_guess_columns_picks_longest_text_and_small_label_column(tmp_path):
    rows = [f"{i},{text},{label},门店{i}" for i, (text, label) in enumerate(REVIEWS)]
    raw = "id,review,label,shop\n" + "\n".join(rows) + "\n"
    table = read_table(write(tmp_path, "wide.csv", raw))
    assert guess_columns(table) == ("review", "label")


# --- prepare --------------------------------------------------------------------------------


def test_prepare_maps_labels_and_records_rows(tmp_path):
    table = read_table(write(tmp_path, "waimai.csv", csv_text(REVIEWS)))
    data = prepare(table, "review", "label")
    assert data.label_names == ("0", "1")
    assert data.labels[:2] == (1, 0)
    assert data.rows == (2, 3, 4, 5, 6, 7)
    assert data.num_classes == 2
    assert data.class_counts() == {"0": 3, "1": 3}
    assert (data.text_column, data.label_column) == ("review", "label")


def test_numeric_labels_sort_numerically(tmp_path):
    rows = [(f"评论{i}", label) for i, label in enumerate(["10", "2", "1", "10", "2", "1"])]
    data = prepare(read_table(write(tmp_path, "n.csv", csv_text(rows))), "review", "label")
    assert data.label_names == ("1", "2", "10")


def test_integral_float_labels_join_their_integer_class(tmp_path):
    rows = [("好", "1.0"), ("好吃", "1"), ("差", "0"), ("难吃", "0.0")]
    data = prepare(read_table(write(tmp_path, "f.csv", csv_text(rows))), "review", "label")
    assert data.class_counts() == {"0": 2, "1": 2}


def test_chinese_text_labels_are_kept_and_sorted(tmp_path):
    rows = [(t, "正面" if label == "1" else "负面") for t, label in REVIEWS]
    data = prepare(read_table(write(tmp_path, "c.csv", csv_text(rows))), 2, 1)
    assert data.label_names == tuple(sorted(["正面", "负面"]))
    assert data.class_counts() == {"正面": 3, "负面": 3}


def test_empty_texts_and_labels_are_dropped_and_reported_by_row(tmp_path, caplog):
    raw = csv_text(REVIEWS) + "1,   \n,没有标签\n0,\n"
    table = read_table(write(tmp_path, "gaps.csv", raw))
    with caplog.at_level(logging.INFO, logger="embedgen.data"):
        data = prepare(table, "review", "label")
    assert len(data) == 6
    assert data.dropped == (
        DroppedRow(8, "empty text"),
        DroppedRow(9, "empty label"),
        DroppedRow(10, "empty text"),
    )
    assert data.dropped_summary() == (
        "3 rows dropped: empty text in rows 8, 10; empty label in row 9"
    )
    assert "Read 9 rows, kept 6, dropped 3" in caplog.text


def test_dropped_summary_abbreviates_long_row_lists():
    data = labelled({"0": 2, "1": 2})
    many = tuple(DroppedRow(r, "empty text") for r in range(10, 25))
    summary = LabelledData(**{**data.__dict__, "dropped": many}).dropped_summary()
    assert summary == (
        "15 rows dropped: empty text in rows 10, 11, 12, 13, 14, 15, 16, 17, 18, 19 and 5 more"
    )


def test_texts_are_stripped_of_surrounding_whitespace(tmp_path):
    raw = 'label,review\n1,"  好吃 "\n0,难吃\n1,好\n0,差\n'
    data = prepare(read_table(write(tmp_path, "s.csv", raw)), "review", "label")
    assert data.texts[0] == "好吃"


def test_summary_is_json_ready_for_manifests(tmp_path):
    raw = csv_text(REVIEWS) + ",没有标签\n"
    table = read_table(write(tmp_path, "waimai.csv", raw))
    summary = prepare(table, "review", "label").summary()
    assert json.loads(json.dumps(summary, ensure_ascii=False)) == summary
    assert summary["source"] == "waimai.csv"
    assert summary["sha256"] == table.sha256
    assert summary["rows_total"] == 7
    assert summary["rows_used"] == 6
    assert summary["rows_dropped"] == 1
    assert summary["dropped_reasons"] == {"empty label": 1}
    assert summary["label_map"] == {"0": "0", "1": "1"}
    assert summary["class_counts"] == {"0": 3, "1": 3}


def test_same_text_and_label_column_is_bad_config(tmp_path):
    table = read_table(write(tmp_path, "waimai.csv", csv_text(REVIEWS)))
    with pytest.raises(BadConfig, match="waimai.csv: column 'review' was chosen as both"):
        prepare(table, "review", 2)


def test_unknown_column_in_prepare_names_file_and_columns(tmp_path):
    table = read_table(write(tmp_path, "waimai.csv", csv_text(REVIEWS)))
    with pytest.raises(BadTable, match=r"waimai.csv has no column 'txt'.*Columns: label, review"):
        prepare(table, "txt", "label")


def test_empty_text_column_is_bad_table(tmp_path):
    raw = "label,review,note\n" + "\n".join(f"{lab},,{t}" for t, lab in REVIEWS) + "\n"
    table = read_table(write(tmp_path, "waimai.csv", raw))
    with pytest.raises(BadTable, match="waimai.csv: column 'review' is empty in every row"):
        prepare(table, "review", "label")


def test_single_class_is_bad_table_naming_the_class(tmp_path):
    rows = [(t, "1") for t, _ in REVIEWS]
    table = read_table(write(tmp_path, "waimai.csv", csv_text(rows)))
    with pytest.raises(BadTable) as error:
        prepare(table, "review", "label")
    assert str(error.value) == (
        "waimai.csv: column 'label' has only one class (1); fine-tuning needs at least two. "
        "Choose another label column."
    )


def test_continuous_score_column_is_bad_table(tmp_path):
    rows = [(f"评论{i}", f"{i * 0.37:.2f}") for i in range(60)]
    table = read_table(write(tmp_path, "scores.csv", csv_text(rows, header=("score", "review"))))
    with pytest.raises(BadTable, match="scores.csv: column 'score' looks like a continuous score"):
        prepare(table, "review", "score")


def test_text_like_label_column_is_bad_table(tmp_path):
    rows = [(f"评论{i}", f"第{i}家店") for i in range(80)]
    table = read_table(write(tmp_path, "shops.csv", csv_text(rows, header=("shop", "review"))))
    with pytest.raises(BadTable, match="column 'shop' has 80 different values in 80 rows"):
        prepare(table, "review", "shop")


def test_class_below_min_per_class_names_class_count_rows_and_fix(tmp_path):
    table = read_table(write(tmp_path, "waimai.csv", csv_text([*REVIEWS, ("一般般", "2")])))
    with pytest.raises(BadTable) as error:
        prepare(table, "review", "label")
    message = str(error.value)
    assert message.startswith("waimai.csv: column 'label' needs at least 2 rows per class")
    assert "'2' has 1 (row 8)" in message
    assert "Add examples" in message
    assert "merge" in message


def test_min_per_class_can_be_raised(tmp_path):
    table = read_table(write(tmp_path, "waimai.csv", csv_text(REVIEWS)))
    with pytest.raises(BadTable, match="'0' has 3 \\(rows 3, 5, 7\\)"):
        prepare(table, "review", "label", min_per_class=4)


# --- split ----------------------------------------------------------------------------------


def test_split_is_stratified_with_every_class_in_both_parts():
    data = labelled({"体育": 50, "财经": 30, "游戏": 2})
    train, val = split(data, val_fraction=0.2, seed=0)
    assert val.class_counts() == {"体育": 10, "财经": 6, "游戏": 1}
    assert train.class_counts() == {"体育": 40, "财经": 24, "游戏": 1}
    assert sorted(train.rows + val.rows) == sorted(data.rows)


def test_split_parts_keep_label_names_and_dropped_rows():
    data = labelled({"0": 5, "1": 5})
    train, val = split(data)
    assert train.label_names == val.label_names == data.label_names
    assert train.dropped == val.dropped == data.dropped
    assert train.texts[0] == data.texts[train.rows[0] - 2]


def test_split_is_deterministic_per_seed_and_changes_with_seed():
    data = labelled({"0": 40, "1": 40})
    assert split(data, seed=1)[1].rows == split(data, seed=1)[1].rows
    assert split(data, seed=1)[1].rows != split(data, seed=2)[1].rows


@pytest.mark.parametrize("fraction", [0.0, 0.6, -0.1])
def test_split_rejects_val_fraction_outside_zero_to_half(fraction):
    with pytest.raises(BadConfig, match="val_fraction"):
        split(labelled({"0": 4, "1": 4}), val_fraction=fraction)


# --- the real files in ../shared/data ------------------------------------------------------


def test_real_waimai_file_reads_with_header_and_two_classes():
    path = SHARED / "waimai_10k.csv"
    if not path.exists():
        pytest.skip(f"../shared/data not present: {path}")
    table = read_table(path)
    assert table.has_header
    assert table.columns == ["label", "review"]
    assert len(table) == 11987
    assert guess_columns(table) == ("review", "label")
    data = prepare(table, "review", "label")
    assert data.class_counts() == {"0": 7987, "1": 4000}


def test_real_thucnews_file_has_no_header_and_ten_classes():
    path = SHARED / "THUCNews" / "test.txt"
    if not path.exists():
        pytest.skip(f"../shared/data not present: {path}")
    table = read_table(path)
    assert not table.has_header
    assert table.delimiter == "\t"
    assert len(table) == 10000
    assert guess_columns(table) == ("column 1", "column 2")
    data = prepare(table, "column 1", "column 2")
    assert data.class_counts() == {str(i): 1000 for i in range(10)}


# --- class balance ----------------------------------------------------------------------------


def test_imbalance_is_the_largest_class_over_the_smallest():
    assert labelled({"a": 30, "b": 10}).imbalance() == 3.0
    assert labelled({"a": 5, "b": 5}).imbalance() == 1.0


def test_an_imbalance_of_three_or_more_gets_a_note_on_macro_f1():
    note = labelled({"好": 90, "差": 10, "中": 40}).imbalance_note()
    assert note is not None
    assert "'好' has 90 rows, '差' 10 (9.0 times fewer)" in note
    assert "macro-F1" in note
    assert labelled({"好": 20, "差": 10}).imbalance_note() is None


def test_many_classes_of_a_few_rows_get_a_warning_not_an_error(tmp_path, caplog):
    rows = [(f"第{k}条评论，关于第{c}类", f"类别{c}") for c in range(500) for k in range(2)]
    table = read_table(write(tmp_path, "tiny.csv", csv_text(rows)))
    with caplog.at_level(logging.WARNING, logger="embedgen.data"):
        data = prepare(table, "review", "label")  # not refused: the user may know better
    note = data.small_classes_note()
    assert note is not None
    assert note.startswith("tiny.csv: 500 of 500 classes have fewer than 10 rows")
    assert "median 2 rows per class" in note
    assert "merge" in note
    assert note in data.notes()
    assert note in caplog.text


def test_classes_of_ten_rows_or_more_get_no_small_class_warning():
    assert labelled({"好": 10, "差": 12}).small_classes_note() is None
    assert labelled({"好": 10, "差": 12}).notes() == ()
    # A few rare classes among large ones are an imbalance, named by its own note.
    data = labelled({"a": 40, "b": 40, "c": 40, "d": 3})
    assert data.small_classes_note() is None
    assert data.notes() == (data.imbalance_note(),)


# --- large tables -----------------------------------------------------------------------------


def test_guessed_columns_and_labels_do_not_depend_on_how_often_values_repeat(tmp_path):
    rows = [(f"第{i}条评论，内容比标签长得多", "1" if i % 4 else "0.0") for i in range(400)]
    table = read_table(write(tmp_path, "many.csv", csv_text(rows)))
    assert guess_columns(table) == ("review", "label")
    data = prepare(table, "review", "label")
    assert data.class_counts() == {"0": 100, "1": 300}  # "0.0" and "0" are one class


def test_subset_keeps_the_order_asked_for_also_for_one_or_no_rows():
    data = labelled({"a": 3, "b": 3})
    assert data.subset([4, 0]).rows == (data.rows[4], data.rows[0])
    assert data.subset([2]).texts == (data.texts[2],)
    assert len(data.subset([])) == 0


def test_very_long_texts_are_reported_with_their_row(tmp_path):
    from embedgen.table import SEGMENT_CHARS

    rows = [*REVIEWS, ("日志" * SEGMENT_CHARS, "1")]
    data = prepare(read_table(write(tmp_path, "long.csv", csv_text(rows))), "review", "label")
    [note] = [n for n in data.notes() if "longer than" in n]
    assert f"1 text is longer than {SEGMENT_CHARS:,}" in note
    assert f"row {len(rows) + 1}" in note and f"{2 * SEGMENT_CHARS:,}" in note
    assert not any(
        "longer than" in n
        for n in prepare(
            read_table(write(tmp_path, "short.csv", csv_text(REVIEWS))), "review", "label"
        ).notes()
    )
