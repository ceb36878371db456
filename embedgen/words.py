"""Words as matrix rows: word vocabularies, a word's pieces, and the contexts it is read in.

Analysts think in words (外卖, 送餐, 性价比); a model's rows are tokens (characters for
bert-base-chinese, SentencePiece pieces for XLM-R). This module makes the rows words:

- **vocabularies** (:class:`WordVocab`): the words of the user's corpus, segmented with jieba
  (an optional user dictionary; a minimum count; the top N), or a word list (one per line);
- **pieces** (:func:`word_pieces`): the tokens a word splits into;
- **contexts** (:class:`Context`): a word's occurrences in the corpus
  (:func:`corpus_contexts`) and in short generated sentences (:func:`generated_contexts`), and
  which of a text's tokens cover it (:func:`word_spans`).

A word's vector by each method is the matrix's to build (``embedgen.matrix``: ``tables``,
``contextual``, ``aggregated``).

A SentencePiece tokenizer splits 好 into ``▁`` + ``好``: the lone ``▁`` carries no meaning of
the word, and pooling it in cost 12–17 Spearman points on wordsim sets, so it is left out of
every pool (kept only when it is a word's one piece).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedgen.errors import BadConfig, BadTable
from embedgen.fields import check, setting
from embedgen.table import SEGMENT_CHARS, read_bytes
from embedgen.tokens import is_cjk_char

log = logging.getLogger(__name__)

LONE_MARKER = "\u2581"  # SentencePiece's word start on its own: not part of a word's meaning


@dataclass(frozen=True)
class WordOptions:
    """How a word vocabulary is made from a corpus."""

    min_count: int = setting(
        2, "minimum count", low=1, high=1_000_000, help="corpus words seen fewer times are left out"
    )
    top_n: int | None = setting(
        None,
        "most frequent words",
        low=1,
        high=10_000_000,
        whole=True,
        help="keep only this many of the corpus's most frequent words (default: all)",
    )
    cjk_words: bool = setting(
        True,
        "Chinese words only",
        flag="--any-words",
        negated_flag=True,
        help="corpus words with at least one CJK character (no numbers, Latin or punctuation)",
    )

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class WordVocab:
    """The words that become matrix rows, in row order, and where they came from.

    ``counts[i]`` is how often ``words[i]`` occurs in the corpus (0 for a listed word the
    corpus never holds, or when there is no corpus); ``record`` goes into the manifest.
    """

    words: tuple[str, ...]
    counts: tuple[int, ...]
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.words:
            raise BadConfig("The word list is empty; give at least one word.")
        if len(self.counts) != len(self.words):
            raise ValueError(f"{len(self.words)} words but {len(self.counts)} counts")

    def __len__(self) -> int:
        return len(self.words)


@dataclass(frozen=True)
class Corpus:
    """The user's texts that words are counted in and read in context from."""

    texts: tuple[str, ...]
    name: str
    sha256: str
    user_dict: str | None = None  # a jieba user dictionary the corpus is segmented with

    @classmethod
    def of(
        cls,
        texts: Sequence[str],
        name: str,
        *,
        user_dict: str | os.PathLike[str] | None = None,
    ) -> Corpus:
        """``texts`` as a corpus called ``name``; the hash covers the texts in order."""
        digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
        return cls(tuple(texts), name, digest, str(user_dict) if user_dict else None)

    def segmenter(self) -> Any:
        """The jieba tokenizer this corpus is segmented with."""
        return segmenter(self.user_dict)

    @functools.cached_property
    def segments(self) -> tuple[tuple[tuple[str, int, int], ...], ...]:
        """Each text's words with their character spans, segmented once and kept."""
        seg = self.segmenter()
        return tuple(tuple(segment(seg, text)) for text in self.texts)

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "texts": len(self.texts),
            "segmenter": "jieba",
            "user_dict": Path(self.user_dict).name if self.user_dict else None,
        }


# --------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------


def segmenter(user_dict: str | os.PathLike[str] | None = None) -> Any:
    """A jieba tokenizer of our own (the global one is left alone), with ``user_dict`` loaded.

    A user dictionary has one word per line, optionally followed by a frequency and a part of
    speech, as jieba reads it. One tokenizer per dictionary is made and kept: building one
    reads jieba's dictionary, about a second.
    """
    return _segmenter(str(user_dict) if user_dict is not None else None)


