"""Session state, cached loaders and the pieces every page draws the same way."""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import streamlit as st
from streamlit import config

from embedgen.budget import human_size
from embedgen.config import OperatorSettings, operator_settings, resolve_quietly
from embedgen.device import DeviceInfo, device_info
from embedgen.errors import EmbedgenError
from embedgen.fields import spec
from embedgen.matrix import EmbeddingMatrix
from embedgen.models import Encoder, load_encoder
from embedgen.paths import users_dir
from embedgen.train.config import FinetuneConfig
from embedgen.ui import PAGES, via_app
from embedgen.ui.jobs import Job, JobState, QueuedJob
from embedgen.ui.widgets import keep_values, kept

log = logging.getLogger(__name__)
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
MATRICES = "matrices"  # name -> MatrixEntry
PROJECTION_JOB = "explore_projection_job"
PROJECTIONS = "explore_projections"  # (matrix key, ProjectionOptions) -> Projection
TRADEOFF_JOB = "evaluate_tradeoff_job"
USER = "ui_user"  # the visitor's name, once found (workspaces on)
TRAIN_SECRETS = "train_secrets"  # run folder -> the secret this tab holds for it (run_secret)
RUN_PARAM = "run"  # the Train page's address carries the followed run's secret: ?run=...

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
}


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
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


def default_matrix(entries: dict[str, MatrixEntry], run: Any) -> str:
    """The matrix a page offers first: the newest one that carries the current run's tuning,
    else the newest one (so an untuned matrix built last is not one click from a download)."""
    names = list(entries)
    if run is not None and run.folder:
        for name in reversed(names):
            m = entries[name].matrix.manifest
            made_by = (m.get("run") or {}).get("folder")
            if m.get("reflects_tuning") and str(made_by) == str(run.folder):
                return name
    return names[-1]


def matrix_choice(label: str, entries: dict[str, MatrixEntry], *, key: str, where: Any = st) -> str:
    """A select box of this session's matrices, each shown by what it is, starting at
    :func:`default_matrix` and keeping the user's choice across pages."""
    names = list(entries)
    if st.session_state.get(key) not in names:
        st.session_state.pop(key, None)  # a choice from before a rebuild or a new session
    first = default_matrix(entries, st.session_state[TRAIN_RUN])
    return where.selectbox(
        label,
        names,
        index=names.index(first),
        key=kept(key),
        format_func=lambda n: f"{entries[n].matrix.label}  ({n})",
    )


human_bytes = human_size  # 1536 -> "1.5 KiB", as the library's logs say it


def human_seconds(seconds: float) -> str:
    """75 -> "1 min 15 s"; 4000 -> "1 h 7 min"."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


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


def operator() -> OperatorSettings:
    """What the operator lets visitors do; a broken settings file stops the page.

    Read on every rerun (a small file), so the operator's changes apply without a restart.
    """
    try:
        return operator_settings()
    except EmbedgenError as exc:
        log.error("Operator settings: %s", exc)
        st.error(
            "This server's settings cannot be read, so the app stops here. The operator can "
            "see why in the server log."
        )
        st.stop()


def current_user() -> str | None:
    """The visitor's name when the operator gives each user a workspace; None otherwise (the
    shared home).

    Found once per session (:func:`user_name`), so a session keeps one workspace. With
    workspaces on and no name, the page says how to get one and stops: a visitor is never
    put in the shared home instead.
    """
    settings = operator()
    if not settings.workspaces:
        return None
    name = st.session_state.get(USER)
    if name is None:
        name = user_name(st.user.to_dict(), st.context.headers.get_all(settings.user_header))
        if name is None:
            st.error(
                "This server gives each user a workspace of their own, and this visit brings "
                "no user name. Sign in, or open the app through the address your team uses: "
                f"its proxy must send the {settings.user_header} header. The operator of this "
                "server can tell you which."
            )
            if "is_logged_in" in st.user:  # Streamlit's own sign-in is set up
                st.button("Sign in", on_click=st.login)
            st.stop()
        st.session_state[USER] = name
    return name


_SECRET = re.compile(r"[A-Za-z0-9_-]{16,64}")


def new_run_secret(folder: str) -> str:
    """A new secret for the run this tab starts in ``folder``: made here, on the server, and
    kept for this tab; the run keeps only its hash (``runs.owner_tag``).

    The Train page puts the secret in its address (``?run=``) while the run is queued or
    training, so a reloaded tab, a tab reopened from the history or the address pasted into
    another browser takes the run up again: follows it and can cancel it. Whoever has the
    address owns that run, and only that run: each run gets its own secret, never one taken
    from an address (a visitor sent a link with a value someone chose would otherwise start
    runs its chooser could cancel).
    """
    secret = secrets.token_urlsafe(18)
    st.session_state.setdefault(TRAIN_SECRETS, {})[folder] = secret
    return secret


def address_secret() -> str | None:
    """The well-formed secret in this page's address (``?run=``), or None. It proves nothing
    by itself: it finds a run only when the run keeps its hash (``runs.owned_by``)."""
    given = st.query_params.get(RUN_PARAM)
    return given if given and _SECRET.fullmatch(given) else None


def run_secret(folder: str) -> str | None:
    """The secret this tab holds for the run in ``folder``: made when the tab started it, or
    found in the address and matched against the run's hash (``hold_secret``)."""
    return st.session_state.get(TRAIN_SECRETS, {}).get(folder)


