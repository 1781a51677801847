"""Write labelled captcha images for training, testing and prediction.

    python captcha_gen.py                       # 100,000 train, 1,000 test, 1,000 predict
    python captcha_gen.py --train 2000 --seed 1 # a small, reproducible set
    python captcha_gen.py --length 6 --min-length 4   # labels of 4 to 6 characters
    python captcha_gen.py --style varied --seed 1     # many fonts, grounds and noises; 3-8 characters of 0-9A-Za-z

The train split draws the characters of captcha_setting.TRAIN_EMPHASIS (O and 0, which the
font draws nearly alike) more often than the others, `--emphasis` says how much; test and
predict stay uniform, so accuracy is measured on captchas as they come.

Files are named LABEL_ID.png, ID being the image's index in its split, so two captchas with
the same text never collide. Each image is written to a hidden temporary file and renamed
into place, so a killed run leaves no half-written image; running the same command again
generates only the IDs that are missing.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time

from captchakit import settings as cs
from captchakit.cli import add_settings_args, settings_from_args
from captchakit.data.render import DEFAULT_CHARSET, HEIGHTS, Renderer, RenderSpec
from captchakit.data.synth import emphasis_text, parse_emphasis
from captchakit.data.writer import NAME_UNSAFE, SPLITS, existing_ids, generate_split
from captchakit.errors import UserError, run_cli
from captchakit.files import check_free_space, check_writable_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Generate labelled captcha images (LABEL_ID.png) with the captcha library, or many styles with --style varied."
    )
    p.add_argument("--train", type=int, default=cs.TRAIN_COUNT, help="training images (default: %(default)s)")
    p.add_argument("--test", type=int, default=cs.TEST_COUNT, help="test images (default: %(default)s)")
    p.add_argument("--predict", type=int, default=cs.PREDICT_COUNT, help="images to predict (default: %(default)s)")
    p.add_argument("--out", default=cs.DATASET_PATH, help="folder that gets train/ test/ predict/ (default: %(default)s)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes drawing images (default: all cores, %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="make the images reproducible, byte for byte (default: random)")
    p.add_argument(
        "--emphasis",
        default=None,
        help="characters the train split draws more often, as CHARACTERS:WEIGHT groups, or none; the font draws O and 0 "
        f"nearly alike and the network needs more of them (default: {emphasis_text(cs.TRAIN_EMPHASIS)}, those in the charset)",
    )
    add_settings_args(p)
    p.add_argument(
        "--min-length",
        type=int,
        default=None,
        help="shortest label: each captcha draws its length between this and --length (default: every label --length long; "
        f"with --style varied {RenderSpec.min_length})",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help=f"longest label, the same as --length (default: --length; with --style varied {RenderSpec.max_length})",
    )
    p.add_argument(
        "--style",
        choices=("captcha", "varied"),
        default="captcha",
        help="captcha: the captcha library's look at one size; varied: our renderer (captchakit/data/render.py), "
        "which mixes many fonts, grounds, noises, warps, outline and hollow text, blur and JPEG artefacts, and the captcha "
        f"library's look, at heights of {HEIGHTS[0]}-{HEIGHTS[1]} px (or --height) and widths that follow the text; its "
        f"charset defaults to 0-9A-Za-z and labels are case-sensitive; --width and --emphasis do not apply (default: %(default)s)",
    )
    return p


def captcha_settings(args) -> cs.Settings:
    """The captcha style's settings from the flags."""
    if args.max_length is not None:
        if args.length is not None and args.length != args.max_length:
            raise UserError(f"--max-length {args.max_length} and --length {args.length}: they are the same flag; give one")
        args.length = args.max_length
    settings = settings_from_args(args)
    if args.min_length is not None:
        try:
            settings = settings.with_(min_length=args.min_length)
        except ValueError as err:
            raise UserError(f"--min-length {args.min_length}: {err}") from None
    return settings


def varied_spec(args) -> RenderSpec:
    """The varied style's spec from the flags; --length alone makes every label that long, as in the captcha style."""
    why = {"width": "each image is as wide as its text needs", "emphasis": "it draws every character equally often"}
    for flag, reason in why.items():
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag}: the varied style does not take it ({reason}); leave it out")
    if args.length is not None and args.max_length is not None and args.length != args.max_length:
        raise UserError(f"--max-length {args.max_length} and --length {args.length}: they are the same flag; give one")
    longest = next(n for n in (args.max_length, args.length, RenderSpec.max_length) if n is not None)
    fixed = args.length if args.max_length is None else None
    shortest = next(n for n in (args.min_length, fixed, min(RenderSpec.min_length, longest)) if n is not None)
    if not 1 <= shortest <= longest:
        raise UserError(f"--min-length {shortest} and --max-length {longest}: use 1 <= --min-length <= --max-length")
    if args.height is not None and args.height < 16:
        raise UserError(f"--height {args.height}: use at least 16 pixels")
    try:
        charset = DEFAULT_CHARSET if args.charset is None else args.charset
        return RenderSpec(charset=charset, min_length=shortest, max_length=longest, height=args.height)
    except ValueError as err:  # the lengths and height are checked above: what is left is the charset
        raise UserError(f"--charset: {err}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.style == "varied":
        spec = varied_spec(args)
        settings = cs.Settings(charset=spec.charset, length=spec.max_length, min_length=spec.min_length)
        # A varied image is at least HEIGHTS[0] high and about 20 px a character wide: half a byte a pixel errs low.
        what, source, pixels = spec.describe(), Renderer(spec), (spec.height or HEIGHTS[0]) * 20 * spec.min_length
    else:
        settings = captcha_settings(args)
        what, source, pixels = settings.describe(), None, settings.width * settings.height
    unsafe = "".join(c for c in settings.charset if c in NAME_UNSAFE)
    if unsafe:
        raise UserError(f"--charset: {unsafe!r} cannot be in the LABEL part of a LABEL_ID.png file name; leave it out")
    for flag in ("train", "test", "predict"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag} {getattr(args, flag)}: a count cannot be negative")
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: use at least 1")
    emphasis = parse_emphasis(args.emphasis, settings.charset) if source is None else {}
    out = check_writable_dir(args.out, "--out")
    missing = 0
    for split in SPLITS:  # every folder that gets images, and room for them, before any is drawn
        count = getattr(args, split)
        if count:
            have = existing_ids(check_writable_dir(out / split, "--out"))
            missing += sum(1 for i in range(count) if i not in have)
    # Half a byte a pixel errs low for these PNGs: only a disk that surely cannot hold them is refused.
    check_free_space(out, missing * pixels // 2, "--out")
    print(f"generating {what} into {out}/ with {args.workers} worker(s)")
    if emphasis and args.train:
        print(f"the train split draws {emphasis_text(emphasis)} (characters:times as often as the others); test and predict are uniform")
    # The renderer draws every image from a seed; without --seed, one drawn for this run keeps its images apart.
    seed = args.seed if args.seed is not None or source is None else secrets.randbits(63)
    start, written = time.perf_counter(), 0
    for split in SPLITS:
        chosen = emphasis if split == "train" else None
        written += generate_split(out, split, getattr(args, split), settings, args.workers, seed, chosen, source)
    elapsed = time.perf_counter() - start
    rate = written / elapsed if elapsed > 0 else 0.0
    print(f"done: {written:,} images written in {elapsed:.1f} s ({rate:.0f} images/s)")
    return 0


def cli() -> int:
    """The console command (pyproject.toml's [project.scripts]): main() with one-line errors."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
