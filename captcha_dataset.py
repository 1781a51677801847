"""`python captcha_dataset.py check DIR` and `split DIR`: look at a labelled folder before training.

    python captcha_dataset.py check mycaptchas/                  # counts, sizes, labels, problems
    python captcha_dataset.py check mycaptchas/ --labels labels.csv
    python captcha_dataset.py split mycaptchas/ --test 0.1 --seed 0          # move into train/ and test/
    python captcha_dataset.py split mycaptchas/ --test 0.1 --link --out split/  # or link, leaving DIR as it is

`check` reads every image the way training does (captcha_dataset.load_image) and reports what a
user needs to know first: how many images are usable, their sizes and modes, the label lengths
and the charset training would infer, characters too rare to learn, files with identical bytes,
and every unusable file with its reason. `split` uses the same seeded choice as
`captcha_train.py --val-split`, so the same seed holds the same files out.
"""

from __future__ import annotations

import argparse

from captchakit.data.check import RARE, check, split
from captchakit.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="captcha_dataset.py", description="Check a labelled captcha folder, or split it into train/ test/.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{check,split}")
    c = sub.add_parser("check", help="report counts, sizes, labels, charset, rare characters, duplicates and unusable files")
    c.add_argument("folder", help="folder of labelled images (LABEL.png, LABEL_anything.png, or any names with --labels)")
    c.add_argument("--labels", metavar="FILE", help="CSV or TSV of filename,label lines (default: labels from file names)")
    c.add_argument("--charset", default=None, help="characters a label may hold (default: every character seen)")
    c.add_argument("--length", default=None, help="label length, N or MIN-MAX (default: any)")
    c.add_argument("--ignore-case", action="store_true", help="upper-case labels, as captcha_train.py --ignore-case does")
    c.add_argument("--rare", type=int, default=RARE, help="report characters seen fewer times than this (default: %(default)s)")
    c.add_argument("--all", action="store_true", help="list every unusable file and duplicate, not only the first 20")
    s = sub.add_parser("split", help="move or link the images into FOLDER/train and FOLDER/test, seeded")
    s.add_argument("folder", help="folder of labelled images")
    s.add_argument("--test", type=float, default=0.1, help="share of the images that goes to test/ (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="seed of the choice, as in captcha_train.py --val-split (default: %(default)s)")
    s.add_argument("--link", action="store_true", help="make symbolic links instead of moving the files (the folder stays as it is)")
    s.add_argument("--out", default=None, help="where train/ and test/ go (default: inside FOLDER)")
    s.add_argument("--labels", metavar="FILE", help="labels file of FOLDER: each part gets its own labels.csv")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return check(args) if args.command == "check" else split(args)


def cli() -> int:
    """The console command (pyproject.toml's [project.scripts]): main() with one-line errors."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
