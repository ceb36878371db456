"""Evaluate: how good are the matrices? Word similarity, analogies and label purity."""

import pandas as pd
import streamlit as st

from embedgen.errors import EmbedgenError
from embedgen.evaluate import read_analogy, read_label_words, read_similarity
from embedgen.runs import RunStatus
from embedgen.ui import benchmarks, feedback, jobpanel, matrices, pagestart, plots, session
from embedgen.ui.jobpanel import FolderJob
from embedgen.ui.markup import plain
from embedgen.ui.widgets import kept

MIN_PAIRS = 10  # fewer pairs than this make a correlation that means little

st.set_page_config(page_title="Evaluate · embedgen", layout="wide")
pagestart.begin()
st.title("6 · Evaluate")
st.caption(
    "Score your matrices on word-similarity files (word1 word2 score a line: Spearman and "
    "Pearson of the cosines with people's scores), analogy files (word2vec format: 3CosAdd and "
    "3CosMul accuracy), and label purity: whether the words that lean to a label in your data "
    "have neighbours that lean to it too."
)

entries: dict[str, matrices.MatrixEntry] = st.session_state[session.MATRICES]
if not entries:
    feedback.require(None, "Build a matrix first.", "pages/4_Matrix.py")

if "evaluate_matrices" in st.session_state:  # drop matrices this session no longer has
    st.session_state["evaluate_matrices"] = [
        n for n in st.session_state["evaluate_matrices"] if n in entries
    ]
# The current matrix (the one Explore and Export show) first, with the newest other one
# beside it; the visitor's own choice here stands once made.
current = matrices.current_matrix(entries)
newest_other = [n for n in reversed(list(entries)) if n != current][:1]
chosen = st.multiselect(
    "Matrices",
    list(entries),
    default=[current, *newest_other],
    key=kept("evaluate_matrices"),
    format_func=lambda n: f"{entries[n].matrix.label}  ({n})",
)
if not chosen:
    st.info("Choose at least one matrix.")
    st.stop()


def read_uploads(uploads, reader) -> list:
    """Each uploaded file read by ``reader`` (what it holds, its lines not read) as
    (upload, read); a file that cannot be read at all is shown, not used."""
    read = []
    for upload in uploads or []:
        try:
            read.append((upload, reader(upload.getvalue(), name=upload.name)))
        except EmbedgenError as exc:
            st.error(plain(exc))
    return read


def benchmark_files(kind: str, label: str, types: list[str], reader) -> list:
    """The files of ``kind`` this tab scores with: kept once uploaded (over page visits and
    reloads, embedgen.ui.benchmarks) until removed here; read by ``reader`` as
    (Benchmark, read). A file that cannot be read is shown and not kept."""
    turn = st.session_state.setdefault(f"evaluate_{kind}_turn", 0)
    uploads = st.file_uploader(
        label, type=types, accept_multiple_files=True, key=f"evaluate_{kind}_files_{turn}"
    )
    if uploads:
        readable = [u for u, _ in read_uploads(uploads, reader)]
        benchmarks.take(kind, readable)
        if len(readable) == len(uploads):  # kept: the uploader starts empty again
            st.session_state[f"evaluate_{kind}_turn"] = turn + 1
            st.rerun()
    read = []
    for bench in benchmarks.kept(kind):
        left, right = st.columns([6, 1], vertical_alignment="center")
        left.caption(plain(f"In use: {bench.name} ({len(bench.raw) / 1024:,.1f} KB)"))
        if right.button("Remove", key=f"evaluate_drop_{kind}_{bench.sha256[:12]}"):
            benchmarks.drop(kind, bench.sha256)
            st.rerun()
        try:  # read once per file for the session, not at every rerun (CA8: 10,177 lines)
            dataset = session.session_cached(
                "evaluate_read_benchmarks",
                (kind, bench.sha256, bench.name),
                lambda b=bench: reader(b.raw, name=b.name),
                keep=8,
            )
            read.append((bench, dataset))
        except EmbedgenError as exc:
            st.error(plain(exc))
    return read


pool = st.toggle(
    "Pool words that are not rows from their pieces",
    True,
    key=kept("evaluate_pool"),
    help="A word missing from a token matrix is the mean of its tokens; pooled words are "
    "counted and listed, never used silently. Off: they count as missing.",
)
panel_place = st.container()  # the scoring job's progress, above the tables it fills
tab_sim, tab_analogy, tab_purity, tab_trade = st.tabs(
    ["Word similarity", "Analogies", "Label purity", "Trade-off"]
)

with tab_sim:
    similarity_files = benchmark_files(
        "similarity",
        "Word-similarity files (e.g. wordsim-240.txt: word1 word2 score)",
        ["txt", "tsv", "csv"],
        read_similarity,
    )
    sets = [dataset for _, dataset in similarity_files]

