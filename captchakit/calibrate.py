"""A confidence that means a probability: one temperature fitted on validation images, and the
figures that judge it (expected calibration error, coverage, reliability bins).

A reading's confidence (LabelCodec.confidences) is the product of its positions' winning
probabilities. Trained with label smoothing and read as a product, it sits far under the
accuracy, so no threshold can be picked from it. Dividing the logits by one temperature T before
the softmax fixes that (the texts read do not change, only the confidence). T is fitted at the
end of training on the validation images, those that chose the epoch and never the test ones,
by minimising the log loss of "the whole reading is right" against the confidence. The targets
are softened as a Jeffreys prior would (right counts 1 - 0.5/(n+1), wrong 0.5/(n+1)), so that a
small validation set that reads every image right does not push every confidence to 1. A share of
fewer than FEW_TO_FIT_ALONE images (20-100 when a few hundred labels fine-tune) holds too few
errors to place T: the fit then also reads VIEWS augmented views of each image (the training
augmentation at VIEW_STRENGTH, from a fixed seed), which err about as often as unseen images do (docs/BENCHMARKS.md,
"Calibrated confidence"). model.pkl keeps T and its figures under "calibration"; a file without
them reads with T = 1 and says it is uncalibrated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from captchakit.evaluate import model_outputs
from captchakit.train.augment import AugmentConfig, augment

ECE_BINS = 10  # equal-width bins of confidence over [0, 1]
THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.99)  # captcha_test.py's coverage table
LOG_T_GRID = np.linspace(math.log(0.05), math.log(5.0), 461)  # steps of 1% in T
COARSE = 10  # fit_temperature's first pass reads every COARSE-th step of the grid
FEW_IMAGES = 100  # a calibration on fewer validation images is rough, and says so
FEW_TO_FIT_ALONE = 500  # fewer validation images than this: the fit also reads VIEWS augmented views of each
VIEWS = 8
VIEW_STRENGTH = 1.5  # the training augmentation, half as strong again: views err about as often as unseen images
VIEW_SEED = 0


@dataclass(frozen=True)
class Calibration:
    temperature: float = 1.0
    images: int = 0  # validation images it was fitted on; 0: the model is not calibrated
    ece_before: float | None = None  # expected calibration error on those images, at T = 1 and at T
    ece_after: float | None = None
    views: int = 0  # augmented views of each image the fit read beside it
    # Saved before session 12 (no "views" key) or never calibrated: a CTC model reads its confidence as
    # the best column path's probability, as it was fitted, not the text's (LabelCodec.confidences).
    best_path: bool = False

    @property
    def calibrated(self) -> bool:
        return self.images > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> Calibration:
        """What model.pkl (or an ONNX file's metadata) holds; an older file without it -> uncalibrated."""
        if not isinstance(data, dict):
            return cls(best_path=True)
        known = {k: data[k] for k in ("temperature", "images", "ece_before", "ece_after", "views", "best_path") if k in data}
        return cls(**{"best_path": "views" not in data, **known})

    def describe(self) -> str:
        if not self.calibrated:
            return "confidence uncalibrated (a model saved before calibration): the product of the positions' probabilities"
        few = "; few images, so it is rough" if self.images < FEW_IMAGES else ""
        views = f" and {self.views} augmented views of each" if self.views else ""
        return (
            f"confidence calibrated on {self.images:,} validation images{views}: temperature {self.temperature:.3g}, "
            f"calibration error {self.ece_before:.1%} -> {self.ece_after:.1%}{few}"
        )


def apply(model, data: dict | None) -> Calibration:
    """Give `model`'s codec the stored temperature; returns the Calibration read."""
    calibration = Calibration.from_dict(data)
    model.codec.temperature, model.codec.best_path = calibration.temperature, calibration.best_path
    return calibration


@torch.inference_mode()
def readings(model, data, device, batch_size: int = 256, views: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs on every image of `data` ((N, ...) float, CPU) and whether each whole
    reading is right ((N,) bool), in the reading mode the model is set to (--test-shifts too).
    With `views` K, K augmented views of each image follow the N plain readings: (N * (1 + K), ...)."""
    codec = model.codec
    outputs, right = [[] for _ in range(1 + views)], [[] for _ in range(1 + views)]
    gen, strength = torch.Generator(device=device).manual_seed(VIEW_SEED), AugmentConfig().scaled(VIEW_STRENGTH)
    for start, x, out in model_outputs(model, data, device, batch_size):
        truth = data.labels[start : start + len(out)]
        for view in range(1 + views):
            seen = model(augment(x, gen, strength)).float().cpu() if view else out
            right[view] += [codec.normalize(t) == text for t, text in zip(truth, codec.texts(seen), strict=True)]
            outputs[view].append(seen)
    return torch.cat([torch.cat(o) for o in outputs]), torch.tensor(sum(right, []), dtype=torch.bool)


def log_loss(confidence: torch.Tensor, right: torch.Tensor) -> float:
    """Mean binary log loss of the confidences against the readings being right, the targets
    softened as by a Jeffreys prior: right 1 - 0.5/(n+1), wrong 0.5/(n+1)."""
    c = confidence.double().clamp(1e-7, 1 - 1e-7)
    soft = 0.5 / (len(c) + 1)
    y = torch.where(right, 1 - soft, soft).double()
    return float(-(y * c.log() + (1 - y) * (1 - c).log()).mean())


def fit_temperature(outputs: torch.Tensor, right: torch.Tensor, codec) -> float:
    """The T on a grid of 1% steps (0.05-5) that minimises log_loss: every tenth step first, then
    every step around the best of those (a CTC reader's confidence is a forward pass per T)."""

    def cost(i: int) -> float:
        return log_loss(codec.confidences(outputs, math.exp(LOG_T_GRID[i])), right)

    coarse = min(range(0, len(LOG_T_GRID), COARSE), key=cost)
    best = min(range(max(0, coarse - COARSE), min(len(LOG_T_GRID), coarse + COARSE + 1)), key=cost)
    return float(math.exp(LOG_T_GRID[best]))


def reliability(confidence, right, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin that holds readings: its range, count, mean confidence, accuracy."""
    c, r = np.asarray(confidence, dtype=np.float64), np.asarray(right, dtype=bool)
    index = np.minimum((c * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        held = index == b
        if held.any():
            mean, acc = float(c[held].mean()), float(r[held].mean())
            out.append({"low": b / bins, "high": (b + 1) / bins, "n": int(held.sum()), "confidence": mean, "accuracy": acc})
    return out


def ece(confidence, right, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the count-weighted mean gap between confidence and accuracy over the bins."""
    rows = reliability(confidence, right, bins)
    n = sum(row["n"] for row in rows)
    return sum(row["n"] * abs(row["confidence"] - row["accuracy"]) for row in rows) / n if n else 0.0


def coverage(confidence, right, thresholds=THRESHOLDS) -> list[dict]:
    """Answering only at confidence >= t: for each t, the share of readings answered and their accuracy."""
    c, r = np.asarray(confidence, dtype=np.float64), np.asarray(right, dtype=bool)
    out = []
    for t in thresholds:
        kept = c >= t
        accuracy = float(r[kept].mean()) if kept.any() else None
        out.append({"threshold": t, "answered": float(kept.mean()) if len(c) else 0.0, "accuracy": accuracy})
    return out


def calibrate(model, data, device) -> Calibration:
    """Fit the temperature of `model` on `data` (validation images, with augmented views of each when
    they are few), set it on the model's codec, and return it; its errors are those of the plain images."""
    n, codec = len(data), model.codec
    codec.best_path = False  # a new fit is of the text's probability
    views = VIEWS if n < FEW_TO_FIT_ALONE else 0
    outputs, right = readings(model, data, device, views=views)
    before = ece(codec.confidences(outputs[:n], 1.0), right[:n])
    t = fit_temperature(outputs, right, codec)
    codec.temperature = t
    return Calibration(t, n, before, ece(codec.confidences(outputs[:n]), right[:n]), views)
