"""The run folder: save a fine-tuning run, load it back, and describe it for manifests.

```
RUN_DIR/
  run.json            status, config, model, dataset, label map, metrics per epoch, versions
  heartbeat           touched every 10 s while the run trains; gone when it ends
  data.json           a queued run's labelled data (embedgen.jobs); gone when it ends
  progress.json       a queued run's stage and counts, written by its worker
  cancel              asks a queued run's worker to stop (embedgen.jobs.cancel)
  head.safetensors    projection + classifier
  encoder/            save_pretrained() output, only when the encoder changed (top-k, full)
  matrices/<name>/    matrices built from this run
```

Whether a run is still training is told by its heartbeat, not by its process id: a process id
is reused by the system, and means nothing on another host sharing the folder. A "running"
run whose heartbeat is older than :data:`HEARTBEAT_STALE_SECONDS` reads as "interrupted".
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import platform
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from embedgen import __version__
from embedgen.atomic import atomic_folder, atomic_path, write_json
from embedgen.data import LabelledData
from embedgen.errors import BadRun, Cancelled, EmbedgenError, ModelNotAvailable
from embedgen.models import Encoder, load_encoder
from embedgen.paths import runs_dir
from embedgen.progress import ProgressFn
from embedgen.train import EpochMetrics, FinetuneConfig, Head, Run, RunStatus, finetune

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"
HEARTBEAT_FILE = "heartbeat"
HEARTBEAT_SECONDS = 10.0  # how often a training process touches its heartbeat file
# A heartbeat older than this: the process is gone (killed, its host down, the machine asleep).
HEARTBEAT_STALE_SECONDS = 3 * HEARTBEAT_SECONDS


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


# Kept from the queued record through "running" to the finished one.
_CARRIED = ("queued", "task_id", "owner")


def owner_tag(secret: str) -> str:
    """What run.json keeps of the secret that owns a run: its SHA-256, so that reading
    run.json does not hand anyone the secret itself."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def owned_by(record: dict[str, Any], secret: str | None) -> bool:
    """True when ``secret`` is the one the run in ``record`` was started with."""
    tag = record.get("owner")
    return bool(secret) and isinstance(tag, str) and hmac.compare_digest(tag, owner_tag(secret))


def _run_record(run_or_none: Run | None, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"format": 1, "versions": versions(), "updated": now_iso()}
    if run_or_none is not None:
        run = run_or_none
        record.update(
            status=str(run.status),
            message=run.message,
            config=run.config.as_dict(),
            model=run.encoder.info.as_dict(),
            encoder_changed=run.encoder_changed,
            label_names=list(run.label_names),
            label_map={str(i): n for i, n in enumerate(run.label_names)},
            dataset=run.data_summary,
            history=[asdict(m) for m in run.history],
            best_epoch=run.best_epoch,
            best=asdict(run.best) if run.best else None,
            confusion=run.confusion,
            batch_size_used=run.batch_size_used,
        )
    record.update(fields)
    return record


def ensure_new_run_dir(folder: str | os.PathLike[str]) -> Path:
    """Return ``folder`` if no run lives there yet; a second run never overwrites the first."""
    folder = Path(folder)
    if (folder / RUN_FILE).exists():
        raise _taken(folder)
    return folder


def _taken(folder: Path) -> BadRun:
    return BadRun(
        f"Run folder '{folder.name}' already holds a run. Choose another folder, or delete "
        "the old run."
    )


def mark_running(
    folder: str | os.PathLike[str],
    config: FinetuneConfig,
    model: dict[str, Any],
    dataset: dict,
    *,
    queued: bool = False,
) -> Path:
    """Claim the run folder and write run.json with status "running" before training starts.

    The heartbeat file is the claim: it is created only if it is not there, so of two runs
    started into one folder at the same moment the second is refused. With ``queued`` the
    folder must hold a queued run (:func:`write_queued`), which this run takes up; one that
    was cancelled meanwhile raises :class:`Cancelled`.
    """
    folder = Path(folder)
    if queued:
        record = claim_queued(folder)
    else:
        folder = ensure_new_run_dir(folder)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            (folder / HEARTBEAT_FILE).touch(exist_ok=False)
        except FileExistsError:
            raise _taken(folder) from None
        record = {}
    since = {k: record[k] for k in _CARRIED if isinstance(record.get(k), str)}
    write_json(
        folder / RUN_FILE,
        _run_record(
            None,
            status=str(RunStatus.RUNNING),
            config=config.as_dict(),
            model=model,
            dataset=dataset,
            **since,
            started=now_iso(),
            pid=os.getpid(),
            host=socket.gethostname(),
        ),
    )
    return folder


