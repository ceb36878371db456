"""Widgets made from settings (``embedgen.fields``): label, limits, default and help come from
the config field, so a page cannot disagree with the library or the command line."""

from __future__ import annotations

import dataclasses
from typing import Any

from embedgen.fields import spec


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
