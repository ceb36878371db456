"""embedgen in the browser: model, labelled data, fine-tuning, matrix, neighbours, export."""

import streamlit as st

from embedgen import __version__  # light: the package imports its modules lazily
from embedgen.ui import garbage, visit  # light (visit: until there is something to take up)
from embedgen.ui.navigation import PAGES, via_app  # light: no Streamlit helpers, no torch


def start() -> None:
    """The start page: the path through the app and where this session stands on it."""
    # Imported here, not at the top: torch and transformers take seconds to import, and the
    # sidebar (st.navigation below) should not wait for them on a cold server.
    from embedgen.ui import pagestart, visitor
    from embedgen.ui.markup import plain

    pagestart.begin()
    st.title("embedgen")
    st.markdown(
        "Turn a pretrained transformer into a word-embedding matrix shaped by your own labelled "
        "text. Follow the steps in order; each one is also a command (`embedgen --help`)."
    )
    user = visitor.current_user()
    if user is not None:
        st.caption(
            f"Signed in as {plain(user)}: the runs and matrices you see and save are yours alone."
        )
    polling = any(job is not None and job.active for job in _jobs())

    @st.fragment(run_every=1.0 if polling else None)
    def steps() -> None:
        for (path, _, icon, label), state in zip(PAGES, _where(), strict=True):
            c1, c2 = st.columns([1, 3])
            with c1:
                st.page_link(path, label=label, icon=icon)
            c2.caption(plain(state))
        if polling and not any(job is not None and job.active for job in _jobs()):
            st.rerun(scope="app")  # every job has ended: stop polling

    steps()
    st.caption(f"embedgen {__version__}")


def _jobs() -> list:
    """This session's background jobs: training, matrix, map, trade-off."""
    from embedgen.ui import session

    keys = (session.TRAIN_JOB, session.MATRIX_JOB, session.PROJECTION_JOB, session.TRADEOFF_JOB)
    return [st.session_state[key] for key in keys]


def _where() -> list[str]:
    """One line per page: where this session stands on it, running jobs included."""
    from embedgen.ui import jobpanel, models, session

    encoder = models.current_encoder()
    data = st.session_state[session.DATA_LABELLED]
    matrices = st.session_state[session.MATRICES]
    _, matrix_job, map_job, tradeoff_job = _jobs()
    built = f"{len(matrices)} built" if matrices else "none built"
    building, mapping = jobpanel.job_line(matrix_job), jobpanel.job_line(map_job)
    tradeoff = jobpanel.job_line(tradeoff_job)
    return [
        encoder.info.model_id if encoder else "not loaded",
        f"{data.source_name}: {len(data):,} rows, {data.num_classes} classes" if data else "none",
        _training(),
        f"{built} · building one: {building}" if building else built,
        "neighbours, similarity, analogy, UMAP" + (f" · map: {mapping}" if mapping else ""),
        "word similarity, analogies, label purity"
        + (f" · trade-off: {tradeoff}" if tradeoff else ""),
        ".npy + vocab.txt, word2vec, projector, zip",
        "your saved runs and matrices: open, rename, delete, compare",
    ]


def _training() -> str:
    """The Train step: the training under way, or the run this session has."""
    from embedgen.runs import RunStatus, status_of
    from embedgen.ui import jobpanel, session

    job, run = st.session_state[session.TRAIN_JOB], st.session_state[session.TRAIN_RUN]
    if job is not None and job.active:
        epochs = job.events  # one EpochMetrics per finished epoch
        best = f", best macro-F1 so far {max(e.val_macro_f1 for e in epochs):.3f}" if epochs else ""
        detail = f"epoch {len(epochs) + 1}{best}" if job.state is RunStatus.RUNNING else ""
        return jobpanel.job_line(job, detail) or ""
    if run is None and job is not None:
        run = job.result  # it ended while the Train page was closed
        if job.state is RunStatus.FAILED:
            return "the last training failed; the Train page says why"
        if job.state is RunStatus.INTERRUPTED:
            return "the last training was interrupted; the Train page says what was kept"
    if run is not None and run.best is not None:
        return f"{status_of(run)}, macro-F1 {run.best.val_macro_f1:.3f}"
    return "no run"


@st.cache_resource(show_spinner=False)  # once per server process
def _remove_leftovers() -> int:
    """What killed writes (an export, a matrix build) left in $EMBEDGEN_HOME, and visits
    nobody came back to for a month, removed."""
    from embedgen.atomic import remove_leftovers
    from embedgen.visits import remove_old_visits

    return len(remove_leftovers()) + remove_old_visits()


@st.cache_resource(show_spinner=False)  # once per server process
def _start_worker() -> bool:
    """A training worker from the start (EMBEDGEN_WORKER_AUTOSTART allowing): the first Start
    no longer waits for one to import torch and load the model (issue 20: 18 s in the app
    against 10 s for embedgen train on the sample set)."""
    from embedgen import jobs

    return jobs.ensure_worker() is not None


st.set_page_config(page_title="embedgen", page_icon="🔤", layout="wide")
_remove_leftovers()
_start_worker()
navigation = st.navigation(
    [st.Page(start, title="Start", icon=":material/home:", default=True)]
    + [st.Page(path, title=title, icon=icon) for path, title, icon, _ in PAGES]
)
entered = via_app.set(True)  # pages know they run through the app's navigation
try:
    navigation.run()
finally:
    via_app.reset(entered)
    visit.remember()  # what this page run changed (pagestart.begin took up the rest)
    garbage.collect_now_and_then()  # what the page runs left in cycles (old matrices)