with tab_analogy:
    analogy_files = benchmark_files(
        "analogy",
        "Analogy files (word2vec format, e.g. CA8: ': section' lines, then a b c d)",
        ["txt"],
        read_analogy,
    )

data = st.session_state[session.DATA_LABELLED]
with tab_purity:
    source = st.radio(
        "Label words",
        ["Significant words of your data", "A list of your own"],
        horizontal=True,
        key=kept("evaluate_purity_source"),
        help="Your data's words (or tokens) that lean to a label beyond chance: seen at least "
        "10 times, log-odds z of at least 3 (about one word in a thousand would pass by chance). "
        "Or a file of your own, a word and its label a line (e.g. the curated "
        "assets/sentiment_words_waimai.tsv for waimai-like reviews).",
    )
    c1, c2 = st.columns(2)
    per_label = c1.number_input(
        "Words per label (the strongest)", 2, 500, 50, key=kept("evaluate_per_label")
    )
    k = c2.number_input("Neighbours", 1, 100, 10, key=kept("evaluate_k"))
    own = None
    if source == "A list of your own":
        listed = st.file_uploader("Label-word file (word<TAB>label)", type=["txt", "tsv"])
        read = read_uploads([listed] if listed is not None else [], read_label_words)
        if read:
            own = read[0]
            if own[1].malformed:
                st.caption(
                    plain(
                        f"{own[1].name}: {len(own[1].malformed)} line(s) not read: "
                        + ", ".join(f"line {m.line} ({m.reason})" for m in own[1].malformed[:5])
                    )
                )
    elif data is None:
        st.info("Choose labelled data (Data page) to find its label words.")
    purity_asked = own is not None or (source != "A list of your own" and data is not None)

# One job scores every chosen matrix on every file and on label purity, in a worker; the
# tables follow the choices above (a new choice queues a new job and cancels the old one).
loaded = st.session_state[session.MODEL_LOADED]
asked = (
    tuple(entries[n].key for n in chosen),
    tuple(b.sha256 for b, _ in similarity_files),
    tuple(b.sha256 for b, _ in analogy_files),
    bool(pool),
    (source, int(per_label), int(k), own[0].file_id if own else None) if purity_asked else None,
    data.source_sha256 if data is not None and purity_asked and own is None else None,
    tuple(loaded) if loaded else None,
)
ejob: FolderJob | None = st.session_state[session.EVALUATE_JOB]
if (similarity_files or analogy_files or purity_asked) and (ejob is None or ejob.tag != asked):
    if ejob is not None and ejob.active:
        ejob.request_cancel()  # its answers would be for choices no longer made
    ejob = st.session_state[session.EVALUATE_JOB] = jobpanel.queue_evaluation(
        {n: entries[n] for n in chosen},
        similarity=[(b.name, b.raw) for b, _ in similarity_files],
        analogy=[(b.name, b.raw) for b, _ in analogy_files],
        purity={"per_label": int(per_label), "k": int(k)} if purity_asked else None,
        data=data if purity_asked and own is None else None,
        label_words=(own[0].name, own[0].getvalue()) if own else None,
        pool=bool(pool),
        tag=asked,
    )
scores = None
if ejob is not None and ejob.tag == asked:
    with panel_place:
        jobpanel.job_panel(ejob, jobpanel.job_status_while_active, key="evaluate_job")
    if ejob.state is RunStatus.FINISHED:
        scores = ejob.result
notes = [] if scores is None else scores["notes"]

with tab_sim:
    rows = [] if scores is None else scores["similarity"]
    if rows:
        shown = pd.DataFrame(
            {
                "matrix": r["matrix"],
                "file": r["file"],
                "Spearman": r["Spearman"],
                "Pearson": r["Pearson"],
                "pairs": f"{r['pairs_found']}/{r['pairs_total']}",
                "pooled": len(r["pooled"]),
                "missing": len(r["missing"]),
            }
            for r in rows
        )
        st.dataframe(
            shown,
            hide_index=True,
            width="stretch",
            column_config={
                "Spearman": st.column_config.NumberColumn(format="%.3f"),
                "Pearson": st.column_config.NumberColumn(format="%.3f"),
            },
        )
        few = [r for r in rows if r["pairs_found"] < MIN_PAIRS]
        if few:
            st.warning(
                f"{len(few)} of these scores rest on fewer than {MIN_PAIRS} pairs and mean "
                "little. Most of the file's words are no rows of the matrix: build word rows "
                "from a word list that holds them (Matrix page, 'A word list')."
            )
        for r in rows:
            if r["missing"] or r["pooled"] or r["malformed"]:
                with st.expander(plain(f"{r['matrix']} · {r['file']}: words and lines")):
                    if r["missing"]:
                        st.write(f"Missing ({len(r['missing'])}):", plain("、".join(r["missing"])))
                    if r["pooled"]:
                        st.write(f"Pooled ({len(r['pooled'])}):", plain("、".join(r["pooled"])))
                    for line, reason, text in r["malformed"]:
                        st.caption(plain(f"line {line}: {reason} ({text!r})"))
    elif not similarity_files:
        st.info("Upload one or more word-similarity files.")

