"""Training and testing on a user's own labelled captchas: the hooks captcha_train.py and
captcha_test.py call.

- Settings not given on the command line are read off the data: the charset and the label
  lengths from the labels, the image size from the median image (rounded to the network's
  stem factor), printed and stored in model.pkl.
- `--val-split F` holds a seeded share of the training folder out for validation and
  records which files, so that `captcha_test.py --data SAME_FOLDER` tests only those.
- Small data sets (under SMALL_DATA images) get augmentation and more epochs by default;
  the big-data recipe in captcha_train.py is left as it is.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from captchakit.cli import non_negative_int, settings_from_args
from captchakit.data.cache import LabelledSet, check_folder, label_from_name, list_images, load_labelled
from captchakit.data.labels import match_folder, read_labels_file
from captchakit.errors import UserError
from captchakit.settings import Settings

SMALL_DATA = 20_000  # fewer training images than this: augmentation on, epochs from SMALL_DATA_IMAGES
SMALL_DATA_IMAGES = 240_000  # images a small-data run sees in all (epochs = this / training images)
MAX_SMALL_EPOCHS = 400
SIZE_SAMPLE = 500  # images whose size is read to take the median


# --- command-line flags -----------------------------------------------------------------


def add_train_args(p) -> None:
    g = p.add_argument_group("your own data")
    g.add_argument("--labels", metavar="FILE", help="CSV or TSV of filename,label lines for --train-dir (default: labels from file names)")
    g.add_argument("--val-labels", metavar="FILE", help="labels file for --val-dir (default: labels from file names)")
    g.add_argument(
        "--val-split",
        type=float,
        metavar="FRACTION",
        help="hold out this share of --train-dir for validation (seeded by --seed) instead of using --val-dir; "
        "captcha_test.py --data on the same folder then tests only that part",
    )
    g.add_argument("--split-seed", type=int, metavar="N", help="seed of --val-split's choice (default: --seed)")
    g.add_argument("--min-length", type=int, help="shortest label, for variable-length captchas (default: read off the labels)")
    g.add_argument("--ignore-case", action="store_true", help="read letters case-blind: labels and charset are upper-cased")
    aug = g.add_mutually_exclusive_group()
    aug.add_argument(
        "--augment", dest="augment", action="store_true", default=None, help=f"force augmentation on (default: below {SMALL_DATA:,} images)"
    )
    aug.add_argument("--no-augment", dest="augment", action="store_false", help="turn augmentation off")
    g.add_argument(
        "--init-from",
        metavar="MODEL",
        help="start the convolution layers from this model.pkl (e.g. models/default.pkl, trained on generated captchas); "
        "the output layer is always new, so charset, length and size may differ",
    )
    g.add_argument("--augment-strength", type=float, default=1.0, help="scale every augmentation's size (default: %(default)s)")
    g.add_argument(
        "--shift",
        type=non_negative_int,
        default=3,
        metavar="K",
        help="when not augmenting, move each training image up to K whole pixels sideways; 0 turns it off (default: %(default)s)",
    )


def add_test_args(p) -> None:
    p.add_argument("--labels", metavar="FILE", help="CSV or TSV of filename,label lines for the images (default: labels from file names)")
    p.add_argument("--all-images", action="store_true", help="test every image, even where training held a validation split out")


# --- labels -----------------------------------------------------------------------------


def folder_labels(folder, labels_path, flag: str = "--labels", quiet: bool = False) -> dict[str, str] | None:
    """file name -> label from a labels file matched to `folder`, or None to read labels from names."""
    if not labels_path:
        return None
    lf = read_labels_file(labels_path, flag)
    matched = match_folder(lf, [e.name for e in list_images(Path(folder))], folder)
    if not quiet:
        for line in matched.notes(lf, folder):
            print(line)
    return matched.labels


def raw_labels(folder: Path, labels: dict[str, str] | None) -> dict[str, str]:
    """Every image name of `folder` -> its label ('' when it has none)."""
    names = [e.name for e in list_images(folder)]
    return {n: labels.get(n, "") if labels is not None else label_from_name(n) for n in names}


# --- settings read off the data -----------------------------------------------------------


def round_to(value: int, step: int) -> int:
    """The nearest multiple of `step` (halves round up), at least 16 and at least `step`."""
    return max(int(math.floor(value / step + 0.5)) * step, step * math.ceil(16 / step))


def median_size(folder: Path, names: list[str], seed: int = 0) -> tuple[int, int] | None:
    """Median (width, height) over up to SIZE_SAMPLE images; only headers are read."""
    if len(names) > SIZE_SAMPLE:
        names = list(np.random.default_rng(seed).choice(names, SIZE_SAMPLE, replace=False))
    sizes = []
    for n in names:
        try:
            with Image.open(folder / n) as im:
                sizes.append(im.size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    if not sizes:
        return None
    return int(statistics.median_low(w for w, _ in sizes)), int(statistics.median_low(h for _, h in sizes))


def infer_settings(args, stem: int) -> Settings:
    """Settings from the flags, with what they leave open read off --train-dir (and --labels)."""
    folder = check_folder(args.train_dir, "--train-dir")
    labels = raw_labels(folder, folder_labels(folder, args.labels, quiet=True))
    texts = [t.upper() if args.ignore_case else t for t in labels.values() if t and not any(c.isspace() for c in t)]
    base, said = Settings(), []
    if texts:
        lengths = [len(t) for t in texts]
        charset = "".join(sorted(set("".join(texts))))
        base = base.with_(charset=charset, length=max(lengths), min_length=min(lengths))
        if args.charset is None:
            said.append(f"charset {charset!r} ({len(charset)})")
        if args.length is None:
            said.append(f"length {_lengths(lengths)}")
    size = median_size(folder, [n for n, t in labels.items() if t], args.seed) if None in (args.width, args.height) else None
    if size:
        base = base.with_(width=size[0], height=size[1])
        said.append(f"median image size {size[0]}x{size[1]}")
    if said:
        print(f"read off {len(texts):,} labelled images in {folder}: " + ", ".join(said))
    return finish_settings(args, base, stem)


def _lengths(lengths: list[int]) -> str:
    lo, hi = min(lengths), max(lengths)
    if lo == hi:
        return str(lo)
    counts = np.bincount(lengths)
    return f"{lo}-{hi} (" + ", ".join(f"{n}: {counts[n]:,}" for n in range(lo, hi + 1) if counts[n]) + ")"


def finish_settings(args, base: Settings, stem: int) -> Settings:
    """Apply the flags on top of `base`; fold case; round the size to the stem factor, saying so."""
    if args.length is not None:
        # A named --length is exact: labels of another length are listed as unusable (--min-length opens a range).
        base = base.with_(min_length=args.length, length=args.length)
    settings = settings_from_args(args, base)
    if args.ignore_case:
        settings = settings.with_(charset="".join(dict.fromkeys(settings.charset.upper())), ignore_case=True)
    if args.min_length is not None:
        try:
            settings = settings.with_(min_length=args.min_length)
        except ValueError as err:
            raise UserError(f"--min-length {args.min_length}: {err}") from None
    w, h = round_to(settings.width, stem), round_to(settings.height, stem)
    if (w, h) != (settings.width, settings.height):
        print(f"image size {w}x{h}: {settings.width}x{settings.height} rounded to multiples of the network's stem factor {stem}")
        settings = settings.with_(width=w, height=h)
    return settings


def init_from(args, model) -> None:
    """Copy the convolution stack of --init-from into `model` (fine-tuning); the head stays fresh."""
    if not getattr(args, "init_from", None):
        return
    from captchakit.checkpoint import read_checkpoint

    src = read_checkpoint(args.init_from, flag="--init-from")["state_dict"]
    own = model.state_dict()
    fits = {k: v for k, v in src.items() if k.startswith("features.") and k in own and own[k].shape == v.shape}
    wanted = [k for k in own if k.startswith("features.")]
    if len(fits) < len(wanted):
        raise UserError(
            f"--init-from {args.init_from}: its convolution layers do not fit this network "
            f"({len(fits)} of {len(wanted)} tensors match); use a model with the same --model-config"
        )
    model.load_state_dict(fits, strict=False)
    print(f"convolution layers from {args.init_from} ({len(fits)} tensors); the output layer starts fresh")


# --- train / validation -------------------------------------------------------------------


def subset(data: LabelledSet, keep, skipped=()) -> LabelledSet:
    """The images of `data` whose names are in `keep`, in the same order."""
    keep = set(keep)
    idx = [i for i, n in enumerate(data.names) if n in keep]
    names, labels = [data.names[i] for i in idx], [data.labels[i] for i in idx]
    return LabelledSet(data.folder, data.images, data.rows[idx], names, labels, list(skipped))


def split_names(names: list[str], fraction: float, seed: int, flag: str, folder) -> tuple[list[str], list[str]]:
    """(kept, held out): a seeded share `fraction` of `names`, the same for the same names and seed."""
    if not 0 < fraction < 1:
        raise UserError(f"{flag} {fraction}: give a share between 0 and 1, e.g. 0.1")
    names = sorted(names)
    held = round(len(names) * fraction)
    if held < 1 or held >= len(names):
        raise UserError(
            f"{flag} {fraction}: {folder} has {len(names):,} usable image(s), too few to hold {fraction:.0%} out; "
            "label more images or pass a separate validation folder"
        )
    order = np.random.default_rng(seed).permutation(len(names))
    out = {names[i] for i in order[:held]}
    return [n for n in names if n not in out], [n for n in names if n in out]


def load_train_val(args, codec, default_epochs: int, workers: int = 0) -> tuple[LabelledSet, LabelledSet]:
    """The training and validation sets, from --train-dir/--val-dir or a --val-split of --train-dir.

    Leaves what model.pkl should remember about the data in `args.data_meta`.
    """
    train = load_labelled(args.train_dir, codec, "--train-dir", workers, labels=folder_labels(args.train_dir, args.labels))
    meta = {"labels": _abs(args.labels), "ignore_case": codec.ignore_case}
    if args.val_split is not None:
        seed = args.seed if args.split_seed is None else args.split_seed
        kept, held = split_names(train.names, args.val_split, seed, "--val-split", train.folder)
        train, val = subset(train, kept, train.skipped), subset(train, held)
        meta["val_split"] = {"folder": _abs(args.train_dir), "fraction": args.val_split, "seed": seed, "held_out": held}
        print(f"validation: {len(held):,} images held out of {train.folder} (--val-split {args.val_split}, seed {seed})")
    else:
        val_labels = folder_labels(args.val_dir, args.val_labels, "--val-labels")
        val = load_labelled(args.val_dir, codec, "--val-dir", workers, labels=val_labels)
    small_data_defaults(args, len(train), default_epochs)
    meta["augment"] = args.augment
    meta["shift"] = 0 if args.augment else getattr(args, "shift", 0)  # what augment_batch applies
    args.data_meta = meta
    return train, val


def small_data_defaults(args, n_train: int, default_epochs: int) -> None:
    """Epochs and augmentation left open on the command line, chosen from the data size."""
    small = n_train < SMALL_DATA
    if getattr(args, "epochs", 0) is None:
        epochs = min(max(default_epochs, math.ceil(SMALL_DATA_IMAGES / max(n_train, 1))), MAX_SMALL_EPOCHS)
        args.epochs = epochs if small else default_epochs
        if small:
            print(f"small data set ({n_train:,} training images): {args.epochs} epochs (--epochs to choose)")
    on = small if args.augment is None else bool(args.augment)
    args.augment = float(args.augment_strength) if on else 0.0


def _abs(path) -> str | None:
    return str(Path(path).resolve()) if path else None


# --- testing ------------------------------------------------------------------------------


def load_test_data(args, codec, meta: dict) -> LabelledSet:
    """captcha_test.py's set (--data with --labels), only its held-out part when the model was
    trained with --val-split on that same folder."""
    from captchakit.data import testsets as captcha_testdata

    paths = args.data if isinstance(args.data, list) else [args.data]
    one_dir = getattr(args, "generate", None) is None and len(paths) == 1 and Path(paths[0]).is_dir()
    split = meta.get("val_split") or {}
    same = one_dir and bool(split) and _abs(paths[0]) == split.get("folder") and not args.all_images
    labels_path = args.labels
    if same and not labels_path and meta.get("labels") and Path(meta["labels"]).exists():
        labels_path = meta["labels"]
        print(f"labels from {labels_path}, as in training")
    labels = None
    if labels_path:
        labels = folder_labels(paths[0], labels_path) if one_dir else read_labels_file(labels_path).labels
    data = captcha_testdata.from_args(args, codec, labels)
    if not same:
        return data
    held = subset(data, split["held_out"])
    if not len(held):
        raise UserError(f"--data {paths[0]}: none of the images held out in training is there any more; pass --all-images")
    print(
        f"testing only the {len(held):,} images of {data.folder} held out for validation in training "
        f"(--val-split {split['fraction']}, seed {split['seed']}); --all-images tests every image"
    )
    return held
