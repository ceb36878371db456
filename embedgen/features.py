"""Pooled sentence features of a frozen encoder, cached on disk so a re-run skips encoding.

The ``head`` strategy never changes the encoder, so a text's features depend only on the
model, the text, the max length, the pooling, the layer read and the device's number format.
Those make the :class:`FeatureKey`; the features of a list of texts live in chunks under
``$EMBEDGEN_HOME/cache/features/<key>/``:

```
<key>/
  meta.json       what the key is made of, the number of texts, hidden size, chunk size
  000000.npy      float32 features of texts 0..1023
  000001.npy      texts 1024..2047, ...
  words-<corpus>-k8.npz   the words' vectors the same pass kept (embedgen.wordstates)
```

Each chunk is written atomically (a temporary name, then a rename) as soon as it is encoded,
so a run cancelled during encoding keeps the chunks it finished and the next run starts from
there; a chunk that cannot be read or has the wrong shape is deleted and encoded again.

The cache is bounded: ``EMBEDGEN_FEATURE_CACHE_MB`` (default 2048 MiB; 0 switches the cache
off) caps the total size, and the least recently used entries (by the time of ``meta.json``,
touched on every use) go first. An entry bigger than the whole budget is not kept; the run
still gets its features, in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from embedgen.atomic import atomic_path, write_json
from embedgen.device import autocast_dtype
from embedgen.paths import cache_dir
from embedgen.progress import ProgressFn, check_cancel
from embedgen.quantize import is_int8

if TYPE_CHECKING:
    from embedgen.models import Encoder

log = logging.getLogger(__name__)

FORMAT = 1
CHUNK_TEXTS = 1024
DEFAULT_BUDGET_MB = 2048
BUDGET_ENV = "EMBEDGEN_FEATURE_CACHE_MB"
META_FILE = "meta.json"

# Encodes the texts at the given positions; calls ``advance(n)`` after each batch of n texts.
EncodeFn = Callable[[Sequence[int], Callable[[int], None]], torch.Tensor]


def features_dir() -> Path:
    """Where cached features live: ``$EMBEDGEN_HOME/cache/features``."""
    return cache_dir() / "features"


def budget_bytes() -> int:
    """The cache's size limit in bytes, from ``EMBEDGEN_FEATURE_CACHE_MB`` (default 2048)."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_BUDGET_MB
    except ValueError:
        log.warning("%s=%r is not a number of MiB; using %d", BUDGET_ENV, raw, DEFAULT_BUDGET_MB)
        mb = DEFAULT_BUDGET_MB
    return max(0, int(mb * 1024 * 1024))


