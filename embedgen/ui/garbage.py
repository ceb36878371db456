"""Garbage collection for the server, now and then instead of after every script run.

Every page run leaves reference cycles behind: the page's globals hold its functions, whose
``__globals__`` is that same dict, so a run's dict lives until Python's cyclic collector runs,
and with it every object the page held in a global (a matrix, its neighbour index: 50 MiB
for multilingual-e5-small's CJK rows). With a model loaded the heap holds millions of
long-lived objects, so Python's own full collections come rarely (a full one waits until a
quarter as many new objects have piled up), and the server grew about 50 MiB per round of
train, matrix and neighbours (``bench/soak.py``). Streamlit's collection after every run
(``runner.postScriptGC``, off in ``.streamlit/config.toml``) cost 0.4 s each, twice a second
while a panel polled. :func:`collect_now_and_then` does the same work at most every
:data:`EVERY_SECONDS`.
"""

from __future__ import annotations

import gc
import threading
import time

EVERY_SECONDS = 15.0

_lock = threading.Lock()
_last = time.monotonic()


def collect_now_and_then(every: float = EVERY_SECONDS) -> bool:
    """Run a full collection when the last was at least ``every`` seconds ago (any session's);
    whether it ran."""
    global _last
    with _lock:
        if time.monotonic() - _last < every:
            return False
        _last = time.monotonic()
    gc.collect()
    return True
