"""Labelled data: from a :class:`~embedgen.table.Table`, map its columns, validate, split.

The path is a :class:`~embedgen.table.Table` (from ``read_table``) -> ``guess_columns`` (the
text and label columns to pre-select) -> ``prepare`` (text and label column chosen, rows checked)
-> :class:`LabelledData` -> ``split``. Every message names the file, the column and the row
numbers a user sees in Excel, and says what to do next.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any

import numpy as np

from embedgen.errors import BadConfig, BadTable
from embedgen.table import (
    LABEL_NAMES,
    SEGMENT_CHARS,
    Table,
    is_number,
    resolve_column,
    rows_text,
)
from embedgen.tokens import mostly_cjk

log = logging.getLogger(__name__)

# Largest class / smallest class from which the Data page warns of imbalance.
IMBALANCE_RATIO = 3.0
# A class with fewer rows than this is learnt from a handful of examples (one of them held out
# for validation); when the median class is that small, the data gets a note.
SMALL_CLASS_ROWS = 10


def guess_columns(table: Table) -> tuple[str | None, str | None]:
    """Return the (text column, label column) to pre-select; ``None`` where nothing fits."""
    stats = {}
    for column in table.columns:
        # Counted once per distinct value: a label column of a million rows holds a few.
        counts = Counter(v.strip() for v in table.frame[column].tolist())
        counts.pop("", None)
        if counts:
            n = counts.total()
            numeric = sum(c for v, c in counts.items() if is_number(v)) / n
            stats[column] = (counts, numeric, _median_length(counts))
    texts = [c for c, (_, numeric, _) in stats.items() if numeric < 0.5]
    text = max(texts, key=lambda c: stats[c][2], default=None)
    labels = []
    for column, (counts, _, median_length) in stats.items():
        distinct = len(counts)
        if column != text and 2 <= distinct <= 50 and distinct <= 0.5 * counts.total():
            if median_length <= 30:
                preferred = column.strip().lower() in LABEL_NAMES
                labels.append((not preferred, distinct, column))
    return text, (min(labels)[2] if labels else None)


def _median_length(counts: Counter[str]) -> float:
    """Return the median length of the values counted in ``counts``, each as often as counted
    (``statistics.median`` of the full list, without making it)."""
    lengths: Counter[int] = Counter()
    for value, count in counts.items():
        lengths[len(value)] += count
    order = sorted(lengths.items())

    def nth(k: int) -> int:
        for length, count in order:
            if k < count:
                return length
            k -= count
        raise IndexError(k)

    n = lengths.total()
    return (nth((n - 1) // 2) + nth(n // 2)) / 2


@dataclass(frozen=True)
class DroppedRow:
    """A row left out of the data, and why."""

    row: int
    reason: str


@dataclass(frozen=True)
class LabelledData:
    """Texts with class labels; ``labels[i]`` indexes ``label_names``, ``rows[i]`` is its row."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]
    rows: tuple[int, ...]
    dropped: tuple[DroppedRow, ...]
    text_column: str
    label_column: str
    source_name: str
    source_sha256: str

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        """Return the number of classes (including any without rows in this subset)."""
        return len(self.label_names)

    def class_counts(self) -> dict[str, int]:
        """Return the number of rows of each class, in label order."""
        counts = Counter(self.labels)
        return {name: counts[i] for i, name in enumerate(self.label_names)}

    def imbalance(self) -> float:
        """Return how many times more rows the largest class has than the smallest (1.0: even).

        A class without rows (possible in a subset) counts as 1 row, so the ratio stays finite.
        """
        counts = self.class_counts().values()
        return max(counts) / max(1, min(counts))

    def imbalance_note(self, threshold: float = IMBALANCE_RATIO) -> str | None:
        """Return what an imbalance of at least ``threshold`` (largest class / smallest) means
        for training, or ``None`` when the classes are closer in size than that."""
        ratio = self.imbalance()
        if ratio < threshold:
            return None
        counts = self.class_counts()
        large = max(counts, key=lambda c: counts[c])
        small = min(counts, key=lambda c: counts[c])
        return (
            f"The classes are imbalanced: '{large}' has {counts[large]:,} rows, '{small}' "
            f"{counts[small]:,} ({ratio:.1f} times fewer). Accuracy can look good while the "
            f"small class is mostly missed, so judge training by macro-F1, which weighs every "
            f"class equally (training keeps the epoch with the best validation macro-F1); "
            f"training does not reweight the classes. If you can, add examples of '{small}'."
        )

    def small_classes_note(self, threshold: int = SMALL_CLASS_ROWS) -> str | None:
        """Return what it means when half the classes or more have fewer than ``threshold``
        rows, or ``None`` when the median class is larger than that."""
        counts = self.class_counts()
        median = statistics.median(counts.values()) if counts else threshold
        if median >= threshold:
            return None
        small = sum(1 for n in counts.values() if n < threshold)
        return (
            f"{self.source_name}: {small:,} of {len(counts):,} classes have fewer than "
            f"{threshold} rows (median {median:g} rows per class). From so few examples, some "
            f"of them held out for validation, fine-tuning learns little and macro-F1 stays "
            f"low and noisy. Add examples, merge rare classes into broader ones, or leave the "
            f"rarest classes out."
        )

    def long_texts_note(self) -> str | None:
        """Return what happens to texts longer than SEGMENT_CHARS characters, or ``None``."""
        long = [i for i, text in enumerate(self.texts) if len(text) > SEGMENT_CHARS]
        if not long:
            return None
        longest = max(long, key=lambda i: len(self.texts[i]))
        return (
            f"{len(long):,} text{'s are' if len(long) > 1 else ' is'} longer than "
            f"{SEGMENT_CHARS:,} characters (the longest, row {self.rows[longest]}, has "
            f"{len(self.texts[longest]):,}). Words are found in them {SEGMENT_CHARS:,} "
            "characters at a time, and the model reads only the first tokens of each text (the "
            "max length on the Train page)."
        )

    def notes(self) -> tuple[str, ...]:
        """Return the warnings about these data that do not stop training: too few rows per
        class (:meth:`small_classes_note`), imbalance (:meth:`imbalance_note`), very long
        texts (:meth:`long_texts_note`)."""
        found = (self.small_classes_note(), self.imbalance_note(), self.long_texts_note())
        return tuple(n for n in found if n)

    def dropped_summary(self) -> str:
        """Return one line on the dropped rows: "2 rows dropped: empty text in rows 5, 9"."""
        if not self.dropped:
            return "No rows dropped."
        by_reason: dict[str, list[int]] = {}
        for d in self.dropped:
            by_reason.setdefault(d.reason, []).append(d.row)
        n = len(self.dropped)
        parts = [f"{reason} in {rows_text(rows)}" for reason, rows in by_reason.items()]
        return f"{n} row{'s' if n > 1 else ''} dropped: {'; '.join(parts)}"

    def summary(self) -> dict[str, Any]:
        """Return a JSON-ready description for manifests (label_map keys are strings)."""
        return {
            "source": self.source_name,
            "sha256": self.source_sha256,
            "text_column": self.text_column,
            "label_column": self.label_column,
            "rows_total": len(self) + len(self.dropped),
            "rows_used": len(self),
            "rows_dropped": len(self.dropped),
            "dropped_reasons": dict(Counter(d.reason for d in self.dropped)),
            "label_map": {str(i): name for i, name in enumerate(self.label_names)},
            "class_counts": self.class_counts(),
            # what a matrix from a run trained on it keeps by default (CJK tokens only or all)
            "mostly_cjk": mostly_cjk(self.texts),
        }

    def subset(self, indices: Iterable[int]) -> LabelledData:
        """Return the examples at ``indices``, with the same label names and dropped rows."""
        given = indices if isinstance(indices, np.ndarray) else list(indices)
        picked: list[int] = np.asarray(given, dtype=np.intp).tolist()
        if not picked:
            return replace(self, texts=(), labels=(), rows=())
        # itemgetter picks in C: a third of the time of a generator at a million rows.
        take = itemgetter(*picked) if len(picked) > 1 else lambda seq: (seq[picked[0]],)
        return replace(self, texts=take(self.texts), labels=take(self.labels), rows=take(self.rows))


