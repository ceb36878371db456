"""Matrix: derive the embedding matrix from the model or the fine-tuned run.

The estimate and the build are queue tasks (:mod:`embedgen.tasks`) run by a worker, watched
through their job folders: this server never reads the model for them.
"""

import hashlib
from dataclasses import replace
from pathlib import Path

import streamlit as st

from embedgen import jobs, tasks
from embedgen.budget import human_size
from embedgen.fields import spec
from embedgen.matrix import (
    DEFAULT_LABEL_WEIGHT,
    DTYPES,
    BuildEstimate,
    IfSaved,
    MatrixOptions,
    Method,
    Target,
    default_method,
    describe,
    methods_for,
    resolve_layer,
)
from embedgen.models import Encoder
from embedgen.postprocess import PostProcess
from embedgen.runs import RunStatus
from embedgen.tokens import mostly_cjk
from embedgen.train import Run
from embedgen.ui import (
    feedback,
    jobpanel,
    library,
    matrices,
    models,
    pagestart,
    plots,
    session,
    visitor,
)
from embedgen.ui.jobpanel import FolderJob
from embedgen.ui.markup import code, plain
from embedgen.ui.widgets import kept, setting_input
from embedgen.words import Corpus, WordOptions, words_from_list

PENDING = "matrix_pending"  # a build that waits for the user's answer (replace? slow?)
# How a run's training reaches contextual and aggregated rows (MatrixOptions.label_weight).
RUN_LABELS = {
    "keep": "Keep the model's word similarity, add the labels",
    "projection": "Tuned projection only: labels first, word similarity lost",
    "raw": "The encoder's own states, no labels",
}
SLOW_SECONDS = 120  # builds estimated to take longer are confirmed first


ESTIMATE_JOB = session.MATRIX_ESTIMATE_JOB  # the estimate a build waits for (kept by the visit)


def job_source(source: Encoder | Run) -> tasks.Source:
    """What a worker builds from: this run's folder, or the model loaded on the Model page,
    with the operator's permissions."""
    settings = visitor.operator()
    spec, trust = st.session_state[session.MODEL_LOADED] or ("", False)
    trust = bool(trust) and settings.allow_remote_code
    if isinstance(source, Run):
        return tasks.Source(
            run=str(source.folder),
            trust_remote_code=trust,
            allow_pickle=settings.allow_pickled_weights,
        )
    return tasks.Source(
        model=spec or source.info.model_id,
        trust_remote_code=trust,
        allow_download=settings.allow_downloads,
        allow_pickle=settings.allow_pickled_weights,
    )


def start_build(pending: dict, if_saved: IfSaved = IfSaved.REFUSE) -> FolderJob:
    """Queue the build for a worker; a matrix saved meanwhile is replaced only when asked."""
    asked = replace(pending["request"], if_saved=if_saved, estimate=pending["estimate"])
    user = visitor.current_user()
    record = feedback.attempt(
        lambda: tasks.submit(
            "matrix", asked, words=pending["words"], corpus=pending["corpus"], user=user
        )
    )
    jobs.ensure_worker()
    job = st.session_state[session.MATRIX_JOB] = FolderJob(
        record.folder, "Matrix", take=matrices.entry_of_job
    )
    return job


def estimated(ejob: FolderJob) -> None:
    """The estimate has come back: build at once, or ask first (a matrix saved there, or a
    build over SLOW_SECONDS)."""
    result = ejob.result
    estimate = BuildEstimate(**result["estimate"]) if result.get("estimate") else None
    target = Target(Path(result["target"]), result["rebuildable"], result["existing"])
    asked = ejob.tag
    request = replace(
        asked["request"],
        target=result["target"],
        rebuildable=result["rebuildable"],
        word_options=None,  # the words the estimate found go along
    )
    pending = {
        "request": request,
        "words": tasks.words_of(ejob.folder),
        "corpus": asked["corpus"],
        "estimate": estimate,
        "target": target,
    }
    if target.existing is not None or (estimate is not None and estimate.seconds > SLOW_SECONDS):
        st.session_state[PENDING] = pending  # asked below; nothing is built or replaced yet
    else:
        start_build(pending)


st.set_page_config(page_title="Matrix · embedgen", layout="wide")
pagestart.begin()
st.title("4 · Matrix")

encoder = models.current_encoder()
run = st.session_state[session.TRAIN_RUN]
if run is None and encoder is None:
    feedback.require(None, "Load a model (or train / open a run) first.", "pages/1_Model.py")

sources = {}
if run is not None:
    sources[f"Fine-tuned run ({plain(Path(run.folder or '').name or 'this session')})"] = run
if encoder is not None:
    sources[f"Model as it is ({plain(encoder.info.model_id)})"] = encoder
