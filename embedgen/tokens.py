"""Which of a model's tokens become matrix rows: special, unused, CJK-only and ``##`` filters.

Also the small facts about token strings the rest of the library needs: subword markers
(``##``, ``▁``, ``Ġ``), CJK characters, and the Japanese forms a Chinese reader leaves out.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedgen.errors import BadConfig

_UNUSED = re.compile(r"^(\[unused\d+\]|<unused\d+>|\[UNUSED_?\d+\])$", re.IGNORECASE)
_MARKERS = ("##", "\u2581", "\u0120")  # WordPiece continuation, SentencePiece / byte-BPE word start


def is_cjk_char(ch: str) -> bool:
    """True for CJK unified ideographs (all extensions) and compatibility ideographs."""
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x323AF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


# Chinese writing's character standards: simplified (GB2312), traditional (Big5 and Microsoft's
# Big5). Not HKSCS: beside Cantonese characters (no Shift-JIS ones, so they stay) it holds
# Japanese forms (円, 込, 駅, 働).
_CHINESE_CODECS = ("gb2312", "big5", "cp950")


@functools.lru_cache(maxsize=65_536)
def is_japanese_form(ch: str) -> bool:
    """True for a kanji form of Japanese writing that Chinese writing does not use: in
    Shift-JIS (cp932) and in neither GB2312 nor Big5 (乗 for 乘, 円, 駅, 込, 黒). Rare Chinese
    characters outside those standards (啰, 祎, 镕) are no Shift-JIS characters and stay
    Chinese; a few variants that Hong Kong also writes (衆, 綫, 邨) count as Japanese."""
    if not is_cjk_char(ch) or not _encodes(ch, "cp932"):
        return False
    return not any(_encodes(ch, codec) for codec in _CHINESE_CODECS)


def _encodes(ch: str, codec: str) -> bool:
    try:
        ch.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def mostly_cjk(texts: Sequence[str], share: float = 0.5, sample: int = 2000) -> bool:
    """Whether at least ``share`` of (the first ``sample`` of) ``texts`` hold a CJK character."""
    seen = texts[:sample]
    if not seen:
        return False
    return sum(any(is_cjk_char(c) for c in t) for t in seen) >= share * len(seen)


def strip_marker(token: str) -> str:
    """The token's text without a subword marker (``##``, ``▁``, ``Ġ``)."""
    for m in _MARKERS:
        if token.startswith(m) and len(token) > len(m):
            return token[len(m) :]
    return token


def is_cjk_token(token: str) -> bool:
    """True when the token (marker stripped) is made of CJK characters only."""
    text = strip_marker(token)
    return bool(text) and all(is_cjk_char(c) for c in text)


def is_chinese_token(token: str) -> bool:
    """True when the token (marker stripped) is made of CJK characters, none of them a
    Japanese form (:func:`is_japanese_form`)."""
    return is_cjk_token(token) and not any(map(is_japanese_form, strip_marker(token)))


def chinese_rows(tokens: Sequence[str]) -> np.ndarray:
    """Which of ``tokens`` a reader of Chinese wants as rows, neighbours and points on a map:
    those made of CJK characters (a subword marker aside) with no Japanese form among them
    (``乗``, ``駅``) that are not the marked twin of another token (``##好`` or ``▁好`` beside
    ``好``: the same text, a second row that crowds neighbour lists). A marked token whose bare
    form is no token stays (``▁美`` alone)."""
    bare = {t for t in tokens if t and strip_marker(t) == t}
    return np.fromiter(
        (
            bool(t)
            and is_chinese_token(t)
            and (strip_marker(t) == t or strip_marker(t) not in bare)
            for t in tokens
        ),
        bool,
        len(tokens),
    )


