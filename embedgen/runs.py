"""The run folder: a run's record and status, saving a run and loading it back.

```
RUN_DIR/
  run.json            the RunRecord: status, config, model, dataset, label map, epochs, versions
  heartbeat           touched every 10 s while the run trains; gone when it ends
  data.json           a queued run's labelled data (embedgen.jobs); gone when it ends
  progress.json       a queued run's stage and counts, written by its worker
  cancel              asks a queued run's worker to stop (embedgen.jobs.cancel)
  head.safetensors    projection + classifier
  encoder/            save_pretrained() output, only when the encoder changed (top-k, full)
  matrices/<name>/    matrices built from this run
```

:class:`RunStatus` is the one spelling of a run's status, and :class:`RunRecord` the one reading
of run.json: the CLI, the pages, the queue and its workers read its fields. Whether a run is
still training is told by its heartbeat (``embedgen.heartbeat``), not by its process id: a
"running" run whose heartbeat is older than :data:`HEARTBEAT_STALE_SECONDS` reads as
"interrupted".
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import json
import logging
import os
import platform
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from embedgen import __version__
from embedgen.atomic import atomic_folder, atomic_path, json_text, write_json
from embedgen.data import LabelledData
from embedgen.errors import BadRun, Cancelled, EmbedgenError, ModelNotAvailable, disk_trouble
from embedgen.heartbeat import age, beating, pid_alive
from embedgen.models import Encoder, load_encoder
from embedgen.paths import runs_dir
from embedgen.progress import ProgressFn
from embedgen.settings import operator_settings
from embedgen.train import EpochMetrics, FinetuneConfig, Head, Run, finetune
from embedgen.wordstates import WordStateHook

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"
HEARTBEAT_FILE = "heartbeat"
HEARTBEAT_SECONDS = 10.0  # how often a training process touches its heartbeat file
# A heartbeat older than this: the process is gone (killed, its host down, the machine asleep).
HEARTBEAT_STALE_SECONDS = 3 * HEARTBEAT_SECONDS


class RunStatus(enum.StrEnum):
    """Where a run stands: the one spelling, in run.json, the CLI and the pages."""

    QUEUED = "queued"  # written by embedgen.jobs: waiting for a worker, nothing trained yet
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"  # stopped by its user: its finished epochs are kept
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # its process is gone without saying why

    @property
    def active(self) -> bool:
        """Whether the run still waits or trains."""
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)

    @property
    def ended_well(self) -> bool:
        """Whether the run ended as its user wanted (finished, or stopped by them)."""
        return self in (RunStatus.FINISHED, RunStatus.CANCELLED)


def status_of(run: Run) -> RunStatus:
    """The status of a run that training returned (finished, or cancelled by its user), or of
    one loaded back after its process stopped (interrupted, its best epoch kept)."""
    if run.interrupted:
        return RunStatus.INTERRUPTED
    return RunStatus.CANCELLED if run.cancelled else RunStatus.FINISHED


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    import transformers

    return {
        "embedgen": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def owner_tag(secret: str) -> str:
    """What run.json keeps of the secret that owns a run: its SHA-256, so that reading
    run.json does not hand anyone the secret itself."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# The record: run.json
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """What run.json says of a run, checked when read (:meth:`from_json`)."""

    folder: str
    status: RunStatus
    message: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # FinetuneConfig.as_dict()
    model: dict[str, Any] = field(default_factory=dict)  # ModelInfo.as_dict()
    dataset: dict[str, Any] = field(default_factory=dict)  # LabelledData.summary()
    label_names: tuple[str, ...] = ()
    history: tuple[EpochMetrics, ...] = ()
    best_epoch: int = 0
    confusion: tuple[tuple[int, ...], ...] = ()
    encoder_changed: bool = False
    batch_size_used: int = 0
    queued: str | None = None  # when it was queued (a queue's run), ISO time
    started: str | None = None
    updated: str | None = None
    finished: str | None = None
    task_id: str | None = None  # the queue's task that trains it
    owner: str | None = None  # owner_tag of the secret that lets a tab take the run up
    pid: int | None = None  # the process that trains it, on ``host``
    host: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.folder).name

    @property
    def best(self) -> EpochMetrics | None:
        """The best epoch, once the run ended with one."""
        return next((m for m in self.history if m.epoch == self.best_epoch), None)

    @property
    def best_f1(self) -> float | None:
        """The best validation macro-F1: of the best epoch, or so far while training."""
        if self.best is not None:
            return self.best.val_macro_f1
        return max((m.val_macro_f1 for m in self.history), default=None)

    @property
    def kept_epoch(self) -> bool:
        """Whether the head of its best epoch so far is on disk: a run writes ``best_epoch``
        into its record only after saving that epoch's head (:func:`keep_best`)."""
        return self.best_epoch > 0 and self.best is not None

    @property
    def has_trained_head(self) -> bool:
        """Whether the run can build a matrix: it ended well with an epoch finished, or its
        process stopped after keeping the head of its best epoch so far."""
        if self.status is RunStatus.INTERRUPTED:
            return self.kept_epoch
        return self.status.ended_well and bool(self.history)

    def kept_note(self) -> str:
        """What an interrupted run kept, in words ("" when it kept nothing)."""
        best = self.best
        if self.status is not RunStatus.INTERRUPTED or best is None or not self.kept_epoch:
            return ""
        n = len(self.history)
        return (
            f"{n} epoch{'s' if n != 1 else ''} finished before it stopped; the head of epoch "
            f"{best.epoch} (validation macro-F1 {best.val_macro_f1:.3f}), the best of them, is "
            "kept and builds matrices."
        )

    @property
    def when(self) -> str:
        """When it started (or was queued, or last changed), for lists of runs."""
        return self.started or self.queued or self.updated or ""

    def owned_by(self, secret: str | None) -> bool:
        """True when ``secret`` is the one the run was started with."""
        return (
            bool(secret)
            and self.owner is not None
            and hmac.compare_digest(self.owner, owner_tag(secret or ""))
        )

    def to_json(self) -> dict[str, Any]:
        """run.json's object: the fields that are set, and a label map for people."""
        record: dict[str, Any] = {"format": 1, "status": str(self.status)}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("folder", "status") or value is None:
                continue
            if f.name == "history":
                value = [asdict(m) for m in value]
            elif f.name in ("label_names", "confusion"):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            record[f.name] = value
        if self.label_names:
            record["label_map"] = {str(i): n for i, n in enumerate(self.label_names)}
        if self.best is not None:
            record["best"] = asdict(self.best)
        return record

    @classmethod
    def from_json(cls, raw: Any, folder: str | os.PathLike[str]) -> RunRecord:
        """The record in run.json's object ``raw``; :class:`BadRun` naming the run when it is
        not the shape run.json is written in."""
        path = Path(folder)
        if not isinstance(raw, dict):
            raise _damaged(path, f"it holds {_json_kind(raw)}, not a run's record")
        if raw.get("status") is None:
            raise _damaged(path, "it has no status")
        for key, kinds in _FIELD_KINDS.items():
            if key in raw and not isinstance(raw[key], kinds):
                raise _damaged(path, f"'{key}' holds {_json_kind(raw[key])}")
        if raw["status"] not in RunStatus.__members__.values():
            raise _damaged(path, f"unknown status '{raw['status']}'")
        try:
            history = tuple(EpochMetrics(**m) for m in raw.get("history", []))
        except TypeError as exc:
            raise _damaged(path, "'history' holds something other than epochs") from exc
        known = {f.name for f in dataclasses.fields(cls)} - {"folder", "status", "history"}
        values = {k: v for k, v in raw.items() if k in known}
        values["label_names"] = tuple(values.get("label_names", ()))
        if not all(isinstance(r, list) for r in values.get("confusion", ())):
            raise _damaged(path, "'confusion' holds something other than rows of counts")
        values["confusion"] = tuple(tuple(r) for r in values.get("confusion", ()))
        record = cls(str(path), RunStatus(raw["status"]), history=history, **values)
        if record.has_trained_head:
            missing = [key for key in _TRAINED_FIELDS if key not in raw]
            if missing:
                raise _damaged(path, f"it has no {', '.join(missing)}")
        return record


