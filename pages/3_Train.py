"""Train: fine-tune a projection head (and optionally encoder layers) with live progress.

Training goes through the queue (embedgen.jobs): Start writes the run folder and enqueues it,
a worker process trains it, and this page watches the folder. A reloaded tab finds the
user's queued and running runs in their runs folder.
"""

import json

import streamlit as st

from embedgen import jobs
from embedgen.paths import new_run_folder, runs_dir
from embedgen.runs import RunRecord, RunStatus, list_runs, owner_tag, status_of
from embedgen.tokens import max_positions, text_lengths
from embedgen.train import FinetuneConfig, Run, Strategy
from embedgen.ui import feedback, jobpanel, library, models, pagestart, plots, session, visitor
from embedgen.ui.jobpanel import QueuedJob
from embedgen.ui.markup import code, plain
from embedgen.ui.widgets import kept, setting_input

st.set_page_config(page_title="Train · embedgen", layout="wide")
pagestart.begin()
st.title("3 · Train")


def render(job: QueuedJob) -> None:
    jobpanel.job_status(job)
    if job.status is RunStatus.QUEUED:  # a worker that died leaves the run waiting for nothing
        jobs.ensure_worker()
        trouble = jobs.worker_trouble()
        if trouble:
            st.warning(plain(trouble))
    if job.events and job.active:  # once it ends, the result below shows the curves
        st.plotly_chart(plots.training_curves(job.events), width="stretch", key="train_live")


def show_run(run: Run) -> None:
    best = run.best
    st.subheader("Result")
    loaded = models.current_encoder()
    trained_on = run.encoder.info.model_id
    if loaded is not None and loaded.info.model_id != trained_on:
        # Issue 21: the last model's result sat under the new model's form, as if it were its.
        st.info(
            plain(
                f"This is the last run, trained on {trained_on}, not on the model loaded now "
                f"({loaded.info.model_id}). Start training to make a run of this one."
            )
        )
    if run.message:
        st.caption(plain(run.message))
    if best is None:
        st.warning("No epoch finished, so there is no trained head.")
        return
    cols = st.columns(4)
    cols[0].metric("Best epoch", f"{best.epoch} / {len(run.history)}")
    cols[1].metric("Validation accuracy", f"{best.val_accuracy:.3f}")
    cols[2].metric("Validation macro-F1", f"{best.val_macro_f1:.3f}")
    cols[3].metric("Status", str(status_of(run)))
    st.plotly_chart(plots.training_curves(run.history), width="stretch", key="train_final")
    if run.confusion:
        left, _ = st.columns([1, 1])
        left.markdown(f"**Validation confusion matrix** at epoch {best.epoch}, the best")
        left.plotly_chart(plots.confusion_figure(run.confusion, run.label_names), width="stretch")
    st.caption(
        f"Run folder: {code(run.folder)} (open it from the CLI with "
        f"{code(f'embedgen matrix {run.folder}')})"
    )
    st.page_link(
        "pages/4_Matrix.py", label="Next: build the matrix", icon=":material/arrow_forward:"
    )


def read_runs() -> tuple[dict[str, str], list[RunRecord]]:
    """One pass over the runs folder: label -> folder of the runs with a trained head, and the
    folder and owner of those queued or training, newest first. A function, so that the
    records read (every run.json) are not kept in this page's globals, which the job panel's
    fragment holds on to for the session (the soak saw them pile up as runs accumulated)."""
    records = list_runs(runs_dir(visitor.current_user()))

    def model(r: RunRecord) -> str:  # its folder's or hub id's last part: "m3e-small"
        return str(r.model.get("model_id") or "?").rstrip("/").rsplit("/", 1)[-1]

    saved = {
        f"{r.name} · {model(r)} · {r.status} · F1 {r.best_f1 or 0:.3f}": r.folder
        for r in records
        if r.has_trained_head
    }
    return saved, [r for r in records if r.status.active]


saved_runs, active_runs = read_runs()
with st.expander("Open a saved run"):
    if not saved_runs:
        st.caption("No saved runs yet.")
    else:
        picked = st.selectbox("Saved runs", list(saved_runs), key=kept("train_saved_pick"))
        if st.button("Open run"):
            with st.spinner("Loading run…"):  # with its matrices (issue 21: they stayed behind)
                found = feedback.attempt(lambda: library.open_run(saved_runs[picked]))
            if found:
                st.caption(f"{found} matrices saved with it are open too.")
        st.page_link("pages/8_Library.py", label="All runs and matrices: the Library")


