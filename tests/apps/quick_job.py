"""A job that ends by itself after ``seconds``, through a real job folder, for job-panel pages.

A thread does what a worker does to a job folder (claim it, end it with a result), so the page
watches it as it watches a matrix build: the panel's behaviour at the end of a job is what is
tested, not a model.
"""

from __future__ import annotations

import threading
import time

from embedgen.jobrecord import claim_job, end_job, new_job_folder, write_queued_job
from embedgen.runs import RunStatus
from embedgen.ui.jobpanel import FolderJob


def quick_job(seconds: float, value: int = 42) -> FolderJob:
    folder = new_job_folder("quick", "panel test")
    write_queued_job(folder, "quick", {}, title="quick", task_id="none")

    def work() -> None:
        claim_job(folder)
        time.sleep(seconds)
        end_job(folder, RunStatus.FINISHED, result={"value": value})

    threading.Thread(target=work, daemon=True).start()
    return FolderJob(str(folder), "Quick", take=lambda record: record.result["value"])
