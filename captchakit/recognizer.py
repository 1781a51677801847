"""Read captchas with a trained model.

    python captcha_predict.py                      # every image in dataset/predict
    python captcha_predict.py a.png b.png somedir/ # files and folders

Prints `file<TAB>prediction<TAB>confidence` per image; where file names carry labels
(LABEL_*.png), it also says how many were read right. From Python:

    from captchakit.recognizer import load_model, predict
    model = load_model("model.pkl")
    text, confidence = predict(model, "captcha.png")   # or model.predict(PIL image / bytes / array)
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from captchakit import settings as cs
from captchakit.checkpoint import load_checkpoint
from captchakit.data.cache import is_image_name, load_image, to_tensor
from captchakit.device import choose_device
from captchakit.errors import UserError
from captchakit.infer import inference_module


class Prediction(NamedTuple):
    text: str
    confidence: float


class Recognizer:
    """A loaded model: `predict(image)` and `predict_batch(images)` take paths, bytes, PIL images or arrays."""

    def __init__(self, model, checkpoint: dict, device, path):
        self.model, self.checkpoint, self.device, self.path = model, checkpoint, device, Path(path)
        self.settings = model.settings
        self.codec = model.codec
        self.fast = inference_module(model)  # BatchNorm folded, channels_last: the same function, faster

    def prepare(self, image) -> np.ndarray:
        """Any supported image -> (H, W) uint8 at the model's size; raises ImageError."""
        return load_image(image, self.settings.width, self.settings.height)

    def logits(self, arrays: np.ndarray) -> torch.Tensor:
        """The backend step: (N, H, W) uint8 -> (N, length * num_classes) CPU logits (captcha_onnx overrides it)."""
        return self.fast(to_tensor(arrays).to(self.device)).cpu()

    @torch.inference_mode()
    def predict_arrays(self, arrays: np.ndarray) -> list[Prediction]:
        """(N, H, W) uint8 -> one Prediction per image."""
        return [Prediction(text, conf) for text, conf in self.codec.decode(self.logits(arrays))]

    def predict_batch(self, images, batch_size: int = 256) -> list[Prediction]:
        out: list[Prediction] = []
        images = list(images)
        for start in range(0, len(images), batch_size):
            chunk = np.stack([self.prepare(img) for img in images[start : start + batch_size]])
            out += self.predict_arrays(chunk)
        return out

    def predict(self, image) -> Prediction:
        return self.predict_batch([image])[0]


def load_model(path=cs.MODEL_PATH, device: str = "auto", test_shifts: int | None = None) -> Recognizer:
    """Load model.pkl or an exported .onnx (settings included); raises UserError if it is unusable.

    test_shifts=K also reads each image moved K pixels left and right (see --test-shifts)."""
    if Path(path).suffix.lower() == ".onnx":
        if test_shifts is not None:
            raise UserError(f"--test-shifts: {path} is an exported file; export a model.pkl trained or tested with the shifts")
        from captchakit.export.onnx import load_onnx  # onnxruntime is an optional extra

        return load_onnx(path, device)
    dev = choose_device(device)
    model, ckpt = load_checkpoint(path, dev, test_shifts)
    return Recognizer(model, ckpt, dev, path)


def predict(model: Recognizer, image) -> Prediction:
    """(text, confidence) for one image: a path, bytes, PIL image or uint8 array."""
    return model.predict(image)


def collect_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and is_image_name(p.name))
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or folder; pass image files or folders of them")
    return files
