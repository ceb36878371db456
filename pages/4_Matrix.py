"""Matrix: derive the embedding matrix from the model or the fine-tuned run."""

from pathlib import Path

import streamlit as st

from embedgen.fields import spec
from embedgen.matrix import (
    DTYPES,
    MatrixOptions,
    Method,
    build_matrix,
    default_method,
    folder_for,
    methods_for,
    name_for,
    resolve_layer,
    save_matrix,
)
from embedgen.models import Encoder
from embedgen.postprocess import PostProcess
from embedgen.train import Run
from embedgen.ui import common as ui
from embedgen.ui.jobs import Job, JobState, start_job
from embedgen.ui.widgets import setting_input

st.set_page_config(page_title="Matrix · embedgen", layout="wide")
ui.init_state()
st.title("4 · Matrix")

encoder = ui.current_encoder()
run = st.session_state[ui.TRAIN_RUN]
if run is None and encoder is None:
    ui.require(None, "Load a model (or train / open a run) first.", "pages/1_Model.py")

sources = {}
if run is not None:
    sources[f"Fine-tuned run ({Path(run.folder or '').name or 'this session'})"] = run
if encoder is not None:
    sources[f"Model as it is ({encoder.info.model_id})"] = encoder
source_label = st.radio("Build from", list(sources), key="matrix_source")
source = sources[source_label]
from_run = source is run
model_info = (run.encoder if from_run else encoder).info

methods = [str(m) for m in methods_for(from_run)]
c1, c2 = st.columns([1, 2])
method = Method(
    c1.radio(
        "Method",
        methods,
        index=methods.index(default_method(from_run)),
        key="matrix_method",
        help="input: untouched by fine-tuning. projected and contextual (from a run) carry it.",
    )
)
c2.info(method.description)
with st.form("matrix_form"):
    c1, c2, c3 = st.columns(3)
    layer, through = None, True
    if method is Method.CONTEXTUAL:
        layer = c1.number_input(
            "Layer",
            0,
            model_info.num_layers,
            resolve_layer(None, model_info.num_layers),
            key="matrix_layer",
            help=spec(MatrixOptions, "layer").help,
        )
        if from_run:
            through = setting_input(
                c2,
                MatrixOptions,
                "through_projection",
                key="matrix_through",
                label="Through the trained projection",
            )
    dtype = (c3 if method is Method.CONTEXTUAL else c1).selectbox(
        "Save as", DTYPES, key="matrix_dtype"
    )
    st.markdown("**Rows**")
    c1, c2, c3 = st.columns(3)
    drop_special = setting_input(c1, MatrixOptions, "drop_special", key="matrix_drop_special")
    cjk_only = setting_input(c2, MatrixOptions, "cjk_only", key="matrix_cjk_only")
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
        key="matrix_pca",
        help=spec(PostProcess, "pca_dims").help,
    )
    l2 = setting_input(c5, PostProcess, "l2", key="matrix_l2")
    job: Job | None = st.session_state[ui.MATRIX_JOB]
    build = st.form_submit_button(
        "Build matrix", type="primary", disabled=job is not None and job.active
    )

if build:
    options = ui.attempt(
        lambda: MatrixOptions(
            method=method,
            layer=None if layer is None else int(layer),
            through_projection=through,
            drop_special=drop_special,
            cjk_only=cjk_only,
            drop_continuation=drop_cont,
            postprocess=PostProcess(
                center=center, abtt=int(abtt), zscore=zscore, pca_dims=int(pca) or None, l2=l2
            ),
        )
    )
    name = ui.attempt(lambda: name_for(source, options))
    folder = ui.attempt(lambda: folder_for(source, options))

    def work(
        job: Job,
        source: Encoder | Run = source,
        options: MatrixOptions = options,
        folder: Path = folder,
        name: str = name,
        dtype: str = dtype,
    ) -> ui.MatrixEntry:
        matrix = build_matrix(source, options, progress=job.report, cancel=job.cancel)
        job.stage = "saving"
        save_matrix(matrix, folder, dtype=dtype)
        return ui.MatrixEntry(name=name, matrix=matrix, folder=str(folder), dtype=dtype)

    job = st.session_state[ui.MATRIX_JOB] = start_job("Matrix", work, unit="batches")

if job is not None:
    ui.job_panel(job, ui.job_status, key="matrix")
    if job.state is JobState.DONE and job.result is not None:
        entry = job.result
        st.session_state[ui.MATRICES][entry.name] = entry

entries = st.session_state[ui.MATRICES]
if entries:
    st.subheader("Matrices in this session")
    for entry in entries.values():
        m = entry.matrix
        with st.container(border=True):
            cols = st.columns([2, 1, 1, 1])
            cols[0].markdown(f"**{entry.name}**  \n{m.manifest.get('method_description', '')}")
            cols[1].metric("Shape", f"{m.shape[0]:,} × {m.shape[1]}")
            cols[2].metric("Saved as", entry.dtype)
            cols[3].metric("Memory", ui.human_bytes(m.vectors.nbytes))
            post = ", ".join(s["step"] for s in m.manifest.get("postprocess", [])) or "none"
            layer = m.manifest.get("layer")
            where = f"layer {layer} · " if layer is not None else ""
            st.caption(
                f"Method **{m.method}** · {where}post-processing: {post} · "
                f"saved in `{entry.folder}`"
            )
    st.page_link(
        "pages/5_Explore.py",
        label="Next: explore neighbours and maps",
        icon=":material/arrow_forward:",
    )
