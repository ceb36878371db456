"""Data: a labelled table in, validated examples out."""

import hashlib

import pandas as pd
import streamlit as st

from embedgen import table as tables
from embedgen.data import guess_columns, prepare, split
from embedgen.fields import spec
from embedgen.train import FinetuneConfig
from embedgen.ui import feedback, pagestart, plots, session, visit
from embedgen.ui.markup import plain
from embedgen.ui.widgets import kept

st.set_page_config(page_title="Data · embedgen", layout="wide")
pagestart.begin()
st.title("2 · Data")
st.caption(
    "CSV, TSV or XLSX; UTF-8, UTF-8 with BOM, GBK/GB18030 or Big5 (what Excel writes on "
    "Chinese Windows), UTF-16, and Windows-1252 for Latin text. One column of text, one of "
    "labels."
)

source = st.radio("Data", session.DATA_SOURCES, horizontal=True, key=kept(session.DATA_SOURCE_KEY))
header_choice = st.radio(
    "Header row", ["Detect", "Yes", "No"], horizontal=True, key=kept(session.DATA_HEADER_KEY)
)
header = {"Detect": None, "Yes": True, "No": False}[header_choice]

table, raw, sheet = None, None, None
if source.startswith("Upload"):
    upload = st.file_uploader(
        "Labelled table", type=["csv", "tsv", "txt", "xlsx"], key="data_upload"
    )
    if upload is not None:
        raw = upload.getvalue()
        digest = hashlib.sha256(raw).hexdigest()
        try:
            if upload.name.lower().endswith((".xlsx", ".xlsm")):
                sheets = session.session_cached(
                    "data_cache_sheets",
                    digest,
                    lambda: tables.xlsx_sheets(raw, name=upload.name),
                )
                if len(sheets) > 1:
                    sheet = st.selectbox(
                        "Sheet",
                        sheets,
                        key=kept("data_sheet"),
                        help="This workbook has several sheets.",
                    )
            # Parsed once per file and reading options; widget changes below reuse it.
            table = session.session_cached(
                "data_cache_table",
                (digest, upload.name, header, sheet),
                lambda: tables.read_table(raw, name=upload.name, header=header, sheet=sheet),
            )
        except Exception as exc:  # shown; the previous table is forgotten
            st.session_state[session.DATA_TABLE] = None
            st.session_state[session.DATA_LABELLED] = None
            feedback.show_error(exc)
            st.stop()
    elif st.session_state[session.DATA_TABLE] is not None and visit.data_source() == "upload":
        # The uploader forgets its file when the user visits another page; the table stays.
        # (Not the sample's: back from the sample to "Upload a file" asks for a file.)
        table = st.session_state[session.DATA_TABLE]
        st.caption(
            f"Using **{plain(table.label)}**, uploaded earlier. Upload another file to replace it."
        )
else:
    table = feedback.attempt(
        lambda: session.session_cached(
            "data_cache_table",
            ("sample", header),
            lambda: tables.read_table(session.SAMPLE_DATA, header=header),
        )
    )

if table is None:
    st.session_state[session.DATA_LABELLED] = None
    visit.forget_data()
    st.info("Upload a file or choose the sample dataset.")
    st.stop()
st.session_state[session.DATA_TABLE] = table

st.caption(
    f"**{plain(table.label)}** · {len(table):,} rows · {len(table.columns)} columns · "
    f"encoding {table.encoding} · "
    + (f"delimiter {plain(repr(table.delimiter))} · " if table.delimiter else "")
    + ("header row" if table.has_header else "no header row")
)
st.dataframe(table.preview(20), width="stretch", height=260)
st.caption(f"{plain(table.numbering)} Messages about rows below use the same numbers.")

# What the table holds decides the guess and the examples: computed once for each.
read_as = (table.sha256, table.label, table.has_header)
text_guess, label_guess = session.session_cached(
    "data_cache_guess", read_as, lambda: guess_columns(table)
)
previous = st.session_state[session.DATA_COLUMNS]
if previous and previous[0] == table.sha256:
    text_guess, label_guess = previous[1], previous[2]
columns = table.columns
cols = st.columns(2)
text_col = cols[0].selectbox(
    "Text column",
    columns,
    index=columns.index(text_guess) if text_guess in columns else 0,
    key=kept(session.data_column_key("text", table.sha256)),
)
label_col = cols[1].selectbox(
    "Label column",
    columns,
    index=columns.index(label_guess) if label_guess in columns else min(1, len(columns) - 1),
    key=kept(session.data_column_key("label", table.sha256)),
)

try:
    data = session.session_cached(
        "data_cache_prepared",
        (read_as, text_col, label_col),
        lambda: prepare(table, text_col, label_col),
        keep=2,
    )
except Exception as exc:  # every problem is shown, nothing else breaks
    st.session_state[session.DATA_LABELLED] = None
    feedback.show_error(exc)
    st.stop()
st.session_state[session.DATA_LABELLED] = data
st.session_state[session.DATA_COLUMNS] = (table.sha256, text_col, label_col)

if data.dropped:
    st.warning(plain(data.dropped_summary()))
    with st.expander(f"Dropped rows ({len(data.dropped)})"):
        st.caption(plain(table.numbering))
        st.dataframe(
            pd.DataFrame([{"row": d.row, "reason": d.reason} for d in data.dropped]),
            hide_index=True,
        )
else:
    st.success(f"All {len(data):,} rows are usable.")

counts = data.class_counts()
fraction = spec(FinetuneConfig, "val_fraction")
val_fraction = st.slider(
    "Validation share",
    0.05,
    fraction.high,
    st.session_state[session.DATA_VAL_FRACTION],
    0.05,
    help="Held out, stratified by label, to measure accuracy and macro-F1 after each epoch.",
)
st.session_state[session.DATA_VAL_FRACTION] = val_fraction
visit.note_data(  # a reloaded tab reads the same table the same way (embedgen.ui.visit)
    {
        "source": "upload" if source.startswith("Upload") else "sample",
        "name": table.name,
        "sha256": table.sha256,
        "header": header,
        "sheet": table.sheet,
        "text_col": text_col,
        "label_col": label_col,
        "val_fraction": float(val_fraction),
    },
    raw,
)
seed = FinetuneConfig().seed  # the split training will make
train, val = feedback.attempt(
    lambda: session.session_cached(
        "data_cache_split",
        (read_as, text_col, label_col, val_fraction, seed),
        lambda: split(data, val_fraction=val_fraction, seed=seed),
    )
)

left, right = st.columns([3, 2])
left.plotly_chart(plots.label_counts_figure(counts, label_col), width="stretch")
right.metric("Training rows", f"{len(train):,}")
right.metric("Validation rows", f"{len(val):,}")
right.caption(f"Split with seed {seed}, as training will; the same split every time.")
for note in data.notes():  # too few rows per class, imbalance: warnings, not refusals
    st.warning(plain(note))
st.page_link("pages/3_Train.py", label="Next: fine-tune", icon=":material/arrow_forward:")
