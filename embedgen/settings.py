"""The operator's settings: what visitors of the app may do on this server.

The app is shared: whoever opens it in a browser is a visitor, and only the operator (who
starts the server) decides what visitors may do. Settings come from
``$EMBEDGEN_HOME/config.toml`` and, over that, from environment variables:

- ``allow_remote_code`` / ``EMBEDGEN_ALLOW_REMOTE_CODE``: whether a model's own code may run
  when a visitor asks for it. Default: no.
- ``allow_pickled_weights`` / ``EMBEDGEN_ALLOW_PICKLED_WEIGHTS``: whether a model whose only
  weights are a pickle (``pytorch_model.bin``, which can run code while it is read) may be
  loaded. Default: no; safetensors weights only.
- ``allowed_roots`` / ``EMBEDGEN_ALLOWED_ROOTS`` (folders separated by ``:``): the only
  folders whose models and matrices visitors may open. Default: the Hugging Face cache and
  ``$EMBEDGEN_HOME``. Given, it replaces the defaults (list them too to keep them).
- ``allow_downloads`` / ``EMBEDGEN_ALLOW_DOWNLOADS``: whether a hub id not in the cache may be
  downloaded. Default: yes.
- ``workspaces`` / ``EMBEDGEN_WORKSPACES``: ``off`` (default), every visitor sees every run
  and matrix; ``on``, each user gets a workspace (``embedgen.paths.workspace``) holding their
  own runs and matrices, and nobody else's are listed or opened. The user's name comes from
  Streamlit's authentication (``st.login``: the signed-in user's email) or else from the
  header named by ``user_header``; a visitor with neither is turned away. The command line
  always works in the shared ``$EMBEDGEN_HOME``.
- ``user_header`` / ``EMBEDGEN_USER_HEADER``: the request header in which a reverse proxy
  that authenticates users names them. Default: ``X-Forwarded-User``.
- ``matrix_cache_mb`` / ``EMBEDGEN_MATRIX_CACHE_MB``: disk space (MiB) for matrices built from
  a plain model under ``$EMBEDGEN_HOME/matrices``; when a new one is saved, the least recently
  used go. 0 keeps none. Default: 4096. A run's matrices and ``--out`` folders are never removed.
- ``map_cache_mb`` / ``EMBEDGEN_MAP_CACHE_MB``: disk space (MiB) for cached maps under
  ``$EMBEDGEN_HOME/cache/projections``, the least recently used going first. 0 switches the
  map cache off. Default: 1024.

The command line is the operator's own tool and is not limited by these settings, except the
disk budgets, which hold for both.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedgen.errors import BadConfig, NotAllowed
from embedgen.paths import embedgen_home, hub_cache_dir, users_dir, workspace

CONFIG_FILE = "config.toml"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
DEFAULT_USER_HEADER = "X-Forwarded-User"
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_BUDGETS = {"matrix_cache_mb": "EMBEDGEN_MATRIX_CACHE_MB", "map_cache_mb": "EMBEDGEN_MAP_CACHE_MB"}


@dataclass(frozen=True)
class OperatorSettings:
    """What visitors of the app may do; hashable, so caches can be keyed by it."""

    allow_remote_code: bool = False
    allow_pickled_weights: bool = False
    allowed_roots: tuple[Path, ...] = ()
    allow_downloads: bool = True
    workspaces: bool = False
    user_header: str = DEFAULT_USER_HEADER
    matrix_cache_mb: float = 4096.0
    map_cache_mb: float = 1024.0

    def allowed_folder(self, spec: str, what: str = "folder", user: str | None = None) -> Path:
        """``spec`` as a resolved path when it lies under an allowed root, outside other users'
        workspaces (``user``: the visitor's name when workspaces are on), and exists.

        A folder outside the roots, one in another user's workspace and one that is not there
        get the same message, so visitors cannot learn which folders the server has.
        """
        path = resolve_quietly(spec)
        if (
            path is None
            or not path.is_dir()
            or not under_any(path, self.allowed_roots)
            or in_other_workspace(path, user)
        ):
            raise NotAllowed(
                f"'{spec}' is not a {what} you can open here: it is not there, or it lies "
                "outside the folders the operator of this server allows. Ask the operator, "
                "or choose one that is offered."
            )
        return path


def resolve_quietly(spec: str | os.PathLike[str]) -> Path | None:
    """The absolute, symlink-free form of ``spec``, or None when it cannot be worked out."""
    try:
        return Path(spec).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def under_any(path: Path, roots: Iterable[Path]) -> bool:
    """True when ``path`` (resolved) is one of ``roots`` or lies beneath one."""
    for root in roots:
        resolved = resolve_quietly(root)
        if resolved is not None and path.is_relative_to(resolved):
            return True
    return False


def in_other_workspace(path: Path, user: str | None) -> bool:
    """True when ``path`` (resolved) lies among the users' workspaces but not in ``user``'s own;
    with no user, anywhere among them. The allowed roots never open these to a visitor."""
    users = resolve_quietly(users_dir())
    if users is None or not path.is_relative_to(users):
        return False
    own = resolve_quietly(workspace(user)) if user is not None else None
    return own is None or not path.is_relative_to(own)


def default_roots() -> tuple[Path, ...]:
    return (hub_cache_dir(), embedgen_home())


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadConfig(f"{name} must be true or false (got {value!r}).")


def _header(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value.strip()):
        raise BadConfig(
            f"{name} must be the name of a request header, such as {DEFAULT_USER_HEADER} "
            f"(got {value!r})."
        )
    return value.strip()


def _megabytes(value: Any, name: str) -> float:
    try:
        mb = -1.0 if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        mb = -1.0
    if not mb >= 0 or mb == float("inf"):
        raise BadConfig(f"{name} must be a number of MiB, 0 or more (got {value!r}).")
    return mb


_FLAGS = {  # the yes/no settings and their environment variables
    "allow_remote_code": "EMBEDGEN_ALLOW_REMOTE_CODE",
    "allow_pickled_weights": "EMBEDGEN_ALLOW_PICKLED_WEIGHTS",
    "allow_downloads": "EMBEDGEN_ALLOW_DOWNLOADS",
    "workspaces": "EMBEDGEN_WORKSPACES",
}


def operator_settings() -> OperatorSettings:
    """The settings in force now: defaults, then ``config.toml``, then the environment."""
    values: dict[str, Any] = {}
    path = embedgen_home() / CONFIG_FILE
    if path.is_file():
        try:
            values = tomllib.loads(path.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadConfig(f"The operator settings file {path} cannot be read: {exc}.") from exc
        known = (*_FLAGS, "allowed_roots", "user_header", *_BUDGETS)
        unknown = set(values) - set(known)
        if unknown:
            raise BadConfig(
                f"{path} has settings embedgen does not know: {', '.join(sorted(unknown))}. "
                f"Known: {', '.join(known)}."
            )
    env = os.environ
    flags = {  # each yes/no setting: from config.toml, the environment winning
        name: _flag(env[variable], variable)
        if variable in env
        else _flag(values.get(name, getattr(OperatorSettings, name)), f"{path}: {name}")
        for name, variable in _FLAGS.items()
    }
    header = _header(values.get("user_header", DEFAULT_USER_HEADER), f"{path}: user_header")
    roots_value = values.get("allowed_roots")
    if roots_value is not None and (
        not isinstance(roots_value, list) or not all(isinstance(r, str) for r in roots_value)
    ):
        raise BadConfig(f"{path}: allowed_roots must be a list of folder names.")
    roots = [Path(r).expanduser() for r in roots_value] if roots_value is not None else None
    if env.get("EMBEDGEN_USER_HEADER"):
        header = _header(env["EMBEDGEN_USER_HEADER"], "EMBEDGEN_USER_HEADER")
    if env.get("EMBEDGEN_ALLOWED_ROOTS"):
        roots = [Path(r).expanduser() for r in env["EMBEDGEN_ALLOWED_ROOTS"].split(os.pathsep) if r]
    budgets = {}
    for name, variable in _BUDGETS.items():
        budgets[name] = (
            _megabytes(env[variable], variable)
            if env.get(variable, "").strip()
            else _megabytes(values.get(name, getattr(OperatorSettings, name)), f"{path}: {name}")
        )
    return OperatorSettings(
        allowed_roots=tuple(roots) if roots is not None else default_roots(),
        user_header=header,
        **flags,
        **budgets,
    )
