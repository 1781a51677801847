"""What a training run is asked to do (`TrainConfig`, from the flags) and what it decided (`Plan`).

`TrainConfig` is built once from captcha_train.py's flags (or from an interrupted run and the
flags named again on --resume) and never changed afterwards: a field left None is read off the
data. What the run then decides from the data (epochs and augmentation for a small data set,
the process count) is a `Plan`. Both are stored in model.pkl, so a resumed run and a reader of
the file see what was asked and what was done.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from captchakit import settings as cs
from captchakit.data.labels import own_labels_file
from captchakit.errors import UserError
from captchakit.model import ModelConfig
from captchakit.train.ema import DECAY as EMA_DECAY

# The recipe chosen by the study in docs/BENCHMARKS.md ("Time to accuracy").
EPOCHS = 8
BATCH_SIZE = 128
LR = 3e-3
WEIGHT_DECAY = 0.2  # study item 14: 0.2 rather than 0.05 on 100,000 captchas, 0.8 too much
LABEL_SMOOTHING = 0.1
WARMUP = 0.15  # share of the steps spent warming the learning rate up
SHIFT = 3  # study item 13: whole-pixel sideways moves when not augmenting
# A position-head model reads each image also moved this many pixels left and right and averages
# the three: 0.2-0.4 points more on 10,000 captchas for every default model measured, at three
# forward passes per image (docs/BENCHMARKS.md, "Accuracy on 10,000"). CTC models read once.
TEST_SHIFTS = 3

# Small data sets: augmentation on and more epochs, so that a few thousand images are not learned by heart.
SMALL_DATA = 20_000  # fewer training images than this: augmentation on, epochs from SMALL_DATA_IMAGES
SMALL_DATA_IMAGES = 240_000  # images a small-data run sees in all (epochs = this / training images)
MAX_SMALL_EPOCHS = 400
# Fine-tuning a small data set from another model (the general reader): fewer images reach the end, and
# below FEW_TO_RETUNE training images a third of the learning rate keeps more of what the source learned;
# from there on the full rate reads better (docs/BENCHMARKS.md, "Few labels").
FINETUNE_LR = 1e-3
FINETUNE_IMAGES = 60_000
FEW_TO_RETUNE = 500

# Own data: the shares of --train-dir held out when no --val-dir is given (or with --val-split).
VAL_SHARE = 0.1  # chooses the epoch, stops the run
TEST_SHARE = 0.1  # nothing in training touches it; captcha_test.py tests it
FEW_TO_DECIDE = 100  # a validation share smaller than this is said to be a rough judge
# Fewer validation images than this cannot choose an epoch at all (one image is over 2% of them): a
# small-data run then trains its planned epochs and keeps the last, which read better than the chosen
# one (docs/BENCHMARKS.md, "Few labels").
FEW_TO_CHOOSE = 50
SMALL_PATIENCE = 10  # the fewest epochs without a better validation accuracy before a small-data run stops

ONLINE_VAL = 2_000  # generated validation captchas of --online when --val-dir does not exist
PSEUDO_ROUNDS = 3  # rounds of --unlabelled
PSEUDO_THRESHOLD = 0.95  # least calibrated confidence of a kept pseudo-label


@dataclass(frozen=True)
class TrainConfig:
    """captcha_train.py's flags, one field each (the flag is --field-name)."""

    # Data: a folder (or --online generation) to train on, and what checks each epoch.
    train_dir: str = cs.TRAIN_DATASET_PATH
    val_dir: str | None = None  # None: dataset/test for dataset/train, else shares held out of train_dir
    labels: str | None = None
    val_labels: str | None = None
    val_split: float | None = None
    test_split: float | None = None
    split_seed: int | None = None
    online: bool = False
    online_size: int = cs.TRAIN_COUNT
    online_val: int = ONLINE_VAL
    online_style: str = "captcha"  # captcha: the captcha library's look; varied: data/render.py's many styles
    # Unlabelled images to pseudo-label after the labelled run (captchakit.train.pseudo).
    unlabelled: str | None = None
    pseudo_rounds: int = PSEUDO_ROUNDS
    pseudo_threshold: float = PSEUDO_THRESHOLD
    # The captcha settings; None: read off the training data (or the defaults for --online).
    charset: str | None = None
    length: int | None = None
    width: int | None = None
    height: int | None = None
    min_length: int | None = None
    ignore_case: bool = False
    color: bool | None = None  # --color / --grey; None: colour only where grey loses the text (prepare.py)
    keep_aspect: bool = False  # --keep-aspect: fit every image into the size with its aspect ratio, padded
    # The network and where its weights start.
    model_config: str | None = None  # JSON of ModelConfig fields to override
    init_from: str | None = None
    from_scratch: bool = False  # --from-scratch: no fine-tuning from the general reader
    # The recipe; epochs and augment None: chosen from the data size (Plan).
    epochs: int | None = None
    batch_size: int = BATCH_SIZE
    lr: float | None = None  # None: LR, or FINETUNE_LR when a small data set fine-tunes (Plan)
    weight_decay: float = WEIGHT_DECAY
    label_smoothing: float = LABEL_SMOOTHING
    seed: int = 0
    augment: bool | None = None
    augment_strength: float = 1.0
    shift: int = SHIFT
    ema: float = EMA_DECAY  # study item 11
    test_shifts: int | None = None  # the views the saved model reads with; None: TEST_SHIFTS, or 0 for CTC
    target_acc: float | None = None
    patience: int | None = None  # epochs without a better validation accuracy before stopping; 0: never
    # Output, and this machine's choices (never restored by --resume).
    model: str = cs.MODEL_PATH
    resume: bool = False
    device: str = "auto"
    workers: int = 0
    threads: int = 0
    precision: str = "auto"
    compile: bool = False
    start_dir: str = ""  # the folder the run started in: relative paths are read from there on --resume

    @classmethod
    def from_args(cls, args, start_dir: str | None = None) -> TrainConfig:
        """From parsed flags; fields the parser does not have keep their defaults."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        # A folder's own labels.csv (captcha_label.py's) is read unless --labels names another file.
        if values.get("labels") is None and not getattr(args, "online", False):
            values["labels"] = own_labels_file(values.get("train_dir"))
        if values.get("val_labels") is None:
            values["val_labels"] = own_labels_file(values.get("val_dir"))
        return cls(**{**values, "start_dir": start_dir if start_dir is not None else str(Path.cwd())})

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    def network(self) -> ModelConfig:
        """The ModelConfig: the defaults with --model-config's JSON fields over them."""
        if not self.model_config:
            return ModelConfig()
        try:
            changes = json.loads(self.model_config)
            return ModelConfig.from_dict({**ModelConfig().to_dict(), **changes})
        except (ValueError, TypeError) as err:
            raise UserError(f"--model-config: not a valid JSON object of ModelConfig fields ({err})") from None