_FIELD_KINDS: dict[str, type | tuple[type, ...]] = {  # what each field holds when present
    "status": str,
    "message": str,
    "started": str,
    "updated": str,
    "finished": str,
    "host": str,
    "pid": int,
    "queued": str,
    "task_id": str,
    "owner": str,
    "best_epoch": int,
    "batch_size_used": int,
    "encoder_changed": bool,
    "config": dict,
    "model": dict,
    "dataset": dict,
    "versions": dict,
    "label_names": list,
    "history": list,
    "confusion": list,
    "best": (dict, type(None)),
}
# What a run with a trained head needs to be loaded.
_TRAINED_FIELDS = ("config", "model", "label_names", "history", "best_epoch")


def _damaged(folder: Path, what: str) -> BadRun:
    return BadRun(f"Run '{folder.name}': {RUN_FILE} is damaged ({what}). Train the run again.")


def _json_kind(value: Any) -> str:
    """What a JSON value is, in words: "null", "a list", "a number", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    kinds = {dict: "an object", list: "a list", str: "text", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)


def record_of(run: Run, folder: str | os.PathLike[str], **fields: Any) -> RunRecord:
    """The record of a run that training returned, to be written into ``folder``."""
    return RunRecord(
        folder=str(folder),
        status=status_of(run),
        message=run.message,
        config=run.config.as_dict(),
        model=run.encoder.info.as_dict(),
        dataset=run.data_summary,
        label_names=tuple(run.label_names),
        history=tuple(run.history),
        best_epoch=run.best_epoch,
        confusion=tuple(tuple(r) for r in run.confusion),
        encoder_changed=run.encoder_changed,
        batch_size_used=run.batch_size_used,
        versions=versions(),
        **fields,
    )


def write_record(record: RunRecord, *, in_place: bool = False) -> None:
    """Write ``record`` as its folder's run.json (atomically), stamped with the time;
    ``in_place``: over the old file instead, for a disk with no room for a new one."""
    stamped = replace(record, updated=now_iso(), versions=record.versions or versions())
    path = Path(record.folder) / RUN_FILE
    if in_place:
        path.write_text(json_text(stamped.to_json()), "utf-8")
    else:
        write_json(path, stamped.to_json())


# --------------------------------------------------------------------------------------------
# Reading run folders
# --------------------------------------------------------------------------------------------


def is_run_folder(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def read_run_record(folder: str | os.PathLike[str]) -> RunRecord:
    """run.json of ``folder``, checked; a "running" run that stopped beating reads "interrupted".

    A missing, unreadable or malformed record raises :class:`BadRun` naming the run folder by
    its name (the app's users need not see the server's paths).
    """
    folder = Path(folder)
    path = folder / RUN_FILE
    if not folder.is_dir():
        raise BadRun(f"Run folder '{folder.name}' does not exist.")
    if not path.exists():
        raise BadRun(
            f"'{folder.name}' is not a run folder (no {RUN_FILE}). Train one with `embedgen train`."
        )
    # The heartbeat before the record: a run removes its heartbeat only after writing the
    # status it ended with, so a record still saying "running" read after a missing
    # heartbeat was left by a process that is gone.
    beat = age(folder / HEARTBEAT_FILE)
    try:
        raw = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise BadRun(f"Run '{folder.name}': {RUN_FILE} cannot be read ({exc.strerror}).") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _damaged(folder, str(exc)) from exc
    record = RunRecord.from_json(raw, folder)
    if record.status is RunStatus.RUNNING and not _still_training(record, beat):
        record = replace(record, status=RunStatus.INTERRUPTED)
        record = replace(record, message=record.message or record.kept_note())
    return record


def _still_training(record: RunRecord, beat_age: float | None) -> bool:
    """Whether the process of a "running" record lives: its heartbeat is fresh and, when it
    ran on this host, its process id still exists (a gone id proves it dead; a live one
    proves nothing, ids are reused)."""
    if beat_age is None or beat_age > HEARTBEAT_STALE_SECONDS:
        return False
    same_host = record.host == socket.gethostname()
    pid = record.pid
    return not (same_host and pid is not None and pid > 0 and not pid_alive(pid))


def queued_record(folder: str | os.PathLike[str]) -> RunRecord | None:
    """The record in ``folder`` when it holds a run that waits in a queue; else None."""
    try:
        record = read_run_record(folder)
    except BadRun:
        return None
    return record if record.status is RunStatus.QUEUED else None


def list_runs(root: str | os.PathLike[str] | None = None) -> list[RunRecord]:
    """The records of the run folders under ``root`` (default ``$EMBEDGEN_HOME/runs``), newest
    first; damaged folders are skipped with a warning."""
    root = Path(root) if root is not None else runs_dir()
    if not root.is_dir():
        return []
    records = []
    for folder in root.iterdir():
        if not is_run_folder(folder):
            continue
        try:
            records.append(read_run_record(folder))
        except BadRun as exc:
            log.warning("Skipping %s: %s", folder, exc)
    return sorted(records, key=lambda r: r.when, reverse=True)


def has_trained_head(run_or_record: Run | RunRecord) -> bool:
    """Whether a run (or its record) finished at least one epoch: finished, or cancelled after
    an epoch. Only such a run can build a matrix."""
    if isinstance(run_or_record, RunRecord):
        return run_or_record.has_trained_head
    return bool(run_or_record.history)


# --------------------------------------------------------------------------------------------
# Writing run folders: queued, running, failed, saved
# --------------------------------------------------------------------------------------------


def ensure_new_run_dir(folder: str | os.PathLike[str]) -> Path:
    """Return ``folder`` if no run lives there yet; a second run never overwrites the first."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BadRun(
            f"'{folder}' is a file, not a folder: a run is a folder. Choose a folder that is not "
            "there yet (it is made) or an empty one."
        )
    if (folder / RUN_FILE).exists():
        raise _taken(folder)
    return folder


