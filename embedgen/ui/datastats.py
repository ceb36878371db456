"""How often each row's token or word occurs in the data, per label: counted once per data and
model for the server, and shared by the map's colours and Evaluate's label purity."""

from __future__ import annotations

from typing import Any

import streamlit as st

from embedgen.data import LabelledData
from embedgen.matrix import Rows
from embedgen.tokenstats import TokenStats, token_stats
from embedgen.ui.matrices import MatrixEntry
from embedgen.words import Corpus, WordSplitter


@st.cache_resource(show_spinner="Counting tokens in the data…", max_entries=4)
def _stats(
    model_id: str, data_sha: str, columns: tuple[str, str], _tokenizer: Any, _data: LabelledData
) -> TokenStats:
    return token_stats(_tokenizer, _data.texts, _data.labels, _data.label_names)


def label_stats(
    entry: MatrixEntry, data: LabelledData, tokenizer: Any, model_id: str
) -> TokenStats:
    """How often each row's token, or word, occurs in ``data`` per label: word rows count the
    data's words (segmented as word rows are), token rows the model's tokens."""
    if entry.matrix.rows_are is Rows.WORDS:
        return word_stats(data)
    columns = (data.text_column, data.label_column)
    return _stats(model_id, data.source_sha256, columns, tokenizer, data)


def word_stats(data: LabelledData) -> TokenStats:
    """How often each of the data's words (segmented with jieba, as word rows are) occurs per
    label."""
    words = WordSplitter(Corpus.of(data.texts, data.source_name))
    return _stats("jieba", data.source_sha256, (data.text_column, data.label_column), words, data)
