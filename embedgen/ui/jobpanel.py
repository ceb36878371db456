"""Long work off the Streamlit rerun path, and its panel, polled by the page.

Every long job is a worker's, through the queue: training (:mod:`embedgen.jobs`), watched
through its run folder by a :class:`QueuedJob`; matrix builds, their estimates, maps and
trade-offs (:mod:`embedgen.tasks`), watched through their job folders by a
:class:`FolderJob`. The server reads folders, never the model, for them; a page polls
(``st.fragment(run_every=...)``) and any session that knows a folder sees the same job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import streamlit as st

from embedgen import jobs, tasks
from embedgen.errors import BadRun
from embedgen.jobrecord import JobRecord, cancel_queued_job, read_job
from embedgen.runs import RunRecord, RunStatus, load_run, read_run_record
from embedgen.train import EpochMetrics, Run
from embedgen.ui import feedback, session, visitor
from embedgen.ui.markup import plain
from embedgen.ui.models import current_encoder

log = logging.getLogger(__name__)


def seconds_left(rate: float | None, done: int, total: int) -> float | None:
    """Seconds until ``done`` reaches ``total`` at ``rate`` units a second; None without both."""
    if rate is None or not total:
        return None
    return max(0.0, (total - done) / rate)


class _Watched:
    """What a job seen through its folder answers from ``progress.json`` (read by ``_read``
    into ``_progress``): counts, rate, time left; and waiting for it to end."""

    REFRESH_SECONDS = 0.25
    _progress: dict[str, Any]

    def _read(self) -> Any:
        raise NotImplementedError

    @property
    def active(self) -> bool:
        raise NotImplementedError

    @property
    def unit(self) -> str:
        self._read()
        return str(self._progress.get("unit", ""))

    @property
    def done(self) -> int:
        self._read()
        return int(self._progress.get("done", 0))

    @property
    def total(self) -> int:
        self._read()
        return int(self._progress.get("total", 0))

    @property
    def fraction(self) -> float:
        done, total = self.done, self.total
        return min(1.0, done / total) if total else 0.0

    @property
    def rate(self) -> float | None:
        """Units per second in the current stage, once it has advanced for a second."""
        self._read()
        first, now = self._progress.get("first"), self._progress.get("time")
        if not first or now is None:
            return None
        since, done0 = first
        if now - since < 1.0 or self.done <= done0:
            return None
        return (self.done - done0) / (now - since)

    @property
    def eta(self) -> float | None:
        return seconds_left(self.rate, self.done, self.total)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (for tests and scripts); True if it ended."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.active:
            if end is not None and time.monotonic() > end:
                return False
            time.sleep(self.REFRESH_SECONDS)
        return True


@dataclass(eq=False)
class QueuedJob(_Watched):
    """A training run in the queue (:mod:`embedgen.jobs`), seen through its run folder.

    It answers what a :class:`FolderJob` answers (state, stage, counts, rate, time left,
    result) and the epochs so far, so :func:`job_panel` draws both; each answer is read from
    run.json and progress.json (at most every :data:`REFRESH_SECONDS`), so any session that
    knows the folder, a reloaded tab too, sees the same run.
    """

    folder: str
    name: str = "Training"
    cancel: threading.Event = field(default_factory=threading.Event)
    end_shown: bool = False
    _record: RunRecord | None = None
    _progress: dict[str, Any] = field(default_factory=dict)
    _place: int | None = None
    _read_at: float = 0.0
    _result: Run | None = None
    _elapsed: float = 0.0
    _encoding: bool = False  # seen running with the feature cache on (what a cancel keeps)

    def _read(self) -> RunRecord | None:
        if time.time() - self._read_at >= self.REFRESH_SECONDS:
            try:
                self._record = read_run_record(self.folder)
            except BadRun:  # removed: cancelled before its first epoch
                self._record = None
            status = self._record.status if self._record else None
            if status is RunStatus.RUNNING and self._record is not None:
                self._encoding = bool(self._record.config.get("cache_features", True)) and (
                    self._record.config.get("strategy", "head") == "head"
                )
            running, queued = status is RunStatus.RUNNING, status is RunStatus.QUEUED
            self._progress = jobs.read_progress(self.folder) if running else {}
            self._place = jobs.place(self.folder) if queued else None
            self._read_at = time.time()
        return self._record

    @property
    def status(self) -> RunStatus | None:
        """run.json's status; None once the run is gone (cancelled before its first epoch)."""
        record = self._read()
        return record.status if record else None

    @property
    def state(self) -> RunStatus:
        return self.status or RunStatus.CANCELLED

    @property
    def active(self) -> bool:
        return self.state.active

    @property
    def stage(self) -> str:
        status = self.status
        if status is RunStatus.QUEUED:
            if self._place is None:
                return "waiting for a worker"
            return "next in line" if self._place == 0 else f"{self._place} ahead of you"
        return str(self._progress.get("stage", "")) if status is RunStatus.RUNNING else ""

    @property
    def elapsed(self) -> float:
        """Seconds since the run was queued, until it ended."""
        record = self._read()
        if record is None:  # removed (cancelled before its first epoch): as last seen
            return self._elapsed
        start = _seconds(record.queued or record.started)
        if start is None:
            return 0.0
        end = None if self.active else _seconds(record.finished or record.updated)
        self._elapsed = max(0.0, (end or time.time()) - start)
        return self._elapsed

    @property
    def events(self) -> list[EpochMetrics]:
        """The epochs finished so far, from run.json."""
        record = self._read()
        return list(record.history) if record else []

    @property
    def error(self) -> str | None:
        record = self._read()
        if record is None:
            if self._encoding:  # the texts encoded before the cancel stay in the cache
                return (
                    "Training was cancelled before its first epoch finished, so no run was "
                    "kept. The texts it had already encoded stay in the feature cache: the "
                    "next Start on this model and data skips them."
                )
            return "Training was cancelled before its first epoch finished; nothing was kept."
        if record.status is RunStatus.INTERRUPTED:
            gone = "Training stopped without saying why: its worker is gone (stopped, or its "
            if record.kept_epoch:
                return f"{gone}machine restarted). {record.kept_note()}"
            return f"{gone}machine restarted) before an epoch finished. Start it again."
        if record.status is RunStatus.CANCELLED:
            return record.message or "Training was cancelled; its best finished epoch is kept."
        return (record.message or None) if record.status is RunStatus.FAILED else None

    @property
    def result(self) -> Run | None:
        """The run once it ended with a trained head, else None."""
        record = self._read()
        if self._result is None and not self.active and record is not None:
            if record.has_trained_head:
                # The app's loaded encoder, not a second copy of the same weights.
                self._result = load_run(self.folder, loaded=current_encoder())
        return self._result

    def request_cancel(self) -> None:
        self.cancel.set()
        jobs.cancel(self.folder)
        self._read_at = 0.0


