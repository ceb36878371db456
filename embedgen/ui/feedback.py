"""What a page shows when it cannot go on: what to do first, or what went wrong."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from embedgen.errors import EmbedgenError
from embedgen.ui.markup import plain

log = logging.getLogger(__name__)


def require(value: Any, message: str, page: str | None = None) -> Any:
    """Return ``value``, or show what to do first and stop the page."""
    if value is None:
        st.info(message)
        if page:
            st.page_link(
                page,
                label=f"Go to {Path(page).stem.split('_', 1)[-1]}",
                icon=":material/arrow_forward:",
            )
        st.stop()
    return value


def show_error(exc: BaseException) -> None:
    """Our errors as they are; anything else as a short note (the traceback goes to the log)."""
    if isinstance(exc, EmbedgenError):
        st.error(plain(exc))
    else:
        log.exception("Unexpected error in a page", exc_info=exc)
        st.error(
            f"Something went wrong ({type(exc).__name__}: {plain(exc)}). The details are in the "
            "server log; please report it."
        )


def attempt(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; on failure show the error and stop the page."""
    try:
        return fn()
    except Exception as exc:  # shown to the user, logged when it is a bug
        show_error(exc)
        st.stop()
