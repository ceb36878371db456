"""Training in a queue outside the web process: the huey queue, its task and its workers.

The caller writes a queued run into its run folder (``data.json``, run.json "queued") and
enqueues a :class:`TrainRequest` (:func:`submit`). A worker (``embedgen worker``, a process
of its own, maybe on another machine that shares ``$EMBEDGEN_HOME``) takes it up, trains it
with :func:`embedgen.runs.train_and_save` and writes ``progress.json`` as it goes. Everything
a watcher shows is read from the run folder (:func:`read_progress`, :func:`place`), and
stopping is a ``cancel`` file in it (:func:`cancel`), so a closed browser tab loses nothing
and any session of the owner can stop the run.

The queue is huey's: SQLite at ``$EMBEDGEN_HOME/queue/huey.db`` by default, Redis when
``EMBEDGEN_QUEUE_URL=redis://host:6379/0`` (``pip install "embedgen[redis]"``). A submit that
cannot reach the queue leaves no run folder and says so. A queued run whose queue entry is
lost (the queue file deleted, Redis restarted without its data, a worker killed between
taking the task and claiming the run) is queued again by a worker within a minute
(:func:`requeue_lost`, from the ``request.json`` its folder keeps); a process whose SQLite
file was deleted or replaced opens the new one instead of writing into the lost one.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey

from embedgen.atomic import write_json
from embedgen.data import DroppedRow, LabelledData
from embedgen.errors import BadConfig, BadRun, Cancelled, QueueUnreachable
from embedgen.heartbeat import beating, fresh, pid_alive
from embedgen.jobrecord import cancel_queued_job, jobs_dir, list_jobs, write_job
from embedgen.models import Encoder, load_encoder
from embedgen.paths import queue_dir, runs_dir, users_dir
from embedgen.runs import (
    HEARTBEAT_FILE,
    RUN_FILE,
    RunStatus,
    claim_queued,
    failure_message,
    queued_record,
    read_run_record,
    status_of,
    train_and_save,
    write_queued,
    write_record,
)
from embedgen.train import FinetuneConfig

log = logging.getLogger(__name__)

QUEUE_URL_ENV = "EMBEDGEN_QUEUE_URL"
AUTOSTART_ENV = "EMBEDGEN_WORKER_AUTOSTART"  # "0": the app never starts a worker itself
DATA_FILE = "data.json"
REQUEST_FILE = "request.json"  # the TrainRequest, to queue the run again if its entry is lost
# A run queued this long whose task no queue holds is queued again (the environment may say
# otherwise: tests do, not to wait a minute).
LOST_AFTER_SECONDS = float(os.environ.get("EMBEDGEN_LOST_AFTER_SECONDS", "60"))
REQUEUE_EVERY_BEATS = 6  # a worker looks for lost runs every 6 heartbeats (30 s)
PROGRESS_FILE = "progress.json"
CANCEL_FILE = "cancel"
PROGRESS_SECONDS = 0.5  # progress.json is written at most this often (and at each new stage)
CANCEL_POLL_SECONDS = 0.5
WORKER_BEAT_SECONDS = 5.0  # a worker touches its heartbeat file this often
WORKER_STALE_SECONDS = 15.0  # a worker heartbeat older than this: the worker is gone
WORKER_POLL_SECONDS = 1.0  # an idle SQLite worker looks for tasks at least this often
ENCODERS_KEPT = 2  # encoders a worker keeps loaded between runs


# -- the queue ---------------------------------------------------------------------------------

_queues: dict[str, tuple[Huey, Any, Any]] = {}  # place -> (huey, its train and warm tasks)
_queues_lock = threading.Lock()
# Tasks of the modules above this one (embedgen.tasks: matrix builds, their estimates), by
# name; each queue registers them as it is made, so a worker that imported them runs them.
_more_tasks: dict[str, Any] = {}
_wrappers: dict[int, dict[str, Any]] = {}  # id(huey) -> name -> its task of that name
_quick: dict[str, Huey] = {}  # place -> its quick lane
_quick_tasks: set[str] = set()  # names of the tasks that go into the quick lane
QUICK_LANE = "embedgen-quick"


def get_huey() -> Huey:
    """The training queue: Redis at ``$EMBEDGEN_QUEUE_URL`` when set, else SQLite in
    :func:`embedgen.paths.queue_dir`; one instance per place, with the ``train`` task."""
    return _queue()[0]


def _queue() -> tuple[Huey, Any]:
    """The queue and its train task."""
    huey, train_task, _ = _queue_and_tasks()
    return huey, train_task


def _queue_and_tasks() -> tuple[Huey, Any, Any]:
    """The queue of this place (Redis or the SQLite file) and its train and warm tasks."""
    url, where = _place()
    with _queues_lock:
        _make_queues(url, where)
        if not url:
            _reopen_if_replaced(_queues[where][0], Path(where))
        return _queues[where]


def quick_huey() -> Huey:
    """The quick lane of this place's queue: short jobs (estimates, maps, trade-offs,
    scores) that a worker runs beside a training instead of after it (:func:`run_worker`).
    The same SQLite file or Redis server, under a queue name of its own."""
    url, where = _place()
    with _queues_lock:
        _make_queues(url, where)
        if not url:
            _reopen_if_replaced(_quick[where], Path(where))
        return _quick[where]


def _place() -> tuple[str, str]:
    url = os.environ.get(QUEUE_URL_ENV, "").strip()
    return url, url or str(queue_dir() / "huey.db")


def _make_queues(url: str, where: str) -> None:
    """Both lanes of the queue at ``where``, each with every task (called with the lock)."""
    if where in _queues:
        return
    huey, quick = _new_huey(url), _new_huey(url, QUICK_LANE)
    tasks = huey.task(name="embedgen.train")(train), huey.task(name="embedgen.warm")(warm)
    for lane in (huey, quick):
        _wrappers[id(lane)] = {n: lane.task(name=n)(fn) for n, fn in _more_tasks.items()}
    _queues[where], _quick[where] = (huey, *tasks), quick


def register_task(name: str, fn: Any, *, quick: bool = False) -> None:
    """Make ``fn(payload: dict)`` the queue's task ``name`` in this process (its queues made
    before and after): what :func:`enqueue` asks a worker to run. ``quick``: a short job,
    queued in the quick lane (:func:`quick_huey`)."""
    with _queues_lock:
        _more_tasks[name] = fn
        if quick:
            _quick_tasks.add(name)
        for huey in [q[0] for q in _queues.values()] + list(_quick.values()):
            known = _wrappers.setdefault(id(huey), {})
            if name not in known:
                known[name] = huey.task(name=name)(fn)


def _lane(name: str) -> Huey:
    """The queue a task of ``name`` goes into."""
    return quick_huey() if name in _quick_tasks else get_huey()


def enqueue(
    name: str,
    payload: dict[str, Any],
    *,
    prepare: Callable[[str], None] | None = None,
    undo: Callable[[], None] | None = None,
) -> str:
    """Put the task ``name`` (registered by :func:`register_task`) with ``payload`` in the
    queue; return its id. ``prepare(task_id)`` runs first (the caller writes what the
    worker reads); when the queue cannot take the task, ``undo()`` runs and
    :class:`QueueUnreachable` says so."""
    huey = _lane(name)
    with _queues_lock:
        wrapper = _wrappers.get(id(huey), {}).get(name)
    if wrapper is None:
        raise BadConfig(f"No queue task is called {name!r} in this process.")
    task = wrapper.s(payload)
    if prepare is not None:
        prepare(task.id)
    try:
        huey.enqueue(task)
    except Exception as exc:
        if undo is not None:
            undo()
        raise QueueUnreachable(
            f"The job queue is not reachable ({_where()}: {type(exc).__name__}); nothing was "
            "started. Try again in a minute; if it stays so, tell the operator of this server."
        ) from exc
    return task.id


_opened: dict[tuple[Path, str], int] = {}  # (SQLite file, lane) -> the inode opened here


def _reopen_if_replaced(huey: Huey, path: Path) -> None:
    """Open the queue file at ``path`` again when it is no longer the one this process opened.

    An open SQLite connection writes on into a deleted file, so a process that had submitted
    before the file was removed kept queueing runs no worker would ever see ("queued · next
    in line" beside an idle worker).
    """
    try:
        inode: int | None = path.stat().st_ino
    except FileNotFoundError:
        inode = None
    key = (path, huey.name)
    if inode is not None and _opened.get(key) == inode:
        return
    if key in _opened:  # replaced or removed since it was opened here
        log.warning("The queue file %s was replaced or removed: opening it again", path)
        huey.storage.close()
        huey.storage.initialize_schema()
        inode = path.stat().st_ino
    if inode is not None:
        _opened[key] = inode


def _new_huey(url: str, name: str = "embedgen") -> Huey:
    if not url:
        queue_dir().mkdir(parents=True, exist_ok=True)
        return SqliteHuey(name, filename=str(queue_dir() / "huey.db"), results=False)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise BadConfig(
            f"{QUEUE_URL_ENV}={url!r}: only Redis is supported (redis://host:6379/0). Unset it "
            "to use the SQLite queue in $EMBEDGEN_HOME."
        )
    try:
        import redis  # noqa: F401
    except ImportError:
        raise BadConfig(
            f"{QUEUE_URL_ENV} points to Redis, but the redis package is not installed. Install "
            'it with `pip install "embedgen[redis]"`, or unset the variable.'
        ) from None
    return RedisHuey(name, url=url, results=False)


@dataclass(frozen=True)
class TrainRequest:
    """What a worker needs to train a queued run; the data waits in the run folder."""

    model: str  # hub id or folder, as load_encoder takes it
    folder: str
    config: dict[str, Any]  # FinetuneConfig.as_dict()
    trust_remote_code: bool = False
    allow_download: bool = True
    allow_pickle: bool = False  # the operator's allow_pickled_weights when it was queued
    owner: str | None = None  # runs.owner_tag of the secret that may take the run up again


def submit(
    request: TrainRequest, data: LabelledData, model_info: dict[str, Any] | None = None
) -> str:
    """Write the queued run into ``request.folder`` and enqueue it; return the task id.

    ``model_info`` (``encoder.info.as_dict()``) is what run.json says of the model until a
    worker loads it.
    """
    config = FinetuneConfig.from_dict(request.config)
    huey, task = _queue()
    message = task.s(asdict(request))
    folder = Path(request.folder)
    write_queued(
        folder, config, model_info or {}, data.summary(), task_id=message.id, owner=request.owner
    )
    write_data(data, folder)  # before the queue hears of it: a worker reads it at once
    write_json(folder / REQUEST_FILE, asdict(request))
    try:
        huey.enqueue(message)
    except Exception as exc:  # Redis down, the SQLite file unwritable: nothing was started
        for name in (RUN_FILE, DATA_FILE, REQUEST_FILE):
            (folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
        raise QueueUnreachable(
            f"The job queue is not reachable ({_where()}: {type(exc).__name__}); nothing was "
            "started. Try again in a minute; if it stays so, tell the operator of this server."
        ) from exc
    log.info("Queued training of %s (task %s)", folder.name, message.id)
    return message.id


def warm_up(request: TrainRequest) -> None:
    """Ask a worker to load ``request``'s model now (the Model page does, once a model is
    loaded there), so that the first Start finds it loaded: a worker keeps the last
    :data:`ENCODERS_KEPT` models, one copy each. Best effort: a queue that cannot be reached
    only leaves the first run to load the model itself."""
    huey, _, task = _queue_and_tasks()
    try:
        huey.enqueue(task.s(asdict(request)))
    except Exception as exc:  # the run that follows says what is wrong with the queue
        log.info("No worker warmed for %s: %s", request.model, exc)


def warm(request: dict[str, Any]) -> None:
    """The queue's task: load the model of ``request`` (a :class:`TrainRequest` as a dict,
    its folder unused) into this worker's encoders."""
    req = TrainRequest(**request)
    started = time.perf_counter()
    _encoder(req)
    log.info("Warmed %s in %.1f s", req.model, time.perf_counter() - started)


