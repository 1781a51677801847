"""Labelled sets: the usable images of a folder (read through the packed cache) or built in memory.

Training, validation, testing and the report all take a LabelledSet, whatever its source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captchakit.codec import LabelCodec
from captchakit.data.cache import pack_folder
from captchakit.data.images import check_folder, label_from_name
from captchakit.errors import UserError
from captchakit.settings import IMAGE_EXTENSIONS


@dataclass
class LabelledSet:
    """The usable, labelled images of a folder, as rows of a packed array."""

    folder: Path
    images: np.ndarray  # (N_all, H, W) uint8, or (N_all, H, W, 3) for a colour model
    rows: np.ndarray  # (N,) indices of usable images
    names: list[str]  # (N,) file names of the usable images
    labels: list[str]  # (N,) their labels, normalized by the codec
    skipped: list[tuple[str, str]]  # (file, reason) for each unusable file

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, positions: np.ndarray) -> np.ndarray:
        """Images at `positions` (indices into this set) -> (B, H, W) or (B, H, W, 3) uint8."""
        rows = self.rows[positions]
        return self.images[rows]

    def targets(self, codec: LabelCodec) -> np.ndarray:
        """(N, length) int64 class indices, encoded once for the whole set."""
        return np.asarray([codec.encode(t) for t in self.labels], dtype=np.int64).reshape(-1, codec.length)

    def describe_skipped(self, limit: int = 5) -> str:
        shown = ", ".join(f"{name} ({reason})" for name, reason in self.skipped[:limit])
        more = f", and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return f"skipped {len(self.skipped):,} unusable file(s) in {self.folder}: {shown}{more}"


def in_memory(source: str, images, names: list[str], labels: list[str], skipped=()) -> LabelledSet:
    """A set of images held in memory: `images` is (N, H, W[, 3]) uint8 or a list of (H, W[, 3]) arrays."""
    if isinstance(images, list):
        images = np.stack(images) if images else np.zeros((0, 1, 1), dtype=np.uint8)
    return LabelledSet(Path(source), images, np.arange(len(images), dtype=np.int64), names, labels, list(skipped))


def load_labelled(
    folder, codec: LabelCodec, flag: str = "--data", workers: int = 0, quiet: bool = False, labels: dict[str, str] | None = None
) -> LabelledSet:
    """Read a folder of LABEL_*.png images for training or testing; a one-line error if none is usable.

    `labels` (file name -> label, from a labels file: labels.read_labels_file) replaces the labels in file names.
    """
    folder = check_folder(folder, flag)
    s = codec.settings
    packed = pack_folder(folder, s.width, s.height, workers, quiet, s.keep_aspect, s.channels)
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


def subset(data: LabelledSet, keep, skipped=()) -> LabelledSet:
    """The images of `data` whose names are in `keep`, in the same order."""
    keep = set(keep)
    idx = [i for i, n in enumerate(data.names) if n in keep]
    names, labels = [data.names[i] for i in idx], [data.labels[i] for i in idx]
    return LabelledSet(data.folder, data.images, data.rows[idx], names, labels, list(skipped))
