"""captcha_test.py's test sets: a folder (only its test share when training held one out), image
files given one by one, or fresh generated captchas.

Files and generated captchas are built in memory as a LabelledSet, so evaluate() and the
report treat them like a folder; nothing is written (no cache, no images). Every image goes
through images.load_image, the preprocessing used everywhere else.
"""

from __future__ import annotations

from pathlib import Path

from captchakit.codec import LabelCodec
from captchakit.data.folders import absolute, folder_labels
from captchakit.data.images import ImageError, collect_files, label_from_name, load_as
from captchakit.data.labels import own_labels_file, read_labels_file
from captchakit.data.sets import LabelledSet, in_memory, load_labelled, subset
from captchakit.data.synth import synth_set
from captchakit.errors import UserError

GENERATE_SPLIT = "test"  # --generate draws the images of captcha_gen.py's test split with the same --seed


def add_test_args(p) -> None:
    p.add_argument(
        "--labels",
        metavar="FILE",
        help="CSV or TSV of filename,label lines for the images (default: a folder's own labels.csv, else file names)",
    )
    p.add_argument("--all-images", action="store_true", help="test every image, even where training held a test share out of the folder")


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
                arrays.append(load_as(path, s))
            except ImageError as err:
                reason = f"not a readable image ({err})"
        if reason:
            skipped.append((str(path), reason))
            continue
        names.append(str(path))
        labels.append(label)
    data = in_memory(str(paths[0].parent), arrays, names, labels, skipped)
    if not names:
        raise UserError(f"{flag} {paths[0]}: none of the {len(paths)} file(s) is usable; first: {data.describe_skipped(1)}")
    return data


def load_test_set(paths: list[str], codec: LabelCodec, flag: str = "--data", labels: dict[str, str] | None = None) -> LabelledSet:
    """One folder (read through the packed cache), or image files and folders given one by one."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return load_labelled(paths[0], codec, flag, labels=labels)
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
        if args.generate < 1:
            raise UserError(f"--generate {args.generate}: ask for at least 1 captcha")
        return synth_set(codec, args.generate, args.seed, GENERATE_SPLIT)
    return load_test_set(args.data, codec, "--data", labels)


def load_test_data(args, codec, meta: dict) -> LabelledSet:
    """captcha_test.py's set (--data with --labels); only the test share when the model was trained
    on shares of that same folder (or, for older models, only its --val-split part)."""
    paths = args.data if isinstance(args.data, list) else [args.data]
    one_dir = getattr(args, "generate", None) is None and len(paths) == 1 and Path(paths[0]).is_dir()
    split = meta.get("split") or meta.get("val_split") or {}
    same = one_dir and bool(split) and absolute(paths[0]) == split.get("folder") and not args.all_images
    labels_path = args.labels
    if not labels_path and one_dir and own_labels_file(paths[0]):
        labels_path = own_labels_file(paths[0])
        print(f"labels from {labels_path}, the folder's own labels file")
    if same and not labels_path and meta.get("labels") and Path(meta["labels"]).exists():
        labels_path = meta["labels"]
        print(f"labels from {labels_path}, as in training")
    labels = None
    if labels_path:
        labels = folder_labels(paths[0], labels_path) if one_dir else read_labels_file(labels_path).labels
    data = from_args(args, codec, labels)
    return held_out_part(data, split, paths[0]) if same else data


def held_out_part(data: LabelledSet, split: dict, folder) -> LabelledSet:
    """The images of `data` that training held out as its test share (old models: its validation part)."""
    names, said = split.get("test"), "held out as the test share in training: nothing in training saw them"
    if names is None:  # a model trained before test shares: its --val-split part also chose its epoch
        names, said = split["held_out"], f"held out for validation in training (--val-split {split['fraction']})"
    if not names:
        raise UserError(f"--data {folder}: training held no test share out of it (--test-split 0); pass another folder or --all-images")
    held = subset(data, names)
    if not len(held):
        raise UserError(f"--data {folder}: none of the images held out in training is there any more; pass --all-images")
    print(f"testing only the {len(held):,} images of {data.folder} {said} (seed {split['seed']}); --all-images tests every image")
    return held
