"""Whether a process lives: a file it touches every few seconds, and its process id.

A training run beats in its run folder (``embedgen.runs``), a queue worker in the queue folder
(``embedgen.jobs``). A heartbeat older than its stale limit means the process is gone (killed,
its host down, the machine asleep). A process id alone proves nothing across hosts and ids are
reused, so it only rules a process out: a gone id on this host is a dead process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def age(path: Path) -> float | None:
    """Seconds since ``path`` was last touched; None when it is not there."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return None


def fresh(path: Path, stale_seconds: float) -> bool:
    """Whether ``path`` was touched within the last ``stale_seconds``."""
    seconds = age(path)
    return seconds is not None and seconds <= stale_seconds


@contextlib.contextmanager
def beating(
    path: Path,
    every: float,
    *,
    create: bool = False,
    on_beat: Callable[[], bool] | None = None,
    name: str | None = None,
) -> Iterator[Path]:
    """Touch ``path`` every ``every`` seconds from a daemon thread while the block runs; remove
    it when the block ends. ``create``: touch it once at the start (else its owner made it).
    ``on_beat`` runs after each beat; when it returns False the beating stops early. The
    thread is named ``embedgen-heartbeat-<name>`` (default: the file's name)."""
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                path.touch()
            except OSError as exc:  # the folder was moved or deleted under the process
                log.debug("No heartbeat at %s: %s", path, exc)
            if on_beat is not None and not on_beat():
                return

    thread = threading.Thread(
        target=beat, name=f"embedgen-heartbeat-{name or path.name}", daemon=True
    )
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()
        path.unlink(missing_ok=True)
