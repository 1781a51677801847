"""Pseudo-labels: learn from unlabelled images of the same site (`captcha_train.py --unlabelled DIR`).

After the run on the labelled images, each round reads the unlabelled ones with the best model
so far and keeps a reading only when its calibrated confidence is at least --pseudo-threshold
and the image moved PROBE_SHIFT pixels left and right reads the same (a reading that changes
under a small shift is a guess). The kept readings join the labelled training images, and the
model is fine-tuned on both; the validation share, which only has true labels, judges it, and
model.pkl is replaced only by a round that validates at least as well, so wrong pseudo-labels
cannot take the model below what the labels alone gave. A validation share too small to choose an
epoch by (FEW_TO_CHOOSE) is too small to judge a round as well: one image decides, and the rounds
it turned down read better on held-out images (docs/BENCHMARKS.md, "Few labels and pseudo-labels");
every round is then kept, as the last epoch is. Every kept reading is written to
<model>_run/pseudo_labels.csv (file, reading, confidence, round) for inspection.

The rounds share one budget of training images, as many as the labelled run saw, so that the
whole command takes about twice the time of the labelled run alone.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from captchakit.checkpoint import load_checkpoint, read_checkpoint, write_checkpoint
from captchakit.data.cache import pack_folder
from captchakit.data.folders import absolute
from captchakit.data.images import check_folder
from captchakit.data.sets import LabelledSet, in_memory
from captchakit.errors import UserError
from captchakit.evaluate import model_outputs
from captchakit.files import atomic_path
from captchakit.model import shift_columns
from captchakit.train.config import FEW_TO_CHOOSE, TrainConfig
from captchakit.train.resume import run_files

PROBE_SHIFT = 2  # pixels: the consistency probe's move left and right


def check(config: TrainConfig, world_size: int) -> None:
    """--unlabelled's mistakes, before any training: a missing folder, --online, several processes."""
    if config.online:
        raise UserError("--unlabelled: --online draws labelled captchas without end; pseudo-labels are for your own images")
    if world_size > 1:
        raise UserError("--unlabelled: runs in one process; start it without torchrun")
    check_folder(config.unlabelled, "--unlabelled")


def unlabelled_set(config: TrainConfig, settings, known: set[str]) -> LabelledSet:
    """The readable images of --unlabelled at the model's size, their names, no labels; images with
    a label in this run (train, validation or test share of the same folder) are left out."""
    folder = check_folder(config.unlabelled, "--unlabelled")
    packed = pack_folder(folder, settings.width, settings.height, config.workers, False, settings.keep_aspect, settings.channels)
    same = absolute(config.unlabelled) == absolute(config.train_dir)
    rows = [i for i, n in enumerate(packed.names) if n not in packed.unreadable and not (same and n in known)]
    names = [packed.names[i] for i in rows]
    return LabelledSet(folder, packed.images, np.asarray(rows, dtype=np.int64), names, [""] * len(rows), [])


@torch.inference_mode()
def read_surely(model, data: LabelledSet, device, threshold: float, batch_size: int = 256) -> list[tuple[int, str, float]]:
    """(position in `data`, reading, confidence) of the images read at `threshold` or above and read
    the same when moved PROBE_SHIFT pixels either way; only those candidates get the two extra passes."""
    codec, kept = model.codec, []
    for start, x, out in model_outputs(model, data, device, batch_size):  # x (B, C, H, W)
        conf = codec.confidences(out).tolist()
        texts = codec.texts(out)
        sure = [i for i, (t, c) in enumerate(zip(texts, conf, strict=True)) if c >= threshold and codec.problem(t) is None]
        if not sure:
            continue
        probe = x[sure]
        left, right = (codec.texts(model(shift_columns(probe, s)).float().cpu()) for s in (-PROBE_SHIFT, PROBE_SHIFT))
        kept += [(start + i, texts[i], conf[i]) for i, a, b in zip(sure, left, right, strict=True) if a == b == texts[i]]
    return kept