@dataclass(eq=False)
class FolderJob(_Watched):
    """A matrix build or its estimate in the queue (:mod:`embedgen.tasks`), seen through its
    job folder (job.json, progress.json) like a :class:`QueuedJob`; ``result`` is what
    ``take(record)`` makes of the finished job's record (read once)."""

    folder: str
    name: str
    take: Callable[[JobRecord], Any] = lambda record: record.result
    tag: Any = None
    cancel: threading.Event = field(default_factory=threading.Event)
    end_shown: bool = False
    events: list[Any] = field(default_factory=list)
    _record: JobRecord | None = None
    _progress: dict[str, Any] = field(default_factory=dict)
    _read_at: float = 0.0
    _result: Any = None
    _taken: bool = False

    def _read(self) -> JobRecord | None:
        if time.time() - self._read_at >= self.REFRESH_SECONDS:
            try:
                self._record = read_job(self.folder)
            except BadRun:  # its folder was removed
                self._record = None
            started = self._record is not None and self._record.status is not RunStatus.QUEUED
            self._progress = jobs.read_progress(self.folder) if started else {}
            self._read_at = time.time()
        return self._record

    @property
    def state(self) -> RunStatus:
        record = self._read()
        return record.status if record else RunStatus.CANCELLED

    @property
    def active(self) -> bool:
        return self.state.active

    @property
    def stage(self) -> str:
        """The stage under way ("waiting for a worker" while queued), or the last one."""
        if self.state is RunStatus.QUEUED:
            return "waiting for a worker"
        return str(self._progress.get("stage", ""))

    @property
    def elapsed(self) -> float:
        record = self._read()
        start = _seconds(record.queued) if record else None
        if record is None or start is None:
            return 0.0
        end = None if self.active else _seconds(record.finished)
        return max(0.0, (end or time.time()) - start)

    @property
    def error(self) -> str | None:
        record = self._read()
        if record is None:
            return f"{self.name}: its folder is gone."
        if record.status is RunStatus.INTERRUPTED:
            return f"{self.name} stopped: its worker is gone (stopped, or its machine restarted)."
        ended_badly = record.status in (RunStatus.FAILED, RunStatus.CANCELLED)
        return (record.message or None) if ended_badly else None

    @property
    def result(self) -> Any:
        """``take(record)`` once the job finished (read once), else None."""
        record = self._read()
        if not self._taken and record is not None and record.status is RunStatus.FINISHED:
            self._taken = True
            self._result = self.take(record)
        return self._result

    def request_cancel(self) -> None:
        self.cancel.set()
        (Path(self.folder) / jobs.CANCEL_FILE).touch()
        cancel_queued_job(self.folder)
        self._read_at = 0.0


