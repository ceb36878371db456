"""Errors written for people: what went wrong, where, and what to do next.

Anything raised as an :class:`EmbedgenError` is shown to the user as it is (one
line in the CLI, ``st.error`` in the app). Any other exception is a bug.
"""

from __future__ import annotations


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
