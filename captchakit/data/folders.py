"""A user's own labelled folders: their labels, their image size, a seeded held-out share.

- Settings not given on the command line are read off the data: the charset and the label
  lengths from the labels, the image size from the median image (rounded to the network's
  stem factor), printed and stored in model.pkl.
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


def median_size(folder: Path, names: list[str], seed: int = 0) -> tuple[int, int] | None:
    """Median (width, height) over up to SIZE_SAMPLE images; only headers are read."""
    if len(names) > SIZE_SAMPLE:
        names = list(np.random.default_rng(seed).choice(names, SIZE_SAMPLE, replace=False))
    sizes = []
    for n in names:
        try:
            with Image.open(folder / n) as im:
                sizes.append(im.size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    if not sizes:
        return None
    return int(statistics.median_low(w for w, _ in sizes)), int(statistics.median_low(h for _, h in sizes))


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


def _abs(path) -> str | None:
    return str(Path(path).resolve()) if path else None
