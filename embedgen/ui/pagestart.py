"""What every page does first: the session's defaults, then this visitor's kept work.

Above both :mod:`embedgen.ui.session` (the keys every module reads) and
:mod:`embedgen.ui.visit` (which reads the jobs, matrices and model that sit on the keys), so
that neither imports the other's dependents.
"""

from __future__ import annotations

from embedgen.ui import session, visit


def begin() -> None:
    """Set the session's defaults; take up the work kept for a new session (a reloaded tab),
    and keep what the last run of a running one changed (app.py keeps what this run changes,
    when the page ends)."""
    session.init_state()
    visit.restore()
    visit.remember()
