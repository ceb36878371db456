"""The folder of a queued job other than training (a matrix build, its estimate): job.json.

A job is asked for by writing its folder (:func:`write_queued_job`: job.json "queued", with
the request a worker needs) and enqueueing its task; a worker claims it (:func:`claim_job`:
the heartbeat file, created only if absent), writes ``progress.json`` beside it as it goes,
and ends it (:func:`end_job`) with a status, a message for people and its result. Everything
a watcher shows is read from the folder, and stopping is a ``cancel`` file in it, as for runs
(:mod:`embedgen.runs`), whose statuses jobs share: a job whose worker died reads
"interrupted" once its heartbeat is stale.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from embedgen.atomic import write_json
from embedgen.errors import BadRun, Cancelled
from embedgen.heartbeat import age, pid_alive
from embedgen.paths import slug, workspace
from embedgen.runs import HEARTBEAT_FILE, HEARTBEAT_STALE_SECONDS, RunStatus, now_iso

log = logging.getLogger(__name__)

JOB_FILE = "job.json"


@dataclass(frozen=True)
class JobRecord:
    """What job.json says of a job."""

    folder: str
    kind: str  # "matrix", "estimate"
    status: RunStatus
    title: str = ""  # what it makes, for people ("matrix aggregated-L12-…")
    message: str = ""
    request: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    queued: str | None = None
    started: str | None = None
    finished: str | None = None
    task_id: str | None = None
    owner: str | None = None  # runs.owner_tag of the secret of the tab that asked for it
    pid: int | None = None
    host: str | None = None

    @property
    def name(self) -> str:
        return Path(self.folder).name

    @property
    def when(self) -> str:
        return self.finished or self.started or self.queued or ""

    @classmethod
    def from_json(cls, raw: Any, folder: Path) -> JobRecord:
        """job.json's fields, checked; :class:`BadRun` naming the folder when malformed."""
        try:
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
            known["folder"] = str(folder)
            known["status"] = RunStatus(known["status"])
            for name in ("request", "result"):
                if not isinstance(known.get(name, {}), dict):
                    raise TypeError(f"{name} is not an object")
            return cls(**known)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRun(f"Job '{folder.name}': {JOB_FILE} is damaged ({exc}).") from exc


def jobs_dir(user: str | None = None) -> Path:
    """Where jobs go: ``jobs/`` in :func:`embedgen.paths.workspace`."""
    return workspace(user) / "jobs"


