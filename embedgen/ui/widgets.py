"""Widgets made from settings (``embedgen.fields``): label, limits, default and help come from
the config field, so a page cannot disagree with the library or the command line."""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from embedgen.fields import spec

KEPT = "ui_kept_widgets"  # session key: the keys of widgets whose values outlive their page


def kept(key: str) -> str:
    """``key``, registered so that its widget keeps its value while the user is on other pages.

    Streamlit forgets a widget's value when a page without it runs; ``common.init_state``
    hands every registered value back to the session at the top of each page, which keeps it.
    Only for widgets whose value can be set (not buttons or file uploaders).
    """
    st.session_state.setdefault(KEPT, set()).add(key)
    return key


def keep_values() -> None:
    """Hold on to the registered widgets' values for this run (see :func:`kept`)."""
    for key in st.session_state.get(KEPT, ()):
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def setting_input(
    where: Any,
    cls: Any,
    name: str,
    *,
    key: str,
    label: str | None = None,
    max_value: float | None = None,
    default: Any = None,
    **extra: Any,
) -> Any:
    """A checkbox, select box or number input for the setting ``name`` of ``cls``, in ``where``
    (``st`` or a column). ``max_value`` narrows the upper limit (e.g. the model's layers);
    ``default`` replaces the setting's default where the page knows better (the data)."""
    kept(key)
    s = spec(cls, name)
    if default is not None:
        s = dataclasses.replace(s, default=default)
    label = label or s.label[0].upper() + s.label[1:]
    help_text = extra.pop("help", None) or s.help or None
    if isinstance(s.default, bool):
        return where.checkbox(label, value=s.default, key=key, help=help_text, **extra)
    if s.choices is not None:
        options = s.values
        return where.selectbox(
            label, options, index=options.index(str(s.default)), key=key, help=help_text, **extra
        )
    cast = int if s.whole else float
    low = None if s.low is None or s.low_open else cast(s.low)
    high = None if s.high is None or s.high_open else cast(s.high)
    if max_value is not None:
        high = cast(max_value) if high is None else min(high, cast(max_value))
    value = cast(s.default)
    if high is not None:
        value = min(value, high)
    return where.number_input(
        label, min_value=low, max_value=high, value=value, key=key, help=help_text, **extra
    )
