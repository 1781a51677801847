"""Small pieces every script shares: user errors, device choice, atomic writes, settings flags."""

from __future__ import annotations

import argparse
import contextlib
import errno
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from captcha_setting import Settings

EXIT_USAGE = 2
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # no space, over a size limit, over a quota
CANNOT_WRITE = (errno.EACCES, errno.EPERM, errno.EROFS)
TMP_MARK = ".part-"  # atomic_path's temporaries are named .NAME.part-XXXX, never anything a user wrote


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


def _number(kind: type, low: float, inclusive: bool = True) -> Callable[[str], float]:
    """An argparse type: a number of `kind` at least (or, not inclusive, above) `low`."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"{text} is too small; use {'at least' if inclusive else 'more than'} {low}")
        return value

    parse.__name__ = f"{kind.__name__} >= {low}"
    return parse


positive_int = _number(int, 1)  # counts that must be at least 1: --epochs, --batch-size
non_negative_int = _number(int, 0)  # 0 means "the default" or "none": --workers, --threads
positive_float = _number(float, 0.0, inclusive=False)  # --lr


def add_test_shifts_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--test-shifts",
        type=non_negative_int,
        default=None,
        metavar="K",
        help="also read each image moved K pixels left and right and average the three readings "
        "(3 costs 3x the time and cut the errors by about a fifth on the default task; 0 reads once; "
        "default: what the model was trained with)",
    )


def choose_device(name: str = "auto"):
    """Pick the torch device once: auto means CUDA, then MPS, then CPU."""
    import torch

    name = (name or "auto").lower()
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_ok else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine; use --device cpu or auto")
    if name == "mps" and not mps_ok:
        raise UserError("--device mps: MPS is not available on this machine; use --device cpu or auto")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise UserError(f"--device {name}: unknown device; use auto, cpu, cuda or mps")
    return torch.device(name)


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


def add_settings_args(parser, defaults: Settings | None = None, help_suffix: str = "") -> None:
    """Add --charset/--length/--width/--height; None means 'take from defaults or the model'."""
    d = defaults or Settings()
    g = parser.add_argument_group("captcha settings" + help_suffix)
    g.add_argument("--charset", default=None, help=f"characters a captcha may contain (default: {d.charset})")
    g.add_argument("--length", type=int, default=None, help=f"characters per captcha (default: {d.length})")
    g.add_argument("--width", type=int, default=None, help=f"image width in pixels (default: {d.width})")
    g.add_argument("--height", type=int, default=None, help=f"image height in pixels (default: {d.height})")


def settings_from_args(args, base: Settings | None = None) -> Settings:
    """Apply the settings flags on top of `base`, as a one-line error if they do not fit."""
    base = base or Settings()
    changes = {k: getattr(args, k, None) for k in ("charset", "length", "width", "height")}
    if changes["length"] is not None and base.min_length == base.length:
        changes["min_length"] = changes["length"]
    try:
        return base.with_(**changes)
    except ValueError as err:
        raise UserError(f"settings: {err}") from None
