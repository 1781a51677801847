"""Reading images, the one way every script does it, and finding them in folders.

`load_image` composites on white, converts to grey (or RGB for a colour model) and resizes to
the settings' size with bilinear filtering (or, with keep_aspect, scales to fit and pads):
training, testing, prediction, serving and export all read through it (`load_as` takes the
settings), so a model sees the same pixels whatever the source (file, bytes, PIL image or array).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from captchakit.errors import UserError
from captchakit.settings import IMAGE_EXTENSIONS

Image.MAX_IMAGE_PIXELS = 50_000_000  # refuse decompression bombs early


class ImageError(ValueError):
    """An input that is not a readable image."""


def label_from_name(name: str) -> str:
    """'AB12_000123.png' -> 'AB12'; 'AB12.png' -> 'AB12'; 'AB12 (2).png' -> 'AB12'.

    The text before the first '_' or white space (labels never hold either, and downloads
    often add ' (2)' or ' copy' to a name).
    """
    stem = Path(name).name
    stem = stem[: -len(Path(stem).suffix)] if Path(stem).suffix else stem
    return re.split(r"[_\s]", stem, maxsplit=1)[0]


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def load_image(source, width: int, height: int, keep_aspect: bool = False, channels: int = 1) -> np.ndarray:
    """A path, bytes, PIL image or array -> (height, width) uint8 grey, or (height, width, 3) RGB with
    channels=3: the one way every script reads images. keep_aspect: scaled to fit, then padded (fit_and_pad)."""
    try:
        if isinstance(source, np.ndarray):
            image = Image.fromarray(source)
        elif isinstance(source, Image.Image):
            image = source
        elif isinstance(source, (bytes, bytearray, memoryview)):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(source)
        image.load()
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        mode = "L" if channels == 1 else "RGB"
        image = _high_depth_to_grey(image).convert(mode) if image.mode in ("I", "I;16", "I;16B", "I;16L", "F") else image.convert(mode)
        if image.size != (width, height):
            image = fit_and_pad(image, width, height) if keep_aspect else image.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(str(err) or type(err).__name__) from None


def load_as(source, settings) -> np.ndarray:
    """load_image at the size and in the mode a model's Settings give: what that model reads."""
    return load_image(source, settings.width, settings.height, settings.keep_aspect, settings.channels)


def fit_and_pad(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scaled (bilinear) to fit width x height with its aspect ratio kept, centred on its own border colour.

    Fitting rather than cropping: a crop could cut off the first or last character."""
    w, h = image.size
    scale = min(width / w, height / h)
    fw, fh = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
    fitted = image.resize((fw, fh), Image.Resampling.BILINEAR)
    if (fw, fh) == (width, height):
        return fitted
    canvas = Image.new(image.mode, (width, height), border_colour(fitted))
    canvas.paste(fitted, ((width - fw) // 2, (height - fh) // 2))
    return canvas


def border_colour(image: Image.Image) -> int | tuple[int, ...]:
    """The median colour of the outermost pixels: a captcha's background, which padding should continue."""
    a = np.asarray(image)
    edge = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])  # (n,) grey or (n, 3) RGB
    median = np.median(edge, axis=0)
    return int(median) if a.ndim == 2 else tuple(int(v) for v in median)


def _high_depth_to_grey(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grey -> 8-bit; PIL's own convert("L") clips them to white."""
    a = np.asarray(image, dtype=np.float32)
    top = 65535.0 if image.mode.startswith("I;16") or a.max() > 255 else 255.0
    top = 1.0 if image.mode == "F" and a.max() <= 1.0 else top
    return Image.fromarray(np.clip(a * (255.0 / top), 0, 255).astype(np.uint8))


def to_tensor(batch: np.ndarray):
    """(N, H, W) grey or (N, H, W, C) colour uint8 -> float tensor (N, C, H, W) in [0, 1], channels_last for fast CPU convs."""
    import torch  # here, not above: captcha_gen.py and captcha_dataset.py read images without torch

    x = nchw(torch.from_numpy(np.ascontiguousarray(batch))).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


def nchw(x):
    """(N, H, W) or (N, H, W, C) tensor -> an (N, C, H, W) view of the same memory (channels_last for colour)."""
    return x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)


def list_images(folder: Path) -> list[os.DirEntry]:
    return sorted((e for e in os.scandir(folder) if e.is_file() and is_image_name(e.name)), key=lambda e: e.name)


def collect_files(paths: list[str]) -> list[Path]:
    """Image files named one by one, and the images of folders (sorted), in the order given."""
    files: list[Path] = []
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and is_image_name(p.name))
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or folder; pass image files or folders of them")
    return files


def check_folder(folder, flag: str) -> Path:
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{flag} {folder}: folder not found; generate one with `python captcha_gen.py` or pass another folder")
    if not folder.is_dir():
        raise UserError(f"{flag} {folder}: not a folder; pass the folder that holds the images")
    return folder
