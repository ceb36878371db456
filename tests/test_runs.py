"""The run folder: save, load, status, and what manifests say about a run."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from embedgen import runs
from embedgen.errors import BadRun
from embedgen.paths import new_run_folder
from embedgen.runs import (
    HEARTBEAT_FILE,
    HEARTBEAT_SECONDS,
    HEARTBEAT_STALE_SECONDS,
    has_trained_head,
    list_runs,
    load_run,
    mark_running,
    read_run_record,
    run_manifest,
    save_run,
    status_of,
    train_and_save,
    write_failure,
)
from embedgen.train import FinetuneConfig, finetune


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
    assert not back.cancelled
    assert back.encoder.info.revision == tiny_encoder.info.revision
    record = json.loads((tmp_path / "run" / "run.json").read_text("utf-8"))
    assert record["dataset"]["source"] == "reviews.csv"
    assert len(record["dataset"]["sha256"]) == 64
    assert record["label_map"] == {"0": "正面", "1": "负面"}
    assert record["versions"]["embedgen"]


def test_a_head_run_reuses_the_encoder_the_caller_holds(
    tiny_encoder, synthetic_data, tmp_path: Path
) -> None:
    run = finetune(tiny_encoder, synthetic_data, FinetuneConfig(epochs=1, dim=8))
    save_run(run, tmp_path / "run")
    assert load_run(tmp_path / "run", loaded=tiny_encoder).encoder.model is tiny_encoder.model
    other = tmp_path / "other"  # the same files under another name: not the run's model
    other.mkdir()
    for f in Path(tiny_encoder.info.path).iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    from embedgen.models import load_encoder

    elsewhere = load_encoder(str(other))
    assert load_run(tmp_path / "run", loaded=elsewhere).encoder.model is not elsewhere.model


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
    assert read_run_record(folder).status == "running"  # this process is alive
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads((folder / "run.json").read_text())
    record.update(pid=int(dead.stdout), host=socket.gethostname())
    (folder / "run.json").write_text(json.dumps(record))
    assert read_run_record(folder).status == "interrupted"
    with pytest.raises(BadRun, match="interrupted"):
        load_run(folder)


def test_failure_is_recorded_with_its_reason(tmp_path: Path, tiny_encoder) -> None:
    folder = mark_running(tmp_path / "run", FinetuneConfig(), tiny_encoder.info.as_dict(), {})
    write_failure(folder, RuntimeError("disk full"))
    record = read_run_record(folder)
    assert record.status == "failed" and "disk full" in record.message


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
    assert run.cancelled and not run.history
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
    assert record.status == "cancelled" and has_trained_head(record)
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


# -- running: told by a heartbeat -------------------------------------------------------------


def _running_record(folder: Path, **fields: object) -> None:
    record = json.loads((folder / "run.json").read_text("utf-8"))
    record.update(fields)
    (folder / "run.json").write_text(json.dumps(record), "utf-8")


def _beat_at(folder: Path, seconds_ago: float) -> None:
    then = time.time() - seconds_ago
    os.utime(folder / HEARTBEAT_FILE, (then, then))


def test_a_run_whose_heartbeat_stopped_reads_as_interrupted_though_its_pid_lives(
    tmp_path: Path, tiny_encoder
) -> None:
    """The PID may have been reused by another process: the heartbeat decides."""
    folder = mark_running(tmp_path / "run", FinetuneConfig(), tiny_encoder.info.as_dict(), {})
    _running_record(folder, pid=os.getpid(), host=socket.gethostname())
    _beat_at(folder, HEARTBEAT_STALE_SECONDS + 5)
    assert read_run_record(folder).status == "interrupted"


def test_a_run_on_another_host_with_a_fresh_heartbeat_reads_as_running(
    tmp_path: Path, tiny_encoder
) -> None:
    folder = mark_running(tmp_path / "run", FinetuneConfig(), tiny_encoder.info.as_dict(), {})
    _running_record(folder, pid=1, host="another-host")
    _beat_at(folder, HEARTBEAT_SECONDS)
    assert read_run_record(folder).status == "running"


def test_a_run_on_another_host_whose_heartbeat_stopped_reads_as_interrupted(
    tmp_path: Path, tiny_encoder
) -> None:
    folder = mark_running(tmp_path / "run", FinetuneConfig(), tiny_encoder.info.as_dict(), {})
    _running_record(folder, pid=1, host="another-host")
    _beat_at(folder, HEARTBEAT_STALE_SECONDS + 5)
    assert read_run_record(folder).status == "interrupted"
    with pytest.raises(BadRun, match="interrupted"):
        load_run(folder)


def test_a_running_record_without_a_heartbeat_reads_as_interrupted(
    tmp_path: Path, tiny_encoder
) -> None:
    folder = mark_running(tmp_path / "run", FinetuneConfig(), tiny_encoder.info.as_dict(), {})
    (folder / HEARTBEAT_FILE).unlink()
    assert read_run_record(folder).status == "interrupted"


def _heartbeats(folder: Path) -> list[threading.Thread]:
    """The threads beating for ``folder`` (the app's tests may train in other threads)."""
    return [t for t in threading.enumerate() if t.name == f"embedgen-heartbeat-{folder.name}"]


def test_training_beats_while_it_runs_and_stops_beating_when_it_ends(
    tiny_encoder, synthetic_data, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(runs, "HEARTBEAT_SECONDS", 0.02)
    folder = tmp_path / "beating-run"
    beats: list[float] = []

    def on_epoch(m) -> None:
        assert len(_heartbeats(folder)) == 1, "one heartbeat thread while training"
        time.sleep(0.1)
        beats.append((folder / HEARTBEAT_FILE).stat().st_mtime)
        assert read_run_record(folder).status == "running"

    train_and_save(
        tiny_encoder, synthetic_data, FinetuneConfig(epochs=2, dim=8), folder, on_epoch=on_epoch
    )
    assert beats[1] > beats[0], "the heartbeat file's time moves while training runs"
    assert _heartbeats(folder) == [], "the heartbeat thread ends with the training"
    assert not (folder / HEARTBEAT_FILE).exists()
    assert read_run_record(folder).status == "finished"


def test_the_heartbeat_stops_when_training_fails(
    tiny_encoder, synthetic_data, tmp_path: Path
) -> None:
    def fail(m) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        train_and_save(
            tiny_encoder,
            synthetic_data,
            FinetuneConfig(epochs=2, dim=8),
            tmp_path / "failing-run",
            on_epoch=fail,
        )
    assert _heartbeats(tmp_path / "failing-run") == []
    assert read_run_record(tmp_path / "failing-run").status == "failed"


def test_run_json_shows_each_finished_epoch_while_training(
    tiny_encoder, synthetic_data, tmp_path: Path
) -> None:
    folder = tmp_path / "run"
    seen: list[int] = []

    def on_epoch(m) -> None:
        record = read_run_record(folder)
        assert record.status == "running"
        seen.append(len(record.history))

    train_and_save(
        tiny_encoder, synthetic_data, FinetuneConfig(epochs=3, dim=8), folder, on_epoch=on_epoch
    )
    assert seen == [1, 2, 3]


# -- run folders: one per run, even when started at once ---------------------------------------


def _at_once(n: int, fn):
    """Call ``fn()`` from ``n`` threads released together; return results and exceptions."""
    barrier = threading.Barrier(n)
    results: list[object] = []

    def call() -> None:
        barrier.wait()
        try:
            results.append(fn())
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    folders = _at_once(8, lambda: new_run_folder("reviews.csv", "head", root=tmp_path))
    assert all(isinstance(f, Path) for f in folders), folders
    assert len(set(folders)) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in folders)


def test_of_two_runs_started_at_once_in_one_folder_one_is_refused(
    tmp_path: Path, tiny_encoder
) -> None:
    for i in range(10):  # the race is narrow: try it often enough to lose it without the claim
        folder = tmp_path / f"run{i}"
        results = _at_once(
            2, lambda f=folder: mark_running(f, FinetuneConfig(), tiny_encoder.info.as_dict(), {})
        )
        refused = [r for r in results if isinstance(r, BadRun)]
        assert len(refused) == 1, results
        assert "already" in str(refused[0]) and "--out" not in str(refused[0])


# -- damaged run.json: refused in one line, skipped in lists ------------------------------------


DAMAGED = {
    "null": "null",
    "a list": "[]",
    "a number": "3",
    "a string": '"finished"',
    "no status": "{}",
    "an unknown status": '{"status": "exploded"}',
    "a status that is a list": '{"status": ["running"]}',
    "a pid that is text": '{"status": "running", "pid": "abc", "host": "here"}',
    "a start time that is a number": '{"status": "running", "started": 5}',
    "history that is not a list": '{"status": "cancelled", "history": {"1": 2}}',
    "best that is text": '{"status": "finished", "best": "0.9", "history": []}',
    "a finished run without its config": (
        '{"status": "finished", "history": [{"epoch": 1}], "best_epoch": 1, "model": {}, '
        '"label_names": ["a", "b"]}'
    ),
}


@pytest.mark.parametrize("text", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_run_json_is_refused_in_one_line_naming_the_run(tmp_path: Path, text) -> None:
    folder = tmp_path / "broken-run"
    folder.mkdir()
    (folder / "run.json").write_text(text, "utf-8")
    (folder / "head.safetensors").write_bytes(b"")
    with pytest.raises(BadRun) as caught:
        load_run(folder)
    message = str(caught.value)
    assert "broken-run" in message
    assert str(tmp_path) not in message, "the server's paths stay out of the message"
    assert "\n" not in message


@pytest.mark.parametrize("text", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_run_is_skipped_in_the_list_of_runs(
    tmp_path: Path, tiny_encoder, text, caplog
) -> None:
    mark_running(tmp_path / "good-run", FinetuneConfig(), tiny_encoder.info.as_dict(), {})
    (tmp_path / "broken-run").mkdir()
    (tmp_path / "broken-run" / "run.json").write_text(text, "utf-8")
    with caplog.at_level(logging.WARNING, logger="embedgen.runs"):
        records = list_runs(tmp_path)
    assert [r.name for r in records] == ["good-run"]
    assert "broken-run" in caplog.text


class _FullDisk:
    """The disk fills while the head is saved: from then on every new file fails with ENOSPC
    (atomic writes too), as on a real full disk; writing over an existing file still works."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from embedgen import atomic

        self.full = False
        real = atomic.write_text

        def write_text(path, text) -> None:
            if self.full:
                raise OSError(28, "No space left on device", str(path))
            real(path, text)

        def save_file(*args, **kwargs) -> None:
            self.full = True
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(atomic, "write_text", write_text)
        monkeypatch.setattr(runs, "save_file", save_file)


def test_a_full_disk_ends_the_run_failed_saying_so(
    tiny_encoder, synthetic_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, run.json stayed "running" (its failure could not be written either) and the
    page blamed a dead worker."""
    _FullDisk(monkeypatch)
    folder = tmp_path / "run"
    with pytest.raises(OSError):
        train_and_save(tiny_encoder, synthetic_data, FinetuneConfig(epochs=1, dim=8), folder)
    record = read_run_record(folder)
    assert record.status == "failed"
    assert record.message.startswith(f"no space left on the disk holding {folder}"), record
    assert "MB free" in record.message


def test_each_better_epoch_is_kept_on_disk_while_training(
    tiny_encoder, synthetic_data, tmp_path: Path
) -> None:
    folder = tmp_path / "run"
    seen: list[tuple[int, int, bool]] = []

    def look(metrics) -> None:  # called before the epoch is weighed against the best
        record = runs._current(folder)
        seen.append((metrics.epoch, record.best_epoch, (folder / "head.safetensors").exists()))

    run = train_and_save(
        tiny_encoder, synthetic_data, FinetuneConfig(epochs=3, dim=8), folder, on_epoch=look
    )
    assert seen[0] == (1, 0, False), "nothing is kept before the first epoch ends"
    assert all(best >= 1 and head for _, best, head in seen[1:]), seen
    assert read_run_record(folder).best_epoch == run.best_epoch


KILLED_RUN = """
import sys
from conftest import synthetic_rows, write_csv
from embedgen.data import prepare
from embedgen.models import load_encoder
from embedgen.runs import train_and_save
from embedgen.table import read_table
from embedgen.train import FinetuneConfig

from pathlib import Path

model, data_file, folder = sys.argv[1:]
write_csv(Path(data_file), synthetic_rows(240))
data = prepare(read_table(data_file), "text", "label")
config = FinetuneConfig(epochs=500, patience=0, dim=8)
train_and_save(load_encoder(model, allow_download=False), data, config, folder)
"""


def test_a_killed_training_keeps_its_best_epoch_for_matrices(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """kill -9 mid-training: the run reads "interrupted", says what it kept, and its head
    builds a matrix (before, four probed runs lost 10, 4, 6 and 43 finished epochs)."""
    import signal

    from embedgen.matrix import MatrixOptions, Method, build_matrix

    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    args = [str(tiny_model_dir), str(tmp_path / "data.csv"), str(folder)]
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, *args], env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            record = runs._current(folder)
            if record is not None and record.best_epoch >= 1 and len(record.history) >= 3:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the training ended on its own"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    record = read_run_record(folder)
    assert record.status == "interrupted" and record.has_trained_head
    assert record.best is not None and f"head of epoch {record.best_epoch}" in record.message
    assert f"{len(record.history)} epochs finished" in record.message
    run = load_run(folder)
    assert run.best_epoch == record.best_epoch and status_of(run) == "interrupted"
    matrix = build_matrix(run, MatrixOptions(method=Method.PROJECTED))
    assert matrix.shape[1] == 8
