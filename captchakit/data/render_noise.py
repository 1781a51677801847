"""What the varied renderer (data/render.py) draws around the text: colours, backgrounds, noise, warp, artefacts.

Every function draws from the generators it is given, a seeded random.Random for the choices and
a numpy Generator seeded from it for whole arrays, so one image's seed fixes every pixel.
"""

from __future__ import annotations

import colorsys
import io
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Lightness bands: the background takes one, the text the other, so the text always stands out,
# whatever hues are drawn. Most real captchas are dark text on a light ground; some are inverted.
LIGHT = (0.78, 0.97)
DARK = (0.04, 0.42)
DARK_GROUND_SHARE = 0.2

Colour = tuple[int, int, int]


def colour(rng: random.Random, band: tuple[float, float]) -> Colour:
    """A colour of any hue with its lightness in `band` (0-1) and a random saturation."""
    hue, light, saturation = rng.random(), rng.uniform(*band), rng.random() ** 1.5
    return tuple(round(255 * c) for c in colorsys.hls_to_rgb(hue, light, saturation))


def bands(rng: random.Random) -> tuple[tuple[float, float], tuple[float, float]]:
    """(background band, text band): light ground and dark text, or the other way round."""
    return (DARK, LIGHT) if rng.random() < DARK_GROUND_SHARE else (LIGHT, DARK)