def _taken(folder: Path) -> BadRun:
    return BadRun(
        f"Run folder '{folder.name}' already holds a run. Choose another folder, or delete "
        "the old run."
    )


def write_queued(
    folder: str | os.PathLike[str],
    config: FinetuneConfig,
    model: dict[str, Any],
    dataset: dict[str, Any],
    *,
    task_id: str,
    owner: str | None = None,
) -> Path:
    """Write run.json with status "queued" into a new run folder: a run waiting for a worker
    to take up the queue's task ``task_id``. ``owner`` is :func:`owner_tag` of the secret
    that lets a browser tab take the run up again (the app's Train page)."""
    folder = ensure_new_run_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_record(
        RunRecord(
            str(folder),
            RunStatus.QUEUED,
            config=config.as_dict(),
            model=model,
            dataset=dataset,
            queued=now_iso(),
            task_id=task_id,
            owner=owner,
        )
    )
    return folder


def claim_queued(folder: str | os.PathLike[str]) -> RunRecord:
    """Claim the queued run in ``folder`` (create its heartbeat) and return its record.

    Raises :class:`Cancelled` when the run is no longer queued (its owner cancelled it, or
    another process claimed it): the claim is taken once, by a worker or by a cancel.
    """
    folder = Path(folder)
    gone = Cancelled(f"Run '{folder.name}' is no longer queued; it was cancelled.")
    if queued_record(folder) is None:
        raise gone
    try:
        (folder / HEARTBEAT_FILE).touch(exist_ok=False)
    except (FileExistsError, FileNotFoundError):
        raise gone from None
    # Read again now that the claim is ours: a cancel may have claimed, removed the run and
    # let go between the first read and the claim.
    record = queued_record(folder)
    if record is None:
        (folder / HEARTBEAT_FILE).unlink(missing_ok=True)
        raise gone
    return record


