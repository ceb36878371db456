"""Nearest neighbours, similarity and analogies over an embedding matrix, by cosine.

Vocabularies come in three shapes and :class:`NeighbourIndex` reads all of them:

- BERT WordPiece: ``##`` marks a piece that continues a word ("play", "##ing"); bert-base-chinese
  holds both "好" and "##好".
- SentencePiece (XLM-R, ...): ``▁`` (U+2581) marks a piece that starts a word ("▁中国", "国").
- plain word lists.

A query that is not a token is pieced together from tokens, greedy longest-match-first like
WordPiece, and its vector is the mean of the pieces' unit vectors (``Lookup.pooled``).

Brute force: one matrix-vector product per query, then ``argpartition``. A 250k x 768 float32
matrix answers in tens of milliseconds on a CPU; beyond a few hundred thousand rows an approximate
index would go behind the same interface.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from embedgen.errors import BadConfig, NotInVocabulary
from embedgen.matrix import EmbeddingMatrix
from embedgen.postprocess import l2_normalize
from embedgen.tokens import chinese_rows, is_cjk_char, strip_marker

log = logging.getLogger(__name__)

WORD_START = "\u2581"  # SentencePiece: this piece starts a word
CONTINUATION = "##"  # WordPiece: this piece continues a word

Vector = npt.NDArray[np.float32]
Query = str | npt.NDArray[np.floating]


@dataclass(frozen=True)
class Lookup:
    """The vector for a query, and the tokens it was made of.

    ``pooled`` is True when the vector is the mean of several tokens' unit vectors (the query
    itself is not a token); otherwise ``pieces`` holds the one token and ``vector`` its unit vector.
    """

    query: str
    vector: Vector
    pieces: tuple[str, ...]
    pooled: bool


@dataclass(frozen=True)
class Neighbour:
    """A token and its score (cosine similarity unless the method says otherwise)."""

    token: str
    score: float


def _unit(vector: npt.NDArray[np.floating]) -> Vector:
    """``vector`` scaled to length 1 (float32); a zero vector stays zero."""
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v.copy()


def _rows_and_scales(vectors: np.ndarray) -> tuple[Vector, Vector, Vector | None]:
    """What an index reads its cosines from: rows, the scale of each (1 / its length; 0 for
    an all-zero row) and the unit rows when they were made. A float32 matrix is used as it
    is (no copy: over a matrix mapped from its file, the index adds 4 bytes a row); others
    are normalised once into a float32 copy."""
    if vectors.dtype == np.float32 and vectors.ndim == 2:
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
        with np.errstate(divide="ignore"):
            return vectors, np.where(norms > 0, 1.0 / norms, 0.0).astype(np.float32), None
    unit = l2_normalize(vectors)
    unit.flags.writeable = False
    return unit, np.ones(len(unit), dtype=np.float32), unit


class NeighbourIndex:
    """Cosine neighbours over ``matrix``, without a normalised copy of a float32 matrix
    (:func:`_rows_and_scales`): the web server keeps an index for each visitor's recent
    matrices, and those copies (25 MiB for e5-small's CJK tokens) were most of what three
    visitors grew it by (BENCHMARKS.md)."""

    def __init__(self, matrix: EmbeddingMatrix) -> None:
        self.matrix = matrix
        self._rows, self._scale, self._unit_rows = _rows_and_scales(matrix.vectors)
        self._row: dict[str, int] = {}
        self._more_rows: dict[str, list[int]] = {}  # only for tokens listed more than once
        for i, token in enumerate(matrix.vocab):
            if token in self._row:
                self._more_rows.setdefault(token, []).append(i)
            else:
                self._row[token] = i
        if self._more_rows:
            log.warning(
                "%d tokens appear more than once in the vocabulary; lookups use the first row",
                len(self._more_rows),
            )
        self._longest_piece = max((len(strip_marker(t)) for t in self._row), default=0)
        self._cjk: npt.NDArray[np.bool_] | None = None

    def __len__(self) -> int:
        return len(self.matrix.vocab)

    def __contains__(self, token: object) -> bool:
        return token in self._row

    @property
    def unit(self) -> Vector:
        """The matrix rows scaled to length 1 (read-only; an all-zero row stays zero), made
        on first use (analogies score in bulk with them) and kept."""
        if self._unit_rows is None:
            self._unit_rows = np.multiply(self._rows, self._scale[:, None], dtype=np.float32)
            self._unit_rows.flags.writeable = False
        return self._unit_rows

    def _unit_of(self, rows: int | list[int]) -> Vector:
        """Rows of :attr:`unit`, without making all of it."""
        picked = np.asarray(self._rows[rows], dtype=np.float32)
        scale = self._scale[rows]
        return picked * (scale[:, None] if picked.ndim == 2 else scale)

    def row(self, token: str) -> int | None:
        """Return the row of ``token`` (the first, if it is listed twice), or None if none."""
        return self._row.get(token)

    # -- looking words up --------------------------------------------------------------------

    def lookup(self, word: str) -> Lookup:
        """Return the vector for ``word``: its token's, or the mean of the pieces it splits into.

        Tried in order: ``word`` as a token, ``"▁" + word``, then a greedy longest-match-first
        split of each whitespace-separated part (see :meth:`split`). Raises NotInVocabulary when
        none works.
        """
        if not isinstance(word, str):
            raise TypeError(f"lookup takes a str, got {type(word).__name__}")
        if word:
            for token in (word, WORD_START + word):
                if token in self._row:
                    vector = self._unit_of(self._row[token])
                    return Lookup(query=word, vector=vector, pieces=(token,), pooled=False)
        pieces = self.split(word)
        if pieces is None:
            if not word.strip():
                raise NotInVocabulary(
                    f"The query {word!r} is empty; type a word or token to look up."
                )
            rows = str(self.matrix.rows_are)
            raise NotInVocabulary(
                f"'{word}' is not in the vocabulary of this matrix ({len(self):,} {rows}) "
                f"and cannot be pieced together from its {rows}."
            )
        rows = [self._row[p] for p in pieces]
        vector = self._unit_of(rows).mean(axis=0, dtype=np.float32)
        return Lookup(query=word, vector=vector, pieces=pieces, pooled=len(pieces) > 1)

    def split(self, word: str) -> tuple[str, ...] | None:
        """Return the tokens that spell ``word`` (greedy longest match first), or None.

        Each whitespace-separated part is split on its own. The first piece of a part is the
        text itself or ``"▁" + text``; a later piece is the text or ``"##" + text`` — the bare
        text first for CJK characters (BERT splits Chinese into single characters, whose bare
        tokens are the trained ones), ``"##"`` first otherwise (as WordPiece does).
        """
        pieces: list[str] = []
        for part in word.split():
            start = 0
            while start < len(part):
                for end in range(min(len(part), start + self._longest_piece), start, -1):
                    token = self._known_piece(part[start:end], first=start == 0)
                    if token is not None:
                        pieces.append(token)
                        start = end
                        break
                else:
                    return None
        return tuple(pieces) or None

    def _known_piece(self, text: str, *, first: bool) -> str | None:
        if first:
            candidates = (text, WORD_START + text)
        elif is_cjk_char(text[0]):
            candidates = (text, CONTINUATION + text)
        else:
            candidates = (CONTINUATION + text, text)
        for token in candidates:
            if token in self._row:
                return token
        return None

    def _query(self, query: Query) -> tuple[Vector, tuple[str, ...]]:
        """Return (unit vector, tokens to leave out of the answers) for a word or a vector."""
        if isinstance(query, str):
            found = self.lookup(query)
            return _unit(found.vector), found.pieces
        vector = np.asarray(query, dtype=np.float32)
        dims = self._rows.shape[1]
        if vector.shape != (dims,):
            raise BadConfig(
                f"The query vector has shape {vector.shape}, but this matrix has {dims} dims; "
                f"pass a vector of shape ({dims},)."
            )
        return _unit(vector), ()

    def _rows_of(self, tokens: Iterable[str]) -> set[int]:
        rows: set[int] = set()
        for token in tokens:
            if token in self._row:
                rows.add(self._row[token])
                rows.update(self._more_rows.get(token, ()))
        return rows

    def _best(
        self,
        scores: Vector,
        k: int,
        excluded: set[int],
        only: npt.NDArray[np.bool_] | None = None,
    ) -> list[Neighbour]:
        """The ``k`` best-scoring rows not in ``excluded`` (and where ``only`` is True, when
        given), best first (ties: lower row first)."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise BadConfig(f"k = {k!r}: ask for at least 1 neighbour.")
        scores = np.array(scores, dtype=np.float32)
        if only is not None:
            excluded = excluded | set(np.flatnonzero(~only).tolist())
        if excluded:
            scores[list(excluded)] = -np.inf
        k = min(int(k), scores.shape[0] - len(excluded))
        if k <= 0:
            return []
        if k < scores.shape[0]:
            rows = np.argpartition(-scores, k - 1)[:k]
        else:
            rows = np.arange(scores.shape[0])
        rows = rows[np.lexsort((rows, -scores[rows]))]
        vocab = self.matrix.vocab
        return [Neighbour(vocab[i], float(scores[i])) for i in rows]

    def _cosines(self, unit: Vector) -> Vector:
        return np.clip((self._rows @ unit) * self._scale, -1.0, 1.0)

    # -- questions ---------------------------------------------------------------------------

    def top_k(
        self,
        query: Query,
        k: int = 10,
        *,
        exclude: Iterable[str] = (),
        only: npt.NDArray[np.bool_] | None = None,
    ) -> list[Neighbour]:
        """Return the ``k`` tokens closest to ``query`` by cosine, closest first.

        ``query`` is a word (looked up as in :meth:`lookup`; its own token, or its pieces when
        pooled, are left out) or a vector of the matrix's width. ``exclude`` names more tokens to
        leave out; ``only`` (a mask over rows, e.g. :meth:`cjk_rows`) keeps the rest out.
        Asking for more than there are returns all of them.
        """
        unit, own = self._query(query)
        excluded = self._rows_of(own) | self._rows_of(exclude)
        return self._best(self._cosines(unit), k, excluded, only)

    def cjk_rows(self) -> npt.NDArray[np.bool_]:
        """A mask of the Chinese rows (``tokens.chinese_rows``: CJK characters, marker aside,
        and no ``##好`` or ``▁好`` twin of a ``好`` row)."""
        if self._cjk is None:
            self._cjk = chinese_rows(self.matrix.vocab)
        return self._cjk

    def similarity(self, a: Query, b: Query) -> float:
        """Return the cosine of two words or vectors, in [-1, 1] (0 for a zero vector)."""
        ua, _ = self._query(a)
        ub, _ = self._query(b)
        return float(np.clip(np.dot(ua, ub), -1.0, 1.0))

    def analogy(
        self,
        a: str,
        b: str,
        c: str,
        k: int = 10,
        *,
        only: npt.NDArray[np.bool_] | None = None,
    ) -> list[Neighbour]:
        """Answer "a is to b as c is to ?" by 3CosAdd: the tokens closest to b - a + c.

        Uses unit vectors (Mikolov et al. 2013; Levy & Goldberg 2014); a, b and c (or their
        pieces) are left out, and rows outside ``only`` (as in :meth:`top_k`). Scores are
        cosines to b - a + c.
        """
        (ua, pa), (ub, pb), (uc, pc) = self._query(a), self._query(b), self._query(c)
        target = _unit(ub - ua + uc)
        excluded = self._rows_of(pa + pb + pc)
        return self._best(self._cosines(target), k, excluded, only)

    def analogy_3cosmul(
        self, a: str, b: str, c: str, k: int = 10, *, epsilon: float = 1e-3
    ) -> list[Neighbour]:
        """Answer "a is to b as c is to ?" by 3CosMul (Levy & Goldberg 2014).

        Score = cos'(x, b) * cos'(x, c) / (cos'(x, a) + epsilon), where cos' = (cos + 1) / 2
        shifts cosines to [0, 1]. a, b and c (or their pieces) are left out.
        """
        (ua, pa), (ub, pb), (uc, pc) = self._query(a), self._query(b), self._query(c)
        to_a, to_b, to_c = ((self._cosines(u) + 1.0) / 2.0 for u in (ua, ub, uc))
        scores = to_b * to_c / (to_a + np.float32(epsilon))
        excluded = self._rows_of(pa + pb + pc)
        return self._best(scores, k, excluded)

    def highlight(
        self, query: str, k: int = 10, *, only: npt.NDArray[np.bool_] | None = None
    ) -> dict[int, str]:
        """Rows to mark on a map for ``query``: its own token(s) and its ``k`` neighbours
        (among the ``only`` rows, as in :meth:`top_k`)."""
        found = self.lookup(query)
        rows = {self._row[p]: p for p in found.pieces}
        if k > 0:
            for n in self.top_k(query, k=k, only=only):
                rows[self._row[n.token]] = n.token
        return rows
