"""Turn a trained model.pkl into what others use: an ONNX file, a small weights-only copy, the shipped default.

    python captcha_export.py --model model.pkl --onnx model.onnx     # for onnxruntime, settings inside
    python captcha_export.py --model model.pkl --onnx fast.onnx --int8   # int8: most images/s on a CPU
    python captcha_export.py --model model.pkl --slim small.pkl      # weights only, no training state
    python captcha_export.py --model model.pkl --ship models/default.pkl \\
        --command "python captcha_train.py ..." --test-dir dataset/test  # float16 weights, + models/default.json

Every file is written atomically: a failed export leaves the old file as it was.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
from pathlib import Path

import captcha_default
import captcha_setting as cs
from captcha_checkpoint import load_checkpoint, save_checkpoint
from captcha_onnx import OPSET, export_onnx
from captcha_util import UserError, atomic_path, check_writable_dir, run_cli

TRAINING_KEYS = ("epoch", "epochs", "best_accuracy", "train_images", "train_dir", "elapsed_s", "torch")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a trained model: ONNX, a weights-only copy, or the shipped default model.")
    p.add_argument(
        "--model", default=cs.MODEL_PATH, help="model file made by captcha_train.py (default: %(default)s, else models/default.pkl)"
    )
    p.add_argument("--onnx", default=None, metavar="OUT", help="write an ONNX model (batch size free, settings in its metadata)")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset of --onnx (default: %(default)s)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="with --onnx: quantize it to int8 (about 1.6x the images/s of float on a CPU, within a point of its accuracy)",
    )
    p.add_argument(
        "--calibration",
        default=None,
        metavar="DIR",
        help="with --int8: a folder of your captchas to measure activation ranges on (default: 512 generated captchas)",
    )
    p.add_argument("--slim", default=None, metavar="OUT", help="write a copy with the weights only (no optimizer or resume state)")
    p.add_argument(
        "--ship",
        default=None,
        metavar="OUT",
        help="write the shipped default model: a weights-only copy in float16 (half the size) plus OUT's .json",
    )
    p.add_argument("--command", default=None, help="with --ship: the exact command that trained --model, recorded in the .json")
    p.add_argument("--data-note", default=None, help="with --ship: the data it was trained on (default: from the model's metadata)")
    p.add_argument("--test-dir", default=cs.TEST_DATASET_PATH, help="with --ship: labelled folder it is tested on (default: %(default)s)")
    return p


def write_onnx(model, ckpt: dict, out, opset: int) -> None:
    diff = export_onnx(model, ckpt, out, opset)
    checked = "not compared (onnxruntime not installed)" if diff is None else f"onnxruntime matches PyTorch (max |diff| {diff:.1e})"
    print(f"wrote {out} ({Path(out).stat().st_size / 1e6:.2f} MB, opset {opset}, batch size free): {checked}")


def write_int8(model, ckpt: dict, out, opset: int, calibration) -> None:
    """The float export goes to a temporary file; only the int8 twin lands at `out`."""
    import tempfile

    from captcha_quant import calibration_images, quantize_onnx

    images = calibration_images(model, calibration)
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "float.onnx"
        export_onnx(model, ckpt, float_path, opset)
        agreement = quantize_onnx(model, ckpt, float_path, out, images)
    source = calibration or f"{len(images)} generated captchas"
    print(
        f"wrote {out} ({Path(out).stat().st_size / 1e6:.2f} MB, int8, opset {opset}, batch size free): "
        f"same text as the float model on {agreement:.1%} of the calibration images ({source})"
    )


def write_slim(model, ckpt: dict, out) -> None:
    save_checkpoint(out, model, ckpt.get("meta", {}))
    print(f"wrote {out} ({Path(out).stat().st_size / 1e6:.2f} MB, weights only)")


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ship(model, ckpt: dict, args) -> None:
    """The default model: weights-only copy + a .json with its command, data and measured accuracy."""
    from captcha_dataset import load_labelled
    from captcha_predict import load_model
    from captcha_test import evaluate

    if not args.command:
        raise UserError('--ship: say how the model was trained with --command "python captcha_train.py ..."')
    if model.settings != cs.DEFAULT:
        raise UserError(f"--ship: the default model must read the default captchas; --model reads {model.settings.describe()}")
    test = load_labelled(args.test_dir, model.codec, "--test-dir")
    out, info = Path(args.ship), Path(args.ship).with_suffix(".json")
    meta = ckpt.get("meta", {})
    with atomic_path(out, ".pkl") as tmp:  # both files or neither: the .pkl moves in after the .json
        save_checkpoint(tmp, model, meta, half=True)  # float16 on disk, half the bytes; loaded back as float32
        recognizer = load_model(tmp, "cpu")  # measured as shipped: the float16 weights-only file, on the CPU
        result = evaluate(recognizer.model, test, recognizer.device)
        count, seed = captcha_default.CHECK_COUNT, captcha_default.CHECK_SEED
        check = captcha_default.generated_check(recognizer, count, seed)
        record = {
            "model": out.name,
            "bytes": Path(tmp).stat().st_size,
            "sha256": sha256(tmp),
            "stored_as": "float16 (loaded as float32)",
            "command": args.command,
            "data": args.data_note or f"{meta.get('train_images', '?')} images from {meta.get('train_dir', '?')}",
            "training": {k: meta[k] for k in TRAINING_KEYS if k in meta},
            "settings": model.settings.to_dict(),
            "model_config": model.config.to_dict(),
            "test": {"data": str(args.test_dir), "n": result.n, "accuracy": result.accuracy, "char_accuracy": result.char_accuracy},
            "generated_check": {"seed": seed, "count": count, "split": captcha_default.CHECK_SPLIT, "accuracy": check},
            "created": datetime.date.today().isoformat(),
        }
        with atomic_path(info, ".json") as tmp_info:
            Path(tmp_info).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out} ({record['bytes'] / 1e6:.2f} MB, float16 weights only) and {info}")
    print(f"{result.summary()}; generated check {check:.2%} on {count} captchas")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.onnx or args.slim or args.ship):
        raise UserError("nothing to do: give --onnx OUT, --slim OUT or --ship OUT")
    if (args.int8 or args.calibration) and not args.onnx:
        raise UserError("--int8 and --calibration quantize an ONNX export: add --onnx OUT")
    if args.calibration and not Path(args.calibration).is_dir():
        raise UserError(f"--calibration {args.calibration}: not a folder; give a folder of captcha images")
    if not 9 <= args.opset <= 20:
        raise UserError(f"--opset {args.opset}: the exporter writes opsets 9 to 20; use {OPSET} unless a runtime needs another")
    for flag in ("onnx", "slim", "ship"):  # every output folder takes files, before any export work
        if getattr(args, flag):
            check_writable_dir(Path(getattr(args, flag)).parent, f"--{flag}")
    model, ckpt = load_checkpoint(captcha_default.resolve_model(args.model), "cpu")
    if args.onnx and args.int8:
        write_int8(model, ckpt, args.onnx, args.opset, args.calibration)
    elif args.onnx:
        write_onnx(model, ckpt, args.onnx, args.opset)
    if args.slim:
        write_slim(model, ckpt, args.slim)
    if args.ship:
        ship(model, ckpt, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
