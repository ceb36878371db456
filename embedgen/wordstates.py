"""Word vectors kept for ``aggregated`` matrices from the ``head`` strategy's encoding pass.

The ``head`` strategy reads every text of the data once through the frozen encoder
(:mod:`embedgen.features`). An ``aggregated`` matrix over the same data reads the same texts
again, to average each word's contextual vectors over its first occurrences. So while the head
pass has a batch's last-layer states in hand, it also keeps, for every word jieba finds in the
data, the sum of its vectors over its first :data:`PER_WORD` occurrences (the tokens that
overlap the word's characters, lone ``▁`` left out: what
:func:`embedgen.matrix.contexts.context_vectors` takes). They go into the feature cache entry
beside the features::

    <feature key>/words-<corpus sha256, 16 digits>-k8.npz
        words   every word of the data jieba found (its segments with a letter or digit)
        sums    float32, words x hidden: the sum of its vectors over its read occurrences
        counts  how many occurrences each sum holds
        cut     per distinct text: its words were not read (the run cut it at its max
                length, or an earlier pass of a resumed encoding read it)

A matrix built from the run over the same data (same texts, same weights and number format, the
last layer, :data:`PER_WORD` corpus contexts, a context length of at least the run's max length,
no user dictionary) takes those sums, and reads again only the occurrences in the texts the run
cut: reading them whole would give other states. The rows equal those of reading everything
again (to float rounding; tested). Anything else reads the corpus as before. A run that found
part of its features in the cache (a cancelled first run) encodes only the rest: its states hold
the texts it read, and the matrix reads the others' contexts itself. A run that found all of
them reads nothing and keeps the states an earlier run kept, if any.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedgen.atomic import atomic_path
from embedgen.features import FeatureCache, feature_key
from embedgen.models import Encoder
from embedgen.states import span_mean
from embedgen.train import Run
from embedgen.train.config import Strategy
from embedgen.train.encode import BatchStates, Reading
from embedgen.words import (
    LONE_MARKER,
    Context,
    Corpus,
    corpus_contexts,
    is_word,
    word_spans,
)

log = logging.getLogger(__name__)

PER_WORD = 8  # the aggregated method's default corpus contexts per word (MatrixOptions)
FORMAT = 1


def states_file(folder: Path, corpus: Corpus) -> Path:
    """Where the word states of ``corpus`` live in the feature cache entry ``folder``."""
    return folder / f"words-{corpus.sha256[:16]}-k{PER_WORD}.npz"


@dataclass(frozen=True)
class WordStates:
    """Per word: the sum of its vectors over the occurrences read, and how many; per distinct
    text of the run: whether its occurrences were not read (the run cut it at its max length,
    or an earlier pass of a resumed encoding read it)."""

    words: tuple[str, ...]
    sums: np.ndarray  # float32, words x hidden
    counts: np.ndarray  # int64
    cut: np.ndarray  # bool, one per distinct text
    max_length: int

    @property
    def row(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            with tmp.open("wb") as f:
                np.savez(
                    f,
                    format=np.int64(FORMAT),
                    words=np.array(self.words, dtype=np.str_),
                    sums=self.sums.astype(np.float32),
                    counts=self.counts.astype(np.int64),
                    cut=self.cut.astype(bool),
                    max_length=np.int64(self.max_length),
                )

    def split(
        self, words: Sequence[str], contexts: Sequence[Context], corpus: Corpus
    ) -> tuple[tuple[np.ndarray, np.ndarray], list[Context]]:
        """For ``words`` (rows) and their corpus ``contexts``: the kept (sums, counts) per row,
        and the contexts still to read (in texts the run cut, or of words it did not keep)."""
        row = self.row
        at = np.array([row.get(w, -1) for w in words], dtype=np.int64)
        have = at >= 0
        sums = np.zeros((len(words), self.sums.shape[1]), dtype=np.float64)
        counts = np.zeros(len(words), dtype=np.int64)
        sums[have] = self.sums[at[have]]
        counts[have] = self.counts[at[have]]
        position = {text: i for i, text in enumerate(dict.fromkeys(corpus.texts))}
        again = [c for c in contexts if not have[c.row] or self.cut[position[c.text]]]
        return (sums, counts), again

    @classmethod
    def load(cls, path: Path, *, texts: int, hidden: int) -> WordStates | None:
        """The states in ``path``; None when it is missing, damaged or of another shape."""
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                found = cls(
                    words=tuple(str(w) for w in z["words"]),
                    sums=z["sums"],
                    counts=z["counts"],
                    cut=z["cut"],
                    max_length=int(z["max_length"]),
                )
                ok = int(z["format"]) == FORMAT
        except (OSError, ValueError, KeyError, EOFError) as exc:
            log.warning("Word states %s are damaged (%s); reading the corpus instead", path, exc)
            return None
        n = len(found.words)
        if not ok or found.sums.shape != (n, hidden) or found.counts.shape != (n,):
            return None
        if found.cut.shape != (texts,):
            return None
        return found


class Collector:
    """Gathers :class:`WordStates` batch by batch while the head pass reads the texts.

    ``all_texts`` are the data's texts in order with repeats (a word's first occurrences are
    counted over them, as :func:`embedgen.words.corpus_contexts` does); ``distinct`` are the
    texts the head pass reads, each once. :meth:`add` may be called from several threads.
    """

    def __init__(
        self,
        tokenizer: Any,
        all_texts: Sequence[str],
        distinct: Sequence[str],
        max_length: int,
        hidden: int,
    ) -> None:
        self.corpus = Corpus.of(all_texts, "run data")
        seen: dict[str, None] = {}
        for segments in self.corpus.segments:
            for word, _, _ in segments:
                if is_word(word, cjk=False):
                    seen.setdefault(word)
        self.words = tuple(seen)
        position = {text: i for i, text in enumerate(distinct)}
        self.plan: dict[int, list[Context]] = {}
        for c in corpus_contexts(self.words, self.corpus, per_word=PER_WORD):
            self.plan.setdefault(position[c.text], []).append(c)
        self.distinct = distinct
        self.max_length = max_length
        self.lone = tokenizer.get_vocab().get(LONE_MARKER)
        self.sums = np.zeros((len(self.words), hidden), dtype=np.float64)
        self.counts = np.zeros(len(self.words), dtype=np.int64)
        self.cut = np.zeros(len(distinct), dtype=bool)
        self.read = np.zeros(len(distinct), dtype=bool)
        self._lock = threading.Lock()

    def add(
        self,
        positions: Sequence[int],
        states: torch.Tensor,
        ids: Sequence[Sequence[int]],
        offsets: Sequence[Sequence[tuple[int, int]]],
        special: Sequence[Sequence[int]],
    ) -> None:
        """Take the words of the distinct texts at ``positions`` from their last-layer
        ``states`` (batch x width x hidden, row j for positions[j]); ``ids``, ``offsets`` and
        ``special`` are each text's tokens as read (cut at the max length). A text already
        taken is skipped (a batch read again after an out-of-memory error counts once)."""
        with self._lock:
            fresh = [(j, p) for j, p in enumerate(positions) if not self.read[p]]
            self.read[[p for _, p in fresh]] = True
        spans, rows, cut = [], [], []
        for j, p in fresh:
            # Cut when text is left after the last token read. (Trailing characters that make
            # no token count as cut too: those texts are read again, which is only slower.)
            tokens = zip(offsets[j], special[j], strict=True)
            read_to = max((end for (_, end), s in tokens if not s), default=0)
            if read_to < len(self.distinct[p].rstrip()):
                cut.append(p)
                continue
            found = word_spans(ids[j], offsets[j], special[j], self.plan.get(p, ()), self.lone)
            for c, pos in found:
                spans.append((j, pos))
                rows.append(c.row)
        vectors = span_mean(states, spans).float().cpu().numpy() if spans else None
        with self._lock:
            self.cut[cut] = True
            if vectors is not None:
                np.add.at(self.sums, rows, vectors.astype(np.float64))
                np.add.at(self.counts, rows, 1)

    def result(self) -> WordStates | None:
        """The states of the texts read, the others counted with the cut ones (a matrix reads
        their contexts itself); None when no text was read."""
        if not self.read.any():
            return None
        return WordStates(
            words=self.words,
            sums=self.sums.astype(np.float32),
            counts=self.counts,
            cut=self.cut | ~self.read,
            max_length=self.max_length,
        )


class WordStateHook:
    """Keeps the word states of a ``head`` run's encoding pass: a
    :class:`~embedgen.train.encode.StatesHook` that ``runs.train_and_save`` plugs into
    training, which knows nothing of words."""

    def __init__(self) -> None:
        self.collector: Collector | None = None
        self.reading: Reading | None = None

    def start(self, reading: Reading) -> bool:
        """Collect when the states can be kept: one process, fp32 or bf16 (an int8 copy's
        states would not match an aggregated matrix's), a fast tokenizer (offsets), and texts
        to read. A pass that resumes (an earlier one was cancelled or stopped, its chunks kept)
        reads only the rest: the states hold those texts, and the texts read before count as
        not read (a matrix reads their contexts itself). States already kept stay."""
        cache = reading.cache
        if (
            cache is None
            or cache.budget <= 0
            or reading.int8
            or reading.processes > 1
            or not getattr(reading.encoder.tokenizer, "is_fast", False)
            or cache.has_chunks(reading.key, every=True)
        ):
            return False
        corpus = Corpus.of(reading.all_texts, "run data")
        if states_file(cache.folder(reading.key), corpus).exists():
            return False
        started = time.perf_counter()
        self.reading = reading
        self.collector = Collector(
            reading.encoder.tokenizer,
            reading.all_texts,
            reading.texts,
            reading.max_length,
            reading.encoder.info.hidden_size,
        )
        log.info(
            "Word states: %d words of the data segmented in %.1f s",
            len(self.collector.words),
            time.perf_counter() - started,
        )
        return True

    def take(self, batch: BatchStates) -> None:
        assert self.collector is not None
        self.collector.add(batch.positions, batch.states, batch.ids, batch.offsets, batch.special)

    def finish(self) -> None:
        """Write the states into the feature cache entry, beside its chunks, when every text
        was read and cached in this pass."""
        if self.collector is None or self.reading is None or self.reading.cache is None:
            return
        cache, key = self.reading.cache, self.reading.key
        states = self.collector.result()
        folder = cache.folder(key)
        if states is None or not cache.has_chunks(key, every=True):
            log.info("Word states not kept: not every text was read and cached")
            return
        if cache.room_for(states.sums.nbytes, folder):
            states.save(states_file(folder, self.collector.corpus))
            log.info(
                "Word states kept: %d words, %d occurrences read, %d texts cut at %d tokens "
                "or read by an earlier pass",
                len(states.words),
                int(states.counts.sum()),
                int(states.cut.sum()),
                states.max_length,
            )


def kept_states(
    run: Run,
    encoder: Encoder,
    corpus: Corpus,
    *,
    corpus_contexts: int,
    context_tokens: int,
    layers: tuple[int, int],
    device: torch.device,
) -> WordStates | None:
    """The word states ``run``'s head pass kept of ``corpus``, when an ``aggregated`` matrix
    reading up to ``corpus_contexts`` occurrences of a word, ``context_tokens`` tokens each, at
    ``layers``, by ``encoder`` on ``device``, can take them as its corpus contexts; else None
    (the matrix reads the corpus itself)."""
    cfg = run.config
    last = encoder.info.num_layers
    if (
        cfg.strategy is not Strategy.HEAD
        or run.encoder_changed
        or cfg.max_length is None
        or corpus.user_dict is not None
        or corpus_contexts != PER_WORD
        or layers != (last, last)
        or context_tokens < cfg.max_length
    ):
        return None
    cache = FeatureCache()
    if cache.budget <= 0:
        return None
    distinct = list(dict.fromkeys(corpus.texts))
    key = feature_key(
        encoder, distinct, max_length=cfg.max_length, pooling=cfg.pooling, device=device
    )
    path = states_file(cache.folder(key), corpus)
    found = WordStates.load(path, texts=len(distinct), hidden=encoder.info.hidden_size)
    if found is not None and found.max_length == cfg.max_length:
        log.info("Word states of the run's head pass found: %s", path)
        return found
    return None