def select_tokens(
    tokenizer: Any,
    rows: int,
    *,
    drop_special: bool = True,
    cjk_only: bool = False,
    drop_continuation: bool = False,
) -> tuple[list[int], dict[str, int]]:
    """Token ids of the ``rows`` embedding rows to keep (in id order), and what each rule removed.

    ``drop_special`` leaves out [CLS], [SEP], [PAD], [MASK], [UNK] and [unusedN] tokens;
    ``cjk_only`` keeps the Chinese tokens (:func:`chinese_rows`: CJK characters only, no
    Japanese form, and no ``##好`` or ``▁好`` beside ``好``); ``drop_continuation`` leaves out
    every "##x" piece.
    Rows beyond the tokenizer's vocabulary (models pad their embedding tables) have no token
    and are always left out.
    """
    n = min(rows, len(tokenizer))
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    special = set(tokenizer.all_special_ids or [])
    removed = {
        "beyond_tokenizer": rows - n,
        "special": 0,
        "unused": 0,
        "not_cjk": 0,
        "japanese_form": 0,
        "marked_twin": 0,
        "continuation": 0,
        "unnamed": 0,
    }
    chinese = chinese_rows([t or "" for t in tokens]) if cjk_only else None
    kept = []
    for i, tok in enumerate(tokens):
        if tok is None or tok == "":
            removed["unnamed"] += 1
        elif drop_special and i in special:
            removed["special"] += 1
        elif drop_special and _UNUSED.match(tok):
            removed["unused"] += 1
        elif drop_continuation and tok.startswith("##"):
            removed["continuation"] += 1
        elif chinese is not None and not is_cjk_token(tok):
            removed["not_cjk"] += 1
        elif chinese is not None and not is_chinese_token(tok):
            removed["japanese_form"] += 1
        elif chinese is not None and not chinese[i]:
            removed["marked_twin"] += 1
        else:
            kept.append(i)
    if not kept:
        raise BadConfig(
            f"No tokens are left after the filters ({describe_removed(removed)}). "
            "Turn off 'CJK only' for a model without Chinese tokens."
        )
    return kept, removed


def describe_removed(removed: dict[str, int]) -> str:
    """ "3 special, 2 unused" from the counts :func:`select_tokens` returns."""
    parts = [f"{v} {k.replace('_', ' ')}" for k, v in removed.items() if v]
    return ", ".join(parts) or "none removed"


def special_frame(tokenizer: Any) -> tuple[list[int], int]:
    """The special-token frame a text's ids sit in ([CLS] ... [SEP], <s> ... </s>) and where
    they go in it."""
    frame = tokenizer("", add_special_tokens=True)["input_ids"]
    if hasattr(frame, "tolist"):
        frame = frame.tolist()
    lead = 1 if frame and frame[0] in set(tokenizer.all_special_ids or []) and len(frame) > 1 else 0
    if (
        len(frame) == 1
        and tokenizer.bos_token_id is not None
        and frame[0] == tokenizer.bos_token_id
    ):
        lead = 1
    return list(frame), lead


@dataclass(frozen=True)
class TextLengths:
    """How long a data set's texts are in a tokenizer's tokens (special tokens included)."""

    texts: int  # texts measured (a seeded sample of at most ``sample``)
    p50: int
    p95: int
    longest: int
    suggested: int  # a max length that cuts about 5% of texts: p95 rounded up to a multiple of 8

    def describe(self) -> str:
        return (
            f"texts are {self.p50} tokens at the median, {self.p95} at the 95th percentile, "
            f"{self.longest} at most (of {self.texts:,} measured)"
        )


def max_positions(encoder: Any, default: int = 512) -> int:
    """The most tokens ``encoder`` (an :class:`~embedgen.models.Encoder`) reads in one text."""
    limit = getattr(encoder.tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:  # unknown limits are huge sentinels
        return limit
    positions = getattr(encoder.model.config, "max_position_embeddings", None)
    return int(positions) if positions else default


def text_lengths(
    tokenizer: Any, texts: Sequence[str], *, sample: int = 2000, limit: int = 512, seed: int = 0
) -> TextLengths:
    """The token-length distribution of ``texts`` and the max length it suggests.

    A padded batch costs as much as its longest text, and attention grows with the square of
    the length, so a max length far above what the texts need is wasted time; one below the
    95th percentile cuts off what many texts say. ``limit`` caps the suggestion (the model's
    positions); the suggestion is at least 16.
    """
    if not texts:
        raise BadConfig("No texts to measure.")
    rng = np.random.default_rng(seed)
    chosen = (
        list(texts)
        if len(texts) <= sample
        else [texts[i] for i in sorted(rng.choice(len(texts), sample, replace=False))]
    )
    ids = tokenizer(chosen, add_special_tokens=True, truncation=False)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    p50, p95 = (int(np.ceil(np.percentile(lengths, q))) for q in (50, 95))
    suggested = int(min(limit, max(16, -(-p95 // 8) * 8)))
    return TextLengths(len(chosen), p50, p95, int(lengths.max()), suggested)