@functools.lru_cache(maxsize=8)
def _segmenter(user_dict: str | None) -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    if user_dict is not None:
        path = Path(user_dict)
        if not path.is_file():
            raise BadTable(f"{path.name}: no such user dictionary ({path}). Check the path.")
        try:
            tokenizer.load_userdict(str(path))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadTable(
                f"{path.name} is not a user dictionary jieba can read ({exc}): save it as UTF-8, "
                "one word per line, optionally followed by a count and a part of speech."
            ) from exc
    return tokenizer


class WordSplitter:
    """A corpus's segmenter as a tokenizer: ``tokenize(text)`` gives its words (for
    ``embedgen.tokenstats.token_stats``, so words get label statistics as tokens do)."""

    def __init__(self, corpus: Corpus) -> None:
        self._seg = corpus.segmenter()

    def tokenize(self, text: str) -> list[str]:
        return [w for w, _, _ in segment(self._seg, text) if w.strip()]


_BREAKS = re.compile(r"[\s，。！？；、,.!?;:：…）)\]】」』]")


def pieces(text: str, size: int = SEGMENT_CHARS) -> list[tuple[int, str]]:
    """``text`` as (start, piece) of at most ``size`` characters, each cut after the last space
    or punctuation in its second half, or at ``size`` when there is none."""
    out, start = [], 0
    while len(text) - start > size:
        window = text[start + size // 2 : start + size]
        breaks = [m.end() for m in _BREAKS.finditer(window)]
        end = start + size // 2 + breaks[-1] if breaks else start + size
        out.append((start, text[start:end]))
        start = end
    out.append((start, text[start:]))
    return out


def segment(seg: Any, text: str) -> list[tuple[str, int, int]]:
    """jieba's words of ``text`` with their character spans; a text longer than SEGMENT_CHARS
    is segmented piece by piece (:func:`pieces`), so its cost grows with its length only."""
    if len(text) <= SEGMENT_CHARS:
        return list(seg.tokenize(text))
    return [
        (word, begin + start, end + start)
        for start, piece in pieces(text)
        for word, begin, end in seg.tokenize(piece)
    ]


def is_word(text: str, *, cjk: bool) -> bool:
    """Whether a segment is a word worth a row: not blank, and with a CJK character if ``cjk``."""
    if not text.strip():
        return False
    if cjk:
        return any(is_cjk_char(c) for c in text)
    return any(c.isalnum() for c in text)


def words_from_corpus(corpus: Corpus, options: WordOptions | None = None) -> WordVocab:
    """The corpus's words, most frequent first, by ``options`` (minimum count, top N, CJK)."""
    options = options or WordOptions()
    texts, name = corpus.texts, corpus.name
    counts: Counter[str] = Counter()
    for words in corpus.segments:
        counts.update(w for w, _, _ in words if is_word(w, cjk=options.cjk_words))
    kept = [(w, n) for w, n in counts.most_common() if n >= options.min_count]
    rare = len(counts) - len(kept)
    if options.top_n is not None:
        kept = kept[: options.top_n]
    if not kept:
        raise BadConfig(
            f"{name}: no word occurs {options.min_count} times or more "
            f"({len(counts)} distinct words in {len(texts)} texts). Lower the minimum count."
        )
    record = {
        "source": "corpus",
        "corpus": corpus.record(),
        "distinct_words": len(counts),
        "below_min_count": rare,
        "min_count": options.min_count,
        "top_n": options.top_n,
        "cjk_words": options.cjk_words,
        "words": len(kept),
    }
    log.info(
        "%s: %d distinct words, %d kept (min count %d%s)",
        name,
        len(counts),
        len(kept),
        options.min_count,
        f", top {options.top_n}" if options.top_n else "",
    )
    return WordVocab(tuple(w for w, _ in kept), tuple(n for _, n in kept), record)


def dictionary_words(top_n: int, *, exclude: Iterable[str] = ()) -> WordVocab:
    """The ``top_n`` most frequent Chinese words of jieba's own dictionary (349k entries with
    frequencies from a large general corpus), leaving out ``exclude``.

    Common words with no corpus of one's own: a general vocabulary to search among, e.g. for
    analogy answers, so that a benchmark's own words are not the only candidates.
    """
    if top_n < 1:
        raise BadConfig("The number of dictionary words must be at least 1.")
    import jieba

    skip = set(exclude)
    entries: list[tuple[int, str]] = []
    with jieba.get_dict_file() as f:
        for line in f.read().decode("utf-8").splitlines():
            parts = line.split(" ")
            if len(parts) >= 2 and parts[1].isdigit() and parts[0] not in skip:
                if is_word(parts[0], cjk=True) and all(is_cjk_char(c) for c in parts[0]):
                    entries.append((int(parts[1]), parts[0]))
    # Most frequent first; ties in dictionary order, so the list is the same on every machine.
    entries.sort(key=lambda e: -e[0])
    kept = entries[:top_n]
    record = {
        "source": "dictionary",
        "dictionary": "jieba",
        "top_n": top_n,
        "words": len(kept),
        "excluded": len(skip),
    }
    log.info("jieba's dictionary: the %d most frequent Chinese words", len(kept))
    return WordVocab(tuple(w for _, w in kept), (0,) * len(kept), record)


def words_from_list(
    source: str | os.PathLike[str] | bytes | Iterable[str], *, name: str | None = None
) -> WordVocab:
    """Words from a file or text, one per line, in order; blank lines and repeats are left out
    and counted. A tab ends the word (so a word-and-count file works too)."""
    if isinstance(source, bytes | os.PathLike):
        raw, name = read_bytes(source, name)
        lines = _decode_lines(raw, name)
    elif isinstance(source, str):
        name = name or "word list"
        lines = source.splitlines()
    else:
        name = name or "word list"
        lines = list(source)
    words: list[str] = []
    seen: set[str] = set()
    blank = repeated = 0
    for line in lines:
        word = line.split("\t", 1)[0].strip()
        if not word:
            blank += 1
        elif word in seen:
            repeated += 1
        else:
            seen.add(word)
            words.append(word)
    if not words:
        raise BadTable(f"{name} holds no words. Put one word per line.")
    record = {
        "source": "list",
        "list": name,
        "sha256": hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest(),
        "words": len(words),
        "blank_lines": blank,
        "repeats_left_out": repeated,
    }
    if repeated:
        log.info("%s: %d repeated words left out", name, repeated)
    return WordVocab(tuple(words), (0,) * len(words), record)


def _decode_lines(raw: bytes, name: str) -> list[str]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadTable(
            f"{name}: the word list is not UTF-8 (byte {exc.start}). Save it as UTF-8 text."
        ) from None
    return text.splitlines()


def count_in(vocab: WordVocab, corpus: Corpus) -> WordVocab:
    """``vocab`` with each word's count in ``corpus`` (segmented as for a corpus vocabulary)."""
    wanted = set(vocab.words)
    counts: Counter[str] = Counter()
    for words in corpus.segments:
        counts.update(w for w, _, _ in words if w in wanted)
    return WordVocab(vocab.words, tuple(counts[w] for w in vocab.words), vocab.record)


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------


def word_pieces(tokenizer: Any, words: Sequence[str]) -> list[list[int]]:
    """The token ids each word splits into, without special tokens and without a lone ``▁``
    (kept only when it is the word's one piece). A word the tokenizer drops whole (a
    replacement character "\ufffd", a control character) is its unknown token, so that every
    word has a piece to be read by."""
    encoded = tokenizer(list(words), add_special_tokens=False)["input_ids"]
    lone = tokenizer.get_vocab().get(LONE_MARKER)
    unknown = [tokenizer.unk_token_id] if tokenizer.unk_token_id is not None else []
    pieces = []
    for ids in encoded:
        kept = [i for i in ids if i != lone] if lone is not None else list(ids)
        pieces.append(kept or list(ids) or unknown)
    return pieces


# --------------------------------------------------------------------------------------------
# Contextual vectors: the word alone, and the word in the corpus
# --------------------------------------------------------------------------------------------


def word_spans(
    ids: Sequence[int],
    offsets: Sequence[Sequence[int]],
    special: Sequence[int],
    contexts: Iterable[Context],
    lone: int | None,
) -> list[tuple[Context, list[int]]]:
    """For the ``contexts`` of one tokenised text, the positions of the tokens that overlap
    each one's word (special tokens and a lone ``▁`` left out); a context whose word the
    tokens do not reach (cut off) is left out."""
    real = [k for k in range(len(ids)) if not special[k] and ids[k] != lone]
    found = []
    for c in contexts:
        pos = [k for k in real if offsets[k][0] < c.end and offsets[k][1] > c.start]
        if pos:
            found.append((c, pos))
    return found


@dataclass(frozen=True)
class Context:
    """A text in which row ``row``'s word stands at characters ``start`` to ``end``."""

    text: str
    start: int
    end: int
    row: int


def corpus_contexts(
    words: Sequence[str], corpus: Corpus, *, per_word: int, window: int = 0
) -> list[Context]:
    """Up to ``per_word`` occurrences of each word in the corpus, as jieba segments it (a word
    inside a longer segment does not count), in text order; each in its whole text (``window``
    0) or in the piece of at most ``window`` characters around it (:func:`windows`)."""
    row = {w: i for i, w in enumerate(words)}
    taken = [0] * len(words)
    open_rows = len(words)
    found = []
    for text, segments in zip(corpus.texts, corpus.segments, strict=True):
        cuts = windows(text, segments, window)
        piece = 0
        for word, start, end in segments:
            while cuts[piece][1] < end:
                piece += 1
            i = row.get(word)
            if i is not None and taken[i] < per_word:
                begin, stop = cuts[piece]
                found.append(Context(text[begin:stop], start - begin, end - begin, i))
                taken[i] += 1
                if taken[i] == per_word:
                    open_rows -= 1
        if open_rows == 0:
            break
    return found


def windows(
    text: str, segments: Sequence[tuple[str, int, int]], size: int
) -> list[tuple[int, int]]:
    """``text`` cut into (start, end) pieces of at most ``size`` characters (0: one piece), cut
    only between words: after the last space or punctuation in a piece's second half, else
    after the piece's last whole word; a word longer than ``size`` is a piece of its own."""
    if size <= 0 or len(text) <= size:
        return [(0, len(text))]
    cuts = sorted({0, len(text), *(s for _, s, _ in segments), *(e for _, _, e in segments)})
    out, start, at = [], 0, 0  # cuts[at] == start
    while len(text) - start > size:
        last = bisect.bisect_right(cuts, start + size) - 1
        if last == at:  # one word longer than the piece
            end = cuts[at + 1]
        else:
            half = bisect.bisect_left(cuts, start + size // 2)
            ends = [c for c in cuts[half : last + 1] if _BREAKS.match(text, c - 1)]
            end = ends[-1] if ends else cuts[last]
        out.append((start, end))
        start, at = end, bisect.bisect_left(cuts, end)
    if start < len(text):
        out.append((start, len(text)))
    return out


# Short neutral sentences a word is read in when the corpus does not hold it (and, averaged with
# the corpus's contexts, when it does), so every word's vector comes from contexts and the
# cosines of seen and unseen words compare. Ordered: the first four gave wordsim-240/297 63.2 /
# 64.8 on multilingual-e5-small, all eight 63.8 / 65.0, at twice the cost (BENCHMARKS.md).
TEMPLATES = (
    "这是{}。",
    "关于{}的事情",
    "他提到了{}。",
    "我们在讨论{}。",
    "{}",
    "我说的是“{}”。",
    "{}这个词。",
    "{}很重要。",
)


def generated_contexts(words: Sequence[str], per_word: int) -> list[Context]:
    """Each word in the first ``per_word`` of :data:`TEMPLATES`."""
    if not 0 <= per_word <= len(TEMPLATES):
        raise BadConfig(f"Generated contexts per word must be 0 to {len(TEMPLATES)}.")
    out = []
    for i, word in enumerate(words):
        for template in TEMPLATES[:per_word]:
            start = template.index("{}")
            out.append(Context(template.replace("{}", word), start, start + len(word), i))
    return out
