"""The library: every run and saved matrix in a workspace, newest first, and the two things a
visitor may do to one besides opening it: give it a name of their own, or delete it.

A run is its folder under ``runs/`` (its matrices in its ``matrices/``); a matrix of a plain
model lives under ``matrices/<model>/`` (:mod:`embedgen.paths`). Nothing here trusts a
folder it is handed: :func:`rename` and :func:`delete` act only on a run or a matrix folder
inside the workspace they are given (``embedgen.visits.within``), never through a link, and
never on a run still queued or training.

A name given here is kept in the folder's ``title.txt``: folder names stay as they are, since
matrices, job records and visits refer to folders by path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from embedgen.atomic import write_text
from embedgen.budget import folder_size
from embedgen.errors import BadConfig, EmbedgenError
from embedgen.matrix import CACHE_FILE, MANIFEST_FILE, MATRIX_FILE, VOCAB_FILE, saved_matrix
from embedgen.paths import matrices_dir, runs_dir, workspace
from embedgen.runs import RunRecord, is_run_folder, list_runs
from embedgen.visits import within

MATRICES_DIR = "matrices"  # a run's matrices: RUN/matrices/<name>/
TITLE_FILE = "title.txt"
TITLE_CHARS = 80


@dataclass(frozen=True)
class Item:
    """One run or matrix as the library lists it."""

    kind: str  # "run" or "matrix"
    folder: str
    title: str  # the name given (title.txt), else the folder's name
    model: str  # the last part of the model id: "m3e-small"
    data: str  # the labelled data's file name (a run's, or the run's a matrix was built from)
    what: str  # a run: its strategy and best F1; a matrix: what it is (method, rows, layer)
    size: int  # bytes on disk
    created: str  # ISO time
    status: str  # a run's status; a matrix: "saved", or "in the cache" (may be removed)
    run: str | None = None  # a matrix's run folder
    owner: str | None = None  # a run's owner tag (runs.owner_tag of the secret that made it)

    @property
    def when(self) -> str:
        """``created`` to the minute, for a table."""
        return self.created[:16].replace("T", " ")


def _model(model: dict[str, Any]) -> str:
    return str(model.get("model_id") or "?").rstrip("/").rsplit("/", 1)[-1]


def title_of(folder: str | os.PathLike[str]) -> str | None:
    """The name given to ``folder`` (:func:`rename`), or None."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return (Path(folder) / TITLE_FILE).read_text("utf-8").strip() or None
    return None


def _run_item(record: RunRecord) -> Item:
    f1 = record.best_f1
    strategy = str(record.config.get("strategy", "?"))
    return Item(
        kind="run",
        folder=record.folder,
        title=title_of(record.folder) or record.name,
        model=_model(record.model),
        data=str(record.dataset.get("source") or "?"),
        what=f"{strategy} · {len(record.history)} epochs"
        + ("" if f1 is None else f" · best F1 {f1:.3f}"),
        size=_size(Path(record.folder), skip="matrices"),
        created=record.when,
        status=str(record.status),
        owner=record.owner,
    )


def _matrix_what(manifest: dict[str, Any]) -> str:
    """ "contextual · 7,136 tokens × 516 · L4 · tuned"."""
    rows, layer = manifest.get("rows"), manifest.get("layer")
    parts = [str(manifest.get("method", "?"))]
    if isinstance(rows, int):
        parts.append(f"{rows:,} {manifest.get('rows_are', 'rows')} × {manifest.get('dims', '?')}")
    if layer is not None:
        parts.append(f"L{layer}")
    parts.append("tuned" if manifest.get("reflects_tuning") else "untuned")
    return " · ".join(parts)


def _matrix_item(folder: Path, run: RunRecord | None) -> Item | None:
    manifest = saved_matrix(folder)
    if not manifest:  # none there, or unreadable: not the library's to show
        return None
    corpus = manifest.get("corpus")
    data = run.dataset.get("source") if run is not None else None
    if data is None and isinstance(corpus, dict):
        data = corpus.get("source")
    return Item(
        kind="matrix",
        folder=str(folder),
        title=title_of(folder) or folder.name,
        model=_model(manifest.get("model") or {}),
        data=str(data or "-"),
        what=_matrix_what(manifest),
        size=_size(folder),
        created=str(manifest.get("created") or ""),
        status="in the cache" if (folder / CACHE_FILE).is_file() else "saved",
        run=run.folder if run is not None else None,
        owner=run.owner if run is not None else None,
    )


