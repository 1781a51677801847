"""Read captchas with a trained model.

    python captcha_predict.py                      # every image in dataset/predict
    python captcha_predict.py a.png b.png somedir/ # files and folders

Prints `file<TAB>prediction<TAB>confidence` per image (with --min-confidence T a fourth column,
`sure` or `unsure`); where file names carry labels (LABEL_*.png), it also says how many were read
right. The confidence is the model's calibrated probability that the reading is right (models
saved before calibration print their raw confidence, and a note says so). From Python:

    from captchakit import load_model, predict
    model = load_model("model.pkl")
    text, confidence = predict(model, "captcha.png")   # or model.predict(PIL image / bytes / array)
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from captchakit import settings as cs
from captchakit.api import load_model
from captchakit.cli import add_min_confidence_arg, add_test_shifts_arg, positive_int
from captchakit.data.images import ImageError, collect_files, label_from_name
from captchakit.data.labels import read_labels_file
from captchakit.errors import UserError, run_cli
from captchakit.shipped import resolve_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Predict the text of captcha images with a trained model.")
    p.add_argument("paths", nargs="*", default=[cs.PREDICT_DATASET_PATH], help="image files or folders (default: %(default)s)")
    p.add_argument(
        "--model",
        default=cs.MODEL_PATH,
        help="model.pkl from captcha_train.py, or a .onnx from captcha_export.py "
        "(default: %(default)s; if missing, the shipped captchakit/models/default.pkl)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps (default: auto)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass (default: %(default)s)")
    add_test_shifts_arg(p)
    add_min_confidence_arg(p)
    p.add_argument("--labels", metavar="FILE", help="CSV or TSV of filename,label lines, to count how many are right")
    p.add_argument(
        "--charset",
        metavar="CHARS",
        help="read only these characters, e.g. a site's charset with a general model that knows more (default: all the model's)",
    )
    p.add_argument("--ignore-case", action="store_true", help="with --charset: read letters case-blind, as capitals")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    recognizer = load_model(resolve_model(args.model), args.device, args.test_shifts)
    if args.ignore_case and not args.charset:
        raise UserError("--ignore-case goes with --charset CHARS (the characters to read)")
    if args.charset:
        restrict(recognizer, args.charset, args.ignore_case)
    labels = read_labels_file(args.labels).labels if args.labels else None
    files = collect_files(args.paths)
    if not files:
        raise UserError(f"{' '.join(args.paths)}: no images found; pass image files or a folder of them")
    good, arrays, skipped = [], [], []
    for f in files:
        try:
            arrays.append(recognizer.prepare(f))
            good.append(f)
        except ImageError as err:
            skipped.append(f"{f}: not a readable image ({err})")
    if not good:  # one line that names the first bad file, not one line per file and then the error
        more = f" (and {len(skipped) - 1} more unreadable file(s))" if len(skipped) > 1 else ""
        raise UserError(f"{skipped[0]}{more}; pass PNG, JPEG or other image files")
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if not recognizer.calibration.calibrated:
        print(f"note: {recognizer.path}: {recognizer.calibration.describe()}; retrain to calibrate it", file=sys.stderr)
    read_all(recognizer, good, arrays, labels, args)
    return 0


def restrict(recognizer, charset: str, ignore_case: bool) -> None:
    try:
        unknown = recognizer.restrict(charset, ignore_case)
    except ValueError as err:
        raise UserError(f"--charset {charset!r}: {err}") from None
    if unknown == recognizer.codec.charset:
        raise UserError(f"--charset {charset!r}: the model has learned none of these characters; give the ones it reads")
    if unknown:
        print(f"note: the model never learned {unknown!r}: they are never read", file=sys.stderr)


def read_all(recognizer, files: list, arrays: list, labels: dict | None, args) -> None:
    """Print one line per image, then (to stderr) how many were unsure and how many right."""
    labelled = right = unsure = 0
    for start in range(0, len(files), args.batch_size):
        preds = recognizer.predict_arrays(np.stack(arrays[start : start + args.batch_size]))
        for f, (text, conf) in zip(files[start : start + args.batch_size], preds, strict=True):
            doubt = args.min_confidence is not None and conf < args.min_confidence
            unsure += doubt
            mark = "" if args.min_confidence is None else ("\tunsure" if doubt else "\tsure")
            print(f"{f}\t{text}\t{conf:.4f}{mark}")
            label = label_from_name(f.name) if labels is None else labels.get(f.name, "")
            if recognizer.codec.problem(label) is None:
                labelled += 1
                right += recognizer.codec.normalize(label) == text
    if args.min_confidence is not None:
        print(f"unsure: {unsure:,} of {len(files):,} readings under confidence {args.min_confidence:g}", file=sys.stderr)
    if labelled:
        print(f"right: {right:,} of {labelled:,} labelled images ({right / labelled:.2%})", file=sys.stderr)


def cli() -> int:
    """The console command (pyproject.toml's [project.scripts]): main() with one-line errors."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
