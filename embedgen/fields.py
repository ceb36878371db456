"""Settings that carry their own meaning and limits: one source for configs, flags and widgets.

A config dataclass declares each field with :func:`setting`: its default, its name for people
("projection size d"), its limits and, for a choice, its enum. Then

- ``check(self)`` in ``__post_init__`` turns choices into their enum and checks every limit,
  with a message that names the setting;
- ``cli.py`` makes a flag of each setting (default, help, type and choices from here);
- pages read :func:`spec` for a widget's label, bounds and default.

So a default or a limit is written once, and the CLI, the app and the library cannot disagree.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
from dataclasses import dataclass
from typing import Any, TypeVar

from embedgen.errors import BadConfig

E = TypeVar("E", bound=enum.Enum)


class Choice(enum.StrEnum):
    """A choice whose members say what they mean: ``HEAD = "head", "Encoder frozen: ..."``.

    Its value is the string the CLI, the widgets and the manifests use; ``description`` is
    what help texts and pages show.
    """

    description: str

    def __new__(cls, value: str, description: str = "") -> Choice:
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member


@dataclass(frozen=True)
class Spec:
    """What a setting means and which values it takes."""

    name: str  # the field's name
    label: str  # its name for people, used in help texts and messages
    default: Any
    low: float | None = None  # lower limit, inclusive unless low_open
    high: float | None = None  # upper limit, inclusive unless high_open
    low_open: bool = False
    high_open: bool = False
    choices: type[enum.Enum] | None = None  # the enum a choice belongs to
    help: str = ""  # more than the label says, for --help and widget tooltips
    flag: str | None = None  # the CLI flag when not --name-with-dashes; "" for none
    negated_flag: bool = False  # a True default switched off by the flag (--keep-special)
    whole: bool = False  # a whole number (an int setting)
    text: bool = False  # a string setting (checked by its own dataclass)

    @property
    def cli_flag(self) -> str:
        return self.flag if self.flag is not None else "--" + self.name.replace("_", "-")

    @property
    def values(self) -> list[str]:
        """The choices' values, in declaration order."""
        return [str(c.value) for c in self.choices] if self.choices else []

    @property
    def named(self) -> str:
        """The label, with the field's name when the two differ: "projection size d (dim)"."""
        plain = self.name.replace("_", " ")
        return self.label if plain == self.label else f"{self.label} ({self.name})"

    def describe(self) -> str:
        """The label, and the help text when there is one."""
        return f"{self.label}: {self.help}" if self.help else self.label

    def check(self, value: Any) -> Any:
        """``value`` as this setting holds it (a choice as its enum); BadConfig if out of range."""
        if self.choices is not None:
            return choice(self.choices, value, self.named)
        if value is None or (isinstance(value, bool) and not self.whole) or self.text:
            return value
        if self.whole and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise BadConfig(f"{self.named} must be a whole number (got {value!r}).")
        if not isinstance(value, numbers.Real):
            return value
        if isinstance(value, float) and math.isnan(value):
            raise BadConfig(f"{self.label} must be a number (got nan).")
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (
            value >= self.high if self.high_open else value > self.high
        )
        if below or above:
            raise BadConfig(f"{self.named} must be {self.range_text()} (got {value}).")
        return value

    def range_text(self) -> str:
        """The limits in words: "at least 1", "positive", "in (0, 0.5]"."""
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            if self.low == 0:
                return "positive" if self.low_open else "0 or more"
            return ("more than " if self.low_open else "at least ") + _num(self.low)
        if self.high is not None:
            return ("less than " if self.high_open else "at most ") + _num(self.high)
        return "any value"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def setting(
    default: Any,
    label: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: type[enum.Enum] | None = None,
    help: str = "",
    flag: str | None = None,
    negated_flag: bool = False,
    whole: bool | None = None,
    text: bool = False,
) -> Any:
    """A dataclass field with a default and the :class:`Spec` that says what it means.

    ``whole`` (a whole number) follows the default's type unless given (for a None default).
    """
    if whole is None:
        whole = isinstance(default, int) and not isinstance(default, bool)
    meta = {
        "label": label,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "choices": choices,
        "help": help,
        "flag": flag,
        "negated_flag": negated_flag,
        "whole": whole,
        "text": text,
    }
    return dataclasses.field(default=default, metadata={"embedgen": meta})


def specs(cls: Any) -> dict[str, Spec]:
    """The settings of a config dataclass (class or instance), by field name, in order."""
    found = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("embedgen")
        if meta is not None:
            found[f.name] = Spec(name=f.name, default=f.default, **meta)
    return found


def spec(cls: Any, name: str) -> Spec:
    """The setting ``name`` of ``cls``."""
    return specs(cls)[name]


def check(obj: Any) -> None:
    """Check every setting of the frozen dataclass ``obj``; store choices as their enum."""
    for name, s in specs(obj).items():
        value = s.check(getattr(obj, name))
        if value is not getattr(obj, name):
            object.__setattr__(obj, name, value)


def choice(enum_cls: type[E], value: Any, what: str) -> E:
    """``value`` as a member of ``enum_cls``, or BadConfig listing the choices."""
    try:
        return enum_cls(value)
    except ValueError:
        options = ", ".join(str(m.value) for m in enum_cls)
        raise BadConfig(f"Unknown {what} '{value}'. Choose one of: {options}.") from None
