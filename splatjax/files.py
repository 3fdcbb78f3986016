"""Small file helpers shared by every layer: one atomic write, one JSON reader.

Writes go to a temporary file in the destination folder and are renamed over the target
(``os.replace``), so an interrupted write never leaves a half-written file behind. The
temporary file is created with mode 0o666 and the kernel applies the process umask (and a
folder's default ACL), exactly as ``open(path, "w")`` would: files are as readable by
others as the user's umask says (``tempfile.mkstemp`` would make every file 0600).
"""

from __future__ import annotations

import json
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import DatasetError, DatasetNotFoundError

__all__ = ["atomic_write", "write_json", "read_json", "require_file", "require_dir", "file_sha256"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any] | bytes | str) -> Path:
    """Write ``path`` atomically. ``write`` is the content (bytes or text, UTF-8) or a
    function that writes into the binary file object it is given. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(write, str):
                f.write(write.encode("utf-8"))
            elif isinstance(write, (bytes, bytearray)):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new file ``.NAME.<random>.tmp`` beside ``path``, opened for writing with mode 0o666
    less the umask (applied by the kernel, so the umask is never read or changed)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{str(path.parent)!r}: no free temporary file name for {path.name!r}")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Atomically write ``obj`` as JSON (UTF-8, trailing newline)."""
    return atomic_write(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def _require(path: str | os.PathLike, what: str, is_kind, noun: str) -> Path:
    path = Path(path)
    if not is_kind(path):
        state = f"is not a {noun}" if path.exists() else "does not exist"
        raise DatasetNotFoundError(f"{what} {str(path)!r} {state}")
    return path


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it is a folder, else a :class:`DatasetNotFoundError` naming it."""
    return _require(path, what, Path.is_dir, "folder")


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it is a file, else a :class:`DatasetNotFoundError` naming it."""
    return _require(path, what, Path.is_file, "file")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Parse a JSON file. Missing, unreadable, malformed or non-UTF-8 files raise
    :class:`DatasetError` naming the file (line and column for syntax errors). ``NaN`` and
    ``Infinity`` literals parse as floats; callers check values."""
    path = require_file(path, what)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"malformed JSON in {str(path)!r}: {e.msg} at line {e.lineno}, column {e.colno}"
        ) from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{str(path)!r} is not UTF-8 text: {e}") from e
    except PermissionError as e:
        raise DatasetError(f"{what} {str(path)!r} cannot be read: permission denied") from e
    except OSError as e:
        raise DatasetError(f"{what} {str(path)!r} cannot be read: {e.strerror or e}") from e