def _where() -> str:
    """The queue, as messages name it: Redis without its password, or the SQLite file."""
    url = os.environ.get(QUEUE_URL_ENV, "").strip()
    if not url:
        return str(queue_dir() / "huey.db")
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


def requeue_lost(min_age: float = LOST_AFTER_SECONDS) -> list[Path]:
    """Queue again the runs and jobs (:func:`_requeue_lost_jobs`) queued at least
    ``min_age`` seconds ago whose task no queue holds (the queue file was deleted, Redis lost
    its data); return their folders.

    A run without its ``request.json`` (queued by an older embedgen) ends "failed", saying
    why. A task queued twice is harmless: the worker that claims the run first trains it, the
    other finds it no longer queued and skips it.
    """
    from datetime import UTC, datetime

    huey, task = _queue()
    try:
        pending = {m.id for lane in (huey, quick_huey()) for m in lane.pending()}
    except Exception as exc:  # the queue is not back yet: try again later
        log.debug("Lost runs not looked for: %s", exc)
        return []
    folders = [runs_dir()]
    if users_dir().is_dir():
        folders += [p / "runs" for p in sorted(users_dir().iterdir())]
    now, found = datetime.now(UTC), []
    for folder in (f for root in folders if root.is_dir() for f in sorted(root.iterdir())):
        record = queued_record(folder)
        if record is None or record.task_id in pending or not record.queued:
            continue
        if (now - datetime.fromisoformat(record.queued)).total_seconds() < min_age:
            continue
        try:
            request = TrainRequest(**json.loads((folder / REQUEST_FILE).read_text("utf-8")))
        except (OSError, ValueError, TypeError):
            _fail_queued(folder, BadRun("its queue entry was lost and it cannot be queued again"))
            continue
        message = task.s(asdict(request))
        write_record(replace(record, task_id=message.id))
        huey.enqueue(message)
        log.warning("Queued %s again: its queue entry was lost", folder.name)
        found.append(folder)
    return found + _requeue_lost_jobs(pending, now, min_age)


