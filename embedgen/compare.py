"""Training runs side by side: the settings that differ, the metrics, the curves, and the
neighbours of the same words in a matrix built the same way from each run.

Each function takes :class:`~embedgen.runs.RunRecord` objects (or the matrices chosen for
them) and returns plain rows, so the command line (``embedgen runs --compare``) prints them
and a page draws them. Nothing here stops a comparison for one run or one word: a run with no
matrix, a matrix that cannot be read and a word a matrix cannot answer each get a note, and
the rest still come.

Matrices are opened mapped (``load_matrix(..., mapped=True)``): several of a few hundred MB
are compared at once, and the index over a mapped float32 matrix reads the file's pages
instead of copying them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedgen.errors import BadConfig, BadRun, NotInVocabulary
from embedgen.fields import specs
from embedgen.library import MATRICES_DIR, saved_matrices
from embedgen.matrix import EmbeddingMatrix, load_matrix
from embedgen.neighbours import NeighbourIndex
from embedgen.runs import RunRecord
from embedgen.train import FinetuneConfig

log = logging.getLogger(__name__)

NONE = "—"  # a setting with no value (max length taken from the data, a key an old run lacks)
BUILD_HINT = "build one with `embedgen matrix {folder}` or on the Matrix page"


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    """A setting's value for a table: 2e-05, yes/no, — for none."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _setting_names() -> dict[str, str]:
    """Each config key's name for people ("projection size d (dim)"), as the CLI's help and
    the Train page's widgets call it."""
    return {key: spec.named for key, spec in specs(FinetuneConfig).items()}


def run_settings(record: RunRecord) -> dict[str, str]:
    """What decided ``record``'s run, by name, each value as shown: the model, the data (its
    file's name, its sha256 short, the rows used), then the fine-tuning config in its order."""
    data = record.dataset
    settings = {
        "model": _shown(record.model.get("model_id")),
        "data": Path(str(data["source"])).name if data.get("source") else NONE,
        # The same file name may hold other rows (edited, or another folder's file).
        "data sha256": str(data["sha256"])[:12] if data.get("sha256") else NONE,
        "rows used": _shown(data.get("rows_used")),
    }
    names = _setting_names()
    for key, value in record.config.items():
        settings[names.get(key, key)] = _shown(value)
    return settings


def _all_settings(records: Sequence[RunRecord]) -> tuple[list[str], list[dict[str, str]]]:
    """Every setting name any run has (first seen first), and each run's settings."""
    each = [run_settings(r) for r in records]
    names = list(dict.fromkeys(name for settings in each for name in settings))
    return names, each


def settings_diff(records: Sequence[RunRecord]) -> list[tuple[str, tuple[str, ...]]]:
    """The settings whose values differ between the runs: (name, one value per run, in the
    runs' order); a setting one run lacks (an older run.json) shows as "—" there."""
    names, each = _all_settings(records)
    rows = [(name, tuple(s.get(name, NONE) for s in each)) for name in names]
    return [(name, values) for name, values in rows if len(set(values)) > 1]


def same_settings(records: Sequence[RunRecord]) -> list[str]:
    """The names of the settings equal in all the runs: what :func:`settings_diff` leaves
    out, so a table can say "12 other settings are the same" (and which, when asked)."""
    names, each = _all_settings(records)
    return [name for name in names if len({s.get(name, NONE) for s in each}) == 1]


# --------------------------------------------------------------------------------------------
# Metrics and curves
# --------------------------------------------------------------------------------------------


def model_name(record: RunRecord) -> str:
    """The run's model by the last part of its hub id or folder ("m3e-small")."""
    model_id = str(record.model.get("model_id") or "")
    return model_id.rstrip("/").rsplit("/", 1)[-1] or NONE


@dataclass(frozen=True)
class RunMetrics:
    """One run's row of the metrics table; the validation numbers are its best epoch's (None
    while it has no finished epoch)."""

    run: str
    model: str
    status: str
    epochs: int  # epochs run
    best_epoch: int | None
    val_macro_f1: float | None
    val_accuracy: float | None
    val_loss: float | None
    seconds: float  # training time of all its epochs


