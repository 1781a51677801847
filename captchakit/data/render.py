"""Varied synthetic captchas: many fonts, layouts, grounds, noises and artefacts, seeded one by one.

The training source of a general reader, which must have seen far more kinds of captcha than the
captcha library draws. `render(spec, seed, split, index)` draws one (label, PIL image); every
choice, from the style mix to each pixel of noise, comes from that image's own seed, so the same
(seed, split, index) gives the same bytes in any process or order. The style is drawn per image
with the weights below; `style_of` tells which one an image got. Colours, grounds, noise, warp
and artefacts are in data/render_noise.py.
"""

from __future__ import annotations

import importlib.util
import string
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

from captchakit.data import render_noise as rn
from captchakit.data.synth import CaptchaFactory, SeededSecrets, image_seed
from captchakit.settings import Settings

DEFAULT_CHARSET = string.digits + string.ascii_uppercase + string.ascii_lowercase
HEIGHTS = (32, 80)  # image height in pixels, drawn per image unless the spec fixes one
# The style mix, drawn per image. The captcha library's own look keeps its place in the mix.
CAPTCHA_LIBRARY_SHARE = 0.15
BACKGROUND_WEIGHTS = {"plain": 3, "gradient": 2, "texture": 2, "blocks": 2}
TEXT_WEIGHTS = {"solid": 6, "outline": 1, "hollow": 1}  # outline: a stroke round the fill; hollow: the stroke alone
COLOUR_WEIGHTS = {"one": 1, "per_char": 1}  # one colour for the text, or one per character
WARP_WEIGHTS = {"none": 2, "sine": 1, "elastic": 1}
NOISE_SHARES = {"lines": 0.35, "arcs": 0.3, "dots": 0.3}  # each drawn or not, independently
BLUR_SHARE, JPEG_SHARE, GREY_SHARE = 0.25, 0.25, 0.2
CAPTCHA_LIBRARY_FONT = "Droid Sans Mono"

# The faces drawn from: TTF files that installed packages ship, as (package, path inside it).
_MPL = "mpl-data/fonts/ttf/"
FONT_FILES = {
    "DejaVu Sans": ("matplotlib", _MPL + "DejaVuSans.ttf"),
    "DejaVu Sans Bold": ("matplotlib", _MPL + "DejaVuSans-Bold.ttf"),
    "DejaVu Sans Oblique": ("matplotlib", _MPL + "DejaVuSans-Oblique.ttf"),
    "DejaVu Sans Bold Oblique": ("matplotlib", _MPL + "DejaVuSans-BoldOblique.ttf"),
    "DejaVu Serif": ("matplotlib", _MPL + "DejaVuSerif.ttf"),
    "DejaVu Serif Bold": ("matplotlib", _MPL + "DejaVuSerif-Bold.ttf"),
    "DejaVu Serif Italic": ("matplotlib", _MPL + "DejaVuSerif-Italic.ttf"),
    "DejaVu Serif Bold Italic": ("matplotlib", _MPL + "DejaVuSerif-BoldItalic.ttf"),
    "DejaVu Sans Mono": ("matplotlib", _MPL + "DejaVuSansMono.ttf"),
    "DejaVu Sans Mono Bold": ("matplotlib", _MPL + "DejaVuSansMono-Bold.ttf"),
    "DejaVu Sans Mono Oblique": ("matplotlib", _MPL + "DejaVuSansMono-Oblique.ttf"),
    "DejaVu Sans Mono Bold Oblique": ("matplotlib", _MPL + "DejaVuSansMono-BoldOblique.ttf"),
    "STIXGeneral": ("matplotlib", _MPL + "STIXGeneral.ttf"),
    "STIXGeneral Bold": ("matplotlib", _MPL + "STIXGeneralBol.ttf"),
    "STIXGeneral Italic": ("matplotlib", _MPL + "STIXGeneralItalic.ttf"),
    "STIXGeneral Bold Italic": ("matplotlib", _MPL + "STIXGeneralBolIta.ttf"),
    "Computer Modern Roman": ("matplotlib", _MPL + "cmr10.ttf"),
    "Computer Modern Bold": ("matplotlib", _MPL + "cmb10.ttf"),
    "Computer Modern Sans": ("matplotlib", _MPL + "cmss10.ttf"),
    "Computer Modern Typewriter": ("matplotlib", _MPL + "cmtt10.ttf"),
    "Computer Modern Italic": ("matplotlib", _MPL + "cmti10.ttf"),
    CAPTCHA_LIBRARY_FONT: ("captcha", "data/DroidSansMono.ttf"),
}


