"""How good is a matrix: word similarity, analogies and label purity, measured on its rows.

The measures:

- **Word similarity** (:func:`similarity`): for each word pair of a benchmark file (wordsim-240,
  wordsim-297, SimLex-999, ...), the cosine of the two words' vectors; then Spearman's rank
  correlation (the usual headline number) and Pearson's correlation between those cosines and
  the people's scores, over the pairs whose two words have vectors.
- **Analogies** (:func:`analogy`): for each question "a is to b as c is to d" of a word2vec
  analogy file (CA8, ...), the row x that answers it, by two rules (Levy & Goldberg 2014), over
  all rows but those of a, b and c; the question is right when x is the row of d.

  - 3CosAdd: argmax of cos(x, b) - cos(x, a) + cos(x, c) (Mikolov et al. 2013);
  - 3CosMul: argmax of cos'(x, b) * cos'(x, c) / (cos'(x, a) + 0.001), cos' = (cos + 1) / 2.

  Accuracy = right / covered questions, per section and over the file; coverage = covered /
  all questions. Both rules are computed together in batches of questions: three matrix
  products with the unit-length rows per batch.
- **Label purity** (:func:`label_purity`): take the tokens that lean most to each label of the
  user's texts (``embedgen.tokenstats.association``); for each, its k nearest neighbours by cosine
  among the other tokens taken; purity = the share of those neighbours that lean to the same
  label. Two labels with 30 tokens each and k = 10 is the "sentiment-neighbour purity" we quote.

Conventions:

- A word's vector is what :meth:`NeighbourIndex.lookup` gives: its row when it is a token (or
  ``"▁" + word`` is), else -- with pooling on, the default -- the mean of the unit vectors of
  the tokens it splits into. Pooled words are listed in every result (``pooled``), never used
  silently; with ``pool=False`` a word that is not a row counts as missing. Words are looked up
  as written (no case folding).
- The rows left out of an analogy's answers are those of a, b and c: a word's own row, or the
  rows of its pieces when it was pooled (as :meth:`NeighbourIndex.analogy` does).
- d must be a row of the matrix (a pooled word is no row that could be the answer); a question
  whose a, b or c has no vector, or whose d is no row, is not covered, and those words are
  listed in ``missing``.
- ``missing`` and ``pooled`` are sorted and hold each word once; ``pooled`` holds only words
  whose pooled vector was used (in a scored pair or a covered question).
- Nothing here is random: the same matrix and files give the same numbers.

Benchmark files (:func:`read_similarity`, :func:`read_analogy`) are UTF-8 (a BOM is fine), with
LF or CRLF line ends, with or without a final line end. Lines that cannot be read are kept with
their number and the reason (``malformed``) and reported; the other lines are used.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from embedgen.errors import BadConfig, BadTable, NotInVocabulary
from embedgen.matrix import EmbeddingMatrix
from embedgen.neighbours import NeighbourIndex
from embedgen.table import read_bytes

log = logging.getLogger(__name__)

Source = str | os.PathLike[str] | bytes
EPSILON = 1e-3  # 3CosMul's guard against dividing by zero (Levy & Goldberg 2014)
BATCH_CELLS = 1 << 24  # questions x rows per score array in a batch: 64 MB of float32
_LINE_END = re.compile(r"\r\n|\r|\n")
_UTF8_BOM = b"\xef\xbb\xbf"


# --------------------------------------------------------------------------------------------
# Benchmark files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Malformed:
    """A line of a benchmark file that could not be read: its number (from 1), text and why."""

    line: int
    text: str
    reason: str


@dataclass(frozen=True)
class WordPair:
    """Two words and the similarity people gave them; ``line`` is where the file has it."""

    line: int
    first: str
    second: str
    score: float


@dataclass(frozen=True)
class SimilaritySet:
    """The word pairs of a similarity file, its header line (if any) and its malformed lines."""

    name: str
    pairs: tuple[WordPair, ...]
    header: str | None = None
    malformed: tuple[Malformed, ...] = ()

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def words(self) -> tuple[str, ...]:
        """Every word of the pairs, once, in first-seen order."""
        return tuple(dict.fromkeys(w for p in self.pairs for w in (p.first, p.second)))


@dataclass(frozen=True)
class Question:
    """A question: a is to b as c is to d; ``line`` is where the file has it."""

    line: int
    a: str
    b: str
    c: str
    d: str


@dataclass(frozen=True)
class Section:
    """The questions under one ``: name`` line of an analogy file."""

    name: str
    questions: tuple[Question, ...]


@dataclass(frozen=True)
class AnalogySet:
    """The questions of an analogy file by section, in file order, and its malformed lines."""

    name: str
    sections: tuple[Section, ...]
    malformed: tuple[Malformed, ...] = ()

    @property
    def questions(self) -> tuple[Question, ...]:
        """Every question, in file order."""
        return tuple(q for s in self.sections for q in s.questions)

    def __len__(self) -> int:
        return sum(len(s.questions) for s in self.sections)

    @property
    def words(self) -> tuple[str, ...]:
        """Every word of the questions, once, in first-seen order."""
        return tuple(dict.fromkeys(w for q in self.questions for w in (q.a, q.b, q.c, q.d)))


def read_similarity(source: Source, *, name: str | None = None) -> SimilaritySet:
    """Return the word pairs of a similarity file (a path, or the bytes of an upload ``name``).

    One pair a line: ``word1 word2 score``, split on tabs when the line has one (so a word may
    hold spaces), else on runs of spaces; columns after the score are ignored and words are
    stripped. A first line whose score is not a number is a header. Other lines that do not
    fit are reported in ``malformed``; a file with no pair at all is refused.
    """
    name, lines = _read_lines(source, name, "similarity")
    pairs: list[WordPair] = []
    malformed: list[Malformed] = []
    header: str | None = None
    seen_a_line = False
    for number, text in lines:
        fields = [f.strip() for f in text.split("\t")] if "\t" in text else text.split()
        first_line, seen_a_line = not seen_a_line, True
        if len(fields) < 3:
            reason = f"{len(fields)} field(s); expected word1, word2 and a score"
            malformed.append(Malformed(number, text, reason))
            continue
        first, second, score_text = fields[:3]
        try:
            score = float(score_text)
        except ValueError:
            if first_line:
                header = text
            else:
                reason = f"the score {score_text!r} is not a number"
                malformed.append(Malformed(number, text, reason))
            continue
        if not math.isfinite(score):
            malformed.append(Malformed(number, text, f"the score {score_text!r} is not finite"))
        elif not first or not second:
            which = "first" if not first else "second"
            malformed.append(Malformed(number, text, f"the {which} word is empty"))
        else:
            pairs.append(WordPair(number, first, second, score))
    if not pairs:
        raise BadTable(
            f"{name}: no word pair could be read{_first_problem(malformed)}. A similarity file "
            "holds one pair a line: word1, word2 and a score, separated by a tab or spaces."
        )
    log.info(
        "Read %s: %d word pairs%s, %d malformed line(s)",
        name,
        len(pairs),
        " after a header line" if header is not None else "",
        len(malformed),
    )
    return SimilaritySet(name, tuple(pairs), header, tuple(malformed))


def read_analogy(source: Source, *, name: str | None = None) -> AnalogySet:
    """Return the questions of a word2vec analogy file (a path, or the bytes of upload ``name``).

    ``: name`` lines start a section; every other line is ``a b c d``, separated by spaces or
    tabs. Questions before the first section line go to a section named after the file. Lines
    that do not fit are reported in ``malformed``; a file with no question is refused.
    """
    name, lines = _read_lines(source, name, "analogy")
    sections: dict[str, list[Question]] = {}
    malformed: list[Malformed] = []
    current = name
    for number, text in lines:
        stripped = text.strip()
        if stripped.startswith(":"):
            current = stripped[1:].strip()
            if not current:
                malformed.append(Malformed(number, text, "a section line without a name"))
                current = name
            sections.setdefault(current, [])
            continue
        words = stripped.split()
        if len(words) != 4:
            reason = f"{len(words)} word(s); expected 4 (a b c d)"
            malformed.append(Malformed(number, text, reason))
            continue
        sections.setdefault(current, []).append(Question(number, *words))
    found = AnalogySet(
        name, tuple(Section(s, tuple(qs)) for s, qs in sections.items()), tuple(malformed)
    )
    if not len(found):
        raise BadTable(
            f"{name}: no analogy question could be read{_first_problem(malformed)}. An analogy "
            "file holds ': section' lines and questions of four words a b c d, one a line."
        )
    log.info(
        "Read %s: %d questions in %d section(s), %d malformed line(s)",
        name,
        len(found),
        len(found.sections),
        len(malformed),
    )
    return found


@dataclass(frozen=True)
class LabelWords:
    """Words someone chose for each label (a file of ``word<TAB>label`` lines): what label
    purity measures when the data's own statistics are not the point (a curated list)."""

    name: str
    words: dict[str, tuple[str, ...]]  # label -> its words, in file order
    malformed: tuple[Malformed, ...] = ()

    def associations(self) -> dict[str, tuple[str, float]]:
        """The words as :func:`label_purity` takes them: word -> (label, 1)."""
        return {w: (label, 1.0) for label, ws in self.words.items() for w in ws}