def metrics_table(records: Sequence[RunRecord]) -> list[RunMetrics]:
    """One row per run, in the runs' order: what it trained and how well its best epoch did."""
    rows = []
    for r in records:
        best = r.best
        rows.append(
            RunMetrics(
                run=r.name,
                model=model_name(r),
                status=str(r.status),
                epochs=len(r.history),
                best_epoch=best.epoch if best else None,
                val_macro_f1=best.val_macro_f1 if best else None,
                val_accuracy=best.val_accuracy if best else None,
                val_loss=best.val_loss if best else None,
                seconds=float(sum(m.seconds for m in r.history)),
            )
        )
    return rows


@dataclass(frozen=True)
class Curve:
    """One run's per-epoch series, ready for a line chart (plain lists, one item an epoch)."""

    run: str
    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    val_macro_f1: list[float] = field(default_factory=list)


def curves(records: Sequence[RunRecord]) -> list[Curve]:
    """Each run's learning curves, in the runs' order (empty lists for a run with no epoch)."""
    return [
        Curve(
            run=r.name,
            epoch=[m.epoch for m in r.history],
            train_loss=[m.train_loss for m in r.history],
            val_loss=[m.val_loss for m in r.history],
            val_accuracy=[m.val_accuracy for m in r.history],
            val_macro_f1=[m.val_macro_f1 for m in r.history],
        )
        for r in records
    ]


# --------------------------------------------------------------------------------------------
# Which matrix of each run
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatrixChoice:
    """The saved matrix compared for one run (``folder`` None: none), and what to tell the
    user about it ("" when there is nothing to say)."""

    run: str
    folder: Path | None
    note: str = ""

    @property
    def name(self) -> str | None:
        """The matrix's folder name ("contextual-L4-labels0.1-tuned-cjk"), or None."""
        return self.folder.name if self.folder is not None else None


def _no_matrix(record: RunRecord) -> MatrixChoice:
    hint = BUILD_HINT.format(folder=record.folder)
    return MatrixChoice(record.name, None, f"Run '{record.name}' has no saved matrix: {hint}.")


def _named(record: RunRecord, name: str, saved: dict[str, float]) -> MatrixChoice:
    """The matrix called ``name`` of ``record``, or a note saying what the run has instead."""
    if name in saved:
        return MatrixChoice(record.name, Path(record.folder) / MATRICES_DIR / name)
    if not saved:
        return _no_matrix(record)
    return MatrixChoice(
        record.name,
        None,
        f"Run '{record.name}' has no matrix '{name}' (it has {', '.join(saved)}): build it "
        f"with `embedgen matrix {record.folder}` and the same settings, or choose another.",
    )


def matrices_to_compare(
    records: Sequence[RunRecord], name: str | None = None
) -> list[MatrixChoice]:
    """For each run, the saved matrix to compare, in the runs' order.

    With ``name``: each run's ``matrices/<name>``. Without: the matrix name all the runs with
    a matrix share, the most recently built of those (by the latest build in any run), so
    that the neighbours differ by the training, not by how the matrices were built. When
    they share none, each run's newest, with a note that they were built differently. A run
    with no matrix gets a note saying how to build one.
    """
    saved = [saved_matrices(r.folder) for r in records]
    if name is not None:
        return [_named(r, name, s) for r, s in zip(records, saved, strict=True)]
    having = [s for s in saved if s]
    common = set(having[0]).intersection(*having[1:]) if having else set()
    if common:
        chosen = max(common, key=lambda n: (max(s[n] for s in having), n))
        return [_named(r, chosen, s) for r, s in zip(records, saved, strict=True)]
    alike = _built_alike(records, saved)
    if alike is not None:
        return alike
    choices = []
    for r, s in zip(records, saved, strict=True):
        if not s:
            choices.append(_no_matrix(r))
            continue
        newest = next(iter(s))
        note = (
            f"No matrix is built the same way in all the runs: '{r.name}' shows its newest, "
            f"'{newest}', so its neighbours differ by how it was built too."
            if len(having) > 1
            else ""
        )
        choices.append(MatrixChoice(r.name, Path(r.folder) / MATRICES_DIR / newest, note))
    return choices


_LAYER = re.compile(r"-L\d+(?:-\d+)?(?=-|$)")


