"""Progress and cancel: the two parameters every long function takes.

``progress(done, total)`` is called as work advances (the CLI passes a tqdm bar, the app a job,
tests a list appender); ``cancel`` is a ``threading.Event`` checked before each unit of work.

Work that goes through stages (reading, encoding N texts, epoch k of n; PCA, neighbour graph,
layout) names each with :func:`stage` before its first ``progress`` call. A sink that has a
``set_stage(name, unit)`` method shows it (the app's job, the CLI's bar); a plain function
ignores it, so every existing caller keeps working.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from embedgen.errors import Cancelled

ProgressFn = Callable[[int, int], None]


def stage(progress: ProgressFn | None, name: str, unit: str = "") -> None:
    """Tell ``progress`` that a stage called ``name`` starts, counting ``unit`` (e.g. "rows").

    Counts reported after this belong to the new stage (its own done/total), so a sink can
    show a rate and an ETA per stage.
    """
    setter = getattr(progress, "set_stage", None)
    if setter is not None:
        setter(name, unit)


def check_cancel(cancel: threading.Event | None, what: str) -> None:
    """Raise :class:`Cancelled` ("<what> was cancelled.") once ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} was cancelled.")
