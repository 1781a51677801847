"""int8 ONNX: a quantized twin of an exported model, for the most images per second on a CPU.

    python captcha_export.py --model model.pkl --onnx model.onnx --int8
    python captcha_predict.py --model model.onnx captcha.png      # read like any exported file

Static quantization with onnxruntime: weights int8 per output channel, activations uint8 with
ranges measured on calibration images (a folder of the user's captchas, or captchas generated
in the model's style). Two choices are made for CPUs without VNNI (AVX2 only, like the
project's reference machine): weights keep 7 bits (`reduce_range`), because the AVX2 u8*s8
multiply saturates 16-bit sums with full 8-bit weights, which wrecked the shipped model's
accuracy; and QOperator nodes (QLinearConv), which onnxruntime runs as fused int8 kernels,
faster there than the same model in QDQ form ("Inference speed" in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from captchakit.data.images import ImageError, list_images, load_as
from captchakit.data.synth import draw
from captchakit.errors import UserError
from captchakit.export.onnx import INPUT, load_onnx, metadata, onnx_input, require
from captchakit.files import atomic_path

CALIBRATION_COUNT = 512  # images whose activations set the int8 ranges
CALIBRATION_BATCH = 64
CALIBRATION_SEED = 7  # the generated calibration captchas: split "calibration" of this seed


def calibration_images(model, folder=None) -> np.ndarray:
    """(N, H, W[, 3]) uint8, as load_image gives them: up to CALIBRATION_COUNT images of `folder`, else generated captchas."""
    s = model.settings
    if folder is None:
        return draw(s, CALIBRATION_COUNT, CALIBRATION_SEED, "calibration")[0]
    arrays = []
    for entry in list_images(Path(folder))[:CALIBRATION_COUNT]:
        try:
            arrays.append(load_as(entry.path, s))
        except ImageError:
            continue  # an unreadable file only leaves one calibration image out
    if not arrays:
        raise UserError(f"--calibration {folder}: no images there; point it at a folder of your captchas")
    return np.stack(arrays)


def quantize_onnx(model, ckpt: dict, float_path, out, calibration: np.ndarray) -> float:
    """Write the int8 twin of the float ONNX file `float_path` to `out` (atomic).

    `calibration` is (N, H, W[, 3]) uint8 (calibration_images). Returns the share of those images
    whose predicted text matches the float model's.
    """
    onnx = require("onnx", f"--int8 {out}")
    require("onnxruntime", f"--int8 {out}")  # the quantizer and the agreement check run on it
    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):
        """Feeds the calibration images to the quantizer a batch at a time."""

        def __init__(self):
            self.batches = iter(np.array_split(calibration, max(len(calibration) // CALIBRATION_BATCH, 1)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT: onnx_input(batch)}

    reader = Reader()
    with atomic_path(out, ".onnx") as tmp:
        pre = Path(tmp).with_suffix(".pre.onnx")
        # The quantizer logs a warning for each shape tensor (Flatten's) it rightly leaves in float.
        before = logging.root.manager.disable  # restored after, whatever the caller had set
        logging.disable(logging.WARNING)
        try:
            q.quant_pre_process(str(float_path), str(pre))  # shape inference and graph clean-up first
            q.quantize_static(
                str(pre),
                tmp,
                reader,
                quant_format=q.QuantFormat.QOperator,
                per_channel=True,
                reduce_range=True,
                activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
            )
        finally:
            logging.disable(before)
            pre.unlink(missing_ok=True)
        proto = onnx.load(tmp)
        del proto.metadata_props[:]  # the quantizer keeps none we need; write ours again
        for key, value in {**metadata(model, ckpt), "precision": "int8"}.items():
            prop = proto.metadata_props.add()
            prop.key, prop.value = key, value
        onnx.save(proto, tmp)
        # Both files read through the same Recognizer that captcha_predict.py uses for them.
        floats, int8 = (load_onnx(path, "cpu").predict_arrays(calibration) for path in (float_path, tmp))
    return float(np.mean([a.text == b.text for a, b in zip(floats, int8, strict=True)]))