def mark_running(
    folder: str | os.PathLike[str],
    config: FinetuneConfig,
    model: dict[str, Any],
    dataset: dict[str, Any],
    *,
    queued: bool = False,
) -> Path:
    """Claim the run folder and write run.json with status "running" before training starts.

    The heartbeat file is the claim: it is created only if it is not there, so of two runs
    started into one folder at the same moment the second is refused. With ``queued`` the
    folder must hold a queued run (:func:`write_queued`), which this run takes up (keeping
    when it was queued, its task and its owner); one cancelled meanwhile raises
    :class:`Cancelled`.
    """
    folder = Path(folder)
    if queued:
        before = claim_queued(folder)
    else:
        folder = ensure_new_run_dir(folder)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            (folder / HEARTBEAT_FILE).touch(exist_ok=False)
        except FileExistsError:
            raise _taken(folder) from None
        before = RunRecord(str(folder), RunStatus.RUNNING)
    write_record(
        replace(
            before,
            status=RunStatus.RUNNING,
            config=config.as_dict(),
            model=model,
            dataset=dataset,
            started=now_iso(),
            pid=os.getpid(),
            host=socket.gethostname(),
        )
    )
    return folder


def _current(folder: Path) -> RunRecord | None:
    """The record in ``folder`` as written (no heartbeat check), or None when unreadable."""
    try:
        return RunRecord.from_json(json.loads((folder / RUN_FILE).read_text("utf-8")), folder)
    except (OSError, ValueError, BadRun):
        return None


