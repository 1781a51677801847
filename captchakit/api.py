"""The Python API: load a model once, then read captchas with it.

from captchakit import load_model, predict
model = load_model("model.pkl")                    # or "model.onnx", captchakit/models/default.pkl
text, confidence = predict(model, "captcha.png")   # or model.predict(PIL image / bytes / array)
results = model.predict_batch(images)              # [Prediction(text, confidence), ...]
"""

from __future__ import annotations

from pathlib import Path

from captchakit import settings as cs
from captchakit.checkpoint import load_checkpoint
from captchakit.device import choose_device
from captchakit.errors import UserError
from captchakit.export.onnx import load_onnx
from captchakit.recognizer import Prediction, Recognizer


def load_model(path=cs.MODEL_PATH, device: str = "auto", test_shifts: int | None = None) -> Recognizer:
    """Load model.pkl or an exported .onnx (settings included); raises UserError if it is unusable.

    test_shifts=K also reads each image moved K pixels left and right (see --test-shifts).
    An .onnx file needs onnxruntime, an optional extra, imported only when such a file is loaded.
    """
    if Path(path).suffix.lower() == ".onnx":
        if test_shifts is not None:
            raise UserError(f"--test-shifts: {path} is an exported file; export a model.pkl trained or tested with the shifts")
        return load_onnx(path, device)
    dev = choose_device(device)
    model, ckpt = load_checkpoint(path, dev, test_shifts)
    return Recognizer(model, ckpt, dev, path)


def predict(model: Recognizer, image) -> Prediction:
    """(text, confidence) for one image: a path, bytes, PIL image or uint8 array."""
    return model.predict(image)