def same_run(
    active: list[RunRecord], model: dict[str, object], data_sha256: str, config: dict[str, object]
) -> RunRecord | None:
    """This visitor's run queued or training on ``model``, the same data and ``config`` (as
    run.json keeps them, so compared after the same trip through JSON)."""
    model, config = json.loads(json.dumps(model)), json.loads(json.dumps(config))
    for r in active:
        if r.config == config and r.model == model and r.dataset.get("sha256") == data_sha256:
            return r
    return None


def other_runs(folder: str) -> None:
    """This visitor's other runs queued or training, each to follow instead."""
    for r in mine:
        if r.folder == folder:
            continue
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        c1.caption(f"Also {r.status}: {code(r.name)} · {plain(str(r.config.get('strategy')))}")
        if c2.button("Follow it", key=f"train_follow_{r.name}"):
            st.session_state[session.TRAIN_JOB] = QueuedJob(r.folder)
            st.rerun()


def show_job(job: QueuedJob) -> None:
    """The run's panel while it waits or trains; its result (or why there is none) after."""
    if visitor.current_user() is None:  # no workspaces: the address is what owns the run
        secret = visitor.run_secret(job.folder)
        if job.active and secret is not None:
            st.query_params[visitor.RUN_PARAM] = secret
            st.caption(
                "This page's address now brings the run back after a reload, in another tab "
                "or another browser. Whoever has the address can follow and cancel it."
            )
        elif visitor.RUN_PARAM in st.query_params:
            del st.query_params[visitor.RUN_PARAM]
    jobpanel.job_panel(job, render, key="train")  # says too why a run ended without a head
    if not job.active:
        result = feedback.attempt(lambda: job.result)
        if result is not None:
            st.session_state[session.TRAIN_RUN] = result


runs_root = runs_dir(visitor.current_user())
job: QueuedJob | None = st.session_state[session.TRAIN_JOB]
# The user's own (workspaces on), else those whose secret this tab holds or its address
# carries; an address's value finds only the run it was made for, and lends nothing else.
given = visitor.address_secret()


def is_mine(r: RunRecord) -> bool:
    held = visitor.run_secret(r.folder)
    return visitor.current_user() is not None or r.owned_by(held) or r.owned_by(given)


mine = [r for r in active_runs if is_mine(r)]
if job is None:  # a new tab: the runs still queued or training, newest first
    if mine:  # the tab takes up the newest
        job = st.session_state[session.TRAIN_JOB] = QueuedJob(mine[0].folder)
        if given is not None and mine[0].owned_by(given):
            visitor.hold_secret(job.folder, given)
        if len(mine) > 1:
            st.caption(f"{len(mine) - 1} more of your runs are queued or training.")
    if len(active_runs) > len(mine):  # a shared runs folder: others' runs are not this tab's
        st.caption(
            f"{len(active_runs) - len(mine)} other run(s) are queued or training on this server; "
            "each appears under 'Open a saved run' when it ends."
        )
busy = job is not None and job.active

encoder = models.current_encoder()
data = st.session_state[session.DATA_LABELLED]
if encoder is None or data is None:
    if job is not None or st.session_state[session.TRAIN_RUN] is not None:
        if job is not None:
            show_job(job)
        run = st.session_state[session.TRAIN_RUN]
        if run is not None and (job is None or not job.active):
            show_run(run)
        st.stop()
    feedback.require(encoder, "Load a model first.", "pages/1_Model.py")
    feedback.require(data, "Choose labelled data first.", "pages/2_Data.py")

st.caption(
    f"{plain(encoder.info.model_id)} · {plain(data.source_name)}: {len(data):,} rows, "
    f"{data.num_classes} classes"
)
# The strategy decides which settings apply, so it sits outside the form: the form's widgets
# only change the page when it is submitted.
strategy = setting_input(
    st,
    FinetuneConfig,
    "strategy",
    key="train_strategy",
    help="\n\n".join(f"**{s}**: {s.description}" for s in Strategy),
)
tuned = strategy != Strategy.HEAD
st.caption(Strategy(strategy).description)
# The max length follows the data (its 95th percentile) until the user changes it.
lengths = session.session_cached(
    "train_lengths_cache",
    (encoder.info.model_id, data.source_sha256, len(data)),
    lambda: text_lengths(encoder.tokenizer, data.texts, limit=max_positions(encoder)),
)
if st.session_state.get("train_lengths_for") != lengths:
    st.session_state.pop("train_max_length", None)
    st.session_state["train_lengths_for"] = lengths