def hold_secret(folder: str, secret: str) -> None:
    """Keep ``secret`` for the run in ``folder``; the caller checked that the run's hash
    matches it, so it is that run's own secret, made by the server when the run started."""
    st.session_state.setdefault(TRAIN_SECRETS, {})[folder] = secret


def user_name(user_info: Mapping[str, Any], header_values: Sequence[str]) -> str | None:
    """The name a visitor's workspace is kept under: the email (else the ``sub`` id) of a user
    signed in with Streamlit's authentication (``st.user``), else the value of the operator's
    user header; None when neither gives one.

    A header sent more than once gives no name: a proxy that adds its header to one the
    browser forged would leave the choice to their order.
    """
    if user_info.get("is_logged_in") is True:
        for claim in ("email", "sub"):
            value = user_info.get(claim)
            if isinstance(value, str) and value.strip():
                return value.strip()
    if len(header_values) == 1 and header_values[0].strip():
        return header_values[0].strip()
    return None


def load_model(spec: str, trust_remote_code: bool = False) -> Encoder:
    """The encoder a visitor asked for, within what the operator allows."""
    path, users = resolve_quietly(spec), resolve_quietly(users_dir())
    # Who asks decides only for folders among the workspaces: there each visitor gets a cache
    # entry (an owner's loaded model is not handed to others); anywhere else all share one.
    among_workspaces = path is not None and users is not None and path.is_relative_to(users)
    user = current_user() if among_workspaces else None
    return cached_encoder(spec, trust_remote_code, operator(), user)


@st.cache_resource(show_spinner=False, max_entries=3)
def cached_encoder(
    spec: str, trust_remote_code: bool, settings: OperatorSettings, user: str | None = None
) -> Encoder:
    """One loaded encoder per (spec, remote-code choice, settings, user) for the whole server.

    Never mutated. The settings are part of the key, so an operator's change applies to
    models loaded before it too. ``user`` is the visitor for a folder among the workspaces
    (:func:`load_model`), None for everything else.
    """
    from embedgen.device import resolve_device

    return load_encoder(
        spec,
        trust_remote_code=trust_remote_code and settings.allow_remote_code,
        allow_download=settings.allow_downloads,
        allowed_roots=settings.allowed_roots,
        user=user,
        device=resolve_device("auto"),
    )


def allowed_folder(spec: str, what: str) -> Path:
    """``spec`` resolved, when the operator lets this visitor open it; otherwise one message."""
    return operator().allowed_folder(spec, what, current_user())


@st.cache_data(show_spinner=False, ttl=30)
def cached_device_info() -> DeviceInfo:
    return device_info("auto")