source_label = st.radio("Build from", list(sources), key=kept("matrix_source"))
source = sources[source_label]
from_run = source is run
model_info = (run.encoder if from_run else encoder).info

data = st.session_state[session.DATA_LABELLED]
ROW_CHOICES = ["The model's tokens", "Words of your data", "A word list"]
rows_are = st.radio(
    "Rows",
    ROW_CHOICES if data is not None else [ROW_CHOICES[0], ROW_CHOICES[2]],
    horizontal=True,
    key=kept("matrix_rows"),
    help="Tokens: the model's vocabulary (characters for bert-base-chinese). Words: your data's "
    "words (segmented with jieba) or your own list; each word gets one row.",
)
word_rows = rows_are != ROW_CHOICES[0]
word_list = None
if rows_are == ROW_CHOICES[2]:
    c1, c2 = st.columns(2)
    listed = c1.file_uploader(
        "Word list (one word per line, UTF-8)", type=["txt"], key="matrix_list"
    )
    pasted = c2.text_area("…or paste words, one per line", key=kept("matrix_pasted"), height=100)
    if listed is not None:
        word_list = feedback.attempt(lambda: words_from_list(listed.getvalue(), name=listed.name))
    elif pasted.strip():
        word_list = feedback.attempt(lambda: words_from_list(pasted, name="pasted words"))
    else:
        feedback.require(None, "Upload a word list or paste words to build word rows.")

methods = [str(m) for m in methods_for(from_run) if word_rows or not Method(m).needs_words]
c1, c2 = st.columns([1, 2])
default = default_method(from_run, word_rows)
method = Method(
    c1.radio(
        "Method",
        methods,
        index=methods.index(default),
        # each kind of rows keeps its own choice
        key=kept("matrix_method_words" if word_rows else "matrix_method"),
        help="input: untouched by fine-tuning. projected, contextual and aggregated (from a run) "
        "carry it.",
    )
)
c2.info(method.description)
# A layer chosen for one model means another layer of the next (4 of m3e-small's 4 layers is
# not the last of e5-small's 12): each model gets its own layer boxes, so a new model starts
# at its own default and going back to a model finds the choice made for it. (Dropping the
# kept value when the model changed held in AppTest, but the browser walk still offered e5's
# matrix at layer 4 after going from m3e's run to e5 "as it is".)
model_tag = hashlib.sha256(f"{model_info.model_id}\n{model_info.num_layers}".encode()).hexdigest()
layer_key, layers_key = f"matrix_layer_{model_tag[:12]}", f"matrix_layers_{model_tag[:12]}"
with st.form("matrix_form"):
    c1, c2, c3 = st.columns(3)
    layer, layers, through, label_weight = None, "", True, 0.0
    if method.reads_context:
        layer = c1.number_input(
            "Layer",
            0,
            model_info.num_layers,
            resolve_layer(None, model_info.num_layers),
            key=kept(layer_key),
            help=spec(MatrixOptions, "layer").help,
        )
        layers = c1.text_input(
            "…or the mean of layers (A-B)",
            key=kept(layers_key),
            placeholder=f"e.g. {max(0, model_info.num_layers - 3)}-{model_info.num_layers}",
            help=spec(MatrixOptions, "layers").help,
        )
        if from_run:
            how = c2.radio(
                "The run's labels",
                list(RUN_LABELS),
                key=kept("matrix_run_labels"),
                format_func=RUN_LABELS.get,
                help="How the training reaches the rows. Keeping the model's word similarity "
                f"(label weight {DEFAULT_LABEL_WEIGHT:g}) was chosen on data the choice never "
                "saw: it keeps 99-103% of the untuned word similarity and raises label purity "
                "(BENCHMARKS.md). The tuned projection alone groups words by label and loses "
                "11-51 points of word similarity.",
            )
            through, label_weight = how != "raw", 0.0
            if how == "keep":
                label_weight = c2.number_input(
                    "Label weight",
                    0.0,
                    100.0,
                    DEFAULT_LABEL_WEIGHT,
                    step=0.05,
                    key=kept("matrix_label_weight"),
                    help=spec(MatrixOptions, "label_weight").help,
                )
    dtype = (c3 if method.reads_context else c1).selectbox(
        "Save as", DTYPES, key=kept("matrix_dtype")
    )
    words_from_data = rows_are == ROW_CHOICES[1]
    corpus_contexts = generated = window = in_corpus = 0
    if word_rows:
        st.markdown("**Words**")
        c1, c2, c3 = st.columns(3)
        if words_from_data:
            min_count = setting_input(c1, WordOptions, "min_count", key="matrix_min_count")
            top_n = c2.number_input(
                "Most frequent words (0 = all)", 0, 10_000_000, 0, key=kept("matrix_top_n")
            )
            cjk_words = setting_input(c3, WordOptions, "cjk_words", key="matrix_cjk_words")
        if method is Method.AGGREGATED:
            c1, c2, c3, c4 = st.columns(4)
            corpus_contexts = setting_input(
                c1, MatrixOptions, "corpus_contexts", key="matrix_corpus_contexts"
            )
            window = setting_input(c2, MatrixOptions, "context_chars", key="matrix_window")
            generated = setting_input(
                c3, MatrixOptions, "generated_contexts", key="matrix_generated"
            )
            in_corpus = setting_input(
                c4, MatrixOptions, "generated_in_corpus", key="matrix_generated_in_corpus"
            )
            if data is None:
                st.caption("No data is loaded, so words are read in generated sentences only.")
        drop_special, cjk_only, drop_cont = True, False, False
    else:
        st.markdown("**Rows**")
        c1, c2, c3 = st.columns(3)
        drop_special = setting_input(c1, MatrixOptions, "drop_special", key="matrix_drop_special")
        # Chinese data: the model's other tokens only slow the matrix and crowd neighbour
        # lists with other scripts. multilingual-e5-small's default contextual matrix on 2 CPU
        # cores: 249,997 tokens 774 s in the app (240 s from the CLI); 17,134 CJK tokens 45 s.
        chinese = data is not None and mostly_cjk(data.texts)
        # The default follows the data; a value kept from other data is not the user's choice.
        data_id = None if data is None else (data.source_name, len(data))
        if st.session_state.get("matrix_cjk_data") != data_id:
            st.session_state.pop("matrix_cjk_only", None)
            st.session_state["matrix_cjk_data"] = data_id
        cjk_only = setting_input(
            c2, MatrixOptions, "cjk_only", key="matrix_cjk_only", default=chinese or None
        )
        drop_cont = setting_input(c3, MatrixOptions, "drop_continuation", key="matrix_drop_cont")
    st.markdown("**Post-processing** (applied in this order)")
    c1, c2, c3, c4, c5 = st.columns(5)
    center = setting_input(c1, PostProcess, "center", key="matrix_center")
    abtt = setting_input(c2, PostProcess, "abtt", key="matrix_abtt", max_value=50)
    zscore = setting_input(c3, PostProcess, "zscore", key="matrix_zscore")
    pca = c4.number_input(
        "PCA dims (0 = off)",
        0,
        int(spec(PostProcess, "pca_dims").high),
        0,
        key=kept("matrix_pca"),
        help=spec(PostProcess, "pca_dims").help,
    )
    l2 = setting_input(c5, PostProcess, "l2", key="matrix_l2")
    job: FolderJob | None = st.session_state[session.MATRIX_JOB]
    build = st.form_submit_button(
        "Build matrix", type="primary", disabled=job is not None and job.active
    )