def prepare(
    table: Table, text_column: str | int, label_column: str | int, *, min_per_class: int = 2
) -> LabelledData:
    """Return the labelled examples of ``table``, dropping rows with an empty text or label."""
    if min_per_class < 1:
        raise BadConfig(f"min_per_class must be at least 1, got {min_per_class}.")
    text_col, label_col = resolve_column(table, text_column), resolve_column(table, label_column)
    name = table.label
    if text_col == label_col:
        raise BadConfig(
            f"{name}: column '{text_col}' was chosen as both text and label; choose two different "
            f"columns. Columns: {', '.join(table.columns)}."
        )
    texts = [t.strip() for t in table.frame[text_col].tolist()]  # tolist: 3x faster than iter
    raw_labels = [v.strip() for v in table.frame[label_col].tolist()]
    canonical = {label: _canonical(label) for label in set(raw_labels)}
    for column, values, kind in ((text_col, texts, "texts"), (label_col, raw_labels, "labels")):
        if not any(values):
            raise BadTable(
                f"{name}: column '{column}' is empty in every row; choose the column that holds "
                f"the {kind}. Columns: {', '.join(table.columns)}."
            )
    kept: list[tuple[str, str, int]] = []
    dropped: list[DroppedRow] = []
    for i, (text, label) in enumerate(zip(texts, raw_labels, strict=True)):
        if not text:
            dropped.append(DroppedRow(table.row_number(i), "empty text"))
        elif not label:
            dropped.append(DroppedRow(table.row_number(i), "empty label"))
        else:
            kept.append((text, canonical[label], table.row_number(i)))
    if not kept:
        raise BadTable(f"{name}: no row has both a text and a label. Fill in the labels.")
    label_names = _check_labels([label for _, label, _ in kept], name, label_col)
    _check_class_sizes(kept, min_per_class, name, label_col)
    index = {label: i for i, label in enumerate(label_names)}
    data = LabelledData(
        texts=tuple(text for text, _, _ in kept),
        labels=tuple(index[label] for _, label, _ in kept),
        label_names=label_names,
        rows=tuple(row for _, _, row in kept),
        dropped=tuple(dropped),
        text_column=text_col,
        label_column=label_col,
        source_name=name,
        source_sha256=table.sha256,
    )
    reasons = ", ".join(f"{n} {r}" for r, n in Counter(d.reason for d in dropped).items())
    log.info(
        "Read %d rows, kept %d, dropped %d%s; %d classes",
        len(table),
        len(data),
        len(dropped),
        f" ({reasons})" if reasons else "",
        data.num_classes,
    )
    note = data.small_classes_note()
    if note:
        log.warning(note)
    return data


