"""Where embedgen keeps things: ``$EMBEDGEN_HOME`` and the folders under it, and the HF cache.

Every folder is read from the environment when it is asked for, so a test or an operator can
point ``EMBEDGEN_HOME`` elsewhere without restarting anything.
"""

from __future__ import annotations

import os
from pathlib import Path


def embedgen_home() -> Path:
    """``$EMBEDGEN_HOME`` or ``~/.embedgen``."""
    return Path(os.environ.get("EMBEDGEN_HOME", Path.home() / ".embedgen")).expanduser()


def runs_dir() -> Path:
    """Where runs go unless told otherwise: ``$EMBEDGEN_HOME/runs``."""
    return embedgen_home() / "runs"


def matrices_dir() -> Path:
    """Where matrices of a plain model (no run) go: ``$EMBEDGEN_HOME/matrices``."""
    return embedgen_home() / "matrices"


def cache_dir() -> Path:
    """Derived data that can be rebuilt (maps): ``$EMBEDGEN_HOME/cache``."""
    return embedgen_home() / "cache"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder (``HF_HUB_CACHE``, ``HF_HOME`` or the default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"