def _seconds(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if isinstance(iso, str) else None
    except ValueError:
        return None


def human_seconds(seconds: float) -> str:
    """75 -> "1 min 15 s"; 4000 -> "1 h 7 min"."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


# How often a running job's panel redraws. Each redraw is a script run in the server and a
# re-render in the browser, both taking CPU from the job on a small machine.
POLL_SECONDS = 1.0


def job_panel(job: QueuedJob | FolderJob, render: Callable[[Any], None], *, key: str) -> None:
    """Draw ``render(job)`` and, while the job is active, redraw it every second.

    When the job ends the whole page reruns once, so everything that depends on its result
    (tables, buttons) appears without a click. That holds too for a job that ended before
    its panel was first drawn (a quick PCA map): the page above the panel read its result
    while it was still running, so it needs that one rerun as well.

    The fragment is drawn inside a container of its own. Without it, Streamlit 1.67 often
    dropped the first element after the panel when the fragment asked for that rerun (14 of
    30 tries; tests/test_browser_job_panel.py); with it, 0 of 55.
    """
    if not job.active and not job.end_shown:
        job.end_shown = True
        st.rerun(scope="app")
    polling = job.active

    @st.fragment(run_every=POLL_SECONDS if polling else None)
    def panel() -> None:
        render(job)
        if polling and not job.active:
            job.end_shown = True
            st.rerun(scope="app")
        if polling:  # asked in a callback: the status above already says "cancelling…"

            def cancel() -> None:
                job.request_cancel()
                st.toast("Stopping after the current batch…")

            st.button("Cancel", key=f"{key}_cancel", disabled=job.cancel.is_set(), on_click=cancel)

    with st.container():  # see the docstring
        panel()


def warm_worker(spec: str, trust_remote_code: bool) -> None:
    """Have a worker load the model just loaded on the Model page, as the Train page will ask
    for it (the same name and permissions), so that the first Start finds it loaded."""
    settings = visitor.operator()
    jobs.ensure_worker()
    request = jobs.TrainRequest(
        model=spec,
        folder="",
        config={},
        trust_remote_code=trust_remote_code and settings.allow_remote_code,
        allow_download=settings.allow_downloads,
        allow_pickle=settings.allow_pickled_weights,
    )
    jobs.warm_up(request)


def job_status(job: QueuedJob | FolderJob) -> None:
    """A progress bar with the stage and elapsed time; messages when it ended badly. Once
    Cancel is clicked, "cancelling…" until the worker has stopped (after its current batch)."""
    stopping = job.cancel.is_set() and job.active
    label = f"{job.name}: {'cancelling…' if stopping else job.state}"
    if job.stage and job.active:
        label += f" · {job.stage}"
    label += f" · {job.elapsed:.0f} s"
    if job.total and job.active:
        label += f" · {job.done:,}/{job.total:,} {job.unit}".rstrip()
        if job.rate is not None:
            rate = f"{job.rate:,.0f}" if job.rate >= 100 else f"{job.rate:.1f}"
            label += f" · {rate} {job.unit or 'steps'}/s"
        if job.eta is not None:
            label += f" · about {human_seconds(job.eta)} left"
    st.progress(job.fraction if job.state is not RunStatus.FINISHED else 1.0, text=plain(label))
    if job.state is RunStatus.FAILED:
        st.error(plain(job.error or f"{job.name} failed."))
    elif job.state is RunStatus.INTERRUPTED:  # not a failure of the job: its process went
        st.warning(plain(job.error or f"{job.name} was interrupted."))
    elif job.state is RunStatus.CANCELLED:
        st.warning(plain(job.error or f"{job.name} was cancelled."))


def job_line(job: QueuedJob | FolderJob | None, detail: str = "") -> str | None:
    """One line on a background job while it is queued or running ("running · epoch 2 ·
    40% · about 1 min left"), for pages other than the job's own; ``None`` otherwise."""
    if job is None or not job.active:
        return None
    parts = [str(job.state), detail, job.stage]
    if job.total:
        parts.append(f"{job.fraction:.0%}")
    if job.eta is not None:
        parts.append(f"about {human_seconds(job.eta)} left")
    return " · ".join(p for p in parts if p)


def queue_tradeoff(run: Run, data: Any, sets: list[Any], *, tag: Any) -> FolderJob:
    """Queue the trade-off of ``run`` over ``data`` (and the similarity files ``sets``) for a
    worker, as the Matrix and Evaluate pages ask for it; its points are the job's result."""
    user = visitor.current_user()
    record = feedback.attempt(lambda: tasks.submit_tradeoff(str(run.folder), data, sets, user=user))
    jobs.ensure_worker()
    return FolderJob(record.folder, "Trade-off", take=tradeoff_points, tag=tag)


def queue_evaluation(
    entries: dict[str, Any],
    *,
    similarity: list[tuple[str, bytes]],
    analogy: list[tuple[str, bytes]],
    purity: dict[str, int] | None,
    data: Any,
    label_words: tuple[str, bytes] | None,
    pool: bool,
    tag: Any,
) -> FolderJob:
    """Queue the Evaluate page's scores of ``entries`` (name -> MatrixEntry) on the uploaded
    files (name, bytes) and label purity, for a worker; its tables are the job's result. The
    tokens of the data are counted with the model loaded on the Model page, as the operator
    allows it to be loaded."""
    user = visitor.current_user()
    settings = visitor.operator()
    spec, trust = st.session_state.get(session.MODEL_LOADED) or ("", False)
    model = (
        tasks.Source(
            model=spec,
            trust_remote_code=bool(trust) and settings.allow_remote_code,
            allow_download=settings.allow_downloads,
            allow_pickle=settings.allow_pickled_weights,
        )
        if spec
        else None
    )
    record = feedback.attempt(
        lambda: tasks.submit_evaluation(
            {name: (e.matrix, e.folder) for name, e in entries.items()},
            similarity=[tasks.Benchmark(n, raw) for n, raw in similarity],
            analogy=[tasks.Benchmark(n, raw) for n, raw in analogy],
            purity=purity,
            data=data,
            label_words=tasks.Benchmark(*label_words) if label_words else None,
            model=model,
            pool=pool,
            user=user,
        )
    )
    jobs.ensure_worker()
    return FolderJob(record.folder, "Scores", take=tasks.scores_of, tag=tag)


def job_status_while_active(job: QueuedJob | FolderJob) -> None:
    """:func:`job_status` until the job finishes; then nothing (its result says enough)."""
    if job.state is not RunStatus.FINISHED:
        job_status(job)


def tradeoff_notes(records: list[dict[str, Any]]) -> None:
    """What a drawn trade-off measured and over which rows (the Matrix and Evaluate pages)."""
    st.caption(f"Similarity: {plain(records[0]['similarity_measure'])}.")
    st.caption(
        f"Rows of every point: {plain(records[0].get('rows', 'the same words'))}, "
        "the words of your data that lean to a label and the similarity files' words, "
        "read once and then scored each way. Evaluate's Word similarity tab scores "
        "each saved matrix's own rows (other words, or tokens pooled into words), so "
        "its figures differ from these."
    )


def tradeoff_points(record: JobRecord) -> Any:
    """The points of a finished trade-off job."""
    return record.result["points"]
