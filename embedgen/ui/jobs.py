"""Long work off the Streamlit rerun path: a thread per job, polled by the page.

A job's thread never calls Streamlit; it only updates plain attributes that the page reads
when it polls (``st.fragment(run_every=...)``). Heavy jobs (training, contextual matrices,
UMAP) take a process-wide slot first, so on one GPU box several analysts queue instead of
running out of memory together.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from embedgen.errors import Cancelled, EmbedgenError

log = logging.getLogger(__name__)

HEAVY_SLOTS = threading.BoundedSemaphore(1)


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class Job:
    """One piece of background work and everything a page shows about it."""

    name: str
    work: Callable[[Job], Any]
    heavy: bool = True
    tag: Any = None  # what the job is for, so a page can tell its jobs apart
    unit: str = ""  # what done/total count ("rows", "batches"), shown after the numbers
    state: JobState = JobState.QUEUED
    done: int = 0
    total: int = 0
    stage: str = ""
    stage_first: tuple[float, int] | None = None  # (time, done) of the stage's first report
    events: list[Any] = field(default_factory=list)
    result: Any = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    thread: threading.Thread | None = None
    end_shown: bool = False  # whether a page has rerun since the job ended (ui.job_panel)

    # -- called from the worker thread ----------------------------------------------------
    def report(self, done: int, total: int) -> None:
        if self.stage_first is None:
            self.stage_first = (time.time(), done)
        self.done, self.total = done, total

    __call__ = report  # a job is a ProgressFn: pass ``progress=job``

    def set_stage(self, name: str, unit: str = "") -> None:
        """A new stage (embedgen.progress.stage): its own counts, rate and ETA."""
        self.stage, self.unit = name, unit or self.unit
        self.done = self.total = 0
        self.stage_first = None

    # -- called from the page ---------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.state in (JobState.QUEUED, JobState.RUNNING)

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def elapsed(self) -> float:
        return (self.finished or time.time()) - self.started

    @property
    def rate(self) -> float | None:
        """Units per second in the current stage, once it has advanced for a second."""
        if self.stage_first is None:
            return None
        since, done0 = self.stage_first
        seconds = time.time() - since
        if seconds < 1.0 or self.done <= done0:
            return None
        return (self.done - done0) / seconds

    @property
    def eta(self) -> float | None:
        """Seconds left in the current stage at the current rate, when there is one."""
        rate = self.rate
        if rate is None or not self.total:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def request_cancel(self) -> None:
        self.cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (for tests and scripts); True if it ended."""
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.active


def _run(job: Job) -> None:
    slot = HEAVY_SLOTS if job.heavy else None
    try:
        if slot is not None:
            job.stage = "waiting for another job to finish"
            while not slot.acquire(timeout=0.2):
                if job.cancel.is_set():
                    raise Cancelled(f"{job.name} was cancelled before it started.")
        job.state = JobState.RUNNING
        job.stage = ""
        try:
            job.result = job.work(job)
        finally:
            if slot is not None:
                slot.release()
        job.state = JobState.CANCELLED if job.cancel.is_set() else JobState.DONE
    except Cancelled as exc:
        job.state, job.error = JobState.CANCELLED, str(exc)
    except EmbedgenError as exc:
        job.state, job.error = JobState.FAILED, str(exc)
    except Exception as exc:  # a bug: full traceback in the server log, a short note for the user
        log.exception("Job %s failed", job.name)
        job.state = JobState.FAILED
        job.error = (
            f"{job.name} failed unexpectedly ({type(exc).__name__}: {exc}). "
            "The details are in the server log; please report it."
        )
    finally:
        job.finished = time.time()


def start_job(
    name: str,
    work: Callable[[Job], Any],
    *,
    heavy: bool = True,
    tag: Any = None,
    unit: str = "",
) -> Job:
    """Start ``work(job)`` in a daemon thread and return the job to poll."""
    job = Job(name=name, work=work, heavy=heavy, tag=tag, unit=unit)
    job.thread = threading.Thread(target=_run, args=(job,), name=f"embedgen-{name}", daemon=True)
    job.thread.start()
    return job
