"""The training queue: queued runs in their folders, real worker processes, cancel and place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from embedgen import jobs
from embedgen.errors import BadConfig, BadRun
from embedgen.jobs import TrainRequest
from embedgen.paths import new_run_folder, runs_dir
from embedgen.runs import load_run, owner_tag, read_run_record
from embedgen.train import FinetuneConfig

WAIT = 90.0


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of its own: its own SQLite queue, its own runs."""
    home = tmp_path / "home"
    monkeypatch.setenv("EMBEDGEN_HOME", str(home))
    monkeypatch.delenv(jobs.QUEUE_URL_ENV, raising=False)
    return home


def request(model_dir: Path, **settings: object) -> TrainRequest:
    config = FinetuneConfig(**{"epochs": 2, "dim": 8, **settings})  # type: ignore[arg-type]
    folder = new_run_folder("reviews", str(config.strategy), runs_dir())
    return TrainRequest(str(model_dir), str(folder), config.as_dict(), allow_download=False)


def wait_for(what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture()
def start_worker(home: Path, tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Start ``embedgen worker`` processes on the test's home; each one's output goes to a log
    file, whose path is returned. All are stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> Path:
        log = tmp_path / f"{name}.log"
        env = {**os.environ, "EMBEDGEN_HOME": str(home)}
        with open(log, "wb") as out:
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "embedgen", "worker"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        return log

    yield start
    for process in started:
        process.terminate()
    for process in started:
        process.wait(30)


def test_labelled_data_round_trips_through_the_run_folder(synthetic_data, tmp_path: Path) -> None:
    jobs.write_data(synthetic_data, tmp_path)
    assert jobs.read_data(tmp_path) == synthetic_data


def test_a_queued_run_reads_as_queued_until_a_worker_takes_it_and_has_no_head(
    home: Path, tiny_model_dir: Path, synthetic_data
) -> None:
    first = request(tiny_model_dir)
    second = request(tiny_model_dir)
    jobs.submit(first, synthetic_data)
    jobs.submit(second, synthetic_data)
    record = read_run_record(second.folder)
    assert record.status == "queued", "no heartbeat yet is not an interrupted run"
    assert record.dataset["rows_used"] == len(synthetic_data)
    assert (jobs.place(first.folder), jobs.place(second.folder)) == (0, 1)
    with pytest.raises(BadRun, match="is queued"):
        load_run(second.folder)

    assert jobs.cancel(first.folder), "a run no worker took is cancelled at once"
    assert not Path(first.folder).exists(), "and nothing of it is kept"
    assert jobs.place(second.folder) == 0, "a cancelled run is nobody's place ahead"


def test_embedgen_cancel_removes_a_queued_run_and_refuses_an_ended_one(
    home: Path, tiny_model_dir: Path, synthetic_data, capsys: pytest.CaptureFixture[str]
) -> None:
    from embedgen.cli import main

    queued = request(tiny_model_dir)
    jobs.submit(queued, synthetic_data)
    assert main(["runs", "--active"]) == 0
    assert capsys.readouterr().out.startswith("queued\t")
    assert main(["cancel", queued.folder]) == 0
    name = Path(queued.folder).name
    assert capsys.readouterr().out.strip() == (
        f"Cancelled {name} before a worker took it up; nothing is kept."
    )
    assert not Path(queued.folder).exists()
    assert main(["cancel", queued.folder]) == 2
    assert f"Run folder '{name}' does not exist." in capsys.readouterr().err


def test_the_task_trains_the_queued_run_and_skips_a_cancelled_one(
    home: Path, tiny_model_dir: Path, synthetic_data
) -> None:
    wanted = replace(request(tiny_model_dir), owner=owner_tag("a-tab-secret-0123456789"))
    dropped = request(tiny_model_dir)
    jobs.submit(wanted, synthetic_data)
    jobs.submit(dropped, synthetic_data)
    jobs.cancel(dropped.folder)

    assert jobs.train(asdict(dropped)) == "cancelled"
    assert not Path(dropped.folder).exists()
    assert jobs.train(asdict(wanted)) == "finished"
    folder = Path(wanted.folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "head.safetensors",
        "progress.json",
        "run.json",
    ], "the data and the claim are gone; the last progress stays"
    progress = jobs.read_progress(folder)
    assert (progress["stage"], progress["done"]) == ("epoch 2 of 2", progress["total"])
    record = read_run_record(folder)
    assert record.status == "finished" and record.queued and record.task_id
    assert record.owned_by("a-tab-secret-0123456789"), "the owner is kept to the end"
    assert not record.owned_by("another-tab-secret-98765") and not record.owned_by(None)
    assert jobs.train(asdict(wanted)) == "cancelled", "a task taken twice trains once"
    assert len(load_run(folder).history) == 2


def test_two_worker_processes_train_each_run_once_and_stop_a_run_on_cancel(
    home: Path, tiny_model_dir: Path, synthetic_data, start_worker: Callable[[str], Path]
) -> None:
    cancelled_early = request(tiny_model_dir)
    long = request(tiny_model_dir, epochs=10_000, patience=0)
    short = [request(tiny_model_dir) for _ in range(3)]
    for r in [cancelled_early, long, *short]:
        jobs.submit(r, synthetic_data)
    assert jobs.cancel(cancelled_early.folder)
    assert jobs.place(short[-1].folder) == 3, "three runs ahead: the long one and two short"

    logs = [start_worker("one"), start_worker("two")]
    wait_for("two live workers", lambda: len(jobs.live_workers()) == 2)

    def status(r: TrainRequest) -> str | None:
        return jobs.run_status(r.folder)

    # The long run holds one worker while the other trains the three short runs.
    wait_for("the short runs", lambda: all(status(r) == "finished" for r in short))
    assert status(long) == "running"
    wait_for("an epoch of the long run", lambda: read_run_record(long.folder).history)
    assert not jobs.cancel(long.folder), "a running run is not removed, it is asked to stop"
    wait_for("the long run to stop", lambda: status(long) == "cancelled")

    for r in [*short, long]:
        run = load_run(r.folder)
        assert run.history, f"{r.folder} has no epochs"
        assert jobs.read_progress(r.folder)["stage"].startswith("epoch ")
        assert not (Path(r.folder) / jobs.DATA_FILE).exists()
    assert not Path(cancelled_early.folder).exists()

    texts = [log.read_text("utf-8") for log in logs]
    for r in [*short, long]:
        name = Path(r.folder).name
        trained = sum(text.count(f"Trained {name}:") for text in texts)
        assert trained == 1, f"{name} was trained {trained} times"
    by_long = next(i for i, text in enumerate(texts) if f"Trained {Path(long.folder).name}" in text)
    other = texts[1 - by_long]
    assert all(f"Trained {Path(r.folder).name}" in other for r in short), "both workers worked"
    record = json.loads((Path(long.folder) / "run.json").read_text("utf-8"))
    assert record["status"] == "cancelled" and len(record["history"]) >= 1


def test_a_redis_queue_without_the_redis_package_says_how_to_install_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if not installed: import fails
    monkeypatch.setenv(jobs.QUEUE_URL_ENV, "redis://localhost:6379/0")
    with pytest.raises(BadConfig, match=r'pip install "embedgen\[redis\]"'):
        jobs.get_huey()


def test_a_worker_that_stops_at_once_is_reported_and_started_again_only_now_and_then(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soak's lesson: a worker that died at start left runs "queued · 1 ahead of you"
    for good, with nothing on the page saying why."""
    # A real way for `embedgen worker` to stop at once: a queue address it does not support.
    monkeypatch.setenv(jobs.QUEUE_URL_ENV, "amqp://127.0.0.1:9/0")
    monkeypatch.setenv(jobs.AUTOSTART_ENV, "1")
    assert jobs.worker_trouble() is None, "no worker started yet: nothing to report"
    first = jobs.ensure_worker()
    assert first is not None
    assert first.wait(60) == 2
    trouble = jobs.worker_trouble()
    assert trouble is not None and "has stopped (exit code 2)" in trouble
    assert str(home) not in trouble and "Traceback" not in trouble
    assert jobs.ensure_worker() is None, "not started again at every page run"
    monkeypatch.setattr(jobs, "RESTART_SECONDS", 0.0)
    again = jobs.ensure_worker()
    assert again is not None and again.pid != first.pid, "but again after a while"
    again.wait(60)
    monkeypatch.setenv(jobs.AUTOSTART_ENV, "0")
    assert "Ask the operator to start one (`embedgen worker`)" in (jobs.worker_trouble() or "")


def test_a_worker_started_with_a_process_stops_once_that_process_has_ended(home: Path) -> None:
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    env = {**os.environ, "EMBEDGEN_HOME": str(home)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "embedgen", "worker", "--stop-with", str(server.pid)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for("the worker's heartbeat", lambda: bool(jobs.live_workers()))
        time.sleep(jobs.WORKER_BEAT_SECONDS + 1)
        assert worker.poll() is None, "the worker stays while the process it goes with lives"
        server.kill()
        server.wait()  # gone, not a zombie
        worker.wait(timeout=3 * jobs.WORKER_BEAT_SECONDS + 10)
        assert not jobs.live_workers(), "its heartbeat file went with it"
    finally:
        for process in (server, worker):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_a_submit_that_cannot_reach_redis_says_so_and_leaves_no_run(
    home: Path, tiny_model_dir: Path, synthetic_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: "Something went wrong (ConnectionError…)" and a run folder "queued" for ever."""
    pytest.importorskip("redis", reason="the redis package (pip install 'embedgen[redis]')")
    from embedgen.errors import QueueUnreachable

    monkeypatch.setenv(jobs.QUEUE_URL_ENV, "redis://:secret@127.0.0.1:9/0")  # nothing listens
    req = request(tiny_model_dir)
    with pytest.raises(QueueUnreachable, match="nothing was started") as err:
        jobs.submit(req, synthetic_data)
    assert "redis://127.0.0.1:9" in str(err.value) and "secret" not in str(err.value)
    assert not Path(req.folder).exists()


def test_a_deleted_queue_file_is_opened_again_and_its_lost_runs_queued_again(
    home: Path, tiny_model_dir: Path, synthetic_data
) -> None:
    """The queue file deleted under a process that had submitted: its next run went into the
    deleted file, and the runs queued before waited for ever beside an idle worker."""
    from huey import SqliteHuey

    from embedgen.paths import queue_dir

    first = request(tiny_model_dir)
    jobs.submit(first, synthetic_data)
    (queue_dir() / "huey.db").unlink()
    second = request(tiny_model_dir)
    task = jobs.submit(second, synthetic_data)
    fresh = SqliteHuey("embedgen", filename=str(queue_dir() / "huey.db"), results=False)
    fresh.task(name="embedgen.train")(jobs.train)  # as a worker's queue knows it
    assert [m.id for m in fresh.pending()] == [task], "the new run is in the file workers read"

    assert jobs.requeue_lost(min_age=3600) == [], "a run queued a moment ago is not lost yet"
    assert jobs.requeue_lost(min_age=0) == [Path(first.folder)]
    record = read_run_record(first.folder)
    assert record.status == "queued" and {m.id for m in fresh.pending()} == {task, record.task_id}
    assert jobs.requeue_lost(min_age=0) == [], "queued again once"

    (Path(second.folder) / jobs.REQUEST_FILE).unlink()  # as a run queued by an older embedgen
    fresh.storage.flush_queue()  # both entries lost again
    assert jobs.requeue_lost(min_age=0) == [Path(first.folder)]
    lost = read_run_record(second.folder)
    assert lost.status == "failed" and "queue entry was lost" in lost.message


def test_a_worker_loads_the_model_it_is_asked_to_warm_before_any_run(
    home: Path, tiny_model_dir: Path, start_worker: Callable[[str], Path]
) -> None:
    """The Model page asks a worker to load the model as soon as the visitor loads it, so the
    first Start does not wait for it (issue 20: the first Start took 1.84x embedgen train)."""
    log = start_worker("warm")
    jobs.warm_up(TrainRequest(str(tiny_model_dir), "", {}, allow_download=False))
    wait_for("the worker to load the model", lambda: "Warmed" in log.read_text("utf-8"), 60)
    assert str(tiny_model_dir) in log.read_text("utf-8")
    assert not runs_dir().exists() or not any(runs_dir().iterdir()), "no run was made"


def test_warming_fills_the_worker_s_encoders_under_the_key_training_uses(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "_encoders", jobs.OrderedDict())
    warmed = TrainRequest(str(tiny_model_dir), "", {}, allow_download=False)
    jobs.warm(asdict(warmed))
    training = request(tiny_model_dir)
    assert jobs._encoder(training) is next(iter(jobs._encoders.values()))
    assert len(jobs._encoders) == 1, "the run found the warmed encoder, no second copy"


def test_a_warm_up_waiting_in_the_queue_is_no_run_ahead(
    home: Path, tiny_model_dir: Path, synthetic_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(home.parent)
    (home.parent / "run.json").write_text('{"status": "queued"}', "utf-8")  # a stray file
    jobs.warm_up(TrainRequest(str(tiny_model_dir), "", {}, allow_download=False))
    queued = request(tiny_model_dir)
    jobs.submit(queued, synthetic_data)
    assert jobs.place(queued.folder) == 0


def test_a_warm_up_the_queue_cannot_take_is_only_logged(
    home: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """Loading a model on the Model page must not fail because the queue is down: the first
    Start says what is wrong with the queue."""
    pytest.importorskip("redis", reason="the redis package (pip install 'embedgen[redis]')")
    monkeypatch.setenv(jobs.QUEUE_URL_ENV, "redis://127.0.0.1:9/0")  # nothing listens
    with caplog.at_level("INFO", logger="embedgen.jobs"):
        jobs.warm_up(TrainRequest(str(tiny_model_dir), "", {}, allow_download=False))
    assert "No worker warmed" in caplog.text
