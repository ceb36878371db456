"""How long a build will take, measured on a sample of its rows before it starts."""

from __future__ import annotations

import time
from dataclasses import dataclass

from embedgen.device import resolve_device
from embedgen.matrix import aggregated, contextual
from embedgen.matrix.build import projection_for, rows_of, selected_tokens, word_rows
from embedgen.matrix.contexts import context_vectors
from embedgen.matrix.types import MatrixOptions, Method, resolve_layers, split_source
from embedgen.models import Encoder
from embedgen.train import Head, Run
from embedgen.words import Context, Corpus, WordVocab, generated_contexts, words_from_list


@dataclass(frozen=True)
class BuildEstimate:
    """How long building a matrix will take: measured on ``sample`` rows, scaled to ``rows``."""

    rows: int
    seconds: float
    sample: int
    sample_seconds: float

    def describe(self) -> str:
        """ "about 25 s for 17,134 rows (measured on 256 rows)"."""
        seconds = self.seconds
        if seconds < 1:
            took = "under a second"
        elif seconds < 90:
            took = f"about {seconds:.0f} s"
        elif seconds < 5400:
            took = f"about {seconds / 60:.0f} min"
        else:
            took = f"about {seconds / 3600:.1f} h"
        how = f" (measured on {self.sample:,} rows)" if self.sample else ""
        return f"{took} for {self.rows:,} rows{how}"


