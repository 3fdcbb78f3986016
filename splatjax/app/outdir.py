"""The output folder check every command runs before any work (``--out``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import UserError

__all__ = ["check_writable_out"]


def check_writable_out(out: str | os.PathLike, what: str = "--out") -> Path:
    """``out`` as a Path when it can be the output folder, else a one-line
    :class:`UserError` naming it: it must not be (or lie under) an existing file, and
    its nearest existing folder must take a new file (tried by creating and removing one).
    Nothing is left behind; the folder itself is created later, by whoever writes into it."""
    out = Path(out)
    probe = out.absolute()
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: creating the folder would fail
            raise UserError(f"{what} {str(out)!r} cannot be created: {str(probe)!r} is a broken symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        where = "is" if probe == out.absolute() else f"lies under {str(probe)!r}, which is"
        raise UserError(f"{what} {str(out)!r} {where} an existing file, not a folder; choose another output folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".splatjax-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UserError(f"{what} {str(out)!r} is not writable ({str(probe)!r}: {reason}); "
                        "choose another output folder") from e
    return out
