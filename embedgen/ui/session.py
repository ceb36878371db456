"""The session: its keys (by page), their defaults, and caches of the session's own objects.

Every page calls :func:`init_state` first, through ``pagestart.begin``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

import streamlit as st
from streamlit import config

from embedgen.fields import spec
from embedgen.train.config import FinetuneConfig
from embedgen.ui.navigation import PAGES, via_app
from embedgen.ui.visitor import current_user
from embedgen.ui.widgets import keep_values

T = TypeVar("T")

# Session keys, by page. Values are set with setdefault in init_state().
MODEL_LOADED = "model_loaded"  # (spec, trust_remote_code) of the loaded encoder
DATA_TABLE = "data_table"
DATA_LABELLED = "data_labelled"
DATA_COLUMNS = "data_columns"  # (table sha256, text column, label column) last chosen
DATA_VAL_FRACTION = "data_val_fraction"
TRAIN_JOB = "train_job"
TRAIN_RUN = "train_run"
MATRIX_JOB = "matrix_job"
MATRIX_ESTIMATE_JOB = "matrix_estimate_job"  # the estimate a build waits for: a FolderJob
MATRICES = "matrices"  # name -> MatrixEntry
CURRENT_MATRIX = "current_matrix"  # the name of the matrix Explore and Export work on
PROJECTION_JOB = "explore_projection_job"
PROJECTIONS = "explore_projections"  # (matrix key, ProjectionOptions) -> Projection
TRADEOFF_JOB = "evaluate_tradeoff_job"
EVALUATE_JOB = "evaluate_scores_job"

# The Data page's widgets, which a reloaded tab sets to what was chosen before (ui.visit).
DATA_SOURCE_KEY = "data_source"
DATA_SOURCES = ("Upload a file", "Sample dataset (400 Chinese sentences, 4 topics)")
DATA_HEADER_KEY = "data_header"
SAMPLE_DATA = Path(__file__).resolve().parents[2] / "assets" / "sample_reviews.csv"


def data_column_key(kind: str, table_sha256: str) -> str:
    """The Data page's "text" or "label" column box for the table with this sha256."""
    return f"data_{kind}_col_{table_sha256[:8]}"


DEFAULTS: dict[str, Any] = {
    MODEL_LOADED: None,
    DATA_TABLE: None,
    DATA_LABELLED: None,
    DATA_COLUMNS: None,
    DATA_VAL_FRACTION: spec(FinetuneConfig, "val_fraction").default,
    TRAIN_JOB: None,
    TRAIN_RUN: None,
    MATRIX_JOB: None,
    PROJECTION_JOB: None,
    TRADEOFF_JOB: None,
    EVALUATE_JOB: None,
}


def init_state() -> None:
    """Every page calls this first: the app's navigation, then this session's defaults."""
    _leave_pages_directory_mode()
    keep_values()
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    st.session_state.setdefault(MATRICES, {})
    st.session_state.setdefault(PROJECTIONS, {})
    current_user()  # with workspaces on, a visitor without a name goes no further


def _leave_pages_directory_mode() -> None:
    """Rerun a page that Streamlit ran the old way, through app.py's ``st.navigation``.

    Until some session has run app.py, Streamlit treats ``pages/`` as an old-style
    multipage folder: a bookmarked ``/Data`` on a fresh server runs pages/2_Data.py on its
    own, with a sidebar of file names headed "app" instead of the app's navigation, for
    every session until someone opens the start page. Calling ``st.navigation`` ends that
    mode for the server (its documented effect: the pages folder is then disregarded), and
    the rerun goes through app.py, which shows the bookmarked page. Once per session, so a
    page started on its own (``streamlit run pages/2_Data.py``) still runs.
    """
    if via_app.get() or st.session_state.get(_LEFT_PAGES_MODE):
        return
    if config.get_option("global.appTest"):  # AppTest reaches pages by script, in that mode
        return
    st.session_state[_LEFT_PAGES_MODE] = True
    # The app's own pages, so that this run's page (the bookmarked one) is found again.
    pages = [st.Page(_start_placeholder, title="Start", default=True)]
    pages += [st.Page(path, title=title, icon=icon) for path, title, icon, _ in PAGES]
    st.navigation(pages, position="hidden")
    st.rerun()


def _start_placeholder() -> None:
    """Stands for app.py's start page in the navigation that ends the pages-folder mode."""


_LEFT_PAGES_MODE = "ui_left_pages_folder_mode"


def session_cached(slot: str, key: Hashable, compute: Callable[[], T], *, keep: int = 1) -> T:
    """Return ``compute()``, computed once per session for ``key`` while ``key`` is among the
    ``keep`` keys last asked for in ``slot`` (a session-state key).

    For a session's own large objects (an uploaded table, the examples prepared from it):
    unlike ``st.cache_data``, which hands every rerun a fresh unpickled copy, this returns the
    stored object itself, so a rerun after a widget change costs nothing. Errors are not
    stored: the next rerun tries again.
    """
    store: dict[Hashable, Any] = st.session_state.setdefault(slot, {})
    if key in store:
        store[key] = store.pop(key)  # the most recent last
        return store[key]
    value = compute()
    store[key] = value
    while len(store) > keep:
        del store[next(iter(store))]
    return value
