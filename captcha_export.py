"""Turn a trained model.pkl into what others use: an ONNX file, a small weights-only copy, the shipped default.

    python captcha_export.py --model model.pkl --onnx model.onnx     # for onnxruntime, settings inside
    python captcha_export.py --model model.pkl --onnx fast.onnx --int8   # int8: most images/s on a CPU
    python captcha_export.py --model model.pkl --slim small.pkl      # weights only, no training state
    python captcha_export.py --model old.pkl --slim new.pkl --confidence-from mine/   # calibrate an older model
    python captcha_export.py --model model.pkl --ship captchakit/models/default.pkl \\
        --command "python captcha_train.py ..." --test-dir dataset/test  # float16 weights, + captchakit/models/default.json
    python captcha_export.py --model general.pkl --ship-general captchakit/models/general.pkl \
        --command "python captcha_train.py --online --online-style varied ..." --test-dir varied_test  # the general reader

Every file is written atomically: a failed export leaves the old file as it was.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from captchakit import settings as cs
from captchakit import shipped as captcha_default
from captchakit.checkpoint import load_checkpoint
from captchakit.errors import UserError, run_cli
from captchakit.export.onnx import OPSET
from captchakit.export.ship import fit_confidence, ship, write_int8, write_onnx, write_slim
from captchakit.files import check_writable_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a trained model: ONNX, a weights-only copy, or the shipped default model.")
    p.add_argument(
        "--model",
        default=cs.MODEL_PATH,
        help="model file made by captcha_train.py (default: %(default)s, else captchakit/models/default.pkl)",
    )
    p.add_argument("--onnx", default=None, metavar="OUT", help="write an ONNX model (batch size free, settings in its metadata)")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset of --onnx (default: %(default)s)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="with --onnx: quantize it to int8, the most images/s on a CPU at close to the float model's accuracy "
        '(measured in docs/BENCHMARKS.md, "Inference speed")',
    )
    p.add_argument(
        "--calibration",
        default=None,
        metavar="DIR",
        help="with --int8: a folder of your captchas to measure activation ranges on (default: 512 generated captchas)",
    )
    p.add_argument(
        "--confidence-from",
        default=None,
        metavar="SOURCE",
        help="before exporting, fit the confidence's temperature on SOURCE: a folder of labelled captchas the model "
        "was not trained on, `validation` for the validation share training held out, or `generated` for captchas "
        "of the model's style drawn in memory; for models saved before calibration, or to calibrate on your own "
        "site's captchas (with --slim OUT alone: a calibrated copy)",
    )
    p.add_argument("--slim", default=None, metavar="OUT", help="write a copy with the weights only (no optimizer or resume state)")
    add_ship_flags(p)
    return p


def add_ship_flags(p: argparse.ArgumentParser) -> None:
    """--ship and --ship-general, and what they record."""
    p.add_argument(
        "--ship",
        default=None,
        metavar="OUT",
        help="write the shipped default model: a weights-only copy in float16 (half the size) plus OUT's .json",
    )
    p.add_argument(
        "--ship-general",
        default=None,
        metavar="OUT",
        help="write the shipped general reader (captchakit/models/general.pkl, which small data sets fine-tune from) "
        "like --ship; its .json's check draws captchas of the varied style",
    )
    p.add_argument("--command", default=None, help="with --ship(-general): the exact command that trained --model, recorded in the .json")
    p.add_argument(
        "--data-note", default=None, help="with --ship(-general): the data it was trained on (default: from the model's metadata)"
    )
    p.add_argument(
        "--test-dir", default=cs.TEST_DATASET_PATH, help="with --ship(-general): labelled folder it is tested on (default: %(default)s)"
    )


def say_shipped_reading(ckpt: dict, confidence_from: str | None) -> None:
    """A shipped model reads each image once (its speed and accuracy figures are for one view): say so
    when --model was saved reading several, whose confidence was fitted on those views."""
    shifts = tuple(ckpt.get("model_config", {}).get("test_shifts", (0,)))
    if shifts != (0,):
        refit = "" if confidence_from else "; its confidence was fitted on the views: --confidence-from fits it reading once"
        print(f"the shipped model reads each image once (--model was saved reading {len(shifts)} views){refit}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.onnx or args.slim or args.ship or args.ship_general):
        raise UserError("nothing to do: give --onnx OUT, --slim OUT, --ship OUT or --ship-general OUT")
    if args.ship and args.ship_general:
        raise UserError("--ship and --ship-general: one shipped model at a time; give one of them")
    if (args.int8 or args.calibration) and not args.onnx:
        raise UserError("--int8 and --calibration quantize an ONNX export: add --onnx OUT")
    if args.calibration and not Path(args.calibration).is_dir():
        raise UserError(f"--calibration {args.calibration}: not a folder; give a folder of captcha images")
    if not 9 <= args.opset <= 20:
        raise UserError(f"--opset {args.opset}: the exporter writes opsets 9 to 20; use {OPSET} unless a runtime needs another")
    for flag in ("onnx", "slim", "ship", "ship_general"):  # every output folder takes files, before any export work
        if getattr(args, flag):
            check_writable_dir(Path(getattr(args, flag)).parent, f"--{flag.replace('_', '-')}")
    shipping = bool(args.ship or args.ship_general)
    model, ckpt = load_checkpoint(captcha_default.resolve_model(args.model), "cpu", 0 if shipping else None)
    if shipping:
        say_shipped_reading(ckpt, args.confidence_from)
    if args.confidence_from:
        ckpt = fit_confidence(model, ckpt, args.confidence_from)
    if args.onnx and args.int8:
        write_int8(model, ckpt, args.onnx, args.opset, args.calibration)
    elif args.onnx:
        write_onnx(model, ckpt, args.onnx, args.opset)
    if args.slim:
        write_slim(model, ckpt, args.slim)
    if args.ship or args.ship_general:
        ship(model, ckpt, args)
    return 0


def cli() -> int:
    """The console command (pyproject.toml's [project.scripts]): main() with one-line errors."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
