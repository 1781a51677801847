"""Before the first step: the settings a run trains for, its fresh network, and its data.

- Settings not given on the command line are read off the training folder: the charset and
  the label lengths from the labels, the image size from the median image (rounded to the
  network's stem factor; taller images are read scaled down to a working height, aspect ratio
  kept: `read_size`), colour where grey loses the images' contrast (`choose_colour`), printed
  and stored in model.pkl.
- `--val-split F` holds a seeded share of the training folder out for validation and records
  which files, so that `captcha_test.py --data SAME_FOLDER` tests only those.
- `--init-from MODEL` starts the convolution layers from another model (fine-tuning).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from captchakit import settings as cs
from captchakit.checkpoint import read_checkpoint
from captchakit.cli import settings_from_args
from captchakit.codec import LabelCodec
from captchakit.data.colour import COLOUR_SAMPLE, GREY_ENOUGH, grey_share
from captchakit.data.folders import (
    absolute,
    folder_labels,
    image_sizes,
    median_of,
    raw_labels,
    round_to,
    sample_names,
    three_way_split,
    working_size,
)
from captchakit.data.images import check_folder
from captchakit.data.sets import LabelledSet, load_labelled, subset
from captchakit.errors import UserError
from captchakit.model import CaptchaCNN, ModelConfig
from captchakit.settings import Settings
from captchakit.train import finetune
from captchakit.train.config import FEW_TO_CHOOSE, FEW_TO_DECIDE, TEST_SHARE, VAL_SHARE, TrainConfig


def infer_settings(config: TrainConfig, stem: int) -> Settings:
    """Settings from the flags, with what they leave open read off --train-dir (and --labels)."""
    folder = check_folder(config.train_dir, "--train-dir")
    labels = raw_labels(folder, folder_labels(folder, config.labels, quiet=True))
    texts = [t.upper() if config.ignore_case else t for t in labels.values() if t and not any(c.isspace() for c in t)]
    base, said = Settings(), []
    if texts:
        lengths = [len(t) for t in texts]
        charset = "".join(sorted(set("".join(texts))))
        base = base.with_(charset=charset, length=max(lengths), min_length=min(lengths))
        if config.charset is None:
            said.append(f"charset {charset!r} ({len(charset)})")
        if config.length is None:
            said.append(f"length {describe_lengths(lengths)}")
    named = [n for n, t in labels.items() if t]
    base, size_note = read_size(config, folder, named, base, stem, said)
    if said:
        print(f"read off {len(texts):,} labelled images in {folder}: " + ", ".join(said))
    if size_note:
        print(size_note)
    return choose_colour(config, folder, named, finish_settings(config, base, stem))


def read_size(config: TrainConfig, folder: Path, names: list[str], base: Settings, stem: int, said: list[str]) -> tuple[Settings, str]:
    """`base` with the size the images are read at, and a line saying why when it is not their median size.

    Images taller than WORKING_HEIGHT (neither --width nor --height given) are read scaled down to it,
    aspect ratio kept and padded (Settings.keep_aspect); smaller ones at their median size, as before."""
    if None not in (config.width, config.height):
        return base, ""
    sizes = image_sizes(folder, names, config.seed)
    median = median_of(sizes)
    if median is None:
        return base, ""
    said.append(f"median image size {median[0]}x{median[1]}")
    work = working_size(sizes, stem) if config.width is None and config.height is None else None
    if work is None:
        return base.with_(width=median[0], height=median[1]), ""
    note = (
        f"working size {work[0]}x{work[1]}: the images are read scaled to {work[1]} pixels high, aspect ratio kept "
        f"(padded where an image's differs), since a step costs what its pixels cost; --width and --height choose another size"
    )
    return base.with_(width=work[0], height=work[1], keep_aspect=True), note


def choose_colour(config: TrainConfig, folder: Path, names: list[str], settings: Settings) -> Settings:
    """Colour (3 channels) when neither --color nor --grey is given and a grey copy of the images
    keeps too little of their edge contrast (data/colour.py); else `settings` as they are."""
    if config.color is not None or not names:
        return settings
    paths = [folder / n for n in sample_names(names, COLOUR_SAMPLE, config.seed)]
    share = grey_share(paths, settings.width, settings.height, settings.keep_aspect)
    if share is None or share >= GREY_ENOUGH:
        return settings
    print(f"colour: a grey copy keeps {share:.0%} of the images' edge contrast, so they are read in colour (--grey to read them grey)")
    return settings.with_(channels=3)


def describe_lengths(lengths: list[int]) -> str:
    """[4, 5, 5] -> '4-5 (4: 1, 5: 2)'; one length -> '5'."""
    lo, hi = min(lengths), max(lengths)
    if lo == hi:
        return str(lo)
    counts = np.bincount(lengths)
    return f"{lo}-{hi} (" + ", ".join(f"{n}: {counts[n]:,}" for n in range(lo, hi + 1) if counts[n]) + ")"


def finish_settings(config: TrainConfig, base: Settings, stem: int) -> Settings:
    """Apply the flags on top of `base`; fold case; round the size to the stem factor, saying so."""
    if config.length is not None:
        # A named --length is exact: labels of another length are listed as unusable (--min-length opens a range).
        base = base.with_(min_length=config.length, length=config.length)
    settings = settings_from_args(config, base)
    if config.color is not None:
        settings = settings.with_(channels=3 if config.color else 1)
    if config.keep_aspect:
        settings = settings.with_(keep_aspect=True)
    if config.ignore_case:
        settings = settings.with_(charset="".join(dict.fromkeys(settings.charset.upper())), ignore_case=True)
    if config.min_length is not None:
        try:
            settings = settings.with_(min_length=config.min_length)
        except ValueError as err:
            raise UserError(f"--min-length {config.min_length}: {err}") from None
    w, h = round_to(settings.width, stem), round_to(settings.height, stem)
    if (w, h) != (settings.width, settings.height):
        print(f"image size {w}x{h}: {settings.width}x{settings.height} rounded to multiples of the network's stem factor {stem}")
        settings = settings.with_(width=w, height=h)
    return settings


def new_model(config: TrainConfig) -> tuple[CaptchaCNN, str | None]:
    """The network a fresh run starts from: seeded weights, or fine-tuned from --init-from or the
    general reader; and the path of the model it fine-tunes (None: fresh)."""
    network = config.network()
    # Without a training folder to read them off, --online's settings are the flags over the defaults.
    settings = finish_settings(config, Settings(), network.stem) if config.online else infer_settings(config, network.stem)
    network = sequence_head(config, network, settings)
    source = finetune.source_model(config, lambda: labelled_count(config))
    if source:
        source_ckpt = read_checkpoint(source, "--init-from")  # read once: follow_source and init_from both use it
        settings, network = finetune.follow_source(config, settings, network, source_ckpt, network.stem)
    torch.manual_seed(config.seed)
    try:
        model = CaptchaCNN(settings, network)
    except (ValueError, TypeError, RuntimeError) as err:  # a --model-config that builds no network
        raise UserError(f"--model-config {config.model_config}: {err}; see ModelConfig in captcha_cnn_model.py") from None
    if source:
        finetune.init_from(source, model, source_ckpt)
    return model, source


def labelled_count(config: TrainConfig) -> int:
    """Labelled images in --train-dir (before any share is held out): whether it is a small data set."""
    labels = raw_labels(Path(config.train_dir), folder_labels(config.train_dir, config.labels, quiet=True))
    return sum(1 for t in labels.values() if t)


def sequence_head(config: TrainConfig, network: ModelConfig, settings: Settings) -> ModelConfig:
    """Variable-length labels get the CTC head, which aligns itself to texts of any length, unless
    --model-config names a head (the study: docs/BENCHMARKS.md, "Variable length"); fixed-length
    labels keep the head they have."""
    if not settings.variable_length or "head" in json.loads(config.model_config or "{}"):
        return network
    print('variable-length labels: the CTC head (--model-config \'{"head": "attention"}\' for the position head)')
    return replace(network, head="ctc")


def load_train_val(config: TrainConfig, codec: LabelCodec) -> tuple[LabelledSet, LabelledSet, dict]:
    """(train, validation, what model.pkl should remember about the data), from --train-dir and
    --val-dir, or from validation and test shares held out of --train-dir."""
    workers = config.workers
    if config.labels:
        print(f"labels from {config.labels}")
    train = load_labelled(config.train_dir, codec, "--train-dir", workers, labels=folder_labels(config.train_dir, config.labels))
    meta = {"labels": absolute(config.labels), "ignore_case": codec.ignore_case}
    if not holds_shares_out(config):
        val_dir = config.val_dir or cs.TEST_DATASET_PATH
        val_labels = folder_labels(val_dir, config.val_labels, "--val-labels")
        return train, load_labelled(val_dir, codec, "--val-dir", workers, labels=val_labels), meta
    seed = config.seed if config.split_seed is None else config.split_seed
    fractions = (
        VAL_SHARE if config.val_split is None else config.val_split,
        TEST_SHARE if config.test_split is None else config.test_split,
    )
    kept, val_names, test_names = three_way_split(train.names, *fractions, seed, train.folder)
    train, val = subset(train, kept, train.skipped), subset(train, val_names)
    meta["split"] = {"folder": absolute(config.train_dir), "seed": seed, "fractions": fractions, "val": val_names, "test": test_names}
    say_shares(train.folder, len(val), len(test_names), seed)
    return train, val, meta


def holds_shares_out(config: TrainConfig) -> bool:
    """Validation and test shares come out of --train-dir when --val-split asks for them, or when
    --train-dir is given without --val-dir (the default data set keeps its own test folder)."""
    if config.val_split is not None:
        return True
    if config.val_dir is not None or Path(config.train_dir).resolve() == Path(cs.TRAIN_DATASET_PATH).resolve():
        if config.test_split is not None:
            raise UserError("--test-split: a test share is held out of --train-dir only with --val-split or without --val-dir")
        return False
    return True


def say_shares(folder, n_val: int, n_test: int, seed: int) -> None:
    role = "they check the run" if n_val < FEW_TO_CHOOSE else "they choose the epoch and stop the run"
    print(
        f"held out of {folder} (seed {seed}): {n_val:,} images for validation ({role}), "
        f"{n_test:,} as a test share nothing in training touches (captcha_test.py --data on this folder tests them)"
    )
    if FEW_TO_CHOOSE <= n_val < FEW_TO_DECIDE:  # fewer: the run keeps its last epoch (make_plan says so)
        print(f"validation share of {n_val} images: one image is {1 / n_val:.1%} of it, so the best epoch is a rough choice; label more")
