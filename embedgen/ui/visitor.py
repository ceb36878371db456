"""Who is visiting: what the operator lets visitors do, the workspace user, and the secrets
that let a tab follow the runs it started."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from embedgen.errors import EmbedgenError
from embedgen.settings import OperatorSettings, operator_settings

log = logging.getLogger(__name__)

USER = "ui_user"  # the visitor's name, once found (workspaces on)
TRAIN_SECRETS = "train_secrets"  # run folder -> the secret this tab holds for it (run_secret)
RUN_PARAM = "run"  # the Train page's address carries the followed run's secret: ?run=...


def operator() -> OperatorSettings:
    """What the operator lets visitors do; a broken settings file stops the page.

    Read on every rerun (a small file), so the operator's changes apply without a restart.
    """
    try:
        return operator_settings()
    except EmbedgenError as exc:
        log.error("Operator settings: %s", exc)
        st.error(
            "This server's settings cannot be read, so the app stops here. The operator can "
            "see why in the server log."
        )
        st.stop()


def current_user() -> str | None:
    """The visitor's name when the operator gives each user a workspace; None otherwise (the
    shared home).

    Found once per session (:func:`user_name`), so a session keeps one workspace. With
    workspaces on and no name, the page says how to get one and stops: a visitor is never
    put in the shared home instead.
    """
    settings = operator()
    if not settings.workspaces:
        return None
    name = st.session_state.get(USER)
    if name is None:
        name = user_name(st.user.to_dict(), st.context.headers.get_all(settings.user_header))
        if name is None:
            st.error(
                "This server gives each user a workspace of their own, and this visit brings "
                "no user name. Sign in, or open the app through the address your team uses: "
                f"its proxy must send the {settings.user_header} header. The operator of this "
                "server can tell you which."
            )
            if "is_logged_in" in st.user:  # Streamlit's own sign-in is set up
                st.button("Sign in", on_click=st.login)
            st.stop()
        st.session_state[USER] = name
    return name


_SECRET = re.compile(r"[A-Za-z0-9_-]{16,64}")


def new_run_secret(folder: str) -> str:
    """A new secret for the run this tab starts in ``folder``: made here, on the server, and
    kept for this tab; the run keeps only its hash (``runs.owner_tag``).

    The Train page puts the secret in its address (``?run=``) while the run is queued or
    training, so a reloaded tab, a tab reopened from the history or the address pasted into
    another browser takes the run up again: follows it and can cancel it. Whoever has the
    address owns that run, and only that run: each run gets its own secret, never one taken
    from an address (a visitor sent a link with a value someone chose would otherwise start
    runs its chooser could cancel).
    """
    secret = secrets.token_urlsafe(18)
    st.session_state.setdefault(TRAIN_SECRETS, {})[folder] = secret
    return secret


def address_secret() -> str | None:
    """The well-formed secret in this page's address (``?run=``), or None. It proves nothing
    by itself: it finds a run only when the run keeps its hash (``runs.RunRecord.owned_by``)."""
    given = st.query_params.get(RUN_PARAM)
    return given if given and _SECRET.fullmatch(given) else None


def run_secret(folder: str) -> str | None:
    """The secret this tab holds for the run in ``folder``: made when the tab started it, or
    found in the address and matched against the run's hash (``hold_secret``)."""
    return st.session_state.get(TRAIN_SECRETS, {}).get(folder)


def hold_secret(folder: str, secret: str) -> None:
    """Keep ``secret`` for the run in ``folder``; the caller checked that the run's hash
    matches it, so it is that run's own secret, made by the server when the run started."""
    st.session_state.setdefault(TRAIN_SECRETS, {})[folder] = secret


def user_name(user_info: Mapping[str, Any], header_values: Sequence[str]) -> str | None:
    """The name a visitor's workspace is kept under: the email (else the ``sub`` id) of a user
    signed in with Streamlit's authentication (``st.user``), else the value of the operator's
    user header; None when neither gives one.

    A header sent more than once gives no name: a proxy that adds its header to one the
    browser forged would leave the choice to their order.
    """
    if user_info.get("is_logged_in") is True:
        for claim in ("email", "sub"):
            value = user_info.get(claim)
            if isinstance(value, str) and value.strip():
                return value.strip()
    if len(header_values) == 1 and header_values[0].strip():
        return header_values[0].strip()
    return None


def allowed_folder(spec: str, what: str) -> Path:
    """``spec`` resolved, when the operator lets this visitor open it; otherwise one message."""
    return operator().allowed_folder(spec, what, current_user())
