"""A loaded model that reads captchas: `Recognizer`, its `Prediction`s, and the fast inference copy.

`captchakit.api.load_model` builds a Recognizer from a model.pkl (or an exported .onnx, through
captchakit.export.onnx.OnnxRecognizer, which only swaps the `logits` step). Every kind of input
is read by captchakit.data.images.load_image, as in training.

For a PyTorch model the Recognizer runs `inference_module(model)`: a copy of the trained
network, arranged to run fast; the weights and the function stay the same. Two changes, both
exact up to float rounding:
- each BatchNorm is folded into the convolution before it (eval mode: BatchNorm is a fixed
  per-channel scale and shift), so a block is one conv + ReLU, as in the exported ONNX graph;
  at one image per call most of the time goes to per-layer overhead, which this removes;
- the weights are stored channels_last, the layout captchakit.data.images.to_tensor gives the
  input and oneDNN's fast CPU convolutions want.
The original module stays as it was (evaluate() and export use it); the fast one is a copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from captchakit.calibrate import Calibration
from captchakit.codec import RestrictedCodec
from captchakit.data.images import load_as, to_tensor


class Prediction(NamedTuple):
    text: str
    confidence: float


def inference_module(model: nn.Module) -> nn.Module:
    """A folded, channels_last copy of `model` for inference, or `model` itself if folding fails."""
    model.eval()
    try:
        fast = fuse(model)  # traces the module and returns a new GraphModule; `model` is untouched
    except Exception:  # a module torch.fx cannot trace still runs, only without the folding
        return model
    return fast.to(memory_format=torch.channels_last).eval()


class Recognizer:
    """A loaded model: `predict(image)` and `predict_batch(images)` take paths, bytes, PIL images or arrays."""

    def __init__(self, model, checkpoint: dict, device, path):
        self.model, self.checkpoint, self.device, self.path = model, checkpoint, device, Path(path)
        self.settings = model.settings
        self.codec = model.codec  # its temperature came from the checkpoint (captchakit.calibrate)
        self.calibration = Calibration.from_dict(checkpoint.get("calibration"))
        self.fast = inference_module(model)  # BatchNorm folded, channels_last: the same function, faster

    def restrict(self, charset: str, ignore_case: bool = False) -> str:
        """Read only the characters of `charset` from now on (case-blind: either case counts as the
        capital); returns those of them the model has never learned (never read), '' when none."""
        self.codec = RestrictedCodec(getattr(self.codec, "base", self.codec), charset, ignore_case)
        return self.codec.unknown

    def prepare(self, image) -> np.ndarray:
        """Any supported image -> (H, W) uint8 (H, W, 3 for a colour model) at the model's size and mode; raises ImageError."""
        return load_as(image, self.settings)

    def logits(self, arrays: np.ndarray) -> torch.Tensor:
        """The backend step: (N, H, W[, 3]) uint8 -> (N, length * num_classes) CPU logits, or a CTC
        head's (N, T, num_classes) log-probabilities; the codec reads either (OnnxRecognizer overrides it)."""
        return self.fast(to_tensor(arrays).to(self.device)).cpu()

    @torch.inference_mode()
    def predict_arrays(self, arrays: np.ndarray) -> list[Prediction]:
        """(N, H, W[, 3]) uint8 -> one Prediction per image."""
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