def _check_class_sizes(
    kept: list[tuple[str, str, int]], min_per_class: int, name: str, label_col: str
) -> None:
    """Refuse classes with fewer than ``min_per_class`` of the kept (text, label, row) rows."""
    rows_of: dict[str, list[int]] = {}
    for _, label, row in kept:
        rows_of.setdefault(label, []).append(row)
    small = [(label, rows) for label, rows in rows_of.items() if len(rows) < min_per_class]
    if small:
        listed = "; ".join(
            f"'{label}' has {len(rows)} ({rows_text(rows)})" for label, rows in small
        )
        which = "that class" if len(small) == 1 else "those classes"
        raise BadTable(
            f"{name}: column '{label_col}' needs at least {min_per_class} rows per class, but "
            f"class {listed}. Add examples of {which}, remove those rows, or merge {which} into "
            f"another class."
        )


def _canonical(label: str) -> str:
    """Return ``label`` with integral numbers written one way ("1.0" and "1" are one class)."""
    if is_number(label):
        value = float(label)
        if value.is_integer():
            return str(int(value))
    return label


def _check_labels(labels: list[str], name: str, column: str) -> tuple[str, ...]:
    """Return the sorted class names, after checking the column holds classes at all."""
    counts = Counter(labels)
    distinct = sorted(counts)
    numbers = {v: float(v) for v in distinct if is_number(v)}
    many = len(distinct) > 50 and len(distinct) > 0.2 * len(labels)
    if sum(counts[v] for v in numbers) >= 0.9 * len(labels):
        fractional = any(not x.is_integer() for x in numbers.values())
        if many or (fractional and len(distinct) > 10):
            raise BadTable(
                f"{name}: column '{column}' looks like a continuous score ({len(distinct)} "
                f"different numbers in {len(labels)} rows), not classes. Bin it into a few classes "
                f"(e.g. low/medium/high) or choose another label column."
            )
    elif many and len(distinct) > 0.5 * len(labels):
        raise BadTable(
            f"{name}: column '{column}' has {len(distinct)} different values in {len(labels)} "
            f"rows; it looks like text, not class labels. Choose another label column."
        )
    if len(distinct) < 2:
        raise BadTable(
            f"{name}: column '{column}' has only one class ({distinct[0]}); fine-tuning needs "
            f"at least two. Choose another label column."
        )
    if all(is_number(v) for v in distinct):
        return tuple(sorted(distinct, key=float))
    return tuple(distinct)


def split(
    data: LabelledData, *, val_fraction: float = 0.1, seed: int = 0
) -> tuple[LabelledData, LabelledData]:
    """Return (train, validation), stratified by class; the same seed gives the same split."""
    if not 0 < val_fraction <= 0.5:
        raise BadConfig(f"val_fraction must be in (0, 0.5], got {val_fraction}.")
    rng = np.random.default_rng(seed)
    labels = np.asarray(data.labels)
    train: list[int] = []
    val: list[int] = []
    for class_index, class_name in enumerate(data.label_names):
        members = np.flatnonzero(labels == class_index)
        if len(members) == 0:
            continue
        if len(members) < 2:
            raise BadTable(
                f"{data.source_name}: class '{class_name}' has only 1 row "
                f"({rows_text([data.rows[members[0]]])}); it cannot be in both training and "
                f"validation. Add examples of it or remove that row."
            )
        n_val = min(max(round(len(members) * val_fraction), 1), len(members) - 1)
        shuffled = rng.permutation(members)
        val.extend(shuffled[:n_val].tolist())
        train.extend(shuffled[n_val:].tolist())
    log.info(
        "Split %d rows: %d train, %d validation (seed %d)", len(data), len(train), len(val), seed
    )
    train_idx, val_idx = (np.sort(np.asarray(part, dtype=np.intp)) for part in (train, val))
    return data.subset(train_idx), data.subset(val_idx)
