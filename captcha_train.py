"""Train the captcha CNN and save the best model to model.pkl.

    python captcha_train.py                        # dataset/train, checked on dataset/test
    python captcha_train.py --train-dir mine --val-split 0.1 --model mine.pkl   # your own captchas
    python captcha_train.py --resume               # continue an interrupted run

After every epoch the model is checked on the validation folder with the same evaluate()
that captcha_test.py uses; the best model so far is written to model.pkl, and the full
training state to <model>_run/last.pkl, both atomically, so --resume loses at most the
epoch that was running. Every training flag is defined here; the flags become one
TrainConfig (captchakit/train/config.py), which the run and model.pkl keep.
"""

from __future__ import annotations

import argparse

from captchakit.cli import add_settings_args, non_negative_int, positive_float, positive_int, probability
from captchakit.errors import run_cli
from captchakit.train.config import EPOCHS, FEW_TO_RETUNE, FINETUNE_LR, LR, SMALL_DATA, TEST_SHIFTS, TrainConfig
from captchakit.train.engine import PRECISIONS
from captchakit.train.online import VAL_SEED
from captchakit.train.resume import given_flags
from captchakit.train.run import run

D = TrainConfig()  # the defaults every flag shows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the captcha CNN; the best model is saved to --model.")
    add_data_args(p)
    add_settings_args(p)
    add_own_data_args(p.add_argument_group("your own data"))
    add_recipe_args(p.add_argument_group("the recipe"))
    add_online_args(p.add_argument_group("online generation (no files)"))
    add_machine_args(p.add_argument_group("this machine, torchrun and GPUs"))
    return p


def add_data_args(p) -> None:
    p.add_argument("--train-dir", default=D.train_dir, help="folder of LABEL_*.png training images (default: %(default)s)")
    p.add_argument(
        "--val-dir",
        default=None,
        help="folder checked after every epoch (default: dataset/test when training on dataset/train; "
        "for any other --train-dir, validation and test shares held out of it: --val-split, --test-split)",
    )
    p.add_argument("--model", default=D.model, help="where the best model is saved (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run saved beside --model")
    p.add_argument("--target-acc", type=float, default=None, help="stop once validation accuracy reaches this, e.g. 0.99")
    p.add_argument(
        "--patience",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="stop after N epochs without a better validation accuracy, or once it reaches 100%%; 0 never stops early "
        "(default: a quarter of the epochs, at least 10, below the small-data size; 0 above it)",
    )


def add_unlabelled_args(g) -> None:
    g.add_argument(
        "--unlabelled",
        metavar="DIR",
        help="a folder of unlabelled images of the same captchas: after training, the model reads them, keeps the readings "
        "it is sure of and trains again on those and the labels, for --pseudo-rounds rounds (it may be --train-dir itself: "
        "its labelled images are left out)",
    )
    g.add_argument("--pseudo-rounds", type=positive_int, default=D.pseudo_rounds, help="rounds of --unlabelled (default: %(default)s)")
    g.add_argument(
        "--pseudo-threshold",
        type=probability,
        default=D.pseudo_threshold,
        metavar="T",
        help="with --unlabelled: keep a reading only at calibrated confidence T or more, and only if the image moved "
        "a little reads the same (default: %(default)s)",
    )


def add_own_data_args(g) -> None:
    g.add_argument(
        "--labels",
        metavar="FILE",
        help="CSV or TSV of filename,label lines for --train-dir (default: the folder's labels.csv if it has one, else file names)",
    )
    g.add_argument(
        "--val-labels", metavar="FILE", help="labels file for --val-dir (default: the folder's labels.csv if it has one, else file names)"
    )
    g.add_argument(
        "--val-split",
        type=float,
        metavar="FRACTION",
        help="share of --train-dir held out for validation, seeded by --split-seed (default: 0.1 when --train-dir comes without --val-dir)",
    )
    g.add_argument(
        "--test-split",
        type=float,
        metavar="FRACTION",
        help="share of --train-dir held out as a test share that nothing in training touches; captcha_test.py --data on the "
        "same folder tests only it; 0 holds none out (default: 0.1 when validation comes out of --train-dir)",
    )
    g.add_argument("--split-seed", type=int, metavar="N", help="seed of --val-split's choice (default: --seed)")
    add_unlabelled_args(g)
    g.add_argument("--min-length", type=int, help="shortest label, for variable-length captchas (default: read off the labels)")
    g.add_argument("--ignore-case", action="store_true", help="read letters case-blind: labels and charset are upper-cased")
    colour = g.add_mutually_exclusive_group()
    colour.add_argument(
        "--color",
        dest="color",
        action="store_true",
        default=None,
        help="read images in colour (RGB) (default: in colour only when grey loses the contrast of the images' edges)",
    )
    colour.add_argument("--grey", "--gray", dest="color", action="store_false", help="read images grey, whatever their colours")
    g.add_argument(
        "--keep-aspect",
        action="store_true",
        help="fit every image into the working size with its aspect ratio kept, padded with its border colour, "
        "however tall it is (default: only images taller than 64 pixels; smaller ones are stretched to the size)",
    )
    g.add_argument(
        "--init-from",
        metavar="MODEL",
        help="fine-tune this model.pkl (e.g. the shipped captchakit/models/default.pkl): its convolution layers, and its "
        "head and classifier rows where they fit the charset; charset, length and size may differ "
        "(default: the shipped general reader for fewer than 20,000 labelled images, when the package has one)",
    )
    g.add_argument("--from-scratch", action="store_true", help="start from random weights, never from the general reader")


