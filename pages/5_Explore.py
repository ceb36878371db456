"""Explore: neighbours, similarity, analogies, and a map of the whole vocabulary."""

import pandas as pd
import streamlit as st

from embedgen.errors import EmbedgenError
from embedgen.matrix import EmbeddingMatrix, load_matrix
from embedgen.neighbours import NeighbourIndex
from embedgen.projection import Projection, ProjectionOptions, Reducer, project
from embedgen.ui import colours, plots
from embedgen.ui import common as ui
from embedgen.ui.jobs import Job, JobState, start_job, warm_up_umap_once

st.set_page_config(page_title="Explore · embedgen", layout="wide")
ui.init_state()
st.title("5 · Explore")


@st.cache_resource(show_spinner=False, max_entries=8)
def neighbour_index(key: str, _entry: ui.MatrixEntry) -> NeighbourIndex:
    return NeighbourIndex(_entry.matrix)


entries: dict[str, ui.MatrixEntry] = st.session_state[ui.MATRICES]
with st.expander("Open a saved matrix folder"):
    folder = st.text_input(
        "Folder (holds matrix.npy, vocab.txt, manifest.json)", key="explore_open"
    )
    if st.button("Open", disabled=not folder.strip()):
        matrix = ui.attempt(lambda: load_matrix(ui.allowed_folder(folder.strip(), "matrix folder")))
        name = f"{matrix.method} ({folder.strip().rstrip('/').rsplit('/', 1)[-1]})"
        dtype = str(matrix.manifest.get("dtype", "float32"))
        entries[name] = ui.MatrixEntry(name, matrix, folder.strip(), dtype)
        st.rerun()

if not entries:
    ui.require(None, "Build a matrix first, or open a saved one above.", "pages/4_Matrix.py")

names = list(entries)
c1, c2 = st.columns(2)
name_a = c1.selectbox("Matrix", names, index=len(names) - 1, key="explore_a")
compare = ["(none)"] + [n for n in names if n != name_a]
name_b = c2.selectbox("Compare with", compare, index=min(1, len(compare) - 1), key="explore_b")
shown = [entries[name_a]] + ([entries[name_b]] if name_b != "(none)" else [])
indexes = [neighbour_index(e.key, e) for e in shown]


def neighbour_table(index: NeighbourIndex, word: str, k: int) -> None:
    try:
        lookup = index.lookup(word)
        found = index.top_k(word, k=k)
    except EmbedgenError as exc:
        st.warning(str(exc))
        return
    if lookup.pooled:
        st.caption(f"Not a single token: the mean of {' + '.join(lookup.pieces)}.")
    scores_table(found, height=min(600, 38 + 35 * len(found)))


def scores_table(found: list, height: int | None = None) -> None:
    """Ranked tokens with cosines shown to four places."""
    st.dataframe(
        pd.DataFrame(
            {"token": [n.token for n in found], "cosine": [n.score for n in found]},
            index=range(1, len(found) + 1),
        ),
        column_config={"cosine": st.column_config.NumberColumn(format="%.4f")},
        width="stretch",
        height=height or "auto",
    )


tab_nn, tab_sim, tab_analogy, tab_map = st.tabs(["Neighbours", "Similarity", "Analogy", "Map"])
with tab_nn:
    c1, c2 = st.columns([3, 1])
    word = c1.text_input("Token or word", value="好", key="explore_word")
    k = c2.number_input("How many", 1, 200, 10, key="explore_k")
    cols = st.columns(len(shown))
    for col, entry, index in zip(cols, shown, indexes, strict=True):
        with col:
            st.markdown(f"**{entry.name}** · {entry.matrix.method}")
            if word.strip():
                neighbour_table(index, word.strip(), int(k))

with tab_sim:
    c1, c2 = st.columns(2)
    a = c1.text_input("First", value="好", key="explore_sim_a")
    b = c2.text_input("Second", value="坏", key="explore_sim_b")
    if a.strip() and b.strip():
        for entry, index in zip(shown, indexes, strict=True):
            try:
                st.metric(
                    f"cosine in {entry.name}", f"{index.similarity(a.strip(), b.strip()):.4f}"
                )
            except EmbedgenError as exc:
                st.warning(f"{entry.name}: {exc}")

