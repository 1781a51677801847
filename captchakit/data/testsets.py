"""Test sets that are not a cached folder: fresh generated captchas, or a list of image files.

Both are built in memory as a LabelledSet, so evaluate() and the report treat them like a
folder; nothing is written (no cache, no images). Every image goes through
captcha_dataset.load_image, the preprocessing used everywhere else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from captchakit.codec import LabelCodec
from captchakit.data.cache import ImageError, LabelledSet, label_from_name, load_image, load_labelled
from captchakit.errors import UserError


def _in_memory(source: str, arrays: list[np.ndarray], names: list[str], labels: list[str], skipped) -> LabelledSet:
    images = np.stack(arrays) if arrays else np.zeros((0, 1, 1), dtype=np.uint8)
    return LabelledSet(Path(source), images, np.arange(len(arrays), dtype=np.int64), names, labels, skipped)


def generated_set(codec: LabelCodec, count: int, seed: int | None = None) -> LabelledSet:
    """`count` captchas drawn by captcha_gen in the model's own settings; `seed` makes them repeatable."""
    from captchakit.data.synth import CaptchaFactory

    if count < 1:
        raise UserError(f"--generate {count}: ask for at least 1 captcha")
    s = codec.settings
    factory = CaptchaFactory(s)
    arrays, names, labels = [], [], []
    for i in tqdm(range(count), desc="generating", unit="img", leave=False, disable=count < 500):
        label, image = factory.make_seeded(seed, "test", i)
        arrays.append(load_image(image, s.width, s.height))
        names.append(f"generated_{i:06d}")
        labels.append(codec.normalize(label))
    return _in_memory("<generated>", arrays, names, labels, [])


def files_set(paths: list[Path], codec: LabelCodec, flag: str = "--data", labels_file: dict[str, str] | None = None) -> LabelledSet:
    """Labelled image files read one by one; unusable ones are skipped.

    The label is in the file name, or in `labels_file` (file name -> label) when given.
    """
    s = codec.settings
    arrays, names, labels, skipped = [], [], [], []
    for path in paths:
        label = codec.normalize(label_from_name(path.name) if labels_file is None else labels_file.get(path.name, ""))
        reason = codec.problem(label) if label else "no label"
        if reason is None:
            try:
                arrays.append(load_image(path, s.width, s.height))
            except ImageError as err:
                reason = f"not a readable image ({err})"
        if reason:
            skipped.append((str(path), reason))
            continue
        names.append(str(path))
        labels.append(label)
    data = _in_memory(str(paths[0].parent), arrays, names, labels, skipped)
    if not names:
        raise UserError(f"{flag} {paths[0]}: none of the {len(paths)} file(s) is usable; first: {data.describe_skipped(1)}")
    return data


def load_test_set(paths: list[str], codec: LabelCodec, flag: str = "--data", labels: dict[str, str] | None = None) -> LabelledSet:
    """One folder (read through the packed cache), or image files and folders given one by one."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return load_labelled(paths[0], codec, flag, labels=labels)
    from captchakit.recognizer import collect_files

    try:
        files = collect_files(paths)
    except UserError as err:
        raise UserError(f"{flag} {err}") from None
    if not files:
        raise UserError(f"{flag} {' '.join(paths)}: no images found; pass labelled images or a folder of them")
    return files_set(files, codec, flag, labels)


def from_args(args, codec: LabelCodec, labels: dict[str, str] | None = None) -> LabelledSet:
    """captcha_test.py's test set: --generate N fresh captchas, else --data (a folder or files)."""
    if args.generate is not None:
        return generated_set(codec, args.generate, args.seed)
    return load_test_set(args.data, codec, "--data", labels)
