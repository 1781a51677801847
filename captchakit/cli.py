"""Command-line pieces the scripts share: number types, the settings flags, --test-shifts, --min-confidence."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from captchakit.errors import UserError
from captchakit.settings import Settings


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


def probability(text: str) -> float:
    """An argparse type: a number from 0 to 1 (--min-confidence)."""
    value = _number(float, 0.0)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} is not a probability; use a number from 0 to 1, such as 0.9")
    return value


def add_min_confidence_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--min-confidence",
        type=probability,
        default=None,
        metavar="T",
        help="mark a reading under confidence T (0-1) as unsure, still giving the best reading, so that a client can fetch a "
        "new captcha instead of sending a likely wrong answer; with a calibrated model T is the least chance of being "
        "right that you accept (captcha_test.py's coverage table shows what each T keeps; default: never unsure)",
    )


def add_test_shifts_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--test-shifts",
        type=non_negative_int,
        default=None,
        metavar="K",
        help="also read each image moved K pixels left and right and average the three readings: "
        "a small ensemble, three forward passes per image (3 is a good choice; what it gains: "
        "docs/BENCHMARKS.md, study item 13; 0 reads once; CTC models read once only; default: as the model was saved, "
        "which is 3 for a position head that captcha_train.py trained and 0 for the shipped models)",
    )


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