def _requeue_lost_jobs(pending: set[str], now: Any, min_age: float) -> list[Path]:
    """The queued jobs of :mod:`embedgen.jobrecord` (matrix builds, maps...) whose task no
    queue holds, queued again under their task ``embedgen.<kind>``; a job whose kind no task
    of this process runs ends "failed", saying why."""
    from datetime import datetime

    roots = [jobs_dir()]
    if users_dir().is_dir():
        roots += [p / "jobs" for p in sorted(users_dir().iterdir())]
    found = []
    for record in (r for root in roots for r in list_jobs(root)):
        if record.status is not RunStatus.QUEUED or record.task_id in pending:
            continue
        if (
            not record.queued
            or (now - datetime.fromisoformat(record.queued)).total_seconds() < min_age
        ):
            continue
        huey = _lane(f"embedgen.{record.kind}")
        wrapper = _wrappers.get(id(huey), {}).get(f"embedgen.{record.kind}")
        if wrapper is None:  # no task of this process runs it: ended, saying why
            lost = "Its queue entry was lost; start it again."
            cancel_queued_job(record.folder, RunStatus.FAILED, lost)
            continue
        message = wrapper.s({"folder": record.folder})
        write_job(replace(record, task_id=message.id))
        huey.enqueue(message)
        log.warning("Queued job %s again: its queue entry was lost", record.name)
        found.append(Path(record.folder))
    return found


