"""Training throughput of the default model and batch, on real images from the packed cache.

    python bench/train_speed.py --seconds 60 [--reference] [--model-config JSON]
    python bench/train_speed.py --data FOLDER --own [--width W --height H] [--color | --grey] [--augment]

Prints one JSON line: {"img_per_s": ...} and, with --reference, the classic captcha CNN's
figure measured in the same run (three conv blocks 32/64/64 with BatchNorm, Dropout(0.5) on
every feature map and max-pooling, then Linear(8960, 1024), batch 64) and the speed-up.
--own reads a user's folder as captcha_train.py --train-dir does (charset, length, the size and
colour read off the images, or the flags given); --augment adds a small-data run's augmentation.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import numpy as np
import torch
from _common import BENCH_DATA, emit, ensure_bench_data
from torch import nn

from captcha_setting import Settings
from captchakit.codec import LabelCodec
from captchakit.data.images import to_tensor
from captchakit.data.sets import load_labelled
from captchakit.model import CaptchaCNN
from captchakit.train import loop, prepare
from captchakit.train.augment import augment_batch
from captchakit.train.config import BATCH_SIZE, LABEL_SMOOTHING, TrainConfig


class ClassicCNN(nn.Module):
    """The field's reference design, for comparison only (1x60x160 input, 4x36 outputs)."""

    def __init__(self, settings: Settings):
        super().__init__()
        self.codec = LabelCodec(settings)

        def block(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.Dropout(0.5), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(1, 32), block(32, 64), block(64, 64))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(8960, 1024), nn.Dropout(0.5), nn.ReLU(), nn.Linear(1024, self.codec.num_outputs))

    def forward(self, x):
        return self.fc(self.features(x))

    def loss(self, logits, targets, label_smoothing=0.0):
        """What train_step calls: CaptchaCNN.loss of a position head."""
        k = self.codec.num_classes
        return nn.functional.cross_entropy(logits.view(-1, k).float(), targets.view(-1), label_smoothing=label_smoothing)


def measure(model, data, targets, batch: int, seconds: float, channels_last: bool, augment: bool = False) -> float:
    """Images/s of the trainer's own train_step, batches drawn from the packed cache."""
    optimizer, scheduler = loop.make_optimizer(model, TrainConfig(), steps=10**6)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    order = np.random.default_rng(0).permutation(len(data))

    def step(i):
        pos = order[(i * batch) % (len(order) - batch) :][:batch]
        x = to_tensor(data.batch(pos))
        if augment:
            x = augment_batch(x, 1.0, 0, 0, 0, i)
        if not channels_last:
            x = x.contiguous()
        loop.train_step(model, x, torch.from_numpy(targets[pos]), optimizer, scheduler, LABEL_SMOOTHING)

    for i in range(3):  # warm-up: first calls pick kernels
        step(i)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(done)
        done += 1
    return done * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30, help="time per measured model (default: %(default)s)")
    p.add_argument("--reference", action="store_true", help="also measure the classic captcha CNN")
    p.add_argument("--data", default=str(BENCH_DATA / "train"), help="packed training folder (generated if missing)")
    p.add_argument("--model-config", default=None, metavar="JSON", help="measure another network, as captcha_train.py --model-config does")
    p.add_argument("--own", action="store_true", help="read the settings off --data as captcha_train.py --train-dir does")
    p.add_argument("--width", type=int, help="with --own: the image width, as captcha_train.py's flag")
    p.add_argument("--height", type=int, help="with --own: the image height, as captcha_train.py's flag")
    colour = p.add_mutually_exclusive_group()
    colour.add_argument("--color", dest="color", action="store_true", default=None, help="with --own: read in colour")
    colour.add_argument("--grey", dest="color", action="store_false", help="with --own: read grey")
    p.add_argument("--augment", action="store_true", help="augment every batch, as a small-data run does")
    args = p.parse_args()
    if not (BENCH_DATA / "train").exists() and args.data == str(BENCH_DATA / "train"):
        ensure_bench_data()
    config = TrainConfig(train_dir=args.data, model_config=args.model_config, width=args.width, height=args.height, color=args.color)
    with contextlib.redirect_stdout(sys.stderr):  # what it read off the data is said on stderr: stdout is JSON only
        settings = prepare.infer_settings(config, config.network().stem) if args.own else Settings()
    data = load_labelled(args.data, LabelCodec(settings), "--data")
    targets = data.targets(LabelCodec(settings))
    torch.manual_seed(0)
    model = CaptchaCNN(settings, config.network())
    record = {"img_per_s": round(measure(model, data, targets, BATCH_SIZE, args.seconds, True, args.augment), 1)}
    record.update(batch=BATCH_SIZE, threads=torch.get_num_threads(), seconds=args.seconds, settings=settings.describe())
    if args.reference:
        ref = round(measure(ClassicCNN(settings), data, targets, 64, args.seconds, False), 1)
        # The ratio of the two printed rates, so a reader who divides them gets the same figure.
        record.update(reference_img_per_s=ref, speedup=round(record["img_per_s"] / ref, 1))
    emit(record)


if __name__ == "__main__":
    main()
