"""Generated contexts, read once per model and kept: the ``aggregated`` method's sentences.

Each word is also read in a few short neutral sentences (``embedgen.words.TEMPLATES``), so that
words the corpus lacks get vectors that compare with the others'. A word's generated sentences
depend on the model, the templates, the layers and the context length, not on the data, so
their mean (before any projection: it is affine, so projecting the mean is the mean of the
projections) is kept in an entry of the feature cache (its budget and least-recently-used
eviction) and read again by the next build of any matrix of the same model with those words.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from embedgen.atomic import atomic_path
from embedgen.features import FeatureCache, feature_key
from embedgen.matrix.contexts import context_vectors
from embedgen.models import Encoder
from embedgen.progress import ProgressFn
from embedgen.train import Head
from embedgen.words import TEMPLATES, generated_contexts

log = logging.getLogger(__name__)

GENERATED_FILE = "generated.npz"


def generated_vectors(
    encoder: Encoder,
    words: Sequence[str],
    per_word: int,
    layers: tuple[int, int],
    *,
    device: torch.device,
    head: Head | None = None,
    context_tokens: int = 128,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    cache: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each word's mean vector over its ``per_word`` generated contexts (through ``head``'s
    projection when given), how many contexts each averages, and how many words came from
    the cache.

    A word's generated contexts depend on the model, the templates, the layers and the
    context length, not on the data, so their mean (before any projection: it is affine, so
    projecting the mean is the mean of the projections) is kept in an entry of the feature
    cache (its budget and least-recently-used eviction) and read again by the next build of
    any matrix of the same model with those words: another run, another d, the Evaluate
    page's trade-off. ``cache`` False neither reads nor writes it.
    """
    # Long: a third of it is the docstring that says why the cache is sound; the rest is one
    # read, compute-what-is-missing, write transaction on the cache entry.
    hidden = encoder.info.hidden_size
    store, folder = _entry(encoder, per_word, layers, device, context_tokens, cache)
    known_words, known_means, known_used = _read_generated(folder, hidden)
    at = {w: i for i, w in enumerate(known_words)}
    missing = [w for w in dict.fromkeys(words) if w not in at]
    if missing:
        mean, used = context_vectors(
            encoder,
            generated_contexts(missing, per_word),
            len(missing),
            layers,
            device=device,
            max_tokens=context_tokens,
            progress=progress,
            cancel=cancel,
        )
        known_words += tuple(missing)
        known_means = np.concatenate([known_means, mean])
        known_used = np.concatenate([known_used, used])
        at = {w: i for i, w in enumerate(known_words)}
        if folder is not None and store is not None and store.room_for(mean.nbytes, folder):
            _write_generated(folder, known_words, known_means, known_used)
    elif progress is not None:
        progress(1, 1)
    rows = [at[w] for w in words]
    used = known_used[rows]
    cached = len(set(words)) - len(missing)
    if cached:
        log.info("Generated contexts: %d of %d words from the cache", cached, len(set(words)))
    return _projected(known_means[rows], used, head), used, cached


def missing_generated(
    encoder: Encoder,
    words: Sequence[str],
    per_word: int,
    layers: tuple[int, int],
    *,
    device: torch.device,
    context_tokens: int = 128,
    cache: bool = True,
) -> list[str]:
    """The words of ``words`` whose generated contexts :func:`generated_vectors` would read
    (not in the cache), each once: what the build has left to do."""
    _, folder = _entry(encoder, per_word, layers, device, context_tokens, cache)
    known = set(_read_generated(folder, encoder.info.hidden_size)[0])
    return [w for w in dict.fromkeys(words) if w not in known]


def _entry(
    encoder: Encoder,
    per_word: int,
    layers: tuple[int, int],
    device: torch.device,
    context_tokens: int,
    cache: bool,
) -> tuple[FeatureCache | None, Path | None]:
    """The feature cache and its entry for these generated contexts (None, None when off)."""
    store = FeatureCache() if cache else None
    if store is None or store.budget <= 0:
        return store, None
    key = feature_key(
        encoder,
        TEMPLATES[:per_word],
        max_length=context_tokens,
        pooling="generated contexts",
        device=device,
    )
    return store, store.open(
        replace(key, layer=f"{layers[0]}-{layers[1]}"), encoder.info.hidden_size
    )


def _projected(raw: np.ndarray, used: np.ndarray, head: Head | None) -> np.ndarray:
    """The rows of ``raw`` that have contexts through ``head``'s projection (the others NaN),
    or ``raw`` itself without a head."""
    if head is None:
        return raw.astype(np.float32, copy=False)
    out = np.full((len(raw), head.projection.out_features), np.nan, dtype=np.float32)
    seen = used > 0
    if seen.any():
        at_device = next(head.parameters()).device
        with torch.no_grad():
            projected = head.project(torch.from_numpy(raw[seen]).float().to(at_device))
        out[seen] = projected.float().cpu().numpy()
    return out


def _write_generated(
    folder: Path, words: tuple[str, ...], means: np.ndarray, used: np.ndarray
) -> None:
    """Keep the raw means of ``words`` (and their context counts) in ``folder``."""
    with atomic_path(folder / GENERATED_FILE) as tmp:
        with tmp.open("wb") as f:
            np.savez(
                f,
                words=np.array(words, dtype=np.str_),
                means=means.astype(np.float32),
                used=used.astype(np.int64),
            )


def _read_generated(
    folder: Path | None, hidden: int
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """The words, raw means and context counts kept in ``folder`` (nothing when none)."""
    empty = ((), np.zeros((0, hidden), dtype=np.float32), np.zeros(0, dtype=np.int64))
    path = folder / GENERATED_FILE if folder is not None else None
    if path is None or not path.exists():
        return empty
    try:
        with np.load(path, allow_pickle=False) as z:
            words = tuple(str(w) for w in z["words"])
            means, used = z["means"], z["used"]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        log.warning("Generated-context cache %s is damaged (%s); reading again", path, exc)
        return empty
    if means.shape != (len(words), hidden) or used.shape != (len(words),):
        return empty
    return words, means, used