def place(folder: str | os.PathLike[str]) -> int | None:
    """How many queued runs are ahead of the one in ``folder``; None when it is not waiting
    in the queue (a worker took it, or the queue cannot be read)."""
    record = queued_record(folder)
    if record is None:
        return None
    try:
        pending = get_huey().pending()
    except Exception as exc:  # a queue that cannot be read only leaves the place unknown
        log.debug("No place in the queue for %s: %s", folder, exc)
        return None
    ahead = 0
    for message in pending:
        if message.id == record.task_id:
            return ahead
        folder = (message.args[0] if message.args else {}).get("folder")
        if folder and _still_queued(Path(folder)):  # cancelled runs, warm-ups: not counted
            ahead += 1
    return None


def _still_queued(folder: Path) -> bool:
    return queued_record(folder) is not None


def cancel(folder: str | os.PathLike[str]) -> bool:
    """Ask the run in ``folder`` to stop; True when it had not started, and is gone.

    A queued run is claimed here (as a worker would claim it) and removed, so no worker
    trains it; a running one finds the ``cancel`` file within a second and stops after its
    current batch, keeping its finished epochs (:func:`embedgen.runs.train_and_save`).
    """
    folder = Path(folder)
    with contextlib.suppress(OSError):
        (folder / CANCEL_FILE).touch()
    try:
        claim_queued(folder)
    except Cancelled:
        return False
    (folder / RUN_FILE).unlink(missing_ok=True)
    _tidy(folder, keep_progress=False)
    log.info("Cancelled %s before a worker took it up", folder.name)
    return True


def _tidy(folder: Path, *, keep_progress: bool = True) -> None:
    """Remove the queue's files from a run folder that ended, and the folder when nothing of
    the run is left in it (a run cancelled before its first epoch)."""
    gone = not (folder / RUN_FILE).exists()
    names = [DATA_FILE, REQUEST_FILE, CANCEL_FILE]
    names += [] if keep_progress and not gone else [PROGRESS_FILE]
    for name in [*names, HEARTBEAT_FILE] if gone else names:
        (folder / name).unlink(missing_ok=True)
    if gone:
        with contextlib.suppress(OSError):
            folder.rmdir()


