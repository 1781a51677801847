"""Whether a folder's images need colour: how much of their edge contrast a grey copy keeps.

A model reads images grey unless told otherwise (`--color`, `--grey`), because grey is a third of
the input and most captchas draw their text darker or lighter than what surrounds it. Some draw
text and noise in different hues of about the same lightness: there the grey copy is nearly flat
and only colour tells them apart. `grey_share` measures that on a sample of the labelled images,
as the model would read them: the gradient energy of the grey copy (PIL's "L", the luma that
load_image's grey mode keeps) over the colour image's, per channel. It is 1 for grey images and
near 0 where every edge is a change of hue alone. Below GREY_ENOUGH the run reads colour. The
threshold was chosen by measuring styles that train better grey and in colour
(docs/BENCHMARKS.md, "Colour").
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from captchakit.data.images import ImageError, load_image

COLOUR_SAMPLE = 100  # images measured: the share is a median, steady well before this
GREY_ENOUGH = 0.25  # a grey copy keeping less of the edge contrast than this: read colour
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # PIL's convert("L") weights


def edge_share(rgb: np.ndarray) -> float:
    """(H, W, 3) uint8 -> gradient energy of its grey copy over the colour image's, per channel (at most about 1)."""
    a = rgb.astype(np.float32)
    grey = a @ LUMA
    colour = float(np.square(np.diff(a, axis=0)).sum() + np.square(np.diff(a, axis=1)).sum()) / 3
    kept = float(np.square(np.diff(grey, axis=0)).sum() + np.square(np.diff(grey, axis=1)).sum())
    return min(kept / colour, 1.0) if colour else 1.0


def grey_share(paths: list[Path], width: int, height: int, keep_aspect: bool = False) -> float | None:
    """The median edge_share of these images read in colour at the model's size; None if none is readable."""
    shares = []
    for path in paths:
        try:
            shares.append(edge_share(load_image(path, width, height, keep_aspect, channels=3)))
        except ImageError:
            continue
    return statistics.median(shares) if shares else None
