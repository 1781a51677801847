"""One-line errors for a user's mistakes: what every script's entry point runs through."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

EXIT_USAGE = 2
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # no space, over a size limit, over a quota
CANNOT_WRITE = (errno.EACCES, errno.EPERM, errno.EROFS)


class UserError(Exception):
    """A mistake in the user's input: shown as one line, exit status 2, no traceback."""


def _usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    raise UserError(f"{message}; see --help")


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Run a script's main() and turn a UserError, a full disk or an unwritable path into one line on
    stderr and exit status 2.

    argparse's own errors (an unknown flag, `--epochs abc`) become the same one line, without the
    usage block argparse would print first, while main() runs.
    """
    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _usage_error
    try:
        result = main(argv)
    except (UserError, OSError) as err:
        message = str(err) if isinstance(err, UserError) else _environment_error(err)
        if message is None:
            raise
        print(f"{Path(sys.argv[0]).name or 'captcha'}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        argparse.ArgumentParser.error = original
    return int(result or 0)


def _environment_error(err: OSError) -> str | None:
    """The one line for a full disk or a folder that refuses files, wherever a script meets it (a script
    checks what it can before work starts; this catches the rest). None: a real bug, keep the traceback."""
    where = f"{err.filename}: " if err.filename else ""
    if err.errno in DISK_FULL:
        return f"{where}cannot write ({err.strerror}); free some space and run again"
    if err.errno in CANNOT_WRITE and err.filename:
        return f"{where}{err.strerror}; choose another path or change its permissions"
    return None
