"""Token statistics of the user's labelled texts, aligned with the rows of an embedding matrix.

The path is ``token_stats`` (texts tokenised by the model's own tokenizer, counted overall and
per label) -> :class:`TokenStats` -> ``association`` (which label each token leans to, and how
strongly) -> ``align`` (arrays in the order of a matrix's vocabulary, for colouring plots).
Tokens are the tokenizer's own strings ("好", "##好", "▁中国"), so they match the vocabulary of a
matrix built from the same tokenizer.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from embedgen.errors import BadConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenStats:
    """How often each token occurs in the texts, overall and per label.

    ``label_counts[token][k]`` counts the token in texts whose label is ``label_names[k]``;
    ``counts`` lists tokens from most to least frequent.
    """

    counts: dict[str, int]
    label_counts: dict[str, list[int]]
    label_names: tuple[str, ...]
    docs: int

    @property
    def total(self) -> int:
        """Return the number of tokens in all texts."""
        return sum(self.counts.values())


def token_stats(
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    label_names: Sequence[str],
    *,
    batch_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> TokenStats:
    """Return the token counts of ``texts``, overall and per label, as ``tokenizer`` splits them.

    ``labels[i]`` indexes ``label_names`` (as in :class:`embedgen.data.LabelledData`). Special
    tokens ([CLS], <s>, ...) are not added; an unknown character counts as the tokenizer's
    unknown token, which is a row of the matrix too. ``progress(done, total)`` is called after
    each batch of ``batch_size`` texts.
    """
    names = tuple(str(n) for n in label_names)
    if len(texts) != len(labels):
        raise BadConfig(
            f"token_stats needs one label per text; got {len(texts)} texts and "
            f"{len(labels)} labels."
        )
    if not names:
        raise BadConfig("token_stats needs at least one label name.")
    if batch_size < 1:
        raise BadConfig(f"batch_size must be at least 1, got {batch_size}.")
    bad = sorted({int(k) for k in labels if not 0 <= int(k) < len(names)})
    if bad:
        raise BadConfig(
            f"labels {bad[:10]} do not index the {len(names)} label names {list(names)}."
        )
    per_label: list[Counter[str]] = [Counter() for _ in names]
    for start in range(0, len(texts), batch_size):
        chunk = [str(t) for t in texts[start : start + batch_size]]
        for label, tokens in zip(
            labels[start : start + batch_size], _tokenize(tokenizer, chunk), strict=True
        ):
            per_label[int(label)].update(tokens)
        if progress is not None:
            progress(min(start + batch_size, len(texts)), len(texts))
    overall: Counter[str] = Counter()
    for counter in per_label:
        overall.update(counter)
    counts = dict(overall.most_common())
    label_counts = {token: [counter[token] for counter in per_label] for token in counts}
    log.info(
        "Counted %d tokens (%d distinct) in %d texts over %d labels",
        sum(counts.values()),
        len(counts),
        len(texts),
        len(names),
    )
    return TokenStats(counts=counts, label_counts=label_counts, label_names=names, docs=len(texts))


def _tokenize(tokenizer: Any, texts: list[str]) -> list[list[str]]:
    """Return the tokens of each text; one batched call where the tokenizer allows it."""
    try:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    except (TypeError, KeyError):  # not a transformers tokenizer: one text at a time
        return [list(tokenizer.tokenize(t)) for t in texts]
    return [list(tokenizer.convert_ids_to_tokens(row)) for row in ids]


def association(stats: TokenStats, *, prior: float = 0.5) -> dict[str, tuple[str, float]]:
    """Return, for each counted token, the label it is most associated with and the z-score.

    The score is the weighted log-odds ratio with an informative Dirichlet prior of Monroe,
    Colaresi & Quinn (2008, "Fightin' Words"), of one label against all the other labels
    together. For token ``w`` and label ``i``, with ``y_i`` the count of ``w`` in label ``i``'s
    texts, ``n_i`` the number of tokens in them, and ``y_j``, ``n_j`` the same for the other
    labels::

        a_w   = prior * V * count(w) / N        (V distinct tokens, N tokens in all)
        a_0   = sum of a_w = prior * V
        delta = log((y_i + a_w) / (n_i + a_0 - y_i - a_w))
              - log((y_j + a_w) / (n_j + a_0 - y_j - a_w))
        var   = 1 / (y_i + a_w) + 1 / (y_j + a_w)
        z     = delta / sqrt(var)

    The prior pulls rare tokens towards the overall distribution, so a token seen twice does
    not outrank one seen two hundred times. The returned label is the one with the highest
    ``z`` (the first such label on a tie), and the score is that ``z``: positive when the token
    is over-represented in that label, near 0 when it is spread evenly.
    """
    if prior <= 0:
        raise BadConfig(f"prior must be positive, got {prior}.")
    tokens, z = _z_scores(stats, prior)
    if not tokens:
        return {}
    best = z.argmax(axis=1)
    return {
        token: (stats.label_names[k], float(z[row, k]))
        for row, (token, k) in enumerate(zip(tokens, best, strict=True))
    }


def significant(
    stats: TokenStats, *, min_z: float = 3.0, min_count: int = 10, prior: float = 0.5
) -> dict[str, tuple[str, float]]:
    """The tokens that lean to a label beyond chance: :func:`association`'s (label, z) of the
    tokens seen at least ``min_count`` times whose z is at least ``min_z`` (3: about one token
    in a thousand would pass by chance alone). Rare tokens and weak leanings (a word that only
    happens to be a little more frequent under one label) are left out, so a measure built on
    them says something about the labels."""
    return {
        token: (label, z)
        for token, (label, z) in association(stats, prior=prior).items()
        if z >= min_z and stats.counts.get(token, 0) >= min_count
    }


def _z_scores(stats: TokenStats, prior: float) -> tuple[list[str], npt.NDArray[np.float64]]:
    """Return the tokens and their (tokens x labels) log-odds z-scores, label vs the rest."""
    tokens = list(stats.counts)
    if not tokens:
        return tokens, np.zeros((0, len(stats.label_names)))
    y = np.array([stats.label_counts[t] for t in tokens], dtype=np.float64)  # tokens x labels
    count = y.sum(axis=1, keepdims=True)
    n = y.sum(axis=0, keepdims=True)
    total = float(count.sum())
    if len(tokens) < 2:  # one distinct token: no other token to contrast it with
        return tokens, np.zeros_like(y)
    alpha_0 = prior * len(tokens)
    alpha = alpha_0 * count / total
    y_rest, n_rest = count - y, total - n
    delta = np.log((y + alpha) / (n + alpha_0 - y - alpha)) - np.log(
        (y_rest + alpha) / (n_rest + alpha_0 - y_rest - alpha)
    )
    variance = 1.0 / (y + alpha) + 1.0 / (y_rest + alpha)
    return tokens, delta / np.sqrt(variance)


def align(
    stats: TokenStats, vocab: Sequence[str], *, prior: float = 0.5
) -> tuple[npt.NDArray[np.int64], list[str], npt.NDArray[np.float32]]:
    """Return (counts, top label, z) for each row of a matrix whose vocabulary is ``vocab``.

    Rows whose token never occurs in the texts get count 0, label ``""`` and z 0.
    """
    assoc = association(stats, prior=prior)
    counts = np.array([stats.counts.get(t, 0) for t in vocab], dtype=np.int64)
    top = [assoc[t][0] if t in assoc else "" for t in vocab]
    z = np.array([assoc[t][1] if t in assoc else 0.0 for t in vocab], dtype=np.float32)
    seen = int((counts > 0).sum())
    log.info(
        "Aligned token statistics: %d of %d vocabulary rows occur in the texts", seen, len(vocab)
    )
    return counts, top, z