def add_recipe_args(g) -> None:
    g.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"passes over the training set (default: {EPOCHS}; more below {SMALL_DATA:,} images)",
    )
    g.add_argument("--batch-size", type=positive_int, default=D.batch_size, help="images per step (default: %(default)s)")
    g.add_argument(
        "--lr",
        type=positive_float,
        default=D.lr,
        help=f"peak learning rate of the one-cycle schedule (default: {LR:g}; {FINETUNE_LR:g} when fewer than "
        f"{FEW_TO_RETUNE:,} training images fine-tune)",
    )
    g.add_argument("--weight-decay", type=float, default=D.weight_decay, help="AdamW weight decay (default: %(default)s)")
    g.add_argument("--label-smoothing", type=float, default=D.label_smoothing, help="cross-entropy label smoothing (default: %(default)s)")
    g.add_argument("--seed", type=int, default=D.seed, help="seed for weights, batch order and augmentation (default: %(default)s)")
    add_augment_args(g)
    g.add_argument(
        "--ema",
        type=float,
        default=D.ema,
        metavar="DECAY",
        help="check and save a moving average of the weights with this decay per step; 0 turns it off (default: %(default)s)",
    )
    g.add_argument(
        "--test-shifts",
        type=non_negative_int,
        default=None,
        metavar="K",
        help="the saved model reads each image also moved K pixels left and right and averages the three readings "
        "(checking during training reads once); 0 reads once, as a CTC model always does "
        f"(default: {TEST_SHIFTS} for a position head, 0 for CTC)",
    )
    g.add_argument(
        "--model-config",
        default=None,
        metavar="JSON",
        help='advanced: override the network\'s ModelConfig fields, e.g. \'{"channels": [32, 64, 96, 128], "strides": [2, 2, 1, 2]}\'; '
        'variable-length labels get {"head": "ctc"} unless a head is named',
    )


def add_augment_args(g) -> None:
    aug = g.add_mutually_exclusive_group()
    aug.add_argument(
        "--augment", dest="augment", action="store_true", default=None, help=f"force augmentation on (default: below {SMALL_DATA:,} images)"
    )
    aug.add_argument("--no-augment", dest="augment", action="store_false", help="turn augmentation off")
    g.add_argument(
        "--augment-strength", type=float, default=D.augment_strength, help="scale every augmentation's size (default: %(default)s)"
    )
    g.add_argument(
        "--shift",
        type=non_negative_int,
        default=D.shift,
        metavar="K",
        help="when not augmenting, move each training image up to K whole pixels sideways; 0 turns it off (default: %(default)s)",
    )


def add_online_args(g) -> None:
    g.add_argument(
        "--online", action="store_true", help="train on captchas generated fresh every epoch by --workers processes instead of --train-dir"
    )
    g.add_argument(
        "--online-style",
        choices=("captcha", "varied"),
        default=D.online_style,
        help="with --online: captcha, the captcha library's look in the model's size; varied, many fonts, grounds, "
        "noises and warps (captcha_gen.py --style varied), for a general reader (default: %(default)s)",
    )
    g.add_argument(
        "--online-size",
        type=int,
        default=D.online_size,
        metavar="N",
        help="with --online: captchas per epoch, over all processes (default: %(default)s, the size of the default training set)",
    )
    g.add_argument(
        "--online-val",
        type=int,
        default=D.online_val,
        metavar="N",
        help=f"with --online and no --val-dir folder: check on N generated captchas, seed {VAL_SEED} (default: %(default)s)",
    )


def add_machine_args(g) -> None:
    g.add_argument("--device", default=D.device, help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps (default: auto)")
    g.add_argument(
        "--workers",
        type=non_negative_int,
        default=0,
        help="processes that decode images into the cache, or draw --online captchas (default: all cores)",
    )
    g.add_argument("--threads", type=non_negative_int, default=0, help="CPU threads for torch (default: all cores)")
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=D.precision,
        help="auto: on CUDA, bf16 autocast where the GPU supports it, else fp16 with a "
        "gradient scaler; fp32 on CPU and MPS (default: %(default)s)",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="compile the network with torch.compile (off by default: slower on a small CPU; try it on GPUs)",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # --resume keeps the interrupted run's flags except those named again now: which those are.
    given = given_flags(build_parser(), argv) if args.resume else {}
    return run(TrainConfig.from_args(args), given)


def cli() -> int:
    """The console command (pyproject.toml's [project.scripts]): main() with one-line errors."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
