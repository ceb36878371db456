"""A page for test_browser_markup: the hostile strings in $MARKUP_CASES (a JSON list) through
``plain`` and ``code`` in the elements the app shows user strings in."""

import json
import os

import streamlit as st

from embedgen.ui.markup import code, plain

for i, case in enumerate(json.loads(os.environ["MARKUP_CASES"])):
    with st.container(key=f"case{i}"):
        st.caption(plain(case))
        st.error(plain(case))
        st.markdown(f"{plain(case)} {code(case)}")
        st.progress(0.5, text=plain(case))
        st.metric(plain(case), 1)