def background(kind: str, size: tuple[int, int], band: tuple[float, float], rng: random.Random, nprng: np.random.Generator) -> Image.Image:
    """An RGB ground of `size`: plain, gradient, texture (blurred random noise) or blocks (colour rectangles)."""
    w, h = size
    base = colour(rng, band)
    if kind == "plain":
        return Image.new("RGB", size, base)
    if kind == "gradient":
        angle, other = rng.uniform(0, 2 * math.pi), np.array(colour(rng, band), dtype=np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = ((t - t.min()) / max(float(np.ptp(t)), 1.0))[..., None]
        pixels = np.array(base, dtype=np.float32) * (1 - t) + other * t
        return Image.fromarray(pixels.round().astype(np.uint8), "RGB")
    if kind == "texture":
        cell = rng.randint(2, max(2, h // 6))
        coarse = nprng.uniform(-1, 1, (max(1, h // cell), max(1, w // cell), 3))
        spread = 255 * (band[1] - band[0]) / 2
        pixels = np.clip(np.array(base, dtype=np.float32) + spread * coarse, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels, "RGB").resize(size, Image.Resampling.BICUBIC)
        return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    if kind == "blocks":
        image = Image.new("RGB", size, base)
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(2, 7)):
            x0, y0 = rng.randrange(w), rng.randrange(h)
            x1, y1 = x0 + rng.randint(w // 8 + 1, w // 2 + 1), y0 + rng.randint(h // 4 + 1, h + 1)
            draw.rectangle((x0, y0, x1, y1), fill=colour(rng, band))
        return image
    raise ValueError(f"no background {kind!r}")


def lines(image: Image.Image, ink: Colour, band: tuple[float, float], rng: random.Random) -> None:
    """Straight strokes across the text, some in the text's own colour (they then join the characters)."""
    w, h = image.size
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 4)):
        start = (rng.uniform(0, w * 0.3), rng.uniform(0, h))
        end = (rng.uniform(w * 0.6, w), rng.uniform(0, h))
        fill = ink if rng.random() < 0.5 else colour(rng, band)
        draw.line((start, end), fill=fill, width=rng.randint(1, max(1, h // 20)))


def arcs(image: Image.Image, ink: Colour, band: tuple[float, float], rng: random.Random) -> None:
    """Curves: ellipse arcs as the captcha library draws them, or a sine wave along the text."""
    w, h = image.size
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 3)):
        fill = ink if rng.random() < 0.5 else colour(rng, band)
        width = rng.randint(1, max(1, h // 16))
        if rng.random() < 0.5:
            x0, y0 = rng.uniform(-w * 0.2, w * 0.3), rng.uniform(-h * 0.5, h * 0.5)
            box = (x0, y0, x0 + rng.uniform(w * 0.5, w * 1.2), y0 + rng.uniform(h * 0.5, h * 1.5))
            start = rng.uniform(0, 360)
            draw.arc(box, start, start + rng.uniform(60, 200), fill=fill, width=width)
        else:
            middle, amplitude = rng.uniform(h * 0.3, h * 0.7), rng.uniform(h * 0.05, h * 0.3)
            period, phase = rng.uniform(w * 0.3, w * 1.5), rng.uniform(0, 2 * math.pi)
            points = [(x, middle + amplitude * math.sin(2 * math.pi * x / period + phase)) for x in range(0, w + 2, 2)]
            draw.line(points, fill=fill, width=width, joint="curve")


def dots(image: Image.Image, ink: Colour, rng: random.Random, nprng: np.random.Generator) -> Image.Image:
    """Speckles, one or two pixels each, in the text's colour or any colour (salt and pepper)."""
    pixels = np.array(image)
    h, w = pixels.shape[:2]
    count = int(w * h * rng.uniform(0.005, 0.04))
    ys, xs = nprng.integers(0, h, count), nprng.integers(0, w, count)
    palette = np.array([ink, (0, 0, 0), (255, 255, 255)], dtype=np.uint8)
    mixed = nprng.integers(0, 256, (count, 3), dtype=np.uint8)
    pick = nprng.integers(0, 4, count)
    ink_rows = np.where(pick[:, None] < 3, palette[np.minimum(pick, 2)], mixed)
    pixels[ys, xs] = ink_rows
    if rng.random() < 0.5:  # thicker specks: each dot spreads one pixel right and down
        pixels[np.minimum(ys + 1, h - 1), np.minimum(xs + 1, w - 1)] = ink_rows
    return Image.fromarray(pixels, "RGB")


def warp(image: Image.Image, kind: str, rng: random.Random, nprng: np.random.Generator) -> Image.Image:
    """Displace the whole image smoothly: `sine` waves along both axes, or `elastic`, a smoothed random field."""
    w, h = image.size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "sine":
        amp_y, amp_x = h * rng.uniform(0.03, 0.1), h * rng.uniform(0.0, 0.06)
        dy = amp_y * np.sin(2 * np.pi * xx / (w * rng.uniform(0.25, 1.0)) + rng.uniform(0, 2 * np.pi))
        dx = amp_x * np.sin(2 * np.pi * yy / (h * rng.uniform(0.8, 2.0)) + rng.uniform(0, 2 * np.pi))
    elif kind == "elastic":
        amplitude = h * rng.uniform(0.03, 0.08)
        grid = (max(2, w * 6 // max(h, 1)), 6)  # control points about every sixth of the height
        dx, dy = (_smooth_field(nprng, grid, (w, h)) * amplitude for _ in range(2))
    else:
        raise ValueError(f"no warp {kind!r}")
    return Image.fromarray(_remap(np.asarray(image, dtype=np.float32), xx + dx, yy + dy), image.mode)


def _smooth_field(nprng: np.random.Generator, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Random values on a coarse grid, interpolated smoothly (bicubic) up to `size`, about -1 to 1."""
    coarse = nprng.uniform(-1, 1, (grid[1], grid[0])).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, "F").resize(size, Image.Resampling.BICUBIC))


def _remap(pixels: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """pixels sampled at (x, y), bilinearly; positions beyond the edge take the edge's value."""
    h, w = pixels.shape[:2]
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0, y0 = np.floor(x).astype(np.intp), np.floor(y).astype(np.intp)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    if pixels.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = pixels[y0, x0] * (1 - fx) + pixels[y0, x1] * fx
    bottom = pixels[y1, x0] * (1 - fx) + pixels[y1, x1] * fx
    return np.clip(top * (1 - fy) + bottom * fy + 0.5, 0, 255).astype(np.uint8)


def blur(image: Image.Image, rng: random.Random) -> Image.Image:
    """A Gaussian blur of up to about a fortieth of the height: soft, still readable."""
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0) * image.height / 40))


def jpeg(image: Image.Image, rng: random.Random) -> Image.Image:
    """Re-encoded as JPEG at a random low quality, as sites that serve JPEG captchas do: blocks and ringing."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=rng.randint(10, 60))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert(image.mode)
