"""Tiny labelled folders for the own-data tests: real captchas drawn small, named or listed in a labels file."""

from __future__ import annotations

import random
from pathlib import Path

from captcha_setting import Settings
from captchakit.data.synth import captchas

SMALL = Settings(charset="ABC123", length=4, width=64, height=32)


def draw(folder: Path, count: int, settings: Settings = SMALL, seed: int = 0, name=None, ext: str = "png") -> dict[str, str]:
    """Write `count` captchas into `folder`; returns file name -> label.

    `name(label, i)` gives the file's stem (default: LABEL_i). Labels are drawn from the
    settings (variable length when min_length < length).
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = name or (lambda label, i: f"{label}_{i:04d}")
    out = {}
    for i, (label, image) in enumerate(captchas(settings, count, seed, "own-data tests")):
        file = f"{name(label, i)}.{ext}"
        (image.convert("RGB") if ext in ("jpg", "bmp") else image).save(folder / file)
        out[file] = label
    return out


def mixed_case(labels: dict[str, str], seed: int = 0) -> dict[str, str]:
    """The same labels with letters in random case: what a case-blind site's data looks like."""
    rng = random.Random(seed)
    return {k: "".join(c.lower() if rng.random() < 0.5 else c for c in v) for k, v in labels.items()}
