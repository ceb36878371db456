"""Workers on a real Redis server (issue 20, item 4): the documented way to train on several
machines. Two workers share one $EMBEDGEN_HOME and one Redis; three runs are queued; one
worker is killed while it trains; Redis is stopped and started again without its data. Every
run must end truthfully, and nothing finished may be lost.

Needs Debian's ``redis-server`` (``.ci/run`` installs it) and the redis package
(``pip install "embedgen[redis]"``); skipped, saying which is missing, without them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import synthetic_rows, write_csv
from test_jobs import wait_for

from embedgen import jobs
from embedgen.data import prepare
from embedgen.paths import new_run_folder, runs_dir
from embedgen.runs import RunRecord, RunStatus, load_run, read_run_record
from embedgen.table import read_table
from embedgen.train import FinetuneConfig

REDIS = shutil.which("redis-server")
pytestmark = [
    pytest.mark.skipif(REDIS is None, reason="redis-server is missing: apt-get install redis"),
    pytest.mark.skipif(
        __import__("importlib").util.find_spec("redis") is None,
        reason='the redis package is missing: pip install "embedgen[redis]"',
    ),
]
WAIT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A redis-server on a free port that keeps nothing on disk: stopped and started again, it
    has lost every queued entry, as a server without persistence does."""

    def __init__(self, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [str(REDIS), "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_for("redis to answer", self.answers, 20)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)


@pytest.fixture()
def redis(tmp_path: Path) -> Iterator[Redis]:
    server = Redis(tmp_path)
    server.start()
    yield server
    server.stop()


def record(folder: str) -> RunRecord | None:
    try:
        return read_run_record(folder)
    except Exception:  # not written yet
        return None


def test_two_workers_on_redis_survive_a_kill_and_a_redis_restart(
    redis: Redis, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    env = {
        "EMBEDGEN_HOME": str(home),
        jobs.QUEUE_URL_ENV: f"redis://127.0.0.1:{redis.port}/0",
        "EMBEDGEN_LOST_AFTER_SECONDS": "3",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    workers: dict[str, subprocess.Popen[bytes]] = {}
    for name in ("w1", "w2"):
        with open(tmp_path / f"{name}.log", "wb") as out:
            workers[name] = subprocess.Popen(
                [sys.executable, "-m", "embedgen", "worker"],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
    try:
        data = prepare(
            read_table(write_csv(tmp_path / "d.csv", synthetic_rows(240))), "text", "label"
        )
        config = FinetuneConfig(strategy="full", epochs=60, patience=0, dim=8)
        runs = []
        for _ in range(3):
            folder = new_run_folder("reviews", "full", runs_dir())
            request = jobs.TrainRequest(str(tiny_model_dir), str(folder), config.as_dict())
            jobs.submit(request, data)
            runs.append(str(folder))

        def training() -> list[RunRecord]:
            found = [record(f) for f in runs]
            return [r for r in found if r is not None and r.status is RunStatus.RUNNING]

        wait_for("both workers to train a run", lambda: len(training()) == 2, WAIT)
        first = training()[0]
        wait_for(
            "the first run to keep an epoch",
            lambda: (r := record(first.folder)) is not None and r.best_epoch >= 1,
            WAIT,
        )
        victim = next(p for p in workers.values() if p.pid == first.pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)

        redis.stop()  # the third run waits in Redis, the second trains on
        time.sleep(2)
        redis.start()  # without its data: the third run's entry is gone

        def ended() -> bool:
            return all((r := record(f)) is not None and not r.status.active for f in runs)

        wait_for("every run to end", ended, 180)
        records = {f: read_run_record(f) for f in runs}
        killed = records.pop(first.folder)
        assert killed.status is RunStatus.INTERRUPTED, killed
        assert killed.has_trained_head and "kept" in killed.message, killed.message
        assert load_run(first.folder).best_epoch == killed.best_epoch
        for folder, rec in records.items():
            assert rec.status is RunStatus.FINISHED, (folder, rec.status, rec.message)
            assert len(rec.history) == config.epochs and load_run(folder).best is not None
    finally:
        for process in workers.values():
            process.terminate()
        for process in workers.values():
            process.wait(30)