with tab_analogy:
    rows = [] if scores is None else scores["analogy"]
    if rows:
        st.dataframe(
            pd.DataFrame(
                {
                    "matrix": r["matrix"],
                    "file": r["file"],
                    "section": r["section"],
                    "3CosAdd": r["3CosAdd"],
                    "3CosMul": r["3CosMul"],
                    "covered": f"{r['found']:,}/{r['total']:,}",
                }
                for r in rows
            ),
            hide_index=True,
            width="stretch",
            column_config={
                "3CosAdd": st.column_config.NumberColumn(format="%.3f"),
                "3CosMul": st.column_config.NumberColumn(format="%.3f"),
            },
        )
        st.caption(
            "Accuracy over the questions covered: a, b and c have vectors and d is a row. "
            "Token matrices of Chinese models cover few multi-character answers; word "
            "matrices built from a word list that holds the file's words cover them all."
        )
    elif not analogy_files:
        st.info("Upload one or more analogy files.")

with tab_purity:
    rows = [] if scores is None else scores["purity"]
    for note in notes:
        st.warning(plain(f"{note['matrix']}: {note['text']}"))
    if rows:
        labels = len(rows[0]["per_label"])
        interval = "95% interval"
        purity_columns = ["purity", *(f"purity · {lb}" for lb in rows[0]["per_label"])]
        st.dataframe(
            pd.DataFrame(
                {
                    "matrix": r["matrix"],
                    "purity": r["purity"],
                    interval: f"{r['low']:.3f}–{r['high']:.3f}" if r["low"] is not None else "",
                    **{f"purity · {label}": p for label, p in r["per_label"].items()},
                    "words used": r["words_used"],
                    "qualified": ", ".join(f"{n} {lb}" for lb, n in r["qualified"].items()),
                    "k": r["k"],
                }
                for r in rows
            ),
            hide_index=True,
            width="stretch",
            column_config={c: st.column_config.NumberColumn(format="%.3f") for c in purity_columns},
        )
        st.caption(
            f"**What the number means**: for each label word, the share of its {k} nearest "
            "neighbours (among the label words) that have its label, averaged over the words. "
            f"With {labels} labels of equal size, chance is about {1 / max(labels, 1):.2f}; 1 "
            "is every neighbour of the same label. The interval is a 95% bootstrap over the "
            "words. 'qualified': the words per label that met the bar and are rows of the "
            f"matrix; the strongest {per_label} of each are used."
        )

with tab_trade:
    run = st.session_state[session.TRAIN_RUN]
    if run is None or run.best is None:
        feedback.require(None, "Train or open a run to see its trade-off.", "pages/3_Train.py")
    if data is None:
        feedback.require(
            None, "Choose the labelled data the run was trained on.", "pages/2_Data.py"
        )
    st.caption(
        "Tuning sharpens label neighbourhoods and wrecks word similarity. Each point is a way "
        "to build word rows from this run: the untuned rows, the tuned projection, the "
        "baseline (untuned ‖ α · tuned) and the untuned rows with the run's labels added at a "
        "weight. Pick the weight whose point suits you, then build it on the Matrix page "
        "(label weight). Similarity is the mean Spearman over the files of the first tab, or "
        "without files how much of the untuned geometry each point keeps."
    )
    key = ("tradeoff", run.folder, data.source_sha256, tuple(s.name for s in sets))
    tjob: FolderJob | None = st.session_state[session.TRADEOFF_JOB]
    if st.button("Compute the trade-off", disabled=tjob is not None and tjob.active):
        tjob = st.session_state[session.TRADEOFF_JOB] = jobpanel.queue_tradeoff(
            run, data, sets, tag=key
        )
    if tjob is not None and tjob.tag == key:
        jobpanel.job_panel(tjob, jobpanel.job_status, key="evaluate_tradeoff")
        if tjob.state is RunStatus.FINISHED and tjob.result:
            records = tjob.result
            st.plotly_chart(plots.tradeoff_figure(records), width="stretch", key="tradeoff_plot")
            jobpanel.tradeoff_notes(records)
            shown = pd.DataFrame(records).drop(
                columns=["similarity_measure", "rows"], errors="ignore"
            )
            st.dataframe(shown, hide_index=True, width="stretch")