def texts_sha256(texts: Sequence[str]) -> str:
    """The hex sha256 of ``texts`` in order (each text's UTF-8 bytes and its length)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def weights_fingerprint(model: torch.nn.Module, samples: int = 1024) -> str:
    """A cheap fingerprint of the weights ``model`` holds now: names, shapes and up to
    ``samples`` evenly spaced values of each tensor.

    Reading every weight of a large model would cost seconds each run; the model's id and
    revision already say which files it came from. The samples catch a model whose weights
    changed since it was loaded under that name (an encoder tuned by a run keeps its
    original's id).
    """
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, value in model.state_dict().items():
            # An int8 copy's state holds packed (weight, bias) tuples and dtypes besides tensors.
            tensors = value if isinstance(value, tuple) else (value,)
            for tensor in tensors:
                if not isinstance(tensor, torch.Tensor):
                    digest.update(f"{name}:{tensor!r};".encode())
                    continue
                if tensor.is_quantized:
                    tensor = tensor.dequantize()
                flat = tensor.detach().reshape(-1)
                step = max(1, flat.numel() // samples)
                sample = flat[::step][:samples].to(device="cpu", dtype=torch.float32)
                digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
                digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class FeatureKey:
    """Everything that decides the features of a list of texts."""

    model_id: str
    revision: str
    weights: str  # weights_fingerprint of the model as it is now
    tokenizer: str  # class and size; a hub revision or weight hash fixes the rest
    texts_sha256: str
    n_texts: int
    max_length: int
    pooling: str
    layer: str  # which hidden states are pooled ("last")
    compute: str  # device type and number format: "cpu-float32", "cuda-bfloat16"
    chunk: int = CHUNK_TEXTS
    format: int = FORMAT

    def digest(self) -> str:
        """The entry's folder name: the first 32 hex digits of the key's sha256."""
        blob = json.dumps(asdict(self), sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:32]


def feature_key(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    max_length: int,
    pooling: str,
    device: torch.device,
) -> FeatureKey:
    """The key of ``texts``' features from ``encoder``'s last layer as it is now, on ``device``."""
    dtype = autocast_dtype(device) or torch.float32
    number_format = "int8" if is_int8(encoder.model) else str(dtype).removeprefix("torch.")
    tokenizer = encoder.tokenizer
    return FeatureKey(
        model_id=encoder.info.model_id,
        revision=encoder.info.revision,
        weights=weights_fingerprint(encoder.model),
        tokenizer=f"{type(tokenizer).__name__}:{len(tokenizer)}",
        texts_sha256=texts_sha256(texts),
        n_texts=len(texts),
        max_length=max_length,
        pooling=str(pooling),
        layer="last",
        compute=f"{device.type}-{number_format}",
        chunk=CHUNK_TEXTS,
    )


class FeatureCache:
    """Cached features under ``root`` (default :func:`features_dir`), at most ``budget`` bytes."""

    _lock = threading.Lock()  # eviction walks the folder; one walk at a time per process

    def __init__(self, root: str | os.PathLike[str] | None = None, budget: int | None = None):
        self.root = Path(root) if root is not None else features_dir()
        self.budget = budget_bytes() if budget is None else budget
        self._warned = False

    def folder(self, key: FeatureKey) -> Path:
        return self.root / key.digest()

    def open(self, key: FeatureKey, hidden: int) -> Path | None:
        """The entry's folder, made (with meta.json) if new and touched as just used; None
        when the budget is zero."""
        if self.budget <= 0:
            return None
        folder = self.folder(key)
        meta = folder / META_FILE
        expected = {"key": asdict(key), "hidden": hidden}
        try:
            found = json.loads(meta.read_text("utf-8"))
        except (OSError, ValueError):
            found = None
        if found != expected:
            if found is not None:  # another key with the same digest, or another format
                log.warning("Feature cache entry %s does not match its key; replacing it", folder)
                shutil.rmtree(folder, ignore_errors=True)
            write_json(meta, expected)
        else:
            os.utime(meta)
        return folder

    def has_chunks(self, key: FeatureKey, *, every: bool = False) -> bool:
        """Whether the entry of ``key`` holds any chunk (with ``every``: all of them)."""
        folder = self.folder(key)
        found = ((folder / f"{i:06d}.npy").exists() for i in range(-(-key.n_texts // key.chunk)))
        return all(found) if every else any(found)

    def room_for(self, nbytes: int, folder: Path) -> bool:
        """Make room for ``nbytes`` more in ``folder`` (evicting others); whether they fit."""
        return self._make_room(nbytes, keep=folder)

    def load(self, folder: Path, index: int, rows: int, hidden: int) -> np.ndarray | None:
        """Chunk ``index`` if it is there and whole; a damaged one is deleted (None)."""
        path = folder / f"{index:06d}.npy"
        if not path.exists():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            log.warning("Feature cache chunk %s is damaged (%s); encoding it again", path, exc)
            path.unlink(missing_ok=True)
            return None
        if array.shape != (rows, hidden) or array.dtype != np.float32:
            log.warning(
                "Feature cache chunk %s holds %s %s, not (%d, %d) float32; encoding it again",
                path,
                array.shape,
                array.dtype,
                rows,
                hidden,
            )
            path.unlink(missing_ok=True)
            return None
        return array

    def save(self, folder: Path, index: int, array: npt.NDArray[np.float32]) -> None:
        """Write chunk ``index`` atomically, after making room for it; skip it if it cannot fit."""
        if not self._make_room(array.nbytes, keep=folder):
            if not self._warned:
                log.warning(
                    "These features need more than the feature cache's %d MiB (%s); they are "
                    "not cached. Raise %s to keep them.",
                    self.budget // (1024 * 1024),
                    self.root,
                    BUDGET_ENV,
                )
                self._warned = True
            return
        with atomic_path(folder / f"{index:06d}.npy") as tmp:
            with tmp.open("wb") as f:
                np.save(f, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last used, bytes, folder) of each entry, least recently used first."""
        found = []
        if not self.root.is_dir():
            return found
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            try:
                used = (folder / META_FILE).stat().st_mtime
            except OSError:
                used = 0.0  # no meta.json: a broken entry, first to go
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            found.append((used, size, folder))
        return sorted(found, key=lambda e: e[0])

    def _make_room(self, nbytes: int, keep: Path) -> bool:
        """Evict least recently used entries (never ``keep``) until ``nbytes`` more fit."""
        with self._lock:
            entries = self.entries()
            total = sum(size for _, size, _ in entries)
            for _, size, folder in entries:
                if total + nbytes <= self.budget:
                    break
                if folder == keep:
                    continue
                log.info("Feature cache: evicting %s (%.1f MiB)", folder.name, size / 2**20)
                shutil.rmtree(folder, ignore_errors=True)
                total -= size
            return total + nbytes <= self.budget


def cached_features(
    key: FeatureKey,
    hidden: int,
    encode: EncodeFn,
    *,
    cache: FeatureCache | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> torch.Tensor:
    """The features of ``key.n_texts`` texts (float32, n x hidden), chunk by chunk.

    Chunks found in ``cache`` are read; the others are encoded with ``encode`` and written
    there at once, so a cancel (``Cancelled`` from ``encode`` or ``cancel``) keeps what was
    done. ``progress`` counts texts: the cached ones at once, then each encoded batch. With
    ``cache`` None every chunk is encoded (the same chunks, so the same numbers).
    """
    n, size = key.n_texts, key.chunk
    folder = cache.open(key, hidden) if cache is not None else None
    parts: list[np.ndarray | None] = [None] * (-(-n // size))
    if folder is not None:
        assert cache is not None
        for i in range(len(parts)):
            parts[i] = cache.load(folder, i, min(size, n - i * size), hidden)
    done = sum(len(p) for p in parts if p is not None)
    if progress is not None:
        progress(done, n)
    if done:
        log.info("Feature cache: %d of %d texts' features found in %s", done, n, folder)

    def advance(rows: int) -> None:
        nonlocal done
        done += rows
        if progress is not None:
            progress(done, n)

    for i, part in enumerate(parts):
        if part is not None:
            continue
        check_cancel(cancel, "Encoding")
        positions = range(i * size, min(n, (i + 1) * size))
        array = encode(positions, advance).float().cpu().numpy()
        if folder is not None:
            assert cache is not None
            cache.save(folder, i, array)
        parts[i] = array
    if not parts:
        return torch.empty((0, hidden))
    return torch.from_numpy(np.concatenate([p for p in parts if p is not None]))
