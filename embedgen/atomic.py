"""Atomic file writes: a temporary file in the same folder, then a rename.

An interrupted write never leaves a half-written file under the final name, nor a folder whose
files come from two writes (:func:`atomic_folder`). Also the checksum that written files are
recorded and checked by.

Every temporary name starts with :data:`TEMP_PREFIX`, so that what a killed write leaves
behind is known for ours and removed (:func:`remove_leftovers`, run when the app or the
command starts). Temporary files and folders are created the way ``open`` and ``mkdir``
create them, so the final names get the modes the umask allows (0644 and 0755 under umask
022): ``tempfile.mkstemp`` would make every file 0600 whatever the umask said.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from embedgen.paths import embedgen_home

log = logging.getLogger(__name__)

TEMP_PREFIX = ".embedgen-tmp-"
# A temporary file or folder in which nothing changed for this long belongs to no live write:
# the slowest (a zip export at vocabulary scale) writes into its folder every few seconds.
LEFTOVER_AGE_SECONDS = 3600.0


def _new_temp(parent: Path, name: str, kind: str, *, folder: bool) -> Path:
    """Create a new, empty temporary file or folder in ``parent`` named for ``name``."""
    for _ in range(100):
        path = parent / f"{TEMP_PREFIX}{name}.{secrets.token_hex(4)}.{kind}"
        try:
            if folder:
                path.mkdir(mode=0o777)  # less the umask, as any mkdir
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{parent} holds too many temporary names for {name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(final.parent, final.name, "tmp", folder=False)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; when the block succeeds it becomes
    ``path``, replacing what was there.

    A kill while the files are written leaves the old folder whole (and a hidden staging
    folder, removed once stale by :func:`remove_leftovers`); the swap itself is two renames.
    Without this, a kill during a rebuild left matrix.npy from the new build beside the old
    manifest.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(final.parent.glob(f"{glob.escape(TEMP_PREFIX + final.name)}.*"))
    staging = _new_temp(final.parent, final.name, "staging", folder=True)
    try:
        yield staging
        if final.exists():
            old = _new_temp(final.parent, final.name, "old", folder=True)
            os.replace(final, old / "folder")
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def temp_folder(parent: str | os.PathLike[str], name: str) -> Iterator[Path]:
    """Yield a new, empty scratch folder in ``parent`` for work called ``name``; remove it after.

    A kill leaves it behind under a name :func:`remove_leftovers` knows.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    folder = _new_temp(parent, name, "work", folder=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_leftovers(
    root: str | os.PathLike[str] | None = None, *, older_than: float = LEFTOVER_AGE_SECONDS
) -> list[Path]:
    """Remove what killed writes left under ``root`` (default ``$EMBEDGEN_HOME``); return it.

    Only temporary files and folders of ours (named with :data:`TEMP_PREFIX`) in which nothing
    changed for ``older_than`` seconds go: a younger one may belong to a write still under way
    in another process. Links are not followed.
    """
    root = Path(root) if root is not None else embedgen_home()
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        found += [Path(folder, n) for n in (*dirs, *files) if n.startswith(TEMP_PREFIX)]
        dirs[:] = [d for d in dirs if not d.startswith(TEMP_PREFIX)]
    removed = _remove_stale(found, older_than=older_than)
    if removed:
        log.info(
            "Removed %d leftovers of interrupted writes under %s (%s bytes)",
            len(removed),
            root,
            f"{sum(size for _, size in removed):,}",
        )
    return [path for path, _ in removed]


def _remove_stale(
    paths: Iterable[Path], *, older_than: float = LEFTOVER_AGE_SECONDS
) -> list[tuple[Path, int]]:
    """Remove those of ``paths`` in which nothing changed for ``older_than`` seconds; return
    them with their sizes."""
    cutoff = time.time() - older_than
    removed = []
    for path in paths:
        try:
            changed, size = _last_change(path)
            if changed >= cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:  # gone meanwhile, or not ours to remove: leave it
            log.debug("Kept %s: %s", path, exc)
            continue
        removed.append((path, size))
    return removed


def _last_change(path: Path) -> tuple[float, int]:
    """The newest modification time of ``path`` and everything in it, and their total size."""
    info = path.lstat()
    newest, size = info.st_mtime, info.st_size
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                info = Path(folder, name).lstat()
                newest, size = max(newest, info.st_mtime), size + info.st_size
    return newest, size


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` as UTF-8 (no BOM, ``\\n`` line ends) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def json_text(obj: Any) -> str:
    """``obj`` as the pretty JSON embedgen writes (CJK kept readable), ending in a newline."""
    return json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n"


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as pretty UTF-8 JSON (:func:`json_text`) to ``path`` atomically."""
    write_text(path, json_text(obj))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of the file at ``path``, read in blocks (files may be gigabytes)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
