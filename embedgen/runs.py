"""The run folder: save a fine-tuning run, load it back, and describe it for manifests.

```
RUN_DIR/
  run.json            status, config, model, dataset, label map, metrics per epoch, versions
  head.safetensors    projection + classifier
  encoder/            save_pretrained() output, only when the encoder changed (top-k, full)
  matrices/<name>/    matrices built from this run
```
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from embedgen import __version__
from embedgen.atomic import atomic_path, write_json
from embedgen.data import LabelledData
from embedgen.errors import BadRun, ModelNotAvailable
from embedgen.models import Encoder, load_encoder
from embedgen.paths import runs_dir
from embedgen.progress import ProgressFn
from embedgen.train import EpochMetrics, FinetuneConfig, Head, Run, RunStatus, finetune

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def default_run_dir(dataset_name: str, strategy: str) -> Path:
    """A new folder name under ``$EMBEDGEN_HOME/runs`` from the time, dataset and strategy."""
    stem = re.sub(r"[^\w\-]+", "_", Path(dataset_name).stem, flags=re.UNICODE).strip("_") or "data"
    stamp = datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    return runs_dir() / f"{stamp}_{stem}_{strategy}"


def versions() -> dict[str, str]:
    import transformers

    return {
        "embedgen": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


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
        raise BadRun(
            f"{folder} already holds a run. Choose a new --out folder or delete the old one."
        )
    return folder


def mark_running(
    folder: str | os.PathLike[str], config: FinetuneConfig, model: dict[str, Any], dataset: dict
) -> Path:
    """Create the run folder and write run.json with status "running" before training starts."""
    folder = ensure_new_run_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / RUN_FILE,
        _run_record(
            None,
            status=str(RunStatus.RUNNING),
            config=config.as_dict(),
            model=model,
            dataset=dataset,
            started=now_iso(),
            pid=os.getpid(),
            host=socket.gethostname(),
        ),
    )
    return folder


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
    started = None
    if (folder / RUN_FILE).exists():
        started = json.loads((folder / RUN_FILE).read_text("utf-8")).get("started")
    with atomic_path(folder / HEAD_FILE) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in run.head.state_dict().items()}
        save_file(state, str(tmp), metadata={"format": "embedgen-head-1"})
    if run.encoder_changed:
        # save_pretrained writes several files: build the folder aside, then swap it in.
        staging = Path(tempfile.mkdtemp(prefix=".encoder.", dir=folder))
        run.encoder.model.save_pretrained(staging)
        run.encoder.tokenizer.save_pretrained(staging)
        target = folder / ENCODER_DIR
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    write_json(
        folder / RUN_FILE, _run_record(run, started=started or now_iso(), finished=now_iso())
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
) -> Run:
    """Fine-tune and keep the run folder truthful throughout: running, then saved or failed.

    A run cancelled before its first epoch finished has no trained head, so nothing of it is
    kept: its run.json goes (and the folder, if that leaves it empty) and the run comes back
    with no folder. What it encoded stays in the feature cache (``embedgen.features``).
    The CLI and the app both train through here, so a run started in one opens in the other.
    """
    folder = mark_running(folder, config, encoder.info.as_dict(), data.summary())
    try:
        run = finetune(encoder, data, config, progress=progress, cancel=cancel, on_epoch=on_epoch)
    except BaseException as exc:
        write_failure(folder, exc)
        raise
    if not has_trained_head(run):
        _discard(folder)
        return run
    save_run(run, folder)
    return run


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
    in it (a folder the user named may hold other things)."""
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
    """run.json of ``folder``, with a "running" run whose process is gone marked "interrupted"."""
    folder = Path(folder)
    path = folder / RUN_FILE
    if not folder.is_dir():
        raise BadRun(f"Run folder '{folder}' does not exist.")
    if not path.exists():
        raise BadRun(
            f"'{folder}' is not a run folder (no {RUN_FILE}). Train one with `embedgen train`."
        )
    try:
        record = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRun(f"{path} is damaged ({exc}). Train the run again.") from exc
    if record.get("status") == RunStatus.RUNNING:
        same_host = record.get("host") == socket.gethostname()
        if same_host and not _pid_alive(int(record.get("pid", -1))):
            record["status"] = str(RunStatus.INTERRUPTED)
    return record


def is_run_folder(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def load_run(folder: str | os.PathLike[str], *, device: torch.device | str | None = None) -> Run:
    """Load a saved run: its head, its encoder (tuned copy, or the original model) and record."""
    folder = Path(folder)
    record = read_run_record(folder)
    status = record.get("status")
    if status in (RunStatus.RUNNING, RunStatus.INTERRUPTED, RunStatus.FAILED):
        raise BadRun(
            f"Run '{folder}' is {status}; it has no trained head to use. "
            "Wait for it to finish, or train again."
        )
    if not has_trained_head(record):
        raise BadRun(
            f"Run '{folder}' was cancelled before its first epoch finished; it has no trained "
            "head to use. Train again (the texts it encoded are cached for the head strategy)."
        )
    if not (folder / HEAD_FILE).exists():
        raise BadRun(f"Run '{folder}' has no {HEAD_FILE}; the run is incomplete. Train again.")
    config = FinetuneConfig.from_dict(record["config"])
    model = record["model"]
    if record.get("encoder_changed"):
        if not (folder / ENCODER_DIR / "config.json").exists():
            raise BadRun(f"Run '{folder}' tuned the encoder but {ENCODER_DIR}/ is missing.")
        encoder = load_encoder(str(folder / ENCODER_DIR), allow_download=False, device=device)
    else:
        try:
            encoder = load_encoder(model["model_id"], device=device)
        except ModelNotAvailable as exc:
            raise BadRun(f"Run '{folder}' was trained on a model that is not here: {exc}") from exc
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
        label_names=tuple(record.get("label_names", [])),
        history=[EpochMetrics(**m) for m in record.get("history", [])],
        status=RunStatus(status),
        best_epoch=int(record.get("best_epoch", 0)),
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