def _size(folder: Path, skip: str | None = None) -> int:
    try:
        return sum(
            folder_size(p) if p.is_dir() else p.stat().st_size
            for p in folder.iterdir()
            if p.name != skip and not p.is_symlink()
        )
    except OSError:
        return 0


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def _created(folder: Path) -> float:
    """When the matrix in ``folder`` was built: its manifest's "created", else the manifest
    file's time (a matrix saved by an older version)."""
    try:
        created = json.loads((folder / MANIFEST_FILE).read_text("utf-8")).get("created")
        return datetime.fromisoformat(str(created)).timestamp()
    except (OSError, ValueError, TypeError, AttributeError):
        try:
            return (folder / MANIFEST_FILE).stat().st_mtime
        except OSError:
            return 0.0


def saved_matrices(run_folder: str | Path) -> dict[str, float]:
    """The complete matrices saved in a run's ``matrices/`` (name -> when built, as a
    timestamp), newest first; a half-written or hidden folder is not one."""
    root = Path(run_folder) / MATRICES_DIR
    if not root.is_dir():
        return {}
    found = {
        f.name: _created(f)
        for f in root.iterdir()
        if f.is_dir()
        and not f.name.startswith(".")
        and all((f / n).is_file() for n in (MATRIX_FILE, VOCAB_FILE, MANIFEST_FILE))
    }
    return dict(sorted(found.items(), key=lambda item: (item[1], item[0]), reverse=True))


def list_items(user: str | None = None) -> list[Item]:
    """Every run in ``user``'s workspace with its matrices, and every matrix of a plain model
    kept there, newest first."""
    items: list[Item] = []
    for record in list_runs(runs_dir(user)):
        items.append(_run_item(record))
        for folder in _subfolders(Path(record.folder) / MATRICES_DIR):
            items += [i for i in [_matrix_item(folder, record)] if i is not None]
    for model in _subfolders(matrices_dir(user)):
        for folder in _subfolders(model):
            items += [i for i in [_matrix_item(folder, None)] if i is not None]
    return sorted(items, key=lambda i: i.created, reverse=True)


def _checked(folder: str | os.PathLike[str], user: str | None) -> Path:
    """``folder`` when it is a run or a matrix folder in ``user``'s workspace, reached
    without a link; :class:`BadConfig` otherwise."""
    path = Path(folder)
    name = path.name or str(folder)
    if path.is_symlink() or not within(path, user):
        raise BadConfig(f"'{name}' is not in your workspace: nothing was changed.")
    if not (is_run_folder(path) or (path / MANIFEST_FILE).is_file()):
        raise BadConfig(f"'{name}' is not a run or a saved matrix: nothing was changed.")
    return path.resolve()


def rename(folder: str | os.PathLike[str], title: str, user: str | None = None) -> str:
    """Give the run or matrix in ``folder`` the name ``title`` (one line, at most
    :data:`TITLE_CHARS` characters); an empty title gives back its folder's name. Returns the
    name it now shows."""
    path = _checked(folder, user)
    title = " ".join(title.split())
    if len(title) > TITLE_CHARS:
        raise BadConfig(
            f"A name of {len(title)} characters is too long: give one of at most {TITLE_CHARS}."
        )
    if not title:
        (path / TITLE_FILE).unlink(missing_ok=True)
        return path.name
    write_text(path / TITLE_FILE, title + "\n")
    return title


def delete(folder: str | os.PathLike[str], user: str | None = None) -> int:
    """Remove the run (with its matrices) or the matrix in ``folder``; the bytes freed. A run
    still queued or training is refused: cancel it first."""
    from embedgen.runs import read_run_record

    path = _checked(folder, user)
    if is_run_folder(path) and read_run_record(path).status.active:
        raise BadConfig(
            f"The run '{title_of(path) or path.name}' is still queued or training: cancel it "
            "first, then delete it."
        )
    if path == workspace(user).resolve():
        raise EmbedgenError("The workspace itself cannot be deleted.")
    size = folder_size(path)
    shutil.rmtree(path)
    return size