def _way(name: str) -> str:
    """A matrix's name without its layer: how it was built, whatever the model's depth
    ("contextual-L4-tuned-cjk" of a 4-layer model and "-L12-" of a 12-layer one alike)."""
    return _LAYER.sub("-L*", name)


def _built_alike(
    records: Sequence[RunRecord], saved: list[dict[str, float]]
) -> list[MatrixChoice] | None:
    """Runs of models of different depths: the newest matrices built the same way but at
    each model's own layer (the default builds the last), or None when they share none."""
    if not all(saved):
        return None
    ways = [{_way(n): n for n in reversed(list(s))} for s in saved]  # newest kept per way
    common = set(ways[0]).intersection(*ways[1:])
    if not common:
        return None
    way = max(common, key=lambda w: (max(s[ws[w]] for s, ws in zip(saved, ways, strict=True)), w))
    note = f"Built the same way in every run ({way}), each at its own model's layer."
    return [
        MatrixChoice(r.name, Path(r.folder) / MATRICES_DIR / ws[way], note)
        for r, ws in zip(records, ways, strict=True)
    ]


def open_matrices(
    choices: Sequence[MatrixChoice],
) -> list[tuple[EmbeddingMatrix | None, MatrixChoice]]:
    """Each chosen matrix opened mapped (never copied), with its choice; one that cannot be
    read comes back as None, its choice's note saying why."""
    opened: list[tuple[EmbeddingMatrix | None, MatrixChoice]] = []
    for choice in choices:
        if choice.folder is None:
            opened.append((None, choice))
            continue
        try:
            opened.append((load_matrix(choice.folder, mapped=True), choice))
        except BadRun as exc:
            log.warning("Run %s: matrix %s not opened: %s", choice.run, choice.folder, exc)
            opened.append((None, MatrixChoice(choice.run, None, f"Run '{choice.run}': {exc}")))
    return opened


# --------------------------------------------------------------------------------------------
# Neighbours side by side
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One matrix's answer for one word: its ``k`` nearest tokens and their cosines, best
    first; ``pieces`` the tokens the word was read as (several: the mean of their vectors);
    ``note`` why there are none ("" when there are)."""

    neighbours: tuple[tuple[str, float], ...] = ()
    pieces: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class WordNeighbours:
    """A word and one :class:`Answer` per matrix, in the matrices' order."""

    word: str
    answers: tuple[Answer, ...]


def _answer(index: NeighbourIndex | None, word: str, k: int) -> Answer:
    if index is None:
        return Answer(note="no matrix")
    try:
        found = index.lookup(word)
        neighbours = index.top_k(word, k=k)
    except NotInVocabulary:
        rows = f"{len(index):,} {index.matrix.rows_are}"
        return Answer(note=f"not in its {rows}, nor made of them")
    return Answer(tuple((n.token, n.score) for n in neighbours), found.pieces)


def word_list(text: str) -> list[str]:
    """Words typed in one line: split at commas, ASCII or full-width (干净，服务), or at the
    ideographic comma (、), blanks left out, each once."""
    for comma in "，、":
        text = text.replace(comma, ",")
    return list(dict.fromkeys(w.strip() for w in text.split(",") if w.strip()))


def neighbours_side_by_side(
    matrices: Sequence[EmbeddingMatrix | NeighbourIndex | None],
    words: Sequence[str],
    k: int = 5,
) -> list[WordNeighbours]:
    """For each word (blank ones left out), the ``k`` nearest tokens in each matrix by cosine.

    A word that is not a token is read as the tokens that spell it (干净 as 干 + 净 in a
    matrix of characters), as :meth:`NeighbourIndex.lookup` does; a word a matrix cannot
    answer, and a matrix that is None (its run had none), get a short note instead, so one
    bad word or run never stops the rest. An index may be passed instead of a matrix to reuse
    one already built.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise BadConfig(f"k = {k!r}: ask for at least 1 neighbour.")
    indexes = [
        m if isinstance(m, NeighbourIndex) or m is None else NeighbourIndex(m) for m in matrices
    ]
    asked = [w.strip() for w in words if w.strip()]
    return [WordNeighbours(w, tuple(_answer(i, w, k) for i in indexes)) for w in asked]