def failure_message(exc: BaseException, folder: str | os.PathLike[str]) -> str:
    """Why a run failed, for run.json and the page: the disk's own words for a disk that said
    no ("no space left on the disk holding … (3 MB free)"), else the error."""
    if isinstance(exc, OSError):
        return str(disk_trouble(exc, folder))
    return str(exc) if isinstance(exc, EmbedgenError) else f"{type(exc).__name__}: {exc}"


def write_failure(folder: str | os.PathLike[str], exc: BaseException) -> None:
    """Mark the run in ``folder`` as failed (or interrupted) with the reason, keeping its record.

    On a full disk the atomic write has no room for its new file, and run.json stayed
    "running" (the page then blamed a dead worker): the record is then written over the old
    run.json, whose blocks the truncation frees.
    """
    record = _current(Path(folder))
    if record is None:
        return
    interrupted = isinstance(exc, KeyboardInterrupt | SystemExit)  # Ctrl-C, a stopped worker
    if isinstance(exc, KeyboardInterrupt):
        message = "Interrupted by the user."
    elif interrupted:
        message = "Interrupted: its process was told to stop."
    else:
        message = failure_message(exc, folder)
    failed = replace(
        record, status=RunStatus.INTERRUPTED if interrupted else RunStatus.FAILED, message=message
    )
    try:
        write_record(failed)
    except OSError as err:
        log.warning("run.json of %s written in place: %s", Path(folder).name, err)
        write_record(failed, in_place=True)


def _record_history(folder: Path, history: list[EpochMetrics]) -> None:
    """Write the epochs finished so far into the running run's run.json, for those watching."""
    try:
        record = _current(folder)
        if record is not None:
            write_record(replace(record, history=tuple(history)))
    except OSError as exc:  # the run goes on: its result is written when it ends
        log.warning("Could not record epoch %d in %s: %s", len(history), folder, exc)


def keep_best(run: Run, folder: str | os.PathLike[str]) -> None:
    """Keep a training run's best epoch so far in ``folder``: its head (and tuned encoder)
    written atomically, then run.json, still "running", naming that epoch. A process that
    dies after this leaves an interrupted run whose head builds matrices (nothing finished is
    lost; before, a killed worker's run kept none of its finished epochs). A write that fails
    is logged and training goes on: the run's end writes everything again."""
    try:
        save_run(run, folder, running=True)
    except OSError as exc:
        log.warning("Could not keep epoch %d of %s: %s", run.best_epoch, folder, exc)


