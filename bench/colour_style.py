"""A colour captcha style where grey hurts: coloured text on coloured noise of about the same lightness.

    python bench/colour_style.py --out bench_data/colour --count 4000
    python bench/colour_style.py --out bench_data/colour640 --count 300 --width 640 --height 360

Writes LABEL_INDEX.png files (4 characters from digits and upper-case letters by default), one
seed per image, and prints one JSON line: the count, the size, and the median share of the edge
contrast a grey copy keeps (captchakit.data.colour, what the automatic colour choice measures).

Each image: a background of blobs and strokes in hues far from the text's, then the captcha
library's characters (with its own noise dots and curve) in the text's hue. Every colour is drawn
with the same luma (PIL's grey) give or take LUMA_JITTER, so a grey copy sees strokes of text and
noise alike at nearly one grey level, while the hue tells them apart. Only our own drawing and the
captcha library are used.
"""

from __future__ import annotations

import argparse
import colorsys
import random
import secrets
import statistics
import time
from pathlib import Path

import numpy as np
from _common import emit
from PIL import Image, ImageDraw

from captchakit.data.colour import LUMA, edge_share
from captchakit.data.images import load_image
from captchakit.data.synth import SeededSecrets, image_seed
from captchakit.settings import ALL_CHAR_SET

LUMA_JITTER = 10  # each colour's luma is the image's own +- this (--luma-jitter): grey keeps a faint cue only
BLOBS = 40  # background blobs at 160x60, scaled with the area
STROKES = 6  # background strokes (curves like the text's) at 160x60, scaled with the area


def iso_colour(hue: float, luma: float, saturation: float) -> tuple[int, int, int]:
    """The RGB colour of `hue` with PIL's luma `luma`, `saturation` (0-1) of the most that fits in 0-255."""
    full = np.array(colorsys.hsv_to_rgb(hue % 1.0, 1.0, 1.0), dtype=np.float32) * 255
    chroma = full - float(full @ LUMA)  # luma 0: adding it to a grey keeps the grey's luma
    room = [(255 - luma) / c if c > 0 else -luma / c for c in chroma if abs(c) > 1e-6]
    rgb = luma + saturation * min(room) * chroma
    return tuple(int(v) for v in np.clip(np.rint(rgb), 0, 255))


def noise_hue(rng: random.Random, text_hue: float) -> float:
    """A hue at least a quarter of the wheel away from the text's."""
    return text_hue + rng.uniform(0.25, 0.75)


def background(rng: random.Random, size: tuple[int, int], text_hue: float, luma: float, jitter: float) -> Image.Image:
    """Blobs and strokes in hues away from the text's, all within `jitter` of `luma`."""
    w, h = size
    scale = (w * h / (160 * 60)) ** 0.5  # sizes grow with the side, counts with the area

    def colour():
        return iso_colour(noise_hue(rng, text_hue), luma + rng.uniform(-jitter, jitter), rng.uniform(0.6, 1.0))

    image = Image.new("RGB", size, colour())
    draw = ImageDraw.Draw(image)
    for _ in range(round(BLOBS * scale * scale)):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(3, 10) * scale
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour())
    for _ in range(round(STROKES * scale * scale)):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        box = (x0, y0, x0 + rng.uniform(20, 80) * scale, y0 + rng.uniform(10, 40) * scale)
        draw.arc(box, rng.uniform(0, 180), rng.uniform(180, 360), fill=colour(), width=max(1, round(3 * scale)))
    return image


def render(seed: int, index: int, size: tuple[int, int], charset: str, length: int, jitter: float = LUMA_JITTER) -> tuple[str, Image.Image]:
    """(label, RGB image) of one captcha of this style; the same for the same seed and index."""
    import captcha.image
    from captcha.image import ImageCaptcha

    rng = SeededSecrets(image_seed(seed, "colour-style", index))
    label = "".join(rng.choice(charset) for _ in range(length))
    text_hue, luma = rng.random(), rng.uniform(100, 160)
    text = iso_colour(text_hue, luma + rng.uniform(-jitter, jitter), rng.uniform(0.7, 1.0))
    fonts = tuple(round(s * size[1] / 60) for s in (42, 50, 56))  # the library's sizes for 60 pixels high
    captcha.image.secrets = rng  # the library draws from the module global `secrets` (as data/synth.py does)
    try:
        mask = ImageCaptcha(width=size[0], height=size[1], font_sizes=fonts).generate_image(label, (0, 0, 0), (255, 255, 255, 255))
    finally:
        captcha.image.secrets = secrets
    image = Image.composite(Image.new("RGB", size, text), background(rng, size, text_hue, luma, jitter), mask.convert("L"))
    return label, image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder the images are written to (created)")
    p.add_argument("--count", type=int, default=4000, help="images (default: %(default)s)")
    p.add_argument("--width", type=int, default=160, help="image width (default: %(default)s)")
    p.add_argument("--height", type=int, default=60, help="image height (default: %(default)s)")
    p.add_argument("--charset", default=ALL_CHAR_SET, help="characters (default: digits and upper-case letters)")
    p.add_argument("--length", type=int, default=4, help="characters per captcha (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed (default: %(default)s)")
    p.add_argument("--luma-jitter", type=float, default=LUMA_JITTER, help="each colour's luma +- this (default: %(default)s)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, shares = time.perf_counter(), []
    for i in range(args.count):
        label, image = render(args.seed, i, (args.width, args.height), args.charset, args.length, args.luma_jitter)
        image.save(out / f"{label}_{i:05d}.png")
        if i < 100:
            shares.append(edge_share(load_image(image, args.width, args.height, channels=3)))
    emit(
        {
            "out": str(out),
            "count": args.count,
            "luma_jitter": args.luma_jitter,
            "size": f"{args.width}x{args.height}",
            "grey_share": round(statistics.median(shares), 3) if shares else None,
            "seconds": round(time.perf_counter() - start, 1),
        }
    )


if __name__ == "__main__":
    main()