with tab_analogy:
    st.caption("a is to b as c is to ?  (3CosAdd: nearest to b − a + c)")
    c1, c2, c3 = st.columns(3)
    qa = c1.text_input("a", value="男", key="explore_an_a")
    qb = c2.text_input("b", value="女", key="explore_an_b")
    qc = c3.text_input("c", value="王", key="explore_an_c")
    if qa.strip() and qb.strip() and qc.strip():
        cols = st.columns(len(shown))
        for col, entry, index in zip(cols, shown, indexes, strict=True):
            with col:
                st.markdown(f"**{entry.name}**")
                try:
                    scores_table(index.analogy(qa.strip(), qb.strip(), qc.strip(), k=10))
                except EmbedgenError as exc:
                    st.warning(str(exc))

with tab_map:
    entry = entries[name_a]
    matrix = entry.matrix
    data = st.session_state[ui.DATA_LABELLED]
    run = st.session_state[ui.TRAIN_RUN]
    model = run.encoder if run is not None else ui.current_encoder()
    c1, c2, c3, c4 = st.columns(4)
    reducers = [Reducer.UMAP.value, Reducer.PCA.value]
    reducer = c1.selectbox("Reducer", reducers, key="explore_reducer")
    dims = c2.radio("Dimensions", [2, 3], horizontal=True, key="explore_dims")
    colour_by = c3.selectbox(
        "Colour by", colours.choices(data is not None and model is not None), key="explore_colour"
    )
    n_clusters = c4.number_input("Clusters", 2, 50, 12, key="explore_clusters")
    options = ProjectionOptions(reducer=reducer, dims=int(dims))
    key = (entry.key, options)
    projections = st.session_state[ui.PROJECTIONS]
    pjob: Job | None = st.session_state[ui.PROJECTION_JOB]
    if pjob is not None and pjob.tag == key and pjob.state is JobState.DONE:
        projections[key] = pjob.result
    if key not in projections:
        if reducer == Reducer.UMAP:
            warm_up_umap_once()
        slow = " The first UMAP in a server also compiles its kernels." if reducer == "umap" else ""
        st.caption(
            f"{matrix.shape[0]:,} points.{slow} Maps are cached on disk: revisiting is instant."
        )
        if st.button("Compute map", type="primary", disabled=pjob is not None and pjob.active):

            def work(
                job: Job, matrix: EmbeddingMatrix = matrix, options: ProjectionOptions = options
            ) -> Projection:
                return project(matrix, options, progress=job.report, cancel=job.cancel)

            pjob = st.session_state[ui.PROJECTION_JOB] = start_job("Map", work, tag=key)
        if pjob is not None and pjob.tag == key:
            ui.job_panel(pjob, ui.job_status, key="explore_map")
    if key in projections:
        projection = projections[key]
        colour, categorical, hover = colours.colours(
            colour_by,
            entry,
            n_clusters=int(n_clusters),
            data=data,
            tokenizer=model.tokenizer if model is not None else None,
            model_id=model.info.model_id if model is not None else "",
        )
        c1, c2 = st.columns([3, 1])
        search = c1.text_input("Highlight a token and its neighbours", key="explore_search")
        hk = c2.number_input("Neighbours to highlight", 0, 50, 10, key="explore_search_k")
        highlight = {}
        if search.strip():
            try:
                highlight = indexes[0].highlight(search.strip(), k=int(hk))
            except EmbedgenError as exc:
                st.warning(str(exc))
        fig = plots.scatter_map(
            projection.coords,
            matrix.vocab,
            colour,
            colour_name=colour_by,
            categorical=categorical,
            highlight=highlight,
            hover_extra=hover,
        )
        st.plotly_chart(fig, width="stretch", key="explore_map_plot")
        how = "from cache" if projection.from_cache else f"{projection.seconds:.1f} s"
        st.caption(
            f"{projection.options.reducer} {projection.options.dims}D of {matrix.shape[0]:,} "
            f"rows · {how} · seed {projection.options.seed}"
        )
