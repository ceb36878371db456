"""Explore: neighbours, similarity, analogies, and a map of the whole vocabulary."""

import pandas as pd
import streamlit as st

from embedgen import jobs, tasks
from embedgen.errors import EmbedgenError
from embedgen.library import list_items
from embedgen.neighbours import NeighbourIndex
from embedgen.projection import (
    DEFAULT_MAX_ROWS,
    ProjectionOptions,
    Reducer,
    estimate_seconds,
    map_points,
)
from embedgen.runs import RunStatus
from embedgen.tokens import mostly_cjk
from embedgen.ui import (
    colours,
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
from embedgen.ui.widgets import kept

MAPS_KEPT = 8  # maps a session keeps in memory (each is read back from its job or the cache)

st.set_page_config(page_title="Explore · embedgen", layout="wide")
pagestart.begin()
st.title("5 · Explore")


entries: dict[str, matrices.MatrixEntry] = st.session_state[session.MATRICES]
with st.expander("Open a saved matrix"):
    saved = {
        f"{i.title} · {i.what} · {i.when}": i.folder
        for i in feedback.attempt(lambda: list_items(visitor.current_user()))
        if i.kind == "matrix"
    }
    if not saved:
        st.caption("No saved matrix yet: build one on the Matrix page.")
    else:
        picked = st.selectbox("Saved matrices, newest first", list(saved), key="explore_saved")
        if st.button("Open matrix", type="primary"):
            feedback.attempt(lambda: library.open_matrix(saved[picked]))
            st.rerun()
    st.page_link("pages/8_Library.py", label="All runs and matrices: the Library")
    # A folder elsewhere among the operator's allowed folders (matrices made by the CLI).
    folder = st.text_input(
        "…or a folder on the server (holds matrix.npy, vocab.txt, manifest.json)",
        key=kept("explore_open"),
    )
    if st.button("Open", disabled=not folder.strip()):
        where = feedback.attempt(
            lambda: str(visitor.allowed_folder(folder.strip(), "matrix folder"))
        )
        feedback.attempt(lambda: library.open_matrix(where))
        st.rerun()

if not entries:
    feedback.require(None, "Build a matrix first, or open a saved one above.", "pages/4_Matrix.py")

names = list(entries)
c1, c2 = st.columns(2)
name_a = matrices.matrix_choice("Matrix", entries, key="explore_a", where=c1)
compare = ["(none)"] + [n for n in names if n != name_a]
if st.session_state.get("explore_b") not in compare:
    st.session_state.pop("explore_b", None)
name_b = c2.selectbox(
    "Compare with",
    compare,
    index=min(1, len(compare) - 1),
    key=kept("explore_b"),
    format_func=lambda n: n if n == "(none)" else f"{entries[n].matrix.label}  ({n})",
)
shown = [entries[name_a]] + ([entries[name_b]] if name_b != "(none)" else [])
indexes = [matrices.neighbour_index(e) for e in shown]


def neighbour_table(index: NeighbourIndex, word: str, k: int, cjk: bool) -> None:
    try:
        lookup = index.lookup(word)
        found = index.top_k(word, k=k, only=index.cjk_rows() if cjk else None)
    except EmbedgenError as exc:
        st.warning(plain(exc))
        return
    if lookup.pooled:
        st.caption(f"Not a single token: the mean of {plain(' + '.join(lookup.pieces))}.")
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


mixed = any(not index.cjk_rows().all() and index.cjk_rows().any() for index in indexes)
cjk = False
if mixed:  # a multilingual vocabulary: other scripts crowd Chinese neighbour lists and maps
    cjk = st.checkbox(
        "Chinese rows only",
        value=st.session_state[session.DATA_LABELLED] is None
        or mostly_cjk(st.session_state[session.DATA_LABELLED].texts),
        key=kept("explore_cjk"),
        help="Neighbour lists and the map leave out rows that are not made of CJK characters "
        "(Latin words, other scripts, punctuation), rows with a Japanese form (乗, 駅: in "
        "Shift-JIS, in neither GB2312 nor Big5), and the marked twins of Chinese rows (##好 or "
        "▁好 beside 好).",
    )

tab_nn, tab_sim, tab_analogy, tab_map = st.tabs(["Neighbours", "Similarity", "Analogy", "Map"])
with tab_nn:
    c1, c2 = st.columns([3, 1])
    word = c1.text_input("Token or word", value="好", key=kept("explore_word"))
    k = c2.number_input("How many", 1, 200, 10, key=kept("explore_k"))
    cols = st.columns(len(shown))
    for col, entry, index in zip(cols, shown, indexes, strict=True):
        with col:
            st.markdown(f"**{plain(entry.matrix.label)}**  \n{code(entry.name)}")
            if word.strip():
                neighbour_table(index, word.strip(), int(k), cjk)
    marker = any(t.startswith("▁") for e in shown for t in e.matrix.vocab[:50_000])
    st.caption(
        "**cosine**: how alike two rows point, from 1 (the same direction) through 0 "
        "(unrelated) to −1; it ranks neighbours within one matrix and is not comparable "
        "between matrices."
        + (
            " **▁** marks a piece that starts a word in SentencePiece vocabularies (XLM-R, "
            "e5): ▁好 is 好 at the start of a word, 好 the same character inside one."
            if marker
            else ""
        )
    )

with tab_sim:
    c1, c2 = st.columns(2)
    a = c1.text_input("First", value="好", key=kept("explore_sim_a"))
    b = c2.text_input("Second", value="坏", key=kept("explore_sim_b"))
    if a.strip() and b.strip():
        for entry, index in zip(shown, indexes, strict=True):
            try:
                cosine = index.similarity(a.strip(), b.strip())
                st.metric(f"cosine in {plain(entry.name)}", f"{cosine:.4f}")
            except EmbedgenError as exc:
                st.warning(plain(f"{entry.name}: {exc}"))

with tab_analogy:
    st.caption("a is to b as c is to ?  (3CosAdd: nearest to b − a + c)")
    c1, c2, c3 = st.columns(3)
    qa = c1.text_input("a", value="男", key=kept("explore_an_a"))
    qb = c2.text_input("b", value="女", key=kept("explore_an_b"))
    qc = c3.text_input("c", value="王", key=kept("explore_an_c"))
    if qa.strip() and qb.strip() and qc.strip():
        cols = st.columns(len(shown))
        for col, entry, index in zip(cols, shown, indexes, strict=True):
            with col:
                st.markdown(f"**{plain(entry.name)}**")
                try:
                    scores_table(index.analogy(qa.strip(), qb.strip(), qc.strip(), k=10))
                except EmbedgenError as exc:
                    st.warning(plain(exc))

with tab_map:
    entry, index_a = entries[name_a], indexes[0]
    matrix = entry.matrix
    n_rows = matrix.shape[0]
    data = st.session_state[session.DATA_LABELLED]
    run = st.session_state[session.TRAIN_RUN]
    model = run.encoder if run is not None else models.current_encoder()
    c1, c2, c3, c4, c5 = st.columns(5)
    reducers = [Reducer.UMAP.value, Reducer.PCA.value]
    reducer = c1.selectbox("Reducer", reducers, key=kept("explore_reducer"))
    dims = c2.radio("Dimensions", [2, 3], horizontal=True, key=kept("explore_dims"))
    colour_by = c3.selectbox(
        "Colour by",
        colours.choices(data is not None and model is not None),
        key=kept("explore_colour"),
    )
    n_clusters = c4.number_input("Clusters", 2, 50, 12, key=kept("explore_clusters"))
    cap = c5.number_input(
        "Rows on the map",
        min_value=1,
        max_value=max(n_rows, DEFAULT_MAX_ROWS),
        value=DEFAULT_MAX_ROWS,
        step=1000,
        key=kept("explore_map_rows"),
        help="A seeded random sample of this many rows is mapped; highlighted tokens are "
        "always shown. Tick 'All rows' to map every row.",
    )
    chinese = cjk and index_a.cjk_rows().any() and not index_a.cjk_rows().all()
    if chinese:
        n_rows = int(index_a.cjk_rows().sum())
    rows_are = "Chinese rows" if chinese else "rows"
    every_row = st.checkbox(f"All {n_rows:,} {rows_are}", key=kept("explore_map_all"))
    everything = every_row or int(cap) >= n_rows  # one cache entry for "all rows"
    options = ProjectionOptions(
        reducer=reducer,
        dims=int(dims),
        max_rows=None if everything else int(cap),
        chinese_only=chinese,
    )
    shown_rows = n_rows if options.max_rows is None else options.max_rows
    if every_row and n_rows > DEFAULT_MAX_ROWS:
        st.warning(
            f"A map of all {n_rows:,} {rows_are} takes about "
            f"{estimate_seconds(n_rows, options):,.0f} s "
            f"on 2 CPU cores (about {estimate_seconds(DEFAULT_MAX_ROWS, options):,.0f} s for "
            f"{DEFAULT_MAX_ROWS:,}); you can cancel it at any stage."
        )
    key = (entry.key, options)
    projections = st.session_state[session.PROJECTIONS]
    pjob: FolderJob | None = st.session_state[session.PROJECTION_JOB]
    if pjob is not None and pjob.tag == key and pjob.state is RunStatus.FINISHED:
        projections[key] = pjob.result
        while len(projections) > MAPS_KEPT:  # the oldest go: their cache on disk stays
            del projections[next(iter(projections))]
    if key not in projections:
        sample = (
            f"{shown_rows:,} of {n_rows:,} {rows_are} (random sample, seed {options.seed})"
            if shown_rows < n_rows
            else f"all {n_rows:,} {rows_are}"
        )
        st.caption(f"The map will show {sample}. Maps are cached on disk: revisiting is instant.")
        if st.button("Compute map", type="primary", disabled=pjob is not None and pjob.active):
            # A worker's job: this server only reads the map back (embedgen.tasks).
            user = visitor.current_user()
            record = feedback.attempt(
                lambda: tasks.submit_map(matrix, entry.folder, options, user=user)
            )
            jobs.ensure_worker()
            pjob = st.session_state[session.PROJECTION_JOB] = FolderJob(
                record.folder, "Map", take=tasks.projection_of, tag=key
            )
        if pjob is not None and pjob.tag == key:
            jobpanel.job_panel(pjob, jobpanel.job_status, key="explore_map")
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
        search = c1.text_input("Highlight a token and its neighbours", key=kept("explore_search"))
        hk = c2.number_input("Neighbours to highlight", 0, 50, 10, key=kept("explore_search_k"))
        highlight = {}
        if search.strip():
            try:
                only = index_a.cjk_rows() if chinese else None
                highlight = index_a.highlight(search.strip(), k=int(hk), only=only)
            except EmbedgenError as exc:
                st.warning(plain(exc))
        points, point_rows, placed = map_points(matrix, projection, list(highlight))
        at = {int(r): i for i, r in enumerate(point_rows)}
        mapped = len(projection.rows)
        note = (
            f"{mapped:,} of {n_rows:,} {rows_are}, random sample (seed {projection.options.seed})"
            if mapped < n_rows
            else f"all {n_rows:,} {rows_are}"
        )
        if placed:
            note += f" + {placed} highlighted, placed near their nearest sampled rows"
        fig = plots.scatter_map(
            points,
            [matrix.vocab[r] for r in point_rows],
            [colour[r] for r in point_rows],
            colour_name=colour_by,
            categorical=categorical,
            highlight={at[r]: label for r, label in highlight.items()},
            hover_extra=[hover[r] for r in point_rows] if hover is not None else None,
            note=note,
        )
        st.plotly_chart(fig, width="stretch", key="explore_map_plot")
        how = "from cache" if projection.from_cache else f"{projection.seconds:.1f} s"
        st.caption(
            f"{projection.options.reducer} {projection.options.dims}D of {note} · {how} · "
            f"seed {projection.options.seed}"
        )