def read_label_words(source: Source, *, name: str | None = None) -> LabelWords:
    """The words of a label-word file: ``word label`` a line (a tab, or else spaces, between
    them); a word given twice keeps its first label and the repeat is reported."""
    name, lines = _read_lines(source, name, "label-word")
    words: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    malformed: list[Malformed] = []
    for number, text in lines:
        fields = [f.strip() for f in text.split("\t")] if "\t" in text else text.split()
        if len(fields) < 2 or not fields[0] or not fields[1]:
            malformed.append(Malformed(number, text, "expected a word and its label"))
        elif fields[0] in seen:
            reason = f"{fields[0]!r} is already a word of label {seen[fields[0]]!r}"
            malformed.append(Malformed(number, text, reason))
        else:
            seen[fields[0]] = fields[1]
            words[fields[1]] = (*words.get(fields[1], ()), fields[0])
    if len(words) < 2:
        raise BadTable(
            f"{name}: label words of at least two labels are needed, found "
            f"{len(words)}{_first_problem(malformed) if not words else ''}. Write one word "
            "and its label a line, separated by a tab."
        )
    return LabelWords(name, words, tuple(malformed))


def _read_lines(source: Source, name: str | None, what: str) -> tuple[str, list[tuple[int, str]]]:
    """Return the file's name and its non-blank lines with their numbers (from 1)."""
    raw, name = read_bytes(source, name)
    skipped = len(_UTF8_BOM) if raw.startswith(_UTF8_BOM) else 0
    try:
        text = raw[skipped:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = exc.start + skipped
        raise BadTable(
            f"{name}: cannot read the {what} file as UTF-8 text (the byte at offset {at}, "
            f"0x{raw[at]:02x}, is not UTF-8). Save it as UTF-8 and try again."
        ) from None
    lines = [(i, line) for i, line in enumerate(_LINE_END.split(text), 1) if line.strip()]
    return name, lines


def _first_problem(malformed: Sequence[Malformed]) -> str:
    if not malformed:
        return " (it holds no text)"
    first = malformed[0]
    return f" ({len(malformed)} malformed line(s); line {first.line}: {first.reason})"


# --------------------------------------------------------------------------------------------
# Word vectors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    unit: npt.NDArray[np.float32]  # length 1 (or zero)
    rows: tuple[int, ...]  # its row, or its pieces' rows when pooled
    pooled: bool


class _Words:
    """Each word looked up once, by the pooling rule (see the module docstring)."""

    def __init__(self, index: NeighbourIndex, pool: bool) -> None:
        self.index = index
        self.pool = pool
        self._found: dict[str, _Found | None] = {}

    def vector(self, word: str) -> _Found | None:
        """The word's vector and rows, or None when it has none (or is pooled and pooling is
        off)."""
        if word not in self._found:
            self._found[word] = self._look_up(word)
        return self._found[word]

    def row(self, word: str) -> int | None:
        """The word's own row, or None when it is not a row of the matrix."""
        found = self.vector(word)
        if found is None or found.pooled:
            return None
        return found.rows[0]

    def _look_up(self, word: str) -> _Found | None:
        try:
            found = self.index.lookup(word)
        except NotInVocabulary:
            return None
        if found.pooled and not self.pool:
            return None
        rows = tuple(r for r in map(self.index.row, found.pieces) if r is not None)
        vector = np.asarray(found.vector, dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        unit = vector / norm if norm > 0 else vector
        return _Found(unit, rows, found.pooled)


def _as_index(matrix: NeighbourIndex | EmbeddingMatrix) -> NeighbourIndex:
    return matrix if isinstance(matrix, NeighbourIndex) else NeighbourIndex(matrix)


# --------------------------------------------------------------------------------------------
# Word similarity
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimilarityResult:
    """How well the matrix's cosines rank a similarity file's pairs like people did.

    ``spearman`` and ``pearson`` are None when fewer than 2 pairs were found or the cosines (or
    scores) are all equal. ``cosines`` has one entry per pair of the file, None where a word has
    no vector.
    """

    name: str
    spearman: float | None
    pearson: float | None
    pairs_found: int
    pairs_total: int
    missing: tuple[str, ...]
    pooled: tuple[str, ...]
    malformed: tuple[Malformed, ...]
    cosines: tuple[float | None, ...]


def similarity(
    index: NeighbourIndex | EmbeddingMatrix, dataset: SimilaritySet, *, pool: bool = True
) -> SimilarityResult:
    """Return the Spearman and Pearson correlations of cosines with ``dataset``'s scores."""
    index = _as_index(index)
    words = _Words(index, pool)
    cosines: list[float | None] = []
    found_cosines: list[float] = []
    gold: list[float] = []
    missing: set[str] = set()
    pooled: set[str] = set()
    for pair in dataset.pairs:
        first, second = words.vector(pair.first), words.vector(pair.second)
        if first is None or second is None:
            missing.update(w for w, f in ((pair.first, first), (pair.second, second)) if f is None)
            cosines.append(None)
            continue
        pooled.update(w for w, f in ((pair.first, first), (pair.second, second)) if f.pooled)
        cosine = float(np.clip(np.dot(first.unit, second.unit), -1.0, 1.0))
        cosines.append(cosine)
        found_cosines.append(cosine)
        gold.append(pair.score)
    spearman, pearson = _correlations(found_cosines, gold)
    log.info(
        "%s: Spearman %s over %d of %d pairs (%d words pooled, %d missing)",
        dataset.name,
        "n/a" if spearman is None else f"{spearman:.3f}",
        len(gold),
        len(dataset.pairs),
        len(pooled),
        len(missing),
    )
    return SimilarityResult(
        name=dataset.name,
        spearman=spearman,
        pearson=pearson,
        pairs_found=len(gold),
        pairs_total=len(dataset.pairs),
        missing=tuple(sorted(missing)),
        pooled=tuple(sorted(pooled)),
        malformed=dataset.malformed,
        cosines=tuple(cosines),
    )


@dataclass(frozen=True)
class Interval:
    """An estimate and its bootstrap percentile interval (``level``, e.g. 0.95)."""

    value: float
    low: float
    high: float
    level: float = 0.95

    def describe(self, scale: float = 1.0, digits: int = 1) -> str:
        """ "+3.6 [+1.2, +5.9]" (times ``scale``)."""
        v, lo, hi = (scale * x for x in (self.value, self.low, self.high))
        return f"{v:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def similarity_difference(
    first: SimilarityResult,
    second: SimilarityResult,
    dataset: SimilaritySet,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """How much ``second``'s Spearman on ``dataset`` exceeds ``first``'s, with a paired
    bootstrap interval: the pairs both matrices cover are resampled with replacement, the same
    resample for both, and the difference taken each time (``resamples`` times, ``seed``)."""
    both = [
        (a, b, pair.score)
        for a, b, pair in zip(first.cosines, second.cosines, dataset.pairs, strict=True)
        if a is not None and b is not None
    ]
    if len(both) < 3:
        raise BadConfig(
            f"{dataset.name}: {len(both)} pairs are covered by both matrices; a difference "
            "needs at least 3."
        )
    a, b, gold = (np.array(col, dtype=np.float64) for col in zip(*both, strict=True))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(gold), size=(resamples, len(gold)))
    differences = _spearman_rows(b[picks], gold[picks]) - _spearman_rows(a[picks], gold[picks])
    value = _spearman_rows(b[None], gold[None])[0] - _spearman_rows(a[None], gold[None])[0]
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(differences, [tail, 100 - tail])
    return Interval(float(value), float(low), float(high), level)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``x`` with the same row of ``y`` (ties averaged)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=1) / denominator


