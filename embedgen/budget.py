"""Disk budgets for what embedgen can rebuild: when one is full, the least recently used goes.

Two caches use this (``embedgen.features.FeatureCache`` keeps its own copy of the same rule):
matrices built from a plain model (``embedgen.matrix.MatrixCache``) and maps
(``embedgen.projection.MapCache``). Each entry records when it was last used in the time of a
file of its own, touched whenever the entry is loaded or saved; an entry is removed only when
something new is saved, so nothing is removed from under work going on in this process.

Another process may still hold an old view: it can remove an entry this one is about to read.
Removing renames a folder away first (a hidden name that start-up cleaning also knows), so a
reader sees the whole entry or none of it, and the reader's "not there, rebuild it" is the
outcome, never a half-read matrix.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from embedgen.atomic import TEMP_PREFIX

log = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One thing a cache holds: the files or folder that go together, their size, last use."""

    key: Path  # the folder, or the main file of a pair
    paths: tuple[Path, ...]  # everything removed with it
    size: int
    used: float  # seconds since the epoch; 0 for an entry with no time of use (broken)


def least_recently_used(
    entries: Sequence[Entry], budget: int, keep: Collection[Path] = ()
) -> list[Entry]:
    """The entries to remove, least recently used first, so the rest fit in ``budget`` bytes;
    never one whose key is in ``keep``."""
    total = sum(e.size for e in entries)
    chosen = []
    for entry in sorted(entries, key=lambda e: e.used):
        if total <= budget:
            break
        if entry.key in keep:
            continue
        chosen.append(entry)
        total -= entry.size
    return chosen


def evict(
    entries: Sequence[Entry],
    budget: int,
    keep: Collection[Path],
    *,
    what: tuple[str, str],
    setting: str,
) -> list[Entry]:
    """Remove the least recently used ``entries`` (never those in ``keep``) until the rest fit
    in ``budget`` bytes; log what went ("Removed 3 cached matrices (1.2 GiB), least recently
    used, to stay under 4,096 MiB (matrix_cache_mb)"). ``what`` names one entry and several."""
    chosen = least_recently_used(entries, budget, keep)
    removed = [e for e in chosen if remove(e)]
    if removed:
        log.info(
            "Removed %d %s (%s), least recently used, to stay under %s MiB (%s)",
            len(removed),
            what[len(removed) > 1],
            human_size(sum(e.size for e in removed)),
            f"{budget / MIB:,.4g}",
            setting,
        )
        log.debug("Removed: %s", ", ".join(e.key.name for e in removed))
    return removed


def remove(entry: Entry) -> bool:
    """Delete ``entry``'s files and folders; False when another process removed it first.

    A folder is renamed to a hidden temporary name before it is deleted, so that a reader never
    finds it half gone.
    """
    gone = False
    for path in entry.paths:
        try:
            if path.is_dir() and not path.is_symlink():
                away = path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}.evicted")
                os.replace(path, away)
                shutil.rmtree(away, ignore_errors=True)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:  # not ours to remove (permissions): leave it, say so
            log.warning("Could not remove %s from the cache (%s)", path, exc)
            continue
        gone = True
    return gone


def folder_size(folder: Path) -> int:
    """The total size of the files in ``folder`` and beneath it (links not followed)."""
    size = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            try:
                size += Path(parent, name).lstat().st_size
            except OSError:  # removed meanwhile
                continue
    return size


def touch(path: Path) -> None:
    """Record that the entry ``path`` stands for was used now (a read-only cache stays as is)."""
    try:
        os.utime(path)
    except OSError as exc:
        log.debug("Could not touch %s (%s)", path, exc)


def human_size(n: float) -> str:
    """1536 -> "1.5 KiB"; 1288490189 -> "1.2 GiB"."""
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
