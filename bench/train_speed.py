"""Training throughput of the default model and batch, on real images from the packed cache.

    python bench/train_speed.py --seconds 60 [--reference] [--model-config JSON]

Prints one JSON line: {"img_per_s": ...} and, with --reference, the classic captcha CNN's
figure measured in the same run (three conv blocks 32/64/64 with BatchNorm, Dropout(0.5) on
every feature map and max-pooling, then Linear(8960, 1024), batch 64) and the speed-up.
"""

from __future__ import annotations

import argparse
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
from captchakit.train import loop
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


def measure(model, data, targets, batch: int, seconds: float, channels_last: bool) -> float:
    """Images/s of the trainer's own train_step, batches drawn from the packed cache."""
    optimizer, scheduler = loop.make_optimizer(model, TrainConfig(), steps=10**6)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    order = np.random.default_rng(0).permutation(len(data))

    def step(i):
        pos = order[(i * batch) % (len(order) - batch) :][:batch]
        x = to_tensor(data.batch(pos))
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
    args = p.parse_args()
    if not (BENCH_DATA / "train").exists() and args.data == str(BENCH_DATA / "train"):
        ensure_bench_data()
    settings = Settings()
    data = load_labelled(args.data, LabelCodec(settings), "--data")
    targets = data.targets(LabelCodec(settings))
    torch.manual_seed(0)
    model = CaptchaCNN(settings, TrainConfig(model_config=args.model_config).network())
    record = {"img_per_s": round(measure(model, data, targets, BATCH_SIZE, args.seconds, True), 1)}
    record.update(batch=BATCH_SIZE, threads=torch.get_num_threads(), seconds=args.seconds)
    if args.reference:
        ref = round(measure(ClassicCNN(settings), data, targets, 64, args.seconds, False), 1)
        # The ratio of the two printed rates, so a reader who divides them gets the same figure.
        record.update(reference_img_per_s=ref, speedup=round(record["img_per_s"] / ref, 1))
    emit(record)


if __name__ == "__main__":
    main()
