"""``aggregated`` rows: each word read in context, its vectors averaged.

A word's row is the mean over its occurrences in the user's corpus (up to
``corpus_contexts``), averaged with the mean over a few generated sentences
(``generated_contexts``, :mod:`embedgen.matrix.generated`), either alone when the other is
missing, and the word alone when both are. Corpus occurrences that a ``head`` run's encoding
pass already read are taken from its word states (``embedgen.wordstates``) instead of being
read again; only those in texts the run cut at its max length are read.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from embedgen.matrix.contexts import context_vectors
from embedgen.matrix.contextual import whole_word_vectors
from embedgen.matrix.generated import generated_vectors, missing_generated
from embedgen.matrix.types import MatrixOptions
from embedgen.models import Encoder
from embedgen.progress import ProgressFn
from embedgen.states import evaluating, on_device
from embedgen.train import Head, Run
from embedgen.words import TEMPLATES, Context, Corpus, WordVocab, corpus_contexts
from embedgen.wordstates import kept_states

log = logging.getLogger(__name__)

WORD_ALONE = "word alone"  # what a row with no context at all is made of (rows.tsv)


def aggregated_rows(
    encoder: Encoder,
    head: Head | None,
    words: WordVocab,
    corpus: Corpus | None,
    layers: tuple[int, int],
    options: MatrixOptions,
    device: torch.device,
    *,
    run: Run | None = None,
    use_cache: bool = True,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> tuple[np.ndarray, dict[str, tuple[Any, ...]], dict[str, Any]]:
    """The rows of ``words``, per row how many corpus contexts it read and what its vector is
    made of (rows.tsv's columns), and what the manifest says of the contexts: how many were
    read, taken from ``run``'s word states of ``corpus``, or (with ``use_cache``) found among
    the generated contexts of words read before."""
    # Long: the recipe of a row, read top to bottom (plan, corpus pass, generated pass,
    # combined, the word alone where neither read it), inside the one block that keeps the
    # encoder on the device; each step is a function of its own below or in contexts/generated.
    reading_corpus = corpus is not None and options.corpus_contexts > 0
    means, counts, record = [], [], {}
    with on_device([encoder.model, head], device), evaluating(encoder.model):
        contexts, kept, groups = read_plan(
            encoder, run, words, corpus, layers, options, device, cache=use_cache
        )
        if kept is not None:
            record["from_run"] = {"contexts": int(kept[1].sum()), "read_again": len(contexts)}
        per_token = chars_per_token(encoder.tokenizer, [c.text for c in contexts[::50]])
        share = _Shares(progress, work(contexts, groups, per_token, options))
        if reading_corpus:
            mean, used = context_vectors(
                encoder,
                contexts,
                len(words),
                layers,
                device=device,
                head=head,
                max_tokens=options.context_tokens,
                progress=share.of("corpus"),
                cancel=cancel,
            )
            if kept is not None:
                mean, used = _with_kept(mean, used, kept, head, device)
            means.append(mean)
            counts.append(used)
        if groups:
            mean, used, record["generated_cached"] = _generated(
                encoder,
                words.words,
                groups,
                layers,
                options,
                device=device,
                head=head,
                progress=share.of("generated"),
                cancel=cancel,
                cache=use_cache,
            )
            means.append(mean)
            counts.append(used)
        vectors, alone = _combine(means, counts)
        if alone.any():  # no context at all: the word alone, marked
            vectors[alone] = whole_word_vectors(
                encoder,
                [w for w, a in zip(words.words, alone, strict=True) if a],
                layers,
                device=device,
                head=head,
                batch_size=options.batch_size,
                progress=share.of("alone"),
                cancel=cancel,
            )
    in_corpus = counts[0] if reading_corpus else np.zeros(len(words), int)
    record |= {
        "corpus_per_word": options.corpus_contexts if corpus is not None else 0,
        "corpus_window": options.context_chars if corpus is not None else 0,
        "generated_per_word": options.generated_contexts,
        "generated_per_word_in_corpus": min(
            options.generated_in_corpus, options.generated_contexts
        ),
        "words_read_in_corpus": int(np.count_nonzero(in_corpus)),
        "words_read_alone": int(alone.sum()),
    }
    if progress is not None:
        progress(1, 1)
    made_of = _made_of(in_corpus, alone, generated=counts[-1] > 0 if groups else None)
    columns = {"corpus_contexts": tuple(int(c) for c in in_corpus), "vector": made_of}
    return vectors.astype(np.float32), columns, record


@dataclass(frozen=True)
class Generated:
    """Rows read in the first ``per_word`` generated sentences, and the words of those rows
    whose sentences are not in the cache (what the build has left to read)."""

    per_word: int
    rows: list[int]
    missing: list[str]


def read_plan(
    encoder: Encoder,
    run: Run | None,
    words: WordVocab,
    corpus: Corpus | None,
    layers: tuple[int, int],
    options: MatrixOptions,
    device: torch.device,
    *,
    cache: bool = True,
) -> tuple[list[Context], tuple[np.ndarray, np.ndarray] | None, list[Generated]]:
    """What a build of these options reads, for the build and its estimate alike: the corpus
    contexts (:func:`corpus_plan`), the sums kept from ``run``'s word states, and the generated
    sentences: ``generated_in_corpus`` for the words the corpus holds, ``generated_contexts``
    for the others, each with the words not in the cache (``cache`` False: all of them)."""
    contexts: list[Context] = []
    kept = None
    if corpus is not None and options.corpus_contexts > 0:
        contexts, kept = corpus_plan(encoder, run, words, corpus, layers, options, device)
    in_corpus = {c.row for c in contexts}
    if kept is not None:
        in_corpus.update(np.flatnonzero(kept[1] > 0).tolist())
    fewer = min(options.generated_in_corpus, options.generated_contexts)
    groups = []
    for per_word, rows in (
        (fewer, sorted(in_corpus)),
        (options.generated_contexts, [i for i in range(len(words)) if i not in in_corpus]),
    ):
        if per_word and rows:
            missing = missing_generated(
                encoder,
                [words.words[i] for i in rows],
                per_word,
                layers,
                device=device,
                context_tokens=options.context_tokens,
                cache=cache,
            )
            groups.append(Generated(per_word, rows, missing))
    return contexts, kept, groups


def _generated(
    encoder: Encoder,
    words: tuple[str, ...],
    groups: list[Generated],
    layers: tuple[int, int],
    options: MatrixOptions,
    *,
    device: torch.device,
    head: Head | None,
    progress: ProgressFn | None,
    cancel: threading.Event | None,
    cache: bool,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each row's mean over its generated sentences (its group's number of them), how many
    each averages, and how many words came from the cache."""
    done = 0  # sentences read, the groups' words times their sentences a word
    total = sum(len(g.missing) * g.per_word for g in groups) or 1
    mean, used, cached = None, np.zeros(len(words), dtype=np.int64), 0
    for group in groups:
        size = len(group.missing) * group.per_word

        def report(d: int, t: int, before: int = done, size: int = size) -> None:
            if progress is not None:
                progress(before + round(size * d / max(t, 1)), total)

        part, part_used, part_cached = generated_vectors(
            encoder,
            [words[i] for i in group.rows],
            group.per_word,
            layers,
            device=device,
            head=head,
            context_tokens=options.context_tokens,
            progress=report,
            cancel=cancel,
            cache=cache,
        )
        if mean is None:
            mean = np.full((len(words), part.shape[1]), np.nan, dtype=np.float32)
        mean[group.rows], used[group.rows] = part, part_used
        cached += part_cached
        done += size
    assert mean is not None  # read_plan gives no empty groups, and at least one here
    return mean, used, cached


def corpus_plan(
    encoder: Encoder,
    run: Run | None,
    words: WordVocab,
    corpus: Corpus,
    layers: tuple[int, int],
    options: MatrixOptions,
    device: torch.device,
) -> tuple[list[Context], tuple[np.ndarray, np.ndarray] | None]:
    """The corpus contexts to read, and the (sums, counts) per row taken from the word states
    of ``run``'s encoding pass instead (None when it kept none these options can take)."""
    contexts = corpus_contexts(
        words.words, corpus, per_word=options.corpus_contexts, window=options.context_chars
    )
    if run is None or options.context_chars:  # the run kept states of whole texts
        return contexts, None
    shared = kept_states(
        run,
        encoder,
        corpus,
        corpus_contexts=options.corpus_contexts,
        context_tokens=options.context_tokens,
        layers=layers,
        device=device,
    )
    if shared is None:
        return contexts, None
    kept, again = shared.split(words.words, contexts, corpus)
    log.info(
        "Aggregated: %d corpus contexts from the run's word states, %d read again",
        int(kept[1].sum()),
        len(again),
    )
    return again, kept


def chars_per_token(tokenizer: Any, texts: list[str], sample: int = 200) -> float:
    """How many characters the tokenizer makes a token of, on up to ``sample`` of ``texts``
    (1 for bert-base-chinese's characters, about 1.4 for XLM-R on Chinese; 1 with no texts)."""
    picked = texts[:: max(1, len(texts) // sample)][:sample]
    if not picked:
        return 1.0
    ids = tokenizer(picked, add_special_tokens=False, verbose=False)["input_ids"]
    return max(0.25, sum(len(t) for t in picked) / max(1, sum(len(i) for i in ids)))


def read_chars(text: str, options: MatrixOptions, per_token: float) -> float:
    """The characters of ``text`` the model reads, as a measure of what reading it costs: cut
    where the context length ends for this tokenizer (``per_token`` characters a token), with
    its start and end tokens."""
    return min(len(text), options.context_tokens * per_token) + 2 * per_token


def work(
    contexts: list[Context],
    groups: list[Generated],
    per_token: float = 1.0,
    options: MatrixOptions | None = None,
) -> dict[str, float]:
    """What each pass has to read, in characters (a pass's time grows with them: e5-small read
    8,000 reviews and 42,456 generated sentences at 0.24 ms a character alike): the distinct
    corpus texts, each cut where the context length ends (``per_token`` characters a token),
    the generated sentences of the words not cached, each with its start and end tokens, and a
    little for the words read alone at the end.

    Cut at 3x the context length in characters, a run's long reviews (the ones its pass cut,
    read again here) weighed the corpus pass too heavily: the time left at 25% was 32% short
    (e5-small, 10,614 words, max length 184).
    """
    options = options or MatrixOptions(method="aggregated")
    corpus = sum(read_chars(t, options, per_token) for t in {c.text for c in contexts})
    ends = 2 * per_token
    generated = sum(
        len(t) - 2 + len(w) + ends
        for g in groups
        for w in g.missing
        for t in TEMPLATES[: g.per_word]
    )
    return {"corpus": corpus, "generated": generated, "alone": 0.02 * (corpus + generated) + 1}


class _Shares:
    """One progress over the passes, each pass a share in proportion to its work, so the time
    left that a sink computes from the rate holds across passes (equal shares made it climb)."""

    def __init__(self, progress: ProgressFn | None, work: dict[str, float]) -> None:
        self.progress = progress
        total = sum(work.values()) or 1.0
        self.start: dict[str, tuple[float, float]] = {}
        at = 0.0
        for name, amount in work.items():
            self.start[name] = (at, amount / total)
            at += amount / total

    def of(self, name: str) -> ProgressFn | None:
        if self.progress is None:
            return None
        start, size = self.start[name]
        progress = self.progress

        def report(done: int, total: int) -> None:
            progress(int(1000 * (start + size * done / max(total, 1))), 1000)

        return report


def _combine(means: list[np.ndarray], counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The average of the passes' means over the passes that read a row, and which rows no
    pass read (their rows are zeros, for the word alone)."""
    have = np.stack([c > 0 for c in counts])  # passes x rows
    stacked = np.stack([np.nan_to_num(m) for m in means])
    vectors = (stacked * have[:, :, None]).sum(0) / np.maximum(have.sum(0), 1)[:, None]
    return vectors, ~have.any(0)


def _made_of(
    in_corpus: np.ndarray, alone: np.ndarray, *, generated: np.ndarray | None
) -> tuple[str, ...]:
    """What each row's vector is made of, for rows.tsv (``generated``: which rows were read
    in generated sentences; None: none)."""
    made = []
    for k, (read, by_itself) in enumerate(zip(in_corpus.tolist(), alone.tolist(), strict=True)):
        also = generated is not None and bool(generated[k])
        if by_itself:
            made.append(WORD_ALONE)
        elif read:
            made.append("corpus + generated" if also else "corpus")
        else:
            made.append("generated")
    return tuple(made)


def _with_kept(
    mean: np.ndarray,
    used: np.ndarray,
    kept: tuple[np.ndarray, np.ndarray],
    head: Head | None,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """The mean over both the contexts just read (``mean`` of ``used`` each) and the kept sums
    (raw states, ``kept`` = (sums, counts)), through ``head``'s projection when given: the
    projection is affine, so the mean of projected vectors is the projected mean."""
    sums, counts = kept
    have = counts > 0
    kept_mean = np.zeros_like(mean)
    if have.any():
        raw = sums[have] / counts[have, None]
        if head is not None:
            with torch.no_grad():
                raw = head.project(torch.from_numpy(raw).float().to(device)).float().cpu().numpy()
        kept_mean[have] = raw
    total = used + counts
    both = np.nan_to_num(mean) * used[:, None] + kept_mean * counts[:, None]
    out = np.full_like(mean, np.nan)
    seen = total > 0
    out[seen] = (both[seen] / total[seen, None]).astype(np.float32)
    return out, total
