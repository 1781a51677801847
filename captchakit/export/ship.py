"""What captcha_export.py writes: an ONNX file (float or int8), a weights-only copy, the shipped default.

The shipped default model (and the general reader, --ship-general) is a float16 weights-only copy plus a .json beside it that records
the training command, the data, and the accuracy measured on the test folder and on a seeded
draw of generated captchas (shipped.generated_check), which CI measures again. Every file is
written atomically: a failed export leaves the old file as it was.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import tempfile
from pathlib import Path

from captchakit import settings as cs
from captchakit import shipped
from captchakit.api import load_model
from captchakit.calibrate import calibrate
from captchakit.checkpoint import save_checkpoint
from captchakit.data.folders import folder_labels
from captchakit.data.sets import load_labelled, subset
from captchakit.data.synth import synth_set
from captchakit.errors import UserError
from captchakit.evaluate import evaluate
from captchakit.export.onnx import export_onnx
from captchakit.export.quant import calibration_images, quantize_onnx
from captchakit.files import atomic_path

GENERATED = "generated"  # --confidence-from's value for captchas drawn in memory
VALIDATION = "validation"  # --confidence-from's value for the validation share recorded in the model
CONFIDENCE_SEED, CONFIDENCE_SPLIT, CONFIDENCE_COUNT = 30_000_023, "confidence", 5_000  # used for nothing else
TRAINING_KEYS = ("epoch", "epochs", "best_accuracy", "train_images", "train_dir", "elapsed_s", "torch")


def write_onnx(model, ckpt: dict, out, opset: int) -> None:
    diff = export_onnx(model, ckpt, out, opset)
    checked = "not compared (onnxruntime not installed)" if diff is None else f"onnxruntime matches PyTorch (max |diff| {diff:.1e})"
    print(f"wrote {out} ({Path(out).stat().st_size / 1e6:.2f} MB, opset {opset}, batch size free): {checked}")


def write_int8(model, ckpt: dict, out, opset: int, calibration) -> None:
    """The float export goes to a temporary file; only the int8 twin lands at `out`."""
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


def fit_confidence(model, ckpt: dict, source: str) -> dict:
    """`ckpt` with the confidence's temperature fitted on `source` (a labelled folder, or "generated":
    captchas of the model's style drawn from a seed kept for this); the model reads with it from now on."""
    if source == GENERATED:
        data = synth_set(model.codec, CONFIDENCE_COUNT, CONFIDENCE_SEED, CONFIDENCE_SPLIT, f"<{CONFIDENCE_COUNT:,} generated captchas>")
    elif source == VALIDATION:
        data = validation_share(model, ckpt.get("meta", {}))
    else:
        data = load_labelled(source, model.codec, "--confidence-from")
    found = calibrate(model, data, "cpu")
    print(found.describe().replace("validation images", f"images of {data.folder}"))
    return {**ckpt, "calibration": found.to_dict()}


def validation_share(model, meta: dict):
    """The validation share training held out of its folder (recorded in model.pkl), with its labels file."""
    split = meta.get("split") or {}
    if not split.get("val"):
        raise UserError("--confidence-from validation: the model holds no validation share (trained with --val-dir); give that folder")
    labels = folder_labels(split["folder"], meta.get("labels"), quiet=True) if meta.get("labels") else None
    return subset(load_labelled(split["folder"], model.codec, "--confidence-from", quiet=True, labels=labels), split["val"])


def write_slim(model, ckpt: dict, out) -> None:
    save_checkpoint(out, model, ckpt.get("meta", {}), train_config=ckpt.get("train_config"), calibration=ckpt.get("calibration"))
    print(f"wrote {out} ({Path(out).stat().st_size / 1e6:.2f} MB, weights only)")


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ship(model, ckpt: dict, args) -> None:
    """The default model (--ship) or the general reader (--ship-general): weights-only copy + a .json
    with its command, data and measured accuracy."""
    general = bool(args.ship_general)
    flag = "--ship-general" if general else "--ship"
    if not args.command:
        raise UserError(f'{flag}: say how the model was trained with --command "python captcha_train.py ..."')
    if general and model.config.head != "ctc":
        raise UserError(f"{flag}: the general reader reads text of any length with a CTC head; --model has a {model.config.head} head")
    if not general and model.settings != cs.DEFAULT:
        raise UserError(f"{flag}: the default model must read the default captchas; --model reads {model.settings.describe()}")
    test = load_labelled(args.test_dir, model.codec, "--test-dir")
    out = Path(args.ship_general if general else args.ship)
    with atomic_path(out, ".pkl") as tmp:  # both files or neither: the .pkl moves in after the .json
        # float16 on disk, half the bytes; loaded back as float32
        meta = ckpt.get("meta", {})
        save_checkpoint(tmp, model, meta, half=True, train_config=ckpt.get("train_config"), calibration=ckpt.get("calibration"))
        measured, summary = measure(tmp, test, args, "varied" if general else "captcha", meta)
        record = {"model": out.name, **measured, "calibration": ckpt.get("calibration")}
        with atomic_path(out.with_suffix(".json"), ".json") as tmp_info:
            Path(tmp_info).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out} ({record['bytes'] / 1e6:.2f} MB, float16 weights only) and {out.with_suffix('.json')}")
    print(summary)


def measure(path, test, args, style: str, meta: dict) -> tuple[dict, str]:
    """The card's measured fields for the model file at `path`, measured as shipped (float16 weights-only,
    on the CPU), and a summary line."""
    recognizer = load_model(path, "cpu")
    result = evaluate(recognizer.model, test, recognizer.device)
    count, seed = shipped.CHECK_COUNT, shipped.CHECK_SEED
    check = shipped.generated_check(recognizer, count, seed, style)
    record = {
        "bytes": Path(path).stat().st_size,
        "sha256": sha256(path),
        "stored_as": "float16 (loaded as float32)",
        "command": args.command,
        "data": args.data_note or f"{meta.get('train_images', '?')} images from {meta.get('train_dir', '?')}",
        "training": {k: meta[k] for k in TRAINING_KEYS if k in meta},
        "settings": recognizer.settings.to_dict(),
        "model_config": recognizer.model.config.to_dict(),
        "test": {"data": str(args.test_dir), "n": result.n, "accuracy": result.accuracy, "char_accuracy": result.char_accuracy},
        "generated_check": {"seed": seed, "count": count, "split": shipped.CHECK_SPLITS[style], "style": style, "accuracy": check},
        "created": datetime.date.today().isoformat(),
    }
    return record, f"{result.summary()}; generated check {check:.2%} on {count} captchas"