def current_encoder() -> Encoder | None:
    """The encoder chosen on the Model page, or None when none is loaded."""
    loaded = st.session_state.get(MODEL_LOADED)
    if loaded is None:
        return None
    try:
        return load_model(*loaded)
    except EmbedgenError:
        return None


def require(value: Any, message: str, page: str | None = None) -> Any:
    """Return ``value``, or show what to do first and stop the page."""
    if value is None:
        st.info(message)
        if page:
            st.page_link(
                page,
                label=f"Go to {Path(page).stem.split('_', 1)[-1]}",
                icon=":material/arrow_forward:",
            )
        st.stop()
    return value


def show_error(exc: BaseException) -> None:
    """Our errors as they are; anything else as a short note (the traceback goes to the log)."""
    if isinstance(exc, EmbedgenError):
        st.error(str(exc))
    else:
        log.exception("Unexpected error in a page", exc_info=exc)
        st.error(
            f"Something went wrong ({type(exc).__name__}: {exc}). The details are in the "
            "server log; please report it."
        )


def attempt(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; on failure show the error and stop the page."""
    try:
        return fn()
    except Exception as exc:  # shown to the user, logged when it is a bug
        show_error(exc)
        st.stop()


# How often a running job's panel redraws. Each redraw is a script run in the server and a
# re-render in the browser, both taking CPU from the job on a small machine.
POLL_SECONDS = 1.0


def job_panel(job: Job | QueuedJob, render: Callable[[Any], None], *, key: str) -> None:
    """Draw ``render(job)`` and, while the job is active, redraw it every second.

    When the job ends the whole page reruns once, so everything that depends on its result
    (tables, buttons) appears without a click. That holds too for a job that ended before
    its panel was first drawn (a quick PCA map): the page above the panel read its result
    while it was still running, so it needs that one rerun as well.

    The fragment is drawn inside a container of its own. Without it, Streamlit 1.67 often
    dropped the first element after the panel when the fragment asked for that rerun (14 of
    30 tries; tests/test_browser_job_panel.py); with it, 0 of 55.
    """
    if not job.active and not job.end_shown:
        job.end_shown = True
        st.rerun(scope="app")
    polling = job.active

    @st.fragment(run_every=POLL_SECONDS if polling else None)
    def panel() -> None:
        render(job)
        if polling and not job.active:
            job.end_shown = True
            st.rerun(scope="app")
        if polling and st.button("Cancel", key=f"{key}_cancel", disabled=job.cancel.is_set()):
            job.request_cancel()
            st.toast("Stopping after the current batch…")

    with st.container():  # see the docstring
        panel()


def job_status(job: Job | QueuedJob) -> None:
    """A progress bar with the stage and elapsed time; messages when it ended badly."""
    label = f"{job.name}: {job.state}"
    if job.stage and job.active:
        label += f" · {job.stage}"
    label += f" · {job.elapsed:.0f} s"
    if job.total and job.active:
        label += f" · {job.done:,}/{job.total:,} {job.unit}".rstrip()
        if job.rate is not None:
            rate = f"{job.rate:,.0f}" if job.rate >= 100 else f"{job.rate:.1f}"
            label += f" · {rate} {job.unit or 'steps'}/s"
        if job.eta is not None:
            label += f" · about {human_seconds(job.eta)} left"
    st.progress(job.fraction if job.state is not JobState.DONE else 1.0, text=label)
    if job.state is JobState.FAILED:
        st.error(job.error or f"{job.name} failed.")
    elif job.state is JobState.CANCELLED:
        st.warning(job.error or f"{job.name} was cancelled.")


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


def job_line(job: Job | QueuedJob | None, detail: str = "") -> str | None:
    """One line on a background job while it is queued or running ("running · epoch 2 ·
    40% · about 1 min left"), for pages other than the job's own; ``None`` otherwise."""
    if job is None or not job.active:
        return None
    parts = [str(job.state), detail, job.stage]
    if job.total:
        parts.append(f"{job.fraction:.0%}")
    if job.eta is not None:
        parts.append(f"about {human_seconds(job.eta)} left")
    return " · ".join(p for p in parts if p)
