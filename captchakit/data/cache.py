"""Image folders, decoded once into a packed uint8 cache.

Every image is read the same way in every script (images.load_image). A folder is
decoded once into `<folder>/.captcha_cache/WxH.npy` (N, H, W uint8; WxH-fit-rgb.npy, N, H, W, 3,
for a model that keeps the aspect ratio and colour: `cache_key`) plus a JSON index; the
cache is rebuilt whenever the folder's files change and is checked against a CRC before it
is trusted. Training then reads batches straight from that array: no PNG decoding and no
per-sample Python work in the hot loop.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from captchakit.data.images import ImageError, list_images, load_image
from captchakit.files import atomic_path

CACHE_VERSION = 1
CACHE_DIR = ".captcha_cache"


def cache_key(width: int, height: int, keep_aspect: bool = False, channels: int = 1) -> str:
    """The cache's file name for one way of reading: '160x60' as before these modes, '114x64-fit-rgb'."""
    return f"{width}x{height}" + ("-fit" if keep_aspect else "") + ("-rgb" if channels == 3 else "")


def _fingerprint(entries: list[os.DirEntry], key: str) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION} {key}\n".encode())
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


def _decode(job: tuple[str, int, int, bool, int]):
    path, width, height, keep_aspect, channels = job
    try:
        return load_image(path, width, height, keep_aspect, channels), None
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
    images: np.ndarray  # (N, H, W) or, in colour, (N, H, W, 3) uint8, memory-mapped
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


def pack_folder(
    folder, width: int, height: int, workers: int = 0, quiet: bool = False, keep_aspect: bool = False, channels: int = 1
) -> PackedFolder:
    """Decode every image of `folder` once into the packed cache, or reuse a valid cache.

    keep_aspect and channels read as load_image does; each way of reading has its own cache file."""
    folder = Path(folder)
    entries = list_images(folder)
    key = cache_key(width, height, keep_aspect, channels)
    fingerprint = _fingerprint(entries, key)
    cache = _cache_dir(folder)
    npy, index = cache / f"{key}.npy", cache / f"{key}.json"
    packed = _try_load_cache(npy, index, fingerprint)
    if packed is not None:
        packed.folder = folder
        return packed
    names = [e.name for e in entries]
    images, unreadable = _decode_all(folder, names, (width, height, keep_aspect, channels), workers, quiet)
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


def _decode_all(folder: Path, names: list[str], reading: tuple[int, int, bool, int], workers: int, quiet: bool):
    """`reading` is load_image's (width, height, keep_aspect, channels)."""
    width, height, _, channels = reading
    images = np.zeros((len(names), height, width) + ((channels,) if channels > 1 else ()), dtype=np.uint8)
    unreadable: dict[str, str] = {}
    jobs = [(str(folder / n), *reading) for n in names]
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