def write_queued(
    folder: str | os.PathLike[str],
    config: FinetuneConfig,
    model: dict[str, Any],
    dataset: dict,
    *,
    task_id: str,
    owner: str | None = None,
) -> Path:
    """Write run.json with status "queued" into a new run folder: a run waiting for a worker
    to take up the queue's task ``task_id``. ``owner`` is :func:`owner_tag` of the secret
    that lets a browser tab take the run up again (the app's Train page)."""
    folder = ensure_new_run_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / RUN_FILE,
        _run_record(
            None,
            status=str(RunStatus.QUEUED),
            config=config.as_dict(),
            model=model,
            dataset=dataset,
            queued=now_iso(),
            task_id=task_id,
            **({"owner": owner} if owner else {}),
        ),
    )
    return folder


def claim_queued(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Claim the queued run in ``folder`` (create its heartbeat) and return its record.

    Raises :class:`Cancelled` when the run is no longer queued (its owner cancelled it, or
    another process claimed it): the claim is taken once, by a worker or by a cancel.
    """
    folder = Path(folder)
    gone = Cancelled(f"Run '{folder.name}' is no longer queued; it was cancelled.")
    if _queued_record(folder) is None:
        raise gone
    try:
        (folder / HEARTBEAT_FILE).touch(exist_ok=False)
    except (FileExistsError, FileNotFoundError):
        raise gone from None
    # Read again now that the claim is ours: a cancel may have claimed, removed the run and
    # let go between the first read and the claim.
    record = _queued_record(folder)
    if record is None:
        (folder / HEARTBEAT_FILE).unlink(missing_ok=True)
        raise gone
    return record


def _queued_record(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / RUN_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and record.get("status") == RunStatus.QUEUED
    return record if ok else None


def write_failure(folder: str | os.PathLike[str], exc: BaseException) -> None:
    """Mark the run in ``folder`` as failed (or interrupted) with the reason, keeping its record."""
    path = Path(folder) / RUN_FILE
    if not path.exists():
        return
    record = json.loads(path.read_text("utf-8"))
    interrupted = isinstance(exc, KeyboardInterrupt)
    record.update(
        status=str(RunStatus.INTERRUPTED if interrupted else RunStatus.FAILED),
        message="Interrupted by the user." if interrupted else f"{type(exc).__name__}: {exc}",
        updated=now_iso(),
    )
    write_json(path, record)


def save_run(run: Run, folder: str | os.PathLike[str]) -> Path:
    """Write the run's head, tuned encoder (if any) and run.json into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    before: dict[str, Any] = {}
    if (folder / RUN_FILE).exists():
        before = json.loads((folder / RUN_FILE).read_text("utf-8"))
    # When it was started (and queued, and as which task): kept from the running record.
    kept = {k: before[k] for k in _CARRIED if isinstance(before.get(k), str)}
    with atomic_path(folder / HEAD_FILE) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in run.head.state_dict().items()}
        save_file(state, str(tmp), metadata={"format": "embedgen-head-1"})
    if run.encoder_changed:  # save_pretrained writes several files: build the folder aside
        with atomic_folder(folder / ENCODER_DIR) as staging:
            run.encoder.model.save_pretrained(staging)
            run.encoder.tokenizer.save_pretrained(staging)
    write_json(
        folder / RUN_FILE,
        _run_record(run, **kept, started=before.get("started") or now_iso(), finished=now_iso()),
    )
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
    feature cache (``embedgen.features``). The CLI and the app both train through here, so a
    run started in one opens in the other. With ``queued``, ``folder`` holds a queued run
    that this call takes up (:func:`mark_running`).
    """
    folder = mark_running(folder, config, encoder.info.as_dict(), data.summary(), queued=queued)
    history: list[EpochMetrics] = []

    def epoch_done(metrics: EpochMetrics) -> None:
        history.append(metrics)
        _record_history(folder, history)
        if on_epoch is not None:
            on_epoch(metrics)

    with _heartbeat(folder):  # beats until the run's last status is written
        try:
            run = finetune(
                encoder, data, config, progress=progress, cancel=cancel, on_epoch=epoch_done
            )
            if has_trained_head(run):
                save_run(run, folder)
        except BaseException as exc:
            write_failure(folder, exc)
            raise
    if not has_trained_head(run):
        _discard(folder)
    return run


@contextlib.contextmanager
def _heartbeat(folder: Path) -> Iterator[None]:
    """Touch ``folder``'s heartbeat file every :data:`HEARTBEAT_SECONDS` from a daemon thread
    while the block runs; stop, and remove the file, when it ends."""
    path = folder / HEARTBEAT_FILE
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                path.touch()
            except OSError as exc:  # the folder was moved or deleted under the run
                log.debug("No heartbeat for %s: %s", folder, exc)

    thread = threading.Thread(target=beat, name=f"embedgen-heartbeat-{folder.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        path.unlink(missing_ok=True)


def _record_history(folder: Path, history: list[EpochMetrics]) -> None:
    """Write the epochs finished so far into the running run's run.json, for those watching."""
    path = folder / RUN_FILE
    try:
        record = json.loads(path.read_text("utf-8"))
        record.update(history=[asdict(m) for m in history], updated=now_iso())
        write_json(path, record)
    except OSError as exc:  # the run goes on: its result is written when it ends
        log.warning("Could not record epoch %d in %s: %s", len(history), path, exc)


