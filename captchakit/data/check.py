"""What captcha_dataset.py's `check` and `split` do to a labelled folder.

`check` reads every image the way training does (images.load_image) and reports what a user
needs to know before training: how many images are usable, their sizes and modes, the label
lengths and the charset training would infer, characters too rare to learn, files with
identical bytes, and every unusable file with its reason. `split` moves or links a seeded
share into test/ and the rest into train/, with the same choice as `captcha_train.py
--val-split` (folders.split_names), so the same seed holds the same files out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from captchakit.data.folders import raw_labels, split_names
from captchakit.data.images import ImageError, check_folder, list_images, load_image
from captchakit.data.labels import match_folder, read_labels_file, write_labels_file
from captchakit.errors import UserError
from captchakit.files import check_writable_dir

RARE = 10  # characters seen fewer times than this are reported
SHOW = 20  # unusable files listed one by one before "and N more"


# --- check --------------------------------------------------------------------------------


def _length_range(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        lo, _, hi = text.partition("-")
        out = int(lo), int(hi or lo)
    except ValueError:
        raise UserError(f"--length {text}: give a number or MIN-MAX, e.g. 5 or 4-6") from None
    if not 1 <= out[0] <= out[1]:
        raise UserError(f"--length {text}: give a number or MIN-MAX with 1 <= MIN <= MAX")
    return out


def _problem(label: str, charset: set[str] | None, lengths: tuple[int, int] | None) -> str | None:
    """Why `label` cannot train, with the same wording as training's skip list."""
    if not label:
        return "no label"
    if any(c.isspace() for c in label):
        return f"label {label!r} holds white space"
    if lengths and not lengths[0] <= len(label) <= lengths[1]:
        want = str(lengths[0]) if lengths[0] == lengths[1] else f"{lengths[0]}-{lengths[1]}"
        return f"label {label!r} has {len(label)} characters, expected {want}"
    bad = sorted({c for c in label if charset is not None and c not in charset})
    return f"label {label!r} has characters outside the charset: {''.join(bad)!r}" if bad else None


def _read(path: Path) -> tuple[str | None, str, tuple[int, int] | None, str]:
    """(reason unreadable or None, mode, size, sha1 of the bytes) for one file."""
    data = path.read_bytes()
    digest = hashlib.sha1(data).hexdigest()
    try:
        load_image(data, 16, 16)  # the same decoding as training; the size does not matter here
        with Image.open(path) as im:
            return None, im.mode, im.size, digest
    except ImageError as err:
        return f"not a readable image ({err})", "", None, digest


def _top(counter: Counter, limit: int = 6, fmt=str) -> str:
    shown = ", ".join(f"{fmt(k)} ({v:,})" for k, v in counter.most_common(limit))
    return shown + (f", and {len(counter) - limit} more" if len(counter) > limit else "")


def check(args) -> int:
    folder = check_folder(args.folder, "folder")
    labels = None
    if args.labels:
        lf = read_labels_file(args.labels)
        matched = match_folder(lf, [e.name for e in list_images(folder)], folder)
        for line in matched.notes(lf, folder):
            print(line)
        labels = matched.labels
    texts = raw_labels(folder, labels)
    if not texts:
        raise UserError(f"folder {folder}: no images found; pass the folder that holds the captcha images")
    others = [e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".") and e.name not in texts]
    charset = set(args.charset.upper() if args.ignore_case else args.charset) if args.charset else None
    lengths = _length_range(args.length)
    sizes, modes, by_hash, unusable, usable = Counter(), Counter(), {}, [], {}
    for name in tqdm(sorted(texts), desc="checking", unit="img", leave=False, disable=len(texts) < 2000):
        unreadable, mode, size, digest = _read(folder / name)
        by_hash.setdefault(digest, []).append(name)
        label = texts[name].upper() if args.ignore_case else texts[name]
        reason = unreadable or _problem(label, charset, lengths)
        if reason:
            unusable.append((name, reason))
            continue
        sizes[size] += 1
        modes[mode] += 1
        usable[name] = label
    _report(folder, args, Survey(texts, others, usable, unusable, sizes, modes, by_hash))
    return 0


