"""The operator's settings: what visitors of the app may do on this server.

The app is shared: whoever opens it in a browser is a visitor, and only the operator (who
starts the server) decides what visitors may do. Settings come from
``$EMBEDGEN_HOME/config.toml`` and, over that, from environment variables:

- ``allow_remote_code`` / ``EMBEDGEN_ALLOW_REMOTE_CODE``: whether a model's own code may run
  when a visitor asks for it. Default: no.
- ``allowed_roots`` / ``EMBEDGEN_ALLOWED_ROOTS`` (folders separated by ``:``): the only
  folders whose models and matrices visitors may open. Default: the Hugging Face cache and
  ``$EMBEDGEN_HOME``. Given, it replaces the defaults (list them too to keep them).
- ``allow_downloads`` / ``EMBEDGEN_ALLOW_DOWNLOADS``: whether a hub id not in the cache may be
  downloaded. Default: yes.

The command line is the operator's own tool and is not limited by these settings.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedgen.errors import BadConfig, NotAllowed
from embedgen.paths import embedgen_home, hub_cache_dir

CONFIG_FILE = "config.toml"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class OperatorSettings:
    """What visitors of the app may do; hashable, so caches can be keyed by it."""

    allow_remote_code: bool = False
    allowed_roots: tuple[Path, ...] = ()
    allow_downloads: bool = True

    def allowed_folder(self, spec: str, what: str = "folder") -> Path:
        """``spec`` as a resolved path when it lies under an allowed root and exists.

        A folder outside the roots and a folder that is not there get the same message, so
        visitors cannot learn which folders the server has.
        """
        path = resolve_quietly(spec)
        if path is None or not path.is_dir() or not under_any(path, self.allowed_roots):
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


def operator_settings() -> OperatorSettings:
    """The settings in force now: defaults, then ``config.toml``, then the environment."""
    values: dict[str, Any] = {}
    path = embedgen_home() / CONFIG_FILE
    if path.is_file():
        try:
            values = tomllib.loads(path.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadConfig(f"The operator settings file {path} cannot be read: {exc}.") from exc
        unknown = set(values) - {"allow_remote_code", "allowed_roots", "allow_downloads"}
        if unknown:
            raise BadConfig(
                f"{path} has settings embedgen does not know: {', '.join(sorted(unknown))}. "
                "Known: allow_remote_code, allowed_roots, allow_downloads."
            )
    remote = _flag(values.get("allow_remote_code", False), f"{path}: allow_remote_code")
    downloads = _flag(values.get("allow_downloads", True), f"{path}: allow_downloads")
    roots_value = values.get("allowed_roots")
    if roots_value is not None and (
        not isinstance(roots_value, list) or not all(isinstance(r, str) for r in roots_value)
    ):
        raise BadConfig(f"{path}: allowed_roots must be a list of folder names.")
    roots = [Path(r).expanduser() for r in roots_value] if roots_value is not None else None
    env = os.environ
    if "EMBEDGEN_ALLOW_REMOTE_CODE" in env:
        remote = _flag(env["EMBEDGEN_ALLOW_REMOTE_CODE"], "EMBEDGEN_ALLOW_REMOTE_CODE")
    if "EMBEDGEN_ALLOW_DOWNLOADS" in env:
        downloads = _flag(env["EMBEDGEN_ALLOW_DOWNLOADS"], "EMBEDGEN_ALLOW_DOWNLOADS")
    if env.get("EMBEDGEN_ALLOWED_ROOTS"):
        roots = [Path(r).expanduser() for r in env["EMBEDGEN_ALLOWED_ROOTS"].split(os.pathsep) if r]
    return OperatorSettings(
        allow_remote_code=remote,
        allowed_roots=tuple(roots) if roots is not None else default_roots(),
        allow_downloads=downloads,
    )
