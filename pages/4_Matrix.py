"""Matrix: derive the embedding matrix from the model or the fine-tuned run."""

from datetime import datetime
from pathlib import Path

import streamlit as st

from embedgen.export import save_matrix
from embedgen.matrix import METHOD_DESCRIPTIONS, MatrixOptions, Method, build_matrix
from embedgen.paths import matrices_dir
from embedgen.postprocess import PostProcess
from embedgen.ui import common as ui
from embedgen.ui.jobs import Job, JobState, start_job

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

methods = [m.value for m in Method] if from_run else [Method.INPUT.value, Method.CONTEXTUAL.value]
c1, c2 = st.columns([1, 2])
# From a run the default is the method that carries the fine-tuning and gave sensible
# neighbours on a real model (contextual); from a plain model, the embedding table itself.
method = c1.radio(
    "Method",
    methods,
    index=methods.index(Method.CONTEXTUAL.value if from_run else Method.INPUT.value),
    key="matrix_method",
    help="input: untouched by fine-tuning. projected and contextual (from a run) carry it.",
)
c2.info(METHOD_DESCRIPTIONS[Method(method)])
with st.form("matrix_form"):
    c1, c2, c3 = st.columns(3)
    layer, through = model_info.num_layers, from_run
    if method == Method.CONTEXTUAL:
        layer = c1.number_input(
            "Layer",
            0,
            model_info.num_layers,
            model_info.num_layers,
            key="matrix_layer",
            help="0 is the embedding output; the last layer is the default.",
        )
        if from_run:
            through = c2.checkbox(
                "Through the trained projection",
                True,
                key="matrix_through",
                help="Off: the tuned encoder's hidden states as they are (hidden size columns).",
            )
    dtype = (c3 if method == Method.CONTEXTUAL else c1).selectbox(
        "Save as", ["float32", "float16"], key="matrix_dtype"
    )
    st.markdown("**Rows**")
    c1, c2, c3 = st.columns(3)
    drop_special = c1.checkbox("Drop special and [unused] tokens", True, key="matrix_drop_special")
    cjk_only = c2.checkbox("CJK characters only", False, key="matrix_cjk_only")
    drop_cont = c3.checkbox("Drop ## pieces", False, key="matrix_drop_cont")
    st.markdown("**Post-processing** (applied in this order)")
    c1, c2, c3, c4, c5 = st.columns(5)
    center = c1.checkbox("Mean-centre", False, key="matrix_center")
    abtt = c2.number_input("Remove top PCs", 0, 50, 0, key="matrix_abtt")
    zscore = c3.checkbox("Z-score", False, key="matrix_zscore")
    pca = c4.number_input("PCA dims (0 = off)", 0, 4096, 0, key="matrix_pca")
    l2 = c5.checkbox("L2-normalise", False, key="matrix_l2")
    job: Job | None = st.session_state[ui.MATRIX_JOB]
    build = st.form_submit_button(
        "Build matrix", type="primary", disabled=job is not None and job.active
    )

if build:
    options = ui.attempt(
        lambda: MatrixOptions(
            method=method,
            layer=int(layer),
            through_projection=through,
            drop_special=drop_special,
            cjk_only=cjk_only,
            drop_continuation=drop_cont,
            postprocess=PostProcess(
                center=center, abtt=int(abtt), zscore=zscore, pca_dims=int(pca) or None, l2=l2
            ),
        )
    )
    name = method + (f"-layer{int(layer)}" if method == "contextual" else "")
    name += "-tuned" if from_run else "-base"
    if from_run and run.folder:
        folder = Path(run.folder) / "matrices" / name
    else:
        stamp = datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
        folder = matrices_dir() / f"{stamp}_{Path(model_info.model_id).name}_{name}"

    def work(job: Job, source=source, options=options, folder=folder, name=name, dtype=dtype):  # noqa: ANN001
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
