"""The encoder chosen on the Model page: loaded once per server, within what the operator
allows, and never changed in the cache (fine-tuning works on its own copy)."""

from __future__ import annotations

import streamlit as st

from embedgen.device import DeviceInfo, device_info
from embedgen.errors import EmbedgenError
from embedgen.models import Encoder, load_encoder
from embedgen.paths import users_dir
from embedgen.settings import OperatorSettings, resolve_quietly
from embedgen.ui.session import MODEL_LOADED
from embedgen.ui.visitor import current_user, operator


def load_model(spec: str, trust_remote_code: bool = False) -> Encoder:
    """The encoder a visitor asked for, within what the operator allows."""
    path, users = resolve_quietly(spec), resolve_quietly(users_dir())
    # Who asks decides only for folders among the workspaces: there each visitor gets a cache
    # entry (an owner's loaded model is not handed to others); anywhere else all share one.
    among_workspaces = path is not None and users is not None and path.is_relative_to(users)
    user = current_user() if among_workspaces else None
    return cached_encoder(spec, trust_remote_code, operator(), user)


@st.cache_resource(show_spinner=False, max_entries=3)
def cached_encoder(
    spec: str, trust_remote_code: bool, settings: OperatorSettings, user: str | None = None
) -> Encoder:
    """One loaded encoder per (spec, remote-code choice, settings, user) for the whole server.

    Never mutated. The settings are part of the key, so an operator's change applies to
    models loaded before it too. ``user`` is the visitor for a folder among the workspaces
    (:func:`load_model`), None for everything else.
    """
    from embedgen.device import resolve_device

    return load_encoder(
        spec,
        trust_remote_code=trust_remote_code and settings.allow_remote_code,
        allow_download=settings.allow_downloads,
        allow_pickle=settings.allow_pickled_weights,
        allowed_roots=settings.allowed_roots,
        user=user,
        device=resolve_device("auto"),
    )


@st.cache_data(show_spinner=False, ttl=30)
def cached_device_info() -> DeviceInfo:
    return device_info("auto")


def current_encoder() -> Encoder | None:
    """The encoder chosen on the Model page, or None when none is loaded."""
    loaded = st.session_state.get(MODEL_LOADED)
    if loaded is None:
        return None
    try:
        return load_model(*loaded)
    except EmbedgenError:
        return None
