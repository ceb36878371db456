"""Model: choose the encoder whose vocabulary becomes the matrix rows."""

import streamlit as st

from embedgen.models import DEFAULT_MODEL, ModelInfo, list_cached_models, list_model_folders
from embedgen.ui import feedback, jobpanel, models, pagestart, session, visitor
from embedgen.ui.markup import plain
from embedgen.ui.widgets import kept


def vocabulary_note(info: ModelInfo) -> str:
    """Why the two vocabulary numbers differ, and which one a token matrix starts from."""
    rows, tokens = f"{info.vocab_size:,}", f"{info.tokenizer_size:,}"
    if info.rows_without_token:
        n = info.rows_without_token
        note = (
            f"The embedding table has {rows} rows but the tokenizer produces only {tokens} ids "
            f"(0 to {info.tokenizer_size - 1:,}). The other {n:,} row{'s' if n > 1 else ''} "
            f"{'are' if n > 1 else 'is'} padding that no text ever reaches (models round their "
            "tables up), so they are left out."
        )
    elif info.tokens_without_row:
        n = info.tokens_without_row
        note = (
            f"The tokenizer knows {tokens} tokens but the embedding table has only {rows} rows: "
            f"{n:,} token{'s were' if n > 1 else ' was'} added to the tokenizer without a row, "
            "so a matrix cannot hold them."
        )
    else:
        note = f"One embedding row for each of the tokenizer's {tokens} tokens."
    if info.added_tokens:
        note += (
            f" {info.added_tokens:,} of the tokenizer's tokens were added on top of its base "
            "vocabulary (special tokens such as a mask token, or the model's own additions)."
        )
    return (
        f"{note} A matrix of tokens starts from the {info.token_rows:,} ids that have both a "
        "token and a row; the filters on the Matrix page (special and unused tokens, CJK only, "
        "## pieces) then leave out some of them."
    )


@st.cache_data(ttl=30, show_spinner=False)  # a folder copied in shows within 30 s
def local_model_folders(roots: tuple) -> list:
    return list_model_folders(roots)


st.set_page_config(page_title="Model · embedgen", layout="wide")
pagestart.begin()
st.title("1 · Model")
st.caption(
    "Any Hugging Face encoder with a token-embedding layer: BERT, RoBERTa, MacBERT, XLM-R… "
    "Give a hub id, pick one kept on this machine, or point to a folder."
)

choice = st.radio(
    "Where is the model?",
    ["Hub id", "Local models", "Folder on this machine"],
    horizontal=True,
    key=kept("model_source"),
)
if choice == "Hub id":
    spec = st.text_input("Hub id", value=DEFAULT_MODEL, key=kept("model_hub_id"))
elif choice == "Local models":
    # The hub cache's models, then the model folders among the operator's allowed folders
    # (e.g. $EMBEDGEN_HOME/models/m3e-small): picked, not typed.
    labels = {
        f"{m.model_id} ({m.size_bytes / 1e6:.0f} MB)": m.model_id for m in list_cached_models()
    }
    labels.update(
        {f"{f.name} ({f})": str(f) for f in local_model_folders(visitor.operator().allowed_roots)}
    )
    if not labels:
        st.info(
            "No model is kept on this machine: no Hugging Face cache, and no model folder "
            "among the folders the operator allows. Use a hub id or a folder."
        )
        spec = ""
    else:
        spec = labels[
            st.selectbox("Models on this machine", list(labels), key=kept("model_cached"))
        ]
else:
    spec = st.text_input(
        "Folder", placeholder="/path/to/model (holds config.json)", key=kept("model_folder")
    )
if visitor.operator().allow_remote_code:
    trust = st.checkbox(
        "Allow this model's own code to run (only for repositories you trust)",
        key=kept("model_remote"),
        help="Some models ship Python code. embedgen never runs it unless you tick this.",
    )
else:
    trust = False
    st.caption(
        "Models that need their own code to run cannot be loaded here: the operator of this "
        "server has not allowed it."
    )

if st.button("Load model", type="primary", disabled=not spec.strip()):
    with st.spinner(f"Loading {plain(spec)}…"):
        try:
            models.load_model(spec.strip(), trust)
            st.session_state[session.MODEL_LOADED] = (spec.strip(), trust)
            jobpanel.warm_worker(spec.strip(), trust)  # the first Start finds it loaded
        except Exception as exc:  # shown; the model loaded before stays
            feedback.show_error(exc)

encoder = models.current_encoder()
device = models.cached_device_info()
st.divider()
if encoder is None:
    st.info("No model loaded yet.")
    st.caption(f"Work will run on: {device.describe()}")
    st.stop()

info = encoder.info
st.subheader(plain(info.model_id))
cols = st.columns([1.6, 1.2, 1.2, 1, 0.8, 0.8])  # "BertModel" was cut to "BertM…"
cols[0].metric("Architecture", info.architecture)
cols[1].metric(
    "Embedding rows",
    f"{info.vocab_size:,}",
    help="Rows of the model's token-embedding table (its config's vocab_size).",
)
cols[2].metric(
    "Tokenizer tokens",
    f"{info.tokenizer_size:,}",
    help="Token ids the tokenizer can produce, added tokens included.",
)
cols[3].metric("Hidden size", info.hidden_size)
cols[4].metric("Layers", info.num_layers)
cols[5].metric("Device", device.device.upper())
st.caption(vocabulary_note(info))
st.caption(
    f"{device.describe()} · loaded from {plain(info.source)} · revision {plain(info.revision[:19])}"
)
sample = encoder.tokenizer.tokenize("这家店的牛肉面很好吃")
st.write("Tokenizer sample:", plain(" · ".join(sample)))
st.page_link("pages/2_Data.py", label="Next: labelled data", icon=":material/arrow_forward:")
