"""Evaluate: how good are the matrices? Word similarity, analogies and label purity."""

import pandas as pd
import streamlit as st

from embedgen.errors import EmbedgenError
from embedgen.evaluate import (
    analogy,
    label_purity,
    read_analogy,
    read_label_words,
    read_similarity,
    similarity,
)
from embedgen.matrix import Rows
from embedgen.runs import RunStatus
from embedgen.tokenstats import significant
from embedgen.ui import datastats, feedback, jobpanel, matrices, models, pagestart, plots, session
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
chosen = st.multiselect(
    "Matrices",
    list(entries),
    default=list(entries)[-2:],
    key=kept("evaluate_matrices"),
    format_func=lambda n: f"{entries[n].matrix.label}  ({n})",
)
if not chosen:
    st.info("Choose at least one matrix.")
    st.stop()


@st.cache_resource(show_spinner=False, max_entries=32)
def analogy_of(key: str, file_id: str, pool: bool, _entry: matrices.MatrixEntry, _dataset):
    """A matrix's answers to an analogy file, kept across reruns (CA8 takes seconds)."""
    return analogy(matrices.neighbour_index(_entry), _dataset, pool=pool)


def read_uploads(uploads, reader) -> list:
    """Each uploaded file read by ``reader``; a file that cannot be read is shown, not used."""
    read = []
    for upload in uploads or []:
        try:
            read.append((upload.file_id, reader(upload.getvalue(), name=upload.name)))
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
tab_sim, tab_analogy, tab_purity, tab_trade = st.tabs(
    ["Word similarity", "Analogies", "Label purity", "Trade-off"]
)

with tab_sim:
    uploads = st.file_uploader(
        "Word-similarity files (e.g. wordsim-240.txt: word1 word2 score)",
        type=["txt", "tsv", "csv"],
        accept_multiple_files=True,
        key="evaluate_similarity_files",
    )
    sets = [dataset for _, dataset in read_uploads(uploads, read_similarity)]
    rows, details = [], []
    for name in chosen:
        index = matrices.neighbour_index(entries[name])
        for dataset in sets:
            result = similarity(index, dataset, pool=pool)
            rows.append(
                {
                    "matrix": name,
                    "file": result.name,
                    "Spearman": result.spearman,
                    "Pearson": result.pearson,
                    "pairs": f"{result.pairs_found}/{result.pairs_total}",
                    "pooled": len(result.pooled),
                    "missing": len(result.missing),
                }
            )
            details.append(result)
    if rows:
        st.dataframe(
            pd.DataFrame(rows),
            hide_index=True,
            width="stretch",
            column_config={
                "Spearman": st.column_config.NumberColumn(format="%.3f"),
                "Pearson": st.column_config.NumberColumn(format="%.3f"),
            },
        )
        few = [d for d in details if d.pairs_found < MIN_PAIRS]
        if few:
            st.warning(
                f"{len(few)} of these scores rest on fewer than {MIN_PAIRS} pairs and mean "
                "little. Most of the file's words are no rows of the matrix: build word rows "
                "from a word list that holds them (Matrix page, 'A word list')."
            )
        for name, result in zip([r["matrix"] for r in rows], details, strict=True):
            if result.missing or result.pooled or result.malformed:
                with st.expander(plain(f"{name} · {result.name}: words and lines")):
                    if result.missing:
                        missing = plain("、".join(result.missing))
                        st.write(f"Missing ({len(result.missing)}):", missing)
                    if result.pooled:
                        st.write(f"Pooled ({len(result.pooled)}):", plain("、".join(result.pooled)))
                    for bad in result.malformed:
                        st.caption(plain(f"line {bad.line}: {bad.reason} ({bad.text!r})"))
    elif not sets:
        st.info("Upload one or more word-similarity files.")

with tab_analogy:
    uploads = st.file_uploader(
        "Analogy files (word2vec format, e.g. CA8: ': section' lines, then a b c d)",
        type=["txt"],
        accept_multiple_files=True,
        key="evaluate_analogy_files",
    )
    questions = read_uploads(uploads, read_analogy)
    rows = []
    for name in chosen:
        entry = entries[name]
        for file_id, dataset in questions:
            with st.spinner(f"Answering {len(dataset):,} questions with {plain(name)}…"):
                result = analogy_of(entry.key, file_id, pool, entry, dataset)
            for score in (result.overall, *result.sections):
                rows.append(
                    {
                        "matrix": name,
                        "file": result.name,
                        "section": "all" if score is result.overall else score.name,
                        "3CosAdd": score.accuracy_3cosadd,
                        "3CosMul": score.accuracy_3cosmul,
                        "covered": f"{score.questions_found:,}/{score.questions_total:,}",
                    }
                )
    if rows:
        st.dataframe(
            pd.DataFrame(rows),
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
    elif not questions:
        st.info("Upload one or more analogy files.")

data = st.session_state[session.DATA_LABELLED]
with tab_purity:
    encoder = models.current_encoder()
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
        if listed is not None:
            own = feedback.attempt(lambda: read_label_words(listed.getvalue(), name=listed.name))
            if own.malformed:
                st.caption(
                    plain(
                        f"{own.name}: {len(own.malformed)} line(s) not read: "
                        + ", ".join(f"line {m.line} ({m.reason})" for m in own.malformed[:5])
                    )
                )
    elif data is None:
        st.info("Choose labelled data (Data page) to find its label words.")
    rows, labels = [], 0
    for name in chosen if (own is not None or data is not None) else []:
        entry = entries[name]
        if own is not None:
            leaning = own.associations()
        else:
            tokenizer = encoder.tokenizer if encoder is not None else None
            if tokenizer is None and entry.matrix.rows_are is not Rows.WORDS:
                st.warning(f"{plain(name)}: load the model to count its tokens in the data.")
                continue
            model_id = encoder.info.model_id if encoder is not None else ""
            leaning = significant(datastats.label_stats(entry, data, tokenizer, model_id))
        try:
            result = label_purity(
                matrices.neighbour_index(entry), leaning, per_label=per_label, k=k, resamples=1000
            )
        except EmbedgenError as exc:
            st.warning(plain(f"{name}: {exc}"))
            continue
        assert result.interval is not None and result.qualified is not None
        labels = len(result.per_label)
        rows.append(
            {
                "matrix": name,
                "purity": result.purity,
                "95% interval": f"{result.interval.low:.3f}–{result.interval.high:.3f}",
                **{f"purity · {label}": p for label, p in result.per_label.items()},
                "words used": sum(len(t) for t in result.tokens.values()),
                "qualified": ", ".join(f"{n} {lb}" for lb, n in result.qualified.items()),
                "k": result.k,
            }
        )
        if result.note:
            st.caption(plain(f"{name}: {result.note}"))
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
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
            st.caption(f"Similarity: {plain(records[0]['similarity_measure'])}.")
            shown = pd.DataFrame(records).drop(columns=["similarity_measure"])
            st.dataframe(shown, hide_index=True, width="stretch")
