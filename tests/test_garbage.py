"""The server's garbage collection now and then (embedgen.ui.garbage)."""

from __future__ import annotations

import gc
import weakref

import numpy as np

from embedgen.ui import garbage


class Holder:
    """Stands for a page run's globals: a dict that holds a function holding the dict."""

    def __init__(self) -> None:
        self.matrix = np.zeros((1000, 100), dtype=np.float32)
        self.me = self  # the cycle: only the cyclic collector frees it


def test_a_cycle_holding_a_matrix_is_freed_and_at_most_once_per_interval() -> None:
    enabled = gc.isenabled()
    gc.disable()  # Python's own collector must not free it first
    try:
        left = weakref.ref(Holder())
        assert left() is not None, "a cycle outlives its last outside reference"
        assert garbage.collect_now_and_then(every=0.0)
        assert left() is None, "the collection freed the cycle and its matrix"
        again = weakref.ref(Holder())
        assert not garbage.collect_now_and_then(every=3600.0), "not twice within the interval"
        assert again() is not None
    finally:
        if enabled:
            gc.enable()
