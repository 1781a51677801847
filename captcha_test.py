"""Measure a trained model on a labelled folder.

    python captcha_test.py                          # model.pkl on dataset/test
    python captcha_test.py --data DIR --json out.json
    python captcha_test.py --report reports/       # pictures of the mistakes (captchakit.report)
    python captcha_test.py --generate 1000         # fresh captchas in the model's settings, no files

The settings (charset, length, image size) come from model.pkl: nothing to retype.
`evaluate()` here is the same function training calls after every epoch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from captchakit import settings as cs
from captchakit.calibrate import Calibration
from captchakit.checkpoint import load_checkpoint
from captchakit.cli import add_test_shifts_arg, positive_int
from captchakit.data import testsets
from captchakit.device import choose_device
from captchakit.errors import run_cli
from captchakit.evaluate import evaluate
from captchakit.files import check_writable_dir
from captchakit.report import analysis as captcha_report
from captchakit.shipped import resolve_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Print a model's accuracy on a folder of labelled captchas.")
    p.add_argument(
        "--model", default=cs.MODEL_PATH, help="model from captcha_train.py (default: %(default)s, else captchakit/models/default.pkl)"
    )
    p.add_argument(
        "--data",
        nargs="+",
        default=[cs.TEST_DATASET_PATH],
        help=f"a folder of LABEL_*.png images, or image files (default: {cs.TEST_DATASET_PATH})",
    )
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps (default: auto)")
    add_test_shifts_arg(p)
    p.add_argument("--json", default=None, metavar="PATH", help="also write the printed figures to this JSON file")
    captcha_report.add_report_args(p)
    testsets.add_test_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = choose_device(args.device)
    args.model = resolve_model(args.model)
    model, ckpt = load_checkpoint(args.model, device, args.test_shifts)
    if args.report:
        check_writable_dir(args.report, "--report")
    if args.json:  # before the work, not after it
        check_writable_dir(Path(args.json).parent, "--json")
    data = testsets.load_test_data(args, model.codec, ckpt.get("meta", {}))
    if data.skipped:
        print(data.describe_skipped())
    start = time.perf_counter()
    result = evaluate(model, data, device, args.batch_size, keep_predictions=True)
    print(f"{result.summary()} ({time.perf_counter() - start:.1f} s, model {args.model})")
    captcha_report.after_test(args, data, result, model.codec, Calibration.from_dict(ckpt.get("calibration")).calibrated)
    return 0


def cli() -> int:
    """The console command (pyproject.toml's [project.scripts]): main() with one-line errors."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
