"""A visitor's current work, kept on the server so that a reloaded tab takes it up again.

What the app's pages hold in a session (the model loaded, the labelled data, the run, the
matrices built and the jobs under way) is gone when the browser reloads the page. A
:class:`Visit` is the part of it worth keeping, written as ``visit.json`` in a folder of its
own: the user's workspace when the operator turns workspaces on, else
``$EMBEDGEN_HOME/visits/<sha256 of a secret>`` where the secret is made by the server and
carried in the tab's address. Nothing a visitor sends names the folder: an address's value
only finds a visit whose secret it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from embedgen.atomic import write_bytes, write_json
from embedgen.paths import embedgen_home, workspace

log = logging.getLogger(__name__)

VISIT_FILE = "visit.json"
UPLOAD_FILE = "upload.bin"  # the uploaded table's bytes; its own name stays in the record
_SECRET = re.compile(r"[A-Za-z0-9_-]{16,64}")
KEPT_DAYS = 30  # visits not touched for longer are removed when the app starts


@dataclass
class Visit:
    """What a tab holds that a reload must not lose; every field JSON as written.

    ``model``: [spec, trust_remote_code]. ``data``: how the table was read and its columns
    (``source`` "sample" or "upload", ``name``, ``sha256``, ``header``, ``sheet``,
    ``text_col``, ``label_col``, ``val_fraction``). ``run``: the run folder in use.
    ``training``: the run folder queued or training. ``run_secrets``: run folder -> the secret
    this visit holds for it. ``matrices``: name -> {folder, dtype, key}, in the order built.
    ``jobs``: slot -> {folder, tag} of the matrix, map and trade-off jobs. ``current``: the
    name of the matrix Explore and Export work on. ``benchmarks``: kind -> [{name, sha256}]
    of the Evaluate page's files, whose bytes are kept beside (:func:`keep_benchmark`).
    """

    model: list[Any] | None = None
    data: dict[str, Any] | None = None
    run: str | None = None
    training: str | None = None
    run_secrets: dict[str, str] = field(default_factory=dict)
    matrices: dict[str, dict[str, str]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    current: str | None = None
    benchmarks: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self == Visit()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> Visit:
        """The visit in ``raw``; fields of the wrong kind are left at their defaults (a record
        from another version, or a damaged one, restores what it can)."""
        if not isinstance(raw, dict):
            return cls()
        kinds = {"model": list, "data": dict, "run": str, "training": str, "current": str}
        kept: dict[str, Any] = {}
        for f in fields(cls):
            value = raw.get(f.name)
            if isinstance(value, kinds.get(f.name, dict)):
                kept[f.name] = value
        return cls(**kept)


def new_secret() -> str:
    """A secret for a new visit, made on the server."""
    return secrets.token_urlsafe(18)


def well_formed(secret: str | None) -> bool:
    return bool(secret) and _SECRET.fullmatch(secret or "") is not None


def visits_dir() -> Path:
    """Where visits without workspaces are kept: ``$EMBEDGEN_HOME/visits``."""
    return embedgen_home() / "visits"


def visit_folder(user: str | None, secret: str | None) -> Path | None:
    """The folder of ``user``'s visit (workspaces on), else of the visit ``secret`` opens;
    None for a secret that is not well formed. The folder's name is the secret's hash, so
    the address never names a path and the disk never holds the secret."""
    if user is not None:
        return workspace(user) / "visit"
    if not well_formed(secret):
        return None
    return visits_dir() / hashlib.sha256(str(secret).encode()).hexdigest()[:40]


def read_visit(folder: Path) -> Visit:
    """The visit kept in ``folder``; an empty one when there is none or it cannot be read."""
    try:
        raw = json.loads((folder / VISIT_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Visit()
    except (OSError, ValueError) as exc:
        log.warning("Visit in %s not read (%s); starting afresh.", folder, exc)
        return Visit()
    return Visit.from_dict(raw)


def write_visit(folder: Path, visit: Visit) -> None:
    """Keep ``visit`` in ``folder`` (atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / VISIT_FILE, visit.as_dict())


def keep_upload(folder: Path, raw: bytes) -> None:
    """Keep an uploaded table's bytes with the visit (its name goes in the record, never in a
    path)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes(folder / UPLOAD_FILE, raw)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def keep_benchmark(folder: Path, raw: bytes) -> str:
    """Keep a benchmark file's bytes with the visit, named by their SHA-256 (never by the
    name it was uploaded under); its SHA-256."""
    sha = hashlib.sha256(raw).hexdigest()
    path = folder / f"benchmark-{sha}.txt"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes(path, raw)
    return sha


def kept_benchmark(folder: Path, sha256: str) -> bytes | None:
    """The bytes kept by :func:`keep_benchmark` under ``sha256``; None when there are none
    (or the record names something that is no SHA-256)."""
    if not _SHA256.fullmatch(str(sha256)):
        return None
    try:
        raw = (folder / f"benchmark-{sha256}.txt").read_bytes()
    except OSError:
        return None
    return raw if hashlib.sha256(raw).hexdigest() == sha256 else None


def kept_upload(folder: Path) -> bytes | None:
    try:
        return (folder / UPLOAD_FILE).read_bytes()
    except OSError:
        return None


def within(path: str | os.PathLike[str], user: str | None) -> bool:
    """Whether ``path`` lies in ``user``'s workspace (the shared home without workspaces): the
    only places a restored visit may take folders from."""
    try:
        return Path(path).resolve().is_relative_to(workspace(user).resolve())
    except (OSError, ValueError):
        return False


def remove_old_visits(days: float = KEPT_DAYS, now: float | None = None) -> int:
    """Remove the visits (workspaces off) not written for ``days``; how many went."""
    root, now, gone = visits_dir(), now or time.time(), 0
    try:
        folders = list(root.iterdir())
    except OSError:
        return 0
    for folder in folders:
        try:
            if now - (folder / VISIT_FILE).stat().st_mtime > days * 86400:
                shutil.rmtree(folder, ignore_errors=True)
                gone += 1
        except OSError:
            continue
    return gone
