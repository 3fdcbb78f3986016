"""The error types a user can cause, in one place.

Every error a user can fix (a bad file, a bad option, missing weights) derives from
:class:`UserError`; the command line prints such an error as one line and exits with
status 2 (``--debug`` shows the traceback). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["UserError", "DatasetError", "DatasetNotFoundError", "ConfigError", "WeightsError"]


class UserError(Exception):
    """Something the user can fix; the message names the file or option and the fix."""


class DatasetError(UserError, ValueError):
    """A dataset file or folder is missing, malformed or inconsistent. The message names
    the offending path and what is wrong."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A file or folder the dataset layout requires does not exist."""


class ConfigError(UserError, ValueError):
    """An option has a value it cannot take.

    ``option`` is the config field name (``"steps"``); the command line shows it as the
    flag (``--steps``, or ``flag`` when the field's flag is named otherwise), the library
    as ``Config.field``.
    """

    def __init__(self, option: str, message: str, *, owner: str | None = None, flag: str | None = None):
        self.option = option
        self.owner = owner
        self._flag = flag
        self.detail = message
        where = f"{owner}.{option}" if owner else option
        super().__init__(f"{where}: {message}")

    @property
    def flag(self) -> str:
        return self._flag or "--" + self.option.replace("_", "-")


class WeightsError(UserError, RuntimeError):
    """A pretrained weights file is missing, unreadable, or belongs to another network."""
