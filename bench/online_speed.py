"""What --online costs on this machine: generation vs training images/s.

    python bench/online_speed.py [--seconds 20] [--workers 1 2]

Measures, for the default settings, model and batch:
  - gen_<W>: images/s that W worker processes draw (captcha_online, no training);
  - train: images/s of the trainer's own train_step on ready batches (the packed-cache case);
  - online_<W>: images/s of train_step fed by W generating workers, the real --online loop
    (generators and torch share the cores).
Prints one JSON line with those keys.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import emit

from captcha_setting import Settings
from captchakit.model import CaptchaCNN
from captchakit.train import loop
from captchakit.train.config import BATCH_SIZE, LABEL_SMOOTHING, TrainConfig
from captchakit.train.engine import Engine
from captchakit.train.online import OnlineSet


def timed(batches, seconds: float, work=None) -> float:
    """Images/s over `seconds` of `batches` (after one warm-up batch), each passed to `work`."""
    it = iter(batches)
    first = next(it)
    if work:
        work(*first)
    done, start = 0, time.perf_counter()
    for images, targets in it:
        if work:
            work(images, targets)
        done += len(images)
        if time.perf_counter() - start >= seconds:
            break
    return done / (time.perf_counter() - start)


def trainer(settings: Settings):
    model = CaptchaCNN(settings).to(memory_format=torch.channels_last).train()
    optimizer, scheduler = loop.make_optimizer(model, TrainConfig(), steps=10**6)
    engine = Engine.plain(model, "cpu")

    def step(images, targets):
        x, y = engine.to_device(images, targets)
        loop.train_step(model, x, y, optimizer, scheduler, LABEL_SMOOTHING, engine)

    return step


def ready_batches(data: OnlineSet, batch: int):
    """One generated batch, served again and again: training with no generation cost."""
    images, targets = next(iter(data.epoch_plan(1, batch).batches))
    while True:
        yield images, targets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20, help="length of each measurement (default: %(default)s)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to try (default: 1 2)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="images per step (default: %(default)s)")
    args = p.parse_args()
    settings, size = Settings(), 10**6  # an epoch longer than any measurement
    record = {"threads": torch.get_num_threads(), "batch": args.batch_size}
    for w in args.workers:
        record[f"gen_{w}"] = round(timed(OnlineSet(settings, size, 0, w).epoch_plan(1, args.batch_size).batches, args.seconds), 1)
    record["train"] = round(timed(ready_batches(OnlineSet(settings, size, 0, 0), args.batch_size), args.seconds, trainer(settings)), 1)
    for w in args.workers:
        batches = OnlineSet(settings, size, 0, w).epoch_plan(1, args.batch_size).batches
        record[f"online_{w}"] = round(timed(batches, args.seconds, trainer(settings)), 1)
    emit(record)


if __name__ == "__main__":
    main()
