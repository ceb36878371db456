"""Where embedgen keeps things: ``$EMBEDGEN_HOME`` and the folders under it, and the HF cache.

Every folder is read from the environment when it is asked for, so a test or an operator can
point ``EMBEDGEN_HOME`` elsewhere without restarting anything.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol


def embedgen_home() -> Path:
    """``$EMBEDGEN_HOME`` or ``~/.embedgen``."""
    return Path(os.environ.get("EMBEDGEN_HOME", Path.home() / ".embedgen")).expanduser()


def users_dir() -> Path:
    """Where the app keeps its users' workspaces: ``$EMBEDGEN_HOME/users``."""
    return embedgen_home() / "users"


def workspace(user: str | None = None) -> Path:
    """The folder holding ``user``'s ``runs/`` and ``matrices/``: ``$EMBEDGEN_HOME/users/
    <slug>-<hash>``, or for None the shared home, ``$EMBEDGEN_HOME`` itself.

    The app gives each user a workspace when its operator turns workspaces on; the command
    line (the operator's tool) and the app without workspaces use the shared home. The hash
    of the exact name keeps apart two names that slug alike (``a.b`` and ``a_b``). Caches
    (``cache/``) stay shared: they are keyed by the content they hold, so only someone who
    has the same texts or matrix can reach an entry.
    """
    if user is None:
        return embedgen_home()
    digest = hashlib.sha256(user.encode("utf-8")).hexdigest()[:12]
    return users_dir() / f"{slug(user)}-{digest}"


def runs_dir(user: str | None = None) -> Path:
    """Where runs go unless told otherwise: ``runs/`` in :func:`workspace` (by default
    ``$EMBEDGEN_HOME/runs``)."""
    return workspace(user) / "runs"


def matrices_dir(user: str | None = None) -> Path:
    """Where matrices of a plain model (no run) go: ``matrices/`` in :func:`workspace` (by
    default ``$EMBEDGEN_HOME/matrices``)."""
    return workspace(user) / "matrices"


def queue_dir() -> Path:
    """The training queue's SQLite file and its workers' heartbeats: ``$EMBEDGEN_HOME/queue``."""
    return embedgen_home() / "queue"


def cache_dir() -> Path:
    """Derived data that can be rebuilt (maps): ``$EMBEDGEN_HOME/cache``."""
    return embedgen_home() / "cache"


def tmp_dir() -> Path:
    """Scratch folders of work under way (exports being assembled): ``$EMBEDGEN_HOME/tmp``.

    What a killed process leaves here is removed when the app or the command next starts
    (``embedgen.atomic.remove_leftovers``).
    """
    return embedgen_home() / "tmp"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder (``HF_HUB_CACHE``, ``HF_HOME`` or the default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


# -- names ------------------------------------------------------------------------------------


def slug(text: str) -> str:
    """``text`` as a safe folder-name part: letters (CJK too), digits, - and _; at most 40
    characters and 60 bytes of UTF-8, so that a name made of two (a matrix's word list and
    corpus) stays under the 255 bytes a file name may have."""
    cut = re.sub(r"[^\w\-]+", "_", text, flags=re.UNICODE).strip("_")[:40]
    return cut.encode()[:60].decode(errors="ignore").rstrip("_") or "x"


def new_run_folder(dataset_name: str, strategy: str, root: Path | None = None) -> Path:
    """A new, empty folder for a run: ``<time>_<data>_<strategy>`` under ``root`` (default
    ``$EMBEDGEN_HOME/runs``), created here so that two runs started in the same second get
    two folders (the second gets ``-2``)."""
    root = root if root is not None else runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    stem = f"{stamp}_{slug(Path(dataset_name).stem)}_{strategy}"
    for n in range(1, 1000):
        folder = root / (stem if n == 1 else f"{stem}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"{root} already holds 999 runs named {stem}")


class MatrixChoices(Protocol):
    """What a matrix's name is made of (``embedgen.matrix.MatrixOptions`` has these)."""

    method: str
    through_projection: bool
    label_weight: float
    drop_special: bool
    cjk_only: bool
    drop_continuation: bool
    postprocess: Any


def matrix_name(
    options: MatrixChoices,
    *,
    tuned: bool,
    layers: tuple[int, int] | None = None,
    words: str | None = None,
) -> str:
    """The one name for a matrix, made of everything that makes two matrices differ.

    ``contextual-L12-tuned-cjk-center``: method, layer or layer range (``L8-12``) when rows are
    read from hidden states, ``raw`` when a run's contextual vectors skip the projection,
    ``tuned`` (built from a run) or ``base``, ``words-<list>`` when rows are words (and
    ``in-<corpus>`` when they were read in another corpus), the row filters that differ from the
    defaults, and the post-processing steps in the order they run. The app and the command line
    name matrices and their folders by it.
    """
    method = str(options.method)
    parts = [method]
    if layers is not None:
        first, last = layers
        parts.append(f"L{first}" if first == last else f"L{first}-{last}")
    if options.label_weight:
        parts.append(f"labels{options.label_weight:g}")
    elif method in ("contextual", "aggregated") and tuned and not options.through_projection:
        parts.append("raw")
    parts.append("tuned" if tuned else "base")
    if words:
        parts.append(words)
    if options.cjk_only and not words:
        parts.append("cjk")
    if not options.drop_special and not words:
        parts.append("special")
    if options.drop_continuation and not words:
        parts.append("nocont")
    post = options.postprocess
    parts += [
        step
        for step, on in (
            ("center", post.center),
            (f"abtt{post.abtt}", post.abtt),
            ("zscore", post.zscore),
            (f"pca{post.pca_dims}", post.pca_dims),
            ("l2", post.l2),
        )
        if on
    ]
    return "-".join(parts)


def matrix_folder(
    name: str,
    *,
    run_folder: str | os.PathLike[str] | None,
    model_id: str,
    user: str | None = None,
) -> Path:
    """Where a matrix called ``name`` lives: in its run's ``matrices/``, or for a plain model
    under ``matrices/<model>/`` in ``user``'s :func:`workspace` (by default
    ``$EMBEDGEN_HOME/matrices/<model>/``)."""
    if run_folder is not None:
        return Path(run_folder) / "matrices" / name
    return matrices_dir(user) / slug(Path(model_id).name) / name


def free_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder`` if nothing is there, else the first free ``<folder>-2``, ``-3``, ...: where a
    second matrix of the same name goes when the user keeps both."""
    folder = Path(folder)
    if not folder.exists():
        return folder
    for n in range(2, 10_000):
        other = folder.with_name(f"{folder.name}-{n}")
        if not other.exists():
            return other
    raise FileExistsError(f"{folder.parent} already holds 9,999 folders named {folder.name}-N")
