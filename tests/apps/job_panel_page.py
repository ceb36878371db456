"""A page with the app's job panel and, right after it, what the job's result unlocks.

Driven by tests/test_browser_job_panel.py: ``?seconds=`` sets how long the job takes.
"""

import streamlit as st
from quick_job import quick_job

from embedgen.runs import RunStatus
from embedgen.ui import jobpanel

st.title("Job panel")
job = st.session_state.get("job")
if st.button("Build"):
    seconds = float(st.query_params.get("seconds", "0.1"))
    job = st.session_state["job"] = quick_job(seconds)
if job is not None:
    jobpanel.job_panel(job, jobpanel.job_status, key="quick")
    if job.state is RunStatus.FINISHED:
        st.session_state["result"] = job.result
if "result" in st.session_state:
    st.subheader("Result below")  # the element right after the panel
    with st.container(border=True):
        st.metric("Value", st.session_state["result"])