def _correlations(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, float | None]:
    """Spearman and Pearson of x and y; None where undefined (fewer than 2, or constant)."""
    if len(x) < 2:
        return None, None
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        spearman = float(stats.spearmanr(x, y).statistic)
        pearson = float(stats.pearsonr(x, y).statistic)
    return (
        spearman if math.isfinite(spearman) else None,
        pearson if math.isfinite(pearson) else None,
    )


# --------------------------------------------------------------------------------------------
# Analogies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SectionScore:
    """The analogy questions of a section (or of the whole file): how many, covered, right."""

    name: str
    questions_total: int
    questions_found: int
    right_3cosadd: int
    right_3cosmul: int

    @property
    def accuracy_3cosadd(self) -> float | None:
        """Right / covered questions by 3CosAdd; None when no question is covered."""
        return self.right_3cosadd / self.questions_found if self.questions_found else None

    @property
    def accuracy_3cosmul(self) -> float | None:
        """Right / covered questions by 3CosMul; None when no question is covered."""
        return self.right_3cosmul / self.questions_found if self.questions_found else None

    @property
    def coverage(self) -> float:
        """Covered / all questions (0 for a section without questions)."""
        return self.questions_found / self.questions_total if self.questions_total else 0.0


@dataclass(frozen=True)
class AnalogyResult:
    """Accuracy of 3CosAdd and 3CosMul on an analogy file, per section and overall."""

    name: str
    sections: tuple[SectionScore, ...]
    overall: SectionScore
    missing: tuple[str, ...]
    pooled: tuple[str, ...]
    malformed: tuple[Malformed, ...]


