"""Measure a trained model on a labelled folder.

    python captcha_test.py                          # model.pkl on dataset/test
    python captcha_test.py --data DIR --json out.json
    python captcha_test.py --report reports/       # pictures of the mistakes (captcha_report.py)
    python captcha_test.py --generate 1000         # fresh captchas in the model's settings, no files

The settings (charset, length, image size) come from model.pkl: nothing to retype.
`evaluate()` here is the same function training calls after every epoch.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import captcha_owndata
import captcha_report
import captcha_setting as cs
from captcha_checkpoint import load_checkpoint
from captcha_dataset import LabelledSet, to_tensor
from captcha_default import resolve_model
from captcha_util import add_test_shifts_arg, check_writable_dir, choose_device, positive_int, run_cli


@dataclass
class EvalResult:
    n: int
    accuracy: float  # whole captcha right
    char_accuracy: float  # characters right
    loss: float
    position_accuracy: list[float]
    predictions: list[tuple[str, str, str, float]] = field(default_factory=list)  # file, truth, guess, confidence
    guesses: list[list[int]] = field(default_factory=list)  # (N, length) class indices picked, pad included; with predictions

    def summary(self, name: str = "test") -> str:
        return f"{name}: {self.n:,} captchas, {self.accuracy:.2%} exact, {self.char_accuracy:.2%} of characters"

    def to_json(self) -> dict:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "char_accuracy": self.char_accuracy,
            "loss": self.loss,
            "position_accuracy": self.position_accuracy,
        }


@torch.inference_mode()
def evaluate(model, data: LabelledSet, device=None, batch_size: int = 256, keep_predictions: bool = False) -> EvalResult:
    """Run `model` over every image of `data` in eval mode; exact and per-character accuracy."""
    model.eval()
    device = device or next(model.parameters()).device
    codec = model.codec
    targets = torch.from_numpy(data.targets(codec))  # (N, length)
    k, length = codec.num_classes, codec.length
    loss_sum, exact, chars, char_total = 0.0, 0, 0, 0
    per_position = torch.zeros(length)
    predictions, guesses = [], []
    for start in range(0, len(data), batch_size):
        positions = np.arange(start, min(start + batch_size, len(data)))
        logits = model(to_tensor(data.batch(positions)).to(device)).float().cpu()  # (B, length*k)
        t = targets[start : start + len(positions)]
        loss_sum += F.cross_entropy(logits.view(-1, k), t.reshape(-1), reduction="sum").item()
        guess = logits.view(-1, length, k).argmax(-1)  # (B, length)
        right = guess == t
        exact += int(right.all(1).sum())
        per_position += right.float().sum(0)
        counted = t != codec.pad if codec.pad is not None else torch.ones_like(right)
        counted |= guess != codec.pad if codec.pad is not None else counted
        chars += int((right & counted).sum())
        char_total += int(counted.sum())
        if keep_predictions:
            guesses += guess.tolist()
            for j, (text, conf) in enumerate(codec.decode(logits)):
                predictions.append((data.names[start + j], data.labels[start + j], text, conf))
    n = len(data)
    return EvalResult(
        n=n,
        accuracy=exact / n,
        char_accuracy=chars / max(char_total, 1),
        loss=loss_sum / (n * length),
        position_accuracy=(per_position / n).tolist(),
        predictions=predictions,
        guesses=guesses,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Print a model's accuracy on a folder of labelled captchas.")
    p.add_argument("--model", default=cs.MODEL_PATH, help="model from captcha_train.py (default: %(default)s, else models/default.pkl)")
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
    captcha_owndata.add_test_args(p)
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
    data = captcha_owndata.load_test_data(args, model.codec, ckpt.get("meta", {}))
    if data.skipped:
        print(data.describe_skipped())
    start = time.perf_counter()
    result = evaluate(model, data, device, args.batch_size, keep_predictions=True)
    print(f"{result.summary()} ({time.perf_counter() - start:.1f} s, model {args.model})")
    captcha_report.after_test(args, data, result, model.codec)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
