"""The matrix cache: matrices built from a plain model can be built again, so they share the
operator's disk budget (``matrix_cache_mb``), least recently used removed first.

A cached matrix's folder holds ``cache.json``; its time is the matrix's last use (saved, or
opened). Removal happens only when a matrix is saved, never of one this process reads or
writes (:func:`using`).
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from embedgen.atomic import TEMP_PREFIX
from embedgen.budget import MIB, Entry, evict, folder_size, human_size
from embedgen.paths import embedgen_home
from embedgen.settings import operator_settings

CACHE_FILE = "cache.json"  # in a rebuildable matrix's folder; its time is the matrix's last use


def matrix_name_of(folder: str | os.PathLike[str]) -> str:
    """What messages call the matrix in ``folder``: its folder's name, never the server path."""
    return Path(os.path.abspath(folder)).name or "matrix"


CACHE_NOTE = {
    "rebuildable": True,
    "note": "Built from a plain model, so it can be built again: embedgen removes it, least "
    "recently used first (this file's time), when the matrices built from models outgrow the "
    "operator's matrix_cache_mb. Delete this file to keep the matrix for good.",
}


def not_kept(folder: Path, size: int, budget: int) -> str:
    name = matrix_name_of(folder)
    if budget <= 0:
        return (
            f"The matrix '{name}' is not saved: the operator of this server keeps no matrices "
            "built from a model (matrix_cache_mb is 0)."
        )
    return (
        f"The matrix '{name}' takes {human_size(size)}, more than the {budget / MIB:,.4g} MiB "
        "the operator of this server gives to matrices built from a model (matrix_cache_mb), "
        "so it is not saved."
    )


def matrix_budget_bytes() -> int:
    """The matrix cache's size limit in bytes: the operator's ``matrix_cache_mb``."""
    return int(operator_settings().matrix_cache_mb * MIB)


class MatrixCache:
    """Matrices built from a plain model, in the ``matrices/`` folders under ``root`` (default
    ``$EMBEDGEN_HOME``), at most ``budget`` bytes in all (default :func:`matrix_budget_bytes`;
    0 keeps none).

    Its entries are the folders ``<matrices>/<model>/<name>`` that hold ``cache.json``, written
    by ``save_matrix(..., rebuildable=True)``, where ``<matrices>`` is ``root/matrices`` or a
    workspace's, two levels down (``root/users/<user>/matrices``): one budget for the disk they
    share. The file's time is the matrix's last use (saved, or loaded by :func:`load_matrix`).
    A matrix saved there any other way is not the cache's: never counted, never removed.
    Entries are removed only when one is saved, never the one saved nor one being read or
    written in this process (:func:`using`).
    """

    PLACES = ("matrices/*/*", "*/*/matrices/*/*")  # <matrices>/<model>/<name>, under root

    def __init__(self, root: str | os.PathLike[str] | None = None, budget: int | None = None):
        self.root = Path(root) if root is not None else embedgen_home()
        self.budget = matrix_budget_bytes() if budget is None else budget

    def holds(self, folder: str | os.PathLike[str]) -> bool:
        """Whether ``folder`` is a place for one of the cache's matrices."""
        path, root = Path(folder).resolve(), self.root.resolve()
        if not path.is_relative_to(root):
            return False
        inside = path.relative_to(root)
        return any(  # match() anchors at the right; the same length anchors the left too
            len(inside.parts) == len(Path(place).parts) and inside.match(place)
            for place in self.PLACES
        )

    def entries(self) -> list[Entry]:
        """The cached matrices (folder, size, last use), in no particular order."""
        found = []
        for place in self.PLACES:
            for mark in self.root.glob(f"{place}/{CACHE_FILE}"):
                folder = mark.parent
                if folder.name.startswith(TEMP_PREFIX):  # a save or a removal under way
                    continue
                try:
                    used = mark.stat().st_mtime
                except OSError:  # removed meanwhile
                    continue
                found.append(Entry(folder.resolve(), (folder,), folder_size(folder), used))
        return found

    def make_room(self, keep: str | os.PathLike[str]) -> list[Entry]:
        """Remove the least recently used matrices (never ``keep``, never one in use in this
        process) until the cache fits its budget; return those removed."""
        with _IN_USE_LOCK:
            busy = {Path(keep).resolve(), *_IN_USE}
            return evict(
                self.entries(),
                self.budget,
                busy,
                what=("cached matrix", "cached matrices"),
                setting="matrix_cache_mb",
            )


# Folders being read or written in this process: the cache leaves them alone.
_IN_USE: collections.Counter[Path] = collections.Counter()
_IN_USE_LOCK = threading.Lock()


@contextlib.contextmanager
def using(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Within the block, the matrix cache of this process does not remove ``folder``."""
    key = Path(folder).resolve()
    with _IN_USE_LOCK:
        _IN_USE[key] += 1
    try:
        yield
    finally:
        with _IN_USE_LOCK:
            _IN_USE[key] -= 1
            if not _IN_USE[key]:
                del _IN_USE[key]