if build:
    extra = {}
    if method is Method.AGGREGATED:
        extra = {
            "corpus_contexts": int(corpus_contexts),
            "context_chars": int(window),
            "generated_contexts": int(generated),
            "generated_in_corpus": int(in_corpus),
        }
    options = feedback.attempt(
        lambda: MatrixOptions(
            method=method,
            layer=None if layer is None else int(layer),
            layers=layers.strip() or None,
            through_projection=through,
            label_weight=float(label_weight),
            drop_special=drop_special,
            cjk_only=cjk_only,
            drop_continuation=drop_cont,
            postprocess=PostProcess(
                center=center, abtt=int(abtt), zscore=zscore, pca_dims=int(pca) or None, l2=l2
            ),
            **extra,
        )
    )
    corpus = Corpus.of(data.texts, data.source_name) if word_rows and data else None
    word_options = None
    if words_from_data:  # found by the worker, so the build is timed (and asked about) like others
        word_options = feedback.attempt(
            lambda: WordOptions(
                min_count=int(min_count), top_n=int(top_n) or None, cjk_words=cjk_words
            )
        )
    user = visitor.current_user()
    request = tasks.MatrixRequest(
        job_source(source), options, user=user, dtype=dtype, word_options=word_options
    )
    st.session_state.pop(PENDING, None)
    record = feedback.attempt(
        lambda: tasks.submit("estimate", request, words=word_list, corpus=corpus, user=user)
    )
    jobs.ensure_worker()
    st.session_state[ESTIMATE_JOB] = FolderJob(
        record.folder, "Estimate", tag={"request": request, "corpus": corpus}
    )

ejob: FolderJob | None = st.session_state.get(ESTIMATE_JOB)
if ejob is not None:
    if ejob.state is RunStatus.FINISHED:
        st.session_state[ESTIMATE_JOB] = None
        estimated(ejob)
        job = st.session_state[session.MATRIX_JOB]
    else:
        jobpanel.job_panel(ejob, jobpanel.job_status, key="matrix_estimate")