def new_job_folder(kind: str, title: str, user: str | None = None) -> Path:
    """A new, empty folder for a job: ``<time>_<kind>_<title>`` under :func:`jobs_dir`
    (``-2`` added when taken); the title is made a slug, so no visitor's string is a path."""
    root = jobs_dir(user)
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    stem = f"{stamp}_{slug(kind)}_{slug(title)[:60]}".rstrip("_")
    for n in range(1, 1000):
        folder = root / (stem if n == 1 else f"{stem}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise BadRun(f"No free job folder for {stem} in {root}.")


def write_job(record: JobRecord) -> None:
    path = Path(record.folder) / JOB_FILE
    data = asdict(record)
    data.pop("folder")
    write_json(path, data)


def is_job_folder(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / JOB_FILE).is_file()


def read_job(folder: str | os.PathLike[str]) -> JobRecord:
    """job.json of ``folder``; a "running" job whose worker stopped beating reads
    "interrupted". :class:`BadRun` when it is missing or damaged."""
    folder = Path(folder)
    beat = age(folder / HEARTBEAT_FILE)  # before the record, as runs.read_run_record says
    try:
        raw = json.loads((folder / JOB_FILE).read_text("utf-8"))
    except FileNotFoundError as exc:
        raise BadRun(f"'{folder.name}' is not a job folder (no {JOB_FILE}).") from exc
    except (OSError, ValueError) as exc:
        raise BadRun(f"Job '{folder.name}': {JOB_FILE} cannot be read ({exc}).") from exc
    record = JobRecord.from_json(raw, folder)
    if record.status is RunStatus.RUNNING and not _alive(record, beat):
        record = replace(
            record,
            status=RunStatus.INTERRUPTED,
            message=record.message or "Its worker stopped before it ended; start it again.",
        )
    return record


def _alive(record: JobRecord, beat_age: float | None) -> bool:
    if beat_age is None or beat_age > HEARTBEAT_STALE_SECONDS:
        return False
    here = record.host == socket.gethostname()
    return not (here and record.pid is not None and record.pid > 0 and not pid_alive(record.pid))


def write_queued_job(
    folder: Path,
    kind: str,
    request: dict[str, Any],
    *,
    title: str,
    task_id: str,
    owner: str | None = None,
) -> JobRecord:
    """job.json "queued" in ``folder`` (made by :func:`new_job_folder`)."""
    record = JobRecord(
        str(folder),
        kind,
        RunStatus.QUEUED,
        title=title,
        request=request,
        queued=now_iso(),
        task_id=task_id,
        owner=owner,
    )
    write_job(record)
    return record


def claim_job(folder: str | os.PathLike[str]) -> JobRecord:
    """Claim the queued job in ``folder`` (its heartbeat file, created only if absent) and
    mark it running; :class:`Cancelled` when it is no longer queued (cancelled, or claimed by
    another worker)."""
    folder = Path(folder)
    gone = Cancelled(f"Job '{folder.name}' is no longer queued; it was cancelled.")
    try:
        record = read_job(folder)
    except BadRun:
        raise gone from None
    if record.status is not RunStatus.QUEUED:
        raise gone
    try:
        (folder / HEARTBEAT_FILE).touch(exist_ok=False)
    except (FileExistsError, FileNotFoundError):
        raise gone from None
    record = read_job(folder)  # a cancel may have ended it between the read and the claim
    if record.status is not RunStatus.QUEUED:
        (folder / HEARTBEAT_FILE).unlink(missing_ok=True)
        raise gone
    running = replace(
        record,
        status=RunStatus.RUNNING,
        started=now_iso(),
        pid=os.getpid(),
        host=socket.gethostname(),
    )
    write_job(running)
    return running


def end_job(
    folder: str | os.PathLike[str],
    status: RunStatus,
    message: str = "",
    result: dict[str, Any] | None = None,
) -> JobRecord:
    """Write how the job ended (then its heartbeat goes: the record is final first)."""
    folder = Path(folder)
    record = read_job(folder)
    ended = replace(record, status=status, message=message, result=result or {}, finished=now_iso())
    write_job(ended)
    (folder / HEARTBEAT_FILE).unlink(missing_ok=True)
    return ended


def cancel_queued_job(
    folder: str | os.PathLike[str],
    status: RunStatus = RunStatus.CANCELLED,
    message: str = "Cancelled before a worker took it up.",
) -> bool:
    """End a job that no worker has claimed yet with ``status`` (cancelled, or failed when its
    queue entry is lost for good), the claim taken here as a worker would take it; False when
    a worker has it (it sees the ``cancel`` file)."""
    folder = Path(folder)
    try:
        record = read_job(folder)
        if record.status is not RunStatus.QUEUED:
            return False
        (folder / HEARTBEAT_FILE).touch(exist_ok=False)
    except (BadRun, FileExistsError, FileNotFoundError):
        return False
    end_job(folder, status, message)
    return True


def list_jobs(root: str | os.PathLike[str] | None = None) -> list[JobRecord]:
    """The jobs in ``root`` (default :func:`jobs_dir`), newest first; damaged folders skipped
    with a warning."""
    root = Path(root) if root is not None else jobs_dir()
    if not root.is_dir():
        return []
    records = []
    for folder in root.iterdir():
        if not is_job_folder(folder):
            continue
        try:
            records.append(read_job(folder))
        except BadRun as exc:
            log.warning("Skipping %s: %s", folder, exc)
    return sorted(records, key=lambda r: r.when, reverse=True)
