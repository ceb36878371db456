"""This session's matrices: what each is, which one a page offers first, and the neighbour
index every page shares for a matrix (built once per matrix, not once per page)."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from embedgen.jobrecord import JobRecord
from embedgen.matrix import EmbeddingMatrix, load_matrix
from embedgen.neighbours import NeighbourIndex
from embedgen.ui.session import CURRENT_MATRIX, MATRICES, TRAIN_RUN, session_cached


@dataclass(frozen=True)
class MatrixEntry:
    """A matrix the user built in this session, and the folder it was saved to.

    ``key`` is new for every build: rebuilding "projected-tuned" with other options reuses the
    name and the folder, so caches of derived data (neighbour index, clusters, maps, the zip)
    are keyed by ``key``, never by name or folder.
    """

    name: str
    matrix: EmbeddingMatrix
    folder: str
    dtype: str = "float32"  # as saved, and as downloaded
    key: str = field(default_factory=lambda: new_key())


def new_key() -> str:
    return uuid.uuid4().hex


def load_saved(folder: str) -> EmbeddingMatrix:
    """The matrix saved in ``folder``, mapped from its file (``load_matrix(mapped=True)``):
    the server holds its visitors' matrices in the page cache, not in its own memory."""
    return load_matrix(folder, mapped=True)


def entry_of_job(record: JobRecord) -> MatrixEntry:
    """The matrix a finished build job made, for this session; one the disk budget could not
    keep is taken out of its job folder (this session keeps it)."""
    result = record.result
    folder, kept_on_disk = Path(result["folder"]), result.get("kept", True)
    matrix = load_matrix(folder, mapped=kept_on_disk)  # one to be removed is read
    if not kept_on_disk:
        shutil.rmtree(folder, ignore_errors=True)
    return MatrixEntry(result["name"], matrix, str(folder) if kept_on_disk else "", result["dtype"])


def default_matrix(entries: dict[str, MatrixEntry], run: Any) -> str:
    """The matrix a page offers first: the newest one that carries the current run's tuning,
    else the newest one (so an untuned matrix built last is not one click from a download)."""
    names = list(entries)
    if run is not None and run.folder:
        for name in reversed(names):
            m = entries[name].matrix
            if m.reflects_tuning and m.run_folder == str(run.folder):
                return name
    return names[-1]


CURRENT = CURRENT_MATRIX  # session state: the name of the matrix Explore and Export show


def current_matrix(entries: dict[str, MatrixEntry]) -> str:
    """The matrix the pages work on: the one last chosen on Explore or Export while the
    session still has it, else :func:`default_matrix`."""
    chosen = st.session_state.get(CURRENT)
    return chosen if chosen in entries else default_matrix(entries, st.session_state[TRAIN_RUN])


def matrix_choice(label: str, entries: dict[str, MatrixEntry], *, key: str, where: Any = st) -> str:
    """A select box of this session's matrices, each shown by what it is, at the current
    matrix (:func:`current_matrix`); choosing another makes it current on every page, so
    the matrix downloaded on Export is the one explored (issue 21: each page kept its own)."""
    names = list(entries)
    st.session_state[key] = current_matrix(entries)

    def chosen() -> None:
        st.session_state[CURRENT] = st.session_state[key]

    return where.selectbox(
        label,
        names,
        key=key,
        on_change=chosen,
        format_func=lambda n: f"{entries[n].matrix.label}  ({n})",
    )


INDEXES = "ui_neighbour_indexes"  # session state: entry key -> NeighbourIndex
INDEXES_KEPT = 3  # a matrix and the one it is compared with (Explore), and one more


def neighbour_index(entry: MatrixEntry) -> NeighbourIndex:
    """The neighbour index of ``entry``'s matrix, kept in the session for the last
    :data:`INDEXES_KEPT` matrices asked for that the session still holds (keyed by the build's
    key, so a rebuilt matrix of the same name gets its own, and the old one's goes).

    A server-wide cache of 8 indexes (each the matrix and its unit rows, 50 MiB for
    e5-small's 16,520 CJK tokens) held every matrix the visitors had rebuilt: three visitors
    rebuilding theirs grew the server by 607 MiB in three minutes (bench/soak.py). An index
    now keeps no copy of a float32 matrix (1 MiB over e5's mapped matrix)."""
    live = {e.key for e in st.session_state.get(MATRICES, {}).values()} | {entry.key}
    store = st.session_state.setdefault(INDEXES, {})
    for key in [k for k in store if k not in live]:  # rebuilt or dropped: its matrix too
        del store[key]
    return session_cached(
        INDEXES, entry.key, lambda: NeighbourIndex(entry.matrix), keep=INDEXES_KEPT
    )
