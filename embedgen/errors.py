"""Errors written for people: what went wrong, where, and what to do next.

Anything raised as an :class:`EmbedgenError` is shown to the user as it is (one
line in the CLI, ``st.error`` in the app). Any other exception is a bug.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


class EmbedgenError(Exception):
    """A problem the user can fix; the message says what, where and what to do."""


class ModelNotAvailable(EmbedgenError):
    """The model cannot be loaded (not cached, offline, not an encoder, remote code)."""


class BadTable(EmbedgenError):
    """A data file cannot be read or does not hold usable labelled text."""


class BadConfig(EmbedgenError):
    """A setting is out of range or does not fit the data or the model."""


class BadRun(EmbedgenError):
    """A run folder or matrix folder is missing, incomplete or from another version."""


class NotInVocabulary(EmbedgenError):
    """A token is not in the matrix vocabulary and cannot be pieced together from it."""


class Cancelled(EmbedgenError):
    """The user cancelled long work; nothing half-done was kept."""


class NotAllowed(EmbedgenError):
    """The operator of this server does not allow it, or what was asked for is not there."""


class NotKept(EmbedgenError):
    """What was made is bigger than the disk space the operator gives its kind; not saved."""


class AlreadySaved(EmbedgenError):
    """A matrix is saved where a build would save its own; nothing was built or replaced."""


class QueueUnreachable(EmbedgenError):
    """The job queue (Redis, or the SQLite file) cannot be reached; nothing was started."""


class DiskTrouble(EmbedgenError):
    """The disk refused a read or write: no space left, no permission, no such folder."""


def disk_trouble(exc: OSError, where: object = None) -> DiskTrouble:
    """``exc`` (an ``OSError`` from reading or writing files) as a :class:`DiskTrouble` whose
    message says which file and what to do; ``where`` names the file when ``exc`` does not.

    No space left names the disk's free space, since the write that failed may have been the
    last few bytes: "no space left on the disk holding /data/runs (3 MB free)".
    """
    path = exc.filename if exc.filename is not None else where
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        free = ""
        probe = Path(os.fspath(path)) if path is not None else None
        while probe is not None and not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe is not None:
            free = f" ({shutil.disk_usage(probe).free / 1e6:,.0f} MB free)"
        held = f" holding {probe}" if probe is not None else ""
        return DiskTrouble(
            f"no space left on the disk{held}{free}. Free some space (old runs and matrices "
            "can go) and start again."
        )
    what = f"'{os.fspath(path)}'" if path is not None else "a file"
    reasons = {
        errno.EACCES: f"{what} cannot be written or read here: permission denied",
        errno.EPERM: f"{what} cannot be written or read here: operation not permitted",
        errno.EROFS: f"{what} is on a read-only disk",
        errno.ENOENT: f"{what} is not there (or a folder above it is missing)",
        errno.EEXIST: f"{what} already exists",
        errno.ENOTDIR: f"{what}: a part of the path is a file, not a folder",
        errno.EISDIR: f"{what} is a folder, not a file",
    }
    reason = reasons.get(exc.errno, f"{what}: {exc.strerror or exc}")
    return DiskTrouble(f"{reason}. Choose another place or fix it, and try again.")
