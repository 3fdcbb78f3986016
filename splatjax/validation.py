"""The one way configs check their fields: small predicates and :func:`require`, which
raises a :class:`~splatjax.errors.ConfigError` naming the option ("must be WHAT (got V)";
the command line shows it as the flag, the library as ``Config.field``)."""

from __future__ import annotations

import numbers
from collections.abc import Iterable

from .errors import ConfigError

__all__ = ["require", "is_int", "is_number", "require_ints", "require_positive", "require_choice", "require_bools",
           "require_color"]


def is_int(value) -> bool:
    """An integer (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A real number (integers included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def require(ok: bool, config, option: str, what: str, *, report_as: str | None = None) -> None:
    """Unless ``ok``: ConfigError "``option``: must be ``what`` (got <its value>)" owned by
    ``config``'s class; ``report_as``: the option a user set (e.g. "capacity" for the
    fields of a KernelCapacity), the message then names ``Class.field``."""
    if ok:
        return
    owner, value = type(config).__name__, getattr(config, option)
    if report_as is None:
        raise ConfigError(option, f"must be {what} (got {value!r})", owner=owner)
    raise ConfigError(report_as, f"{owner}.{option} must be {what} (got {value!r})")


def require_ints(config, names: Iterable[str], low: int, *, allow_none: bool = False,
                 report_as: str | None = None) -> None:
    """Each field of ``names`` an integer >= ``low`` (or None when ``allow_none``)."""
    for name in names:
        v = getattr(config, name)
        ok = (allow_none and v is None) or (is_int(v) and v >= low)
        require(ok, config, name, f"an integer >= {low}" + (" or None" if allow_none else ""), report_as=report_as)


def require_positive(config, names: Iterable[str]) -> None:
    """Each field of ``names`` a number > 0."""
    for name in names:
        v = getattr(config, name)
        require(is_number(v) and v > 0, config, name, "> 0")


def require_choice(config, option: str, choices: Iterable[str]) -> None:
    """The field one of ``choices``."""
    choices = tuple(choices)
    require(getattr(config, option) in choices, config, option, "one of " + ", ".join(choices))


def require_bools(config, names: Iterable[str]) -> None:
    """Each field of ``names`` True or False."""
    for name in names:
        require(isinstance(getattr(config, name), bool), config, name, "True or False")


def require_color(config, name: str) -> None:
    """Field ``name`` three numbers in [0, 1] (an RGB colour), stored as a tuple of floats
    (so the config stays hashable)."""
    try:
        rgb = tuple(float(c) for c in getattr(config, name))
    except (TypeError, ValueError):
        rgb = ()
    require(len(rgb) == 3 and all(0.0 <= c <= 1.0 for c in rgb), config, name, "3 numbers in [0, 1]")
    object.__setattr__(config, name, rgb)
