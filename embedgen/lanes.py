"""Reading on the CPU in lanes: several batches side by side, one thread each.

An encoder's matrix products on short texts are too small for several threads to share one
of them well: on two cores, two threads read multilingual-e5-small features only ~1.4x as
fast as one. Two batches at once, each in a thread of its own with one torch thread, keep
both cores busy: 1.1x (fp32) to 1.3x (int8) the two-thread speed of one batch at a time
(BENCHMARKS.md, "CPU encoding"). Every batch is computed as it would be alone, so the result
does not depend on the lanes (up to float rounding).

The lane count is torch's thread count (one per core by default), at most :data:`MAX_LANES`;
``EMBEDGEN_CPU_LANES`` overrides it (``1``: one batch at a time with all threads, as before).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")

LANES_ENV = "EMBEDGEN_CPU_LANES"
MAX_LANES = 16


def cpu_lanes() -> int:
    """How many batches to read side by side on the CPU (1: one at a time)."""
    raw = os.environ.get(LANES_ENV, "").strip()
    if raw:
        try:
            return max(1, min(int(raw), MAX_LANES))
        except ValueError:
            log.warning("%s=%r is not a whole number; using one lane per thread", LANES_ENV, raw)
    return max(1, min(torch.get_num_threads(), MAX_LANES))


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch runs in one thread for the block (this process's setting), then as before."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _lane_start() -> None:
    torch.set_num_threads(1)


def run_in_lanes(
    batches: Iterable[T],
    work: Callable[[T], None],
    done: Callable[[T], None],
    lanes: int,
    check: Callable[[], None] = lambda: None,
) -> None:
    """``work(batch)`` for every batch, ``lanes`` at a time, each in a thread with one torch
    thread and gradients off; ``done(batch)`` in the calling thread as each one ends, in order.

    ``check()`` runs before each batch is handed out; when it raises (a cancel), no new batch
    starts, the ones under way finish, and the exception goes on. So does the first exception
    of ``work``.
    """
    if lanes <= 1:
        for batch in batches:
            check()
            with torch.no_grad():
                work(batch)
            done(batch)
        return

    def lane(batch: T) -> None:
        with torch.no_grad():  # grad mode is per thread: the caller's no_grad does not reach here
            work(batch)

    in_flight: deque[tuple[T, Future[None]]] = deque()
    with (
        one_torch_thread(),
        ThreadPoolExecutor(
            lanes, thread_name_prefix="embedgen-lane", initializer=_lane_start
        ) as pool,
    ):
        try:
            for batch in batches:
                check()
                in_flight.append((batch, pool.submit(lane, batch)))
                if len(in_flight) >= 2 * lanes:  # a few queued, so a cancel is not kept waiting
                    first, future = in_flight.popleft()
                    future.result()
                    done(first)
            while in_flight:
                first, future = in_flight.popleft()
                future.result()
                done(first)
        except BaseException:
            for _, future in in_flight:
                future.cancel()
            raise