def analogy(
    index: NeighbourIndex | EmbeddingMatrix,
    dataset: AnalogySet,
    *,
    pool: bool = True,
    batch_size: int = 512,
) -> AnalogyResult:
    """Return the 3CosAdd and 3CosMul accuracy on ``dataset``'s questions, by section.

    ``batch_size`` questions are scored at a time (fewer on very tall matrices, so that each
    questions x rows array of a batch stays under 64 MB); it changes the speed and the memory
    used, not the answers.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadConfig(f"batch_size = {batch_size!r}: score at least 1 question at a time.")
    index = _as_index(index)
    covered, missing, pooled = _covered(dataset, _Words(index, pool))
    right_add = np.zeros(len(covered), dtype=bool)
    right_mul = np.zeros(len(covered), dtype=bool)
    step = max(1, min(batch_size, BATCH_CELLS // max(1, len(index))))
    for start in range(0, len(covered), step):
        batch = covered[start : start + step]
        add, mul = _answer(index.unit, [abc for _, abc, _ in batch])
        d_rows = np.array([d for _, _, d in batch])
        right_add[start : start + len(batch)] = add == d_rows
        right_mul[start : start + len(batch)] = mul == d_rows
    scores = _section_scores(dataset, [s for s, _, _ in covered], right_add, right_mul)
    overall = SectionScore(
        name="overall",
        questions_total=len(dataset),
        questions_found=len(covered),
        right_3cosadd=int(right_add.sum()),
        right_3cosmul=int(right_mul.sum()),
    )
    log.info(
        "%s: 3CosAdd %s, 3CosMul %s over %d of %d questions (%d words pooled, %d missing)",
        dataset.name,
        _fmt(overall.accuracy_3cosadd),
        _fmt(overall.accuracy_3cosmul),
        overall.questions_found,
        overall.questions_total,
        len(pooled),
        len(missing),
    )
    return AnalogyResult(
        name=dataset.name,
        sections=tuple(scores),
        overall=overall,
        missing=tuple(sorted(missing)),
        pooled=tuple(sorted(pooled)),
        malformed=dataset.malformed,
    )


# A question the matrix covers: its section, the vectors of a, b and c, and d's row.
_Covered = tuple[int, tuple["_Found", "_Found", "_Found"], int]


def _covered(dataset: AnalogySet, words: _Words) -> tuple[list[_Covered], set[str], set[str]]:
    """The questions whose four words the matrix has (d as a row; a, b, c pooled if need be),
    the words it lacks, and those it pooled from pieces."""
    missing: set[str] = set()
    pooled: set[str] = set()
    covered: list[_Covered] = []
    for s, section in enumerate(dataset.sections):
        for q in section.questions:
            abc = (words.vector(q.a), words.vector(q.b), words.vector(q.c))
            d_row = words.row(q.d)
            missing.update(w for w, f in zip((q.a, q.b, q.c), abc, strict=True) if f is None)
            if d_row is None:
                missing.add(q.d)
            if d_row is None or abc[0] is None or abc[1] is None or abc[2] is None:
                continue
            pooled.update(w for w, f in zip((q.a, q.b, q.c), abc, strict=True) if f.pooled)
            covered.append((s, (abc[0], abc[1], abc[2]), d_row))
    return covered, missing, pooled


def _section_scores(
    dataset: AnalogySet, sections: list[int], right_add: np.ndarray, right_mul: np.ndarray
) -> list[SectionScore]:
    """Each section's counts: the covered questions (``sections``: each one's section) and
    how many each method got right."""
    of_section = np.array(sections, dtype=np.int64)
    scores = []
    for s, section in enumerate(dataset.sections):
        mine = of_section == s
        scores.append(
            SectionScore(
                name=section.name,
                questions_total=len(section.questions),
                questions_found=int(mine.sum()),
                right_3cosadd=int(right_add[mine].sum()),
                right_3cosmul=int(right_mul[mine].sum()),
            )
        )
    return scores


def _answer(
    unit: npt.NDArray[np.float32], questions: Sequence[tuple[_Found, _Found, _Found]]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The rows that answer a batch of questions by 3CosAdd and by 3CosMul (-1: no row left).

    Each distinct word of the batch meets the rows in one matrix product, and the questions
    gather their cosines from it: benchmark files repeat their words (CA8 asks 17,813
    questions with 3,159 words, mostly in runs), so this is several times fewer products than
    one per question word. Ties go to the lower row, as in :meth:`NeighbourIndex.analogy`.
    """
    at: dict[int, int] = {}  # _Words looks each word up once: a repeated word is one object
    vectors = []
    for question in questions:
        for found in question:
            if id(found) not in at:
                at[id(found)] = len(vectors)
                vectors.append(found.unit)
    # cos' = (cos + 1) / 2 for every distinct word at once. 3CosAdd on cos' ranks rows as on
    # cos, since cos'(b) - cos'(a) + cos'(c) = (cos(b) - cos(a) + cos(c) + 1) / 2.
    shifted = np.stack(vectors) @ unit.T  # distinct words x rows
    np.clip(shifted, -1.0, 1.0, out=shifted)
    shifted += 1.0
    shifted *= 0.5
    to_a, to_b, to_c = (
        np.take(shifted, [at[id(q[i])] for q in questions], axis=0) for i in range(3)
    )  # copies, questions x rows
    del shifted
    excluded = (
        [i for i, q in enumerate(questions) for f in q for _ in f.rows],
        [r for q in questions for f in q for r in f.rows],
    )
    add = to_b - to_a
    add += to_c
    add[excluded] = -np.inf
    to_a += np.float32(EPSILON)  # 3CosMul in place: b * c / (a + epsilon)
    to_b *= to_c
    to_b /= to_a
    to_b[excluded] = -np.inf
    return _argmax(add), _argmax(to_b)