@dataclass(frozen=True)
class RenderSpec:
    """What the renderer may draw: labels of min_length to max_length characters of `charset`, and a
    fixed image height, or None for heights drawn per image from HEIGHTS."""

    charset: str = DEFAULT_CHARSET
    min_length: int = 3
    max_length: int = 8
    height: int | None = None

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """Why these values cannot be drawn, or None."""
        if not self.charset or len(set(self.charset)) != len(self.charset) or any(c.isspace() for c in self.charset):
            return f"the charset {self.charset!r} must be non-empty, without repeats or white space"
        if not 1 <= self.min_length <= self.max_length:
            return f"the lengths must satisfy 1 <= min_length <= max_length (got {self.min_length} and {self.max_length})"
        if self.height is not None and self.height < 16:
            return f"the height must be at least 16 pixels (got {self.height})"
        if not fonts_for(self.charset):
            lacking = "".join(c for c in self.charset if not any(ord(c) in _cmap(n) for n in font_names()))
            why = f"none has {lacking!r}" if lacking else "none has all of its characters"
            return f"the charset {self.charset!r} cannot be drawn by the {len(font_names())} fonts of the varied style: {why}"
        return None

    def describe(self) -> str:
        lengths = f"{self.min_length}-{self.max_length}" if self.min_length < self.max_length else str(self.min_length)
        high = f"{self.height} px" if self.height else f"{HEIGHTS[0]}-{HEIGHTS[1]} px"
        return f"{lengths} characters from {self.charset!r} ({len(self.charset)}), varied style, {high} high"


@dataclass(frozen=True)
class Style:
    """The choices one image got. source "captcha" is the captcha library's look, which has no font,
    ground, text, colours, warp or noise of ours; blur, jpeg and grey apply to both sources."""

    source: str  # "captcha" or "varied"
    font: str = ""
    background: str = ""
    text: str = ""
    colours: str = ""
    warp: str = "none"
    noise: tuple[str, ...] = ()
    blur: bool = False
    jpeg: bool = False
    grey: bool = False


@cache
def font_paths() -> dict[str, Path]:
    """The FONT_FILES faces that are installed: name -> path, found through the packages' locations."""
    found = {}
    for name, (package, inside) in FONT_FILES.items():
        spec = importlib.util.find_spec(package)  # finds the package without importing it (matplotlib is slow to import)
        path = Path(spec.origin).parent / inside if spec and spec.origin else None
        if path and path.is_file():
            found[name] = path
    return found


def font_names() -> list[str]:
    """Names of the faces the renderer can use (README lists them)."""
    return list(font_paths())


@cache
def _cmap(name: str) -> frozenset[int]:
    """The code points the face maps to a glyph: a missing one would draw as a box or nothing."""
    with TTFont(font_paths()[name], lazy=True) as font:
        return frozenset((font.getBestCmap() or {}).keys())


@cache
def fonts_for(charset: str) -> tuple[str, ...]:
    """The faces with a glyph for every character of `charset`; the others are skipped."""
    return tuple(name for name in font_names() if all(ord(c) in _cmap(name) for c in charset))


@lru_cache(maxsize=1024)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_paths()[name]), size)


