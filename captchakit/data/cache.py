"""Labelled image folders, decoded once into a packed uint8 cache.

Every image is read the same way in every script (`load_image`): composited on white,
converted to grey, resized to the settings' size with bilinear filtering. A folder is
decoded once into `<folder>/.captcha_cache/WxH.npy` (N, H, W uint8) plus a JSON index; the
cache is rebuilt whenever the folder's files change and is checked against a CRC before it
is trusted. Training then reads batches straight from that array: no PNG decoding and no
per-sample Python work in the hot loop.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from captchakit.codec import LabelCodec
from captchakit.errors import UserError
from captchakit.files import atomic_path
from captchakit.settings import IMAGE_EXTENSIONS

CACHE_VERSION = 1
CACHE_DIR = ".captcha_cache"
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


def load_image(source, width: int, height: int) -> np.ndarray:
    """A path, bytes, PIL image or array -> (height, width) uint8, the one way every script reads images."""
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
        grey = _high_depth_to_grey(image) if image.mode in ("I", "I;16", "I;16B", "I;16L", "F") else image.convert("L")
        if grey.size != (width, height):
            grey = grey.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(grey, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(str(err) or type(err).__name__) from None


def _high_depth_to_grey(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grey -> 8-bit; PIL's own convert("L") clips them to white."""
    a = np.asarray(image, dtype=np.float32)
    top = 65535.0 if image.mode.startswith("I;16") or a.max() > 255 else 255.0
    top = 1.0 if image.mode == "F" and a.max() <= 1.0 else top
    return Image.fromarray(np.clip(a * (255.0 / top), 0, 255).astype(np.uint8))


def to_tensor(batch: np.ndarray):
    """(N, H, W) uint8 -> float tensor (N, 1, H, W) in [0, 1], channels_last for fast CPU convs."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch)).unsqueeze(1).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


def list_images(folder: Path) -> list[os.DirEntry]:
    return sorted((e for e in os.scandir(folder) if e.is_file() and is_image_name(e.name)), key=lambda e: e.name)


def _fingerprint(entries: list[os.DirEntry], width: int, height: int) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION} {width}x{height}\n".encode())
    for e in entries:
        st = e.stat()
        h.update(f"{e.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cache_dir(folder: Path) -> Path:
    """Beside the data when that folder is writable, else in the user's cache."""
    local = folder / CACHE_DIR
    # The mode bits too: root may write anywhere, but a folder marked read-only (a shared data set) stays untouched.
    if os.access(folder, os.W_OK) and folder.stat().st_mode & 0o222:
        return local
    key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "captcha-toolkit" / key


def _decode(job: tuple[str, int, int]):
    path, width, height = job
    try:
        return load_image(path, width, height), None
    except ImageError as err:
        return None, err.args[0] if err.args else "unreadable"


def _crc(array: np.ndarray) -> int:
    crc, flat = 0, array.reshape(-1)
    for start in range(0, flat.size, 1 << 26):
        crc = zlib.crc32(flat[start : start + (1 << 26)], crc)
    return crc


@dataclass
class PackedFolder:
    """All images of one folder at one size: `images[i]` is the file `names[i]`."""

    folder: Path
    images: np.ndarray  # (N, H, W) uint8, memory-mapped
    names: list[str]
    unreadable: dict[str, str] = field(default_factory=dict)  # name -> reason


