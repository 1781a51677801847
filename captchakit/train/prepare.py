"""Before the first step: the settings a run trains for, its fresh network, and its data.

- Settings not given on the command line are read off the training folder: the charset and
  the label lengths from the labels, the image size from the median image (rounded to the
  network's stem factor), printed and stored in model.pkl.
- `--val-split F` holds a seeded share of the training folder out for validation and records
  which files, so that `captcha_test.py --data SAME_FOLDER` tests only those.
- `--init-from MODEL` starts the convolution layers from another model (fine-tuning).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from captchakit.checkpoint import read_checkpoint
from captchakit.cli import settings_from_args
from captchakit.codec import LabelCodec
from captchakit.data.folders import folder_labels, median_size, raw_labels, round_to, split_names
from captchakit.data.images import check_folder
from captchakit.data.sets import LabelledSet, load_labelled, subset
from captchakit.errors import UserError
from captchakit.model import CaptchaCNN
from captchakit.settings import Settings
from captchakit.train.config import TrainConfig


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
    size = median_size(folder, [n for n, t in labels.items() if t], config.seed) if None in (config.width, config.height) else None
    if size:
        base = base.with_(width=size[0], height=size[1])
        said.append(f"median image size {size[0]}x{size[1]}")
    if said:
        print(f"read off {len(texts):,} labelled images in {folder}: " + ", ".join(said))
    return finish_settings(config, base, stem)


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


def new_model(config: TrainConfig) -> CaptchaCNN:
    """The network a fresh run starts from: seeded weights, or --init-from's convolution layers."""
    network = config.network()
    # Without a training folder to read them off, --online's settings are the flags over the defaults.
    settings = finish_settings(config, Settings(), network.stem) if config.online else infer_settings(config, network.stem)
    torch.manual_seed(config.seed)
    try:
        model = CaptchaCNN(settings, network)
    except (ValueError, TypeError, RuntimeError) as err:  # a --model-config that builds no network
        raise UserError(f"--model-config {config.model_config}: {err}; see ModelConfig in captcha_cnn_model.py") from None
    if config.init_from:
        init_from(config.init_from, model)
    return model


def init_from(path: str, model: CaptchaCNN) -> None:
    """Copy the convolution stack of the model at `path` into `model` (fine-tuning); the head stays fresh."""
    src = read_checkpoint(path, flag="--init-from")["state_dict"]
    own = model.state_dict()
    fits = {k: v for k, v in src.items() if k.startswith("features.") and k in own and own[k].shape == v.shape}
    wanted = [k for k in own if k.startswith("features.")]
    if len(fits) < len(wanted):
        raise UserError(
            f"--init-from {path}: its convolution layers do not fit this network "
            f"({len(fits)} of {len(wanted)} tensors match); use a model with the same --model-config"
        )
    model.load_state_dict(fits, strict=False)
    print(f"convolution layers from {path} ({len(fits)} tensors); the output layer starts fresh")


def load_train_val(config: TrainConfig, codec: LabelCodec) -> tuple[LabelledSet, LabelledSet, dict]:
    """(train, validation, what model.pkl should remember about the data), from --train-dir and
    --val-dir or a --val-split of --train-dir."""
    workers = config.workers
    train = load_labelled(config.train_dir, codec, "--train-dir", workers, labels=folder_labels(config.train_dir, config.labels))
    meta = {"labels": absolute(config.labels), "ignore_case": codec.ignore_case}
    if config.val_split is None:
        val_labels = folder_labels(config.val_dir, config.val_labels, "--val-labels")
        return train, load_labelled(config.val_dir, codec, "--val-dir", workers, labels=val_labels), meta
    seed = config.seed if config.split_seed is None else config.split_seed
    kept, held = split_names(train.names, config.val_split, seed, "--val-split", train.folder)
    train, val = subset(train, kept, train.skipped), subset(train, held)
    meta["val_split"] = {"folder": absolute(config.train_dir), "fraction": config.val_split, "seed": seed, "held_out": held}
    print(f"validation: {len(held):,} images held out of {train.folder} (--val-split {config.val_split}, seed {seed})")
    return train, val, meta


def absolute(path) -> str | None:
    return str(Path(path).resolve()) if path else None