@dataclass
class Survey:
    """What `check` found in a folder, for `_report`."""

    texts: dict[str, str]  # every image name -> its label
    others: list[str]  # files that are not images
    usable: dict[str, str]  # name -> label of the images training would use
    unusable: list[tuple[str, str]]  # (name, reason)
    sizes: Counter  # (width, height) of the usable images
    modes: Counter  # their PIL modes
    by_hash: dict[str, list[str]]  # sha1 of the bytes -> names


def _report(folder, args, survey: Survey) -> None:
    limit = None if args.all else SHOW
    texts, others, usable, unusable = survey.texts, survey.others, survey.usable, survey.unusable
    sizes, modes, by_hash = survey.sizes, survey.modes, survey.by_hash
    print(f"{folder}: {len(texts):,} images, {len(usable):,} usable, {len(unusable):,} unusable")
    if others:
        print(f"other files, ignored: {len(others):,} ({', '.join(sorted(others)[:5])}{', ...' if len(others) > 5 else ''})")
    if usable:
        ws = sorted(w for (w, _), n in sizes.items() for _ in range(n))
        hs = sorted(h for (_, h), n in sizes.items() for _ in range(n))
        print(f"image sizes: {_top(sizes, fmt=lambda s: f'{s[0]}x{s[1]}')}; median {ws[(len(ws) - 1) // 2]}x{hs[(len(hs) - 1) // 2]}")
        print(f"image modes: {_top(modes)}")
        lens = Counter(len(t) for t in usable.values())
        print("label lengths: " + ", ".join(f"{k} ({v:,})" for k, v in sorted(lens.items())))
        chars = Counter("".join(usable.values()))
        print(f"charset ({len(chars)}): {''.join(sorted(chars))}")
        rare = sorted((n, c) for c, n in chars.items() if n < args.rare)
        print(f"characters seen fewer than {args.rare} times: " + (", ".join(f"{c!r} {n}" for n, c in rare) if rare else "none"))
    dups = [sorted(names) for names in by_hash.values() if len(names) > 1]
    if dups:
        print(f"duplicates (same bytes): {len(dups):,} group(s), {sum(len(d) - 1 for d in dups):,} extra file(s)")
        for group in sorted(dups)[:limit]:
            print("  " + " = ".join(group))
    else:
        print("duplicates (same bytes): none")
    if unusable:
        print(f"unusable files: {len(unusable):,}")
        for name, reason in unusable[:limit]:
            print(f"  {name}: {reason}")
        if limit and len(unusable) > limit:
            print(f"  and {len(unusable) - limit:,} more (--all lists them)")


# --- split --------------------------------------------------------------------------------


def split(args) -> int:
    folder = check_folder(args.folder, "folder")
    out = Path(args.out) if args.out else folder
    if not args.link and not folder.stat().st_mode & 0o222:
        raise UserError(f"folder {folder}: read-only, its files cannot be moved; add --link --out OUT to link them instead")
    check_writable_dir(out, "--out" if args.out else "folder")  # before the first file moves
    names = [e.name for e in list_images(folder)]
    if not names:
        raise UserError(f"folder {folder}: no images found; pass the folder that holds the captcha images")
    train, test = split_names(names, args.test, args.seed, "--test", folder)
    labels = None
    if args.labels:
        lf = read_labels_file(args.labels)
        labels = match_folder(lf, names, folder).labels
    parts = {"train": train, "test": test}
    for part, members in parts.items():
        clash = next((out / part / n for n in members if os.path.lexists(out / part / n)), None)
        if clash:
            raise UserError(f"{clash}: already exists; split into empty folders (--out OUT)")
    for part, members in parts.items():
        target = out / part
        target.mkdir(parents=True, exist_ok=True)
        for n in members:
            src = (folder / n).resolve()
            if args.link:
                os.symlink(src, target / n)
            else:
                shutil.move(src, target / n)
        if labels is not None:
            write_labels_file(target / "labels.csv", {n: labels[n] for n in members if n in labels})
    how = "linked" if args.link else "moved"
    print(f"{how} {len(names):,} images of {folder}: {len(train):,} to {out / 'train'}, {len(test):,} to {out / 'test'} (seed {args.seed})")
    if labels is not None:
        print(f"labels: {out / 'train' / 'labels.csv'} and {out / 'test' / 'labels.csv'}; pass them with --labels")
    return 0
