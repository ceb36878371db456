"""The benchmark files this tab scores with (Evaluate): kept once uploaded, until removed.

A file uploader forgets its files when the visitor opens another page, and a reload forgets
everything: the similarity files vanished after a visit to Explore (issue 21). Files taken
from the uploaders are kept here, by kind ("similarity", "analogy"), each as its name (shown,
never a path) and bytes; the visit keeps them too (:mod:`embedgen.ui.visit`, under names made
of their SHA-256), so a reloaded tab scores with the same files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import streamlit as st

KEPT = "evaluate_benchmarks"  # session state: kind -> [Benchmark], in the order taken
KINDS = ("similarity", "analogy")


@dataclass(frozen=True)
class Benchmark:
    """An uploaded benchmark file: the name it was uploaded under and its bytes."""

    name: str
    raw: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def kept(kind: str) -> list[Benchmark]:
    """The files of ``kind`` this tab keeps, in the order taken."""
    store: dict[str, list[Benchmark]] = st.session_state.setdefault(KEPT, {})
    return store.setdefault(kind, [])


def take(kind: str, uploads: Any) -> int:
    """Keep the ``uploads`` of ``kind`` not kept yet (the same bytes are kept once, under the
    latest name); how many were new."""
    files = kept(kind)
    new = 0
    for upload in uploads or []:
        bench = Benchmark(str(upload.name), upload.getvalue())
        same = [i for i, b in enumerate(files) if b.sha256 == bench.sha256]
        if same:
            files[same[0]] = bench
        else:
            files.append(bench)
            new += 1
    return new


def drop(kind: str, sha256: str) -> None:
    """Stop using the file of ``kind`` with these bytes."""
    files = kept(kind)
    files[:] = [b for b in files if b.sha256 != sha256]


def all_kept() -> dict[str, list[Benchmark]]:
    """Every kind's files (for the visit)."""
    return {kind: list(kept(kind)) for kind in KINDS if kept(kind)}


def restore(files: dict[str, list[Benchmark]]) -> None:
    """Keep ``files`` (a reloaded tab's), replacing what this session held."""
    store: dict[str, list[Benchmark]] = st.session_state.setdefault(KEPT, {})
    for kind in KINDS:
        store[kind] = list(files.get(kind, []))