def _argmax(scores: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    best = scores.argmax(axis=1)
    best[~np.isfinite(scores[np.arange(len(best)), best])] = -1  # every row was left out
    return best


# --------------------------------------------------------------------------------------------
# Label purity
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurityResult:
    """The share of the label-leaning tokens' nearest neighbours that lean to the same label.

    ``tokens`` holds the tokens used per label, strongest first; ``k`` the neighbours each had
    (``k_requested`` unless the set was too small, which ``note`` then says).
    """

    purity: float
    per_label: dict[str, float]
    tokens: dict[str, tuple[str, ...]]
    k: int
    k_requested: int
    note: str | None = None
    qualified: dict[str, int] | None = None  # per label, the leaning tokens that are rows
    interval: Interval | None = None  # of ``purity``, bootstrapped over the tokens
    shares: tuple[float, ...] = ()  # per token taken (labels' order): neighbours of its label


def label_purity(
    index: NeighbourIndex | EmbeddingMatrix,
    associations: Mapping[str, tuple[str, float]],
    *,
    per_label: int = 30,
    k: int = 10,
    resamples: int = 0,
    seed: int = 0,
) -> PurityResult:
    """Return how often the ``k`` nearest neighbours of label-leaning tokens share their label.

    ``associations`` maps a token to (label, z), as :func:`embedgen.tokenstats.association` returns
    (or :func:`embedgen.tokenstats.significant`, only the tokens that lean significantly). For
    each label, the ``per_label`` rows of the matrix with the highest z > 0 for it are taken
    (ties: in token order); each token's neighbours are sought among the other tokens taken, by
    cosine (ties: the one taken first). With ``resamples``, the purity gets a bootstrap
    interval over the tokens taken.
    """
    for value, what in ((per_label, "per_label"), (k, "k")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadConfig(f"{what} = {value!r}: it must be a whole number of at least 1.")
    index = _as_index(index)
    by_label: dict[str, list[tuple[float, str]]] = {}
    for token, (label, z) in associations.items():
        if z > 0 and index.row(token) is not None:
            by_label.setdefault(label, []).append((z, token))
    tokens = {
        label: tuple(t for _, t in sorted(leaning, key=lambda zt: (-zt[0], zt[1]))[:per_label])
        for label, leaning in sorted(by_label.items())
    }
    if len(tokens) < 2:
        raise BadConfig(
            f"Label purity needs tokens that lean to at least two labels and are rows of the "
            f"matrix; found {len(tokens)} label(s) ({', '.join(tokens) or 'none'}). Count the "
            "tokens of texts with two or more labels, or use a matrix whose vocabulary holds them."
        )
    taken = [t for ts in tokens.values() for t in ts]
    labels = np.array([label for label, ts in tokens.items() for _ in ts])
    used_k = min(k, len(taken) - 1)
    note = None
    if used_k < k:
        note = f"only {len(taken)} tokens: each has {used_k} neighbours, not {k}"
    rows = [index.row(t) for t in taken]
    unit = index.unit[np.array(rows)]
    cosines = unit @ unit.T
    np.fill_diagonal(cosines, -np.inf)
    nearest = np.argsort(-cosines, axis=1, kind="stable")[:, :used_k]
    same = (labels[nearest] == labels[:, None]).mean(axis=1)
    per = {label: float(same[labels == label].mean()) for label in tokens}
    log.info("Label purity %.3f (k=%d, %d tokens, %s)", same.mean(), used_k, len(taken), per)
    qualified = {label: len(leaning) for label, leaning in sorted(by_label.items())}
    interval = _mean_interval(same, resamples, seed) if resamples else None
    shares = tuple(float(x) for x in same)
    return PurityResult(
        float(same.mean()), per, tokens, used_k, k, note, qualified, interval, shares
    )


def _mean_interval(values: np.ndarray, resamples: int, seed: int) -> Interval:
    """The mean of ``values`` with a bootstrap 95% percentile interval."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(values.mean()), float(low), float(high))


# --------------------------------------------------------------------------------------------
# Everything at once
# --------------------------------------------------------------------------------------------


def evaluate(
    matrix: EmbeddingMatrix | NeighbourIndex,
    similarity_files: Iterable[Source | SimilaritySet] = (),
    analogy_files: Iterable[Source | AnalogySet] = (),
    *,
    pool: bool = True,
    label_words: Source | LabelWords | None = None,
    k: int = 10,
) -> dict[str, Any]:
    """Return a JSON-ready report of ``matrix`` on similarity and analogy files (paths or sets)
    and, with ``label_words``, its label purity over those words (``k`` neighbours each).

    ``{"matrix": {"method", "shape"}, "pool", "similarity": [...], "analogy": [...]}`` and
    ``"label_purity"``; each entry names its ``file``.
    """
    sims = [s if isinstance(s, SimilaritySet) else read_similarity(s) for s in similarity_files]
    anas = [a if isinstance(a, AnalogySet) else read_analogy(a) for a in analogy_files]
    if label_words is not None and not isinstance(label_words, LabelWords):
        label_words = read_label_words(label_words)
    if not sims and not anas and label_words is None:
        raise BadConfig(
            "Nothing to evaluate: give at least one similarity, analogy or label-word file."
        )
    index = _as_index(matrix)
    method = index.matrix.method
    report: dict[str, Any] = {
        "matrix": {
            "method": None if method is None else str(method),
            "shape": list(index.matrix.shape),
        },
        "pool": pool,
        "similarity": [_similarity_report(similarity(index, s, pool=pool)) for s in sims],
        "analogy": [_analogy_report(analogy(index, a, pool=pool)) for a in anas],
    }
    if label_words is not None:
        report["label_purity"] = _purity_report(index, label_words, k)
    return report


def _purity_report(index: NeighbourIndex, words: LabelWords, k: int) -> dict[str, Any]:
    """Label purity over a label-word file's words that are rows, with its interval."""
    result = label_purity(index, words.associations(), per_label=100_000, k=k, resamples=2000)
    assert result.interval is not None and result.qualified is not None
    listed = sum(len(w) for w in words.words.values())
    return {
        "file": words.name,
        "purity": result.purity,
        "low": result.interval.low,
        "high": result.interval.high,
        "k": result.k,
        "per_label": result.per_label,
        "rows": result.qualified,
        "not_rows": listed - sum(result.qualified.values()),
        "malformed": [m.line for m in words.malformed],
    }


def _similarity_report(result: SimilarityResult) -> dict[str, Any]:
    return {
        "file": result.name,
        "spearman": result.spearman,
        "pearson": result.pearson,
        "pairs_found": result.pairs_found,
        "pairs_total": result.pairs_total,
        "missing": list(result.missing),
        "pooled": list(result.pooled),
        "malformed": [_malformed_report(m) for m in result.malformed],
    }


def _analogy_report(result: AnalogyResult) -> dict[str, Any]:
    return {
        "file": result.name,
        **_section_report(result.overall, key=None),
        "sections": [_section_report(s, key="section") for s in result.sections],
        "missing": list(result.missing),
        "pooled": list(result.pooled),
        "malformed": [_malformed_report(m) for m in result.malformed],
    }


def _section_report(score: SectionScore, key: str | None) -> dict[str, Any]:
    named = {key: score.name} if key else {}
    return {
        **named,
        "accuracy_3cosadd": score.accuracy_3cosadd,
        "accuracy_3cosmul": score.accuracy_3cosmul,
        "questions_found": score.questions_found,
        "questions_total": score.questions_total,
        "coverage": score.coverage,
    }


def _malformed_report(m: Malformed) -> dict[str, Any]:
    return {"line": m.line, "text": m.text, "reason": m.reason}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
