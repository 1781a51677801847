"""Accuracy that can steer: a model on 10,000 fresh uniform captchas of its own style, with the standard error.

    python bench/accuracy.py [--model model.pkl] [--count 10000] [--test-shifts K]

The captchas are drawn in memory (captchakit.data.synth.synth_set) from a seed and a split name
that nothing else uses: no training set, validation set, model selection or other benchmark
has seen them, and every run of this benchmark reads the same ones. Characters are drawn
uniformly (no --emphasis), as captchas come. Prints one JSON line: the whole-captcha accuracy
with its binomial standard error, the character accuracy, the misread characters split into
the O/0 pair (which the default font draws nearly alike) and the others, and how well the
confidence is calibrated (expected calibration error, 10 equal bins, and the coverage table).
--report DIR also writes captcha_test.py's report of them: errors.png (the misread captchas, most
confident first), confusion.png, reliability.png, metrics.json and predictions.csv.
"""

from __future__ import annotations

import argparse
import time

from _common import emit

import captcha_setting as cs
from captchakit import calibrate
from captchakit.checkpoint import load_checkpoint
from captchakit.data.synth import synth_set
from captchakit.device import choose_device
from captchakit.errors import run_cli
from captchakit.evaluate import EvalResult, evaluate
from captchakit.report.analysis import analyze_result, metrics, write_report
from captchakit.shipped import resolve_model

STEER_SEED = 10_000_019  # used by this benchmark only
STEER_SPLIT = "steer"
PAIR = {"O", "0"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Whole-captcha accuracy and its standard error on fresh generated captchas.")
    p.add_argument("--model", default=cs.MODEL_PATH, help="model to measure (default: %(default)s, else the shipped default model)")
    p.add_argument("--count", type=int, default=10_000, help="captchas to draw (default: %(default)s)")
    p.add_argument("--test-shifts", type=int, default=None, metavar="K", help="read each image also moved K pixels left and right")
    p.add_argument("--report", default=None, metavar="DIR", help="also write captcha_test.py's report (errors.png ...) of them here")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps (default: auto)")
    return p


def character_errors(result: EvalResult) -> tuple[int, int]:
    """(misread characters within the O/0 pair, all other misread characters), position by position."""
    pair = other = 0
    for _, truth, guess, _ in result.predictions:
        for t, g in zip(truth.ljust(len(guess)), guess.ljust(len(truth)), strict=True):
            if t != g:
                pair += {t, g} <= PAIR
                other += not {t, g} <= PAIR
    return pair, other


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = choose_device(args.device)
    path = resolve_model(args.model)
    model, ckpt = load_checkpoint(path, device, args.test_shifts)
    data = synth_set(model.codec, args.count, STEER_SEED, STEER_SPLIT, source=f"<{args.count:,} captchas, seed {STEER_SEED}>")
    start = time.perf_counter()
    result = evaluate(model, data, device, keep_predictions=True)
    pair, other = character_errors(result)
    confidence = [p[3] for p in result.predictions]
    right = [p[2] == model.codec.normalize(p[1]) for p in result.predictions]
    emit(
        {
            "model": str(path),
            "n": result.n,
            "accuracy": round(result.accuracy, 5),
            "standard_error": round(result.standard_error, 5),
            "char_accuracy": round(result.char_accuracy, 5),
            "misread_captchas": round(result.n * (1 - result.accuracy)),
            "pair_char_errors": pair,
            "other_char_errors": other,
            "test_shifts": list(model.config.test_shifts),
            "calibrated": "calibration" in ckpt,
            "mean_confidence": round(sum(confidence) / len(confidence), 5),
            "ece": round(calibrate.ece(confidence, right), 5),
            "coverage": [
                {k: v if k == "threshold" or v is None else round(v, 5) for k, v in row.items()}
                for row in calibrate.coverage(confidence, right)
            ],
            "seconds": round(time.perf_counter() - start, 1),
        }
    )
    if args.report:
        analysis = analyze_result(model.codec, result)
        write_report(args.report, data, result, analysis, metrics(result, analysis, str(data.folder), str(path), "calibration" in ckpt))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
