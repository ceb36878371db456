"""A page with the app's job panel and, right after it, what the job's result unlocks.

Driven by tests/test_browser_job_panel.py: ``?seconds=`` sets how long the job takes.
"""

import time

import streamlit as st

from embedgen.runs import RunStatus
from embedgen.ui import jobpanel
from embedgen.ui.jobpanel import start_job

st.title("Job panel")
job = st.session_state.get("job")
if st.button("Build"):
    seconds = float(st.query_params.get("seconds", "0.1"))
    job = st.session_state["job"] = start_job(
        "Quick", lambda _job: time.sleep(seconds) or 42, heavy=False
    )
if job is not None:
    jobpanel.job_panel(job, jobpanel.job_status, key="quick")
    if job.state is RunStatus.FINISHED:
        st.session_state["result"] = job.result
if "result" in st.session_state:
    st.subheader("Result below")  # the element right after the panel
    with st.container(border=True):
        st.metric("Value", st.session_state["result"])
