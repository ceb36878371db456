"""embedgen in the browser: model, labelled data, fine-tuning, matrix, neighbours, export."""

import streamlit as st

from embedgen import __version__  # light: the package imports its modules lazily
from embedgen.ui import PAGES, via_app  # light: no Streamlit helpers, no torch


def start() -> None:
    """The start page: the path through the app and where this session stands on it."""
    # Imported here, not at the top: torch and transformers take seconds to import, and the
    # sidebar (st.navigation below) should not wait for them on a cold server.
    from embedgen.ui import common as ui

    ui.init_state()
    st.title("embedgen")
    st.markdown(
        "Turn a pretrained transformer into a word-embedding matrix shaped by your own labelled "
        "text. Follow the steps in order; each one is also a command (`embedgen --help`)."
    )
    encoder = ui.current_encoder()
    data = st.session_state[ui.DATA_LABELLED]
    run = st.session_state[ui.TRAIN_RUN]
    matrices = st.session_state[ui.MATRICES]
    where = [
        encoder.info.model_id if encoder else "not loaded",
        f"{data.source_name}: {len(data):,} rows, {data.num_classes} classes" if data else "none",
        f"{run.status}, macro-F1 {run.best.val_macro_f1:.3f}" if run and run.best else "no run",
        f"{len(matrices)} built" if matrices else "none built",
        "neighbours, similarity, analogy, UMAP",
        "word similarity, analogies, label purity",
        ".npy + vocab.txt, word2vec, projector, zip",
    ]
    for (path, _, icon, label), state in zip(PAGES, where, strict=True):
        c1, c2 = st.columns([1, 3])
        with c1:
            st.page_link(path, label=label, icon=icon)
        c2.caption(state)
    st.caption(f"embedgen {__version__}")


st.set_page_config(page_title="embedgen", page_icon="🔤", layout="wide")
navigation = st.navigation(
    [st.Page(start, title="Start", icon=":material/home:", default=True)]
    + [st.Page(path, title=title, icon=icon) for path, title, icon, _ in PAGES]
)
entered = via_app.set(True)  # pages know they run through the app's navigation
try:
    navigation.run()
finally:
    via_app.reset(entered)
