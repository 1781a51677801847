"""Train the captcha CNN and save the best model to model.pkl.

    python captcha_train.py                        # dataset/train, checked on dataset/test
    python captcha_train.py --resume               # continue an interrupted run

After every epoch the model is checked on the validation folder with the same evaluate()
that captcha_test.py uses; the best model so far is written to model.pkl, and the full
training state to <model>_run/last.pkl, both atomically, so --resume loses at most the
epoch that was running.
"""

from __future__ import annotations

import argparse

from captchakit import settings as cs
from captchakit.cli import add_settings_args, non_negative_int, positive_float, positive_int
from captchakit.data import folders as own
from captchakit.errors import run_cli
from captchakit.train import ema as ema_
from captchakit.train import engine as accel
from captchakit.train import online, resume
from captchakit.train.loop import BATCH_SIZE, EPOCHS, LABEL_SMOOTHING, LR, WEIGHT_DECAY, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the captcha CNN; the best model is saved to --model.")
    p.add_argument("--train-dir", default=cs.TRAIN_DATASET_PATH, help="folder of LABEL_*.png training images (default: %(default)s)")
    p.add_argument("--val-dir", default=cs.TEST_DATASET_PATH, help="folder checked after every epoch (default: %(default)s)")
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"passes over the training set (default: {EPOCHS}; more below {own.SMALL_DATA:,} images)",
    )
    p.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, help="images per step (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=LR, help="peak learning rate of the one-cycle schedule (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY, help="AdamW weight decay (default: %(default)s)")
    p.add_argument("--label-smoothing", type=float, default=LABEL_SMOOTHING, help="cross-entropy label smoothing (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps (default: auto)")
    p.add_argument("--model", default=cs.MODEL_PATH, help="where the best model is saved (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run saved beside --model")
    p.add_argument("--target-acc", type=float, default=None, help="stop once validation accuracy reaches this, e.g. 0.99")
    p.add_argument(
        "--workers",
        type=non_negative_int,
        default=0,
        help="processes that decode images into the cache, or draw --online captchas (default: all cores)",
    )
    p.add_argument("--threads", type=non_negative_int, default=0, help="CPU threads for torch (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and batch order (default: %(default)s)")
    p.add_argument(
        "--model-config",
        default=None,
        metavar="JSON",
        help='advanced: override the network\'s ModelConfig fields, e.g. \'{"channels": [32, 64, 96, 128], "strides": [2, 2, 1, 2]}\'',
    )
    add_settings_args(p)
    own.add_train_args(p)
    online.add_args(p)
    ema_.add_args(p)
    accel.add_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = resume.given_flags(build_parser(), argv) if args.resume else {}
    return run(args, given)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