# -- the data a worker reads -------------------------------------------------------------------


def write_data(data: LabelledData, folder: str | os.PathLike[str]) -> Path:
    """Write ``data`` into ``folder/data.json``, whole, for :func:`read_data` in a worker."""
    path = Path(folder) / DATA_FILE
    record = asdict(data)
    record["dropped"] = [[d.row, d.reason] for d in data.dropped]
    write_json(path, record)
    return path


def read_data(folder: str | os.PathLike[str]) -> LabelledData:
    """The :class:`LabelledData` that :func:`write_data` wrote into ``folder``."""
    path = Path(folder) / DATA_FILE
    try:
        record = json.loads(path.read_text("utf-8"))
        return LabelledData(
            texts=tuple(record["texts"]),
            labels=tuple(int(v) for v in record["labels"]),
            label_names=tuple(record["label_names"]),
            rows=tuple(int(v) for v in record["rows"]),
            dropped=tuple(DroppedRow(int(r), str(why)) for r, why in record["dropped"]),
            text_column=record["text_column"],
            label_column=record["label_column"],
            source_name=record["source_name"],
            source_sha256=record["source_sha256"],
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadRun(
            f"Queued run '{Path(folder).name}': its data ({DATA_FILE}) cannot be read ({exc}). "
            "Start the training again."
        ) from exc


# -- what the worker writes and the watcher reads ------------------------------------------------


class ProgressFile:
    """A progress sink (``progress(done, total)`` and ``set_stage``) that writes
    ``progress.json`` into the run folder: at each new stage and at most every
    :data:`PROGRESS_SECONDS` otherwise, so watchers in other processes see it."""

    def __init__(self, folder: Path, interval: float = PROGRESS_SECONDS) -> None:
        self.path = folder / PROGRESS_FILE
        self.interval = interval
        self.state: dict[str, Any] = {"stage": "", "unit": "", "done": 0, "total": 0}
        self.written = 0.0

    def set_stage(self, name: str, unit: str = "") -> None:
        now = time.time()
        self.state = {
            "stage": name,
            "unit": unit or self.state["unit"],
            "done": 0,
            "total": 0,
            "stage_started": now,
            "first": None,  # [time, done] of the stage's first report: the rate counts from it
        }
        self._write(now)

    def __call__(self, done: int, total: int) -> None:
        now = time.time()
        if self.state.get("first") is None:
            self.state["first"] = [now, done]
        self.state.update(done=done, total=total)
        if now - self.written >= self.interval or (total and done >= total):
            self._write(now)

    def _write(self, now: float) -> None:
        try:
            write_json(self.path, {**self.state, "time": now})
            self.written = now
        except OSError as exc:  # watchers miss an update; the run goes on
            log.debug("Could not write %s: %s", self.path, exc)


def read_progress(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``progress.json`` in ``folder`` says (stage, unit, done, total, time, first);
    empty when there is none yet."""
    try:
        progress = json.loads((Path(folder) / PROGRESS_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return progress if isinstance(progress, dict) else {}


@contextlib.contextmanager
def watch_cancel(folder: Path) -> Iterator[threading.Event]:
    """An event set once a ``cancel`` file appears in ``folder`` (polled by a thread)."""
    event, stop = threading.Event(), threading.Event()

    def watch() -> None:
        while not stop.wait(CANCEL_POLL_SECONDS):
            if (folder / CANCEL_FILE).exists():
                event.set()
                return

    thread = threading.Thread(target=watch, name=f"embedgen-cancel-{folder.name}", daemon=True)
    thread.start()
    try:
        yield event
    finally:
        stop.set()
        thread.join()


# -- the task ------------------------------------------------------------------------------------

_encoders: OrderedDict[tuple[str, bool], Encoder] = OrderedDict()
_encoders_lock = threading.Lock()


def _encoder(request: TrainRequest) -> Encoder:
    """The request's encoder, loaded once per worker process for the last few models asked."""
    return encoder_for(
        request.model,
        trust_remote_code=request.trust_remote_code,
        allow_download=request.allow_download,
        allow_pickle=request.allow_pickle,
    )


def encoder_for(
    model: str, *, trust_remote_code: bool, allow_download: bool, allow_pickle: bool
) -> Encoder:
    """The encoder of ``model`` (a hub id or folder, as ``load_encoder`` takes it), loaded
    once per worker process for the last :data:`ENCODERS_KEPT` models asked."""
    from embedgen.device import resolve_device

    key = (model, trust_remote_code, allow_pickle)
    with _encoders_lock:
        if key in _encoders:
            _encoders.move_to_end(key)
            return _encoders[key]
        encoder = load_encoder(
            model,
            trust_remote_code=trust_remote_code,
            allow_download=allow_download,
            allow_pickle=allow_pickle,
            device=resolve_device("auto"),
        )
        _encoders[key] = encoder
        while len(_encoders) > ENCODERS_KEPT:
            _encoders.popitem(last=False)
        return encoder


def train(request: dict[str, Any]) -> RunStatus:
    """The queue's task: train the queued run of ``request`` (a :class:`TrainRequest` as a
    dict); return the status it ended with."""
    req = TrainRequest(**request)
    folder = Path(req.folder)
    if not _still_queued(folder):  # its owner cancelled it (and removed it) while it waited
        log.info("Skipped %s: it is no longer queued", folder.name)
        return RunStatus.CANCELLED
    if (folder / CANCEL_FILE).exists() and cancel(folder):  # a cancel that did not finish
        return RunStatus.CANCELLED
    try:
        return _train(req, folder)
    finally:
        _tidy(folder)
        free_memory()  # after _train returned: the run, its head and copies are gone


def _train(req: TrainRequest, folder: Path) -> RunStatus:
    try:
        data = read_data(folder)
        config = FinetuneConfig.from_dict(req.config)
        encoder = _encoder(req)
        with watch_cancel(folder) as stop:
            run = train_and_save(
                encoder,
                data,
                config,
                folder,
                progress=ProgressFile(folder),
                cancel=stop,
                queued=True,
            )
        log.info("Trained %s: %s", folder.name, status_of(run))
        return status_of(run)
    except Cancelled:  # cancelled between the check in train() and the claim
        return RunStatus.CANCELLED
    except Exception as exc:
        if _still_queued(folder):  # it failed before the run was claimed: say so in run.json
            _fail_queued(folder, exc)
        log.exception("Training %s failed", folder.name)
        return RunStatus.FAILED


def _fail_queued(folder: Path, exc: BaseException) -> None:
    with contextlib.suppress(Cancelled, OSError):
        record = claim_queued(folder)
        write_record(replace(record, status=RunStatus.FAILED, message=failure_message(exc, folder)))
        (folder / HEARTBEAT_FILE).unlink(missing_ok=True)


def free_memory() -> None:
    """Give the GPU memory of a finished run back to the device (the cached encoders stay:
    :data:`ENCODERS_KEPT`)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- workers -------------------------------------------------------------------------------------


def run_worker(workers: int = 1, worker_type: str = "thread", stop_with: int | None = None) -> None:
    """Take training tasks from the queue until stopped (Ctrl-C, SIGTERM): huey's consumer,
    with a heartbeat file that tells the app a worker is there.

    ``stop_with``: a process id (the app's). Once that process has ended, the worker stops
    after the run under way (huey's graceful stop, as on Ctrl-C): a training in progress
    finishes, runs still queued wait for the next worker, and no idle worker is left behind.
    """
    from huey.consumer import Consumer

    huey = get_huey()
    consumer = Consumer(
        huey,
        workers=workers,
        worker_type=worker_type,
        periodic=False,
        max_delay=WORKER_POLL_SECONDS,
    )
    log.info(
        "Worker %s with %d %s worker(s) on %s",
        os.getpid(),
        workers,
        worker_type,
        os.environ.get(QUEUE_URL_ENV) or queue_dir() / "huey.db",
    )

    beats = 0

    def tend() -> bool:
        """Each heartbeat: stop when the app has gone; a queue file replaced is opened again
        (:func:`get_huey`); every REQUEUE_EVERY_BEATS, runs whose queue entry was lost."""
        nonlocal beats
        if stop_with is not None and not pid_alive(stop_with):
            log.info("Process %d has ended: stopping after the run under way", stop_with)
            os.kill(os.getpid(), signal.SIGINT)  # huey's consumer: a graceful stop
            return False
        try:
            get_huey()
            if beats % REQUEUE_EVERY_BEATS == 0:
                requeue_lost()
        except Exception:  # the heartbeat goes on: the app must still see this worker
            log.exception("Looking after the queue failed")
        beats += 1
        return True

    beat = queue_dir() / f"worker-{socket.gethostname()}-{os.getpid()}"
    with beating(beat, WORKER_BEAT_SECONDS, create=True, on_beat=tend), _quick_lane():
        consumer.run()


@contextlib.contextmanager
def _quick_lane() -> Iterator[None]:
    """One more worker thread, for the quick lane: an estimate, a map or the scores asked
    while a training runs start at once instead of after it (they share the worker's loaded
    models). Stopped, after the job under way, when the main consumer stops."""
    from huey.consumer import Consumer

    quick = Consumer(
        quick_huey(), workers=1, worker_type="thread", periodic=False, max_delay=WORKER_POLL_SECONDS
    )
    # What Consumer.start does, without taking the signals: they are the main consumer's.
    quick.scheduler.start()
    for _, thread in quick.worker_threads:
        thread.start()
    try:
        yield
    finally:
        quick.stop(graceful=True)
        quick.huey.notify_interrupted_tasks()


def live_workers() -> list[Path]:
    """Heartbeat files of the workers that beat in the last :data:`WORKER_STALE_SECONDS`."""
    return [p for p in queue_dir().glob("worker-*") if fresh(p, WORKER_STALE_SECONDS)]


_started: subprocess.Popen[bytes] | None = None
_started_at = 0.0  # time.monotonic() of the last start
_started_lock = threading.Lock()
RESTART_SECONDS = 30.0  # a worker that ended is started again at most this often


def ensure_worker() -> subprocess.Popen[bytes] | None:
    """Start ``embedgen worker`` as a process of its own when no worker beats and this
    process has not started one that still lives; return the process it started, if any.

    Its output goes to ``$EMBEDGEN_HOME/queue/worker.log``. ``EMBEDGEN_WORKER_AUTOSTART=0``
    turns this off (workers are started by the operator, perhaps on other machines).
    """
    global _started, _started_at
    if not autostart():
        return None
    with _started_lock:
        if _started is not None and _started.poll() is None:
            return None
        if live_workers():
            return None
        if _started is not None and time.monotonic() - _started_at < RESTART_SECONDS:
            return None  # the last one ended young: not again at every page run
        queue_dir().mkdir(parents=True, exist_ok=True)
        with open(queue_dir() / "worker.log", "ab") as out:
            _started = subprocess.Popen(
                [sys.executable, "-m", "embedgen", "worker", "--stop-with", str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C in the server's terminal does not cut a training
                # short; --stop-with ends the worker, after its run, once the server is gone.
                start_new_session=True,
            )
        _started_at = time.monotonic()
        log.info("Started a training worker (process %d)", _started.pid)
        return _started


def autostart() -> bool:
    """Whether the app starts a worker itself (``EMBEDGEN_WORKER_AUTOSTART``, default on)."""
    return os.environ.get(AUTOSTART_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def worker_trouble() -> str | None:
    """Why queued runs wait for nothing, when this process can tell; None while a worker
    beats, or the one it started is still starting.

    For the people waiting: no server path, no traceback (the operator has the log).
    """
    if live_workers():
        return None
    if not autostart():
        return (
            "No training worker is running on this server, so queued runs wait. Ask the "
            "operator to start one (`embedgen worker`)."
        )
    process = _started
    if process is None or process.poll() is None:
        return None
    return (
        f"The training worker this server started has stopped (exit code {process.returncode}), "
        f"so queued runs wait. It is started again every {RESTART_SECONDS:.0f} s while they do; "
        "if it keeps stopping, the operator finds why in the queue folder's worker.log."
    )


def stop_started_worker(timeout: float = 30.0) -> None:
    """Stop the worker that :func:`ensure_worker` started in this process, if it runs (for
    tests and scripts; the app leaves its worker running when it stops)."""
    global _started
    with _started_lock:
        process, _started = _started, None
    if process is not None and process.poll() is None:
        process.terminate()
        process.wait(timeout)


def run_status(folder: str | os.PathLike[str]) -> RunStatus | None:
    """The run's status as :func:`embedgen.runs.read_run_record` reads it; None when the run
    folder or its run.json is gone (a run cancelled before its first epoch)."""
    try:
        return read_run_record(folder).status
    except BadRun:
        return None
