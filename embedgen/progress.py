"""Progress and cancel: the two parameters every long function takes.

``progress(done, total)`` is called as work advances (the CLI passes a tqdm bar, the app a job,
tests a list appender); ``cancel`` is a ``threading.Event`` checked before each unit of work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from embedgen.errors import Cancelled

ProgressFn = Callable[[int, int], None]


def check_cancel(cancel: threading.Event | None, what: str) -> None:
    """Raise :class:`Cancelled` ("<what> was cancelled.") once ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} was cancelled.")