pending = st.session_state.get(PENDING)
if pending is not None:
    with st.container(border=True):
        target, estimate = pending["target"], pending["estimate"]
        if target.existing is not None:
            st.warning(
                f"A matrix named **{plain(target.name)}** is already saved"
                + (f" (built {target.built})" if target.built else "")
                + f" in {code(target.folder)}. Open it, replace it, or keep both?"
            )
        if estimate is not None and estimate.seconds > SLOW_SECONDS:
            tip = ""
            if not pending["request"].options.cjk_only and pending["words"] is None:
                tip = " Ticking **CJK tokens only** keeps the Chinese rows and is much faster."
            st.warning(f"This matrix will take {estimate.describe()} on this machine.{tip}")
        c0, c1, c2, c3 = st.columns(4)
        if target.existing is not None:
            # The saved one is what these settings build: opening it costs nothing.
            if c0.button("Open the saved one", type="primary"):
                del st.session_state[PENDING]
                feedback.attempt(lambda: library.open_matrix(str(target.folder)))
                st.rerun()
            if c1.button("Replace it"):
                del st.session_state[PENDING]
                job = start_build(pending, IfSaved.REPLACE)
            if c2.button(f"Keep both (save as {plain(target.beside().name)})"):
                del st.session_state[PENDING]
                job = start_build(pending, IfSaved.KEEP_BOTH)
        elif c1.button("Build it", type="primary"):
            del st.session_state[PENDING]
            job = start_build(pending)
        if c3.button("Don't build"):
            del st.session_state[PENDING]
            st.rerun()


def show_tradeoff(run: Run, weight: float) -> None:
    """Word similarity against label purity for this run's ways of adding its labels, the
    point of the weight chosen above ringed (the same job as Evaluate's trade-off tab)."""
    data = st.session_state[session.DATA_LABELLED]
    st.caption(
        "Each point is a way to build this run's word rows: the untuned rows, the tuned "
        "projection alone, the baseline (untuned ‖ α · tuned) and the untuned rows with the "
        "labels added at a weight. Up is more of the model's word similarity kept, right is "
        "more label purity (the words that lean to a label in your data having neighbours that "
        "lean to it too)."
    )
    if data is None:
        st.info("Choose the labelled data the run was trained on (Data page) to draw it.")
        return
    key = ("tradeoff", run.folder, data.source_sha256, ())
    tjob: FolderJob | None = st.session_state[session.TRADEOFF_JOB]
    if st.button("Compute the trade-off", disabled=tjob is not None and tjob.active):
        tjob = st.session_state[session.TRADEOFF_JOB] = jobpanel.queue_tradeoff(
            run, data, [], tag=key
        )
    if tjob is not None and tjob.tag == key:
        jobpanel.job_panel(tjob, jobpanel.job_status, key="matrix_tradeoff")
        if tjob.state is RunStatus.FINISHED and tjob.result:
            figure = plots.tradeoff_figure(tjob.result, chosen=weight)
            st.plotly_chart(figure, width="stretch", key="matrix_tradeoff_plot")
            jobpanel.tradeoff_notes(tjob.result)


if from_run and method.reads_context:
    with st.expander("Where the label weight puts you: word similarity against label purity"):
        show_tradeoff(run, float(label_weight))

if job is not None:
    jobpanel.job_panel(job, jobpanel.job_status, key="matrix")
    if job.state is RunStatus.FINISHED and job.result is not None:
        entry = job.result
        st.session_state[session.MATRICES][entry.name] = entry

entries = st.session_state[session.MATRICES]
if entries:
    st.subheader("Matrices in this session")
    for entry in entries.values():
        m = entry.matrix
        with st.container(border=True):
            cols = st.columns([3, 1, 1])
            about = m.method.description if m.method is not None else ""
            cols[0].markdown(f"**{plain(m.label)}**  \n{code(entry.name)} · {plain(about)}")
            cols[1].metric("Rows", f"{m.shape[0]:,}")
            cols[2].metric("Dimensions", f"{m.shape[1]:,}")
            saved = (
                f"saved as {entry.dtype} in {code(entry.folder)}"
                if entry.folder
                else "not saved: more than the disk space the operator of this server gives "
                "matrices built from a model; it stays for this session (export it to keep it)"
            )
            held = "read from its file" if m.mapped else "in memory"
            st.caption(f"{plain(describe(m))} · {human_size(m.vectors.nbytes)} {held} · {saved}")
    st.page_link(
        "pages/5_Explore.py",
        label="Next: explore neighbours and maps",
        icon=":material/arrow_forward:",
    )
