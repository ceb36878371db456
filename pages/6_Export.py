"""Export: download the matrix with its vocabulary and manifest, in every format."""

import io
import tempfile
import zipfile
from pathlib import Path

import streamlit as st

from embedgen.export import ExportFormat, export
from embedgen.ui import common as ui

st.set_page_config(page_title="Export · embedgen", layout="wide")
ui.init_state()
st.title("6 · Export")

entries: dict[str, ui.MatrixEntry] = st.session_state[ui.MATRICES]
if not entries:
    ui.require(None, "Build a matrix first.", "pages/4_Matrix.py")

name = st.selectbox("Matrix", list(entries), index=len(entries) - 1, key="export_matrix")
entry = entries[name]
matrix = entry.matrix
rows, dims = matrix.shape
st.caption(f"**{name}** · method {matrix.method} · {rows:,} × {dims} · saved in `{entry.folder}`")


@st.cache_data(show_spinner="Preparing files…", max_entries=4)
def bundle(key: str, dtype: str, _entry: ui.MatrixEntry) -> bytes:
    """The zip of every format, built once per matrix; single files are read out of it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = export(_entry.matrix, ExportFormat.ZIP, Path(tmp) / "bundle.zip", dtype=dtype)
        return path.read_bytes()


data = ui.attempt(lambda: bundle(entry.key, entry.dtype, entry))
members = zipfile.ZipFile(io.BytesIO(data))
stem = f"embedgen_{name}"
files = [
    (
        "matrix.npy",
        "Matrix (.npy)",
        "application/octet-stream",
        f"{entry.dtype} array, {rows:,} rows × {dims}; row i is line i of vocab.txt",
    ),
    ("vocab.txt", "Vocabulary (vocab.txt)", "text/plain", "UTF-8, one token per line"),
    (
        "vectors.word2vec.txt",
        "word2vec text",
        "text/plain",
        "loads with gensim KeyedVectors.load_word2vec_format",
    ),
    (
        "vectors.tsv",
        "Projector vectors.tsv",
        "text/tab-separated-values",
        "for projector.tensorflow.org, with metadata.tsv",
    ),
    ("metadata.tsv", "Projector metadata.tsv", "text/tab-separated-values", "one token per line"),
    (
        "manifest.json",
        "Manifest (manifest.json)",
        "application/json",
        "model, method, layer, post-processing, data, training config and metrics",
    ),
]
names = set(members.namelist())
for member, label, mime, note in files:
    if member not in names:
        continue
    c1, c2 = st.columns([1, 2])
    c1.download_button(
        label,
        members.read(member),
        file_name=member,
        mime=mime,
        key=f"export_{member}",
        width="stretch",
    )
    c2.caption(note)
st.divider()
st.download_button(
    "Everything as one zip",
    data,
    file_name=f"{stem}.zip",
    mime="application/zip",
    type="primary",
    key="export_zip",
)
st.caption(f"{ui.human_bytes(len(data))}: all of the files above.")
