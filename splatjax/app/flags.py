"""Command-line flags generated from frozen config dataclasses, in one place.

A config field becomes a flag when its ``dataclasses.field`` metadata has a ``"help"``
text; the flag is the field name with ``_`` turned into ``-`` (``steps`` -> ``--steps``), or
``metadata["flag"]`` when given (``objective`` -> ``--pose-objective``).
Supported field types: ``int``, ``float``, ``str``, ``bool`` (``--x`` / ``--no-x``),
``int | None``, ``float | None``, ``str | None`` (the word ``none`` gives None) and
fixed-length ``tuple[float, ...]`` (one value per element), and a nested config
dataclass whose field has ``metadata["prefix"]``: its own flag fields become flags named
with that prefix (``PoseConfig.keypoint`` with prefix ``keypoint_``: ``--keypoint-width``
sets ``PoseConfig.keypoint.width``), its validation errors name those flags. ``metadata["choices"]``
restricts a value; ``metadata["metavar"]`` names it in ``--help`` (default: ``INT`` /
``FLOAT``, and for strings ``FILE``, ``DIR``, ``PATH`` or ``HOST:PORT`` by the end of the
field name, else ``TEXT``). The help shows the default once: ``(default: X)`` is appended
unless the help text already says its default. Flags not given on the command line keep the config's defaults; the
config's own ``__post_init__`` validates the result and raises
:class:`splatjax.errors.ConfigError`, which the command line prints as one line naming
the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, TypeVar

from ..errors import ConfigError

__all__ = ["add_config_flags", "config_from_flags", "flag_fields", "flag_name"]

C = TypeVar("C")
_NONE_WORDS = ("none", "null")


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of config class ``cls`` that are command-line flags (those with help)."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def flag_name(f: dataclasses.Field, prefix: str = "") -> str:
    """The command-line flag of config field ``f`` (of a config nested under ``prefix``):
    ``metadata["flag"]`` or ``--`` + prefix + its name with ``_`` turned into ``-``."""
    return f.metadata.get("flag") or "--" + (prefix + f.name).replace("_", "-")


def _nested(f: dataclasses.Field, hints: dict) -> type | None:
    """The config class of a nested-config field (one with ``metadata["prefix"]``), else None."""
    kind = hints[f.name]
    return kind if "prefix" in f.metadata and dataclasses.is_dataclass(kind) else None


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, whether None is allowed) for ``X | None`` / ``Optional[X]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _scalar_parser(kind: type, optional: bool, name: str):
    def parse(text: str):
        if optional and text.strip().lower() in _NONE_WORDS:
            return None
        return kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


def _describe_default(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return "none" if value is None else str(value)


#: Metavars of string fields by the end of their name (a path or an address, not "STR").
_STR_METAVARS = (("_weights", "FILE"), ("_ply", "FILE"), ("_file", "FILE"), ("_dir", "DIR"), ("_path", "PATH"),
                 ("_address", "HOST:PORT"))


def _metavar(f: dataclasses.Field, kind: type) -> str:
    if "metavar" in f.metadata:
        return f.metadata["metavar"]
    if kind is not str:
        return kind.__name__.upper()
    return next((m for suffix, m in _STR_METAVARS if f.name.endswith(suffix)), "TEXT")


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, title: str | None = None,
                     exclude: tuple[str, ...] = (), base: Any = None) -> argparse._ArgumentGroup:
    """Add one flag per help-carrying field of config class ``cls`` to ``parser`` (in a
    group titled ``title``). Defaults are left unset on the namespace (``SUPPRESS``), so
    :func:`config_from_flags` can tell given flags from defaults. ``base``: the instance
    whose values the help texts show as defaults (default ``cls()``)."""
    defaults = cls() if base is None else base
    group = parser.add_argument_group(title or f"{cls.__name__} options")
    _add_fields(parser, group, cls, defaults, "", exclude)
    return group


def _add_fields(parser, group, cls: type, defaults: Any, prefix: str, exclude: tuple[str, ...]) -> None:
    hints = typing.get_type_hints(cls)
    for f in flag_fields(cls):
        flag = flag_name(f, prefix)
        if f.name in exclude or flag in parser._option_string_actions:
            continue  # a flag already added by another config is shared by both
        inner = _nested(f, hints)
        if inner is not None:
            _add_fields(parser, group, inner, getattr(defaults, f.name), prefix + f.metadata["prefix"], ())
            continue
        default = getattr(defaults, f.name)
        helptext = f.metadata["help"]
        if "(default" not in helptext:  # a help text may describe its default itself
            helptext += f" (default: {_describe_default(default)})"
        kind, optional = _unwrap_optional(hints[f.name])
        kw: dict[str, Any] = dict(dest=prefix + f.name, default=argparse.SUPPRESS, help=helptext)
        if "choices" in f.metadata:
            choices = f.metadata["choices"]  # a tuple, or a function giving the names registered now
            kw["choices"] = tuple(choices() if callable(choices) else choices)
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(kind) is tuple:
            elem = typing.get_args(kind)[0]
            group.add_argument(flag, type=elem, nargs=len(default), metavar=f.name.upper()[:1], **kw)
        elif kind in (int, float, str):
            group.add_argument(flag, type=_scalar_parser(kind, optional, f.name),
                               metavar=_metavar(f, kind) if "choices" not in kw else None, **kw)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: type {kind!r} cannot be a command-line flag")


def config_from_flags(cls: type[C], args: argparse.Namespace, *, base: C | None = None, **overrides) -> C:
    """The ``cls`` instance for parsed flags: ``base`` (default ``cls()``) with every flag
    given on the command line, then ``overrides``, replaced in. Validation (and its
    :class:`~splatjax.errors.ConfigError`) is the config's own."""
    base = cls() if base is None else base
    values = _given(cls, args, base, "")
    values.update(overrides)
    return dataclasses.replace(base, **values)


def _given(cls: type, args: argparse.Namespace, base: Any, prefix: str) -> dict:
    """The fields of ``cls`` given on the command line (flags under ``prefix``); a nested
    config is rebuilt from ``base``'s and its errors name the flag."""
    hints, values = typing.get_type_hints(cls), {}
    for f in flag_fields(cls):
        inner = _nested(f, hints)
        if inner is not None:
            sub_prefix = prefix + f.metadata["prefix"]
            given = _given(inner, args, getattr(base, f.name), sub_prefix)
            if given:
                try:
                    values[f.name] = dataclasses.replace(getattr(base, f.name), **given)
                except ConfigError as e:
                    raise ConfigError(e.option, e.detail, owner=e.owner, flag=flag_name(
                        next(g for g in dataclasses.fields(inner) if g.name == e.option), sub_prefix)) from None
        elif hasattr(args, prefix + f.name):
            v = getattr(args, prefix + f.name)
            values[f.name] = tuple(v) if isinstance(v, list) else v
    return values
