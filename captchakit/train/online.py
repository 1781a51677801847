"""`captcha_train.py --online`: train on captchas drawn fresh every epoch, with no files.

Worker processes (a torch DataLoader over an IterableDataset, `--workers N`) draw captchas
with captcha_gen.CaptchaFactory in the model's settings and read each PIL image with
captcha_dataset.load_image, the preprocessing used everywhere else, so a model trained
online sees exactly the pixels that a generated PNG gives it in test and predict. They
yield uint8 batches (B, H, W) with their targets (B, length).

Every image has its own seed, `image_seed(--seed, "online-e<epoch>", index)`: the data do
not depend on the number of workers, every epoch is new, and under torchrun rank r draws
indices [r * n, (r + 1) * n) of the epoch, so ranks never share an image and together draw
what one process would. Validation uses --val-dir, or, when that folder does not exist, a
fixed set of --online-val generated captchas (split "online-val", seed VAL_SEED).

On a 2-core CPU a worker draws about 250 images/s and the model trains on about 420 images/s,
but both share the two cores: online training runs at about 0.4x the packed-cache rate. See
"Online generation" in docs/BENCHMARKS.md before choosing it there.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from captchakit import settings as cs
from captchakit.codec import LabelCodec
from captchakit.data import folders as own
from captchakit.data.cache import LabelledSet, load_image, load_labelled
from captchakit.errors import UserError
from captchakit.settings import Settings
from captchakit.train import distributed as distributed
from captchakit.train.distributed import EpochPlan

ONLINE_VAL = 2_000  # generated validation captchas when --val-dir does not exist
VAL_SEED = 0  # fixed, so runs with different --seed are checked on the same captchas
VAL_BATCH = 250


def add_args(parser) -> None:
    g = parser.add_argument_group("online generation (no files)")
    g.add_argument(
        "--online",
        action="store_true",
        help="train on captchas generated fresh every epoch by --workers processes instead of --train-dir",
    )
    g.add_argument(
        "--online-size",
        type=int,
        default=cs.TRAIN_COUNT,
        metavar="N",
        help="with --online: captchas per epoch, over all processes (default: %(default)s, the size of the default training set)",
    )
    g.add_argument(
        "--online-val",
        type=int,
        default=ONLINE_VAL,
        metavar="N",
        help=f"with --online and no --val-dir folder: check on N generated captchas, seed {VAL_SEED} (default: %(default)s)",
    )


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

    def __init__(self, settings: Settings, seed: int, split: str, start: int, count: int, batch: int, emphasis: dict | None = None):
        super().__init__()
        self.settings, self.seed, self.split, self.emphasis = settings, seed, split, emphasis
        self.start, self.count, self.batch = start, count, batch

    def __len__(self) -> int:
        return -(-self.count // self.batch)

    def __iter__(self):
        from captchakit.data.synth import CaptchaFactory

        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        s = self.settings
        factory, codec = CaptchaFactory(s, emphasis=self.emphasis), LabelCodec(s)
        for b in range(worker, len(self), workers):
            lo, hi = b * self.batch, min((b + 1) * self.batch, self.count)
            images = np.empty((hi - lo, s.height, s.width), dtype=np.uint8)
            targets = np.empty((hi - lo, codec.length), dtype=np.int64)
            for j, index in enumerate(range(self.start + lo, self.start + hi)):
                label, image = factory.make_seeded(self.seed, self.split, index)
                images[j] = load_image(image, s.width, s.height)
                targets[j] = codec.encode(label)
            yield images, targets  # (B, H, W) uint8, (B, length) int64


def stream_batches(stream: CaptchaStream, workers: int):
    """Run `stream` in `workers` processes (0: in this one); yields numpy (images, targets)."""
    loader = DataLoader(stream, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None)
    for images, targets in loader:  # tensors through shared memory; numpy views of them
        yield images.numpy(), targets.numpy()


class OnlineSet:
    """The training 'set' of an --online run: `size` new captchas every epoch."""

    def __init__(self, settings: Settings, size: int, seed: int, workers: int):
        self.settings, self.size, self.seed, self.workers = settings, size, seed, workers
        self.folder = f"generated every epoch by {workers} worker process(es), seed {seed}"
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
        # Training draws O and 0 more often, as a generated train split does (cs.TRAIN_EMPHASIS).
        stream = CaptchaStream(self.settings, self.seed, f"online-e{epoch}", rank * per, steps * batch, batch, cs.TRAIN_EMPHASIS)
        return EpochPlan(steps, batch, stream_batches(stream, self.workers))


def generated_set(settings: Settings, count: int, seed: int, workers: int, split: str = "online-val") -> LabelledSet:
    """`count` captchas of `split` in memory, as a LabelledSet that evaluate() reads like a folder."""
    codec = LabelCodec(settings)
    stream = CaptchaStream(settings, seed, split, 0, count, VAL_BATCH)
    images, labels = [], []
    bar = tqdm(total=count, desc="generating validation set", unit="img", leave=False, disable=not distributed.is_main())
    for batch, targets in stream_batches(stream, workers):
        images.append(batch.copy())
        labels += [codec.decode_indices(row) for row in targets.tolist()]
        bar.update(len(batch))
    bar.close()
    names = [f"{label}_{i:06d}" for i, label in enumerate(labels)]
    source = Path(f"<{count:,} generated captchas, seed {seed}>")
    return LabelledSet(source, np.concatenate(images), np.arange(count, dtype=np.int64), names, labels, [])


def settings_for(args, stem: int) -> Settings:
    """Without a training folder to read them off, the settings are the flags over the defaults."""
    return own.finish_settings(args, Settings(), stem)


def load_train_val(args, codec, default_epochs: int, workers: int = 0):
    """captcha_train.py's (train, val) for --online; fills args.epochs/augment/data_meta like own.load_train_val."""
    for flag, value in (("--online-size", args.online_size), ("--online-val", args.online_val)):
        if value < 1:
            raise UserError(f"{flag} {value}: use at least 1")
    workers = default_workers(workers)
    train = OnlineSet(codec.settings, args.online_size, args.seed, workers)
    if Path(args.val_dir).is_dir():
        val = load_labelled(args.val_dir, codec, "--val-dir", labels=own.folder_labels(args.val_dir, args.val_labels, "--val-labels"))
    elif distributed.is_main():
        print(f"--val-dir {args.val_dir}: no such folder; checking on {args.online_val:,} generated captchas (seed {VAL_SEED})")
        val = generated_set(codec.settings, args.online_val, VAL_SEED, workers)
    else:  # only rank 0 evaluates
        val = LabelledSet(Path("<rank 0 only>"), np.zeros((0, 1, 1), np.uint8), np.zeros(0, np.int64), [], [], [])
    # Fresh data every epoch: the big-data recipe (default epochs, no augmentation unless asked).
    own.small_data_defaults(args, max(args.online_size, own.SMALL_DATA), default_epochs)
    args.data_meta = {"online": True, "online_size": args.online_size, "augment": args.augment}
    return train, val
