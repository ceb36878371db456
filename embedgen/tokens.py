"""Which of a model's tokens become matrix rows: special, unused, CJK-only and ``##`` filters.

Also the small facts about token strings the rest of the library needs: subword markers
(``##``, ``▁``, ``Ġ``) and CJK characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

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
    ``cjk_only`` keeps tokens made of CJK characters only; ``drop_continuation`` leaves out
    "##x" pieces (their "x" twins stay). Rows beyond the tokenizer's vocabulary (models pad
    their embedding tables) have no token and are always left out.
    """
    n = min(rows, len(tokenizer))
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    special = set(tokenizer.all_special_ids or [])
    removed = {
        "beyond_tokenizer": rows - n,
        "special": 0,
        "unused": 0,
        "not_cjk": 0,
        "continuation": 0,
        "unnamed": 0,
    }
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
        elif cjk_only and not is_cjk_token(tok):
            removed["not_cjk"] += 1
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