def has_trained_head(run_or_record: Run | dict[str, Any]) -> bool:
    """Whether a run (or its run.json record) finished at least one epoch: finished, or
    cancelled after an epoch. Only such a run can build a matrix."""
    if isinstance(run_or_record, Run):
        status, history = run_or_record.status, run_or_record.history
    else:
        status, history = run_or_record.get("status"), run_or_record.get("history")
    return status in (RunStatus.FINISHED, RunStatus.CANCELLED) and bool(history)


def _discard(folder: Path) -> None:
    """Remove the run.json that :func:`mark_running` wrote, and the folder if nothing else is
    in it (a folder the user named may hold other things). The heartbeat is gone already."""
    (folder / RUN_FILE).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        log.info("Kept %s: it holds other files", folder)
    log.info("Nothing kept of the run in %s: it was cancelled before the first epoch", folder)


def list_runs(root: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Records of the run folders under ``root`` (default ``$EMBEDGEN_HOME/runs``), newest first.

    Each record is run.json with "folder" added; damaged folders are skipped with a warning.
    """
    root = Path(root) if root is not None else runs_dir()
    if not root.is_dir():
        return []
    records = []
    for folder in root.iterdir():
        if not is_run_folder(folder):
            continue
        try:
            record = read_run_record(folder)
        except BadRun as exc:
            log.warning("Skipping %s: %s", folder, exc)
            continue
        record["folder"] = str(folder)
        records.append(record)
    return sorted(records, key=lambda r: r.get("started") or r.get("updated") or "", reverse=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_run_record(folder: str | os.PathLike[str]) -> dict[str, Any]:
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
    beat = _heartbeat_time(folder)
    try:
        record = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise BadRun(f"Run '{folder.name}': {RUN_FILE} cannot be read ({exc.strerror}).") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _damaged(folder, str(exc)) from exc
    _check_record(record, folder)
    if record["status"] == RunStatus.RUNNING and not _still_training(record, beat):
        record["status"] = str(RunStatus.INTERRUPTED)
    return record


def _heartbeat_time(folder: Path) -> float | None:
    try:
        return (folder / HEARTBEAT_FILE).stat().st_mtime
    except OSError:
        return None


def _still_training(record: dict[str, Any], beat: float | None) -> bool:
    """Whether the process of a "running" record lives: its heartbeat is fresh and, when it
    ran on this host, its process id still exists (a gone id proves it dead; a live one
    proves nothing, ids are reused)."""
    if beat is None or time.time() - beat > HEARTBEAT_STALE_SECONDS:
        return False
    pid = record.get("pid")
    same_host = record.get("host") == socket.gethostname()
    return not (same_host and isinstance(pid, int) and pid > 0 and not _pid_alive(pid))


_STATUSES = frozenset(str(s) for s in RunStatus)
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
    "label_names": list,
    "history": list,
    "confusion": list,
    "best": (dict, type(None)),
}
# What a run with a trained head needs to be loaded.
_TRAINED_FIELDS = ("config", "model", "label_names", "history", "best_epoch")


def _check_record(record: Any, folder: Path) -> None:
    """Raise :class:`BadRun` unless ``record`` has the shape run.json is written in."""
    if not isinstance(record, dict):
        raise _damaged(folder, f"it holds {_json_kind(record)}, not a run's record")
    status = record.get("status")
    if status is None:
        raise _damaged(folder, "it has no status")
    for key, kinds in _FIELD_KINDS.items():
        if key in record and not isinstance(record[key], kinds):
            raise _damaged(folder, f"'{key}' holds {_json_kind(record[key])}")
    if status not in _STATUSES:
        raise _damaged(folder, f"unknown status '{status}'")
    if not all(isinstance(m, dict) for m in record.get("history", [])):
        raise _damaged(folder, "'history' holds something other than epochs")
    if has_trained_head(record):
        missing = [key for key in _TRAINED_FIELDS if key not in record]
        if missing:
            raise _damaged(folder, f"it has no {', '.join(missing)}")


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


def is_run_folder(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / RUN_FILE).is_file()


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
    name = folder.name
    record = read_run_record(folder)
    status = record["status"]
    if status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.INTERRUPTED, RunStatus.FAILED):
        raise BadRun(
            f"Run '{name}' is {status}; it has no trained head to use. "
            "Wait for it to finish, or train again."
        )
    if not has_trained_head(record):
        raise BadRun(
            f"Run '{name}' was cancelled before its first epoch finished; it has no trained "
            "head to use. Train again (the texts it encoded are cached for the head strategy)."
        )
    if not (folder / HEAD_FILE).exists():
        raise BadRun(f"Run '{name}' has no {HEAD_FILE}; the run is incomplete. Train again.")
    try:  # the record's shape is checked; what is in its fields, here
        config = FinetuneConfig.from_dict(record["config"])
        model = record["model"]
        if not isinstance(model.get("model_id"), str):
            raise KeyError("model_id")
        history = [EpochMetrics(**m) for m in record["history"]]
    except (KeyError, TypeError, ValueError, EmbedgenError) as exc:
        what = f"no {exc}" if isinstance(exc, KeyError) else str(exc).rstrip(".")
        raise _damaged(folder, what) from exc
    if record.get("encoder_changed"):
        if not (folder / ENCODER_DIR / "config.json").exists():
            raise BadRun(f"Run '{name}' tuned the encoder but {ENCODER_DIR}/ is missing.")
        encoder = load_encoder(str(folder / ENCODER_DIR), allow_download=False, device=device)
    elif (
        loaded is not None
        and loaded.info.model_id == model["model_id"]
        and loaded.info.revision == model.get("revision", loaded.info.revision)
    ):
        encoder = loaded
    else:
        try:
            encoder = load_encoder(model["model_id"], device=device)
        except ModelNotAvailable as exc:
            raise BadRun(f"Run '{name}' was trained on a model that is not here: {exc}") from exc
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
    encoder = Encoder(encoder.model, encoder.tokenizer, info)
    state = load_file(str(folder / HEAD_FILE))
    num_classes, dim = state["classifier.weight"].shape
    head = Head(state["projection.weight"].shape[1], dim, num_classes, config.dropout)
    head.load_state_dict(state)
    head.to(encoder.device).eval()
    return Run(
        config=config,
        head=head,
        encoder=encoder,
        encoder_changed=bool(record.get("encoder_changed")),
        label_names=tuple(record["label_names"]),
        history=history,
        status=RunStatus(status),
        best_epoch=record["best_epoch"],
        confusion=record.get("confusion", []),
        data_summary=record.get("dataset", {}),
        batch_size_used=int(record.get("batch_size_used", 0)),
        message=record.get("message", ""),
        folder=str(folder),
    )


def run_manifest(run: Run) -> dict[str, Any]:
    """What a matrix built from ``run`` records about it: folder, config, data, labels, metrics."""
    best = run.best
    return {
        "folder": run.folder,
        "status": str(run.status),
        "strategy": str(run.config.strategy),
        "config": run.config.as_dict(),
        "encoder_changed": run.encoder_changed,
        "dataset": run.data_summary,
        "label_map": {str(i): n for i, n in enumerate(run.label_names)},
        "best_epoch": run.best_epoch,
        "metrics": asdict(best) if best else None,
        "epochs_run": len(run.history),
    }