def _try_load_cache(npy: Path, index: Path, fingerprint: str) -> PackedFolder | None:
    try:
        meta = json.loads(index.read_text())
        if meta.get("fingerprint") != fingerprint:
            return None
        images = np.load(npy, mmap_mode="r")
        if images.shape[0] != len(meta["names"]) or images.dtype != np.uint8 or _crc(images) != meta["crc"]:
            return None
        return PackedFolder(npy.parent, images, meta["names"], meta["unreadable"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, stale or corrupt: rebuild, never trust


def pack_folder(folder, width: int, height: int, workers: int = 0, quiet: bool = False) -> PackedFolder:
    """Decode every image of `folder` once into the packed cache, or reuse a valid cache."""
    folder = Path(folder)
    entries = list_images(folder)
    fingerprint = _fingerprint(entries, width, height)
    cache = _cache_dir(folder)
    npy, index = cache / f"{width}x{height}.npy", cache / f"{width}x{height}.json"
    packed = _try_load_cache(npy, index, fingerprint)
    if packed is not None:
        packed.folder = folder
        return packed
    names = [e.name for e in entries]
    images, unreadable = _decode_all(folder, names, width, height, workers, quiet)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(npy, ".npy") as tmp:
            np.save(tmp, images)
        meta = {"fingerprint": fingerprint, "names": names, "unreadable": unreadable, "crc": _crc(images)}
        with atomic_path(index, ".json") as tmp:
            Path(tmp).write_text(json.dumps(meta))
        images = np.load(npy, mmap_mode="r")
    except OSError:
        pass  # an unwritable cache only costs the decoding next time
    return PackedFolder(folder, images, names, unreadable)


def _decode_all(folder: Path, names: list[str], width: int, height: int, workers: int, quiet: bool):
    images = np.zeros((len(names), height, width), dtype=np.uint8)
    unreadable: dict[str, str] = {}
    jobs = [(str(folder / n), width, height) for n in names]
    workers = workers or min(os.cpu_count() or 1, 8)
    bar = tqdm(total=len(jobs), desc=f"caching {folder.name}", unit="img", disable=quiet or len(jobs) < 2000)
    if workers > 1 and len(jobs) >= 2000:
        with mp.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(workers) as pool:
            results = pool.imap(_decode, jobs, chunksize=256)
            _fill(images, unreadable, names, results, bar)
    else:
        _fill(images, unreadable, names, map(_decode, jobs), bar)
    bar.close()
    return images, unreadable


def _fill(images, unreadable, names, results, bar) -> None:
    for i, (array, reason) in enumerate(results):
        if array is None:
            unreadable[names[i]] = reason
        else:
            images[i] = array
        bar.update()


@dataclass
class LabelledSet:
    """The usable, labelled images of a folder, as rows of a packed array."""

    folder: Path
    images: np.ndarray  # (N_all, H, W) uint8
    rows: np.ndarray  # (N,) indices of usable images
    names: list[str]  # (N,) file names of the usable images
    labels: list[str]  # (N,) their labels, normalized by the codec
    skipped: list[tuple[str, str]]  # (file, reason) for each unusable file

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, positions: np.ndarray) -> np.ndarray:
        """Images at `positions` (indices into this set) -> (B, H, W) uint8."""
        rows = self.rows[positions]
        return self.images[rows]

    def targets(self, codec: LabelCodec) -> np.ndarray:
        """(N, length) int64 class indices, encoded once for the whole set."""
        return np.asarray([codec.encode(t) for t in self.labels], dtype=np.int64).reshape(-1, codec.length)

    def describe_skipped(self, limit: int = 5) -> str:
        shown = ", ".join(f"{name} ({reason})" for name, reason in self.skipped[:limit])
        more = f", and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return f"skipped {len(self.skipped):,} unusable file(s) in {self.folder}: {shown}{more}"


def check_folder(folder, flag: str) -> Path:
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{flag} {folder}: folder not found; generate one with `python captcha_gen.py` or pass another folder")
    if not folder.is_dir():
        raise UserError(f"{flag} {folder}: not a folder; pass the folder that holds the images")
    return folder


def load_labelled(
    folder, codec: LabelCodec, flag: str = "--data", workers: int = 0, quiet: bool = False, labels: dict[str, str] | None = None
) -> LabelledSet:
    """Read a folder of LABEL_*.png images for training or testing; a one-line error if none is usable.

    `labels` (file name -> label, from a labels file: captcha_labels.py) replaces the labels in file names.
    """
    folder = check_folder(folder, flag)
    s = codec.settings
    packed = pack_folder(folder, s.width, s.height, workers=workers, quiet=quiet)
    rows, names, texts, skipped = [], [], [], []
    for i, name in enumerate(packed.names):
        text = label_from_name(name) if labels is None else labels.get(name, "")
        reason = packed.unreadable.get(name) or (codec.problem(text) if text else "no label")
        if reason:
            skipped.append((name, reason))
            continue
        rows.append(i)
        names.append(name)
        texts.append(codec.normalize(text))
    if not packed.names:
        exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        raise UserError(f"{flag} {folder}: no images ({exts}) found; point it at a folder of LABEL_*.png files")
    data = LabelledSet(folder, packed.images, np.asarray(rows, dtype=np.int64), names, texts, skipped)
    if not rows:
        raise UserError(f"{flag} {folder}: none of its {len(packed.names):,} images is usable; first: {data.describe_skipped(1)}")
    return data
