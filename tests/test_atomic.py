"""Atomic writes: files and folders get the modes the umask allows, and what killed writes left
behind is removed once it is old enough that no live write can own it."""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedgen.atomic import TEMP_PREFIX, atomic_folder, remove_leftovers, temp_folder, write_text

HOUR = 3600.0


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def age(path: Path, seconds: float) -> Path:
    """Set the modification time of ``path`` and of everything in it ``seconds`` back."""
    then = time.time() - seconds
    for p in [*path.rglob("*"), path] if path.is_dir() else [path]:
        os.utime(p, (then, then))
    return path


@pytest.mark.parametrize(
    ("mask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_written_files_and_folders_get_the_modes_the_umask_allows(
    tmp_path: Path, mask: int, file_mode: int, folder_mode: int
) -> None:
    with umask(mask):
        write_text(tmp_path / "vocab.txt", "好\n")
        with atomic_folder(tmp_path / "matrix") as staging:
            write_text(staging / "manifest.json", "{}\n")
    assert mode(tmp_path / "vocab.txt") == file_mode
    assert mode(tmp_path / "matrix") == folder_mode
    assert mode(tmp_path / "matrix" / "manifest.json") == file_mode


def test_a_rewritten_file_gets_the_umask_mode_not_its_old_one(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text("{}")
    path.chmod(0o600)
    with umask(0o022):
        write_text(path, "{}\n")
    assert mode(path) == 0o644


def test_leftovers_of_killed_writes_are_removed_once_stale(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "2025-01-01_reviews_head"
    matrices = run / "matrices"
    matrices.mkdir(parents=True)
    stale_staging = age(_leftover_folder(matrices, "contextual-L12-tuned.staging"), 2 * HOUR)
    stale_file = age(_leftover_file(run, "head.safetensors.tmp"), 2 * HOUR)
    live_staging = _leftover_folder(matrices, "projected-tuned.staging")  # another process's
    ours = [run / "run.json", run / ".hidden-by-the-user", matrices / "embedgen-tmp-like-name"]
    for p in ours:
        p.touch()
        age(p, 2 * HOUR)

    removed = remove_leftovers(tmp_path)

    assert sorted(removed) == sorted([stale_staging, stale_file])
    assert not stale_staging.exists() and not stale_file.exists()
    assert live_staging.exists(), "a staging folder written to within the hour may be live"
    assert all(p.exists() for p in ours), "only our own temporary names are removed"


def test_a_leftover_counts_as_live_while_anything_in_it_changes(tmp_path: Path) -> None:
    """A zip export writes one big file into its staging folder for minutes: the folder's own
    time stays old while the file in it grows."""
    staging = age(_leftover_folder(tmp_path, "bundle.zip.tmpdir"), 2 * HOUR)
    (staging / "vectors.word2vec.txt").touch()  # being written now
    os.utime(staging, (time.time() - 2 * HOUR,) * 2)
    assert remove_leftovers(tmp_path) == []
    assert staging.exists()


def test_leftovers_default_to_embedgen_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path))
    stale = age(_leftover_folder(tmp_path / "tmp", "download"), 2 * HOUR)
    assert remove_leftovers() == [stale]


def test_a_home_that_does_not_exist_has_no_leftovers(tmp_path: Path) -> None:
    assert remove_leftovers(tmp_path / "nowhere") == []


def test_temp_folder_is_removed_after_use_and_named_as_a_leftover(tmp_path: Path) -> None:
    with temp_folder(tmp_path, "download") as work:
        assert work.parent == tmp_path and work.name.startswith(TEMP_PREFIX)
        (work / "matrix.npy").write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []


def _leftover_folder(parent: Path, name: str) -> Path:
    folder = parent / f"{TEMP_PREFIX}{name}"
    folder.mkdir(parents=True)
    (folder / "matrix.npy").write_bytes(b"\0" * 16)
    return folder


def _leftover_file(parent: Path, name: str) -> Path:
    path = parent / f"{TEMP_PREFIX}{name}"
    path.write_bytes(b"\0" * 16)
    return path