def save_run(run: Run, folder: str | os.PathLike[str], *, running: bool = False) -> Path:
    """Write the run's head, tuned encoder (if any) and run.json into ``folder``; ``running``:
    the run trains on (:func:`keep_best`), so its record stays "running" and unfinished."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    before = _current(folder)
    with atomic_path(folder / HEAD_FILE) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in run.head.state_dict().items()}
        save_file(state, str(tmp), metadata={"format": "embedgen-head-1"})
    if run.encoder_changed:  # save_pretrained writes several files: build the folder aside
        with atomic_folder(folder / ENCODER_DIR) as staging:
            run.encoder.model.save_pretrained(staging)
            run.encoder.tokenizer.save_pretrained(staging)
    # When it was queued, started and by which task and owner: kept from the running record
    # (and, while it trains, which process on which host).
    kept = ("queued", "task_id", "owner", "started") + (("pid", "host") if running else ())
    carried = {k: getattr(before, k) for k in kept} if before is not None else {}
    carried["started"] = carried.get("started") or now_iso()
    record = record_of(run, folder, finished=None if running else now_iso(), **carried)
    write_record(replace(record, status=RunStatus.RUNNING) if running else record)
    if running:
        return folder
    run.folder = str(folder)
    log.info("Saved run to %s", folder)
    return folder


def train_and_save(
    encoder: Encoder,
    data: LabelledData,
    config: FinetuneConfig,
    folder: str | os.PathLike[str],
    *,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    queued: bool = False,
) -> Run:
    """Fine-tune and keep the run folder truthful throughout: running, then saved or failed.

    While it trains, the run's heartbeat beats (see the module docstring) and run.json gains
    each epoch's metrics as it finishes. A run cancelled before its first epoch finished has
    no trained head, so nothing of it is kept: its run.json goes (and the folder, if that
    leaves it empty) and the run comes back with no folder. What it encoded stays in the
    feature cache (``embedgen.features``), and with ``config.word_states`` so do the word
    vectors its encoding pass kept for later aggregated matrices (``embedgen.wordstates``,
    plugged in here). The CLI and the app both train through here, so a run started in one
    opens in the other. With ``queued``, ``folder`` holds a queued run
    that this call takes up (:func:`mark_running`).
    """
    folder = mark_running(folder, config, encoder.info.as_dict(), data.summary(), queued=queued)
    history: list[EpochMetrics] = []

    def epoch_done(metrics: EpochMetrics) -> None:
        history.append(metrics)
        _record_history(folder, history)
        if on_epoch is not None:
            on_epoch(metrics)

    # Beats until the run's last status is written.
    with beating(folder / HEARTBEAT_FILE, HEARTBEAT_SECONDS, name=folder.name):
        try:
            run = finetune(
                encoder,
                data,
                config,
                progress=progress,
                cancel=cancel,
                on_epoch=epoch_done,
                states_hook=WordStateHook() if config.word_states else None,
                on_best=lambda best: keep_best(best, folder),
            )
            if has_trained_head(run):
                save_run(run, folder)
        except BaseException as exc:
            write_failure(folder, exc)
            raise
    if not has_trained_head(run):
        _discard(folder)
    return run


def _discard(folder: Path) -> None:
    """Remove the run.json that :func:`mark_running` wrote, and the folder if nothing else is
    in it (a folder the user named may hold other things). The heartbeat is gone already."""
    (folder / RUN_FILE).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        log.info("Kept %s: it holds other files", folder)
    log.info("Nothing kept of the run in %s: it was cancelled before the first epoch", folder)


# --------------------------------------------------------------------------------------------
# Loading a run back
# --------------------------------------------------------------------------------------------


def load_run(
    folder: str | os.PathLike[str],
    *,
    device: torch.device | str | None = None,
    loaded: Encoder | None = None,
) -> Run:
    """Load a saved run: its head, its encoder (tuned copy, or the original model) and record.

    ``loaded``: an encoder the caller holds already (the app's). A run that did not tune its
    encoder uses it when it is the run's model at the run's revision, instead of loading a
    second copy of the same weights.
    """
    folder = Path(folder)
    record = _usable_record(folder)
    try:  # the record's shape is checked; what is in its fields, here
        config = FinetuneConfig.from_dict(record.config)
        if not isinstance(record.model.get("model_id"), str):
            raise KeyError("model_id")
    except (KeyError, TypeError, ValueError, EmbedgenError) as exc:
        what = f"no {exc}" if isinstance(exc, KeyError) else str(exc).rstrip(".")
        raise _damaged(folder, what) from exc
    encoder = _run_encoder(record, device, loaded)
    state = load_file(str(folder / HEAD_FILE))
    num_classes, dim = state["classifier.weight"].shape
    head = Head(state["projection.weight"].shape[1], dim, num_classes, config.dropout)
    head.load_state_dict(state)
    head.to(encoder.device).eval()
    return Run(
        config=config,
        head=head,
        encoder=encoder,
        encoder_changed=record.encoder_changed,
        label_names=record.label_names,
        history=list(record.history),
        cancelled=record.status is RunStatus.CANCELLED,
        interrupted=record.status is RunStatus.INTERRUPTED,
        best_epoch=record.best_epoch,
        confusion=[list(r) for r in record.confusion],
        data_summary=record.dataset,
        batch_size_used=record.batch_size_used,
        message=record.message,
        folder=str(folder),
    )


def _usable_record(folder: Path) -> RunRecord:
    """The record of a run whose head can be loaded; :class:`BadRun` saying why not."""
    record = read_run_record(folder)
    if not record.status.ended_well and not record.has_trained_head:
        raise BadRun(
            f"Run '{folder.name}' is {record.status}; it has no trained head to use. "
            "Wait for it to finish, or train again."
        )
    if not record.has_trained_head:
        raise BadRun(
            f"Run '{folder.name}' was cancelled before its first epoch finished; it has no "
            "trained head to use. Train again (the texts it encoded are cached for the head "
            "strategy)."
        )
    if not (folder / HEAD_FILE).exists():
        raise BadRun(f"Run '{folder.name}' has no {HEAD_FILE}; the run is incomplete. Train again.")
    return record


def _run_encoder(
    record: RunRecord, device: torch.device | str | None, loaded: Encoder | None
) -> Encoder:
    """The run's encoder: its tuned copy, the caller's ``loaded`` one when it is the run's
    model at the run's revision, or the run's model loaded again; named as the run's model."""
    folder, model = Path(record.folder), record.model
    if record.encoder_changed:
        if not (folder / ENCODER_DIR / "config.json").exists():
            raise BadRun(f"Run '{folder.name}' tuned the encoder but {ENCODER_DIR}/ is missing.")
        encoder = load_encoder(str(folder / ENCODER_DIR), allow_download=False, device=device)
    elif (
        loaded is not None
        and loaded.info.model_id == model["model_id"]
        and loaded.info.revision == model.get("revision", loaded.info.revision)
    ):
        encoder = loaded
    else:
        try:
            # a model that could only be read from a pickle was allowed when the run was made;
            # whether it still is, the operator's settings say
            pickles = operator_settings().allow_pickled_weights
            encoder = load_encoder(model["model_id"], device=device, allow_pickle=pickles)
        except ModelNotAvailable as exc:
            raise BadRun(
                f"Run '{folder.name}' was trained on a model that is not here: {exc}"
            ) from exc
        if model.get("revision") not in (None, "unknown", encoder.info.revision):
            log.warning(
                "The model at %s changed since the run (revision %s, now %s)",
                model["model_id"],
                model.get("revision"),
                encoder.info.revision,
            )
    # Keep the original model's identity: the tuned copy is a descendant of it.
    info = replace(
        encoder.info,
        model_id=model.get("model_id", encoder.info.model_id),
        revision=model.get("revision", encoder.info.revision),
    )
    return Encoder(encoder.model, encoder.tokenizer, info)


def run_manifest(run: Run) -> dict[str, Any]:
    """What a matrix built from ``run`` records about it: folder, config, data, labels, metrics."""
    best = run.best
    return {
        "folder": run.folder,
        "status": str(status_of(run)),
        "strategy": str(run.config.strategy),
        "config": run.config.as_dict(),
        "encoder_changed": run.encoder_changed,
        "dataset": run.data_summary,
        "label_map": {str(i): n for i, n in enumerate(run.label_names)},
        "best_epoch": run.best_epoch,
        "metrics": asdict(best) if best else None,
        "epochs_run": len(run.history),
    }
