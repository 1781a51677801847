"""`captcha_train.py --online`: train on captchas drawn fresh every epoch, with no files.

Worker processes (a torch DataLoader over an IterableDataset, `--workers N`) draw captchas
with captchakit.data.synth.CaptchaFactory in the model's settings and read each PIL image with
captchakit.data.images.load_image, the preprocessing used everywhere else, so a model trained
online sees exactly the pixels that a generated PNG gives it in test and predict. They
yield uint8 batches (B, H, W) with their targets (B, length).

Every image has its own seed, `image_seed(--seed, "online-e<epoch>", index)`: the data do
not depend on the number of workers, every epoch is new, and under torchrun rank r draws
indices [r * n, (r + 1) * n) of the epoch, so ranks never share an image and together draw
what one process would. Validation uses --val-dir, or, when that folder does not exist, a
fixed set of --online-val generated captchas (split "online-val", seed VAL_SEED).

On a small CPU the drawing workers and the training share the same cores, so online training
runs well below the packed-cache rate: see "Online generation" in docs/BENCHMARKS.md before
choosing it there.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from captchakit import settings as cs
from captchakit.codec import LabelCodec
from captchakit.data.folders import folder_labels
from captchakit.data.images import load_as
from captchakit.data.render import Renderer
from captchakit.data.sets import LabelledSet, load_labelled
from captchakit.data.synth import CaptchaFactory, synth_set
from captchakit.errors import UserError
from captchakit.settings import Settings
from captchakit.train import distributed as distributed
from captchakit.train.config import TrainConfig
from captchakit.train.distributed import EpochPlan

VAL_SEED = 0  # fixed, so runs with different --seed are checked on the same captchas


def default_workers(workers: int) -> int:
    """--workers, or this machine's cores shared among the processes torchrun started on it."""
    if workers > 0:
        return workers
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


class CaptchaStream(IterableDataset):
    """Images start .. start+count-1 of a split, in batches; worker w of W yields batches w, w+W, ...

    The DataLoader collects the workers' batches round-robin, so batches come out in order
    whatever the number of workers.
    """

    def __init__(self, settings: Settings, seed: int, split: str, start: int, count: int, batch: int, source=None):
        """`source`: a Renderer (the varied style), or None for the captcha library's style."""
        super().__init__()
        self.settings, self.seed, self.split, self.source = settings, seed, split, source
        self.start, self.count, self.batch = start, count, batch

    def __len__(self) -> int:
        return -(-self.count // self.batch)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        s = self.settings
        # Training draws O and 0 more often in the captcha style, as a generated train split does.
        factory, codec = self.source or CaptchaFactory(s, emphasis=cs.TRAIN_EMPHASIS), LabelCodec(s)
        for b in range(worker, len(self), workers):
            lo, hi = b * self.batch, min((b + 1) * self.batch, self.count)
            images = np.empty((hi - lo, *s.array_shape), dtype=np.uint8)
            targets = np.empty((hi - lo, codec.length), dtype=np.int64)
            for j, index in enumerate(range(self.start + lo, self.start + hi)):
                label, image = factory.make_seeded(self.seed, self.split, index)
                images[j] = load_as(image, s)
                targets[j] = codec.encode(label)
            yield images, targets  # (B, H, W) uint8, (B, length) int64


def stream_batches(stream: CaptchaStream, workers: int):
    """Run `stream` in `workers` processes (0: in this one); yields numpy (images, targets)."""
    loader = DataLoader(stream, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None)
    for images, targets in loader:  # tensors through shared memory; numpy views of them
        yield images.numpy(), targets.numpy()


class OnlineSet:
    """The training 'set' of an --online run: `size` new captchas every epoch."""

    def __init__(self, settings: Settings, size: int, seed: int, workers: int, style: str = "captcha"):
        self.settings, self.size, self.seed, self.workers = settings, size, seed, workers
        self.source = renderer(settings) if style == "varied" else None
        style_note = ", varied style" if self.source else ""
        self.folder = f"generated every epoch by {workers} worker process(es), seed {seed}{style_note}"
        self.skipped: list = []

    def __len__(self) -> int:
        return self.size

    def targets(self, codec) -> None:
        return None  # each batch comes with its own

    def epoch_plan(self, epoch: int, batch_size: int, rank: int = 0, world: int = 1) -> EpochPlan:
        """This rank's batches of epoch `epoch`: full batches only, the same count on every rank."""
        per = self.size // world
        batch = max(min(batch_size, per), 1)
        steps = per // batch
        stream = CaptchaStream(self.settings, self.seed, f"online-e{epoch}", rank * per, steps * batch, batch, self.source)
        return EpochPlan(steps, batch, stream_batches(stream, self.workers))


def renderer(settings: Settings):
    """The varied style's source for these settings: their charset and label lengths, heights drawn per image."""
    try:
        return Renderer.for_settings(settings)
    except ValueError as err:
        raise UserError(f"--online-style varied: {err}") from None


def load_train_val(config: TrainConfig, codec: LabelCodec) -> tuple[OnlineSet, LabelledSet, dict]:
    """captcha_train.py's (train, validation, data record) for --online."""
    for flag, value in (("--online-size", config.online_size), ("--online-val", config.online_val)):
        if value < 1:
            raise UserError(f"{flag} {value}: use at least 1")
    workers = default_workers(config.workers)
    train = OnlineSet(codec.settings, config.online_size, config.seed, workers, config.online_style)
    val_dir = config.val_dir or cs.TEST_DATASET_PATH
    if Path(val_dir).is_dir():
        labels = folder_labels(val_dir, config.val_labels, "--val-labels")
        val = load_labelled(val_dir, codec, "--val-dir", labels=labels)
    elif distributed.is_main():
        print(f"--val-dir {val_dir}: no such folder; checking on {config.online_val:,} generated captchas (seed {VAL_SEED})")
        name = f"<{config.online_val:,} generated captchas, seed {VAL_SEED}>"
        val = synth_set(codec, config.online_val, VAL_SEED, "online-val", name, train.source)
    else:  # only rank 0 evaluates
        val = LabelledSet(Path("<rank 0 only>"), np.zeros((0, 1, 1), np.uint8), np.zeros(0, np.int64), [], [], [])
    return train, val, {"online": True, "online_size": config.online_size}
