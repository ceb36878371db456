"""embedgen in the browser: model, labelled data, fine-tuning, matrix, neighbours, export."""

import streamlit as st

st.set_page_config(page_title="embedgen", page_icon="🔤", layout="wide")
st.title("embedgen")
st.markdown(
    "Turn a pretrained transformer into a word-embedding matrix shaped by your own "
    "labelled text.\n\n"
    "The pages follow the path of the data: **Model → Data → Train → Matrix → Explore → Export**. "
    "Every step is also a command: `embedgen --help`."
)
