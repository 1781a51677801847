"""Writing files so that a crash never leaves one half-written, and checking room before work starts."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from captchakit.errors import UserError

TMP_MARK = ".part-"  # atomic_path's temporaries are named .NAME.part-XXXX, never anything a user wrote


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one step.

    A crash or error leaves the old file untouched and no temporary behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", suffix=suffix or ".tmp", dir=path.parent)
    if hasattr(os, "fchmod"):  # the mode open() would give, not mkstemp's owner-only 0600
        umask = os.umask(0o22)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:
            err.filename = str(path)  # a failed write() names no file; the error line should
        raise


def remove_stale_temps(path: str | os.PathLike) -> int:
    """Delete what atomic_path(path) left behind when a run was killed (kill -9, power loss): a crash
    cannot clean up, so the next run for the same file does. Returns how many were removed."""
    path = Path(path)
    removed = 0
    for stale in path.parent.glob(f".{glob.escape(path.name)}{TMP_MARK}*"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed += 1
    return removed


def check_free_space(path: str | os.PathLike, need: int, flag: str) -> None:
    """Refuse to start work that will need `need` bytes in `path` when the disk has less free."""
    free = shutil.disk_usage(path).free
    if free < need:
        have, want = f"{free / 1e6:,.1f} MB free", f"about {need / 1e6:,.1f} MB needed"
        raise UserError(f"{flag} {path}: only {have}, {want}; free some space or choose another folder")


def check_writable_dir(path: str | os.PathLike, flag: str) -> Path:
    """Create `path` if needed and make sure files can be written there, before work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UserError(f"{flag} {path}: cannot write there ({err.strerror}); choose another folder") from None
    return path
