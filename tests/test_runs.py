"""The run folder: save, load, status, and what manifests say about a run."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from embedgen.errors import BadRun
from embedgen.runs import (
    has_trained_head,
    list_runs,
    load_run,
    mark_running,
    read_run_record,
    run_manifest,
    save_run,
    train_and_save,
    write_failure,
)
from embedgen.train import FinetuneConfig, RunStatus, finetune


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].device)) for k in sa)


def test_head_run_round_trips(tiny_encoder, synthetic_data, tmp_path: Path) -> None:
    run = finetune(tiny_encoder, synthetic_data, FinetuneConfig(epochs=2, dim=8))
    save_run(run, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["head.safetensors", "run.json"]
    back = load_run(tmp_path / "run")
    assert _same(back.head, run.head)
    assert back.label_names == run.label_names
    assert back.history == run.history
    assert back.config == run.config
    assert back.status is RunStatus.FINISHED
    assert back.encoder.info.revision == tiny_encoder.info.revision
    record = json.loads((tmp_path / "run" / "run.json").read_text("utf-8"))
    assert record["dataset"]["source"] == "reviews.csv"
    assert len(record["dataset"]["sha256"]) == 64
    assert record["label_map"] == {"0": "正面", "1": "负面"}
    assert record["versions"]["embedgen"]


def test_tuned_encoder_is_saved_and_loaded(tiny_encoder, synthetic_data, tmp_path: Path) -> None:
    cfg = FinetuneConfig(strategy="top-k", top_k=1, epochs=1, dim=8, learning_rate=1e-3)
    run = finetune(tiny_encoder, synthetic_data, cfg)
    save_run(run, tmp_path / "run")
    assert (tmp_path / "run" / "encoder" / "config.json").exists()
    back = load_run(tmp_path / "run")
    assert _same(back.encoder.model, run.encoder.model)
    assert not _same(back.encoder.model, tiny_encoder.model)
    assert back.encoder.info.model_id == tiny_encoder.info.model_id


def test_a_second_run_into_the_same_folder_is_refused(tmp_path: Path, tiny_encoder) -> None:
    mark_running(tmp_path / "run", FinetuneConfig(), tiny_encoder.info.as_dict(), {})
    with pytest.raises(BadRun, match="already holds a run"):
        mark_running(tmp_path / "run", FinetuneConfig(), tiny_encoder.info.as_dict(), {})


def test_running_run_of_a_dead_process_reads_as_interrupted(tmp_path: Path, tiny_encoder) -> None:
    folder = mark_running(tmp_path / "run", FinetuneConfig(), tiny_encoder.info.as_dict(), {})
    assert read_run_record(folder)["status"] == "running"  # this process is alive
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads((folder / "run.json").read_text())
    record.update(pid=int(dead.stdout), host=socket.gethostname())
    (folder / "run.json").write_text(json.dumps(record))
    assert read_run_record(folder)["status"] == "interrupted"
    with pytest.raises(BadRun, match="interrupted"):
        load_run(folder)


def test_failure_is_recorded_with_its_reason(tmp_path: Path, tiny_encoder) -> None:
    folder = mark_running(tmp_path / "run", FinetuneConfig(), tiny_encoder.info.as_dict(), {})
    write_failure(folder, RuntimeError("disk full"))
    record = read_run_record(folder)
    assert record["status"] == "failed" and "disk full" in record["message"]


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(BadRun, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(BadRun, match="not a run folder"):
        load_run(tmp_path)
    (tmp_path / "run.json").write_text("{broken")
    with pytest.raises(BadRun, match="damaged"):
        load_run(tmp_path)


def test_run_without_its_head_is_incomplete(tiny_encoder, synthetic_data, tmp_path: Path) -> None:
    run = finetune(tiny_encoder, synthetic_data, FinetuneConfig(epochs=1, dim=8))
    save_run(run, tmp_path / "run")
    (tmp_path / "run" / "head.safetensors").unlink()
    with pytest.raises(BadRun, match="head.safetensors"):
        load_run(tmp_path / "run")


def test_manifest_describes_the_run(tiny_encoder, synthetic_data, tmp_path: Path) -> None:
    run = finetune(tiny_encoder, synthetic_data, FinetuneConfig(epochs=2, dim=8))
    save_run(run, tmp_path / "run")
    m = run_manifest(run)
    assert m["folder"] == str(tmp_path / "run")
    assert m["strategy"] == "head" and m["config"]["dim"] == 8
    assert m["metrics"]["epoch"] == run.best_epoch
    assert m["dataset"]["rows_train"] > 0
    json.dumps(m)  # manifests must be JSON


def test_a_run_cancelled_before_its_first_epoch_is_not_kept(
    tiny_encoder, synthetic_data, tmp_path: Path
) -> None:
    cancel = threading.Event()
    cancel.set()
    folder = tmp_path / "run"
    run = train_and_save(
        tiny_encoder, synthetic_data, FinetuneConfig(epochs=2, dim=8), folder, cancel=cancel
    )
    assert run.status is RunStatus.CANCELLED and not run.history
    assert run.folder is None
    assert not folder.exists(), "a run with no trained head leaves no folder to list"


def test_a_run_cancelled_after_an_epoch_is_kept(
    tiny_encoder, synthetic_data, tmp_path: Path
) -> None:
    cancel = threading.Event()
    run = train_and_save(
        tiny_encoder,
        synthetic_data,
        FinetuneConfig(epochs=5, dim=8),
        tmp_path / "run",
        cancel=cancel,
        on_epoch=lambda m: cancel.set(),
    )
    assert run.folder == str(tmp_path / "run")
    (record,) = list_runs(tmp_path)
    assert record["status"] == "cancelled" and has_trained_head(record)
    assert load_run(tmp_path / "run").best_epoch == 1


def test_an_older_cancelled_run_without_epochs_cannot_be_used(tiny_encoder, tmp_path: Path) -> None:
    """Before runs cancelled that early were discarded, they were saved with an untrained head."""
    folder = mark_running(tmp_path / "run", FinetuneConfig(), tiny_encoder.info.as_dict(), {})
    record = json.loads((folder / "run.json").read_text("utf-8"))
    record.update(status="cancelled", history=[], best=None, best_epoch=0)
    (folder / "run.json").write_text(json.dumps(record), "utf-8")
    (folder / "head.safetensors").write_bytes(b"")
    assert not has_trained_head(list_runs(tmp_path)[0])
    with pytest.raises(BadRun, match="cancelled before its first epoch"):
        load_run(folder)
