"""Export: download the matrix with its vocabulary and manifest, in every format."""

from functools import partial

import streamlit as st

from embedgen.budget import human_size
from embedgen.export import (
    MANIFEST_FILE,
    MATRIX_FILE,
    PROJECTOR_METADATA_FILE,
    PROJECTOR_VECTORS_FILE,
    VOCAB_FILE,
    WORD2VEC_FILE,
    ZIP_FILE,
    download_bytes,
)
from embedgen.ui import feedback, matrices, pagestart, session
from embedgen.ui.markup import code, plain

st.set_page_config(page_title="Export · embedgen", layout="wide")
pagestart.begin()
st.title("7 · Export")

entries: dict[str, matrices.MatrixEntry] = st.session_state[session.MATRICES]
if not entries:
    feedback.require(None, "Build a matrix first.", "pages/4_Matrix.py")

name = matrices.matrix_choice("Matrix", entries, key="export_matrix")
entry = entries[name]
matrix = entry.matrix
rows, dims = matrix.shape
saved = f"saved in {code(entry.folder)}" if entry.folder else "not saved on the server"
st.caption(f"**{plain(name)}** · method {matrix.method} · {rows:,} × {dims} · {saved}")
st.caption(
    "Each file is written when you click its button, so large vocabularies cost nothing until "
    "you ask (word2vec text of a 21,128 × 768 matrix is about 200 MB)."
)

npy_bytes = rows * dims * (2 if entry.dtype == "float16" else 4) + 128
files = [
    (
        MATRIX_FILE,
        "Matrix (.npy)",
        "application/octet-stream",
        f"{entry.dtype} array, {rows:,} rows × {dims}, {human_size(npy_bytes)}; "
        "row i is line i of vocab.txt",
    ),
    (VOCAB_FILE, "Vocabulary (vocab.txt)", "text/plain", "UTF-8, one token per line"),
    (
        WORD2VEC_FILE,
        "word2vec text",
        "text/plain",
        "loads with gensim KeyedVectors.load_word2vec_format",
    ),
    (
        PROJECTOR_VECTORS_FILE,
        "Projector vectors.tsv",
        "text/tab-separated-values",
        "for projector.tensorflow.org, with metadata.tsv",
    ),
    (
        PROJECTOR_METADATA_FILE,
        "Projector metadata.tsv",
        "text/tab-separated-values",
        "one token per line",
    ),
    (
        MANIFEST_FILE,
        "Manifest (manifest.json)",
        "application/json",
        "model, method, layer, post-processing, data, training config and metrics",
    ),
]
for member, label, mime, note in files:
    c1, c2 = st.columns([1, 2])
    c1.download_button(
        label,
        partial(download_bytes, matrix, member, dtype=entry.dtype),  # made on click
        file_name=member,
        mime=mime,
        key=f"export_{member}",
        on_click="ignore",
        width="stretch",
    )
    c2.caption(note)
st.divider()
st.download_button(
    "Everything as one zip",
    partial(download_bytes, matrix, ZIP_FILE, dtype=entry.dtype),
    file_name=f"embedgen_{name}.zip",
    mime="application/zip",
    type="primary",
    key="export_zip",
    on_click="ignore",
)
st.caption(f"All of the files above, {entry.dtype} matrix.npy inside.")
