"""The visitor's saved work in this session: opening a run or a saved matrix (it becomes the
current one on every page), and whether this visitor may rename or delete an item.

With workspaces on, everything in the visitor's workspace is theirs. Without, every visitor
sees every run and matrix (the operator's choice), but changes only what this tab made: a run
whose secret it holds (``visitor.run_secret``, matched against the run's ``owner``), that
run's matrices, and the matrices of a plain model this session built.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from embedgen.library import MATRICES_DIR, Item, saved_matrices, title_of
from embedgen.runs import load_run, owner_tag
from embedgen.ui import matrices, session, visitor
from embedgen.ui.models import current_encoder


def _same(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _under(path: str, folder: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(folder)
    except OSError:
        return False


def open_matrix(folder: str, name: str | None = None) -> str:
    """The matrix saved in ``folder`` in this session's matrices, made current; its entry's
    name. A matrix the session has already is made current, not loaded twice."""
    entries: dict[str, matrices.MatrixEntry] = st.session_state[session.MATRICES]
    for known, entry in entries.items():
        if entry.folder and _same(entry.folder, folder):
            st.session_state[session.CURRENT_MATRIX] = known
            return known
    matrix = matrices.load_saved(folder)
    base = name or title_of(folder) or Path(folder).name
    name, n = base, 2
    while name in entries:  # another matrix of that name (another run's, a rebuilt one)
        name, n = f"{base} ({n})", n + 1
    entries[name] = matrices.MatrixEntry(name, matrix, folder, matrix.dtype)
    st.session_state[session.CURRENT_MATRIX] = name
    return name


def open_run(folder: str) -> int:
    """The run in ``folder`` as this session's run, with the matrices saved in it (the newest
    one that carries its tuning made current); how many matrices came with it."""
    run = load_run(folder, loaded=current_encoder())
    st.session_state[session.TRAIN_RUN] = run
    st.session_state[session.TRAIN_JOB] = None
    found = list(saved_matrices(folder))  # newest first: opened oldest first
    for name in reversed(found):
        open_matrix(str(Path(folder) / MATRICES_DIR / name))
    entries = st.session_state[session.MATRICES]
    if entries:
        st.session_state[session.CURRENT_MATRIX] = matrices.default_matrix(entries, run)
    return len(found)


def may_change(item: Item) -> str | None:
    """None when this visitor may rename or delete ``item``; else why not, for the page."""
    if visitor.current_user() is not None:
        return None  # listed from their own workspace
    run = item.folder if item.kind == "run" else item.run
    if run is not None:
        secret = visitor.run_secret(run)
        if item.owner and secret is not None and owner_tag(secret) == item.owner:
            return None
        return "Only the visitor who trained this run can change it on this shared server."
    entries = st.session_state[session.MATRICES].values()
    if any(e.folder and _same(e.folder, item.folder) for e in entries):
        return None
    return "Only a matrix built in this session can be changed on this shared server."


def forget(folder: str) -> None:
    """Take what lies in the deleted ``folder`` out of this session: its matrices, its run."""
    entries: dict[str, matrices.MatrixEntry] = st.session_state[session.MATRICES]
    gone = Path(folder).resolve()
    for name in [n for n, e in entries.items() if e.folder and _under(e.folder, gone)]:
        del entries[name]
    if st.session_state.get(session.CURRENT_MATRIX) not in entries:
        st.session_state.pop(session.CURRENT_MATRIX, None)
    run = st.session_state[session.TRAIN_RUN]
    if run is not None and run.folder and _same(run.folder, folder):
        st.session_state[session.TRAIN_RUN] = None