with st.form("train_form"):
    c1, c2, c3 = st.columns(3)
    dim = setting_input(c1, FinetuneConfig, "dim", key="train_dim")
    epochs = setting_input(c2, FinetuneConfig, "epochs", key="train_epochs")
    patience = setting_input(c3, FinetuneConfig, "patience", key="train_patience")
    c1, c2, c3 = st.columns(3)
    batch_size = setting_input(c1, FinetuneConfig, "batch_size", key="train_batch")
    head_lr = setting_input(
        c2, FinetuneConfig, "head_learning_rate", key="train_head_lr", format="%.0e"
    )
    max_length = setting_input(
        c3,
        FinetuneConfig,
        "max_length",
        key="train_max_length",
        default=lengths.suggested,
        max_value=max_positions(encoder),
        help=f"Tokens read per text; longer texts are cut. Your {lengths.describe()}; "
        f"{lengths.suggested} cuts about 1 text in 20.",
    )
    # Only what applies to the strategy: the rest keeps its default in the run's config.
    extra: dict[str, object] = {}
    c1, c2, _ = st.columns(3)
    if tuned:
        extra["learning_rate"] = float(
            setting_input(c1, FinetuneConfig, "learning_rate", key="train_lr", format="%.0e")
        )
    if strategy == Strategy.TOP_K:
        extra["top_k"] = int(
            setting_input(
                c2,
                FinetuneConfig,
                "top_k",
                key="train_top_k",
                max_value=max(1, encoder.info.num_layers),
            )
        )
    if strategy == Strategy.FULL:
        extra["train_embeddings"] = setting_input(
            c2, FinetuneConfig, "train_embeddings", key="train_embeddings"
        )
    if not tuned:
        extra["cache_features"] = setting_input(
            c1, FinetuneConfig, "cache_features", key="train_cache_features"
        )
        if encoder.device.type == "cpu":  # a GPU reads in bf16 already
            extra["int8"] = setting_input(c2, FinetuneConfig, "int8", key="train_int8")
    # While a run goes on, another may be queued beside it, of other settings only.
    start = st.form_submit_button(
        "Queue another run" if busy else "Start training", type="secondary" if busy else "primary"
    )
st.caption(
    f"Token lengths of {plain(data.source_name)}: median {lengths.p50}, 95th percentile "
    f"{lengths.p95}, longest {lengths.longest} ({lengths.texts:,} texts measured)."
)

if start:
    config = feedback.attempt(
        lambda: FinetuneConfig(
            strategy=strategy,
            dim=int(dim),
            epochs=int(epochs),
            batch_size=int(batch_size),
            head_learning_rate=float(head_lr),
            patience=int(patience),
            max_length=int(max_length),
            val_fraction=st.session_state[session.DATA_VAL_FRACTION],
            **extra,
        )
    )

    spec, trust_remote_code = st.session_state[session.MODEL_LOADED]
    twin = same_run(mine, encoder.info.as_dict(), data.source_sha256, config.as_dict())
    if twin is not None:  # a second click, or the same settings again: not a second run
        st.warning(
            f"A run of exactly these settings is already {twin.status}: "
            f"{code(twin.name)}. Change a setting to queue another run beside it."
        )
        st.stop()
    folder = new_run_folder(data.source_name, str(config.strategy), runs_root)
    settings = visitor.operator()
    request = jobs.TrainRequest(
        model=spec,
        folder=str(folder),
        config=config.as_dict(),
        trust_remote_code=trust_remote_code and settings.allow_remote_code,
        allow_download=settings.allow_downloads,
        allow_pickle=settings.allow_pickled_weights,
        owner=owner_tag(visitor.new_run_secret(str(folder))),
    )
    feedback.attempt(lambda: jobs.submit(request, data, encoder.info.as_dict()))
    jobs.ensure_worker()  # `streamlit run app.py` stays the one command
    st.session_state[session.TRAIN_RUN] = None
    job = st.session_state[session.TRAIN_JOB] = QueuedJob(str(folder))
    # The form above was drawn before the run existed, with Start enabled, and only the job
    # panel reruns while it trains: drawn again, Start and the settings wait for the run.
    st.rerun()

if job is not None:
    show_job(job)
    other_runs(job.folder)

run = st.session_state[session.TRAIN_RUN]
if run is not None and (job is None or not job.active):
    show_run(run)