def joined(train: LabelledSet, unlabelled: LabelledSet, kept: list[tuple[int, str, float]]) -> LabelledSet:
    """The labelled training images followed by the kept unlabelled ones under their readings."""
    positions = np.asarray([k[0] for k in kept], dtype=np.int64)
    images = np.concatenate([train.batch(np.arange(len(train))), unlabelled.batch(positions)])
    names = train.names + [unlabelled.names[p] for p in positions]
    return in_memory(f"{train.folder} + {len(kept):,} pseudo-labelled", images, names, train.labels + [k[1] for k in kept])


def write_kept(path: Path, unlabelled: LabelledSet, kept: list, round_: int) -> None:
    """pseudo_labels.csv: the kept readings of the latest round (file, reading, confidence, round)."""
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "reading", "confidence", "round"])
        writer.writerows([unlabelled.names[p], text, f"{conf:.6g}", round_] for p, text, conf in kept)


def rounds(config: TrainConfig, train: LabelledSet, val: LabelledSet, images_seen: int, device, train_round) -> None:
    """The pseudo-label rounds after the labelled run; `train_round(config, model, data)` trains one
    (run.py's training, so the loop, checkpoints and calibration are the same) and returns its best accuracy."""
    model, ckpt = load_checkpoint(config.model, device)
    known = set(train.names) | set(val.names) | set(ckpt.get("meta", {}).get("split", {}).get("test") or [])
    pool = unlabelled_set(config, model.settings, known)
    best, folder = float(ckpt.get("meta", {}).get("best_accuracy", 0.0)), run_files(config.model)[0]
    print(f"pseudo-labels: {len(pool):,} unlabelled images in {pool.folder}; {config.pseudo_rounds} round(s)")
    for r in range(1, config.pseudo_rounds + 1):
        kept = read_surely(model, pool, device, config.pseudo_threshold)
        write_kept(folder / "pseudo_labels.csv", pool, kept, r)
        print(f"round {r}: kept {len(kept):,} of {len(pool):,} readings (confidence >= {config.pseudo_threshold:g}, same when shifted)")
        if not kept:
            break
        data = joined(train, pool, kept)
        epochs = max(1, math.ceil(images_seen / config.pseudo_rounds / len(data)))
        path = folder / f"pseudo_round{r}.pkl"
        cfg = replace(config, model=str(path), epochs=epochs, patience=0, unlabelled=None)
        accuracy = train_round(cfg, model, data)
        adopted = adopts(accuracy, best, len(val))
        print(f"round {r}: validation {accuracy:.2%} against {best:.2%} before: {verdict(adopted, len(val))}")
        if not adopted:
            break  # the next round would read with the same model, keep the same images and train the same way
        best = accuracy
        note = {"rounds": r, "kept": len(kept), "unlabelled": str(pool.folder), "threshold": config.pseudo_threshold}
        adopt(path, config.model, note)
        model, _ = load_checkpoint(config.model, device)


def adopts(accuracy: float, best: float, n_val: int) -> bool:
    """Whether a round's model replaces model.pkl: it validates at least as well as the best so far,
    or the validation share is too small to tell (fewer than FEW_TO_CHOOSE images)."""
    return n_val < FEW_TO_CHOOSE or accuracy >= best


def verdict(adopted: bool, n_val: int) -> str:
    if n_val < FEW_TO_CHOOSE:
        return f"kept ({n_val} validation images are too few to judge a round by)"
    return "kept" if adopted else "not kept"


def adopt(path: Path, model_path, note: dict) -> None:
    """model.pkl becomes the round's model; the labelled run's record of its data (split, labels) stays."""
    new, old = read_checkpoint(path), read_checkpoint(model_path)
    meta = {**new.get("meta", {}), **{k: v for k, v in old.get("meta", {}).items() if k in ("split", "labels", "train_dir")}}
    write_checkpoint(model_path, {**new, "meta": {**meta, "pseudo_labels": note}})
    os.remove(path)