@dataclass(frozen=True)
class Plan:
    """What the run decided: the epochs, the augmentation strength (0: off), the sideways shift, the
    processes, the patience (epochs without a better validation accuracy before stopping; 0: never),
    whether the last epoch is the model (keep_last: a validation share too small to choose by), and
    the peak learning rate."""

    epochs: int
    augment: float
    shift: int
    world_size: int = 1
    patience: int = 0
    keep_last: bool = False
    lr: float = LR

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        counts = (int(data["epochs"]), float(data["augment"]), int(data["shift"]), int(data.get("world_size", 1)))
        return cls(*counts, int(data.get("patience", 0)), bool(data.get("keep_last", False)), float(data.get("lr", LR)))


def make_plan(config: TrainConfig, n_train: int, world_size: int = 1, n_val: int | None = None, tuned: bool = False) -> Plan:
    """Epochs, augmentation, patience and learning rate left open on the command line, chosen from the
    data size and whether the run fine-tunes another model (`tuned`).

    An --online run draws fresh captchas every epoch: it gets the big-data recipe, whose fixed
    budget is never cut short by a noisy validation figure (patience 0). A small data set runs
    many epochs, and stops once a quarter of them (at least SMALL_PATIENCE) bring nothing better;
    with fewer than FEW_TO_CHOOSE validation images (`n_val`) it runs them all and keeps the last.
    Fine-tuned, it sees all of FINETUNE_IMAGES (at FINETUNE_LR below FEW_TO_RETUNE images) and keeps
    the last epoch too."""
    small = n_train < SMALL_DATA and not config.online
    tuned = tuned and small
    epochs = config.epochs
    if epochs is None:
        budget = FINETUNE_IMAGES if tuned else SMALL_DATA_IMAGES
        epochs = min(max(EPOCHS, math.ceil(budget / max(n_train, 1))), MAX_SMALL_EPOCHS) if small else EPOCHS
        if small:
            print(f"small data set ({n_train:,} training images): {epochs} epochs (--epochs to choose)")
    lr = config.lr if config.lr is not None else (FINETUNE_LR if tuned and n_train < FEW_TO_RETUNE else LR)
    if tuned and config.lr is None:
        print(f"fine-tuning: peak learning rate {lr:g} (--lr to choose)")
    on = small if config.augment is None else config.augment
    augment = float(config.augment_strength) if on else 0.0
    few = n_val is not None and n_val < FEW_TO_CHOOSE
    # A fine-tuned run's short budget ends at a low learning rate, where its last epoch reads best.
    keep_last = small and not config.patience and (few or tuned)
    if keep_last:
        why = f"a validation share of {n_val} images is too few to choose an epoch by" if few else "fine-tuning"
        print(f"{why}: the run trains every epoch and keeps the last (--patience N chooses by validation)")
    stops = small and not keep_last
    patience = config.patience if config.patience is not None else (max(SMALL_PATIENCE, epochs // 4) if stops else 0)
    return Plan(epochs, augment, 0 if augment else config.shift, world_size, patience, keep_last, lr)