def estimate_build(
    source: Encoder | Run,
    options: MatrixOptions | None = None,
    *,
    words: WordVocab | None = None,
    corpus: Corpus | None = None,
    sample: int = 128,
) -> BuildEstimate:
    """How long :func:`build_matrix` will take with these arguments, from a quick sample.

    Rows that are read through the encoder (``contextual``, ``aggregated``) are timed on
    ``sample`` rows spread over the vocabulary (two sizes, so the fixed cost of a build is not
    multiplied by the number of rows); table rows (``input``, ``projected``) cost almost
    nothing. Takes about a second on a CPU for the default matrix of a small model.
    """
    # Long: the timing closure reads the rows as the build would (tokens or words) and is
    # called three times; the arithmetic after it turns two sample sizes into an estimate.
    run, encoder = split_source(source)
    options = (options or MatrixOptions()).for_source(run)
    words, corpus = rows_of(options, words, corpus)
    if words is None:
        ids, _ = selected_tokens(encoder, options)
        rows = len(ids)
    else:
        rows = len(words)
    if not options.method.reads_context or rows == 0:
        return BuildEstimate(rows=rows, seconds=0.0, sample=0, sample_seconds=0.0)
    head = projection_for(options, run.head if run is not None else None)
    if options.method is Method.AGGREGATED and words is not None:
        return _aggregated_estimate(encoder, run, head, words, corpus, options)
    small = max(1, min(rows, sample) // 4)
    large = max(small + 1, min(rows, sample))
    if large > rows:  # a tiny vocabulary: measuring it is building it
        large = small = rows

    def timed(n: int) -> float:
        step = max(1, rows // n)
        if words is None:
            picked_ids = ids[::step][:n]
            info = encoder.info
            layers = resolve_layers(options, info.num_layers, info.model_id)
            started = time.perf_counter()
            contextual.token_rows(
                encoder,
                picked_ids,
                layers,
                device=resolve_device(options.device),
                head=head,
                batch_size=options.batch_size,
            )
        else:
            picked = words_from_list(list(words.words[::step][:n]), name="sample")
            started = time.perf_counter()
            # Without the generated-context cache: the sample would fill it, and time it.
            word_rows(encoder, head, picked, corpus, options, None, None, run=run, use_cache=False)
        return time.perf_counter() - started

    timed(small)  # warm-up: the first batch of a process pays for thread pools and kernels
    t_small = timed(small)
    if large == small:
        return BuildEstimate(rows=rows, seconds=t_small, sample=rows, sample_seconds=t_small)
    t_large = timed(large)
    # The slope between the two sizes, but at least a quarter of the large sample's mean (so
    # timing noise cannot make rows look free).
    per_row = max((t_large - t_small) / (large - small), t_large / large / 4)
    fixed = max(0.0, t_large - per_row * large)
    return BuildEstimate(
        rows=rows, seconds=fixed + per_row * rows, sample=large, sample_seconds=t_large
    )


SAMPLE_CHARS = 16_000  # about what each pass's timed sample reads: 3-4 s on 2 cores (e5-small)


def _aggregated_estimate(
    encoder: Encoder,
    run: Run | None,
    head: Head | None,
    words: WordVocab,
    corpus: Corpus | None,
    options: MatrixOptions,
) -> BuildEstimate:
    """Aggregated rows from their plan: the texts the build will read (the corpus texts left
    after the run's word states, the generated sentences not cached), batched as the build
    batches them (by length), some of those very batches of each pass timed (about
    SAMPLE_CHARS of each) and the rest scaled by their padded size. Timing a sample of words
    instead read each word's texts apart, where the whole build shares them: 5 min for a build
    of 86 s (e5-small, 3,888 words of 8,000 waimai reviews). Now, e5-small on 2 cores: 98-111 s
    for that build of 95 s, 385-436 s for one of 376 s (8,000 texts of 125 characters), in
    10-12 s."""
    info = encoder.info
    layers = resolve_layers(options, info.num_layers, info.model_id)
    device = resolve_device(options.device)
    contexts, _, groups = aggregated.read_plan(encoder, run, words, corpus, layers, options, device)
    passes = [  # each pass's texts, timed apart: their rates differ
        list({c.text for c in contexts}),
        [c.text for g in groups for c in generated_contexts(g.missing, g.per_word)],
    ]
    started = time.perf_counter()
    seconds, timed = 0.0, 0
    for texts in passes:
        # Timed in one mixed sample, the many short generated sentences set the rate for the
        # long corpus texts too: 572 s estimated for a build of 376 s (10,614 words of 8,000
        # texts of 125 characters, e5-small).
        took, read = _timed_batches(encoder, head, texts, layers, options, SAMPLE_CHARS)
        seconds, timed = seconds + took, timed + read
    return BuildEstimate(
        rows=len(words),
        seconds=seconds * 1.02,  # and the words read alone at the end
        sample=timed,
        sample_seconds=time.perf_counter() - started,
    )


def _timed_batches(
    encoder: Encoder,
    head: Head | None,
    texts: list[str],
    layers: tuple[int, int],
    options: MatrixOptions,
    budget: float,
    batch: int = 64,
) -> tuple[float, int]:
    """The seconds to read ``texts`` as ``contexts.context_vectors`` does (sorted by length,
    in batches of ``batch``): batches spread over the lengths, about ``budget`` characters of
    them and at least 3, are read and timed, and the others scaled by their padded size;
    and how many texts were read. Three batches of short sentences kept one of the build's
    two lanes idle and read 1.8x slower than the build (generated contexts, e5-small)."""
    # A batch's size: its texts x the characters of its longest that the model reads. Cut at
    # 3x the context length instead, long reviews weighed twice what they cost and the
    # estimate of 10,614 words of 8,000 texts of 125 characters was 572 s for a build of 376 s.
    per_token = aggregated.chars_per_token(encoder.tokenizer, texts[::50])
    order = sorted(texts, key=len)
    batches = [order[s : s + batch] for s in range(0, len(order), batch)]
    if not batches:
        return 0.0, 0
    size = [len(b) * aggregated.read_chars(b[-1], options, per_token) for b in batches]
    picks = min(len(batches), max(3, round(budget * len(batches) / sum(size))))
    chosen = sorted({round(k * (len(batches) - 1) / max(1, picks - 1)) for k in range(picks)})
    device = resolve_device(options.device)
    read = [Context(t, 0, 1, 0) for t in batches[chosen[0]][:8]]
    context_vectors(encoder, read, 1, layers, device=device, head=head)  # warm-up
    # The chosen batches in one read, as the build reads its batches: in lanes, the set-up
    # paid once. Read one call per batch, the set-up of each call and a lane alone made the
    # short generated sentences of 10,614 words look 3.9x slower than the build found them
    # (425 s estimated, 110 s built; e5-small, 2 cores); in one read: 160 s.
    read = [Context(t, 0, 1, 0) for k in chosen for t in batches[k]]
    t0 = time.perf_counter()
    context_vectors(
        encoder,
        read,
        1,
        layers,
        device=device,
        head=head,
        max_tokens=options.context_tokens,
        batch_size=batch,
    )
    seconds = time.perf_counter() - t0
    per_unit = seconds / sum(size[k] for k in chosen)
    return per_unit * sum(size), sum(len(batches[k]) for k in chosen)