def _weighted(rng: SeededSecrets, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _generator(seed: int, split: str, index: int) -> SeededSecrets:
    # "varied/" keeps these seeds apart from the captcha style's: the two styles with one seed never share an image.
    return SeededSecrets(image_seed(seed, f"varied/{split}", index))


def _choose_style(spec: RenderSpec, rng: SeededSecrets) -> Style:
    artefacts = {"blur": rng.random() < BLUR_SHARE, "jpeg": rng.random() < JPEG_SHARE, "grey": rng.random() < GREY_SHARE}
    fonts = fonts_for(spec.charset)
    if CAPTCHA_LIBRARY_FONT in fonts and rng.random() < CAPTCHA_LIBRARY_SHARE:
        return Style("captcha", **artefacts)
    return Style(
        "varied",
        font=rng.choice(fonts),
        background=_weighted(rng, BACKGROUND_WEIGHTS),
        text=_weighted(rng, TEXT_WEIGHTS),
        colours=_weighted(rng, COLOUR_WEIGHTS),
        warp=_weighted(rng, WARP_WEIGHTS),
        noise=tuple(kind for kind, share in NOISE_SHARES.items() if rng.random() < share),
        **artefacts,
    )


def style_of(spec: RenderSpec, seed: int, split: str, index: int) -> Style:
    """The style `render` draws image `index` of `split` in, without drawing it."""
    return _choose_style(spec, _generator(seed, split, index))


def render(spec: RenderSpec, seed: int, split: str, index: int) -> tuple[str, Image.Image]:
    """(label, PIL image) of image `index` of `split`: the same bytes for the same arguments.
    The image is RGB, or L when the style is grey; its size follows the height and the text."""
    rng = _generator(seed, split, index)
    style = _choose_style(spec, rng)
    height = spec.height or rng.randint(*HEIGHTS)
    length = rng.randint(spec.min_length, spec.max_length)
    if style.source == "captcha":
        label, image = _library_captcha(spec.charset, length, height, rng)
    else:
        label = "".join(rng.choice(spec.charset) for _ in range(length))
        image = _varied(label, height, style, rng)
    if style.blur:
        image = rn.blur(image, rng)
    if style.jpeg:
        image = rn.jpeg(image, rng)
    return label, image.convert("L") if style.grey else image


def rendered(spec: RenderSpec, count: int, seed: int, split: str) -> Iterator[tuple[str, Image.Image]]:
    """(label, image) for images 0 .. count-1 of `split`."""
    for index in range(count):
        yield render(spec, seed, split, index)


class Renderer:
    """`render` behind the interface of synth.CaptchaFactory, so data/writer.py writes varied sets alike."""

    def __init__(self, spec: RenderSpec):
        self.spec = spec

    @classmethod
    def for_settings(cls, settings: Settings) -> Renderer:
        """The varied style for a model's settings: their charset and label lengths, heights drawn per
        image; ValueError when the fonts cannot draw the charset."""
        return cls(RenderSpec(settings.charset, settings.min_length, settings.length))

    def make_seeded(self, seed: int, split: str, index: int) -> tuple[str, Image.Image]:
        return render(self.spec, seed, split, index)


@lru_cache(maxsize=64)
def _library_factory(charset: str, length: int) -> CaptchaFactory:
    # The library's look at its usual 60 px height and 40 px per character; render() then resizes it.
    return CaptchaFactory(Settings(charset=charset, length=length, width=40 * length, height=60))


def _library_captcha(charset: str, length: int, height: int, rng: SeededSecrets) -> tuple[str, Image.Image]:
    label, image = _library_factory(charset, length).make(rng)
    width = max(16, round(image.width * height / image.height * rng.uniform(0.8, 1.2)))
    return label, image.resize((width, height), Image.Resampling.BICUBIC)


def _varied(label: str, height: int, style: Style, rng: SeededSecrets) -> Image.Image:
    """Our own captcha of `label`: the characters laid out on a ground, then noise and warp."""
    nprng = np.random.default_rng(rng.getrandbits(64))
    ground, ink_band = rn.bands(rng)
    inks = [rn.colour(rng, ink_band)]
    inks += [rn.colour(rng, ink_band) if style.colours == "per_char" else inks[0] for _ in label[1:]]
    text = _lay_out(label, height, style, inks, rng)
    image = rn.background(style.background, text.size, ground, rng, nprng).convert("RGBA")
    image = Image.alpha_composite(image, text).convert("RGB")
    if "lines" in style.noise:
        rn.lines(image, inks[0], ink_band, rng)
    if "arcs" in style.noise:
        rn.arcs(image, inks[-1], ink_band, rng)
    if style.warp != "none":
        image = rn.warp(image, style.warp, rng, nprng)
    if "dots" in style.noise:
        image = rn.dots(image, inks[0], rng, nprng)
    return image


def _glyph(char: str, font: ImageFont.FreeTypeFont, text: str, ink: rn.Colour, rng: SeededSecrets) -> tuple[Image.Image, float]:
    """One character on a transparent tile, rotated, and the height of its centre above the baseline."""
    stroke = max(1, round(font.size * rng.uniform(0.03, 0.07))) if text != "solid" else 0
    left, top, right, bottom = font.getbbox(char, anchor="ls", stroke_width=stroke)
    tile = Image.new("RGBA", (right - left + 2, bottom - top + 2), (0, 0, 0, 0))
    fill = {"solid": ink, "outline": rn.colour(rng, rn.LIGHT if sum(ink) < 384 else rn.DARK), "hollow": (0, 0, 0, 0)}[text]
    # Hollow: a transparent fill drawn over the stroke clears the inside, whatever the ground behind it.
    ImageDraw.Draw(tile).text((1 - left, 1 - top), char, font=font, fill=fill, anchor="ls", stroke_width=stroke, stroke_fill=ink)
    return tile, -(top + bottom) / 2


def _lay_out(label: str, height: int, style: Style, inks: list[rn.Colour], rng: SeededSecrets) -> Image.Image:
    """The label on a transparent layer `height` high and as wide as the text needs: per-character
    scale, rotation, vertical jitter and spacing (negative spacing makes characters touch and overlap)."""
    size = height * rng.uniform(0.5, 0.75)
    tilt, jitter, scale = rng.uniform(0, 30), rng.uniform(0, 0.12) * height, rng.uniform(0, 0.2)
    spacing = rng.uniform(-0.25, 0.15) * size
    baseline = height * rng.uniform(0.45, 0.6) + size * 0.3
    placed, x = [], round(rng.uniform(0.1, 0.5) * size)
    for char, ink in zip(label, inks, strict=True):
        font = _font(style.font, max(8, round(size * rng.uniform(1 - scale, 1 + scale))))
        tile, centre = _glyph(char, font, style.text, ink, rng)
        tile = tile.rotate(rng.uniform(-tilt, tilt), Image.Resampling.BICUBIC, expand=True)
        if tile.height > height:  # a big, tilted glyph: keep its middle
            cut = (tile.height - height) // 2
            tile = tile.crop((0, cut, tile.width, cut + height))
        y = round(baseline - centre - tile.height / 2 + rng.uniform(-jitter, jitter))
        placed.append((tile, x, min(max(y, 0), height - tile.height)))
        x = max(0, x + tile.width + round(spacing * rng.uniform(0.6, 1.4)))
    width = max(16, max(px + t.width for t, px, _ in placed) + round(rng.uniform(0.1, 0.5) * size))
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    for tile, px, py in placed:
        layer.alpha_composite(tile, (px, py))
    return layer
