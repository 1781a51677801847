"""A user's own labelled folders: their labels, their image size, a seeded held-out share.

- Settings not given on the command line are read off the data: the charset and the label
  lengths from the labels, the image size from the median image (rounded to the network's
  stem factor; images taller than WORKING_HEIGHT are read scaled down to it, their median
  aspect ratio kept: `working_size`), printed and stored in model.pkl.
- `--val-split F` holds a seeded share of the training folder out for validation and
  records which files, so that `captcha_test.py --data SAME_FOLDER` tests only those.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from captchakit.data.images import label_from_name, list_images
from captchakit.data.labels import match_folder, read_labels_file
from captchakit.errors import UserError

SIZE_SAMPLE = 500  # images whose size is read to take the median
# The tallest image a network reads by default: a captcha's characters stay legible at this
# height, and a step's cost grows with the pixels, so a screenshot-sized captcha read at full
# size trains many times slower than a small one (docs/BENCHMARKS.md, "Working resolution").
# Smaller images are read at their own size, as before.
WORKING_HEIGHT = 64
MIN_WORKING_WIDTH = 160  # the default captchas' width: fewer columns lose characters of a wide text
MAX_WORKING_HEIGHT = 128
MIN_SHARE = 20  # the fewest images a validation or test share holds out of a set of 100 or more


# --- labels -----------------------------------------------------------------------------


def folder_labels(folder, labels_path, flag: str = "--labels", quiet: bool = False) -> dict[str, str] | None:
    """file name -> label from a labels file matched to `folder`, or None to read labels from names."""
    if not labels_path:
        return None
    lf = read_labels_file(labels_path, flag)
    matched = match_folder(lf, [e.name for e in list_images(Path(folder))], folder)
    if not quiet:
        for line in matched.notes(lf, folder):
            print(line)
    return matched.labels


def raw_labels(folder: Path, labels: dict[str, str] | None) -> dict[str, str]:
    """Every image name of `folder` -> its label ('' when it has none)."""
    names = [e.name for e in list_images(folder)]
    return {n: labels.get(n, "") if labels is not None else label_from_name(n) for n in names}


# --- settings read off the data -----------------------------------------------------------


def round_to(value: int, step: int) -> int:
    """The nearest multiple of `step` (halves round up), at least 16 and at least `step`."""
    return max(int(math.floor(value / step + 0.5)) * step, step * math.ceil(16 / step))


def sample_names(names: list[str], count: int, seed: int) -> list[str]:
    """Up to `count` of `names`, a seeded choice when there are more."""
    return list(np.random.default_rng(seed).choice(names, count, replace=False)) if len(names) > count else list(names)


def image_sizes(folder: Path, names: list[str], seed: int = 0) -> list[tuple[int, int]]:
    """(width, height) of up to SIZE_SAMPLE of the images (a seeded sample); only headers are read."""
    sizes = []
    for n in sample_names(names, SIZE_SAMPLE, seed):
        try:
            with Image.open(folder / n) as im:
                sizes.append(im.size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return sizes


def median_size(folder: Path, names: list[str], seed: int = 0) -> tuple[int, int] | None:
    """Median (width, height) over up to SIZE_SAMPLE images; only headers are read."""
    return median_of(image_sizes(folder, names, seed))


def median_of(sizes: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The median (width, height) of these sizes, each the lower middle value; None for none."""
    if not sizes:
        return None
    return int(statistics.median_low(w for w, _ in sizes)), int(statistics.median_low(h for _, h in sizes))


def working_size(sizes: list[tuple[int, int]], stem: int) -> tuple[int, int] | None:
    """(width, height) to read images of these sizes at when the median is taller than WORKING_HEIGHT:
    that height (a multiple of `stem`) and the width that keeps the median aspect ratio; None: read at the median size.

    An image narrower than MIN_WORKING_WIDTH at that height (a large, squarish one) is read taller
    instead, up to MAX_WORKING_HEIGHT: its text runs across the width, and 64 pixels of height
    left a 16:9 style 114 columns, too few for its characters (docs/BENCHMARKS.md, "Working resolution")."""
    if not sizes or statistics.median_low(h for _, h in sizes) <= WORKING_HEIGHT:
        return None
    aspect = statistics.median(w / h for w, h in sizes)
    height = min(max(WORKING_HEIGHT, math.ceil(MIN_WORKING_WIDTH / aspect)), MAX_WORKING_HEIGHT, statistics.median_low(h for _, h in sizes))
    height = max(height // stem * stem, round_to(16, stem))
    return round_to(aspect * height, stem), height


# --- held-out share -------------------------------------------------------------------------


def split_names(names: list[str], fraction: float, seed: int, flag: str, folder) -> tuple[list[str], list[str]]:
    """(kept, held out): a seeded share `fraction` of `names`, the same for the same names and seed."""
    if not 0 < fraction < 1:
        raise UserError(f"{flag} {fraction}: give a share between 0 and 1, e.g. 0.1")
    names = sorted(names)
    held = round(len(names) * fraction)
    if held < 1 or held >= len(names):
        raise UserError(
            f"{flag} {fraction}: {folder} has {len(names):,} usable image(s), too few to hold {fraction:.0%} out; "
            "label more images or pass a separate validation folder"
        )
    order = np.random.default_rng(seed).permutation(len(names))
    out = {names[i] for i in order[:held]}
    return [n for n in names if n not in out], [n for n in names if n in out]


def share_size(n: int, fraction: float) -> int:
    """Images in a share `fraction` of n: at least MIN_SHARE (or a fifth of a smaller set), so that a
    small set's validation and test shares still say something."""
    return max(round(n * fraction), min(MIN_SHARE, n // 5)) if fraction > 0 else 0


def three_way_split(names: list[str], val: float, test: float, seed: int, folder) -> tuple[list[str], list[str], list[str]]:
    """(train, validation, test) shares of `names`, seeded: the same for the same names and seed.

    The test share comes first in the seeded order, so a larger validation share leaves it as it is."""
    for flag, fraction in (("--val-split", val), ("--test-split", test)):
        if not 0 <= fraction < 1 or (flag == "--val-split" and fraction == 0):
            raise UserError(f"{flag} {fraction}: give a share between 0 and 1, e.g. 0.1")
    names = sorted(names)
    n_test, n_val = share_size(len(names), test), share_size(len(names), val)
    if n_val < 1 or n_test + n_val >= len(names):
        raise UserError(
            f"--val-split {val} --test-split {test}: {folder} has {len(names):,} usable image(s), too few to hold "
            f"{val:.0%} and {test:.0%} out; label more images or pass a separate validation folder (--val-dir)"
        )
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    held_test, held_val = set(order[:n_test]), set(order[n_test : n_test + n_val])
    train = [n for n in names if n not in held_test and n not in held_val]
    return train, [n for n in names if n in held_val], [n for n in names if n in held_test]


def absolute(path) -> str | None:
    """The resolved path as model.pkl records it (None stays None): what training and testing compare."""
    return str(Path(path).resolve()) if path else None
