"""Captchas drawn by the captcha library, seeded one by one, and the one in-memory source of them.

Every image has its own seed, `image_seed(seed, split, index)`, so a split is the same whatever
order or process draws it, and splits with the same seed never share an image. `captchas` and
`draw` are the one way to draw N seeded captchas in memory (captcha_test.py --generate, the
shipped model's check, int8 calibration, the benchmarks, validation for --online); the
writer module puts the same images into files.
"""

from __future__ import annotations

import hashlib
import math
import random
import secrets
from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from captchakit import settings as cs
from captchakit.codec import LabelCodec
from captchakit.data.images import load_as
from captchakit.data.sets import LabelledSet, in_memory
from captchakit.errors import UserError
from captchakit.settings import Settings

QUIET_BELOW = 500  # fewer captchas than this are drawn without a progress bar


class SeededSecrets(random.Random):
    """A seeded stand-in for the `secrets` module, which the captcha library draws from.

    The library calls secrets.randbelow, secrets.randbits and secrets.choice; a Random
    with those three names makes every draw repeatable from one integer seed.
    """

    def randbelow(self, n: int) -> int:
        return self.randrange(n)

    def randbits(self, k: int) -> int:
        return self.getrandbits(k)


def image_seed(seed: int, split: str, index: int) -> int:
    """One independent 64-bit seed per image, so output does not depend on worker count."""
    digest = hashlib.sha256(f"{seed}:{split}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class CaptchaFactory:
    """Draws captchas in a given style; `make(rng)` returns (label, PIL image)."""

    def __init__(self, settings: Settings, emphasis: dict[str, float] | None = None):
        from captcha.image import ImageCaptcha  # here, not above: the captcha library is only needed to draw

        self.settings = settings
        self.generator = ImageCaptcha(width=settings.width, height=settings.height)
        # One weight per charset character, or None for the uniform draw (which keeps the sets of
        # earlier versions byte for byte: rng.choice and rng.choices draw differently).
        weights = [float((emphasis or {}).get(c, 1.0)) for c in settings.charset]
        self.weights = weights if any(w != 1.0 for w in weights) else None

    def make(self, rng=None):
        """Draw one captcha. `rng` is a SeededSecrets, or None for the library's own randomness."""
        import captcha.image

        rng = rng or secrets.SystemRandom()
        s = self.settings
        length = s.length if not s.variable_length else rng.randint(s.min_length, s.length)
        if self.weights:
            label = "".join(rng.choices(s.charset, weights=self.weights, k=length))
        else:
            label = "".join(rng.choice(s.charset) for _ in range(length))
        # The library looks `secrets` up as a module global at every draw.
        captcha.image.secrets = rng if isinstance(rng, SeededSecrets) else secrets
        try:
            image = self.generator.generate_image(label)
        finally:
            captcha.image.secrets = secrets
        return label, image

    def make_seeded(self, seed: int | None, split: str, index: int):
        rng = SeededSecrets(image_seed(seed, split, index)) if seed is not None else None
        return self.make(rng)


def parse_emphasis(text: str | None, charset: str) -> dict[str, float]:
    """--emphasis "O0:3" -> {"O": 3.0, "0": 3.0}; None gives TRAIN_EMPHASIS's characters in the charset."""
    if text is None:
        return {c: w for c, w in cs.TRAIN_EMPHASIS.items() if c in charset}
    if text.strip().lower() == "none":
        return {}
    emphasis: dict[str, float] = {}
    for group in text.split(","):
        chars, colon, weight = group.strip().rpartition(":")
        try:
            value = float(weight)
        except ValueError:
            value = math.nan
        if not (colon and chars and math.isfinite(value) and value > 0):
            raise UserError(f"--emphasis {text!r}: write CHARACTERS:WEIGHT groups such as O0:3 (a weight above 0), or none")
        stray = "".join(c for c in chars if c not in charset)
        if stray:
            raise UserError(f"--emphasis {text!r}: {stray!r} is not in the charset {charset!r}; leave it out")
        emphasis.update(dict.fromkeys(chars, value))
    return emphasis


def emphasis_text(emphasis: dict[str, float]) -> str:
    """{"O": 3.0, "0": 3.0} -> "O0:3", the form --emphasis takes ("none" for {})."""
    groups: dict[float, str] = {}
    for char, weight in emphasis.items():
        groups[weight] = groups.get(weight, "") + char
    return ",".join(f"{chars}:{weight:g}" for weight, chars in groups.items()) or "none"


def captchas(settings: Settings, count: int, seed: int | None, split: str, factory=None) -> Iterator[tuple]:
    """(label, PIL image) for images 0 .. count-1 of `split`, drawn uniformly as captcha_gen.py draws test and predict;
    `factory`: another source with make_seeded (data/render.Renderer for the varied style)."""
    factory = factory or CaptchaFactory(settings)
    bar = tqdm(range(count), desc=f"generating {split}", unit="img", leave=False, disable=count < QUIET_BELOW)
    for index in bar:
        yield factory.make_seeded(seed, split, index)


def draw(settings: Settings, count: int, seed: int | None, split: str, factory=None) -> tuple[np.ndarray, list[str]]:
    """(count, H, W) uint8 images (H, W, 3 in colour) read through load_image, and their labels as drawn."""
    images = np.empty((count, *settings.array_shape), dtype=np.uint8)
    labels = []
    for i, (label, image) in enumerate(captchas(settings, count, seed, split, factory)):
        images[i] = load_as(image, settings)
        labels.append(label)
    return images, labels


def synth_set(codec: LabelCodec, count: int, seed: int | None, split: str, source: str = "<generated>", factory=None) -> LabelledSet:
    """`draw` as a LabelledSet that evaluate() reads like a folder: names generated_000000, ..."""
    images, labels = draw(codec.settings, count, seed, split, factory)
    names = [f"generated_{i:06d}" for i in range(count)]
    return in_memory(source, images, names, [codec.normalize(t) for t in labels])
